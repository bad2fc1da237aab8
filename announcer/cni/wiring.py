"""The routed container wiring: one veth pair per container, host routes to its IPs.

Per container (one "attachment", identified by container id + interface name)::

    container netns                         host netns
    eth0  10.1.0.5/32  ═════ veth ═════  vethr1a2b3c4d5e  169.254.1.1/32 scope link
          mac 02:42:0a:01:00:05                           fe80::1/64 (IPv6 gateway)
          169.254.1.1 dev eth0 scope link                 proxy_arp=1, forwarding=1
          default via 169.254.1.1                         10.1.0.5/32 dev vethr… proto 180
          default via fe80::1 dev eth0 (v6)                     (in the configured table)

The host route of every container IP (primary and extra/anycast) carries a route protocol
number of its own, so the announcer's netlink source selects exactly these routes
(``kernel.protocols``). A primary IP already routed in that table is refused, never
overwritten; an extra IP may be shared by several containers (shared_routes.py).

The process running this module is "the host": it works in its own network namespace and
reaches into the container's namespace by path or name.

The package, by concept: scheme (config, names, errors: pure values), namespaces (netlink
and sysctl handles), rtnl (routes and nexthop objects over rtnetlink), host_routes (how an
IP is routed), shared_routes (anycast IPs of several containers), attachments (veth
aliases, GC), check (CHECK), this module (ADD/DEL), netconf + plugin (CNI),
libnetwork + docker_* (Docker).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from announcer.cni import shared_routes
from announcer.cni.attachments import delete_attachment, render_alias
from announcer.cni.check import check_container
from announcer.cni.host_routes import add_primary_route, refuse_taken
from announcer.cni.namespaces import container_ipr, link_index, open_netns, write_sysctl
from announcer.cni.rtnl import RT_SCOPE_LINK, Rtnl
from announcer.cni.scheme import (
    HOST_GATEWAY_V4,
    HOST_GATEWAY_V6,
    IFNAME_RE,
    AddressInUse,
    ContainerWiring,
    IPAddress,
    NetnsNotFound,
    WiringConfig,
    WiringError,
    container_mac,
    host_ifname,
    host_sysctls,
    parse_ip,
    validate_ips,
)

# The Python API (the lab and docs/routed.md import it from here).
__all__ = [
    "AddressInUse",
    "ContainerWiring",
    "NetnsNotFound",
    "WiringConfig",
    "WiringError",
    "add_container",
    "check_container",
    "del_container",
    "make_host_side",
    "share_extra_ips",
]

_IFA_F_NODAD = 0x02
_IFF_LOWER_UP = 0x10000


def _wire_host_end(
    ipr: IPRoute, wiring: ContainerWiring, index: int, cfg: WiringConfig, *, share: bool = True
) -> None:
    """Sysctls, gateway addresses, up; a route per primary IP; into the shared extra routes."""
    host = wiring.host_ifname
    v6 = any(ip.version == 6 for ip in wiring.all_ips)
    for path, value in host_sysctls(host, v6).items():
        write_sysctl(path, value)
    ipr.addr("add", index=index, address=str(HOST_GATEWAY_V4), prefixlen=32, scope=RT_SCOPE_LINK)
    if v6:
        ipr.addr("add", index=index, address=str(HOST_GATEWAY_V6), prefixlen=64, flags=_IFA_F_NODAD)
    ipr.link("set", index=index, state="up")
    with Rtnl() as rtnl:
        for ip in wiring.ips:
            add_primary_route(rtnl, ip, host, index, cfg)
    if share:
        shared_routes.join(wiring.extra_ips, index, host, cfg)


def _refuse_taken(
    ipr: IPRoute,
    host: str,
    primary: Sequence[IPAddress],
    extra: Sequence[IPAddress],
    cfg: WiringConfig,
) -> None:
    """WiringError if host exists already; AddressInUse if a primary IP is routed in
    cfg.table, or an extra one other than as a shared route of ours."""
    if link_index(ipr, host) is not None:
        raise WiringError(
            f"host interface {host} already exists: this container is already wired (DEL it first)"
        )
    with Rtnl() as rtnl:
        refuse_taken(rtnl, primary, extra, cfg)


def make_host_side(
    host: str,
    peer: str,
    ips: Sequence[str | IPAddress],
    extra_ips: Sequence[str | IPAddress] = (),
    *,
    config: WiringConfig = WiringConfig(),
    alias: str = "",
) -> ContainerWiring:
    """The host half only, for runtimes that move the container end themselves (Docker).

    Makes the veth pair in this namespace: host end wired as add_container does (address,
    sysctls, host routes for ips), peer with the deterministic MAC and the MTU, left down
    for the runtime to move into the container and rename; the container's addresses and
    routes are the runtime's. The returned wiring has netns "" and ifname peer. Nothing is
    left behind on error. extra_ips are checked (AddressInUse unless free or shared) but
    not routed yet: a nexthop needs the veth's carrier, so call share_extra_ips once the
    runtime has brought the container end up.
    """
    primary, extra = validate_ips(ips, extra_ips)
    all_ips = primary + extra
    mac = container_mac(all_ips)
    with IPRoute() as ipr:
        _refuse_taken(ipr, host, primary, extra, config)
        try:
            ipr.link("add", ifname=host, kind="veth", mtu=config.mtu,
                     peer={"ifname": peer, "address": mac, "mtu": config.mtu})  # fmt: skip
        except NetlinkError as e:
            raise WiringError(f"creating veth {host} / {peer}: {e}") from e
        try:
            index = link_index(ipr, host)
            assert index is not None
            host_mac = str(ipr.get_links(index)[0].get("address"))
            ipr.link("set", index=index, ifalias=alias)
            made = ContainerWiring("", peer, host, mac, host_mac, primary, extra)
            _wire_host_end(ipr, made, index, config, share=False)
        except BaseException as e:
            delete_attachment(ipr, host, config)
            if isinstance(e, NetlinkError | OSError):
                raise WiringError(f"wiring host side {host} / {peer}: {e}") from e
            raise
    return made


def has_carrier(host: str) -> bool:
    """Whether the host veth is up with carrier (its peer is up too)."""
    with IPRoute() as ipr:
        index = link_index(ipr, host)
        return index is not None and bool(ipr.get_links(index)[0]["flags"] & _IFF_LOWER_UP)


def share_extra_ips(
    host: str, extra_ips: Sequence[str | IPAddress], config: WiringConfig = WiringConfig()
) -> None:
    """Route extra_ips through host too (make_host_side's second half); WiringError if the
    veth is missing or without carrier, AddressInUse if an IP is routed unshareably."""
    extra = [ip if not isinstance(ip, str) else parse_ip(ip) for ip in extra_ips]
    with IPRoute() as ipr:
        index = link_index(ipr, host)
    if index is None:
        raise WiringError(f"host interface {host} is missing")
    if not has_carrier(host):
        raise WiringError(f"host interface {host} has no carrier (is the container end up?)")
    shared_routes.join(extra, index, host, config)


def _wire_container_end(wiring: ContainerWiring) -> None:
    with container_ipr(wiring.netns) as cipr:
        index = link_index(cipr, wiring.ifname)
        if index is None:
            raise WiringError(f"{wiring.ifname} did not appear in netns {wiring.netns!r}")
        for ip in wiring.all_ips:
            cipr.addr(
                "add",
                index=index,
                address=str(ip),
                prefixlen=ip.max_prefixlen,
                flags=_IFA_F_NODAD if ip.version == 6 else 0,
            )
        cipr.link("set", index=index, state="up")
        if any(ip.version == 4 for ip in wiring.all_ips):
            cipr.route("add", dst=f"{HOST_GATEWAY_V4}/32", oif=index, scope=RT_SCOPE_LINK)
            cipr.route("add", dst="0.0.0.0/0", gateway=str(HOST_GATEWAY_V4), oif=index)
        if any(ip.version == 6 for ip in wiring.all_ips):
            cipr.route("add", dst="::/0", gateway=str(HOST_GATEWAY_V6), oif=index, family=10)


def add_container(
    netns: str,
    ips: Sequence[str | IPAddress],
    extra_ips: Sequence[str | IPAddress] = (),
    *,
    ifname: str = "eth0",
    container_id: str | None = None,
    config: WiringConfig = WiringConfig(),
    network: str = "",
) -> ContainerWiring:
    """Wire a container the routed way; on any error nothing of it is left behind.

    netns is a name under /run/netns or a path (/proc/PID/ns/net, /run/netns/NAME).
    container_id names the attachment (defaults to netns) and, with ifname, the host veth.
    network (the CNI network name) is recorded in the host veth's alias for GC.
    An extra IP already routed as a shared route of ours is shared: its route gets this
    veth as one more nexthop. Raises AddressInUse if a primary IP is already routed in
    config.table or an extra one is routed any other way, WiringError otherwise.
    """
    if not IFNAME_RE.match(ifname):
        raise WiringError(f"ifname {ifname!r} is not a valid interface name")
    primary, extra = validate_ips(ips, extra_ips)
    all_ips = primary + extra
    host = host_ifname(container_id or netns, ifname, config.host_veth_prefix)
    with IPRoute() as ipr:
        _refuse_taken(ipr, host, primary, extra, config)
        mac = container_mac(all_ips)
        nsfd = open_netns(netns)
        try:
            ipr.link(
                "add",
                ifname=host,
                kind="veth",
                mtu=config.mtu,
                peer={"ifname": ifname, "net_ns_fd": nsfd, "address": mac, "mtu": config.mtu},
            )
        except NetlinkError as e:
            hint = f" ({ifname} exists there?)" if e.code == errno.EEXIST else ""
            raise WiringError(f"creating veth {host} / {ifname} in {netns!r}{hint}: {e}") from e
        finally:
            os.close(nsfd)
        try:
            index = link_index(ipr, host)
            assert index is not None
            host_mac = str(ipr.get_links(index)[0].get("address"))
            ipr.link(
                "set", index=index, ifalias=render_alias(network, container_id or netns, ifname)
            )
            wiring = ContainerWiring(netns, ifname, host, mac, host_mac, primary, extra)
            _wire_container_end(wiring)
            _wire_host_end(ipr, wiring, index, config)
        except BaseException as e:
            delete_attachment(ipr, host, config)  # out of shared routes; peer and routes go
            if isinstance(e, NetlinkError | OSError):
                raise WiringError(f"wiring {host} / {ifname} in {netns!r}: {e}") from e
            raise
    return wiring


def del_container(
    netns: str | None,
    ifname: str = "eth0",
    container_id: str | None = None,
    config: WiringConfig = WiringConfig(),
) -> bool:
    """Remove a container's wiring; True if there was something to remove.

    Idempotent: succeeds when the veth, its routes or the netns itself are already gone.
    The veth leaves every shared (anycast) route first (the last one out deletes it), then
    deleting the host end deletes the pair and every primary route through it.
    """
    attachment = container_id or netns
    if attachment is None:
        raise WiringError("del_container needs a container_id or a netns")
    host = host_ifname(attachment, ifname, config.host_veth_prefix)
    with IPRoute() as ipr:
        return delete_attachment(ipr, host, config)
