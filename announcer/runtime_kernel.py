"""The runtime's kernel side: netlink notifications into the world, and resyncs.

A mixin of :class:`announcer.runtime.Announcer` (split out to keep modules small); it uses
the announcer's world, subscription, kernel port and stats.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from announcer.events import KernelEvent
from announcer.sources.kernel import Overrun

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from announcer.core.world import World
    from announcer.metrics import Metrics

log = logging.getLogger("announcer")


class KernelSync:
    if TYPE_CHECKING:
        world: World
        metrics: Metrics
        _subscription: Any
        kernel: Any
        stats: Any
        _resyncing: bool
        _resync_again: bool

        def schedule_reconcile(self, delay: float = 0.0) -> None: ...
        def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None: ...

    def _on_netlink(self) -> None:
        assert self._subscription is not None
        try:
            events = self._subscription.read()
        except Overrun:
            self.stats.overruns += 1
            log.warning("netlink_overrun action=resync")
            self._spawn(self.resync())
            return
        for event in events:
            self.world.apply(event)
        self.metrics.events("kernel", len(events))
        if events:
            self.schedule_reconcile()

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
            self.stats.resyncs += 1
            self.metrics.events("kernel_resync")
        except Exception:
            log.exception("kernel_resync_failed")
        finally:
            self._resyncing = False
            loop.add_reader(fd, self._on_netlink)
        self.schedule_reconcile()
        if self._resync_again:
            self._resync_again = False
            self._spawn(self.resync())

    async def _fresh_world(self) -> None:
        """Dump, then apply the dump and every change queued since it began.

        What is queued *before* the dump is dropped: after an overrun it may precede a
        gap (a lost delete), and replaying it over the dump would resurrect a route.
        What queues *after* the dump began is replayed in order, unless the buffer
        overflowed again, in which case we start over.
        """
        assert self._subscription is not None
        while True:
            self._read_all(keep=False)
            snapshot = await asyncio.to_thread(self.kernel.dump)
            try:
                events = self._read_all(keep=True)
            except Overrun:
                self.stats.overruns += 1
                log.warning("netlink_overrun_during_dump action=dump_again")
                continue
            self.world.apply(snapshot)
            for event in events:
                self.world.apply(event)
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
