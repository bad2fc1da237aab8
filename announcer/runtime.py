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
import contextlib
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

from announcer.config import Config, ConfigError, load_config, to_policy
from announcer.control import ControlServer
from announcer.core.damping import Damper, DampingParams
from announcer.core.plan import Announce, AnnouncedTable, Command, Withdraw, diff
from announcer.core.policy import Decision, Policy, decide, desired, next_change, trusted_instances
from announcer.core.world import SourceStatus, World
from announcer.drains import DrainRequestError, DrainStore, parse_prefixes
from announcer.events import (
    Drain,
    DrainMode,
    DrainsSet,
    HealthObserved,
    KernelEvent,
    KernelSnapshot,
    LifecycleEvent,
    SourceListed,
    SourceLost,
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
)
from announcer.health import CheckTarget, HealthChanged, HealthMonitor
from announcer.model import Prefix, quote
from announcer.sources.files import FilesSource, watch
from announcer.sources.kernel import NetlinkSubscription, Overrun, dump_kernel
from announcer.sources.lifecycle import LifecycleSource
from announcer.status import status_report

log = logging.getLogger("announcer")

LOG_EACH_COMMAND_UP_TO = 50
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
    neighbors: dict[str, str] = field(default_factory=dict)


class Announcer:
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
        self.drains = DrainStore(
            Path(config.control.state_directory), Path(config.drain.maintenance_file)
        )
        self.control = ControlServer(Path(config.control.socket), self.handle_control)
        self.decided_at: dict[Prefix, float] = {}
        self.health = HealthMonitor(self._on_health)
        self._heartbeat: int | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.held_withdraws = 0
        self.world = World()
        self.table = AnnouncedTable()
        self.decisions: dict[Prefix, Decision] = {}
        self.stats = Stats()
        self.channel = ExaBGPChannel(stdin, stdout, self._on_message, self._on_eof)
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

    # --- kernel ---

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

    # --- reconcile ---

    def schedule_reconcile(self, delay: float = 0.0) -> None:
        if self._reconcile_handle is not None:
            return
        loop = asyncio.get_running_loop()
        # Coalesce: the busier reconciling is, the more events one reconcile absorbs.
        delay = max(delay, min(self.stats.last_reconcile_seconds, 0.5))
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
        started = time.perf_counter()
        now = time.monotonic()
        self.health.set_targets(health_targets(self.world, self.policy, now))
        decisions = decide(self.world, self.policy, self.table.entries.keys(), now)
        decisions = self.damper.apply(decisions, now)
        self._track_changes(decisions, now)
        self.decisions = decisions
        deadlines = [
            t for t in (next_change(self.world, self.policy, now), self.damper.next_reuse(now)) if t
        ]
        self._schedule_deadline(min(deadlines, default=None), now)
        want = desired(self.decisions.values(), self.policy)
        commands = self._guard(diff(want, self.table.entries, may_withdraw=True))
        for command in commands:
            self._send(command, quiet=len(commands) > LOG_EACH_COMMAND_UP_TO)
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

    def _track_changes(self, decisions: dict[Prefix, Decision], now: float) -> None:
        for prefix, decision in decisions.items():
            before = self.decisions.get(prefix)
            if before is None or (before.announce, before.reason) != (
                decision.announce,
                decision.reason,
            ):
                self.decided_at[prefix] = now
        for prefix in self.decided_at.keys() - decisions.keys():
            del self.decided_at[prefix]

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
            self._deadline_handle = loop.call_later(max(0.0, when - now) + 0.001, self.reconcile)

    def _send(self, command: Command, quiet: bool) -> None:
        line = render(command)
        self.table.record(command)
        future = self.channel.send(line)
        future.add_done_callback(lambda f: self._on_reply(command, line, f))
        if not quiet:
            decision = self.decisions.get(command.prefix)
            reason = decision.reason if decision is not None else "not_observed"
            verb = "route_announced" if isinstance(command, Announce) else "route_withdrawn"
            log.info("%s prefix=%s reason=%s", verb, command.prefix, reason)

    def _on_reply(self, command: Command, line: str, future: asyncio.Future[Reply]) -> None:
        if future.cancelled() or future.result().ok:
            self._retry_delay = RETRY_MIN_SECONDS
            return
        self.stats.failures += 1
        self.table.fail(command)
        log.error("exabgp_command_failed command=%r retry_in=%.0fs", line, self._retry_delay)
        self.schedule_reconcile(self._retry_delay)
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_SECONDS)

    def _start_watchdog(self) -> None:
        """A child that ends ExaBGP if our heartbeats stop (announcer/watchdog.py)."""
        timeout = self.config.exabgp.watchdog_seconds
        if not timeout:
            return
        read_end, self._heartbeat = os.pipe()
        os.set_blocking(self._heartbeat, False)
        argv = [sys.executable, "-m", "announcer.watchdog", "--target", str(os.getppid())]
        self._watchdog = subprocess.Popen(
            [*argv, "--timeout", str(timeout)], stdin=read_end, stdout=subprocess.DEVNULL
        )
        os.close(read_end)
        log.info("watchdog_started pid=%d timeout=%gs", self._watchdog.pid, timeout)

    def _beat(self) -> None:
        if self._heartbeat is not None:
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(self._heartbeat, b".")

    def _tick(self) -> None:
        self._beat()
        self._check_channel()
        changed = self.drains.poll_maintenance(
            self._drain_mode(), self.config.drain.graceful_seconds
        )
        current = self.drains.current()
        if changed or set(current) != set(self.world.drains.values()):
            self.world.apply(DrainsSet(current))
            self.schedule_reconcile()

    def _drain_mode(self) -> DrainMode:
        return DrainMode(self.config.drain.mode)

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

    # --- control socket, drain, SIGTERM ---

    def handle_control(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        try:
            if command == "status":
                return {"ok": True, **self.status()}
            if command in ("drain", "undrain"):
                return self._drain_request(command, request)
        except (DrainRequestError, TypeError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown command {quote(str(command))}"}

    def _drain_request(self, command: str, request: dict[str, Any]) -> dict[str, Any]:
        everything = bool(request.get("all"))
        prefixes = None if everything else parse_prefixes(request.get("prefixes") or [])
        if not everything and not prefixes:
            raise DrainRequestError("name prefixes or all")
        if command == "drain":
            for_seconds = request.get("for_seconds")
            mode = DrainMode(request.get("mode") or self.config.drain.mode)
            self.drains.drain(
                prefixes, float(for_seconds) if for_seconds else None, mode,
                self.config.drain.graceful_seconds,
            )  # fmt: skip
        else:
            self.drains.undrain(prefixes)
        self.world.apply(DrainsSet(self.drains.current()))
        log.info(
            "%s prefixes=%s", command, "all" if prefixes is None else ",".join(map(str, prefixes))
        )
        self.reconcile()
        return {
            "ok": True,
            "persisted": self.drains.persist_error is None,
            "persist_error": self.drains.persist_error,
        }

    def status(self) -> dict[str, Any]:
        return status_report(
            self.world,
            self.decisions,
            self.table,
            self.decided_at,
            time.monotonic(),
            {
                "reconciles": self.stats.reconciles,
                "commands": self.stats.commands,
                "failures": self.stats.failures,
                "resyncs": self.stats.resyncs,
                "overruns": self.stats.overruns,
                "damped_suppressions": self.damper.suppressions,
                "in_flight": self.channel.in_flight,
                "held_withdraws": self.held_withdraws,
                "persist_error": self.drains.persist_error,
                "neighbors": dict(self.stats.neighbors),
            },
        )

    def _on_sigterm(self) -> None:
        if not self.config.drain.on_sigterm or self._stopped is None or self._stopped.done():
            self.stop(0, "signal_SIGTERM")
            return
        self._spawn(self._drain_and_stop())

    async def _drain_and_stop(self) -> None:
        """drain.on_sigterm: take every route out of rotation, wait for ExaBGP, then exit."""
        mode = self._drain_mode()
        graceful = self.config.drain.graceful_seconds if mode is DrainMode.GRACEFUL else 0.0
        now = time.monotonic()
        self.world.apply(DrainsSet((Drain(None, now, None, mode, graceful, "sigterm"),)))
        log.info("sigterm_drain mode=%s graceful_seconds=%g", mode.value, graceful)
        self.reconcile()
        if graceful:
            await asyncio.sleep(graceful)  # peers move traffic off while we still announce
            self.reconcile()
        deadline = time.monotonic() + self.config.drain.sigterm_wait_seconds
        while self.channel.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.stop(0, "signal_SIGTERM_drained")

    # --- lifecycle sources, health and configuration ---

    def _on_health(self, event: HealthChanged) -> None:
        log.info(
            "health_changed key=%s:%s healthy=%s detail=%s", *event.key, event.healthy, event.detail
        )
        self.world.apply(HealthObserved(event.key, event.healthy, event.detail))
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
        log.info("config_reloaded file=%s", path)
        self.schedule_reconcile()

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


def health_targets(world: World, policy: Policy, now: float) -> list[CheckTarget]:
    """One check per instance that declares one, probed at its first address (its own
    container IP first), from the host through the routed path."""
    targets = []
    for instance in trusted_instances(world, policy, now):
        spec = instance.spec
        if spec is not None and spec.check is not None and instance.ips and not instance.error:
            targets.append(CheckTarget(instance.key, instance.ips[0], spec.check))
    return targets


# Sections whose change needs a restart; the rest (policy, exabgp, lifecycle) apply live.
RESTART_SECTIONS = ("kernel", "docker", "marathon", "files", "control", "damping")


def damping_params(config: Config) -> DampingParams:
    d = config.damping
    return DampingParams(
        d.enabled, d.penalty, d.suppress, d.reuse, d.half_life_seconds, d.max_suppress_seconds
    )


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


def run(config: Config, config_path: Path | None = None) -> int:
    announcer = Announcer(config, sys.stdin.buffer, sys.stdout.buffer, config_path=config_path)
    return asyncio.run(announcer.run())


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
