"""The netlink decoder against the real kernel, with pyroute2 as the independent oracle,
and the overrun path: a burst far beyond the socket buffer still ends exact."""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from announcer.events import LinkChanged, RouteAdded, RouteRemoved
from announcer.model import Prefix
from announcer.sources.kernel import RTM_NEWROUTE, Done, dump_request, parse_messages
from tests.integration.fake_exabgp import FakeExaBGP, final_state, parse_command
from tests.netlab import netns, poll, sh

ORACLE = Path(__file__).with_name("kernel_oracle.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ns() -> Iterator[str]:
    with netns("kern") as name:
        for veth, peer in (("vethr1", "ctr1"), ("vethr2", "ctr2")):
            sh(name, "ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
            sh(name, "ip", "link", "set", veth, "up")
            sh(name, "ip", "link", "set", peer, "up")
        yield name


@pytest.mark.netns
def test_decoder_agrees_with_pyroute2_on_a_real_table(ns: str) -> None:
    for argv in (
        ("ip", "route", "add", "10.0.0.1/32", "dev", "vethr1", "proto", "180"),
        ("ip", "route", "add", "10.0.0.2/32", "dev", "vethr1", "table", "100"),
        ("ip", "route", "add", "10.0.0.3/32", "dev", "vethr1", "table", "100000", "metric", "7"),
        ("ip", "route", "add", "10.0.9.0/24", "via", "169.254.1.1", "dev", "vethr1", "onlink"),
        ("ip", "-6", "route", "add", "fd00:10::1/128", "dev", "vethr1"),
        ("ip", "addr", "add", "10.5.5.5/32", "dev", "ctr1"),
        ("ip", "-6", "addr", "add", "fd00:10::5/128", "dev", "ctr1", "nodad"),
        # several local instances of one anycast IP: a multipath host route, both families
        ("ip", "route", "add", "10.200.0.1/32", "proto", "180",
         "nexthop", "dev", "vethr1", "nexthop", "dev", "vethr2"),
        # (IPv6 refuses device-only multipath routes: each path names the instance's
        # link-local address)
        ("ip", "-6", "route", "add", "fd00:200::1/128", "proto", "180",
         "nexthop", "via", "fe80::2", "dev", "vethr1", "nexthop", "via", "fe80::3", "dev", "vethr2"),
    ):  # fmt: skip
        sh(ns, *argv)
    result = json.loads(sh(ns, "env", f"PYTHONPATH={REPO}", sys.executable, str(ORACLE)).stdout)
    assert result["ours"] == result["theirs"]
    routes = {tuple(r[:3]) for r in result["ours"]["routes"]}
    assert ("10.0.0.3/32", 100000, 3) in routes  # table > 255 comes from RTA_TABLE
    assert ("10.0.0.1/32", 254, 180) in routes
    multipath = {r[0]: r[7] for r in result["ours"]["routes"] if r[7]}
    assert set(multipath) == {"10.200.0.1/32", "fd00:200::1/128"}
    assert [gw for _, gw in multipath["10.200.0.1/32"]] == [False, False]
    assert [gw for _, gw in multipath["fd00:200::1/128"]] == [True, True]


def test_parse_messages_handles_a_datagram_of_several_messages() -> None:
    # Two RTM_NEWROUTE messages built by hand (rtmsg + RTA_DST + RTA_OIF), then NLMSG_DONE.

    def route(dst: bytes, oif: int, kind: int = RTM_NEWROUTE) -> bytes:
        body = struct.pack("=BBBBBBBBI", 2, 32, 0, 0, 254, 3, 0, 1, 0)
        body += struct.pack("=HH", 8, 1) + dst + struct.pack("=HHI", 8, 4, oif)
        return struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body

    data = (
        route(bytes([10, 0, 0, 1]), 5)
        + route(bytes([10, 0, 0, 2]), 6, kind=25)
        + struct.pack("=IHHII", 20, 3, 2, 1, 0)
        + b"\0" * 4
    )
    events = list(parse_messages(data))
    assert isinstance(events[0], RouteAdded)
    assert events[0].route.prefix == Prefix("10.0.0.1/32")
    assert events[0].route.oif == 5
    assert isinstance(events[1], RouteRemoved)
    assert events[1].route.prefix == Prefix("10.0.0.2/32")
    assert isinstance(events[2], Done)
    assert len(dump_request(RTM_NEWROUTE, 1)) == 28
    assert not any(isinstance(e, LinkChanged) for e in events)
    assert IPv4Address("10.0.0.1") == events[0].route.prefix.network_address


@pytest.mark.netns
@pytest.mark.slow
def test_netlink_overrun_forces_a_resync_and_the_end_state_is_exact(
    ns: str, tmp_path: Path
) -> None:
    config = tmp_path / "announcer.yaml"
    config.write_text(
        "kernel:\n  interfaces: ['vethr*']\n  netlink_rcvbuf_bytes: 65536\n  resync_interval_seconds: 3600\n"
        "policy:\n  allow: ['10.0.0.0/8']\n  max_routes: 100000\n"
    )
    count = 20_000
    prefixes = {f"10.{1 + i // 65536}.{(i // 256) % 256}.{i % 256}/32" for i in range(count)}
    batch = tmp_path / "routes.batch"
    exa = FakeExaBGP(ns, config)
    try:
        batch.write_text("".join(f"route add {p} dev vethr1\n" for p in sorted(prefixes)))
        sh(ns, "ip", "-batch", str(batch))
        poll(
            lambda: final_state(exa.seen) == prefixes,
            120,
            "every route announced exactly once overall",
            interval=0.2,
        )
        batch.write_text("".join(f"route del {p} dev vethr1\n" for p in sorted(prefixes)))
        sh(ns, "ip", "-batch", str(batch))
        poll(lambda: final_state(exa.seen) == set(), 120, "every route withdrawn", interval=0.2)
    finally:
        exa.close()
    assert "netlink_overrun" in exa.stderr(), (
        "the burst did not overrun a 64 KiB buffer: the test proves nothing"
    )
    announced = [
        p for line in exa.seen if line.split()[0] == "announce" for p in parse_command(line)[1]
    ]
    assert len(announced) == count  # each route announced exactly once overall
