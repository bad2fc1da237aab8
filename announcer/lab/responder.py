"""The lab's tiny service: answers every UDP datagram and every TCP line with its name.

``python -m announcer.lab.responder --name inst1 --port 7000`` runs inside a container
namespace. A reply is ``<name> <what was received>``, so the client learns which instance
served each packet of each flow. It prints ``ready`` once both sockets listen.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
from pathlib import Path
from typing import cast


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, name: bytes) -> None:
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(self.name + b" " + data[:200], addr)


async def _tcp(name: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(name + b" " + line[:200])
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


RECEIVE_BUFFER = 4 << 20
SO_RCVBUFFORCE = 33  # Linux <asm-generic/socket.h>; Python's socket module lacks it


def _big_receive_buffer(sock: socket.socket) -> None:
    """Room for a stall: the busiest instance gets ~2,000 datagrams/s per address in the
    dual-stack lab, which the default buffer (~208 KiB) holds for ~0.1 s; a responder starved
    of CPU that long dropped packets the fabric had delivered. SO_RCVBUFFORCE (root, as in
    the lab) passes net.core.rmem_max, which a namespace cannot raise."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)


def receive_errors() -> str:
    """The namespace's UDP datagrams dropped for a full receive buffer (both families):
    evidence for or against a stalled responder when the client saw loss."""
    try:
        snmp = Path("/proc/net/snmp").read_text().splitlines()
        snmp6 = Path("/proc/net/snmp6").read_text().split()
    except OSError as exc:
        return f"udp_rcvbuf_errors=unknown ({exc})"
    header, values = (line.split() for line in snmp if line.startswith("Udp:"))
    v4 = dict(zip(header, values, strict=True)).get("RcvbufErrors", "?")
    v6 = dict(zip(snmp6[::2], snmp6[1::2], strict=False)).get("Udp6RcvbufErrors", "?")
    return f"udp_rcvbuf_errors={v4} udp6_rcvbuf_errors={v6}"


class _Health:
    """The health port: open or closed on request (signals), logged each time."""

    def __init__(self, port: int, hosts: list[str]) -> None:
        self.port, self.hosts = port, hosts
        self.server: asyncio.Server | None = None

    async def open(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(_hang_up, self.hosts, self.port)
            print(f"health up port={self.port}", flush=True)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            print(f"health down port={self.port}", flush=True)


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def serve(name: str, port: int, addresses: list[str], health_port: int | None = None
                ) -> None:  # fmt: skip
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tag = name.encode()
    # one UDP socket per address, so a reply leaves from the address asked (the anycast IP)
    transports = [
        (await loop.create_datagram_endpoint(lambda: _Udp(tag), local_addr=(addr, port)))[0]
        for addr in addresses
    ]
    for transport in transports:
        _big_receive_buffer(transport.get_extra_info("socket"))
    # TCP needs no per-address socket: an accepted connection answers from its own address.
    # The namespace holds only the container's own addresses: a wildcard per family served.
    wildcards = ["0.0.0.0" if ":" not in a else "::" for a in addresses]  # noqa: S104
    server = await asyncio.start_server(
        lambda r, w: _tcp(tag, r, w), sorted(set(wildcards)), port, backlog=1024
    )
    health = None if health_port is None else _Health(health_port, sorted(set(wildcards)))
    if health is not None:
        await health.open()
        loop.add_signal_handler(signal.SIGUSR1, health.close)
        loop.add_signal_handler(signal.SIGUSR2, lambda: loop.create_task(health.open()))
    print("ready", flush=True)
    await stop.wait()
    print(f"stopping {receive_errors()}", flush=True)
    if health is not None:
        health.close()
    server.close()
    for transport in transports:
        transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=7000)
    parser.add_argument("--address", action="append", required=True, help="repeat per address")
    parser.add_argument("--health-port", type=int,
                        help="a TCP port SIGUSR1 closes and SIGUSR2 reopens")  # fmt: skip
    args = parser.parse_args()
    asyncio.run(serve(args.name, args.port, args.address, args.health_port))


if __name__ == "__main__":
    main()
