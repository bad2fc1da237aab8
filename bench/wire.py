"""The wire: BGP UPDATEs from the host, captured on the leaf side of the veth.

Why a raw AF_PACKET socket and not tshark: the kernel stamps each frame when it is received
(SO_TIMESTAMPNS), and those stamps are converted to CLOCK_MONOTONIC with an offset measured
at start, so the wire time is on the same clock as the route add in the host namespace,
with no pipe or process in between. The socket is opened inside the leaf namespace; the
TCP stream host -> leaf is reassembled (veth neither drops nor reorders; retransmissions
are trimmed, a gap resynchronises on the next BGP marker) and each UPDATE's withdrawn
routes and NLRI are recorded with the time of the frame that completed the message.

The parsing (:func:`parse_frame`, :class:`BgpStream`, :func:`parse_update`) is pure.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from bench.nl import in_netns

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
MARKER = b"\xff" * 16
BGP_OPEN = 1
BGP_UPDATE = 2


@dataclass(frozen=True, slots=True)
class Segment:
    src: int
    sport: int
    dst: int
    dport: int
    seq: int
    payload: bytes


def parse_frame(frame: bytes) -> Segment | None:
    """An Ethernet frame carrying IPv4 or IPv6 (no extension headers) TCP with payload ->
    Segment, addresses as ints (None for anything else)."""
    ethertype, ip = frame[12:14], frame[14:]
    if ethertype == b"\x08\x00" and len(ip) >= 20 and ip[0] >> 4 == 4:
        if ip[9] != socket.IPPROTO_TCP:
            return None
        (total,) = struct.unpack_from("!H", ip, 2)  # GSO frames may carry 0
        tcp = ip[(ip[0] & 0x0F) * 4 : total or len(ip)]
        src, dst = struct.unpack_from("!II", ip, 12)
    elif ethertype == b"\x86\xdd" and len(ip) >= 40 and ip[6] == socket.IPPROTO_TCP:
        (length,) = struct.unpack_from("!H", ip, 4)
        tcp = ip[40 : 40 + length] if length else ip[40:]
        src, dst = int.from_bytes(ip[8:24], "big"), int.from_bytes(ip[24:40], "big")
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", tcp, 0)
    payload = tcp[(tcp[12] >> 4) * 4 :]
    if not payload:
        return None
    return Segment(src, sport, dst, dport, seq, bytes(payload))


def _prefixes(data: bytes, pos: int, end: int) -> list[int]:
    """IPv4 prefixes in BGP wire form (length byte + significant octets), /32 only kept
    as ints; other lengths are kept with the length in the top bits cleared (ignored)."""
    found: list[int] = []
    while pos < end:
        length = data[pos]
        octets = (length + 7) // 8
        raw = data[pos + 1 : pos + 1 + octets] + b"\0" * (4 - octets)
        if length == 32:
            found.append(struct.unpack("!I", raw)[0])
        pos += 1 + octets
    return found


def parse_update(message: bytes) -> tuple[list[int], list[int]]:
    """(announced, withdrawn) IPv4 /32s of one UPDATE message (header included)."""
    pos = 19
    (wlen,) = struct.unpack_from("!H", message, pos)
    withdrawn = _prefixes(message, pos + 2, pos + 2 + wlen)
    pos += 2 + wlen
    (alen,) = struct.unpack_from("!H", message, pos)
    announced = _prefixes(message, pos + 2 + alen, len(message))
    return announced, withdrawn


@dataclass
class BgpStream:
    """One direction of a TCP connection, cut into BGP messages."""

    expected: int | None = None
    buffer: bytearray = field(default_factory=bytearray)
    gaps: int = 0

    def feed(self, seq: int, payload: bytes) -> list[bytes]:
        if self.expected is None:
            self.expected = seq
        delta = (seq - self.expected) & 0xFFFFFFFF
        if delta >= 0x80000000:  # a retransmission (partly) of what we have
            overlap = (self.expected - seq) & 0xFFFFFFFF
            if overlap >= len(payload):
                return []
            payload = payload[overlap:]
        elif delta:  # a gap (capture overrun): resynchronise on the next marker
            self.gaps += 1
            self.buffer.clear()
            self.expected = seq
        self.expected = (self.expected + len(payload)) & 0xFFFFFFFF
        self.buffer += payload
        return self._messages()

    def _messages(self) -> list[bytes]:
        out: list[bytes] = []
        while len(self.buffer) >= 19:
            if self.buffer[:16] != MARKER:
                at = self.buffer.find(MARKER, 1)
                if at < 0:
                    del self.buffer[:-15]
                    return out
                del self.buffer[:at]
                continue
            (length,) = struct.unpack_from("!H", self.buffer, 16)
            if length < 19:
                del self.buffer[:16]
                continue
            if len(self.buffer) < length:
                break
            out.append(bytes(self.buffer[:length]))
            del self.buffer[:length]
        return out


def realtime_to_monotonic_offset(samples: int = 20) -> float:
    """realtime - monotonic, from the closest pair of readings."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        m0 = time.monotonic()
        r = time.time()
        m1 = time.monotonic()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, r - (m0 + m1) / 2)
    assert best is not None
    return best[1]


@dataclass
class WireCapture:
    """Captures host -> leaf BGP on ``ifname`` in namespace ``ns`` (a daemon thread)."""

    ns: str
    ifname: str
    host_ip: int
    announced: dict[int, list[float]] = field(default_factory=dict)
    withdrawn: dict[int, list[float]] = field(default_factory=dict)
    opens: list[float] = field(default_factory=list)
    updates: int = 0
    streams: dict[tuple[int, int, int, int], BgpStream] = field(default_factory=dict)
    _stop: bool = False

    def start(self) -> None:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((self.ifname, 0))
            return sock

        self.offset = realtime_to_monotonic_offset()
        self.sock = in_netns(self.ns, make)
        self.sock.settimeout(0.2)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="wire", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                frame, ancillary, _, address = self.sock.recvmsg(1 << 17, 64)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] == PACKET_OUTGOING:
                continue
            stamp = time.time()
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("=qq", data[:16])
                    stamp = sec + nsec / 1e9
            segment = parse_frame(frame)
            if segment is None or segment.src != self.host_ip:
                continue
            if 179 not in (segment.sport, segment.dport):
                continue
            self._segment(segment, stamp - self.offset)

    def _segment(self, segment: Segment, when: float) -> None:
        key = (segment.src, segment.sport, segment.dst, segment.dport)
        stream = self.streams.setdefault(key, BgpStream())
        for message in stream.feed(segment.seq, segment.payload):
            kind = message[18]
            if kind == BGP_OPEN:
                with self.lock:
                    self.opens.append(when)
            elif kind == BGP_UPDATE:
                announced, withdrawn = parse_update(message)
                with self.lock:
                    self.updates += 1
                    for dst in announced:
                        self.announced.setdefault(dst, []).append(when)
                    for dst in withdrawn:
                        self.withdrawn.setdefault(dst, []).append(when)

    def first_after(self, table: str, dst: int, t0: float) -> float | None:
        with self.lock:
            times = (self.announced if table == "announced" else self.withdrawn).get(dst, [])
            return next((t for t in times if t >= t0), None)

    def last_of(self, table: str, dsts: set[int], t0: float) -> tuple[int, float | None]:
        """How many of dsts were seen after t0, and the time of the last first sighting."""
        source = self.announced if table == "announced" else self.withdrawn
        seen, last = 0, None
        with self.lock:
            for dst in dsts:
                when = next((t for t in source.get(dst, ()) if t >= t0), None)
                if when is not None:
                    seen += 1
                    last = when if last is None else max(last, when)
        return seen, last

    def stop(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()
