"""Several containers of one host sharing an extra (anycast) IP: one route, a nexthop group.

The plugin runs as a runtime runs it (tests/cni/conftest.py), many at once where the test
is about concurrency. The kernel facts the design rests on (docs/adr/0004) are pinned too.
"""

from __future__ import annotations

import fcntl
import os
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from announcer.cni.scheme import host_ifname
from tests.cni.conftest import (
    LOCK_FILE,
    Runtime,
    links,
    netconf,
    nexthops,
    our_routes,
    route_monitor,
    static_ipam,
)
from tests.netlab import RouteMonitor, netns, poll, sh

pytestmark = [pytest.mark.netns, pytest.mark.cni]

NewNs = Callable[[], str]
ANY4, ANY6 = "10.9.9.1", "fd00:9::1"


def _conf(primary: str, *extra: str, version: str = "1.0.0") -> dict[str, Any]:
    conf = netconf(static_ipam(primary), args={"cni": {"extraIPs": list(extra)}})
    return dict(conf, cniVersion=version)


def _veth(cid: str) -> str:
    return host_ifname(cid, "eth0")


def _shared(host: str) -> tuple[frozenset[str], frozenset[str]]:
    """The devices of ANY4's and ANY6's routes (empty when there is no route)."""
    return our_routes(host).get(ANY4, frozenset()), our_routes(host, 6).get(ANY6, frozenset())


def _pings(ns: str, dst: str) -> bool:
    return sh(ns, "ping", "-c1", "-W1", dst, check=False).returncode == 0


def test_extra_ip_shared_by_three_containers(
    runtime: Runtime, containers: NewNs, tmp_path: Path
) -> None:
    host = runtime.host
    cs = {f"s{i}": containers() for i in range(3)}
    for i, (cid, ns) in enumerate(cs.items()):
        reply = runtime.add(_conf(f"10.1.0.{i + 1}/24", ANY4, ANY6), cid, ns)
        assert reply.ok, reply
        assert [ip["address"] for ip in reply.doc["ips"]][1:] == [f"{ANY4}/32", f"{ANY6}/128"]
    veths = {_veth(cid) for cid in cs}
    assert _shared(host) == (veths, veths)
    route = next(r for r in sh(host, "ip", "-d", "route", "show", ANY4).stdout.splitlines() if r)
    assert "proto 180" in route
    assert "nhid" in route

    # Through the host to the anycast IP, v4 and v6, from a container without it.
    client = containers()
    assert runtime.add(netconf(static_ipam("10.1.0.9/24", "fd00:1::9/64")), "client", client).ok
    poll(lambda: _pings(client, ANY4), 10, f"ping {ANY4}")
    poll(lambda: _pings(client, ANY6), 10, f"ping {ANY6}")

    # Each DEL takes out only its own nexthop, telling listeners (RTM_NEWROUTE: the kernel
    # says nothing when a veth just vanishes); again is a no-op; the last one removes all.
    with route_monitor(host, tmp_path / "monitor.log") as monitor:
        assert runtime.delete(_conf("10.1.0.2/24", ANY4, ANY6), "s1", cs["s1"]).ok
        assert _shared(host) == ({_veth("s0"), _veth("s2")},) * 2
        poll(lambda: _updates(monitor) == {ANY4: 1, ANY6: 1}, 10, "route updates at DEL")
        assert runtime.delete(_conf("10.1.0.2/24", ANY4, ANY6), "s1", cs["s1"]).ok
        assert _shared(host) == ({_veth("s0"), _veth("s2")},) * 2
        for cid in ("s0", "s2"):
            assert runtime.delete(_conf("10.1.0.1/24", ANY4, ANY6), cid, cs[cid]).ok
        assert _shared(host) == (frozenset(), frozenset())
        poll(lambda: monitor.deleted(ANY4) and monitor.deleted(ANY6), 10, "route deletions")
    assert nexthops(host) == []


def _updates(monitor: RouteMonitor) -> dict[str, int]:
    """How many route updates (not deletions) of ANY4 and ANY6 the monitor saw."""
    lines = [line.split() for line in monitor.text().splitlines()]
    return {ip: sum(1 for w in lines if ip in w and "Deleted" not in w) for ip in (ANY4, ANY6)}


def test_refusals_are_unchanged_for_primaries(runtime: Runtime, containers: NewNs) -> None:
    host = runtime.host
    c1, c2 = containers(), containers()
    assert runtime.add(_conf("10.1.0.5/24", ANY4), "r1", c1).ok
    before = (our_routes(host), nexthops(host), set(links(host)))
    for conf in (_conf(f"{ANY4}/24"),  # a primary over a shared extra
                 _conf("10.1.0.6/24", "10.1.0.5")):  # an extra over someone's primary  # fmt: skip
        reply = runtime.add(conf, "r2", c2)
        assert reply.rc == 1, reply
        assert reply.doc["code"] == 100, reply
        assert _veth("r1") in reply.doc["msg"], reply
        assert (our_routes(host), nexthops(host), set(links(host))) == before
        assert set(links(c2)) == {"lo"}
    # A route we did not make (not our protocol) is not shareable either.
    sh(host, "ip", "route", "add", "10.9.9.2/32", "dev", "lo", "proto", "static")
    reply = runtime.add(_conf("10.1.0.6/24", "10.9.9.2"), "r2", c2)
    assert reply.doc["code"] == 100, reply
    assert "10.9.9.2 is already routed on this host via lo" in reply.doc["msg"], reply


def test_check_understands_shared_routes(runtime: Runtime, containers: NewNs) -> None:
    host = runtime.host
    c1, c2 = containers(), containers()
    added = {cid: runtime.add(_conf(ip, ANY4), cid, ns)
             for cid, ip, ns in (("k1", "10.1.0.1/24", c1), ("k2", "10.1.0.2/24", c2))}  # fmt: skip
    checked = {cid: dict(_conf("10.1.0.1/24", ANY4), prevResult=r.doc) for cid, r in added.items()}
    assert runtime.call("CHECK", checked["k1"], "k1", c1).ok
    assert runtime.call("CHECK", checked["k2"], "k2", c2).ok

    # Take k1's nexthop out of the group by hand: k1's CHECK says so, k2's still passes.
    group = next(nh for nh in nexthops(host) if "group" in nh)
    k2 = next(nh["id"] for nh in nexthops(host) if nh.get("dev") == _veth("k2"))
    sh(host, "ip", "nexthop", "replace", "id", str(group["id"]), "group", str(k2), "proto", "180")
    reply = runtime.call("CHECK", checked["k1"], "k1", c1)
    assert reply.rc == 1, reply
    assert (
        f"shared host route {ANY4}/32 proto 180 table 254 has no nexthop dev {_veth('k1')}"
        in (reply.doc["msg"])
    )
    assert runtime.call("CHECK", checked["k2"], "k2", c2).ok


def _fake_ipam(tmp_path: Path) -> str:
    """A CNI 1.1 IPAM stand-in (Debian's stop at 1.0): hands out CNI_ARGS IP=, no state."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "fake-ipam"
    fake.write_text('#!/bin/sh\nif [ "$CNI_COMMAND" = ADD ]; then\n'
                    '  echo "{\\"cniVersion\\":\\"1.1.0\\",\\"ips\\":[{\\"address\\":'
                    '\\"${CNI_ARGS#IP=}/24\\"}]}"\nfi\n')  # fmt: skip
    fake.chmod(0o755)
    return str(bindir)


def test_gc_removes_only_dead_attachments_nexthops(
    runtime: Runtime, containers: NewNs, tmp_path: Path
) -> None:
    rt = Runtime(runtime.host, cni_path=_fake_ipam(tmp_path))
    conf = dict(netconf({"type": "fake-ipam"}, args={"cni": {"extraIPs": [ANY4, ANY6]}}),
                cniVersion="1.1.0")  # fmt: skip
    for i, cid in enumerate(("g0", "g1", "g2")):
        assert rt.add(conf, cid, containers(), args=f"IP=10.6.0.{i + 1}").ok
    valid = [{"containerID": cid, "ifname": "eth0"} for cid in ("g0", "g2")]
    assert rt.call("GC", dict(conf, **{"cni.dev/valid-attachments": valid})).ok
    assert _shared(runtime.host) == ({_veth("g0"), _veth("g2")},) * 2
    assert _veth("g1") not in links(runtime.host)
    assert {nh.get("dev") for nh in nexthops(runtime.host)} == {None, _veth("g0"), _veth("g2")}


def test_failed_add_leaves_the_shared_route_as_it_was(
    runtime: Runtime, containers: NewNs, tmp_path: Path
) -> None:
    """An ADD that joins one shared route and is then refused the next leaves the first.

    The test holds the plugins' lock while it routes 10.9.9.3 (the second extra) as a
    primary route by hand, after the ADD checked it free: the ADD then joins ANY4, is
    refused 10.9.9.3 and must take itself out of ANY4's group again.
    """
    host = runtime.host
    c1, c2, c3 = containers(), containers(), containers()
    assert runtime.add(_conf("10.1.0.1/24", ANY4), "f1", c1).ok
    assert runtime.add(_conf("10.1.0.3/24"), "f3", c3).ok
    before = nexthops(host)
    with LOCK_FILE.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with ThreadPoolExecutor(1) as pool:
            adding = pool.submit(runtime.add, _conf("10.1.0.2/24", ANY4, "10.9.9.3"), "f2", c2)
            poll(lambda: _veth("f2") in links(host), 20, "f2's veth made, ADD waiting for lock")
            sh(host, "ip", "route", "add", "10.9.9.3/32", "dev", _veth("f3"), "proto", "180")
            fcntl.flock(lock, fcntl.LOCK_UN)
            reply = adding.result(60)
    assert reply.rc == 1, reply
    assert reply.doc["code"] == 100, reply
    assert "10.9.9.3" in reply.doc["msg"], reply
    assert _veth("f2") not in links(host)
    assert our_routes(host)[ANY4] == {_veth("f1")}
    assert nexthops(host) == before
    assert set(links(c2)) == {"lo"}


def _parallel(calls: list[Callable[[], Any]]) -> list[Any]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result(120) for f in [pool.submit(c) for c in calls]]


@pytest.mark.slow
def test_parallel_add_and_del_keep_the_exact_nexthop_set(
    runtime: Runtime, containers: NewNs, tmp_path: Path
) -> None:
    """N plugins ADD at once, then rounds of a random subset DELeting while others ADD
    back: after every round the routes' nexthops are exactly the live veths, and the
    routes were never deleted while a holder was left (ip monitor)."""
    host, n, rounds = runtime.host, 12, 4
    rng = random.Random(int(os.environ.get("SHARED_SEED", "17")))
    ns = {f"p{i:02}": containers() for i in range(n)}
    conf = {cid: _conf(f"10.7.0.{i + 1}/24", ANY4, ANY6) for i, cid in enumerate(ns)}
    with route_monitor(host, tmp_path / "monitor.log") as monitor:
        replies = _parallel([lambda c=c: runtime.add(conf[c], c, ns[c]) for c in ns])
        assert all(r.ok for r in replies), [r for r in replies if not r.ok]
        live = set(ns)
        assert _shared(host) == ({_veth(c) for c in live},) * 2
        for _ in range(rounds):
            going = set(
                rng.sample(sorted(live), rng.randint(1, len(live) - 1) if len(live) > 1 else 0)
            )
            coming = set(ns) - live
            calls = [lambda c=c: runtime.delete(conf[c], c, ns[c]) for c in going]
            calls += [lambda c=c: runtime.add(conf[c], c, ns[c]) for c in coming]
            replies = _parallel(calls)
            assert all(r.ok for r in replies), [r for r in replies if not r.ok]
            live = (live - going) | coming
            assert _shared(host) == ({_veth(c) for c in live},) * 2
        assert monitor.deleted(ANY4) == []
        assert monitor.deleted(ANY6) == []
        _parallel([lambda c=c: runtime.delete(conf[c], c, ns[c]) for c in live])
        poll(
            lambda: monitor.deleted(ANY4) and monitor.deleted(ANY6), 10, "last DEL's route removal"
        )
    assert _shared(host) == (frozenset(), frozenset())
    assert nexthops(host) == []


def test_kernel_keeps_the_group_when_a_member_netns_vanishes(
    runtime: Runtime, containers: NewNs
) -> None:
    """Contract: a netns deleted without DEL takes only its nexthop out (a plain IPv4
    multipath route would be deleted whole), and the last one takes the route."""
    host = runtime.host
    keep = containers()
    assert runtime.add(_conf("10.1.0.1/24", ANY4, ANY6), "v0", keep).ok
    with netns("cnic") as gone:
        assert runtime.add(_conf("10.1.0.2/24", ANY4, ANY6), "v1", gone).ok
        assert _shared(host) == ({_veth("v0"), _veth("v1")},) * 2
    poll(lambda: _veth("v1") not in links(host), 10, "v1's veth gone with its netns")
    assert _shared(host) == ({_veth("v0")},) * 2
    # The plain multipath route the ADR rejects: one member gone, the whole route gone.
    sh(host, "ip", "link", "add", "xtmp", "type", "veth", "peer", "name", "xtmp-p")
    sh(host, "ip", "link", "set", "xtmp", "up")
    sh(host, "ip", "route", "add", "10.9.9.8/32", "proto", "180", "nexthop", "dev",
       _veth("v0"), "nexthop", "dev", "xtmp")  # fmt: skip
    sh(host, "ip", "link", "del", "xtmp")
    assert "10.9.9.8" not in our_routes(host)
