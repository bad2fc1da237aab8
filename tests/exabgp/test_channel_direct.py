"""ExaBGPChannel's direct write: the loop's thread writes a line itself when nothing waits
for the writer thread and the pipe has room; otherwise the writer thread writes, in order."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select

from announcer.exabgp.channel import ExaBGPChannel
from tests.exabgp.test_channel import Pipes


def _fill(fd: int) -> int:
    """Fill the pipe behind ``fd`` (ours, written by the channel) to the last byte."""
    os.set_blocking(fd, False)
    filled = 0
    try:
        with contextlib.suppress(BlockingIOError):
            while True:
                filled += os.write(fd, b"x" * 4096)
        with contextlib.suppress(BlockingIOError):
            while True:
                filled += os.write(fd, b"x")
    finally:
        os.set_blocking(fd, True)
    return filled


def _read_now(fd: int) -> bytes:
    """What the pipe holds at this instant (nothing: b"")."""
    ready, _, _ = select.select([fd], [], [], 0)
    return os.read(fd, 65536) if ready else b""


def test_a_line_is_written_before_send_returns_when_nothing_waits() -> None:
    async def scenario() -> None:
        pipes = Pipes()
        channel = ExaBGPChannel(pipes.stdin, pipes.stdout)
        channel.start(asyncio.get_running_loop(), lambda m: None, lambda: None)
        channel.close()  # the writer thread ends: only the loop's own write can get it out
        await asyncio.sleep(0)  # (nothing to wait for; the line must already be there)
        channel.send("announce route 10.0.0.1/32 next-hop self")
        assert _read_now(pipes.from_us) == b"announce route 10.0.0.1/32 next-hop self\n"
        pipes.reply("done")

    asyncio.run(scenario())


def test_a_full_pipe_hands_lines_to_the_writer_thread_in_order() -> None:
    async def scenario() -> None:
        pipes = Pipes()
        channel = ExaBGPChannel(pipes.stdin, pipes.stdout)
        channel.start(asyncio.get_running_loop(), lambda m: None, lambda: None)
        filled = _fill(pipes.stdout.fileno())
        first = channel.send("announce route 10.0.0.1/32 next-hop self")  # no room: the thread
        data = b""
        while len(data) < 8192:  # room again, while the thread still holds the first line
            data += os.read(pipes.from_us, 8192 - len(data))
        second = channel.send("announce route 10.0.0.2/32 next-hop self")  # behind the first
        while data.count(b"\n") < 2:
            data += os.read(pipes.from_us, 65536)
        assert data.index(b"announce") == filled  # after everything that filled the pipe
        lines = data[data.index(b"announce") :].decode().splitlines()
        assert lines == [
            "announce route 10.0.0.1/32 next-hop self",
            "announce route 10.0.0.2/32 next-hop self",
        ]
        assert set(data[: data.index(b"announce")]) == {ord("x")}
        pipes.reply("done", "done")
        assert (await first).ok
        assert (await second).ok
        channel.close()

    asyncio.run(scenario())
