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
from ipaddress import IPv4Address, IPv6Address, ip_network

from bench.nl import in_netns
from bench.wire import ETH_P_ALL, PACKET_OUTGOING, BgpStream

BGP_PORT = 179
UPDATE = 2
MP_REACH, MP_UNREACH = 14, 15
_ETH_IPV4, _ETH_IPV6 = b"\x08\x00", b"\x86\xdd"


@dataclass(frozen=True, slots=True)
class TcpPayload:
    key: tuple[str, int, str, int]  # src, sport, dst, dport
    seq: int
    payload: bytes


def parse_frame(frame: bytes) -> TcpPayload | None:
    """An Ethernet frame carrying IPv4 or IPv6 (no extension headers) TCP with payload."""
    ethertype, ip = frame[12:14], frame[14:]
    if ethertype == _ETH_IPV4 and len(ip) >= 20 and ip[9] == socket.IPPROTO_TCP:
        (total,) = struct.unpack_from("!H", ip, 2)
        tcp = ip[(ip[0] & 0x0F) * 4 : total or len(ip)]
        src, dst = str(IPv4Address(ip[12:16])), str(IPv4Address(ip[16:20]))
    elif ethertype == _ETH_IPV6 and len(ip) >= 40 and ip[6] == socket.IPPROTO_TCP:
        (length,) = struct.unpack_from("!H", ip, 4)
        tcp = ip[40 : 40 + length] if length else ip[40:]
        src, dst = str(IPv6Address(ip[8:24])), str(IPv6Address(ip[24:40]))
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", tcp, 0)
    payload = tcp[(tcp[12] >> 4) * 4 :]
    if not payload:
        return None
    return TcpPayload((src, sport, dst, dport), seq, bytes(payload))


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
    streams: dict[tuple[str, int, str, int], BgpStream] = field(default_factory=dict)
    updates: dict[tuple[str, int, str, int], list[bytes]] = field(default_factory=dict)
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
            if segment is None or segment.key[0] not in self.sources:
                continue
            if segment.key[3] != BGP_PORT and segment.key[1] != BGP_PORT:
                continue
            stream = self.streams.setdefault(segment.key, BgpStream())
            messages = [m for m in stream.feed(segment.seq, segment.payload) if m[18] == UPDATE]
            if messages:
                with self.lock:
                    self.updates.setdefault(segment.key, []).extend(messages)

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
