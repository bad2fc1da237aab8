"""The pipe to ExaBGP: threads and file descriptors only; the protocol is
:class:`announcer.exabgp.session.Pipe`.

ExaBGP writes acks and events to our stdin with a *blocking* write: a helper that stops
reading wedges ExaBGP and every BGP session with it. So stdin is read by a dedicated
thread, whatever the event loop is doing, and a slow ExaBGP never blocks the loop either:
the event loop's thread writes a line itself only when nothing is waiting for the writer
thread and the pipe has room for it (``poll`` says writable and the data fits in
``PIPE_BUF``, so the write cannot block); everything else goes through the writer thread,
in order. The direct write spares one change the hand-off to the writer thread (its wake-up
and the wait for the GIL: ~0.1 ms, the larger part of a one-route change's cost here). Both
threads hand over to the event loop's thread, where the session state lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from announcer.exabgp.commands import Ack, Message
from announcer.exabgp.session import Pipe, Reply

log = logging.getLogger("announcer.exabgp.channel")

WRITE_BATCH = 512  # lines per os.write at most
DIRECT_MAX = select.PIPE_BUF  # a direct write of at most this much cannot block on a pipe


class ExaBGPChannel:
    def __init__(
        self, stdin: BinaryIO, stdout: BinaryIO, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self.pipe = Pipe(clock, on_idle=self._idle)
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_message: Callable[[Message], None] = lambda _message: None
        self._on_eof: Callable[[], None] = lambda: None
        self._on_idle: Callable[[], None] | None = None
        # Lines handed to the writer thread (counted by the loop's thread) and written by it
        # (counted by the writer thread): equal when the writer has nothing in hand.
        self._handed = 0
        self._written = 0
        self._broken = False  # a write failed (logged once): nothing more is written
        self._poll: select.poll | None = None

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[Message], None],
        on_eof: Callable[[], None],
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        """Start the reader and writer threads; callbacks run in the loop's thread."""
        self._loop = loop
        self._on_message, self._on_eof, self._on_idle = on_message, on_eof, on_idle
        try:
            self._poll = select.poll()
            self._poll.register(self._stdout.fileno(), select.POLLOUT)
        except (OSError, ValueError):
            self._poll = None  # not a pollable descriptor: the writer thread writes all
        threading.Thread(target=self._read, name="exabgp-stdin", daemon=True).start()
        threading.Thread(target=self._write, name="exabgp-stdout", daemon=True).start()

    def close(self) -> None:
        self._outbox.put(None)

    # --- the event loop's thread ---

    def send(self, line: str, query: bool = False) -> asyncio.Future[Reply]:
        """Queue one line; the future resolves with its reply (see Pipe for the order)."""
        assert self._loop is not None, "start() first"
        future: asyncio.Future[Reply] = self._loop.create_future()

        def resolve(reply: Reply) -> None:
            if not future.done():
                future.set_result(reply)

        self.pipe.submit(line, resolve, query)
        self._flush()
        return future

    def stalled_for(self) -> float:
        return self.pipe.stalled_for()

    @property
    def in_flight(self) -> int:
        return self.pipe.in_flight

    def _flush(self) -> None:
        lines = self.pipe.take_writable()
        if not lines:
            return
        if self._handed == self._written and self._write_now(lines):
            return
        for line in lines:
            self._outbox.put(line)
        self._handed += len(lines)

    def _write_now(self, lines: list[str]) -> bool:
        """Write from the loop's thread when that cannot block (see the module doc)."""
        if self._broken:
            return True  # dropped, as the writer thread drops them after a failure
        data = ("\n".join(lines) + "\n").encode()
        if len(data) > DIRECT_MAX or self._poll is None:
            return False
        if not any(event & select.POLLOUT for _, event in self._poll.poll(0)):
            return False  # ExaBGP is behind: the writer thread waits for room
        self._write_all(memoryview(data))
        return True

    def _write_all(self, data: memoryview) -> None:
        try:
            while data:  # os.write, like the reader: no buffered-object lock at exit
                data = data[os.write(self._stdout.fileno(), data) :]
        except OSError as exc:
            if not self._broken:
                self._broken = True
                log.error("exabgp_stdout_failed error=%s", exc)

    def _idle(self) -> None:
        if self._on_idle is not None:
            self._on_idle()

    def _on_lines(self, lines: list[str]) -> None:
        for line in lines:
            message = self.pipe.receive(line)
            self._flush()
            if isinstance(message, Ack):
                log.warning("exabgp_unexpected_ack reply=%s", "done" if message.ok else "error")
            elif message is not None:
                self._on_message(message)

    # --- threads ---

    def _read(self) -> None:
        # os.read on the descriptor, not the buffered sys.stdin: a daemon thread blocked
        # inside a BufferedReader aborts the interpreter at exit.
        loop = self._loop
        assert loop is not None
        fd = self._stdin.fileno()
        pending = b""
        try:
            while chunk := os.read(fd, 1 << 16):
                *lines, pending = (pending + chunk).split(b"\n")
                if lines:
                    decoded = [line.decode("utf-8", "replace").rstrip("\r") for line in lines]
                    loop.call_soon_threadsafe(self._on_lines, decoded)
        except OSError as exc:
            log.error("exabgp_stdin_failed error=%s", exc)
        finally:
            with contextlib.suppress(RuntimeError):  # loop closed: we are exiting anyway
                loop.call_soon_threadsafe(self._on_eof)

    def _write(self) -> None:
        closing = False
        while not closing:
            item = self._outbox.get()
            batch: list[str] = []
            while True:
                if item is None:
                    closing = True
                    break
                batch.append(item)
                if len(batch) >= WRITE_BATCH:
                    break
                try:
                    item = self._outbox.get_nowait()
                except queue.Empty:
                    break
            if not batch:
                continue
            if not self._broken:
                self._write_all(memoryview(("\n".join(batch) + "\n").encode()))
            self._written += len(batch)
