"""The routed scheme's values, pure: its configuration, names, addresses and errors.

Every other module of announcer.cni builds on these; this one imports none of them, so
the package has no import cycle (not even one for type checking).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HOST_GATEWAY_V4 = ipaddress.IPv4Address("169.254.1.1")
HOST_GATEWAY_V6 = ipaddress.IPv6Address("fe80::1")
DEFAULT_ROUTE_PROTOCOL = 180
DEFAULT_PREFIX = "vethr"
MAIN_TABLE = 254
# Serialises changes to shared (anycast) routes among the CNI plugin and the Docker driver.
# Under /run: it guards kernel state, which a reboot clears too.
DEFAULT_LOCK_FILE = "/run/lock/announcer-routed.lock"
IFNAMSIZ = 15  # usable characters of a Linux interface name
MIN_ID_CHARS = 4  # the hashed part of a host veth name is never shorter than this
_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
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

    host_veth_prefix: str = DEFAULT_PREFIX
    mtu: int = 1500
    table: int = MAIN_TABLE
    route_protocol: int = DEFAULT_ROUTE_PROTOCOL
    lock_file: str = DEFAULT_LOCK_FILE

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
        if not self.lock_file.startswith("/") or "\0" in self.lock_file:
            raise ValueError(f"lockFile {self.lock_file!r}: must be an absolute path")


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


def host_ifname(attachment_id: str, ifname: str, prefix: str = DEFAULT_PREFIX) -> str:
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
    """(primary, extra) parsed; WiringError if there is no primary or an IP is listed twice."""
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


def host_sysctls(dev: str, v6: bool) -> dict[str, str]:
    """The per-veth sysctls the host end needs: /proc/sys path -> value."""
    wanted = {
        f"/proc/sys/net/ipv4/conf/{dev}/proxy_arp": "1",
        f"/proc/sys/net/ipv4/conf/{dev}/forwarding": "1",
    }
    if v6:
        wanted[f"/proc/sys/net/ipv6/conf/{dev}/forwarding"] = "1"
    return wanted
