"""The kernel rules: which routes and addresses may be announced at all, and why not. Pure.

Every kernel route (and every address on an ``address_interfaces`` device) is a
*candidate* for its prefix with one reason word: an announce reason, or the first withheld
reason its checks hit, in the order of :data:`WITHHELD_REASONS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from announcer.core.policy import Policy
from announcer.core.world import World
from announcer.events import RT_TABLE_LOCAL, RTN_UNICAST, KernelAddress, NextHops, Via
from announcer.model import Prefix, Reason, host_prefix, is_host_prefix

# Never announced, whatever the allowlist says.
MARTIANS: tuple[Prefix, ...] = (
    Prefix("0.0.0.0/8"),
    Prefix("127.0.0.0/8"),
    Prefix("169.254.0.0/16"),
    Prefix("224.0.0.0/4"),
    Prefix("240.0.0.0/4"),
    Prefix("::/128"),
    Prefix("::1/128"),
    Prefix("::ffff:0:0/96"),
    Prefix("fe80::/10"),
    Prefix("ff00::/8"),
)

# Reasons, in the order the checks run. When no candidate of a prefix is eligible, the
# decision shows the reason of the candidate that got furthest: the most useful answer
# to "why is X not announced?".
WITHHELD_REASONS: tuple[Reason, ...] = (
    Reason.NOT_HOST_PREFIX,
    Reason.MARTIAN,
    Reason.TABLE_NOT_SELECTED,
    Reason.PROTOCOL_NOT_SELECTED,
    Reason.MULTIPATH_ROUTE,
    Reason.NO_INTERFACE,
    Reason.INTERFACE_NOT_SELECTED,
    Reason.ROUTE_HAS_GATEWAY,
    Reason.LINK_DOWN,
    Reason.PREFIX_NOT_ALLOWED,
    Reason.MAX_ROUTES_EXCEEDED,
)
_RANK = {reason: rank for rank, reason in enumerate(WITHHELD_REASONS)}
ANNOUNCE_REASONS = (Reason.HOST_ROUTE, Reason.LOCAL_ADDRESS)
TABLE_NAMES = {253: "default", 254: "main", 255: "local"}

Ranges = tuple[tuple[int, int, int], ...]  # (version, first, last) as integers


def _ranges(prefixes: Iterable[Prefix]) -> Ranges:
    return tuple((p.version, p.first, p.last) for p in prefixes)


MARTIAN_RANGES = _ranges(MARTIANS)


def _inside(prefix: Prefix, ranges: Ranges) -> bool:
    """prefix lies within one of ranges: integer compares (subnet_of is ~10x slower)."""
    version, first, last = prefix.version, prefix.first, prefix.last
    return any(v == version and lo <= first and last <= hi for v, lo, hi in ranges)


def is_martian(prefix: Prefix) -> bool:
    return prefix.prefixlen == 0 or _inside(prefix, MARTIAN_RANGES)


def is_allowed(prefix: Prefix, allow: Iterable[Prefix]) -> bool:
    return _inside(prefix, _ranges(allow))


def _matches(name: str | None, globs: Iterable[str]) -> bool:
    return name is not None and any(fnmatchcase(name, g) for g in globs)


class KernelRules:
    """The kernel rules compiled for one decide(): the allowlist as integer ranges, the
    selected and up links, source names, and the addresses by prefix."""

    def __init__(self, world: World, policy: Policy) -> None:
        self.world = world
        self.policy = policy
        links = world.links.values()
        self.allow = _ranges(policy.allow)
        self.selected = frozenset(k.index for k in links if _matches(k.name, policy.interfaces))
        self.up = frozenset(k.index for k in links if k.up)
        self._names: dict[tuple[int, int | None, NextHops], str] = {}
        self.addresses: dict[Prefix, list[tuple[Reason, str]]] = {}
        if policy.address_interfaces:
            for address in world.addresses.values():
                ifname = world.link_name(address.index)
                if ifname is not None and _matches(ifname, policy.address_interfaces):
                    verdict = address_verdict(address, world, policy)
                    entry = (verdict, f"address:{ifname}")
                    self.addresses.setdefault(host_prefix(address.address), []).append(entry)

    def route_verdict(self, prefix: Prefix, via: Via) -> Reason:
        """The reason word for one kernel route: an announce reason or a withheld one."""
        if not is_host_prefix(prefix):
            return Reason.NOT_HOST_PREFIX
        if is_martian(prefix):
            return Reason.MARTIAN
        policy = self.policy
        if via.table not in policy.tables:
            return Reason.TABLE_NOT_SELECTED
        if policy.protocols and via.protocol not in policy.protocols:
            return Reason.PROTOCOL_NOT_SELECTED
        if via.nexthops:
            return self._multipath_verdict(prefix, via)
        if via.oif is None or via.oif not in self.world.links:
            return Reason.NO_INTERFACE
        if via.oif not in self.selected:
            return Reason.INTERFACE_NOT_SELECTED
        if via.gateway is not None:
            return Reason.ROUTE_HAS_GATEWAY
        if via.oif not in self.up:
            return Reason.LINK_DOWN
        if not _inside(prefix, self.allow):
            return Reason.PREFIX_NOT_ALLOWED
        return Reason.HOST_ROUTE

    def _multipath_verdict(self, prefix: Prefix, via: Via) -> Reason:
        """Several local instances of one anycast IP (docs/adr/0004): a host route when its
        live paths are (on selected devices, no gateway but the instance's own link-local
        address). A path whose device is gone or lost carrier does not count: the kernel
        drops it from the group silently, and the route still serves through the others.
        ``multipath_route`` when a live path is on a device that is not selected."""
        live = [(oif, gw) for oif, gw in via.nexthops if oif in self.up]
        if not live:
            present = any(oif in self.world.links for oif, _ in via.nexthops)
            return Reason.LINK_DOWN if present else Reason.NO_INTERFACE
        if any(oif not in self.selected for oif, _ in live):
            return Reason.MULTIPATH_ROUTE
        if any(gw is not None and not gw.is_link_local for _, gw in live):
            return Reason.ROUTE_HAS_GATEWAY
        if not _inside(prefix, self.allow):
            return Reason.PREFIX_NOT_ALLOWED
        return Reason.HOST_ROUTE

    def _source(self, via: Via) -> str:
        key = (via.table, via.oif, via.nexthops)
        name = self._names.get(key)
        if name is None:
            table = TABLE_NAMES.get(via.table, str(via.table))
            if via.nexthops:
                devices = "+".join(self.world.link_name(oif) or "?" for oif, _ in via.nexthops)
            else:
                devices = self.world.link_name(via.oif) or "?"
            name = f"route:{table}:{devices}"
            self._names[key] = name
        return name

    def candidates(self, prefix: Prefix) -> list[tuple[Reason, str]]:
        """(reason, source) for every route and selected address of ``prefix``."""
        found = [
            (self.route_verdict(prefix, via), self._source(via))
            for via in self.world.routes_of(prefix)
            if via.type == RTN_UNICAST
            and (via.table != RT_TABLE_LOCAL or RT_TABLE_LOCAL in self.policy.tables)
        ]
        if self.addresses:
            found.extend(self.addresses.get(prefix, ()))
        return found


def route_verdict(prefix: Prefix, via: Via, world: World, policy: Policy) -> Reason:
    return KernelRules(world, policy).route_verdict(prefix, via)


def address_verdict(address: KernelAddress, world: World, policy: Policy) -> Reason:
    prefix = host_prefix(address.address)
    if address.prefixlen != prefix.max_prefixlen:
        return Reason.NOT_HOST_PREFIX
    if is_martian(prefix):
        return Reason.MARTIAN
    link = world.links.get(address.index)
    if link is None or not link.up:
        return Reason.LINK_DOWN
    if not is_allowed(prefix, policy.allow):
        return Reason.PREFIX_NOT_ALLOWED
    return Reason.LOCAL_ADDRESS


def best_withheld(found: list[tuple[Reason, str]]) -> tuple[Reason, str]:
    """The candidate that got furthest through the checks; ties to the smallest source."""
    return min(found, key=lambda c: (-_RANK[c[0]], c[1]))
