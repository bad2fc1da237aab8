"""Policy and the decision: which prefixes should be announced, and why (not).

``decide`` is a pure function of the world, the policy and the set of prefixes already
announced (only used to keep the announced ones when ``max_routes`` cuts the excess).
Every prefix the world mentions gets a :class:`Decision` with a stable reason word.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass
from fnmatch import fnmatchcase
from ipaddress import IPv4Network, IPv6Network

from announcer.core.world import World
from announcer.events import RT_TABLE_LOCAL, RTN_UNICAST, KernelAddress, KernelRoute
from announcer.model import (
    NO_ATTRIBUTES,
    Announcement,
    Attributes,
    IPAddress,
    NextHop,
    Prefix,
    host_prefix,
    is_host_prefix,
)

# Never announced, whatever the allowlist says.
MARTIANS: tuple[Prefix, ...] = (
    IPv4Network("0.0.0.0/8"),
    IPv4Network("127.0.0.0/8"),
    IPv4Network("169.254.0.0/16"),
    IPv4Network("224.0.0.0/4"),
    IPv4Network("240.0.0.0/4"),
    IPv6Network("::/128"),
    IPv6Network("::1/128"),
    IPv6Network("::ffff:0:0/96"),
    IPv6Network("fe80::/10"),
    IPv6Network("ff00::/8"),
)

# Reasons, in the order the checks run. When no candidate of a prefix is eligible, the
# decision shows the reason of the candidate that got furthest: the most useful answer
# to "why is X not announced?".
WITHHELD_REASONS: tuple[str, ...] = (
    "not_host_prefix",
    "martian",
    "table_not_selected",
    "protocol_not_selected",
    "multipath_route",
    "no_interface",
    "interface_not_selected",
    "route_has_gateway",
    "link_down",
    "prefix_not_allowed",
    "max_routes_exceeded",
)
_RANK = {reason: rank for rank, reason in enumerate(WITHHELD_REASONS)}
ANNOUNCE_REASONS = ("host_route", "local_address")
TABLE_NAMES = {253: "default", 254: "main", 255: "local"}


@dataclass(frozen=True, slots=True)
class Policy:
    tables: frozenset[int] = frozenset({254})
    interfaces: tuple[str, ...] = ("vethr*",)
    protocols: frozenset[int] = frozenset()
    address_interfaces: tuple[str, ...] = ()
    allow: tuple[Prefix, ...] = ()
    max_routes: int = 10000
    next_hop: NextHop = "self"
    attributes: Attributes = NO_ATTRIBUTES
    neighbors: frozenset[IPAddress] = frozenset()


@dataclass(frozen=True, slots=True)
class Decision:
    prefix: Prefix
    announce: bool
    reason: str
    sources: tuple[str, ...] = ()


def is_martian(prefix: Prefix) -> bool:
    if prefix.prefixlen == 0:
        return True
    return any(prefix.version == m.version and prefix.subnet_of(m) for m in MARTIANS)  # type: ignore[arg-type]


def is_allowed(prefix: Prefix, allow: Iterable[Prefix]) -> bool:
    return any(prefix.version == a.version and prefix.subnet_of(a) for a in allow)  # type: ignore[arg-type]


def _matches(name: str | None, globs: Iterable[str]) -> bool:
    return name is not None and any(fnmatchcase(name, g) for g in globs)


def route_verdict(route: KernelRoute, world: World, policy: Policy) -> str:
    """The reason word for one kernel route: an announce reason or a withheld one."""
    prefix = route.prefix
    if not is_host_prefix(prefix):
        return "not_host_prefix"
    if is_martian(prefix):
        return "martian"
    if route.table not in policy.tables:
        return "table_not_selected"
    if policy.protocols and route.protocol not in policy.protocols:
        return "protocol_not_selected"
    if route.multipath:
        return "multipath_route"
    name = world.link_name(route.oif)
    if name is None:
        return "no_interface"
    if not _matches(name, policy.interfaces):
        return "interface_not_selected"
    if route.gateway is not None:
        return "route_has_gateway"
    link = world.links.get(route.oif) if route.oif is not None else None
    if link is None or not link.up:
        return "link_down"
    if not is_allowed(prefix, policy.allow):
        return "prefix_not_allowed"
    return "host_route"


def address_verdict(address: KernelAddress, world: World, policy: Policy) -> str:
    prefix = host_prefix(address.address)
    if address.prefixlen != prefix.max_prefixlen:
        return "not_host_prefix"
    if is_martian(prefix):
        return "martian"
    link = world.links.get(address.index)
    if link is None or not link.up:
        return "link_down"
    if not is_allowed(prefix, policy.allow):
        return "prefix_not_allowed"
    return "local_address"


def _candidates(world: World, policy: Policy) -> Iterable[tuple[Prefix, str, str]]:
    """(prefix, reason, source) for every route and selected address in the world."""
    for route in world.routes.values():
        if route.type != RTN_UNICAST:
            continue
        if route.table == RT_TABLE_LOCAL and RT_TABLE_LOCAL not in policy.tables:
            continue
        name = world.link_name(route.oif) or "?"
        table = TABLE_NAMES.get(route.table, str(route.table))
        yield route.prefix, route_verdict(route, world, policy), f"route:{table}:{name}"
    if not policy.address_interfaces:
        return
    for address in world.addresses.values():
        ifname = world.link_name(address.index)
        if ifname is None or not _matches(ifname, policy.address_interfaces):
            continue
        prefix = host_prefix(address.address)
        yield prefix, address_verdict(address, world, policy), f"address:{ifname}"


def _sort_key(prefix: Prefix) -> tuple[int, int, int]:
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


def decide(
    world: World, policy: Policy, announced: Set[Prefix] = frozenset()
) -> dict[Prefix, Decision]:
    """One decision per prefix the world mentions."""
    eligible: dict[Prefix, list[tuple[str, str]]] = {}
    withheld: dict[Prefix, tuple[str, str]] = {}
    for prefix, reason, source in _candidates(world, policy):
        if reason in ANNOUNCE_REASONS:
            eligible.setdefault(prefix, []).append((reason, source))
        else:
            best = withheld.get(prefix)
            if best is None or _RANK[reason] > _RANK[best[0]]:
                withheld[prefix] = (reason, source)
    decisions: dict[Prefix, Decision] = {
        prefix: Decision(prefix, False, reason, (source,))
        for prefix, (reason, source) in withheld.items()
        if prefix not in eligible
    }
    # Over max_routes: keep what is already announced, then the lowest prefixes.
    order = sorted(eligible, key=lambda p: (p not in announced, _sort_key(p)))
    for position, prefix in enumerate(order):
        found = sorted(eligible[prefix])
        sources = tuple(source for _, source in found)
        if position < policy.max_routes:
            decisions[prefix] = Decision(prefix, True, found[0][0], sources)
        else:
            decisions[prefix] = Decision(prefix, False, "max_routes_exceeded", sources)
    return decisions


def desired(decisions: Iterable[Decision], policy: Policy) -> dict[Prefix, Announcement]:
    """The announcements for every decision that says announce."""
    result: dict[Prefix, Announcement] = {}
    for decision in decisions:
        if not decision.announce:
            continue
        next_hop = policy.next_hop
        if next_hop != "self" and next_hop.version != decision.prefix.version:
            next_hop = "self"
        result[decision.prefix] = Announcement(
            decision.prefix, next_hop, policy.attributes, policy.neighbors
        )
    return result
