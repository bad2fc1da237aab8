"""The kernel feed: netlink notifications into the world, and the resync procedure.

:class:`KernelFeed` owns the netlink subscription. It applies every notification to the
world (through ``apply``) and asks for a reconcile; after an overrun (ENOBUFS), and
periodically, it resyncs: drop what was queued before the dump, dump, then replay what
queued after the dump began (another overrun meanwhile starts it over). Replaying
pre-dump notifications would resurrect a route whose delete was lost in the gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from announcer.events import KernelEvent, KernelSnapshot
from announcer.sources.kernel import NetlinkSubscription, Overrun, dump_kernel

log = logging.getLogger("announcer")


class Subscription(Protocol):
    def fileno(self) -> int: ...
    def read(self, max_datagrams: int = 256) -> list[KernelEvent]: ...
    def close(self) -> None: ...


@dataclass
class KernelPort:
    """How the feed reaches the kernel; tests may pass fakes."""

    dump: Callable[[], KernelSnapshot] = dump_kernel
    subscribe: Callable[[int], Subscription] = NetlinkSubscription


class KernelFeed:
    def __init__(
        self,
        port: KernelPort,
        rcvbuf: int,
        apply: Callable[[KernelEvent], None],
        changed: Callable[[], None],
        observed: Callable[[str, int], None] = lambda _source, _count: None,
    ) -> None:
        self.port = port
        self.rcvbuf = rcvbuf
        self._apply = apply  # fold one observation into the world
        self._changed = changed  # ask for a reconcile
        self._observed = observed  # count events by source (metrics)
        self._subscription: Subscription | None = None
        self._resyncing = False
        self._resync_again = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.resyncs = 0
        self.overruns = 0

    async def start(self) -> None:
        """Subscribe, then dump: the world is known (and stays so)."""
        self._subscription = self.port.subscribe(self.rcvbuf)
        await self._fresh_world()
        asyncio.get_running_loop().add_reader(self._subscription.fileno(), self._on_readable)

    def close(self) -> None:
        if self._subscription is not None:
            asyncio.get_running_loop().remove_reader(self._subscription.fileno())
            self._subscription.close()
            self._subscription = None

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    def _on_readable(self) -> None:
        assert self._subscription is not None
        try:
            events = self._subscription.read()
        except Overrun:
            self.overruns += 1
            log.warning("netlink_overrun action=resync")
            self._spawn(self.resync())
            return
        for event in events:
            self._apply(event)
        self._observed("kernel", len(events))
        if events:
            self._changed()

    async def resync(self) -> None:
        """Replace the world with a fresh kernel dump, then replay what queued meanwhile."""
        if self._subscription is None:
            return
        if self._resyncing:
            self._resync_again = True
            return
        self._resyncing = True
        loop = asyncio.get_running_loop()
        fd = self._subscription.fileno()
        loop.remove_reader(fd)  # changes queue in the socket while we dump
        try:
            await self._fresh_world()
            self.resyncs += 1
            self._observed("kernel_resync", 1)
        except Exception:
            log.exception("kernel_resync_failed")
        finally:
            self._resyncing = False
            loop.add_reader(fd, self._on_readable)
        self._changed()
        if self._resync_again:
            self._resync_again = False
            self._spawn(self.resync())

    async def _fresh_world(self) -> None:
        """Dump, then apply the dump and every change queued since it began (module doc)."""
        assert self._subscription is not None
        while True:
            self._read_all(keep=False)
            snapshot = await asyncio.to_thread(self.port.dump)
            try:
                events = self._read_all(keep=True)
            except Overrun:
                self.overruns += 1
                log.warning("netlink_overrun_during_dump action=dump_again")
                continue
            self._apply(snapshot)
            for event in events:
                self._apply(event)
            return

    def _read_all(self, keep: bool) -> list[KernelEvent]:
        """Everything queued on the subscription; with keep=False, dropped (overruns too)."""
        assert self._subscription is not None
        kept: list[KernelEvent] = []
        while True:
            try:
                events = self._subscription.read()
            except Overrun:
                if keep:
                    raise
                continue
            if not events:
                return kept
            if keep:
                kept.extend(events)
