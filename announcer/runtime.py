"""The asyncio loop: the one place with threads, timers and signals.

Start-up, in this order, so that nothing valid is ever withdrawn by a restart:
 1. ask ExaBGP its ``version`` (proves the pipe works and acks are on);
 2. subscribe to netlink, then dump the kernel (the world is known);
 3. read ExaBGP's ``show adj-rib out`` (what is announced is known: a respawned
    announcer inherits what the previous one announced);
 4. reconcile: withdraw what is announced but no longer valid, (re-)announce what is
    valid; ExaBGP sends no UPDATE for an identical route, so valid routes never blip.
Then every netlink event updates the world and schedules a reconcile; a periodic
re-dump (and any netlink overrun) replaces the world with the kernel's truth.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from announcer.config import Config, to_policy
from announcer.control import ControlServer
from announcer.core.damping import Damper, DampingParams
from announcer.core.plan import Announce, AnnouncedTable, Command, Unconfirmed, Withdraw
from announcer.core.policy import Decision, next_change
from announcer.core.reconciler import Reconciler
from announcer.core.world import SourceStatus, World
from announcer.drains import DrainStore
from announcer.events import (
    DrainsSet,
    KernelEvent,
    KernelSnapshot,
)
from announcer.exabgp.channel import ExaBGPChannel, Reply
from announcer.exabgp.commands import (
    SHOW_ADJ_RIB_OUT,
    VERSION,
    ExaBGPShutdown,
    Message,
    NeighborState,
    Text,
    parse_adj_rib_out,
    render,
    render_batches,
)
from announcer.health import HealthMonitor
from announcer.health_checks import run_probe
from announcer.metrics import Metrics
from announcer.model import Announcement, IPAddress, Prefix, quote
from announcer.runtime_kernel import KernelSync
from announcer.runtime_operator import OperatorSurface
from announcer.runtime_sources import SourceFeeds, build_sources, health_targets
from announcer.sources.kernel import NetlinkSubscription, dump_kernel
from announcer.sources.lifecycle import LifecycleSource

log = logging.getLogger("announcer")

LOG_EACH_COMMAND_UP_TO = 50
ECHO_WINDOW = 5.0  # a withdraw this soon after the announce is sent again ...
ECHO_DELAY = 1.0  # ... this much later
SEND_WINDOW = 64  # lines ExaBGP may have unanswered before changes are held and batched
VERIFY_COST_FACTOR = 50  # adj-rib-out checks at least 50x their own duration apart
RETRY_MIN_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


class StartupError(Exception):
    """ExaBGP did not answer as the announcer needs (no acks, no reply)."""


class ChannelDesynced(Exception):
    """ExaBGP stopped acknowledging commands: our view of its RIB can't be trusted."""


class Subscription(Protocol):
    def fileno(self) -> int: ...
    def read(self, max_datagrams: int = 256) -> list[KernelEvent]: ...
    def close(self) -> None: ...


@dataclass
class KernelPort:
    """How the runtime reaches the kernel; tests may pass fakes."""

    dump: Callable[[], KernelSnapshot] = dump_kernel
    subscribe: Callable[[int], Subscription] = NetlinkSubscription


@dataclass
class Stats:
    reconciles: int = 0
    resyncs: int = 0
    overruns: int = 0
    commands: int = 0
    failures: int = 0
    last_reconcile_seconds: float = 0.0
    echoed: int = 0
    drift: int = 0
    neighbors: dict[str, str] = field(default_factory=dict)


class Announcer(KernelSync, OperatorSurface, SourceFeeds):
    def __init__(
        self,
        config: Config,
        stdin: BinaryIO,
        stdout: BinaryIO,
        kernel: KernelPort | None = None,
        sources: list[LifecycleSource] | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.policy = to_policy(config)
        self.kernel = kernel or KernelPort()
        self.sources = build_sources(config) if sources is None else sources
        self._started_at = time.monotonic()
        self._deadline_handle: asyncio.TimerHandle | None = None
        self.damper = Damper(damping_params(config))
        self.reconciler = Reconciler(self.policy, self.damper)
        self._force_full = True
        self.drains = DrainStore(
            Path(config.control.state_directory), Path(config.drain.maintenance_file)
        )
        self.control = ControlServer(Path(config.control.socket), self.handle_control)
        self.metrics = Metrics(config.metrics)
        self.health = HealthMonitor(self._on_health, probe=self.metrics.timed_probe(run_probe))
        self._heartbeat: int | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.held_withdraws = 0
        self._announced_at: dict[Prefix, float] = {}  # for ECHO_WINDOW, pruned by _tick
        self._announces_pruned = 0.0
        self._echo: dict[Command, float] = {}
        self._awaiting_acks = False  # a reconcile is held until ExaBGP answered everything
        self._verify_not_before = 0.0
        self._verify_skip_logged = False
        self.world = World()
        self.table = AnnouncedTable()
        self.stats = Stats()
        self.channel = ExaBGPChannel(
            stdin, stdout, self._on_message, self._on_eof, on_idle=self._on_channel_idle
        )
        self._subscription: Subscription | None = None
        self._stopped: asyncio.Future[int] | None = None
        self._reconcile_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._retry_delay = RETRY_MIN_SECONDS
        self._resyncing = False
        self._resync_again = False
        self._sync_timeout_logged = False
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ---

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        loop.add_signal_handler(signal.SIGINT, self.stop, 0, "signal_SIGINT")
        loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)
        self.channel.start(loop)
        self.metrics.serve(self, loop)
        try:
            await self._start()
        except StartupError as exc:
            log.error("startup_failed reason=%s", exc)
            return 1
        resync_every = self.config.kernel.resync_interval_seconds
        tasks = [
            asyncio.create_task(self._every(resync_every, self.resync)),
            asyncio.create_task(self._every(1.0, self._tick)),
        ]
        tasks.append(asyncio.create_task(self.health.run()))
        for source in self.sources:
            tasks.append(asyncio.create_task(self._run_source(source)))
        if self.config.exabgp.verify_interval_seconds:
            every = self.config.exabgp.verify_interval_seconds
            tasks.append(asyncio.create_task(self._every(every, self.verify_rib)))
        if self.config_path is not None:
            tasks.append(asyncio.create_task(self._watch_config(self.config_path)))
        sync_timeout = self.config.lifecycle.sync_timeout_seconds
        loop.call_later(sync_timeout + 0.01, self.schedule_reconcile)
        try:
            return await self._stopped
        finally:
            for task in tasks:
                task.cancel()
            if self._subscription is not None:
                loop.remove_reader(self._subscription.fileno())
                self._subscription.close()
            await self.control.close()
            self.channel.close()
            self.metrics.close()
            if self._heartbeat is not None:
                os.close(self._heartbeat)  # EOF: the watchdog exits quietly

    def stop(self, code: int, reason: str) -> None:
        if self._stopped is not None and not self._stopped.done():
            log.info("announcer_stopping reason=%s code=%d", reason, code)
            self._stopped.set_result(code)

    async def _start(self) -> None:
        for source in self.sources:  # known before the first reconcile: wait for its listing
            self.world.sources.setdefault(source.name, SourceStatus())
        self.drains.load()
        self.drains.poll_maintenance(self._drain_mode(), self.config.drain.graceful_seconds)
        self.world.apply(DrainsSet(self.drains.current()))
        try:
            await self.control.start()
        except OSError as exc:  # no control socket is no reason to stop announcing
            log.error("control_socket_failed path=%s error=%s", self.control.path, exc)
        timeout = self.config.exabgp.startup_timeout_seconds
        reply = await self._ask(VERSION, timeout)
        self._start_watchdog()
        version = " ".join(reply.lines)
        log.info("exabgp_connected version=%r", version)
        major = version.removeprefix("exabgp ").split(".", 1)[0]
        if major.isdigit() and int(major) != self.config.exabgp.dialect:
            log.warning(
                "exabgp_dialect_mismatch configured=%d running=%r",
                self.config.exabgp.dialect,
                version,
            )
        self._subscription = self.kernel.subscribe(self.config.kernel.netlink_rcvbuf_bytes)
        await self._fresh_world()
        asyncio.get_running_loop().add_reader(self._subscription.fileno(), self._on_netlink)
        reply = await self._ask(SHOW_ADJ_RIB_OUT, timeout)
        entries, unparsed = parse_adj_rib_out(reply.lines)
        for line in unparsed:
            log.warning("exabgp_rib_line_not_understood line=%r", line)
        self.table.load(entries)
        log.info(
            "announcer_started kernel_routes=%d previously_announced=%d",
            len(self.world.routes),
            len(self.table.entries),
        )
        self.reconcile()

    async def _ask(self, line: str, timeout: float) -> Reply:
        try:
            reply = await asyncio.wait_for(self.channel.send(line, query=True), timeout)
        except TimeoutError:
            raise StartupError(
                f"no 'done' from ExaBGP for {line!r} within {timeout:g}s: "
                "is exabgp.api.ack=false? the announcer needs acks"
            ) from None
        if not reply.ok:
            raise StartupError(f"ExaBGP answered 'error' to {line!r}")
        return reply

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
        busy = self.stats.last_reconcile_seconds
        delay = max(delay, min(busy, 0.5) if busy > 0.005 else 0.0)
        if delay:
            self._reconcile_handle = loop.call_later(delay, self.reconcile)
        else:
            self._reconcile_handle = loop.call_soon(self.reconcile)

    def ready(self) -> bool:
        """The world is known: kernel dumped, ExaBGP's RIB read, every source listed once
        (or the sync timeout passed: a source down at start must not block forever)."""
        if not self.world.kernel_synced or not self.table.known:
            return False
        waiting = [name for name, status in self.world.sources.items() if not status.synced]
        if not waiting:
            return True
        if time.monotonic() - self._started_at < self.config.lifecycle.sync_timeout_seconds:
            return False
        if not self._sync_timeout_logged:
            log.warning("sources_not_synced sources=%s action=proceed", ",".join(waiting))
            self._sync_timeout_logged = True
        return True

    def reconcile(self) -> None:
        if self._reconcile_handle is not None:
            self._reconcile_handle.cancel()
        self._reconcile_handle = None
        if not self.ready():
            return
        if self.channel.in_flight >= SEND_WINDOW:
            # ExaBGP is behind: changes that arrive meanwhile pile up (the world only marks
            # them dirty) and go out together once it has answered everything, grouped
            # (render_batches). Below the window a change goes at once, so a steady trickle
            # is not delayed. Without this a burst left one short line per netlink read.
            self._awaiting_acks = True
            return
        self._awaiting_acks = False
        started = time.perf_counter()
        now = time.monotonic()
        force_full, self._force_full = self._force_full, False
        self.reconciler.policy = self.policy
        step = self.reconciler.step(self.world, self.table, now, force_full)
        if step.full:  # instances, drains, health, time: what the next full step depends on
            self.health.set_targets(health_targets(self.world, self.policy, now))
            deadlines = [next_change(self.world, self.policy, now), self.damper.next_reuse(now)]
            self._schedule_deadline(min((t for t in deadlines if t), default=None), now)
        commands = self._guard(step.commands)
        quiet = len(commands) > LOG_EACH_COMMAND_UP_TO
        for line, batch in render_batches(commands):
            self._send(line, batch, quiet)
        self.metrics.commands_sent(len(commands))
        if len(commands) > LOG_EACH_COMMAND_UP_TO:
            announces = sum(isinstance(c, Announce) for c in commands)
            log.info(
                "routes_changed announced=%d withdrawn=%d total_announced=%d",
                announces,
                len(commands) - announces,
                len(self.table.entries),
            )
        self.stats.reconciles += 1
        self.stats.commands += len(commands)
        self.stats.last_reconcile_seconds = time.perf_counter() - started
        self.metrics.reconciled(self.stats.last_reconcile_seconds)

    @property
    def decisions(self) -> dict[Prefix, Decision]:
        return self.reconciler.decisions

    @property
    def decided_at(self) -> dict[Prefix, float]:
        return self.reconciler.decided_at

    def _full_reconcile(self) -> None:
        self._force_full = True
        self.reconcile()

    def _guard(self, commands: list[Command]) -> list[Command]:
        """Hold a mass withdraw while a lifecycle source is silent: our blindness is not
        a reason to take traffic away (withdraws resume when the source is back)."""
        lost = [
            name for name, status in self.world.sources.items() if status.lost_since is not None
        ]
        withdraws = sum(isinstance(c, Withdraw) for c in commands)
        limit = max(
            self.config.guard.min_withdraws,
            self.config.guard.max_withdraw_fraction * len(self.table.entries),
        )
        if not lost or withdraws <= limit:
            return commands
        self.held_withdraws = withdraws
        log.error(
            "mass_withdraw_held withdraws=%d announced=%d sources_lost=%s",
            withdraws, len(self.table.entries), ",".join(lost),
        )  # fmt: skip
        return [c for c in commands if not isinstance(c, Withdraw)]

    def _schedule_deadline(self, when: float | None, now: float) -> None:
        """Reconcile again when a drain ends or a lost source turns stale."""
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
            self._deadline_handle = None
        if when is not None:
            loop = asyncio.get_running_loop()
            self._deadline_handle = loop.call_later(
                max(0.0, when - now) + 0.001, self._full_reconcile
            )

    def _send(self, line: str, commands: list[Command], quiet: bool) -> None:
        """One ExaBGP line for one command, or for a group of them (render_batches)."""
        now = time.monotonic()
        for command in commands:
            self.table.record(command)
            if isinstance(command, Announce):
                self._announced_at[command.prefix] = now
            elif now - self._announced_at.pop(command.prefix, -ECHO_WINDOW) < ECHO_WINDOW:
                # ExaBGP drops a withdraw that arrives while the announce of the same prefix
                # is still pending (not yet in its adj-rib-out), then sends the announce
                # (seen in the soak). Withdraw once more when the announce has gone out.
                self._echo[command] = now + ECHO_DELAY
            if not quiet:
                decision = self.decisions.get(command.prefix)
                reason = decision.reason if decision is not None else "not_observed"
                verb = "route_announced" if isinstance(command, Announce) else "route_withdrawn"
                log.info("%s prefix=%s reason=%s", verb, command.prefix, reason)
        future = self.channel.send(line)
        future.add_done_callback(lambda f: self._on_reply(commands, line, f))

    def _on_channel_idle(self) -> None:
        """ExaBGP answered everything: run the reconcile that waited for it."""
        if self._awaiting_acks:
            self.schedule_reconcile()

    def _on_reply(self, commands: list[Command], line: str, future: asyncio.Future[Reply]) -> None:
        if future.cancelled() or future.result().ok:
            self._retry_delay = RETRY_MIN_SECONDS
            return
        self.stats.failures += 1
        for command in commands:
            self.table.fail(command)
        log.error(
            "exabgp_command_failed command=%s retry_in=%.0fs",
            quote(line, 120),
            self._retry_delay,
        )
        self.schedule_reconcile(self._retry_delay)
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_SECONDS)

    def _verify_due(self, now: float) -> bool:
        """The periodic check runs only while it stays cheap: ExaBGP executes no route
        command while it prints its adj-rib-out, so a table over ``verify_max_routes`` is
        not checked, and checks are spaced by VERIFY_COST_FACTOR times the last one's
        duration (at most ~2 % of ExaBGP's time)."""
        size = len(self.table.entries)
        if size > self.config.exabgp.verify_max_routes:
            if not self._verify_skip_logged:
                log.info(
                    "exabgp_rib_check_skipped routes=%d verify_max_routes=%d",
                    size,
                    self.config.exabgp.verify_max_routes,
                )
                self._verify_skip_logged = True
            return False
        self._verify_skip_logged = False
        return now >= self._verify_not_before

    async def verify_rib(self) -> None:
        """Compare ExaBGP's adj-rib-out with what we think we announced; repair drift.

        Either side may differ briefly for routes still pending inside ExaBGP; marking them
        unconfirmed only costs an idempotent re-announce or re-withdraw."""
        started = time.monotonic()
        if not self._verify_due(started):
            return
        try:
            reply = await asyncio.wait_for(
                self.channel.send(SHOW_ADJ_RIB_OUT, query=True),
                self.config.exabgp.ack_timeout_seconds,
            )
        except TimeoutError:
            return  # the channel watchdog handles a silent ExaBGP
        finally:
            took = time.monotonic() - started
            self._verify_not_before = started + VERIFY_COST_FACTOR * took
        entries, _ = parse_adj_rib_out(reply.lines)
        rib: dict[Prefix, set[IPAddress]] = {}
        for neighbor, prefix in entries:
            rib.setdefault(prefix, set()).add(neighbor)
        drift = list(rib.keys() - self.table.entries.keys())
        drift += [
            p for p, e in self.table.entries.items() if p not in rib and isinstance(e, Announcement)
        ]
        if not drift:
            return
        for prefix in drift:
            self.table.entries[prefix] = Unconfirmed(frozenset(rib.get(prefix, ())))
        self.stats.drift += len(drift)
        log.warning("exabgp_rib_drift prefixes=%d example=%s action=repair", len(drift), drift[0])
        self._full_reconcile()

    def _forget_old_announces(self) -> None:
        """Drop announce times past the echo window (100k of them hold ~10 MB): one O(n)
        pass at most once per window."""
        now = time.monotonic()
        if now - self._announces_pruned < ECHO_WINDOW:
            return
        self._announces_pruned = now
        cutoff = now - ECHO_WINDOW
        self._announced_at = {p: t for p, t in self._announced_at.items() if t > cutoff}

    def _echo_withdraws(self) -> None:
        """Re-send withdraws of prefixes that flapped, if they are still not announced."""
        now = time.monotonic()
        due = [c for c, when in self._echo.items() if when <= now]
        for command in due:
            del self._echo[command]
            if command.prefix not in self.table.entries:
                self.channel.send(render(command))
                self.stats.echoed += 1

    def _tick(self) -> None:
        self._echo_withdraws()
        self._forget_old_announces()
        self._beat()
        self._check_channel()
        changed = self.drains.poll_maintenance(
            self._drain_mode(), self.config.drain.graceful_seconds
        )
        current = self.drains.current()
        if changed or set(current) != set(self.world.drains.values()):
            self.world.apply(DrainsSet(current))
            self.metrics.events("drain")
            self.schedule_reconcile()

    def _check_channel(self) -> None:
        stalled = self.channel.stalled_for()
        if stalled > self.config.exabgp.ack_timeout_seconds:
            log.error(
                "exabgp_not_acknowledging in_flight=%d stalled_seconds=%.1f action=exit_for_resync",
                self.channel.in_flight,
                stalled,
            )
            # Exit: ExaBGP respawns us and the new process starts from its adj-rib-out.
            self.stop(1, "exabgp_not_acknowledging")

    # --- ExaBGP messages ---

    def _on_message(self, message: Message) -> None:
        match message:
            case NeighborState(peer, state, reason):
                self.stats.neighbors[str(peer)] = state
                log.info("neighbor_state peer=%s state=%s reason=%r", peer, state, reason)
                # ExaBGP re-sends its adj-rib-out on "up" by itself (pinned by
                # tests/exabgp), but the lab saw 5.0.15 lose a route announced while the
                # session was being set up: replay everything desired; identical routes
                # cost ExaBGP a parse and send no UPDATE.
                self.metrics.events("exabgp")
                if state == "up" and self.table.known:
                    self.table.unconfirm()
                    self.schedule_reconcile()
            case ExaBGPShutdown():
                self.stop(0, "exabgp_shutdown")
            case Text(text):
                log.debug("exabgp_text line=%r", text)
            case _:
                pass

    def _on_eof(self) -> None:
        self.stop(0, "exabgp_stdin_closed")


def damping_params(config: Config) -> DampingParams:
    d = config.damping
    return DampingParams(
        d.enabled, d.penalty, d.suppress, d.reuse, d.half_life_seconds, d.max_suppress_seconds
    )


def run(config: Config, config_path: Path | None = None) -> int:
    announcer = Announcer(config, sys.stdin.buffer, sys.stdout.buffer, config_path=config_path)
    return asyncio.run(announcer.run())
