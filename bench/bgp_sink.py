"""A minimal passive BGP peer for benchmarks: accepts ExaBGP's session and timestamps UPDATEs.

It does no routing work (FRR would install every route through zebra into the kernel and
compete with ExaBGP for the same two cores), so what is measured is ExaBGP alone: the
time an UPDATE is read from the socket (CLOCK_MONOTONIC, shared by every process and
namespace) for each IPv4 /32 announced or withdrawn. It offers what FRR 8.4 offers
(IPv4 unicast, 4-octet AS, route refresh, extended messages) and keeps the session up
with KEEPALIVEs every hold/3 seconds.

The listening socket is created inside the namespace (bench.nl.in_netns); the threads run
in the root namespace with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from bench.nl import in_netns
from bench.wire import MARKER, parse_update

OPEN, UPDATE, NOTIFICATION, KEEPALIVE = 1, 2, 3, 4
_CAPABILITIES = (
    b"\x01\x04\x00\x01\x00\x01"  # multiprotocol IPv4 unicast
    b"\x02\x00"  # route refresh
    b"\x06\x00"  # extended message (RFC 8654), as FRR 8.4 offers
)


def message(kind: int, body: bytes = b"") -> bytes:
    return MARKER + struct.pack("!HB", 19 + len(body), kind) + body


def open_message(asn: int, hold: int, router_id: str) -> bytes:
    caps = _CAPABILITIES + b"\x41\x04" + struct.pack("!I", asn)  # 4-octet AS
    params = b"\x02" + bytes([len(caps)]) + caps
    body = struct.pack("!BHH", 4, asn if asn < 65536 else 23456, hold)
    body += IPv4Address(router_id).packed + bytes([len(params)]) + params
    return message(OPEN, body)


def split_messages(buffer: bytearray) -> list[bytes]:
    """Complete BGP messages at the front of buffer (removed from it)."""
    out: list[bytes] = []
    while len(buffer) >= 19:
        (length,) = struct.unpack_from("!H", buffer, 16)
        if buffer[:16] != MARKER or length < 19:
            raise ValueError(f"not a BGP stream: {bytes(buffer[:19]).hex()}")
        if len(buffer) < length:
            break
        out.append(bytes(buffer[:length]))
        del buffer[:length]
    return out


def path_attributes(update: bytes) -> bytes:
    """The path attribute field of an UPDATE (header included)."""
    (wlen,) = struct.unpack_from("!H", update, 19)
    (alen,) = struct.unpack_from("!H", update, 21 + wlen)
    return update[23 + wlen : 23 + wlen + alen]


@dataclass
class WireRecord:
    """What the UPDATEs of one period said: in order (bytes) and as routes (a multiset)."""

    ordered: Any = field(default_factory=hashlib.sha256)
    routes: list[tuple[bytes, int, int]] = field(default_factory=list)  # attrs, /32, 1=announce
    shape: list[list[int]] = field(default_factory=list)  # runs of [count, announced, withdrawn]

    def add(self, update: bytes, announced: list[int], withdrawn: list[int]) -> None:
        self.ordered.update(update)
        attrs = path_attributes(update)
        self.routes += [(attrs, dst, 1) for dst in announced]
        self.routes += [(b"", dst, 0) for dst in withdrawn]
        size = [len(announced), len(withdrawn)]
        if self.shape and self.shape[-1][1:] == size:
            self.shape[-1][0] += 1
        else:
            self.shape.append([1, *size])

    def summary(self) -> dict[str, Any]:
        def digest(routes: list[tuple[bytes, int, int]]) -> str:
            found = hashlib.sha256()
            for attrs, dst, kind in routes:
                found.update(struct.pack("!HIB", len(attrs), dst, kind) + attrs)
            return found.hexdigest()

        return {
            "updates": sum(run[0] for run in self.shape),
            "sha256_in_order": self.ordered.hexdigest(),  # the UPDATE bytes
            "sha256_routes_in_order": digest(self.routes),  # routes, whatever the UPDATEs
            "sha256_routes": digest(sorted(self.routes)),  # routes as a multiset
            "shape": self.shape,
        }


@dataclass
class BgpSink:
    """One BGP session at a time on ``address``:179 in namespace ``ns``."""

    ns: str
    address: str
    asn: int
    hold: int = 9
    announced: dict[int, float] = field(default_factory=dict)  # /32 -> last time seen
    withdrawn: dict[int, float] = field(default_factory=dict)
    sessions: int = 0
    record: WireRecord = field(default_factory=WireRecord)
    notifications: list[bytes] = field(default_factory=list)
    established: threading.Event = field(default_factory=threading.Event)
    end_of_rib: threading.Event = field(default_factory=threading.Event)  # IPv4 unicast EoR
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> BgpSink:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.address, 179))
            sock.listen(1)
            return sock

        self.listener = in_netns(self.ns, make)
        self.listener.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, name="bgp-sink", daemon=True)
        self.thread.start()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self.sessions += 1
                self._session(conn)
            self.established.clear()

    def _keepalives(self, conn: socket.socket, done: threading.Event) -> None:
        while not done.wait(self.hold / 3):
            with contextlib.suppress(OSError):
                conn.sendall(message(KEEPALIVE))

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buffer, done = bytearray(), threading.Event()
        threading.Thread(target=self._keepalives, args=(conn, done), daemon=True).start()
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(1 << 20)
                except TimeoutError:
                    continue
                if not data:
                    return
                now = time.monotonic()
                buffer += data
                for msg in split_messages(buffer):
                    self._message(conn, msg, now)
        except OSError:
            return
        finally:
            done.set()

    def _message(self, conn: socket.socket, msg: bytes, now: float) -> None:
        kind = msg[18]
        if kind == OPEN:
            conn.sendall(open_message(self.asn, self.hold, self.address) + message(KEEPALIVE))
        elif kind == KEEPALIVE:
            self.established.set()
        elif kind == NOTIFICATION:
            self.notifications.append(msg)
        elif kind == UPDATE:
            announced, withdrawn = parse_update(msg)
            with self.lock:
                self.record.add(msg, announced, withdrawn)
                for dst in announced:
                    self.announced[dst] = now
                for dst in withdrawn:
                    self.withdrawn[dst] = now
            if len(msg) == 23:  # no withdrawn routes, no attributes, no NLRI
                self.end_of_rib.set()

    def seen(self, table: str, dsts: list[int], since: float) -> tuple[int, float | None]:
        """How many of dsts were last seen in table at or after since, and the latest time."""
        source = self.announced if table == "announced" else self.withdrawn
        count, last = 0, None
        with self.lock:
            for dst in dsts:
                when = source.get(dst)
                if when is not None and when >= since:
                    count += 1
                    last = when if last is None else max(last, when)
        return count, last

    def take_record(self) -> WireRecord:
        """What was received since the last call; starts a new record."""
        with self.lock:
            found, self.record = self.record, WireRecord()
        return found

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.listener.close()
