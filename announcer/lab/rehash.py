"""The by-hand comparison: hash-threshold vs resilient nexthop groups, in a lab router.

FRR 8.4 programs BGP multipath as plain (hash-threshold) nexthop groups; resilient groups
(Linux >= 5.13) are not available to it. Here, inside one lab namespace, a throwaway veth
carries 4 next hops; the same test prefix is routed through a hash-threshold group and then a
resilient group, and the kernel is asked (``ip route get ... ipproto udp sport N``) which next
hop each of N flows takes, before and after one member is removed. It runs in the client's
namespace: no routing daemon there to react to the kernel nexthop objects (zebra in a router
namespace picks them up and skews the result), with the routers' hash settings. Everything
made here is deleted afterwards; it lives only in the lab namespace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from announcer.lab.stats import moved_fraction

TEST_PREFIX = "10.254.100.1"
GATEWAYS = [f"10.254.0.{i}" for i in range(1, 5)]
DEV = "aalhash0"
BASE_ID = 990000  # far above any nexthop id a routing daemon would allocate

Runner = Callable[[list[str], str | None], str]  # (argv, stdin) -> stdout, run in the namespace


def _route_get_all(run: Runner, flows: int) -> dict[int, str]:
    batch = "".join(
        f"route get {TEST_PREFIX} ipproto udp sport {10000 + f} dport 7000\n" for f in range(flows)
    )
    out = run(["ip", "-o", "-batch", "-"], batch)
    chosen: dict[int, str] = {}
    for flow, line in enumerate(line for line in out.splitlines() if TEST_PREFIX in line):
        words = line.split()
        if "via" in words:
            chosen[flow] = words[words.index("via") + 1]
    return chosen


def _measure(run: Runner, group: list[str], flows: int, remove: int, group_id: str) -> float:
    """Fresh group `group_id` with 4 members; map flows; remove one member; map again."""
    run(["ip", "nexthop", "add", "id", group_id, *group], None)
    run(["ip", "route", "replace", f"{TEST_PREFIX}/32", "nhid", group_id], None)
    before = _route_get_all(run, flows)
    members = "/".join(str(BASE_ID + i) for i in range(1, 5) if i != remove)
    run(["ip", "nexthop", "replace", "id", group_id, "group", members, *group[2:]], None)
    after = _route_get_all(run, flows)
    run(["ip", "route", "del", f"{TEST_PREFIX}/32"], None)
    run(["ip", "nexthop", "del", "id", group_id], None)
    return moved_fraction(before, after, {GATEWAYS[remove - 1]})


HASH_SYSCTLS = ["net.ipv4.fib_multipath_hash_policy=3", "net.ipv4.fib_multipath_hash_fields=0x0037"]


def compare(run: Runner, flows: int = 2000) -> dict[str, Any]:
    run(["sysctl", "-q", "-w", *HASH_SYSCTLS], None)
    run(["ip", "link", "add", DEV, "type", "veth", "peer", "name", DEV + "p"], None)
    try:
        run(["ip", "link", "set", DEV, "up"], None)
        run(["ip", "link", "set", DEV + "p", "up"], None)
        run(["ip", "addr", "add", "10.254.0.0/24", "dev", DEV], None)
        for i, gw in enumerate(GATEWAYS, start=1):
            run(["ip", "nexthop", "add", "id", str(BASE_ID + i), "via", gw, "dev", DEV], None)
        plain = ["group", "/".join(str(BASE_ID + i) for i in range(1, 5))]
        resilient = [*plain, "type", "resilient", "buckets", "128", "idle_timer", "0"]
        result: dict[str, Any] = {"flows": flows, "paths": 4, "ideal_moved_surviving": 0.0}
        for k, (name, group) in enumerate((("hash_threshold", plain), ("resilient", resilient))):
            result[name] = {
                f"remove_member_{m}": round(
                    _measure(run, group, flows, m, str(BASE_ID + 100 + 10 * k + m)), 4
                )
                for m in (1, 2)
            }
        return result
    finally:
        run(["ip", "link", "del", DEV], None)
        for i in range(1, 5):  # normally gone with the link already
            run(["ip", "nexthop", "del", "id", str(BASE_ID + i)], None)
