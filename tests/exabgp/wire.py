"""BGP UPDATEs as sent on the wire, captured inside the peer namespace (IPv4 and IPv6).

An AF_PACKET socket opened in the peer namespace (bench.nl.in_netns: only a short-lived
thread joins it) sees every frame the host sends over the veth; TCP segments to port 179
are reassembled per connection by bench.wire.BgpStream, and each complete BGP message is
kept as raw bytes, in order, per connection. :func:`describe` decodes just enough of an
UPDATE (withdrawn routes, NLRI, MP_REACH/MP_UNREACH prefixes, attribute codes) to wait on
and to print differences; comparisons are made on the raw bytes.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network

from bench.nl import in_netns
from bench.wire import ETH_P_ALL, PACKET_OUTGOING, BgpStream, parse_frame

BGP_PORT = 179
UPDATE = 2
MP_REACH, MP_UNREACH = 14, 15


def _prefixes(data: bytes, afi_bytes: int) -> list[str]:
    found, pos = [], 0
    while pos < len(data):
        length = data[pos]
        octets = (length + 7) // 8
        raw = data[pos + 1 : pos + 1 + octets] + b"\0" * (afi_bytes - octets)
        found.append(str(ip_network((raw, length))))
        pos += 1 + octets
    return found


def _attributes(data: bytes) -> list[tuple[int, bytes]]:
    found, pos = [], 0
    while pos < len(data):
        flags, code = data[pos], data[pos + 1]
        if flags & 0x10:
            (length,) = struct.unpack_from("!H", data, pos + 2)
            start = pos + 4
        else:
            length, start = data[pos + 2], pos + 3
        found.append((code, data[start : start + length]))
        pos = start + length
    return found


@dataclass(frozen=True, slots=True)
class Update:
    """What one UPDATE message carries, decoded (prefixes as 'addr/len')."""

    withdrawn: tuple[str, ...]
    announced: tuple[str, ...]
    attribute_codes: tuple[int, ...]

    def prefixes(self) -> set[str]:
        return set(self.withdrawn) | set(self.announced)


def describe(message: bytes) -> Update:
    """Decode an UPDATE (header included): IPv4 fields and MP_REACH/MP_UNREACH (AFI 1, 2)."""
    (wlen,) = struct.unpack_from("!H", message, 19)
    withdrawn = _prefixes(message[21 : 21 + wlen], 4)
    (alen,) = struct.unpack_from("!H", message, 21 + wlen)
    start = 23 + wlen
    attributes = _attributes(message[start : start + alen])
    announced = _prefixes(message[start + alen :], 4)
    for code, value in attributes:
        afi_bytes = 4 if value[:2] == b"\x00\x01" else 16
        if code == MP_UNREACH:
            withdrawn += _prefixes(value[3:], afi_bytes)
        elif code == MP_REACH:
            nh_len = value[3]
            announced += _prefixes(value[4 + nh_len + 1 :], afi_bytes)
    return Update(tuple(withdrawn), tuple(announced), tuple(code for code, _ in attributes))


@dataclass
class UpdateCapture:
    """Every BGP UPDATE sent from ``sources`` to port 179, seen on ``ifname`` in ``ns``."""

    ns: str
    ifname: str
    sources: frozenset[str]
    streams: dict[tuple[str, int, int, int], BgpStream] = field(default_factory=dict)
    updates: dict[tuple[str, int, int, int], list[bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> UpdateCapture:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
            sock.bind((self.ifname, 0))
            return sock

        self.sock = in_netns(self.ns, make)
        self.sock.settimeout(0.1)
        self.thread = threading.Thread(target=self._run, name="update-capture", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        by_int = {int(ip_address(source)): source for source in self.sources}
        while not self._stop.is_set():
            try:
                frame, _, _, address = self.sock.recvmsg(1 << 17)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] == PACKET_OUTGOING:
                continue
            segment = parse_frame(frame)
            source = None if segment is None else by_int.get(segment.src)
            if segment is None or source is None or BGP_PORT not in (segment.sport, segment.dport):
                continue
            key = (source, segment.sport, segment.dst, segment.dport)
            stream = self.streams.setdefault(key, BgpStream())
            messages = [m for m in stream.feed(segment.seq, segment.payload) if m[18] == UPDATE]
            if messages:
                with self.lock:
                    self.updates.setdefault(key, []).extend(messages)

    def by_source(self) -> dict[str, list[bytes]]:
        """Source address -> its UPDATEs in order; one connection per source expected."""
        with self.lock:
            keys = list(self.updates)
            found: dict[str, list[bytes]] = {}
            for key in keys:
                assert key[0] not in found, f"more than one BGP connection from {key[0]}: {keys}"
                found[key[0]] = list(self.updates[key])
        return found

    def gaps(self) -> int:
        return sum(stream.gaps for stream in self.streams.values())

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()
