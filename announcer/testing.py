"""Fakes for tests, shipped with the package so that a scenario of the whole daemon runs in
one process, with no namespace, no ExaBGP and no clock but the one you move.

- :class:`FakeClock`: a monotonic clock the test advances.
- :class:`RecordingExaBGP`: ExaBGP's side of the announcer's pipe. It answers ``version``
  and ``show adj-rib out`` the way ExaBGP 5.0.15 does (pinned by tests/exabgp), acks every
  other line (``error`` for lines you tell it to refuse) and records every line.
- :class:`FakeKernel`: a kernel for :class:`~announcer.sources.kernel_sync.KernelPort`: a
  snapshot to dump, and notifications you push.
- :class:`FakeSource`: a lifecycle source that lists what you give it and emits what you push.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from announcer.events import (
    Instance,
    KernelEvent,
    KernelLink,
    KernelRoute,
    KernelSnapshot,
    LifecycleEvent,
    SourceListed,
)
from announcer.exabgp.channel import ExaBGPChannel
from announcer.sources.kernel_sync import KernelPort
from announcer.sources.lifecycle import Clock, Emit

T = TypeVar("T")


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(condition: Callable[[], T | None], timeout: float = 5.0, what: str = "") -> T:
    """Poll ``condition`` until it returns something truthy; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or condition}")
        time.sleep(0.005)
    return result


class RecordingExaBGP:
    """Plays ExaBGP for an in-process :class:`ExaBGPChannel`: see the module docstring."""

    def __init__(
        self,
        rib: Iterable[str] = (),
        version: str = "exabgp 5.0.15",
        refuse: Callable[[str], bool] = lambda _line: False,
        silent: bool = False,
        ignore: Callable[[str], bool] = lambda _line: False,
    ) -> None:
        to_us_r, self._to_us = os.pipe()
        self._from_us, from_us_w = os.pipe()
        self.stdin = os.fdopen(to_us_r, "rb", buffering=0)  # the announcer's stdin
        self.stdout = os.fdopen(from_us_w, "wb", buffering=0)  # the announcer's stdout
        self.rib = list(rib)  # `show adj-rib out` lines
        self.version = version
        self.refuse = refuse
        self.silent = silent  # read and record, never answer (a wedged ExaBGP)
        self.ignore = ignore  # lines answered with nothing at all (4.2.21 on a parse error)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="fake-exabgp", daemon=True)
        self._thread.start()

    def channel(self, clock: Callable[[], float] = time.monotonic) -> ExaBGPChannel:
        return ExaBGPChannel(self.stdin, self.stdout, clock)

    def commands(self) -> list[str]:
        """Every route line so far (not the queries)."""
        with self._lock:
            return [ln for ln in self.lines if ln not in ("version", "show adj-rib out")]

    def wait_for(self, line: str, timeout: float = 5.0) -> None:
        wait_until(lambda: line in self.commands(), timeout, f"ExaBGP to read {line!r}")

    def tell(self, *lines: str) -> None:
        """Write lines to the announcer (JSON events, stray text)."""
        os.write(self._to_us, "".join(f"{line}\n" for line in lines).encode())

    def close(self) -> None:
        """EOF on the announcer's stdin, as when ExaBGP exits."""
        os.close(self._to_us)

    def _serve(self) -> None:
        pending = b""
        while chunk := os.read(self._from_us, 1 << 16):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                line = raw.decode()
                with self._lock:
                    self.lines.append(line)
                if not self.silent and not self.ignore(line):
                    self.tell(*self._answer(line))

    def _answer(self, line: str) -> list[str]:
        if line == "version":
            return [self.version, "done"]
        if line == "show adj-rib out":
            return [*self.rib, "done"]
        return ["error" if self.refuse(line) else "done"]


class _Subscription:
    def __init__(self, kernel: FakeKernel) -> None:
        self._kernel = kernel
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        kernel.subscriptions.append(self)

    def fileno(self) -> int:
        return self._read_fd

    def read(self, max_datagrams: int = 256) -> list[KernelEvent]:
        with contextlib.suppress(BlockingIOError):
            os.read(self._read_fd, 1 << 16)
        events, self._kernel.queued = self._kernel.queued, []
        return events

    def wake(self) -> None:
        os.write(self._write_fd, b".")

    def close(self) -> None:
        os.close(self._read_fd)
        os.close(self._write_fd)


class FakeKernel:
    """A kernel the announcer can dump and subscribe to; :meth:`push` from the loop's thread."""

    def __init__(
        self, routes: Iterable[KernelRoute] = (), links: Iterable[KernelLink] = ()
    ) -> None:
        self.routes = list(routes)
        self.links = list(links)
        self.queued: list[KernelEvent] = []
        self.subscriptions: list[_Subscription] = []
        self.dumps = 0

    def port(self) -> KernelPort:
        return KernelPort(dump=self.dump, subscribe=lambda _rcvbuf: _Subscription(self))

    def dump(self) -> KernelSnapshot:
        self.dumps += 1
        return KernelSnapshot(tuple(self.routes), tuple(self.links), ())

    def push(self, *events: KernelEvent) -> None:
        self.queued.extend(events)
        for subscription in self.subscriptions:
            subscription.wake()


class FakeSource:
    """A lifecycle source: lists ``instances`` when it runs; :meth:`push` emits more."""

    def __init__(self, name: str, instances: Iterable[Instance] = (), list_at_start: bool = True):
        self.name = name
        self.instances = tuple(instances)
        self.list_at_start = list_at_start
        self._emit: Emit | None = None

    async def run(self, emit: Emit, clock: Clock) -> None:
        self._emit = emit
        if self.list_at_start:
            emit(SourceListed(self.name, self.instances))
        await asyncio.Event().wait()  # until cancelled

    def push(self, event: LifecycleEvent) -> None:
        assert self._emit is not None, "the source is not running yet"
        self._emit(event)
