"""``announcer restart-stack``: restart ExaBGP and the announcer without losing traffic.

Two ways, both driven over the control socket (docs/operations.md, "Upgrading the host
stack"):

- ``drain`` (default; works with any fabric): drain every prefix (gracefully: 65535:0, then
  withdrawn), wait until ExaBGP has acknowledged the withdraws and the fabric had
  ``settle`` seconds to move traffic; restart; the new announcer starts drained (drains
  persist); once its neighbors are up, its sources listed and no check is still pending,
  undrain; done when every prefix it decides to announce is announced and acknowledged.
- ``graceful`` (BGP graceful restart: ExaBGP's ``graceful-restart`` + ``manual-eor true``,
  ``exabgp.manual_eor``): restart at once; the leaf keeps the routes as stale meanwhile; done
  when the new announcer has re-announced everything and sent End-of-RIB to every neighbor.

The procedure is a function of what it is given (how to ask the daemon, how to restart,
the clock and the sleep), so tests run it against a scripted daemon.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Ask = Callable[[dict[str, Any]], dict[str, Any]]  # one control request -> its answer

# A decision that means "not ready yet": a check that has not decided (it will, in seconds).
NOT_READY = ("check_pending",)


class RestartError(Exception):
    """A step did not complete in time; the message says which and what was seen."""


@dataclass
class Steps:
    """What happened when, in seconds since the start (printed as the result)."""

    mode: str
    timeline: list[tuple[str, float]] = field(default_factory=list)

    def mark(self, step: str, at: float) -> None:
        self.timeline.append((step, round(at, 3)))


@dataclass
class Stack:
    ask: Ask  # talk to the announcer (raises ControlError while it is not there)
    restart: Callable[[], None]  # restart ExaBGP and the announcer (e.g. systemctl restart)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    timeout: float = 120.0  # for each wait
    settle: float = 1.0  # after the withdraws are acknowledged, before the restart
    poll: float = 0.2

    def run(self, mode: str) -> Steps:
        steps, started = Steps(mode), self.clock()
        before = self._status("the announcer answers")["stats"].get("pid")
        if mode == "drain":
            self._request({"command": "drain", "all": True, "mode": "graceful"})
            steps.mark("drain_requested", self.clock() - started)
            self._wait("every prefix withdrawn and acknowledged", _drained)
            self.sleep(self.settle)
            steps.mark("drained", self.clock() - started)
        self.restart()
        steps.mark("restarted", self.clock() - started)
        self._wait("a new announcer", lambda status: status["stats"].get("pid") != before)
        if mode == "drain":
            self._wait("the new announcer up, synced, its checks decided", _ready_drained)
            steps.mark("ready", self.clock() - started)
            self._request({"command": "undrain", "all": True})
        self._wait("every prefix to announce announced and acknowledged", _rejoined)
        steps.mark("rejoined", self.clock() - started)
        return steps

    def _status(self, what: str) -> dict[str, Any]:
        return self._wait(what, lambda _status: True)

    def _request(self, payload: dict[str, Any]) -> dict[str, Any]:
        answer = self.ask(payload)
        if not answer.get("ok"):
            raise RestartError(f"{payload['command']} refused: {answer.get('error')}")
        return answer

    def _wait(self, what: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = self.clock() + self.timeout
        last: object = "no answer"
        while True:
            try:
                status = self.ask({"command": "status"})
            except Exception as exc:  # restarting: the socket comes back with the announcer
                last = exc
            else:
                last = status.get("stats", status)
                if status.get("ok") and done(status):
                    return status
            if self.clock() > deadline:
                raise RestartError(f"timed out after {self.timeout:g}s waiting for {what}; {last}")
            self.sleep(self.poll)


def _settled(status: dict[str, Any]) -> bool:
    return int(status["stats"].get("in_flight", 0)) == 0


def _drained(status: dict[str, Any]) -> bool:
    rows = status["decisions"]
    return _settled(status) and not any(row["announced"] for row in rows)


def _ready_drained(status: dict[str, Any]) -> bool:
    stats = status["stats"]
    neighbors = stats.get("neighbors") or {}
    up = bool(neighbors) and all(state == "up" for state in neighbors.values())
    synced = all(state.startswith("synced") for state in status["sources"].values())
    pending = any(row["reason"] in NOT_READY for row in status["decisions"])
    return up and synced and not pending and _settled(status)


def _rejoined(status: dict[str, Any]) -> bool:
    stats = status["stats"]
    neighbors = stats.get("neighbors") or {}
    up = bool(neighbors) and all(state == "up" for state in neighbors.values())
    missing = [r for r in status["decisions"] if r["announce"] and not r["announced"]]
    # a route whose check has not decided yet is not missing, but the host is not back
    # until it has: it may still become one to announce
    pending = any(r["reason"] in NOT_READY for r in status["decisions"])
    return up and not missing and not pending and not stats.get("eor_pending") and _settled(status)
