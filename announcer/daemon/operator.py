"""The operator's requests: ``announcer status|drain|undrain`` over the control socket, and
the drain on SIGTERM (``drain.on_sigterm``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from announcer.config import DrainConfig
from announcer.daemon.drains import DrainRequestError, DrainStore, parse_prefixes
from announcer.events import Drain, DrainMode, DrainsSet, Event
from announcer.model import quote

log = logging.getLogger("announcer")


class Host(Protocol):
    """What the operator's requests need of the running announcer."""

    def apply(self, event: Event) -> None: ...
    def reconcile(self) -> None: ...
    def status(self) -> dict[str, Any]: ...
    def settled(self) -> bool: ...  # ExaBGP answered everything and nothing is held back


class Operator:
    def __init__(
        self,
        config: DrainConfig,
        drains: DrainStore,
        host: Host,
        observed: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.drains = drains
        self.host = host
        self._observed = observed
        self._clock = clock

    @property
    def mode(self) -> DrainMode:
        return DrainMode(self.config.mode)

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control-socket request; the answer is always a JSON object."""
        command = request.get("command")
        try:
            if command == "status":
                return {"ok": True, **self.host.status()}
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
            mode = DrainMode(request.get("mode") or self.config.mode)
            self.drains.drain(
                prefixes,
                float(for_seconds) if for_seconds else None,
                mode,
                self.config.graceful_seconds,
            )
        else:
            self.drains.undrain(prefixes)
        self.host.apply(DrainsSet(self.drains.current()))
        self._observed("control")
        log.info(
            "%s prefixes=%s", command, "all" if prefixes is None else ",".join(map(str, prefixes))
        )
        self.host.reconcile()
        return {
            "ok": True,
            "persisted": self.drains.persist_error is None,
            "persist_error": self.drains.persist_error,
        }

    def poll_maintenance(self) -> bool:
        """Re-read the maintenance file; True when the drains in force changed."""
        return self.drains.poll_maintenance(self.mode, self.config.graceful_seconds)

    async def drain_and_stop(self, stop: Callable[[int, str], None]) -> None:
        """drain.on_sigterm: take every route out of rotation, wait for ExaBGP, then exit."""
        mode = self.mode
        graceful = self.config.graceful_seconds if mode is DrainMode.GRACEFUL else 0.0
        now = self._clock()
        self.host.apply(DrainsSet((Drain(None, now, None, mode, graceful, "sigterm"),)))
        log.info("sigterm_drain mode=%s graceful_seconds=%g", mode.value, graceful)
        self.host.reconcile()
        if graceful:
            await asyncio.sleep(graceful)  # peers move traffic off while we still announce
            self.host.reconcile()
        deadline = self._clock() + self.config.sigterm_wait_seconds
        while not self.host.settled() and self._clock() < deadline:
            await asyncio.sleep(0.02)
        stop(0, "signal_SIGTERM_drained")
