"""Per-prefix flap damping (RFC 2439 semantics, container-sized defaults). Pure.

Each withdraw of a prefix adds ``penalty``; the penalty decays exponentially with
``half_life``. Above ``suppress`` the prefix is *suppressed*: it is not announced again
until the penalty falls below ``reuse`` (or ``max_suppress`` has passed). Damping only ever
withholds an announce: a withdraw is never delayed, so the first withdraw of a dying
instance always goes out at once.
"""

from __future__ import annotations

import math
from collections.abc import Set
from dataclasses import dataclass, field, replace

from announcer.core.policy import Decision
from announcer.model import Prefix, Reason


@dataclass(frozen=True, slots=True)
class DampingParams:
    enabled: bool = True
    penalty: float = 1000.0
    suppress: float = 2500.0
    reuse: float = 750.0
    half_life: float = 60.0
    max_suppress: float = 600.0


@dataclass(slots=True)
class _Flaps:
    penalty: float = 0.0
    updated: float = 0.0
    suppressed_since: float | None = None


@dataclass
class Damper:
    params: DampingParams = field(default_factory=DampingParams)
    wanted: dict[Prefix, bool] = field(default_factory=dict)  # last decision per prefix
    flaps: dict[Prefix, _Flaps] = field(default_factory=dict)
    suppressions: int = 0
    swept: float = float("-inf")  # last _forget_settled: at most once per second

    def penalty(self, prefix: Prefix, now: float) -> float:
        state = self.flaps.get(prefix)
        if state is None:
            return 0.0
        elapsed = max(0.0, now - state.updated)
        return state.penalty * math.pow(2.0, -elapsed / self.params.half_life)

    def _withdrawn(self, prefix: Prefix, now: float) -> None:
        state = self.flaps.setdefault(prefix, _Flaps())
        state.penalty = self.penalty(prefix, now) + self.params.penalty
        state.updated = now
        if state.suppressed_since is None and state.penalty > self.params.suppress:
            state.suppressed_since = now
            self.suppressions += 1

    def suppressed(self, prefix: Prefix, now: float) -> bool:
        state = self.flaps.get(prefix)
        if state is None or state.suppressed_since is None:
            return False
        released = self.penalty(prefix, now) < self.params.reuse
        if released or now - state.suppressed_since >= self.params.max_suppress:
            state.suppressed_since = None
            return False
        return True

    def apply(
        self, decisions: dict[Prefix, Decision], now: float, scope: Set[Prefix] | None = None
    ) -> dict[Prefix, Decision]:
        """Record flaps from these decisions; withhold announces of suppressed prefixes.

        ``scope``: only these prefixes changed (the rest of ``decisions`` is not looked at,
        and a prefix of the scope missing from ``decisions`` is gone)."""
        if not self.params.enabled:
            return decisions
        result = dict(decisions)
        items = (
            decisions.items()
            if scope is None
            else [(p, decisions[p]) for p in scope if p in decisions]
        )
        for prefix, decision in items:
            if self.wanted.get(prefix) and not decision.announce:
                self._withdrawn(prefix, now)
            self.wanted[prefix] = decision.announce
            if decision.announce and self.suppressed(prefix, now):
                result[prefix] = replace(decision, announce=False, reason=Reason.DAMPED)
        candidates = self.wanted.keys() if scope is None else scope & self.wanted.keys()
        for prefix in candidates - decisions.keys():  # gone from the world: a withdraw
            if self.wanted.pop(prefix):
                self._withdrawn(prefix, now)
        self._forget_settled(now)
        return result

    def next_reuse(self, now: float) -> float | None:
        """When the earliest suppressed prefix becomes usable again."""
        times = []
        for prefix, state in self.flaps.items():
            if state.suppressed_since is None:
                continue
            current = self.penalty(prefix, now)
            wait = 0.0
            if current > self.params.reuse:
                wait = self.params.half_life * math.log2(current / self.params.reuse)
            cap = state.suppressed_since + self.params.max_suppress
            times.append(min(now + max(wait, 0.0), cap))
        return min(times, default=None)

    def _forget_settled(self, now: float) -> None:
        # Penalties below 1 % of one flap, not suppressed: forget (bounded memory under churn).
        # The sweep walks every remembered prefix: once a second, not on every step (the
        # bench measured 98 ms per event with 100k remembered withdrawals).
        if now - self.swept < 1.0:
            return
        self.swept = now
        floor = self.params.penalty / 100
        settled = [
            p for p, s in self.flaps.items()
            if s.suppressed_since is None and self.penalty(p, now) < floor
        ]  # fmt: skip
        for prefix in settled:
            del self.flaps[prefix]
