"""Frozen value types shared by the core and the edges.

Everything that can end up in an ExaBGP command is one of these typed values: prefixes
(:class:`Prefix`), addresses from :mod:`ipaddress`, bounded integers, and fixed keywords.
Constructors validate ranges, so an out-of-range value cannot exist.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Literal

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
    UNHEALTHY_DEPREFERRED = "unhealthy_depreferred"  # anycast.unhealthy=deprefer: last resort
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


_V6 = 1 << 136  # the family bit of a Prefix's value, above 128 address bits and 8 length bits


class Prefix(int):
    """An IPv4 or IPv6 prefix in one int: ``[v6 bit] address << 8 | length``.

    A route table of 100k entries holds 100k of these, so a prefix is one small int (32 B
    for IPv4) instead of an ``IPv4Network`` with its address objects (~250 B). Equal
    prefixes are equal ints (hash, dict keys); the int order is IPv4 first, then address,
    then length. ``str()`` is the usual ``10.0.0.1/32``. Host bits are always zero.
    """

    __slots__ = ()

    def __new__(cls, value: str | IPv4Network | IPv6Network | int) -> Prefix:
        """From text (strict: no host bits), an ``ipaddress`` network, or another Prefix."""
        if isinstance(value, Prefix):
            return value
        if isinstance(value, int):
            raise TypeError("use Prefix.make(version, address, length) for integers")
        network = ip_network(value, strict=True) if isinstance(value, str) else value
        return cls.make(network.version, int(network.network_address), network.prefixlen)

    @classmethod
    def make(cls, version: int, address: int, length: int) -> Prefix:
        """From parts (the netlink decoder's path); host bits are cleared."""
        bits = 32 if version == 4 else 128
        if version not in (4, 6) or not 0 <= length <= bits or not 0 <= address < 1 << bits:
            raise ValueError(f"no IPv{version} prefix has address {address} and length {length}")
        address &= ~((1 << (bits - length)) - 1)
        return int.__new__(cls, (_V6 if version == 6 else 0) | address << 8 | length)

    @classmethod
    def host(cls, address: IPAddress) -> Prefix:
        """The /32 or /128 of one address."""
        return cls.make(address.version, int(address), address.max_prefixlen)

    @property
    def version(self) -> int:
        return 6 if self & _V6 else 4

    @property
    def prefixlen(self) -> int:
        return self & 0xFF

    @property
    def max_prefixlen(self) -> int:
        return 128 if self & _V6 else 32

    @property
    def first(self) -> int:
        """The first address, as an int."""
        return (self & (_V6 - 1)) >> 8

    @property
    def last(self) -> int:
        """The last address, as an int."""
        return self.first | ((1 << (self.max_prefixlen - self.prefixlen)) - 1)

    @property
    def network_address(self) -> IPAddress:
        return IPv6Address(self.first) if self & _V6 else IPv4Address(self.first)

    def network(self) -> IPv4Network | IPv6Network:
        """The ``ipaddress`` object (for interop; never stored)."""
        if self & _V6:
            return IPv6Network((self.first, self.prefixlen))
        return IPv4Network((self.first, self.prefixlen))

    def __str__(self) -> str:
        if self & _V6:
            return f"{IPv6Address(self.first)}/{self & 0xFF}"
        a = self.first
        return f"{a >> 24}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}/{self & 0xFF}"

    def __repr__(self) -> str:
        return f"Prefix({str(self)!r})"

    def __format__(self, spec: str) -> str:
        if spec and spec[-1] in "bdnoxX":  # a number was asked for
            return int.__format__(self, spec)
        return format(str(self), spec)

    def __bool__(self) -> bool:
        return True  # 0.0.0.0/0 is the int 0, but a prefix is never "nothing"


def host_prefix(address: IPAddress) -> Prefix:
    """The /32 or /128 network of one address."""
    return Prefix.host(address)


def is_host_prefix(prefix: Prefix) -> bool:
    return prefix.prefixlen == prefix.max_prefixlen


def prefix_order(prefix: Prefix) -> int:
    """Sort key: IPv4 before IPv6, then by address, then by length (a Prefix's own order)."""
    return int(prefix)


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
class LinkBandwidth:
    """The BGP link-bandwidth extended community: a 2-byte ASN and bytes per second as an
    IEEE float. FRR installs weighted multipath routes from it (docs/weighted.md).

    ``transitive`` sends type 0x00 (FRR passes it on over eBGP, so a leaf with one path
    still tells its spines); otherwise 0x40, the non-transitive form ExaBGP's
    ``bandwidth:`` keyword sends. FRR 8.4 keeps the value in 32 bits: at most 4294967295.
    """

    asn: int
    bytes_per_second: int
    transitive: bool = True

    def __post_init__(self) -> None:
        _check_range("link-bandwidth ASN", self.asn, UINT16_MAX)
        _check_range("link-bandwidth bytes per second", self.bytes_per_second, UINT32_MAX)

    def hex(self) -> str:
        """The community as ExaBGP reads a raw one: ``0x`` and 16 hex digits."""
        value = struct.unpack(">I", struct.pack(">f", float(self.bytes_per_second)))[0]
        kind = 0x00 if self.transitive else 0x40
        return f"0x{kind:02x}04{self.asn:04x}{value:08x}"


@dataclass(frozen=True, slots=True)
class Attributes:
    """BGP path attributes an announcement carries besides its next hop."""

    med: int | None = None
    local_preference: int | None = None
    communities: tuple[Community, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()
    as_path: tuple[int, ...] = ()  # sent verbatim by ExaBGP: starts with our own AS
    link_bandwidth: LinkBandwidth | None = None  # weighted anycast (docs/weighted.md)

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
class Advert:
    """How a prefix is (to be) announced: its next hop, attributes and neighbors.

    ``neighbors`` empty means every neighbor whose ExaBGP ``api`` block lists this process.
    Prefixes announced the same way share one Advert (the announced table of 100k prefixes
    holds a handful), so it does not name its prefix; :func:`check_family` says whether an
    explicit next hop suits a prefix.
    """

    next_hop: NextHop = "self"
    attributes: Attributes = NO_ATTRIBUTES
    neighbors: frozenset[IPAddress] = field(default_factory=frozenset)


DEFAULT_ADVERT = Advert()


def check_family(prefix: Prefix, advert: Advert) -> None:
    """ValueError if the advert's explicit next hop is of the other family than prefix."""
    if advert.next_hop != "self" and advert.next_hop.version != prefix.version:
        raise ValueError(f"next-hop {advert.next_hop} is not of the family of {prefix}")
