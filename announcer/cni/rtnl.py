"""rtnetlink for host routes and nexthop objects: pure encode/decode, and a small socket.

pyroute2 (0.9) knows neither nexthop objects (RTM_*NEXTHOP, kernel >= 5.3) nor a route's
RTA_NH_ID, and shared anycast routes are made of both (docs/adr/0004). This module speaks
exactly what the wiring needs, straight from linux/rtnetlink.h and linux/nexthop.h: route
dumps in every shape the kernel gives (RTA_OIF; RTA_MULTIPATH, which IPv6 also uses for a
one-member group; RTA_NH_ID), nexthop dumps, link dumps (name, index, carrier), and
route/nexthop add, replace and delete.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from announcer.cni.scheme import IPAddress

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
NETLINK_ROUTE, SOL_NETLINK = 0, 270
NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK = 11, 12
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS, NLMSGERR_ATTR_MSG = 0x100, 0x200, 1
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEXTHOP, RTM_DELNEXTHOP, RTM_GETNEXTHOP = 104, 105, 106
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE, RTA_NH_ID = (
    1, 4, 5, 6, 9, 15, 30
)  # fmt: skip
NHA_ID, NHA_GROUP, NHA_OIF, NHA_GATEWAY = 1, 2, 5, 6
IFLA_IFNAME = 3
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
RTN_UNICAST, RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 1, 0, 253
RT_TABLE_COMPAT = 252  # rtm_table of a table id above 255 (the real one is RTA_TABLE)

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NHMSG = struct.Struct("=BBBBI")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")
_RTNEXTHOP = struct.Struct("=HBBi")
_NH_GRP = struct.Struct("=IBBH")
_U32 = struct.Struct("=I")


class RtnlError(OSError):
    """The kernel refused a request: errno, and its extended-ack message if it gave one."""


@dataclass(frozen=True)
class Route:
    """One route as a dump gives it; its devices come from whichever shape it has."""

    family: int
    dst: IPAddress | None
    dst_len: int
    table: int
    protocol: int
    type: int
    priority: int = 0
    oif: int | None = None
    nhid: int | None = None
    multipath: tuple[int, ...] = ()  # the ifindexes of RTA_MULTIPATH, in the kernel's order
    has_gateway: bool = False

    @property
    def oifs(self) -> tuple[int, ...]:
        return self.multipath or ((self.oif,) if self.oif is not None else ())


@dataclass(frozen=True)
class Nexthop:
    """A nexthop object: one device (oif) or a group of other nexthops' ids."""

    id: int
    family: int
    protocol: int
    oif: int | None = None
    group: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class Link:
    """A network interface: its index, name and flags (IFF_*)."""

    index: int
    name: str
    flags: int

    @property
    def carrier(self) -> bool:
        """Up with carrier: what a device nexthop needs to be made (and to stay)."""
        return self.flags & (IFF_UP | IFF_LOWER_UP) == IFF_UP | IFF_LOWER_UP


# --- pure: encode ---------------------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _RTATTR.pack(_RTATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, _U32.pack(value))


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags | NLM_F_REQUEST, seq, 0) + body


def route_body(
    dst: IPAddress, table: int, protocol: int, *, oif: int | None = None, nhid: int | None = None
) -> bytes:
    """A host route to dst (/32, /128): through oif (scope link), or a nexthop object."""
    family = AF_INET if dst.version == 4 else AF_INET6
    scope = RT_SCOPE_LINK if oif is not None else RT_SCOPE_UNIVERSE
    header = _RTMSG.pack(family, dst.max_prefixlen, 0, 0, table if table < 256 else
                         RT_TABLE_COMPAT, protocol, scope, RTN_UNICAST, 0)  # fmt: skip
    attrs = _attr(RTA_DST, dst.packed) + _u32(RTA_TABLE, table)
    if oif is not None:
        attrs += _u32(RTA_OIF, oif)
    if nhid is not None:
        attrs += _u32(RTA_NH_ID, nhid)
    return header + attrs


def route_dump_body(family: int, table: int | None) -> bytes:
    """A strictly checked dump of one family's routes in one table (None: every table)."""
    if table is None:
        return _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    header = _RTMSG.pack(family, 0, 0, 0, table if table < 256 else RT_TABLE_COMPAT, 0, 0, 0, 0)
    return header + _u32(RTA_TABLE, table)


def nexthop_body(
    nh_id: int,
    family: int,
    protocol: int,
    *,
    oif: int | None = None,
    group: tuple[int, ...] = (),
) -> bytes:
    """A device nexthop (oif) or a group (ids, weight 1 each; a group's family is 0)."""
    header = _NHMSG.pack(0 if group else family, 0, protocol, 0, 0)
    attrs = _u32(NHA_ID, nh_id)
    if oif is not None:
        attrs += _u32(NHA_OIF, oif)
    if group:
        attrs += _attr(NHA_GROUP, b"".join(_NH_GRP.pack(i, 0, 0, 0) for i in group))
    return header + attrs


def nexthop_id_body(nh_id: int) -> bytes:
    return _NHMSG.pack(0, 0, 0, 0, 0) + _u32(NHA_ID, nh_id)


# --- pure: decode ---------------------------------------------------------------------


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        attrs[kind & 0x3FFF] = data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return attrs


def _multipath(raw: bytes) -> tuple[tuple[int, ...], bool]:
    """(ifindexes, any gateway) of an RTA_MULTIPATH: a row of rtnexthop + attributes."""
    oifs, gateway, offset = [], False, 0
    while offset + _RTNEXTHOP.size <= len(raw):
        length, _flags, _hops, ifindex = _RTNEXTHOP.unpack_from(raw, offset)
        if length < _RTNEXTHOP.size:
            break
        oifs.append(ifindex)
        gateway |= RTA_GATEWAY in _attributes(raw, offset + _RTNEXTHOP.size, offset + length)
        offset += (length + 3) & ~3
    return tuple(oifs), gateway


def parse_route(data: bytes, offset: int, end: int) -> Route | None:
    family, dst_len, _src, _tos, table, protocol, _scope, rtype, _fl = _RTMSG.unpack_from(
        data, offset
    )
    if family not in (AF_INET, AF_INET6):
        return None
    attrs = _attributes(data, offset + _RTMSG.size, end)
    dst = ipaddress.ip_address(attrs[RTA_DST]) if RTA_DST in attrs else None
    multipath, mp_gateway = _multipath(attrs.get(RTA_MULTIPATH, b""))

    def u32(kind: int) -> int | None:
        return _U32.unpack(attrs[kind][:4])[0] if kind in attrs else None

    return Route(
        family=family,
        dst=dst,
        dst_len=dst_len,
        table=u32(RTA_TABLE) or table,
        protocol=protocol,
        type=rtype,
        priority=u32(RTA_PRIORITY) or 0,
        oif=u32(RTA_OIF),
        nhid=u32(RTA_NH_ID),
        multipath=multipath,
        has_gateway=RTA_GATEWAY in attrs or mp_gateway,
    )


def parse_nexthop(data: bytes, offset: int, end: int) -> Nexthop | None:
    family, _scope, protocol, _resvd, _flags = _NHMSG.unpack_from(data, offset)
    attrs = _attributes(data, offset + _NHMSG.size, end)
    if NHA_ID not in attrs:
        return None
    raw = attrs.get(NHA_GROUP, b"")
    group = tuple(
        _NH_GRP.unpack_from(raw, i)[0] for i in range(0, len(raw) - _NH_GRP.size + 1, _NH_GRP.size)
    )
    oif = _U32.unpack(attrs[NHA_OIF][:4])[0] if NHA_OIF in attrs else None
    return Nexthop(_U32.unpack(attrs[NHA_ID][:4])[0], family, protocol, oif, group)


def _attribute(data: bytes, offset: int, end: int, wanted: int) -> bytes | None:
    """The first attribute of kind wanted, read no further (a link has dozens)."""
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        if kind & 0x3FFF == wanted:
            return data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return None


def parse_link(data: bytes, offset: int, end: int) -> Link | None:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, offset)
    name = _attribute(data, offset + _IFINFOMSG.size, end, IFLA_IFNAME)  # the first one
    if name is None:
        return None
    return Link(index, name.rstrip(b"\0").decode(errors="replace"), flags)


def _error(data: bytes, body: int, flags: int, end: int) -> RtnlError | None:
    code = -struct.unpack_from("=i", data, body)[0]
    if not code:
        return None
    text = os.strerror(code)
    if flags & NLM_F_ACK_TLVS:  # after the echoed request (only its header if NLM_F_CAPPED)
        echoed = _NLMSGHDR.unpack_from(data, body + 4)[0]
        tlvs = body + 4 + (_NLMSGHDR.size if flags & NLM_F_CAPPED else (echoed + 3) & ~3)
        found = _attributes(data, tlvs, end).get(NLMSGERR_ATTR_MSG)
        if found:
            text += ": " + found.rstrip(b"\0").decode(errors="replace")
    return RtnlError(code, text)


def parse_messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(type, flags, body offset, end) of every message in a datagram."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        yield kind, flags, offset + _NLMSGHDR.size, offset + length
        offset += (length + 3) & ~3


# --- I/O ------------------------------------------------------------------------------


class Rtnl:
    """One rtnetlink socket in this process' network namespace (the host's)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   NETLINK_ROUTE)  # fmt: skip
        self._sock.bind((0, 0))
        for option in (NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            self._sock.setsockopt(SOL_NETLINK, option, 1)
        self._seq = 0

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self._seq += 1
        self._sock.send(message(kind, flags, self._seq, body))
        return self._seq

    def request(self, kind: int, flags: int, body: bytes) -> None:
        """Send one change and wait for its ack; RtnlError if the kernel refused it."""
        self._send(kind, flags | NLM_F_ACK, body)
        for data in self._replies():
            for mtype, mflags, start, end in parse_messages(data):
                if mtype == NLMSG_ERROR:
                    error = _error(data, start, mflags, end)
                    if error is not None:
                        raise error
                    return

    def _replies(self) -> Iterator[bytes]:
        while True:
            yield self._sock.recv(1 << 20)

    def _dump(self, kind: int, body: bytes) -> Iterator[tuple[bytes, int, int]]:
        self._send(kind, NLM_F_DUMP, body)
        for data in self._replies():
            for mtype, mflags, start, end in parse_messages(data):
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    error = _error(data, start, mflags, end)
                    if error is not None:
                        raise error
                    return
                yield data, start, end

    def routes(self, family: int, table: int | None) -> list[Route]:
        """The routes of one family in table (None: in every table)."""
        found = (parse_route(*m) for m in self._dump(RTM_GETROUTE, route_dump_body(family, table)))
        return [r for r in found if r is not None and table in (None, r.table)]

    def links(self) -> dict[int, Link]:
        """Every interface of this namespace by index."""
        found = (parse_link(*m) for m in self._dump(RTM_GETLINK, _IFINFOMSG.pack(0, 0, 0, 0, 0)))
        return {link.index: link for link in found if link is not None}

    def nexthops(self) -> dict[int, Nexthop]:
        """Every nexthop object of this namespace by id (empty on a kernel without them)."""
        try:
            found = [
                parse_nexthop(*m) for m in self._dump(RTM_GETNEXTHOP, _NHMSG.pack(0, 0, 0, 0, 0))
            ]
        except RtnlError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return {}
            raise
        return {nh.id: nh for nh in found if nh is not None}
