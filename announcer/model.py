"""Frozen value types shared by the core and the edges.

Everything that can end up in an ExaBGP command is one of these typed values: IP
networks and addresses from :mod:`ipaddress`, bounded integers, and fixed keywords.
Constructors validate ranges, so an out-of-range value cannot exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Literal

Prefix = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address
NextHop = Literal["self"] | IPv4Address | IPv6Address

UINT16_MAX = 0xFFFF
UINT32_MAX = 0xFFFFFFFF


class Reason(StrEnum):
    """Why a prefix is, or is not, announced: one stable word per rule.

    Logs, ``announcer plan``, ``announcer status`` and the metrics print these words, so
    the values never change; docs/design.md's decision table lists every one (a test
    checks it).
    """

    # announced
    HOST_ROUTE = "host_route"  # a kernel host route on a selected device
    LOCAL_ADDRESS = "local_address"  # a /32 or /128 address on an address_interfaces device
    DRAINING = "draining"  # a graceful drain: announced with GRACEFUL_SHUTDOWN, then withdrawn
    # withheld by the kernel rules, in the order they are checked
    NOT_HOST_PREFIX = "not_host_prefix"
    MARTIAN = "martian"
    TABLE_NOT_SELECTED = "table_not_selected"
    PROTOCOL_NOT_SELECTED = "protocol_not_selected"
    MULTIPATH_ROUTE = "multipath_route"
    NO_INTERFACE = "no_interface"
    INTERFACE_NOT_SELECTED = "interface_not_selected"
    ROUTE_HAS_GATEWAY = "route_has_gateway"
    LINK_DOWN = "link_down"
    PREFIX_NOT_ALLOWED = "prefix_not_allowed"
    MAX_ROUTES_EXCEEDED = "max_routes_exceeded"
    # withheld by the instances that claim the prefix
    INSTANCE_STOPPING = "instance_stopping"
    INSTANCE_UNHEALTHY = "instance_unhealthy"
    CHECK_FAILING = "check_failing"
    CHECK_PENDING = "check_pending"
    LABEL_INVALID = "label_invalid"
    INSTANCE_STARTING = "instance_starting"
    INSTANCE_STOPPED = "instance_stopped"
    NO_INSTANCE = "no_instance"  # lifecycle.require_instance and nobody claims it
    NO_KERNEL_ROUTE = "no_kernel_route"  # claimed, but no route or address in the kernel
    # withheld by an operator or a safety net
    DRAINED = "drained"
    DAMPED = "damped"
    WITHDRAW_HELD = "withdraw_held"  # a mass withdraw held while a lifecycle source is lost
    # in logs only: a command for a prefix the world no longer mentions
    NOT_OBSERVED = "not_observed"


def quote(value: str, limit: int = 60) -> str:
    """A value safe to put in a log line or an error: escaped (no newline, no control or
    non-ASCII character survives) and shortened."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return ascii(shown)


def host_prefix(address: IPAddress) -> Prefix:
    """The /32 or /128 network of one address."""
    if isinstance(address, IPv4Address):
        return IPv4Network((address, 32))
    return IPv6Network((address, 128))


def is_host_prefix(prefix: Prefix) -> bool:
    return prefix.prefixlen == prefix.max_prefixlen


def prefix_order(prefix: Prefix) -> tuple[int, int, int]:
    """Sort key: IPv4 before IPv6, then by address, then by length."""
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


def _check_range(name: str, value: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ValueError(f"{name} must be an integer in 0..{high}, got {value!r}")


@dataclass(frozen=True, slots=True, order=True)
class Community:
    """A standard community ASN:VALUE (RFC 1997), always rendered numerically."""

    asn: int
    value: int

    def __post_init__(self) -> None:
        _check_range("community ASN", self.asn, UINT16_MAX)
        _check_range("community value", self.value, UINT16_MAX)

    def __str__(self) -> str:
        return f"{self.asn}:{self.value}"


GRACEFUL_SHUTDOWN = Community(65535, 0)  # RFC 8326


@dataclass(frozen=True, slots=True, order=True)
class LargeCommunity:
    """A large community GLOBAL:LOCAL1:LOCAL2 (RFC 8092)."""

    global_admin: int
    local1: int
    local2: int

    def __post_init__(self) -> None:
        _check_range("large community global administrator", self.global_admin, UINT32_MAX)
        _check_range("large community local data 1", self.local1, UINT32_MAX)
        _check_range("large community local data 2", self.local2, UINT32_MAX)

    def __str__(self) -> str:
        return f"{self.global_admin}:{self.local1}:{self.local2}"


@dataclass(frozen=True, slots=True)
class Attributes:
    """BGP path attributes an announcement carries besides its next hop."""

    med: int | None = None
    local_preference: int | None = None
    communities: tuple[Community, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()
    as_path: tuple[int, ...] = ()  # sent verbatim by ExaBGP: starts with our own AS

    def __post_init__(self) -> None:
        if len(self.as_path) > 32:
            raise ValueError(f"as-path of {len(self.as_path)} ASNs is too long (at most 32)")
        for asn in self.as_path:
            _check_range("as-path ASN", asn, UINT32_MAX)
        if self.med is not None:
            _check_range("MED", self.med, UINT32_MAX)
        if self.local_preference is not None:
            _check_range("local-preference", self.local_preference, UINT32_MAX)
        # Canonical order and no duplicates: equal attribute sets compare equal.
        object.__setattr__(self, "communities", tuple(sorted(set(self.communities))))
        object.__setattr__(self, "large_communities", tuple(sorted(set(self.large_communities))))


NO_ATTRIBUTES = Attributes()


@dataclass(frozen=True, slots=True)
class Announcement:
    """One prefix as it should be (or has been) announced.

    ``neighbors`` empty means every neighbor whose ExaBGP ``api`` block lists this process.
    """

    prefix: Prefix
    next_hop: NextHop = "self"
    attributes: Attributes = NO_ATTRIBUTES
    neighbors: frozenset[IPAddress] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.next_hop != "self" and self.next_hop.version != self.prefix.version:
            raise ValueError(f"next-hop {self.next_hop} is not of the family of {self.prefix}")
