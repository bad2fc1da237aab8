"""Kernel source: routes, links and addresses over rtnetlink.

``parse_*`` functions are pure: bytes of netlink messages in, typed observations out.
They decode only the fields we use, straight from the structs (linux/rtnetlink.h,
linux/if_link.h, linux/if_addr.h): ~20x faster than a generic decoder, which matters
when a 100k-route table is re-dumped (see docs/adr/0001-netlink-decoder.md).

:class:`NetlinkSource` owns two sockets: a multicast subscription (opened first, with a
large receive buffer) and a dump socket. Subscribe first, then dump, then replay what
was queued: the last word about every route is the kernel's latest.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from announcer.events import (
    AddressAdded,
    AddressRemoved,
    KernelAddress,
    KernelEvent,
    KernelLink,
    KernelRoute,
    KernelSnapshot,
    LinkChanged,
    LinkRemoved,
    NextHops,
    RouteAdded,
    RouteRemoved,
)
from announcer.model import IPAddress, Prefix

log = logging.getLogger("announcer.sources.kernel")

NETLINK_ROUTE = 0
SOL_NETLINK = 270
SO_RCVBUFFORCE = 33

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLM_F_DUMP_INTR = 0x10
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = (
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
)

RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 6, 9, 15
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")


class NetlinkError(Exception):
    """The kernel answered a request with an error."""


class DumpInterrupted(Exception):
    """The table changed during the dump (NLM_F_DUMP_INTR): dump again."""


@dataclass(frozen=True, slots=True)
class Done:
    """End of a dump."""


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    while offset + 4 <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < 4:
            break
        attrs[kind & 0x3FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return attrs


def _ip(family: int, raw: bytes) -> IPAddress:
    return IPv4Address(raw) if family == AF_INET else IPv6Address(raw)


def parse_route(data: bytes, offset: int, end: int) -> KernelRoute | None:
    family, dst_len, _src_len, _tos, table, protocol, _scope, rtype, _flags = _RTMSG.unpack_from(
        data, offset
    )
    if family not in (AF_INET, AF_INET6):
        return None
    attrs = _attributes(data, offset + _RTMSG.size, end)
    if RTA_TABLE in attrs:
        table = _U32.unpack(attrs[RTA_TABLE][:4])[0]
    dst = attrs.get(RTA_DST)
    prefix: Prefix
    if family == AF_INET:
        prefix = Prefix.make(4, int.from_bytes(dst or b"\0" * 4), dst_len)
    else:
        prefix = Prefix.make(6, int.from_bytes(dst or b"\0" * 16), dst_len)
    oif = _U32.unpack(attrs[RTA_OIF][:4])[0] if RTA_OIF in attrs else None
    gateway = _ip(family, attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None
    priority = _U32.unpack(attrs[RTA_PRIORITY][:4])[0] if RTA_PRIORITY in attrs else 0
    return KernelRoute(
        prefix=prefix,
        table=table,
        protocol=protocol,
        type=rtype,
        oif=oif,
        gateway=gateway,
        priority=priority,
        nexthops=parse_nexthops(attrs[RTA_MULTIPATH], family) if RTA_MULTIPATH in attrs else (),
    )


_RTNEXTHOP = struct.Struct("=HBBi")  # rtnh_len, rtnh_flags, rtnh_hops, rtnh_ifindex


def parse_nexthops(data: bytes, family: int) -> NextHops:
    """RTA_MULTIPATH: one rtnexthop per path, each followed by its own attributes."""
    hops: list[tuple[int, IPAddress | None]] = []
    offset = 0
    while offset + _RTNEXTHOP.size <= len(data):
        length, _flags, _weight, ifindex = _RTNEXTHOP.unpack_from(data, offset)
        if length < _RTNEXTHOP.size:
            break
        attrs = _attributes(data, offset + _RTNEXTHOP.size, offset + length)
        gateway = attrs.get(RTA_GATEWAY)
        hops.append((ifindex, _ip(family, gateway) if gateway is not None else None))
        offset += (length + 3) & ~3
    return tuple(sorted(hops, key=lambda hop: hop[0]))


def parse_link(data: bytes, offset: int, end: int) -> KernelLink:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, offset)
    attrs = _attributes(data, offset + _IFINFOMSG.size, end)
    name = attrs.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode("ascii", "replace")
    return KernelLink(index=index, name=name, flags=flags)


def parse_address(data: bytes, offset: int, end: int) -> KernelAddress | None:
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(data, offset)
    if family not in (AF_INET, AF_INET6):
        return None
    attrs = _attributes(data, offset + _IFADDRMSG.size, end)
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None:
        return None
    return KernelAddress(index=index, address=_ip(family, raw), prefixlen=prefixlen)


def parse_messages(data: bytes) -> Iterator[KernelEvent | Done]:
    """Every netlink message in one datagram, as observations (dumps end with Done)."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        body, end = offset + _NLMSGHDR.size, offset + length
        offset += (length + 3) & ~3
        if flags & NLM_F_DUMP_INTR:
            raise DumpInterrupted
        if kind == NLMSG_DONE:
            yield Done()
        elif kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", data, body)[0]
            if code:
                raise NetlinkError(f"netlink request failed: {os.strerror(code)}")
        elif kind in (RTM_NEWROUTE, RTM_DELROUTE):
            route = parse_route(data, body, end)
            if route is not None:
                yield RouteAdded(route) if kind == RTM_NEWROUTE else RouteRemoved(route)
        elif kind == RTM_NEWLINK:
            yield LinkChanged(parse_link(data, body, end))
        elif kind == RTM_DELLINK:
            yield LinkRemoved(parse_link(data, body, end).index)
        elif kind in (RTM_NEWADDR, RTM_DELADDR):
            address = parse_address(data, body, end)
            if address is not None:
                yield AddressAdded(address) if kind == RTM_NEWADDR else AddressRemoved(address)


def dump_request(kind: int, seq: int, family: int = socket.AF_UNSPEC) -> bytes:
    """A dump request: nlmsghdr + a zeroed family header (rtgenmsg-compatible)."""
    if kind == RTM_GETLINK:
        body = _IFINFOMSG.pack(family, 0, 0, 0, 0)
    elif kind == RTM_GETADDR:
        body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
    else:
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    return header + body


# --- I/O -----------------------------------------------------------------------------

RECV_SIZE = 1 << 16  # a datagram is one notification, or up to 32 KiB of a dump


class _Receiver:
    """Datagrams of one socket through one reused buffer. ``sock.recv(1 MiB)`` made a 1 MiB
    object per datagram and shrank it to the datagram's size: after a burst the heap was
    full of holes (part of the announcer's RSS that outlived the burst)."""

    def __init__(self, sock: socket.socket, lost: type[Exception]) -> None:
        self.sock = sock
        self._lost = lost  # raised for a datagram too big for the buffer (never seen)
        self._buffer = bytearray(RECV_SIZE)
        self._view = memoryview(self._buffer)

    def recv(self) -> bytes:
        size = self.sock.recv_into(self._buffer, 0, socket.MSG_TRUNC)
        if size > RECV_SIZE:
            raise self._lost(f"a netlink datagram of {size} bytes exceeds {RECV_SIZE}")
        return self._view[:size].tobytes()


def _open(groups: int = 0, rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    if rcvbuf:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            # Without CAP_NET_ADMIN the kernel caps SO_RCVBUF at net.core.rmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            log.warning(
                "netlink_rcvbuf_capped wanted=%d got=%d hint=raise net.core.rmem_max",
                rcvbuf,
                got,
            )
    sock.bind((0, groups))
    return sock


def dump_kernel(attempts: int = 5) -> KernelSnapshot:
    """A consistent dump of links, addresses and routes (retried if the kernel interrupts it)."""
    for _ in range(attempts):
        try:
            return _dump_once()
        except DumpInterrupted:
            continue
    raise NetlinkError(f"the routing table kept changing during {attempts} dumps")


def _dump_once() -> KernelSnapshot:
    links: list[KernelLink] = []
    addresses: list[KernelAddress] = []
    routes: list[KernelRoute] = []
    with _open() as sock:
        for seq, kind in enumerate((RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE), start=1):
            sock.sendall(dump_request(kind, seq))
            for event in _read_dump(sock):
                if isinstance(event, LinkChanged):
                    links.append(event.link)
                elif isinstance(event, AddressAdded):
                    addresses.append(event.address)
                elif isinstance(event, RouteAdded):
                    routes.append(event.route)
    return KernelSnapshot(tuple(routes), tuple(links), tuple(addresses))


def _read_dump(sock: socket.socket) -> Iterator[KernelEvent]:
    receiver = _Receiver(sock, DumpInterrupted)  # dump again
    while True:
        data = receiver.recv()
        for event in parse_messages(data):
            if isinstance(event, Done):
                return
            yield event


class Overrun(Exception):
    """Notifications were lost: the caller must re-dump."""


class NetlinkSubscription:
    """Non-blocking multicast subscription to route, link and address changes."""

    def __init__(self, rcvbuf: int) -> None:
        self.sock = _open(GROUPS, rcvbuf)
        self.sock.setblocking(False)
        self._receiver = _Receiver(self.sock, Overrun)  # resync

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, max_datagrams: int = 256) -> list[KernelEvent]:
        """What is queued now (up to max_datagrams); raises :class:`Overrun` on ENOBUFS."""
        events: list[KernelEvent] = []
        for _ in range(max_datagrams):
            try:
                data = self._receiver.recv()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise Overrun from exc
                raise
            events.extend(e for e in parse_messages(data) if not isinstance(e, Done))
        return events

    def close(self) -> None:
        self.sock.close()
