"""The lab's traffic generator, run inside the client namespace (bounded in count and time).

``flows``: N UDP and M TCP flows (distinct source ports) to TARGET:PORT, K packets each;
prints one JSON document: per flow, which instance answered each packet.
``stream``: F UDP flows sending one packet per flow every 1/RATE s for DURATION s (or until
a stop file exists), the flows sent all at once or spread over the period in SLOTS groups;
prints ``started`` at once, then one JSON document with every packet (send time on the
system's monotonic clock, flow, answering instance or null when lost).

Only addresses inside the lab are ever targeted; the runner passes them from the topology.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from functools import partial
from typing import Any, cast

MAX_PACKETS = 600_000
MAX_SECONDS = 150.0


class _Flow(asyncio.DatagramProtocol):
    def __init__(self, index: int, answers: dict[tuple[int, int], str]) -> None:
        self.index = index
        self.answers = answers
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        parts = data.decode(errors="replace").split()
        if len(parts) >= 3 and parts[1].isdigit() and parts[2].isdigit():
            self.answers[(int(parts[1]), int(parts[2]))] = parts[0]

    def send(self, seq: int) -> None:
        if self.transport is not None:
            self.transport.sendto(f"{self.index} {seq}".encode())


async def _udp_flows(target: str, port: int, count: int, answers: dict[tuple[int, int], str]
                     ) -> list[_Flow]:  # fmt: skip
    loop = asyncio.get_running_loop()
    flows = []
    for index in range(count):
        _, proto = await loop.create_datagram_endpoint(
            partial(_Flow, index, answers), remote_addr=(target, port)
        )
        flows.append(proto)
    return flows


def _sport(flow: _Flow) -> int:
    assert flow.transport is not None
    return int(flow.transport.get_extra_info("sockname")[1])


async def _tcp_flow(target: str, port: int, packets: int, sem: asyncio.Semaphore
                    ) -> dict[str, Any]:  # fmt: skip
    async with sem:
        answers: list[str | None] = []
        sport = 0
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(target, port), 3)
            sport = int(writer.get_extra_info("sockname")[1])
            for seq in range(packets):
                writer.write(f"tcp {seq}\n".encode())
                line = await asyncio.wait_for(reader.readline(), 3)
                answers.append(line.decode().split()[0] if line else None)
            writer.close()
        except (OSError, TimeoutError):
            answers += [None] * (packets - len(answers))
        return {"proto": "tcp", "sport": sport, "answers": answers}


async def run_flows(target: str, port: int, udp: int, tcp: int, packets: int) -> dict[str, Any]:
    answers: dict[tuple[int, int], str] = {}
    flows = await _udp_flows(target, port, udp, answers)
    for seq in range(packets):
        for flow in flows:
            flow.send(seq)
        await asyncio.sleep(0.2)  # pacing between rounds, not synchronisation
    deadline = time.monotonic() + 2.0
    while len(answers) < udp * packets and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    result = [
        {"proto": "udp", "sport": _sport(f),
         "answers": [answers.get((f.index, s)) for s in range(packets)]}
        for f in flows
    ]  # fmt: skip
    for flow in flows:
        if flow.transport is not None:
            flow.transport.close()
    sem = asyncio.Semaphore(100)
    result += await asyncio.gather(*(_tcp_flow(target, port, packets, sem) for _ in range(tcp)))
    return {"target": target, "port": port, "packets_per_flow": packets, "flows": result}


async def run_stream(target: str, port: int, count: int, rate: float, duration: float,
                     slots: int = 1, stop_file: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Every flow sends once per 1/rate s; the flows are split into `slots` groups sent at
    evenly spaced moments of each period (1: all at once). Ends after duration, or at the
    start of a period once stop_file exists."""
    answers: dict[tuple[int, int], str] = {}
    flows = await _udp_flows(target, port, count, answers)
    groups = [flows[g::slots] for g in range(slots)]
    sent: list[tuple[float, int, int]] = []
    print("started", flush=True)
    start = time.monotonic()
    tick = 0
    while (now := time.monotonic()) < start + duration:
        seq, slot = divmod(tick, slots)
        if slot == 0 and stop_file is not None and os.path.exists(stop_file):
            break
        for flow in groups[slot]:
            flow.send(seq)
            sent.append((now, flow.index, seq))
        tick += 1
        await asyncio.sleep(max(0.0, start + tick / (rate * slots) - time.monotonic()))
    await asyncio.sleep(1.0)  # late replies
    packets = [[round(t, 4), i, answers.get((i, s))] for t, i, s in sent]
    return {"target": target, "port": port, "flows": count, "rate": rate, "slots": slots,
            "sports": [_sport(f) for f in flows], "packets": packets}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["flows", "stream"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--port", type=int, default=7000)
    parser.add_argument("--udp", type=int, default=1200)
    parser.add_argument("--tcp", type=int, default=1200)
    parser.add_argument("--packets", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--slots", type=int, default=1, help="stream: send groups per period")
    parser.add_argument("--stop-file", help="stream: end once this file exists")
    args = parser.parse_args(argv)
    volume = (args.udp + args.tcp) * args.packets
    if args.mode == "stream":
        volume = int(args.udp * args.rate * args.duration)
    if volume > MAX_PACKETS or args.duration > MAX_SECONDS:
        raise SystemExit(f"refusing: {volume} packets / {args.duration}s exceeds the lab's bounds")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))
    if args.mode == "flows":
        doc = asyncio.run(run_flows(args.target, args.port, args.udp, args.tcp, args.packets))
    else:
        doc = asyncio.run(
            run_stream(
                args.target,
                args.port,
                args.udp,
                args.rate,
                args.duration,
                max(1, min(args.slots, args.udp)),
                args.stop_file,
            )
        )
    json.dump(doc, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
