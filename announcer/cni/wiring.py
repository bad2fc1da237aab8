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
(``kernel.protocols``). An IP already routed in that table is refused, never overwritten.

The process running this module is "the host": it works in its own network namespace and
reaches into the container's namespace by path or name.

The package, by concept: scheme (config, names, errors: pure values), namespaces (netlink
and sysctl handles), host_routes (who routes an IP), attachments (veth aliases, GC),
check (CHECK), this module (ADD/DEL), netconf + plugin (CNI), libnetwork + docker_* (Docker).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from announcer.cni.attachments import delete_link, render_alias
from announcer.cni.check import check_container
from announcer.cni.host_routes import RT_SCOPE_LINK, add_host_route, ensure_free
from announcer.cni.namespaces import container_ipr, link_index, open_netns, write_sysctl
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
]

_IFA_F_NODAD = 0x02


def _wire_host_end(
    ipr: IPRoute, host: str, all_ips: Sequence[IPAddress], index: int, cfg: WiringConfig
) -> None:
    v6 = any(ip.version == 6 for ip in all_ips)
    for path, value in host_sysctls(host, v6).items():
        write_sysctl(path, value)
    ipr.addr("add", index=index, address=str(HOST_GATEWAY_V4), prefixlen=32, scope=RT_SCOPE_LINK)
    if v6:
        ipr.addr("add", index=index, address=str(HOST_GATEWAY_V6), prefixlen=64, flags=_IFA_F_NODAD)
    ipr.link("set", index=index, state="up")
    for ip in all_ips:
        add_host_route(ipr, ip, host, index, cfg)


def _refuse_taken(ipr: IPRoute, host: str, all_ips: Sequence[IPAddress], cfg: WiringConfig) -> None:
    """WiringError if host exists already, AddressInUse if an IP is routed in cfg.table."""
    if link_index(ipr, host) is not None:
        raise WiringError(
            f"host interface {host} already exists: this container is already wired (DEL it first)"
        )
    ensure_free(ipr, all_ips, cfg)


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
    sysctls, host routes for ips and extra_ips), peer with the deterministic MAC and the
    MTU, left down for the runtime to move into the container and rename; the container's
    addresses and routes are the runtime's. The returned wiring has netns "" and ifname peer.
    Nothing is left behind on error.
    """
    primary, extra = validate_ips(ips, extra_ips)
    all_ips = primary + extra
    mac = container_mac(all_ips)
    with IPRoute() as ipr:
        _refuse_taken(ipr, host, all_ips, config)
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
            _wire_host_end(ipr, host, all_ips, index, config)
        except BaseException as e:
            delete_link(ipr, host)
            if isinstance(e, NetlinkError | OSError):
                raise WiringError(f"wiring host side {host} / {peer}: {e}") from e
            raise
    return ContainerWiring("", peer, host, mac, host_mac, primary, extra)


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
    Raises AddressInUse if an IP is already routed in config.table, WiringError otherwise.
    """
    if not IFNAME_RE.match(ifname):
        raise WiringError(f"ifname {ifname!r} is not a valid interface name")
    primary, extra = validate_ips(ips, extra_ips)
    all_ips = primary + extra
    host = host_ifname(container_id or netns, ifname, config.host_veth_prefix)
    with IPRoute() as ipr:
        _refuse_taken(ipr, host, all_ips, config)
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
            _wire_host_end(ipr, host, all_ips, index, config)
        except BaseException as e:
            delete_link(ipr, host)  # takes the peer and every host route with it
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
    Deleting the host end deletes the pair and every route through it.
    """
    attachment = container_id or netns
    if attachment is None:
        raise WiringError("del_container needs a container_id or a netns")
    host = host_ifname(attachment, ifname, config.host_veth_prefix)
    with IPRoute() as ipr:
        return delete_link(ipr, host)
