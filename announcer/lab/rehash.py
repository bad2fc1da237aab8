"""The by-hand comparison: hash-threshold vs resilient nexthop groups, in a lab router.

FRR 8.4 programs BGP multipath as plain (hash-threshold) nexthop groups; resilient groups
(Linux >= 5.13) are not available to it. Here, inside one lab namespace, a throwaway veth
carries 4 next hops; the same test prefix is routed through a hash-threshold group and then a
resilient group, and the kernel is asked (``ip route get ... ipproto udp sport N``) which next
hop each of N flows takes, before and after one member is removed. It runs in the client's
namespace: no routing daemon there to react to the kernel nexthop objects (zebra in a router
namespace picks them up and skews the result), with the routers' hash settings. Everything
made here is deleted afterwards; it lives only in the lab namespace.

Per family (IPv4 or IPv6 test prefix, gateways and hash settings): each family has its own
device and nexthop ids, so both can be measured at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from announcer.lab.family import IPV4, Family, family_of
from announcer.lab.stats import moved_fraction


@dataclass(frozen=True)
class Setup:
    """A family's test prefix, link network and gateways, device and nexthop ids."""

    prefix: str
    network: str
    gateways: tuple[str, ...]
    dev: str
    base_id: int  # far above any nexthop id a routing daemon would allocate

    @property
    def host(self) -> str:
        return family_of(self.prefix).host(self.prefix)


SETUPS = {
    4: Setup("10.254.100.1", "10.254.0.0/24", tuple(f"10.254.0.{i}" for i in range(1, 5)),
             "aalhash0", 990000),
    6: Setup("fd00:254:100::1", "fd00:254::/64", tuple(f"fd00:254::{i}" for i in range(1, 5)),
             "aalhash6", 991000),
}  # fmt: skip

Runner = Callable[[list[str], str | None], str]  # (argv, stdin) -> stdout, run in the namespace


def _route_get_all(run: Runner, setup: Setup, flows: int) -> dict[int, str]:
    batch = "".join(f"route get {setup.prefix} ipproto udp sport {10000 + f} dport 7000\n"
                    for f in range(flows))  # fmt: skip
    out = run(["ip", "-o", "-batch", "-"], batch)
    chosen: dict[int, str] = {}
    for flow, line in enumerate(line for line in out.splitlines() if setup.prefix in line):
        words = line.split()
        if "via" in words:
            chosen[flow] = words[words.index("via") + 1]
    return chosen


def _measure(run: Runner, setup: Setup, group: list[str], flows: int, remove: int,
             group_id: str) -> float:  # fmt: skip
    """Fresh group `group_id` with 4 members; map flows; remove one member; map again."""
    host = setup.host
    run(["ip", "nexthop", "add", "id", group_id, *group], None)
    run(["ip", "route", "replace", host, "nhid", group_id], None)
    before = _route_get_all(run, setup, flows)
    members = "/".join(str(setup.base_id + i) for i in range(1, 5) if i != remove)
    run(["ip", "nexthop", "replace", "id", group_id, "group", members, *group[2:]], None)
    after = _route_get_all(run, setup, flows)
    run(["ip", "route", "del", host], None)
    run(["ip", "nexthop", "del", "id", group_id], None)
    return moved_fraction(before, after, {setup.gateways[remove - 1]})


def hash_sysctls(family: Family) -> list[str]:
    """The routers' hash settings for family (labs/spine-leaf.clab.yml)."""
    return [f"net.{family.name}.fib_multipath_hash_policy=3",
            f"net.{family.name}.fib_multipath_hash_fields=0x0037"]  # fmt: skip


def compare(run: Runner, family: Family = IPV4, flows: int = 2000) -> dict[str, Any]:
    setup = SETUPS[family.version]
    ids = [str(setup.base_id + i) for i in range(1, 5)]
    run(["sysctl", "-q", "-w", *hash_sysctls(family)], None)
    run(["ip", "link", "add", setup.dev, "type", "veth", "peer", "name", setup.dev + "p"], None)
    try:
        run(["ip", "link", "set", setup.dev, "up"], None)
        run(["ip", "link", "set", setup.dev + "p", "up"], None)
        run(["ip", "addr", "add", setup.network, "dev", setup.dev, *_nodad(family)], None)
        for nhid, gw in zip(ids, setup.gateways, strict=True):
            run(["ip", "nexthop", "add", "id", nhid, "via", gw, "dev", setup.dev], None)
        plain = ["group", "/".join(ids)]
        resilient = [*plain, "type", "resilient", "buckets", "128", "idle_timer", "0"]
        result: dict[str, Any] = {"flows": flows, "paths": 4, "ideal_moved_surviving": 0.0}
        for k, (name, group) in enumerate((("hash_threshold", plain), ("resilient", resilient))):
            result[name] = {
                f"remove_member_{m}": round(_measure(
                    run, setup, group, flows, m, str(setup.base_id + 100 + 10 * k + m)), 4)
                for m in (1, 2)
            }  # fmt: skip
        return result
    finally:
        run(["ip", "link", "del", setup.dev], None)
        for nhid in ids:  # normally gone with the link already
            run(["ip", "nexthop", "del", "id", nhid], None)


def _nodad(family: Family) -> list[str]:
    """An IPv6 address is usable at once only without duplicate address detection."""
    return ["nodad"] if family.version == 6 else []
