"""The host routes of container IPs: who has an IP, adding one, checking one.

Every container IP (primary and extra/anycast) is a host route (/32, /128) in the
configured table, ``dev <host veth>``, scope link, with the configured route protocol (the
announcer's netlink source selects on it). An IP already routed in that table is refused,
never overwritten.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from announcer.cni.scheme import AddressInUse, IPAddress, WiringConfig, WiringError

RT_SCOPE_LINK = 253


def _family(ip: IPAddress) -> int:
    return 2 if ip.version == 4 else 10


def route_owner(ipr: IPRoute, ip: IPAddress, table: int) -> str | None:
    """The device of an existing host route to exactly ip/32 (/128) in table, if any."""
    for route in ipr.get_routes(family=_family(ip), table=table):
        if route.get("dst") != str(ip) or route["dst_len"] != ip.max_prefixlen:
            continue
        if route.get("table") != table:
            continue
        oif = route.get("oif")
        if oif is None:
            return f"a {route.get('type', 'non-device')} route"
        links = ipr.get_links(oif)
        return str(links[0].get("ifname")) if links else f"ifindex {oif}"
    return None


def add_host_route(ipr: IPRoute, ip: IPAddress, dev: str, index: int, cfg: WiringConfig) -> None:
    try:
        ipr.route(
            "add",
            dst=f"{ip}/{ip.max_prefixlen}",
            oif=index,
            table=cfg.table,
            proto=cfg.route_protocol,
            scope=RT_SCOPE_LINK,
        )
    except NetlinkError as e:
        if e.code == errno.EEXIST:  # lost a race with another ADD of the same IP
            raise AddressInUse(ip, route_owner(ipr, ip, cfg.table) or "?", cfg.table) from e
        raise WiringError(f"adding host route {ip} dev {dev}: {e}") from e


def ensure_free(ipr: IPRoute, ips: Sequence[IPAddress], cfg: WiringConfig) -> None:
    for ip in ips:
        owner = route_owner(ipr, ip, cfg.table)
        if owner is not None:
            raise AddressInUse(ip, owner, cfg.table)


def ensure_addresses_free(ips: Sequence[IPAddress], config: WiringConfig = WiringConfig()) -> None:
    """AddressInUse if any of ips is already routed (as a host route) in config.table."""
    with IPRoute() as ipr:
        ensure_free(ipr, ips, config)


def has_host_route(ipr: IPRoute, ip: IPAddress, index: int, cfg: WiringConfig) -> bool:
    return any(
        r.get("dst") == str(ip)
        and r["dst_len"] == ip.max_prefixlen
        and r.get("oif") == index
        and r["proto"] == cfg.route_protocol
        and r.get("table") == cfg.table
        for r in ipr.get_routes(family=_family(ip), table=cfg.table)
    )
