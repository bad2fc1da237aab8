"""bench/launcher.py and bench/bgp_sink.py, their pure parts (no timings asserted)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest

from bench.bgp_sink import KEEPALIVE, OPEN, WireRecord, message, open_message, split_messages
from bench.launcher import compare_wire
from bench.launcher_feed import FIRST_PREFIX as FIRST
from bench.launcher_feed import _lines


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
    def case(release: str, in_order: str) -> dict[str, object]:
        wire = {"sha256_in_order": in_order, "sha256_routes_in_order": "o", "sha256_routes": "r"}
        return {"release": release, "announce_10k": {"wire": wire}}

    cases = [case("5.0.15", "a"), case("5.0.15", "a"), case("4.2.21", "a"), case("4.2.21", "b")]
    assert compare_wire(cases) == {
        "4.2.21": {"announce_10k": {"in_order": False, "routes_in_order": True, "routes": True}},
        "5.0.15": {"announce_10k": {"in_order": True, "routes_in_order": True, "routes": True}},
    }


def test_a_wire_record_sees_the_same_routes_whatever_the_update_boundaries() -> None:
    attrs = b"\x40\x01\x01\x00"

    def update(prefixes: list[int]) -> bytes:
        nlri = b"".join(b"\x20" + struct.pack("!I", p) for p in prefixes)
        return message(2, b"\x00\x00" + struct.pack("!H", len(attrs)) + attrs + nlri)

    one, two = WireRecord(), WireRecord()
    one.add(update([1, 2, 3]), [1, 2, 3], [])
    two.add(update([1]), [1], [])
    two.add(update([2, 3]), [2, 3], [])
    first, second = one.summary(), two.summary()
    assert first["sha256_routes"] == second["sha256_routes"]
    assert first["sha256_routes_in_order"] == second["sha256_routes_in_order"]
    assert first["sha256_in_order"] != second["sha256_in_order"]
    swapped = WireRecord()
    swapped.add(update([2, 3]), [2, 3], [])
    swapped.add(update([1]), [1], [])
    assert swapped.summary()["sha256_routes_in_order"] != first["sha256_routes_in_order"]
    assert swapped.summary()["sha256_routes"] == first["sha256_routes"]
    assert (first["shape"], second["shape"]) == ([[1, 3, 0]], [[1, 1, 0], [1, 2, 0]])
    two.add(update([4]), [4], [])
    assert two.summary()["sha256_routes"] != first["sha256_routes"]
