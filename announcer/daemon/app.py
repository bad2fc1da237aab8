"""The running announcer: one asyncio loop with its timers and signals, composed of its
collaborators (no mixins). Start-up, in this order, so that nothing valid is ever withdrawn
by a restart:

 1. ask ExaBGP its ``version`` (proves the pipe works and acks are on);
 2. subscribe to netlink, then dump the kernel (the world is known);
 3. read ExaBGP's ``show adj-rib out`` (what is announced is known: a respawned announcer
    inherits what the previous one announced);
 4. reconcile once every lifecycle source has listed (the core's sync gate): withdraw what
    is announced but no longer valid, (re-)announce what is valid; ExaBGP sends no UPDATE
    for an identical route, so valid routes never blip.

Then every observation updates the world and schedules a reconcile. Threads exist only in
the ExaBGP channel (its pipe), the metrics HTTP server, the file watcher and the kernel
dump; everything else runs on this loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from announcer.config import Config, ConfigError, load_config, reloaded
from announcer.core.damping import Damper
from announcer.core.decide import next_change
from announcer.core.instances import health_targets, unhealthy_members
from announcer.core.plan import AnnouncedTable
from announcer.core.policy import Decision, Policy
from announcer.core.reconciler import Reconciler
from announcer.core.world import SourceStatus, World
from announcer.daemon.control import ControlServer
from announcer.daemon.convert import to_damping, to_guard, to_policy
from announcer.daemon.drains import DrainStore
from announcer.daemon.feeds import Feeds, FileStamp, build_sources
from announcer.daemon.instruments import hooks_for
from announcer.daemon.operator import Operator
from announcer.daemon.status import status_report
from announcer.daemon.verdicts import Verdicts, plugin_publisher
from announcer.daemon.watchdog import SelfWatchdog
from announcer.events import DrainsSet, Event
from announcer.exabgp.channel import ExaBGPChannel
from announcer.exabgp.sink import ExaBGPSink, SinkHooks, StartupError
from announcer.health.monitor import HealthMonitor
from announcer.health.probes import Probe, run_probe
from announcer.model import Prefix, Reason, quote
from announcer.sources.kernel_sync import KernelFeed, KernelPort
from announcer.sources.lifecycle import LifecycleSource

log = logging.getLogger("announcer")

Clock = Callable[[], float]
COALESCE_MAX_SECONDS = 0.5  # a busy reconcile delays the next by its duration, at most this
COALESCE_FROM_SECONDS = 0.005  # ... when it took longer than this


@dataclass(frozen=True)
class Stats:
    """Counters for ``status`` and the metrics, read from every collaborator."""

    reconciles: int = 0
    resyncs: int = 0
    overruns: int = 0
    commands: int = 0
    failures: int = 0
    last_reconcile_seconds: float = 0.0
    echoed: int = 0
    drift: int = 0
    neighbors: dict[str, str] = field(default_factory=dict)


class Announcer:
    def __init__(
        self,
        config: Config,
        channel: ExaBGPChannel,
        *,
        kernel: KernelPort | None = None,
        sources: list[LifecycleSource] | None = None,
        probe: Probe = run_probe,
        clock: Clock = time.monotonic,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.clock = clock
        self.channel = channel
        self.world = World()
        self.damper = Damper(to_damping(config))
        self.reconciler = Reconciler(to_policy(config), self.damper, to_guard(config), clock())
        self.metrics = hooks_for(config.metrics)
        hooks = SinkHooks(self.schedule_reconcile, self.stop, self.metrics.events)
        self.sink = ExaBGPSink(channel, config.exabgp, hooks, clock)
        self.kernel = KernelFeed(
            kernel or KernelPort(),
            config.kernel.netlink_rcvbuf_bytes,
            self.apply,
            self._kernel_changed,
            self.metrics.events,
        )
        self.sources = build_sources(config) if sources is None else sources
        self.feeds = Feeds(self.world, self.apply, self.schedule_reconcile, self.metrics, clock)
        self.health = HealthMonitor(self.feeds.on_health, probe=self.metrics.timed_probe(probe))
        self.drains = DrainStore(
            Path(config.control.state_directory), Path(config.drain.maintenance_file)
        )
        self.operator = Operator(config.drain, self.drains, self, self.metrics.events, clock)
        self.control = ControlServer(Path(config.control.socket), self.operator.handle)
        self.watchdog = SelfWatchdog(config.exabgp.watchdog_seconds)
        self.config_stamp = FileStamp(config_path) if config_path is not None else None
        self._started = clock()
        self.verdicts = Verdicts(plugin_publisher(config.routed), self._started)
        self.held_withdraws = 0
        self._reconciles = 0
        self._last_reconcile_seconds = 0.0
        self._force_full = True
        self._awaiting_acks = False  # a reconcile is held until ExaBGP answered everything
        self._sync_timeout_logged = False
        self._synced = False  # a step went through the sync gate
        self._reconcile_handle: asyncio.Handle | None = None
        self._deadline_handle: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._lifecycle_deadline: float | None = None
        self._stopped: asyncio.Future[int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- what the collaborators and the metrics read ---

    @property
    def policy(self) -> Policy:
        return self.reconciler.policy

    @property
    def table(self) -> AnnouncedTable:
        return self.sink.table

    @property
    def decisions(self) -> dict[Prefix, Decision]:
        return self.reconciler.decisions

    @property
    def stats(self) -> Stats:
        sink = self.sink.stats
        return Stats(
            self._reconciles, self.kernel.resyncs, self.kernel.overruns, sink.commands,
            sink.failures, self._last_reconcile_seconds, sink.echoed, sink.drift,
            dict(sink.neighbors),
        )  # fmt: skip

    def apply(self, event: Event) -> None:
        """Fold one observation into the world."""
        self.world.apply(event)

    def settled(self) -> bool:
        return not self.channel.in_flight and not self._awaiting_acks

    def status(self) -> dict[str, Any]:
        stats = self.stats
        return status_report(
            self.world, self.decisions, self.table, self.reconciler.decided_at, self.clock(),
            {
                "reconciles": stats.reconciles,
                "commands": stats.commands,
                "failures": stats.failures,
                "resyncs": stats.resyncs,
                "overruns": stats.overruns,
                "damped_suppressions": self.damper.suppressions,
                "in_flight": self.channel.in_flight,
                "held_withdraws": self.held_withdraws,
                "persist_error": self.drains.persist_error,
                "neighbors": stats.neighbors,
                "eor_pending": sorted(map(str, self.sink.eor_pending)),
                "shared_verdicts": self.verdicts.report(),
                "pid": os.getpid(),
            },
        )  # fmt: skip

    # --- lifecycle ---

    async def run(self, signals: bool = True) -> int:
        """Run until stopped; the exit code. ``signals``: handle SIGINT and SIGTERM (only
        possible on the main thread)."""
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        if signals:
            loop.add_signal_handler(signal.SIGINT, self.stop, 0, "signal_SIGINT")
            loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)
        self.channel.start(loop, self.sink.on_message, self._on_eof, self._on_channel_idle)
        self.metrics.serve(self, loop)
        try:
            await self._start()
        except StartupError as exc:
            log.error("startup_failed reason=%s", exc)
            return 1
        tasks = [
            self._every(self.config.kernel.resync_interval_seconds, self.kernel.resync),
            self._every(1.0, self._tick),
            self.health.run(),
            *(self.feeds.run_source(source) for source in self.sources),
        ]
        if self.config.exabgp.verify_interval_seconds:
            tasks.append(self._every(self.config.exabgp.verify_interval_seconds, self._verify))
        running = [asyncio.create_task(task) for task in tasks]
        loop.call_later(self.config.lifecycle.sync_timeout_seconds + 0.01, self.schedule_reconcile)
        try:
            return await self._stopped
        finally:
            for task in running:
                task.cancel()
            self.kernel.close()
            await self.control.close()
            self.channel.close()
            self.metrics.close()
            self.watchdog.close()
            self.verdicts.close()

    def stop(self, code: int, reason: str) -> None:
        if self._stopped is not None and not self._stopped.done():
            log.info("announcer_stopping reason=%s code=%d", reason, code)
            self._stopped.set_result(code)

    async def _start(self) -> None:
        for source in self.sources:  # known before the first reconcile: wait for its listing
            self.world.sources.setdefault(source.name, SourceStatus())
        self.drains.load()
        self.operator.poll_maintenance()
        self.apply(DrainsSet(self.drains.current()))
        try:
            await self.control.start()
        except OSError as exc:  # no control socket is no reason to stop announcing
            log.error("control_socket_failed path=%s error=%s", self.control.path, exc)
        version = await self.sink.ask_version()
        self.watchdog.start()
        self.sink.check_version(version)
        await self.kernel.start()
        await self.sink.read_rib()
        log.info(
            "announcer_started kernel_routes=%d previously_announced=%d",
            self.world.route_count,
            len(self.table.entries),
        )
        self.reconcile()

    async def _every(self, seconds: float, action: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(seconds)
            result = action()
            if asyncio.iscoroutine(result):
                await result

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    # --- reconcile ---

    def schedule_reconcile(self, delay: float = 0.0) -> None:
        if self._reconcile_handle is not None:
            return
        loop = asyncio.get_running_loop()
        # Coalesce: the busier reconciling is, the more events one reconcile absorbs; a
        # quick last reconcile means no delay at all (the loop's timers round up to ~1 ms).
        busy = self._last_reconcile_seconds
        if busy > COALESCE_FROM_SECONDS:
            delay = max(delay, min(busy, COALESCE_MAX_SECONDS))
        if delay:
            self._reconcile_handle = loop.call_later(delay, self.reconcile)
        else:
            self._reconcile_handle = loop.call_soon(self.reconcile)

    def _kernel_changed(self) -> None:
        """A netlink read took everything queued: reconcile in this loop turn (the next costs
        ~0.05 ms), unless one is due or the last was slow (schedule_reconcile coalesces)."""
        if self._reconcile_handle is None and self._last_reconcile_seconds <= COALESCE_FROM_SECONDS:
            self.reconcile()
        else:
            self.schedule_reconcile()

    def reconcile(self) -> None:
        if self._reconcile_handle is not None:
            self._reconcile_handle.cancel()
        self._reconcile_handle = None
        now = self.clock()
        gate = self.reconciler.gate(self.world, self.table, now)
        if not gate.open:
            return  # the world is not known yet: the core's sync gate
        if gate.waiting and not self._sync_timeout_logged:
            log.warning("sources_not_synced sources=%s action=proceed", ",".join(gate.waiting))
            self._sync_timeout_logged = True
        if self.verdicts.wanted(self.world.shared_devices()):  # even while ExaBGP is behind
            pending = self.verdicts.grace_ends(now) is None
            parked = self.verdicts.parked  # out of their groups, so not in the routes: ours
            self.verdicts.update(unhealthy_members(self.world, self.policy, now, pending, parked))
        if self.sink.behind:
            # ExaBGP is behind: changes pile up (marked dirty) and go out grouped once it has
            # answered (render_batches); below the window a change goes at once.
            self._awaiting_acks = True
            return
        self._awaiting_acks = False
        started = time.perf_counter()
        force_full, self._force_full = self._force_full, False
        step = self.reconciler.step(self.world, self.table, now, force_full)
        if step.hold.withdraws:
            self.held_withdraws = len(step.hold.withdraws)
            log.error(
                "mass_withdraw_held withdraws=%d announced=%d sources_lost=%s",
                len(step.hold.withdraws), len(self.table.entries),
                ",".join(step.hold.sources_lost),
            )  # fmt: skip
        # The lines first: a change's latency ends when its line is written.
        self.sink.send(step.commands, self.decisions)
        self.metrics.commands_sent(len(step.commands))
        if step.lifecycle:  # instances, drains, sources: health targets and deadlines
            self.health.set_targets(health_targets(self.world, self.policy, now))
            self._lifecycle_deadline = next_change(self.world, self.policy, now)
        grace = self.verdicts.grace_ends(now) if self.world.shared_devices() else None
        deadlines = (self._lifecycle_deadline, self.damper.next_reuse(now),
                     self.reconciler.weights.due(), grace)  # fmt: skip
        self._schedule_deadline(min((t for t in deadlines if t is not None), default=None), now)
        if step.more:
            self.schedule_reconcile()
        self._synced = True
        self._maybe_eor()
        if not self._reconciles:
            # The initial sync's objects live as long as the process: keep the collector from
            # walking them in every full collection (the churn tail, 52-94 ms at 100k routes).
            gc.freeze()
        self._reconciles += 1
        self._last_reconcile_seconds = time.perf_counter() - started
        self.metrics.reconciled(self._last_reconcile_seconds)

    def full_reconcile(self) -> None:
        self._force_full = True
        self.reconcile()

    def _schedule_deadline(self, when: float | None, now: float) -> None:
        """Reconcile again when a drain ends, a lost source turns stale or a damped prefix
        may be reused."""
        if when == self._deadline and self._deadline_handle is not None:
            return
        self._deadline = when
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
            self._deadline_handle = None
        if when is not None:
            loop = asyncio.get_running_loop()
            self._deadline_handle = loop.call_later(max(0.0, when - now) + 0.001, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_handle = None
        self.full_reconcile()

    def _on_channel_idle(self) -> None:
        """ExaBGP answered everything: run the reconcile that waited for it."""
        if self._awaiting_acks:
            self.schedule_reconcile()
        else:
            self._maybe_eor()

    def _maybe_eor(self) -> None:
        """End-of-RIB (exabgp.manual_eor) once everything desired went out and was
        acknowledged since a neighbor came up: not before the sync gate let a step through,
        not while changes wait to be decided or answered."""
        if not self.sink.eor_pending or self.channel.in_flight or self._awaiting_acks:
            return
        if self._reconcile_handle is not None or self.world.dirty or self.world.dirty_all:
            return
        if not self._synced or self._checks_pending():
            return
        neighbors = self.policy.neighbors
        both = {n.version for n in neighbors} == {4, 6}
        self.sink.send_eor(lambda peer: (peer.version,) if both else (4, 6))

    def _checks_pending(self) -> bool:
        """A route waits for an instance's first health check (it may yet be announced),
        within exabgp.eor_max_hold_seconds of the start: End-of-RIB waits too."""
        if self.clock() >= self._started + self.config.exabgp.eor_max_hold_seconds:
            return False
        return any(d.reason == Reason.CHECK_PENDING for d in self.decisions.values())

    # --- timers ---

    def _tick(self) -> None:
        self.sink.tick()
        self._maybe_eor()  # e.g. the hold for pending checks ran out
        self.watchdog.beat()
        if self.config_stamp is not None and self.config_stamp.changed():
            self.reload(self.config_stamp.path)
        changed = self.operator.poll_maintenance()
        current = self.drains.current()
        if changed or set(current) != set(self.world.drains.values()):
            self.apply(DrainsSet(current))
            self.metrics.events("drain")
            self.schedule_reconcile()

    async def _verify(self) -> None:
        if await self.sink.verify_rib():
            self.full_reconcile()

    # --- configuration and signals ---

    def reload(self, path: Path) -> None:
        """Apply a valid edit of the configuration; reject an invalid one, changing nothing."""
        try:
            edited = load_config(path)
        except ConfigError as exc:
            log.error("config_rejected file=%s error=%s", path, quote(str(exc), 500))
            return
        if edited == self.config:
            return
        new, restart = reloaded(self.config, edited)
        if restart:
            log.warning(
                "config_needs_restart sections=%s action=kept_running_values", ",".join(restart)
            )
        self.config = new
        self.reconciler.policy = to_policy(new)
        self.reconciler.guard = to_guard(new)
        self.sink.config = new.exabgp
        self.sink.rib_check.max_routes = new.exabgp.verify_max_routes
        self.operator.config = new.drain
        self._force_full = True
        log.info("config_reloaded file=%s", path)
        self.schedule_reconcile()

    def _on_sigterm(self) -> None:
        if not self.config.drain.on_sigterm or self._stopped is None or self._stopped.done():
            self.stop(0, "signal_SIGTERM")
            return
        self._spawn(self.operator.drain_and_stop(self.stop))

    def _on_eof(self) -> None:
        self.stop(0, "exabgp_stdin_closed")


def run(config: Config, config_path: Path | None = None) -> int:
    channel = ExaBGPChannel(sys.stdin.buffer, sys.stdout.buffer)
    announcer = Announcer(config, channel, config_path=config_path)
    return asyncio.run(announcer.run())
