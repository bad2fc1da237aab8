"""Raw rtnetlink for the bench: add/delete host routes, watch and dump a namespace's FIB.

Sockets are created inside a named namespace from a short-lived thread that setns()es
(the namespace is per thread, and a socket keeps the namespace it was created in), so the
bench process itself never leaves the root namespace. Every timestamp is CLOCK_MONOTONIC,
which is shared by all network namespaces: a time taken in the host namespace and one taken
in the leaf namespace are directly comparable.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
RTA_DST = 1
RTA_OIF = 4
RTMGRP_IPV4_ROUTE = 0x40
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
SO_RCVBUFFORCE = 33

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, ns: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), f"setns {ns}")


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run fn in a thread that joined namespace ns (the calling thread stays where it is)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            _setns(fd, ns)
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller
            failure.append(exc)
        finally:
            os.close(fd)

    thread = threading.Thread(target=target, name=f"setns-{ns}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _open(ns: str, groups: int = 0, rcvbuf: int = 0) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        if rcvbuf:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, groups))
        return sock

    return in_netns(ns, make)


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTA.size + len(payload)
    return _RTA.pack(length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def route_message(kind: int, prefix: IPv4Address, oif: int, seq: int, ack: bool = True) -> bytes:
    """RTM_NEWROUTE / RTM_DELROUTE for ``prefix/32 dev <oif> proto boot scope link``."""
    flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
    if kind == RTM_NEWROUTE:
        flags |= NLM_F_CREATE | NLM_F_EXCL
    body = _RTMSG.pack(
        socket.AF_INET, 32, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_LINK, RTN_UNICAST, 0
    )
    body += _attr(RTA_DST, prefix.packed) + _attr(RTA_OIF, struct.pack("=i", oif))
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


class RouteWriter:
    """Adds and deletes /32 routes in one namespace; returns the monotonic send time."""

    def __init__(self, ns: str, ifname: str) -> None:
        self.sock = _open(ns)
        self.oif = in_netns(ns, lambda: socket.if_nametoindex(ifname))
        self.seq = 0

    def _do(self, kind: int, prefix: IPv4Address) -> float:
        self.seq += 1
        message = route_message(kind, prefix, self.oif, self.seq)
        sent = time.monotonic()
        self.sock.send(message)
        reply = self.sock.recv(65536)
        _, mtype, _, _, _ = _NLMSGHDR.unpack_from(reply)
        if mtype == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", reply, _NLMSGHDR.size)
            if code:
                raise OSError(-code, f"netlink {kind} {prefix}: {os.strerror(-code)}")
        return sent

    def add(self, prefix: IPv4Address) -> float:
        return self._do(RTM_NEWROUTE, prefix)

    def delete(self, prefix: IPv4Address) -> float:
        return self._do(RTM_DELROUTE, prefix)

    def close(self) -> None:
        self.sock.close()


def parse_route_events(data: bytes, now: float) -> list[tuple[float, bool, int]]:
    """(time, added, dst as int) for every IPv4 /32 RTM_NEW/DELROUTE of the main table."""
    events: list[tuple[float, bool, int]] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, mtype, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        end = offset + length
        if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
            body = offset + _NLMSGHDR.size
            family, dst_len, _, _, table, _, _, _, _ = _RTMSG.unpack_from(data, body)
            if family == socket.AF_INET and dst_len == 32 and table == RT_TABLE_MAIN:
                pos = body + _RTMSG.size
                while pos + _RTA.size <= end:
                    alen, akind = _RTA.unpack_from(data, pos)
                    if alen < _RTA.size:
                        break
                    if akind == RTA_DST:
                        (dst,) = struct.unpack_from("!I", data, pos + _RTA.size)
                        events.append((now, mtype == RTM_NEWROUTE, dst))
                        break
                    pos += (alen + 3) & ~3
        offset += (length + 3) & ~3
    return events


@dataclass
class FibMonitor:
    """Watches a namespace's main-table /32 routes; per prefix the last add and delete time."""

    ns: str
    added: dict[int, float] = field(default_factory=dict)
    deleted: dict[int, float] = field(default_factory=dict)
    present: set[int] = field(default_factory=set)
    overruns: int = 0
    _stop: bool = False

    def start(self) -> None:
        self.sock = _open(self.ns, RTMGRP_IPV4_ROUTE, rcvbuf=256 << 20)
        self.sock.settimeout(0.2)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"fib-{self.ns}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    continue
                return
            now = time.monotonic()
            events = parse_route_events(data, now)
            with self.lock:
                for when, added, dst in events:
                    if added:
                        self.added[dst] = when
                        self.present.add(dst)
                    else:
                        self.deleted[dst] = when
                        self.present.discard(dst)

    def count(self, wanted: set[int]) -> int:
        with self.lock:
            return len(self.present & wanted)

    def stop(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()


def dump_host_routes(ns: str) -> set[int]:
    """The /32 destinations of ns's main table, by a raw dump (fast at 100k routes)."""
    sock = _open(ns, rcvbuf=64 << 20)
    try:
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        sock.send(
            _NLMSGHDR.pack(
                _NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
            )
            + body
        )
        found: set[int] = set()
        while True:
            data = sock.recv(1 << 20)
            for _, added, dst in parse_route_events(data, 0.0):
                if added:
                    found.add(dst)
            if _done(data):
                return found
    finally:
        sock.close()


def _done(data: bytes) -> bool:
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, mtype, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if mtype in (NLMSG_DONE, NLMSG_ERROR):
            return True
        if length < _NLMSGHDR.size:
            return True
        offset += (length + 3) & ~3
    return False


def wait_until(cond: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll cond until true (True) or the deadline (False): bounded in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()
