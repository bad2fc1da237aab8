"""The runtime's feeds besides the kernel: lifecycle sources, health verdicts, and the
configuration file (live reload). Also ``list_sources`` for ``announcer plan``.

A mixin of :class:`announcer.runtime.Announcer` (split out to keep modules small).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from announcer.config import Config, ConfigError, load_config, to_policy
from announcer.core.policy import Policy, trusted_instances
from announcer.core.world import World
from announcer.events import HealthObserved, LifecycleEvent, SourceListed, SourceLost
from announcer.health import CheckTarget, HealthChanged
from announcer.metrics import Metrics
from announcer.model import quote
from announcer.sources.files import FilesSource, watch
from announcer.sources.lifecycle import LifecycleSource

log = logging.getLogger("announcer")

# Sections whose change needs a restart; the rest (policy, exabgp, lifecycle) apply live.
RESTART_SECTIONS = ("kernel", "docker", "marathon", "files", "control", "damping", "metrics")


class SourceFeeds:
    if TYPE_CHECKING:
        config: Config
        policy: Policy
        world: World
        metrics: Metrics
        _force_full: bool

        def schedule_reconcile(self, delay: float = 0.0) -> None: ...

    def _on_health(self, event: HealthChanged) -> None:
        log.info(
            "health_changed key=%s:%s healthy=%s detail=%s", *event.key, event.healthy, event.detail
        )
        self.world.apply(HealthObserved(event.key, event.healthy, event.detail))
        self.metrics.events("health")
        self.schedule_reconcile()

    async def _run_source(self, source: LifecycleSource) -> None:
        while True:
            try:
                await source.run(self._on_lifecycle, time.monotonic)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A source bug must not take down what is announced: report, keep the
                # last state (stale_after applies), restart the source.
                log.exception("source_failed source=%s", source.name)
                self._on_lifecycle(SourceLost(source.name, time.monotonic(), f"crashed: {exc}"))
                await asyncio.sleep(5.0)
                continue
            return

    def _on_lifecycle(self, event: LifecycleEvent) -> None:
        if isinstance(event, SourceLost):
            log.warning("source_lost source=%s reason=%s", event.source, quote(event.reason, 200))
        elif isinstance(event, SourceListed):
            status = self.world.sources.get(event.source)
            if status is None or not status.synced or status.lost_since is not None:
                log.info("source_synced source=%s instances=%d", event.source, len(event.instances))
        self.world.apply(event)
        self.metrics.lifecycle(event)
        self.schedule_reconcile()

    async def _watch_config(self, path: Path) -> None:
        changed = asyncio.Event()
        observer = watch(path.parent, asyncio.get_running_loop(), changed)
        try:
            while True:
                await changed.wait()
                await asyncio.sleep(0.05)  # let the editor finish writing
                changed.clear()
                self.reload(path)
        finally:
            observer.stop()

    def reload(self, path: Path) -> None:
        """Apply a valid edit of the configuration; reject an invalid one, changing nothing."""
        try:
            new = load_config(path)
        except ConfigError as exc:
            log.error("config_rejected file=%s error=%s", path, quote(str(exc), 500))
            return
        if new == self.config:
            return
        restart = [k for k in RESTART_SECTIONS if getattr(new, k) != getattr(self.config, k)]
        if restart:
            log.warning(
                "config_needs_restart sections=%s action=kept_running_values", ",".join(restart)
            )
            new = new.model_copy(update={k: getattr(self.config, k) for k in restart})
        self.config = new
        self.policy = to_policy(new)
        self._force_full = True
        log.info("config_reloaded file=%s", path)
        self.schedule_reconcile()


def health_targets(world: World, policy: Policy, now: float) -> list[CheckTarget]:
    """One check per instance that declares one, probed at its first address (its own
    container IP first), from the host through the routed path."""
    targets = []
    for instance in trusted_instances(world, policy, now):
        spec = instance.spec
        if spec is not None and spec.check is not None and instance.ips and not instance.error:
            targets.append(CheckTarget(instance.key, instance.ips[0], spec.check))
    return targets


def build_sources(config: Config) -> list[LifecycleSource]:
    sources: list[LifecycleSource] = []
    if config.files.enabled:
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
    sources: list[LifecycleSource], world: World, timeout: float
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

        task = asyncio.create_task(source.run(emit, time.monotonic))
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
