"""bench/launcher.py and bench/bgp_sink.py, their pure parts (no timings asserted)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest

from bench.bgp_sink import KEEPALIVE, OPEN, message, open_message, split_messages
from bench.launcher import FIRST, _lines, compare_wire


def test_open_offers_what_frr_offers_and_a_4_octet_as() -> None:
    msg = open_message(4_200_000_000, 9, "10.99.0.1")
    assert msg[:16] == b"\xff" * 16
    length, kind, version, as2, hold = struct.unpack_from("!HBBHH", msg, 16)
    assert (length, kind, version, as2, hold) == (len(msg), OPEN, 4, 23456, 9)
    assert IPv4Address(msg[24:28]) == IPv4Address("10.99.0.1")
    params = msg[29:]
    assert params[0] == 2  # capabilities
    assert params[1] == len(params) - 2
    caps = params[2:]
    assert b"\x01\x04\x00\x01\x00\x01" in caps  # IPv4 unicast
    assert b"\x06\x00" in caps  # extended message
    assert b"\x41\x04" + struct.pack("!I", 4_200_000_000) in caps


def test_split_messages_keeps_a_partial_message_for_later() -> None:
    keepalive = message(KEEPALIVE)
    buffer = bytearray(keepalive + keepalive + keepalive[:7])
    assert split_messages(buffer) == [keepalive, keepalive]
    assert bytes(buffer) == keepalive[:7]
    buffer += keepalive[7:]
    assert split_messages(buffer) == [keepalive]
    with pytest.raises(ValueError, match="not a BGP stream"):
        split_messages(bytearray(b"\x00" * 19))


def test_the_stand_in_writes_the_announcers_grouped_lines() -> None:
    lines = _lines("announce", 0, 450)
    assert len(lines) == 3
    assert lines[0].startswith("announce attributes next-hop self nlri 10.16.0.0/32 ")
    assert [len(line.split(" nlri ")[1].split()) for line in lines] == [200, 200, 50]
    withdraws = _lines("withdraw", 200, 200)
    assert withdraws[0].startswith("withdraw attributes next-hop self nlri ")
    assert withdraws[0].split()[5] == f"{IPv4Address(FIRST + 200)}/32"


def test_compare_wire_flags_a_release_whose_cases_sent_different_bytes() -> None:
    def case(release: str, digest: str) -> dict[str, object]:
        return {"release": release, "announce_10k": {"updates_sha256": digest}}

    cases = [case("5.0.15", "a"), case("5.0.15", "a"), case("4.2.21", "a"), case("4.2.21", "b")]
    assert compare_wire(cases) == {
        "4.2.21": {"announce_10k": False},
        "5.0.15": {"announce_10k": True},
    }
