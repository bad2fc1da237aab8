"""The host routes of container IPs: how an IP is routed now, primary routes, refusals.

Every container IP is a host route (/32, /128) in the configured table with the configured
route protocol (the announcer's netlink source selects on it). A *primary* IP is a plain
route ``dev <host veth>``, scope link, and unique: any route to it in the table refuses
it. An *extra* (anycast) IP may be shared by several containers of the host: its route
uses a nexthop group of theirs (shared_routes.py); it is refused only when the IP is
routed any other way (someone's primary, a route we did not make).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from announcer.cni.rtnl import (
    AF_INET,
    AF_INET6,
    NLM_F_CREATE,
    NLM_F_EXCL,
    RTM_NEWROUTE,
    Nexthop,
    Route,
    Rtnl,
    RtnlError,
    route_body,
)
from announcer.cni.scheme import AddressInUse, IPAddress, WiringConfig, WiringError

SNAPSHOT_ATTEMPTS = 5


def family(ip: IPAddress) -> int:
    return AF_INET if ip.version == 4 else AF_INET6


@dataclass(frozen=True)
class Routed:
    """How one IP is routed in the table now: its routes, and their nexthop if shared."""

    ip: IPAddress
    routes: tuple[Route, ...]
    nexthops: dict[int, Nexthop] = field(repr=False)  # the snapshot it was judged in
    nexthop: Nexthop | None = None  # set exactly when the IP is a shared route of ours

    @property
    def free(self) -> bool:
        return not self.routes

    @property
    def shared(self) -> bool:
        return self.nexthop is not None

    @property
    def members(self) -> tuple[int, ...]:
        """The device nexthops of a shared route: its group's, or its one."""
        if self.nexthop is None:
            return ()
        return self.nexthop.group or (self.nexthop.id,)

    def oifs(self) -> tuple[int, ...]:
        """Every device the IP is routed through, whatever the routes' shapes (the nexthop
        objects' too: without nexthop_compat_mode a route names only its nhid)."""
        found: list[int] = []
        for route in self.routes:
            found += route.oifs
            used = self.nexthops.get(route.nhid or 0)
            members = [self.nexthops.get(i) for i in used.group] if used and used.group else [used]
            found += [m.oif for m in members if m is not None and m.oif is not None]
        return tuple(dict.fromkeys(found))


def _consistent(routes: Sequence[Route], nexthops: dict[int, Nexthop]) -> bool:
    """Every nexthop object a route names, and every member of a group, is in nexthops."""
    for route in routes:
        if route.nhid is None:
            continue
        used = nexthops.get(route.nhid)
        if used is None or any(i not in nexthops for i in used.group):
            return False
    return True


def _snapshot(
    rtnl: Rtnl, families: Sequence[int], cfg: WiringConfig
) -> tuple[list[Route], dict[int, Nexthop]]:
    """Routes in cfg.table, then the nexthop objects, read again until they agree: a route
    changed between the two reads names a nexthop the second one no longer has."""
    for _ in range(SNAPSHOT_ATTEMPTS):
        routes = [r for fam in families for r in rtnl.routes(fam, cfg.table)]
        nexthops = rtnl.nexthops()
        if _consistent(routes, nexthops):
            break
    return routes, nexthops


def routed(rtnl: Rtnl, ip: IPAddress, cfg: WiringConfig) -> Routed:
    """The routes to exactly ip/32 (/128) in cfg.table, any protocol or metric."""
    found, nexthops = _snapshot(rtnl, (family(ip),), cfg)
    routes = tuple(r for r in found if r.dst == ip and r.dst_len == ip.max_prefixlen)
    return Routed(ip, routes, nexthops, _shared_nexthop(routes, nexthops, cfg))


def all_routed(rtnl: Rtnl, cfg: WiringConfig) -> tuple[list[Routed], dict[int, Nexthop]]:
    """How every host IP (/32, /128) in cfg.table is routed, both families; the nexthops."""
    found, nexthops = _snapshot(rtnl, (AF_INET, AF_INET6), cfg)
    by_ip: dict[IPAddress, list[Route]] = {}
    for r in found:
        if r.dst is not None and r.dst_len == r.dst.max_prefixlen:
            by_ip.setdefault(r.dst, []).append(r)
    states = [Routed(ip, tuple(rs), nexthops, _shared_nexthop(rs, nexthops, cfg))
              for ip, rs in by_ip.items()]  # fmt: skip
    return states, nexthops


def _shared_nexthop(
    routes: Sequence[Route], nexthops: dict[int, Nexthop], cfg: WiringConfig
) -> Nexthop | None:
    """The nexthop of a shared route of ours: one route, our protocol, through a device
    nexthop of ours or a group of them."""
    if len(routes) != 1 or routes[0].protocol != cfg.route_protocol or routes[0].nhid is None:
        return None
    used = nexthops.get(routes[0].nhid)
    if used is None or used.protocol != cfg.route_protocol:
        return None
    members = [nexthops.get(i) for i in used.group] if used.group else [used]
    if not all(m is not None and m.oif is not None and m.protocol == cfg.route_protocol
               for m in members):  # fmt: skip
        return None
    return used


def device_names(oifs: Iterable[int]) -> str:
    names = []
    for index in oifs:
        try:
            names.append(socket.if_indextoname(index))
        except OSError:
            names.append(f"ifindex {index}")
    return ",".join(names)


def in_use(state: Routed, cfg: WiringConfig) -> AddressInUse:
    """The refusal of state.ip, naming every device it is routed through."""
    devices = device_names(state.oifs())
    if not devices:
        route = state.routes[0]
        devices = f"a route of type {route.type}" if route.type != 1 else "a route without device"
    return AddressInUse(state.ip, devices, cfg.table)


def refuse_taken(
    rtnl: Rtnl, primary: Sequence[IPAddress], extra: Sequence[IPAddress], cfg: WiringConfig
) -> None:
    """AddressInUse if a primary IP is routed at all, or an extra one other than shared."""
    for ip, shareable in [(ip, False) for ip in primary] + [(ip, True) for ip in extra]:
        state = routed(rtnl, ip, cfg)
        if not state.free and not (shareable and state.shared):
            raise in_use(state, cfg)


def ensure_addresses_free(
    ips: Sequence[IPAddress], config: WiringConfig = WiringConfig(), extra: Sequence[IPAddress] = ()
) -> None:
    """AddressInUse if any of ips is routed in config.table, or any of extra unshareably."""
    with Rtnl() as rtnl:
        refuse_taken(rtnl, ips, extra, config)


def add_primary_route(rtnl: Rtnl, ip: IPAddress, dev: str, index: int, cfg: WiringConfig) -> None:
    """ip dev <index> scope link; never over an existing route (NLM_F_EXCL)."""
    body = route_body(ip, cfg.table, cfg.route_protocol, oif=index)
    try:
        rtnl.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)
    except RtnlError as e:
        if e.errno == errno.EEXIST:  # lost a race with another ADD of the same IP
            raise in_use(routed(rtnl, ip, cfg), cfg) from e
        raise WiringError(f"adding host route {ip} dev {dev}: {e}") from e


def has_primary_route(rtnl: Rtnl, ip: IPAddress, index: int, cfg: WiringConfig) -> bool:
    state = routed(rtnl, ip, cfg)
    return any(
        r.oif == index and not r.multipath and r.protocol == cfg.route_protocol
        for r in state.routes
    )
