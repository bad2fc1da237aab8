"""The runtime's operator surface: control socket requests (status, drain, undrain),
SIGTERM drain, and the self-watchdog's heartbeat.

A mixin of :class:`announcer.runtime.Announcer` (split out to keep modules small).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from announcer.drains import DrainRequestError, parse_prefixes
from announcer.events import Drain, DrainMode, DrainsSet
from announcer.model import quote
from announcer.status import status_report

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from announcer.config import Config
    from announcer.core.damping import Damper
    from announcer.core.plan import AnnouncedTable
    from announcer.core.policy import Decision
    from announcer.core.world import World
    from announcer.drains import DrainStore
    from announcer.exabgp.channel import ExaBGPChannel
    from announcer.metrics import Metrics
    from announcer.model import Prefix

log = logging.getLogger("announcer")


class OperatorSurface:
    if TYPE_CHECKING:
        config: Config
        world: World
        table: AnnouncedTable

        @property
        def decisions(self) -> dict[Prefix, Decision]: ...
        @property
        def decided_at(self) -> dict[Prefix, float]: ...

        drains: DrainStore
        metrics: Metrics
        damper: Damper
        channel: ExaBGPChannel
        stats: Any
        held_withdraws: int
        _awaiting_acks: bool
        _stopped: asyncio.Future[int] | None
        _heartbeat: int | None
        _watchdog: subprocess.Popen[bytes] | None

        def reconcile(self) -> None: ...
        def stop(self, code: int, reason: str) -> None: ...
        def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None: ...

    def _drain_mode(self) -> DrainMode:
        return DrainMode(self.config.drain.mode)

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
        self.metrics.events("control")
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
        while (self.channel.in_flight or self._awaiting_acks) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.stop(0, "signal_SIGTERM_drained")
