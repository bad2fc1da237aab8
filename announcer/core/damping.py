"""Per-prefix flap damping (RFC 2439 semantics, container-sized defaults). Pure.

Each withdraw of a prefix adds ``penalty``; the penalty decays exponentially with
``half_life``. Above ``suppress`` the prefix is *suppressed*: it is not announced again
until the penalty falls below ``reuse`` (or ``max_suppress`` has passed). Damping only ever
withholds an announce: a withdraw is never delayed, so the first withdraw of a dying
instance always goes out at once.

Bounded work: a heap orders the remembered prefixes by when their penalty will have
decayed below 1 % of one flap (then they are forgotten), another orders the suppressed ones
by when they may be reused; each step looks only at the heads. Entries are checked against
the current state when they come up (a penalty that grew is pushed again, later).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Set
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


def wanted(decision: Decision | None) -> bool:
    """Whether a decision wanted the prefix announced (a damped one did, and was held)."""
    return decision is not None and (decision.announce or decision.reason is Reason.DAMPED)


@dataclass
class Damper:
    params: DampingParams = field(default_factory=DampingParams)
    flaps: dict[Prefix, _Flaps] = field(default_factory=dict)
    suppressions: int = 0
    _forget: list[tuple[float, Prefix]] = field(default_factory=list)  # (when, prefix)
    _reuse: list[tuple[float, Prefix]] = field(default_factory=list)  # (earliest reuse, prefix)

    def penalty(self, prefix: Prefix, now: float) -> float:
        state = self.flaps.get(prefix)
        if state is None:
            return 0.0
        elapsed = max(0.0, now - state.updated)
        return state.penalty * math.pow(2.0, -elapsed / self.params.half_life)

    def _decayed_below(self, state: _Flaps, level: float) -> float:
        """When the penalty of ``state`` falls below ``level``."""
        if state.penalty <= level:
            return state.updated
        return state.updated + self.params.half_life * math.log2(state.penalty / level)

    def _reuse_at(self, state: _Flaps) -> float:
        assert state.suppressed_since is not None
        released = self._decayed_below(state, self.params.reuse)
        return min(released, state.suppressed_since + self.params.max_suppress)

    def _withdrawn(self, prefix: Prefix, now: float) -> None:
        state = self.flaps.get(prefix)
        if state is None:
            state = self.flaps[prefix] = _Flaps()
        state.penalty = self.penalty(prefix, now) + self.params.penalty
        state.updated = now
        forget = self._decayed_below(state, self.params.penalty / 100)
        heapq.heappush(self._forget, (forget, prefix))
        if state.suppressed_since is None and state.penalty > self.params.suppress:
            state.suppressed_since = now
            self.suppressions += 1
        if state.suppressed_since is not None:
            heapq.heappush(self._reuse, (self._reuse_at(state), prefix))

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
        self,
        decisions: dict[Prefix, Decision],
        now: float,
        previous: Mapping[Prefix, Decision],
        scope: Set[Prefix] | None = None,
    ) -> dict[Prefix, Decision]:
        """Record flaps against the ``previous`` decisions (what this returned last time);
        withhold announces of suppressed prefixes: ``decisions`` is changed in place and
        returned.

        ``scope``: only these prefixes changed (the rest of ``decisions`` is not looked at,
        and a prefix of the scope missing from ``decisions`` is gone)."""
        if not self.params.enabled:
            return decisions
        items = (
            decisions.items()
            if scope is None
            else [(p, decisions[p]) for p in scope if p in decisions]
        )
        for prefix, decision in items:
            if wanted(previous.get(prefix)) and not decision.announce:
                self._withdrawn(prefix, now)
            if decision.announce and self.flaps and self.suppressed(prefix, now):
                decisions[prefix] = replace(decision, announce=False, reason=Reason.DAMPED)
        gone = (previous.keys() if scope is None else scope & previous.keys()) - decisions.keys()
        for prefix in gone:  # gone from the world: a withdraw
            if wanted(previous[prefix]):
                self._withdrawn(prefix, now)
        self._forget_settled(now)
        return decisions

    def next_reuse(self, now: float) -> float | None:
        """When the earliest suppressed prefix becomes usable again."""
        while self._reuse:
            when, prefix = self._reuse[0]
            state = self.flaps.get(prefix)
            if state is None or state.suppressed_since is None:
                heapq.heappop(self._reuse)  # released already
                continue
            actual = self._reuse_at(state)
            if actual > when:  # it flapped again since: later
                heapq.heapreplace(self._reuse, (actual, prefix))
                continue
            if when <= now and not self.suppressed(prefix, now):
                heapq.heappop(self._reuse)  # due: released now (whatever it is decided)
                continue
            return max(now, when)
        return None

    def _forget_settled(self, now: float) -> None:
        """Forget prefixes whose penalty is below 1 % of one flap and that are not
        suppressed (bounded memory under churn); only the heap's due head is looked at."""
        floor = self.params.penalty / 100
        while self._forget and self._forget[0][0] <= now:
            _, prefix = heapq.heappop(self._forget)
            state = self.flaps.get(prefix)
            if state is None:
                continue
            due = self._decayed_below(state, floor)
            if due > now:  # flapped again since: that withdraw pushed a later entry
                continue
            if self.suppressed(prefix, now):  # (this releases it once it may be reused)
                heapq.heappush(self._forget, (now + self.params.half_life, prefix))
                continue
            del self.flaps[prefix]
