"""`announcer restart-stack` against a scripted daemon: the order of its steps, that it waits
for the new announcer (not the old one's answers), and that it stops with a clear error."""

from __future__ import annotations

from typing import Any

import pytest

from announcer.daemon.restart import RestartError, Stack
from announcer.testing import FakeClock


class Daemon:
    """The control socket of an announcer whose state the test scripts."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.pid = 100
        self.drained = False
        self.announced = True
        self.neighbors = {"10.99.0.1": "up"}
        self.pending_check = False
        self.eor_pending: list[str] = []
        self.down_until = 0.0  # the socket is gone while restarting
        self.log: list[str] = []

    def ask(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.clock() < self.down_until:
            raise ConnectionRefusedError("no announcer")
        command = payload["command"]
        if command != "status":
            self.log.append(command)
        if command == "drain":
            self.drained, self.announced = True, False
            return {"ok": True}
        if command == "undrain":
            self.drained, self.announced = False, True
            return {"ok": True}
        reason = (
            "check_pending" if self.pending_check else ("drained" if self.drained else "host_route")
        )
        return {
            "ok": True,
            "decisions": [
                {"prefix": "10.200.0.1/32", "announce": not self.drained and not self.pending_check,
                 "announced": self.announced, "reason": reason}
            ],
            "sources": {"files": "synced"},
            "stats": {"in_flight": 0, "neighbors": dict(self.neighbors), "pid": self.pid,
                      "eor_pending": self.eor_pending},
        }  # fmt: skip

    def restart(self, graceful: bool) -> None:
        self.log.append("restart")
        self.pid += 1
        self.down_until = self.clock() + 2.0
        self.neighbors = {"10.99.0.1": "connected"}
        self.pending_check = True
        if graceful:
            self.eor_pending = ["10.99.0.1"]


def stack(daemon: Daemon, clock: FakeClock, graceful: bool = False, **kw: Any) -> Stack:
    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if daemon.pid > 100 and clock() > daemon.down_until + 1.0:  # the new one settles
            daemon.neighbors = {"10.99.0.1": "up"}
            daemon.pending_check = False
            daemon.eor_pending = []

    return Stack(daemon.ask, lambda: daemon.restart(graceful), clock, sleep, **kw)


def test_drain_restart_rejoin_in_that_order() -> None:
    clock = FakeClock(0.0)
    daemon = Daemon(clock)
    steps = stack(daemon, clock).run("drain")
    assert daemon.log == ["drain", "restart", "undrain"]
    assert [name for name, _ in steps.timeline] == [
        "drain_requested", "drained", "restarted", "ready", "rejoined",
    ]  # fmt: skip
    times = dict(steps.timeline)
    assert times["ready"] >= times["restarted"] + 3.0  # waited for the new one to settle
    assert daemon.announced


def test_graceful_restarts_at_once_and_waits_for_end_of_rib() -> None:
    clock = FakeClock(0.0)
    daemon = Daemon(clock)
    steps = stack(daemon, clock, graceful=True).run("graceful")
    assert daemon.log == ["restart"]
    times = dict(steps.timeline)
    assert times["rejoined"] >= times["restarted"] + 3.0  # not the old announcer's answer


def test_a_step_that_never_completes_says_which() -> None:
    clock = FakeClock(0.0)
    daemon = Daemon(clock)
    never = Stack(daemon.ask, lambda: daemon.restart(False), clock, clock.advance, timeout=10.0)
    with pytest.raises(RestartError, match="waiting for the new announcer up, synced"):
        never.run("drain")  # the new one never settles: its check stays pending


def test_rejoined_waits_for_first_health_checks_too() -> None:
    """A route whose check has not decided is not 'missing' (not announce), but the host
    is not back in rotation until the check passes: rejoined waits for it."""
    clock = FakeClock(0.0)
    daemon = Daemon(clock)

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if daemon.pid > 100 and clock() > daemon.down_until + 1.0:
            daemon.neighbors = {"10.99.0.1": "up"}  # sessions up, End-of-RIB sent...
            daemon.eor_pending = []
        if daemon.pid > 100 and clock() > daemon.down_until + 6.0:
            daemon.pending_check = False  # ...the first check decides 5 s later

    steps = Stack(daemon.ask, lambda: daemon.restart(True), clock, sleep).run("graceful")
    times = dict(steps.timeline)
    assert times["rejoined"] >= times["restarted"] + 8.0
