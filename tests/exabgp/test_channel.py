"""ExaBGPChannel over real pipes: replies matched in order, the query barrier, EOF."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from announcer.exabgp.channel import ExaBGPChannel
from announcer.exabgp.commands import Message, NeighborState, parse_adj_rib_out, parse_message

DATA = Path(__file__).resolve().parents[1] / "data"


class Pipes:
    """Our stdin/stdout as seen from ExaBGP's side."""

    def __init__(self) -> None:
        to_us_r, self.to_us = os.pipe()
        self.from_us, from_us_w = os.pipe()
        self.stdin = os.fdopen(to_us_r, "rb", buffering=0)
        self.stdout = os.fdopen(from_us_w, "wb", buffering=0)

    def reply(self, *lines: str) -> None:
        os.write(self.to_us, "".join(f"{line}\n" for line in lines).encode())

    def read_lines(self, count: int) -> list[str]:
        data = b""
        while data.count(b"\n") < count:
            data += os.read(self.from_us, 65536)
        return data.decode().splitlines()


async def run(test: object) -> None:
    await test  # type: ignore[misc]


def test_replies_resolve_commands_in_order_and_text_goes_to_the_query() -> None:
    async def scenario() -> None:
        pipes = Pipes()
        messages: list[Message] = []
        eof = asyncio.Event()
        channel = ExaBGPChannel(pipes.stdin, pipes.stdout)
        channel.start(asyncio.get_running_loop(), messages.append, eof.set)
        version = channel.send("version", query=True)
        first = channel.send("announce route 10.0.0.1/32 next-hop self")
        second = channel.send("withdraw route 10.0.0.2/32")
        # the barrier: only the query is written while it is in flight
        assert pipes.read_lines(1) == ["version"]
        pipes.reply("exabgp 5.0.15", "done")
        reply = await version
        assert reply.ok
        assert reply.lines == ["exabgp 5.0.15"]
        assert pipes.read_lines(2) == [
            "announce route 10.0.0.1/32 next-hop self",
            "withdraw route 10.0.0.2/32",
        ]
        state = (
            '{ "type": "state", "neighbor": { "address": { "peer": "10.99.0.1" }, "state": "up" } }'
        )
        pipes.reply("done", state, "error")
        assert (await first).ok
        assert not (await second).ok
        assert channel.in_flight == 0
        pipes.reply("shutdown in progress")  # chatter with nothing in flight: a message
        os.close(pipes.to_us)
        await asyncio.wait_for(eof.wait(), 5)
        assert isinstance(messages[0], NeighborState)
        assert messages[-1] == parse_message("shutdown in progress")
        channel.close()

    asyncio.run(scenario())


def test_a_query_waits_for_route_commands_in_flight() -> None:
    async def scenario() -> None:
        pipes = Pipes()
        channel = ExaBGPChannel(pipes.stdin, pipes.stdout)
        channel.start(asyncio.get_running_loop(), lambda m: None, lambda: None)
        route = channel.send("announce route 10.0.0.1/32 next-hop self")
        show = channel.send("show adj-rib out", query=True)
        assert pipes.read_lines(1) == ["announce route 10.0.0.1/32 next-hop self"]
        assert channel.in_flight == 2
        pipes.reply("done")
        await route
        assert pipes.read_lines(1) == ["show adj-rib out"]
        pipes.reply("10.99.0.1 ipv4 unicast 10.0.0.1/32 next-hop 10.99.0.2", "done")
        assert (await show).lines == ["10.99.0.1 ipv4 unicast 10.0.0.1/32 next-hop 10.99.0.2"]
        channel.close()

    asyncio.run(scenario())


def test_on_idle_fires_once_when_the_last_line_in_flight_is_answered() -> None:
    async def scenario() -> None:
        pipes = Pipes()
        idle: list[int] = []
        channel = ExaBGPChannel(pipes.stdin, pipes.stdout)
        channel.start(
            asyncio.get_running_loop(), lambda m: None, lambda: None,
            on_idle=lambda: idle.append(channel.in_flight),
        )  # fmt: skip
        first = channel.send("announce route 10.0.0.1/32 next-hop self")
        second = channel.send("announce route 10.0.0.2/32 next-hop self")
        show = channel.send("show adj-rib out", query=True)
        assert pipes.read_lines(2)
        pipes.reply("done")
        await first
        assert idle == []  # one line and the query still wait
        pipes.reply("done")
        await second
        assert pipes.read_lines(1) == ["show adj-rib out"]
        assert idle == []
        pipes.reply("done")
        await show
        assert idle == [0]
        channel.close()

    asyncio.run(scenario())


def test_recorded_adj_rib_out_of_exabgp5_parses_completely() -> None:
    lines = (DATA / "exabgp5_adj_rib_out.txt").read_text().splitlines()
    entries, unparsed = parse_adj_rib_out([line for line in lines if line != "done"])
    assert unparsed == []
    assert entries
    assert all(prefix.prefixlen == prefix.max_prefixlen for _, prefix in entries)


def test_recorded_state_messages_of_exabgp5_parse_as_neighbor_states() -> None:
    parsed = [
        parse_message(line)
        for line in (DATA / "exabgp5_state_messages.jsonl").read_text().splitlines()
        if line
    ]
    states = [m.state for m in parsed if isinstance(m, NeighborState)]
    assert {"connected", "up", "down"} <= set(states)
