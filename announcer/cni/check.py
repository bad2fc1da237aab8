"""CHECK: everything that differs from what add_container would have made."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyroute2 import IPRoute

from announcer.cni.holders import load_unhealthy
from announcer.cni.host_routes import has_primary_route, routed
from announcer.cni.namespaces import container_ipr, link_index, read_sysctl
from announcer.cni.rtnl import Rtnl
from announcer.cni.scheme import (
    HOST_GATEWAY_V4,
    HOST_GATEWAY_V6,
    IPAddress,
    NetnsNotFound,
    WiringConfig,
    container_mac,
    host_ifname,
    host_sysctls,
    validate_ips,
)


def check_container(
    netns: str,
    ips: Sequence[str | IPAddress],
    extra_ips: Sequence[str | IPAddress] = (),
    *,
    ifname: str = "eth0",
    container_id: str | None = None,
    config: WiringConfig = WiringConfig(),
) -> list[str]:
    """Everything that differs from what add_container would have made (empty: all good)."""
    primary, extra = validate_ips(ips, extra_ips)
    all_ips = primary + extra
    host = host_ifname(container_id or netns, ifname, config.host_veth_prefix)
    problems: list[str] = []
    with IPRoute() as ipr:
        index = link_index(ipr, host)
        if index is None:
            return [f"host interface {host} is missing"]
        problems += _check_host(ipr, host, index, all_ips, config)
    problems += _check_routes(host, index, primary, extra, config)
    try:
        with container_ipr(netns) as cipr:
            problems += _check_container_end(cipr, ifname, all_ips)
    except NetnsNotFound as e:
        problems.append(str(e))
    return problems


def _check_host(
    ipr: IPRoute, host: str, index: int, all_ips: Sequence[IPAddress], cfg: WiringConfig
) -> list[str]:
    problems = []
    link = ipr.get_links(index)[0]
    if link.get("operstate") not in ("UP", "UNKNOWN"):
        problems.append(f"host interface {host} is {link.get('operstate')}, not UP")
    addrs = {(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=index)}
    if (str(HOST_GATEWAY_V4), 32) not in addrs:
        problems.append(f"host interface {host} lacks {HOST_GATEWAY_V4}/32")
    v6 = any(ip.version == 6 for ip in all_ips)
    if v6 and (str(HOST_GATEWAY_V6), 64) not in addrs:
        problems.append(f"host interface {host} lacks {HOST_GATEWAY_V6}/64")
    for path, value in host_sysctls(host, v6).items():
        if read_sysctl(path) != value:
            problems.append(f"{path} is {read_sysctl(path)}, not {value}")
    return problems


def _check_routes(
    host: str,
    index: int,
    primary: Sequence[IPAddress],
    extra: Sequence[IPAddress],
    cfg: WiringConfig,
) -> list[str]:
    """A plain route per primary IP; each extra IP a shared route with host among its
    members, unless host is unhealthy (then others may serve it without host)."""
    where = f"proto {cfg.route_protocol} table {cfg.table}"
    problems = []
    unhealthy = load_unhealthy(cfg)
    with Rtnl() as rtnl:
        for ip in primary:
            if not has_primary_route(rtnl, ip, index, cfg):
                problems.append(f"host route {ip}/{ip.max_prefixlen} dev {host} {where} is missing")
        for ip in extra:
            state = routed(rtnl, ip, cfg)
            if not state.shared:
                problems.append(f"shared host route {ip}/{ip.max_prefixlen} {where} is missing")
            elif index not in state.oifs() and host not in unhealthy:  # else: out for health
                problems.append(f"shared host route {ip}/{ip.max_prefixlen} {where} "
                                f"has no nexthop dev {host}")  # fmt: skip
    return problems


def _check_container_end(cipr: IPRoute, ifname: str, all_ips: Sequence[IPAddress]) -> list[str]:
    index = link_index(cipr, ifname)
    if index is None:
        return [f"container interface {ifname} is missing"]
    problems = []
    link: Any = cipr.get_links(index)[0]
    mac = container_mac(all_ips)
    if link.get("address") != mac:
        problems.append(f"container {ifname} has MAC {link.get('address')}, not {mac}")
    addrs = {(a.get("address"), a["prefixlen"]) for a in cipr.get_addr(index=index)}
    for ip in all_ips:
        if (str(ip), ip.max_prefixlen) not in addrs:
            problems.append(f"container {ifname} lacks {ip}/{ip.max_prefixlen}")
    gateways = {
        str(r.get("gateway"))
        for family in (2, 10)
        for r in cipr.get_routes(family=family, oif=index)
        if r["dst_len"] == 0 and r.get("gateway")
    }
    if any(ip.version == 4 for ip in all_ips) and str(HOST_GATEWAY_V4) not in gateways:
        problems.append(f"container default route via {HOST_GATEWAY_V4} dev {ifname} is missing")
    if any(ip.version == 6 for ip in all_ips) and str(HOST_GATEWAY_V6) not in gateways:
        problems.append(f"container default route via {HOST_GATEWAY_V6} dev {ifname} is missing")
    return problems
