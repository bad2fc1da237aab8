"""The pipe to ExaBGP: threads and file descriptors only; the protocol is
:class:`announcer.exabgp.session.Pipe`.

ExaBGP writes acks and events to our stdin with a *blocking* write: a helper that stops
reading wedges ExaBGP and every BGP session with it. So stdin is read by a dedicated
thread, whatever the event loop is doing, and stdout is written by another thread, so a
slow ExaBGP never blocks the loop either. Both hand over to the event loop's thread, where
the session state lives; this is the only writer of stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from announcer.exabgp.commands import Ack, Message
from announcer.exabgp.session import Pipe, Reply

log = logging.getLogger("announcer.exabgp.channel")

WRITE_BATCH = 512  # lines per os.write at most


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
        for line in self.pipe.take_writable():
            self._outbox.put(line)

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
        fd = self._stdout.fileno()
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
            data = memoryview(("\n".join(batch) + "\n").encode())
            try:
                while data:  # os.write, like the reader: no buffered-object lock at exit
                    data = data[os.write(fd, data) :]
            except OSError as exc:
                log.error("exabgp_stdout_failed error=%s", exc)
                return
