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
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from announcer.cni import attachments
from announcer.cni.attachments import delete_link, render_alias

# Moved to attachments.py; still importable from here (the CNI plugin and its tests do).
ALIAS_TAG = attachments.ALIAS_TAG
parse_alias = attachments.parse_alias
list_attachments = attachments.list_attachments
collect_garbage = attachments.collect_garbage

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HOST_GATEWAY_V4 = ipaddress.IPv4Address("169.254.1.1")
HOST_GATEWAY_V6 = ipaddress.IPv6Address("fe80::1")
DEFAULT_ROUTE_PROTOCOL = 180
MAIN_TABLE = 254
IFNAMSIZ = 15  # usable characters of a Linux interface name
MIN_ID_CHARS = 4  # the hashed part of a host veth name is never shorter than this
_RT_SCOPE_LINK = 253
_IFA_F_NODAD = 0x02
_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_RESERVED_TABLES = {0, 253, 255}  # unspec, default, local


class WiringError(Exception):
    """The wiring could not be made, checked or removed; the message says why."""


class AddressInUse(WiringError):
    """An IP asked for is already routed on this host (refused, never overwritten)."""

    def __init__(self, ip: IPAddress, device: str, table: int) -> None:
        super().__init__(
            f"address {ip} is already routed on this host via {device} (table {table}); "
            "refusing to overwrite it"
        )
        self.ip = ip
        self.device = device


class NetnsNotFound(WiringError):
    """The container's network namespace does not exist (any more)."""


@dataclass(frozen=True)
class WiringConfig:
    """How containers are wired; validated on construction."""

    host_veth_prefix: str = "vethr"
    mtu: int = 1500
    table: int = MAIN_TABLE
    route_protocol: int = DEFAULT_ROUTE_PROTOCOL

    def __post_init__(self) -> None:
        prefix = self.host_veth_prefix
        if not _PREFIX_RE.match(prefix) or len(prefix) > IFNAMSIZ - MIN_ID_CHARS:
            raise ValueError(
                f"hostVethPrefix {prefix!r}: must start with a letter, contain only letters, "
                f"digits, '_' or '-', and be at most {IFNAMSIZ - MIN_ID_CHARS} characters"
            )
        if not 68 <= self.mtu <= 65535:
            raise ValueError(f"mtu {self.mtu!r}: must be an integer from 68 to 65535")
        if not 1 <= self.table <= 0xFFFFFFFF or self.table in _RESERVED_TABLES:
            raise ValueError(
                f"table {self.table!r}: must be a routing table id from 1 to 4294967295, "
                "not 253 (default) or 255 (local)"
            )
        if not 5 <= self.route_protocol <= 255:
            raise ValueError(
                f"routeProtocol {self.route_protocol!r}: must be from 5 to 255 "
                "(0-4 are the kernel's own: unspec, redirect, kernel, boot, static)"
            )


@dataclass(frozen=True)
class ContainerWiring:
    """What add_container made (and what check_container expects)."""

    netns: str
    ifname: str
    host_ifname: str
    mac: str
    host_mac: str
    ips: tuple[IPAddress, ...]
    extra_ips: tuple[IPAddress, ...] = field(default=())

    @property
    def all_ips(self) -> tuple[IPAddress, ...]:
        return self.ips + self.extra_ips


def parse_ip(text: str) -> IPAddress:
    """A container IP: a bare address or a host prefix (/32, /128); anything wider is an error."""
    try:
        iface = ipaddress.ip_interface(text.strip())
    except ValueError:
        raise WiringError(f"{text!r} is not an IP address") from None
    # An IPAM prefix length (10.1.0.5/24) is dropped on purpose: every container IP is a
    # host route, there is no shared subnet on the link.
    return iface.ip


def host_ifname(attachment_id: str, ifname: str, prefix: str = "vethr") -> str:
    """The host end's name: prefix + a hash of (container id, ifname), at most 15 characters.

    Hashed rather than truncated so that ids sharing a long common start (``mesos-...``)
    don't collide, and so that DEL finds the veth from the same two strings without state.
    """
    digest = hashlib.sha256(f"{attachment_id}\0{ifname}".encode()).hexdigest()
    return prefix + digest[: IFNAMSIZ - len(prefix)]


def container_mac(ips: Sequence[IPAddress]) -> str:
    """02:42 + the four bytes of the first IPv4 address (as Docker does).

    IPv6-only containers get 02:42 + the low four bytes of their first IPv6 address. The MAC
    only has to be unique on the veth's point-to-point link; deterministic keeps neighbour
    caches right when a container is recreated with the same IP.
    """
    v4 = [ip for ip in ips if ip.version == 4]
    chosen = v4[0] if v4 else ips[0]
    low = chosen.packed[-4:]
    return "02:42:" + ":".join(f"{b:02x}" for b in low)


def validate_ips(
    ips: Sequence[str | IPAddress], extra_ips: Sequence[str | IPAddress]
) -> tuple[tuple[IPAddress, ...], tuple[IPAddress, ...]]:
    primary = tuple(ip if not isinstance(ip, str) else parse_ip(ip) for ip in ips)
    extra = tuple(ip if not isinstance(ip, str) else parse_ip(ip) for ip in extra_ips)
    if not primary:
        raise WiringError("a container needs at least one IP")
    seen: set[IPAddress] = set()
    for ip in primary + extra:
        if ip in seen:
            raise WiringError(f"address {ip} is listed twice for this container")
        seen.add(ip)
    return primary, extra


def _netns_path(netns: str) -> str:
    return netns if "/" in netns else f"/run/netns/{netns}"


@contextmanager
def _container_ipr(netns: str) -> Iterator[IPRoute]:
    path = _netns_path(netns)
    if not Path(path).exists():
        raise NetnsNotFound(f"network namespace {netns!r} does not exist")
    with IPRoute(netns=path, flags=0) as ipr:
        yield ipr


def _link_index(ipr: IPRoute, ifname: str) -> int | None:
    found: list[int] = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _write_sysctl(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def _read_sysctl(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None


def _host_sysctls(dev: str, v6: bool) -> dict[str, str]:
    wanted = {
        f"/proc/sys/net/ipv4/conf/{dev}/proxy_arp": "1",
        f"/proc/sys/net/ipv4/conf/{dev}/forwarding": "1",
    }
    if v6:
        wanted[f"/proc/sys/net/ipv6/conf/{dev}/forwarding"] = "1"
    return wanted


def _route_owner(ipr: IPRoute, ip: IPAddress, table: int) -> str | None:
    """The device of an existing host route to exactly ip/32 (/128) in table, if any."""
    family = 2 if ip.version == 4 else 10
    for route in ipr.get_routes(family=family, table=table):
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


def _add_host_route(ipr: IPRoute, ip: IPAddress, dev: str, index: int, cfg: WiringConfig) -> None:
    try:
        ipr.route(
            "add",
            dst=f"{ip}/{ip.max_prefixlen}",
            oif=index,
            table=cfg.table,
            proto=cfg.route_protocol,
            scope=_RT_SCOPE_LINK,
        )
    except NetlinkError as e:
        if e.code == errno.EEXIST:  # lost a race with another ADD of the same IP
            raise AddressInUse(ip, _route_owner(ipr, ip, cfg.table) or "?", cfg.table) from e
        raise WiringError(f"adding host route {ip} dev {dev}: {e}") from e


def _wire_host_end(
    ipr: IPRoute, host: str, all_ips: Sequence[IPAddress], index: int, cfg: WiringConfig
) -> None:
    v6 = any(ip.version == 6 for ip in all_ips)
    for path, value in _host_sysctls(host, v6).items():
        _write_sysctl(path, value)
    ipr.addr("add", index=index, address=str(HOST_GATEWAY_V4), prefixlen=32, scope=_RT_SCOPE_LINK)
    if v6:
        ipr.addr("add", index=index, address=str(HOST_GATEWAY_V6), prefixlen=64, flags=_IFA_F_NODAD)
    ipr.link("set", index=index, state="up")
    for ip in all_ips:
        _add_host_route(ipr, ip, host, index, cfg)


def _refuse_taken(ipr: IPRoute, host: str, all_ips: Sequence[IPAddress], cfg: WiringConfig) -> None:
    """WiringError if host exists already, AddressInUse if an IP is routed in cfg.table."""
    if _link_index(ipr, host) is not None:
        raise WiringError(
            f"host interface {host} already exists: this container is already wired (DEL it first)"
        )
    _ensure_free(ipr, all_ips, cfg)


def _ensure_free(ipr: IPRoute, ips: Sequence[IPAddress], cfg: WiringConfig) -> None:
    for ip in ips:
        owner = _route_owner(ipr, ip, cfg.table)
        if owner is not None:
            raise AddressInUse(ip, owner, cfg.table)


def ensure_addresses_free(ips: Sequence[IPAddress], config: WiringConfig = WiringConfig()) -> None:
    """AddressInUse if any of ips is already routed (as a host route) in config.table."""
    with IPRoute() as ipr:
        _ensure_free(ipr, ips, config)


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
            index = _link_index(ipr, host)
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
    with _container_ipr(wiring.netns) as cipr:
        index = _link_index(cipr, wiring.ifname)
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
            cipr.route("add", dst=f"{HOST_GATEWAY_V4}/32", oif=index, scope=_RT_SCOPE_LINK)
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
    if not _IFNAME_RE.match(ifname):
        raise WiringError(f"ifname {ifname!r} is not a valid interface name")
    primary, extra = validate_ips(ips, extra_ips)
    all_ips = primary + extra
    host = host_ifname(container_id or netns, ifname, config.host_veth_prefix)
    with IPRoute() as ipr:
        _refuse_taken(ipr, host, all_ips, config)
        mac = container_mac(all_ips)
        nsfd = _open_netns(netns)
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
            index = _link_index(ipr, host)
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


def _open_netns(netns: str) -> int:
    try:
        return os.open(_netns_path(netns), os.O_RDONLY)
    except FileNotFoundError:
        raise NetnsNotFound(f"network namespace {netns!r} does not exist") from None


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
        index = _link_index(ipr, host)
        if index is None:
            return [f"host interface {host} is missing"]
        problems += _check_host(ipr, host, index, all_ips, config)
    try:
        with _container_ipr(netns) as cipr:
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
    for path, value in _host_sysctls(host, v6).items():
        if _read_sysctl(path) != value:
            problems.append(f"{path} is {_read_sysctl(path)}, not {value}")
    for ip in all_ips:
        if not _has_host_route(ipr, ip, index, cfg):
            problems.append(
                f"host route {ip}/{ip.max_prefixlen} dev {host} proto {cfg.route_protocol} "
                f"table {cfg.table} is missing"
            )
    return problems


def _has_host_route(ipr: IPRoute, ip: IPAddress, index: int, cfg: WiringConfig) -> bool:
    family = 2 if ip.version == 4 else 10
    return any(
        r.get("dst") == str(ip)
        and r["dst_len"] == ip.max_prefixlen
        and r.get("oif") == index
        and r["proto"] == cfg.route_protocol
        and r.get("table") == cfg.table
        for r in ipr.get_routes(family=family, table=cfg.table)
    )


def _check_container_end(cipr: IPRoute, ifname: str, all_ips: Sequence[IPAddress]) -> list[str]:
    index = _link_index(cipr, ifname)
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
