"""The feeds besides the kernel: lifecycle sources and health verdicts into the world, and
the configuration file's changes (:class:`FileStamp`). Also ``build_sources`` and
``list_sources`` (``plan``)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from announcer.config import Config
from announcer.core.world import World
from announcer.daemon.hooks import Hooks
from announcer.events import Event, HealthObserved, LifecycleEvent, SourceListed, SourceLost
from announcer.model import quote
from announcer.sources.lifecycle import LifecycleSource

log = logging.getLogger("announcer")

SOURCE_RESTART_SECONDS = 5.0


class Feeds:
    """Lifecycle and health observations into the world; each asks for a reconcile."""

    def __init__(
        self,
        world: World,
        apply: Callable[[Event], None],
        changed: Callable[[], None],
        metrics: Hooks,
        clock: Callable[[], float],
    ) -> None:
        self.world = world
        self._apply = apply
        self._changed = changed
        self._metrics = metrics
        self._clock = clock

    def on_health(self, event: HealthObserved) -> None:
        log.info(
            "health_changed key=%s:%s healthy=%s detail=%s", *event.key, event.healthy, event.detail
        )
        self._apply(event)
        self._metrics.events("health")
        self._changed()

    async def run_source(self, source: LifecycleSource) -> None:
        while True:
            try:
                await source.run(self.on_lifecycle, self._clock)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A source bug must not take down what is announced: report, keep the
                # last state (stale_after applies), restart the source.
                log.exception("source_failed source=%s", source.name)
                self.on_lifecycle(SourceLost(source.name, self._clock(), f"crashed: {exc}"))
                await asyncio.sleep(SOURCE_RESTART_SECONDS)
                continue
            return

    def on_lifecycle(self, event: LifecycleEvent) -> None:
        if isinstance(event, SourceLost):
            log.warning("source_lost source=%s reason=%s", event.source, quote(event.reason, 200))
        elif isinstance(event, SourceListed):
            status = self.world.sources.get(event.source)
            if status is None or not status.synced or status.lost_since is not None:
                log.info("source_synced source=%s instances=%d", event.source, len(event.instances))
        self._apply(event)
        self._metrics.lifecycle(event)
        self._changed()


class FileStamp:
    """Notices a file's changes by polling its stat (the caller polls once a second): no
    watcher thread, no inotify library for the one file the daemon always follows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self) -> bool:
        stamp = self._stamp()
        changed, self._seen = stamp != self._seen, stamp
        return changed


def build_sources(config: Config) -> list[LifecycleSource]:
    """The enabled lifecycle sources; a disabled source's modules are never imported."""
    sources: list[LifecycleSource] = []
    if config.files.enabled:
        from announcer.sources.files import FilesSource

        sources.append(FilesSource(Path(config.files.directory)))
    if config.docker.enabled:
        from announcer.sources.docker import DockerSource

        sources.append(DockerSource(config.docker))
    if config.marathon.enabled:
        from announcer.sources.marathon import MarathonSource

        sources.append(
            MarathonSource(config.marathon, label_selector=config.marathon.label_selector)
        )
    return sources


async def list_sources(
    sources: list[LifecycleSource], world: World, timeout: float, clock: Callable[[], float]
) -> dict[str, str]:
    """One listing of every source into ``world`` (for ``plan``); each source's status."""
    status: dict[str, str] = {}

    async def one(source: LifecycleSource) -> None:
        done = asyncio.Event()

        def emit(event: LifecycleEvent) -> None:
            if isinstance(event, SourceListed):
                world.apply(event)
                status[source.name] = f"listed {len(event.instances)} instance(s)"
                done.set()
            elif isinstance(event, SourceLost):
                status[source.name] = f"unreachable: {quote(event.reason, 200)}"
                done.set()

        task = asyncio.create_task(source.run(emit, clock))
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            status[source.name] = f"no listing within {timeout:g}s"
        finally:
            task.cancel()
            # bounded: on 3.11 wait_for inside the task can swallow a racing cancel
            await asyncio.wait({task}, timeout=1.0)

    await asyncio.gather(*(one(source) for source in sources))
    return status
