"""The pipe to ExaBGP: the only writer of stdout, and the reader that never stops.

ExaBGP writes acks and events to our stdin with a *blocking* write: a helper that stops
reading wedges ExaBGP and every BGP session with it. So stdin is read by a dedicated
thread, whatever the event loop is doing, and stdout is written by another thread, so
a slow ExaBGP never blocks the loop either. Replies (``done``/``error``) come back in
the order the commands were sent; each command's future resolves with its reply and
any text lines that came before it (the output of ``show`` and ``version``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from announcer.exabgp.commands import Ack, Message, Text, parse_message

log = logging.getLogger(__name__)


@dataclass
class Reply:
    ok: bool
    lines: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    line: str
    future: asyncio.Future[Reply]
    query: bool = False
    output: list[str] = field(default_factory=list)


class ExaBGPChannel:
    def __init__(
        self,
        stdin: BinaryIO,
        stdout: BinaryIO,
        on_message: Callable[[Message], None],
        on_eof: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._on_message = on_message
        self._on_eof = on_eof
        self._clock = clock
        self._on_idle = on_idle  # called when the last line in flight has been answered
        self._pending: deque[_Pending] = deque()  # written, waiting for their reply
        self._unsent: deque[_Pending] = deque()  # held back by the query barrier
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_progress = clock()
        self.sent = 0
        self.acked = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        threading.Thread(target=self._read, name="exabgp-stdin", daemon=True).start()
        threading.Thread(target=self._write, name="exabgp-stdout", daemon=True).start()

    def close(self) -> None:
        self._outbox.put(None)

    # --- sending (event loop thread) ---

    def send(self, line: str, query: bool = False) -> asyncio.Future[Reply]:
        """Queue one line; the future resolves with its reply.

        ExaBGP answers route commands after the other commands read in the same batch
        (pinned by tests/exabgp), so replies are in order only among route commands. A
        query (``version``, ``show ...``) is therefore written only when nothing is in
        flight, and nothing is written while a query is in flight.
        """
        assert self._loop is not None, "start() first"
        future: asyncio.Future[Reply] = self._loop.create_future()
        self._unsent.append(_Pending(line, future, query))
        self._pump()
        return future

    def _pump(self) -> None:
        while self._unsent:
            head = self._unsent[0]
            if self._pending and (head.query or self._pending[-1].query):
                return
            self._unsent.popleft()
            if not self._pending:
                self._last_progress = self._clock()
            self._pending.append(head)
            self._outbox.put(head.line)
            self.sent += 1

    def stalled_for(self) -> float:
        """Seconds without any reply while commands wait for one (0 when none wait)."""
        if not self._pending:
            return 0.0
        return self._clock() - self._last_progress

    @property
    def in_flight(self) -> int:
        return len(self._pending) + len(self._unsent)

    # --- receiving (event loop thread) ---

    def _on_line(self, line: str) -> None:
        message = parse_message(line)
        if isinstance(message, Ack):
            if not self._pending:
                log.warning("exabgp_unexpected_ack reply=%s", "done" if message.ok else "error")
                return
            pending = self._pending.popleft()
            self._last_progress = self._clock()
            self.acked += 1
            if not pending.future.done():
                pending.future.set_result(Reply(message.ok, pending.output))
            self._pump()
            if not self.in_flight and self._on_idle is not None:
                self._on_idle()
            return
        if isinstance(message, Text) and self._pending and self._pending[0].query:
            self._pending[0].output.append(message.text)
            return
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

    def _on_lines(self, lines: list[str]) -> None:
        for line in lines:
            self._on_line(line)

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
                if len(batch) >= 512:
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
