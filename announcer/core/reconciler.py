"""One reconcile step, incremental when it can be: O(changes), not O(table). Pure.

Route events mark only their prefix dirty (World.take_dirty). When nothing else changed,
only those prefixes are decided again, damped, diffed. Anything that can touch any prefix
(a snapshot, a link, an address, an instance, a drain, a health verdict, a deadline, a
policy change), or a ``max_routes`` cut that may move, makes the step a full one. A
hypothesis property (tests/core/test_reconciler.py) proves both give the same commands.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field

from announcer.core.damping import Damper
from announcer.core.plan import AnnouncedEntry, AnnouncedTable, Command, diff
from announcer.core.policy import Decision, Policy, decide, desired
from announcer.core.world import World
from announcer.model import Prefix


@dataclass(frozen=True, slots=True)
class Step:
    commands: list[Command]
    decided: dict[Prefix, Decision]  # what this step (re)decided
    full: bool


@dataclass
class Reconciler:
    policy: Policy
    damper: Damper = field(default_factory=Damper)
    decisions: dict[Prefix, Decision] = field(default_factory=dict)
    decided_at: dict[Prefix, float] = field(default_factory=dict)  # when each last changed
    capped: bool = False  # some prefix is withheld by max_routes: any change may move the cut

    def step(
        self, world: World, table: AnnouncedTable, now: float, force_full: bool = False
    ) -> Step:
        everything, dirty = world.take_dirty()
        full = (
            everything
            or force_full
            or self.capped
            or len(table.entries) + len(dirty) > self.policy.max_routes
        )
        if full:
            return self._full(world, table, now)
        fresh = decide(world, self.policy, table.entries.keys(), now, only=dirty)
        fresh = self.damper.apply(fresh, now, scope=dirty)
        self._track(fresh, dirty, now)
        for prefix in dirty:
            if prefix in fresh:
                self.decisions[prefix] = fresh[prefix]
            else:
                self.decisions.pop(prefix, None)
        announced = {p: e for p in dirty if (e := table.entries.get(p)) is not None}
        return Step(self._diff(fresh, announced), fresh, full=False)

    def _full(self, world: World, table: AnnouncedTable, now: float) -> Step:
        fresh = decide(world, self.policy, table.entries.keys(), now)
        fresh = self.damper.apply(fresh, now)
        self._track(fresh, fresh.keys() | self.decisions.keys(), now)
        self.decisions = fresh
        self.capped = any(d.reason == "max_routes_exceeded" for d in fresh.values())
        return Step(self._diff(fresh, table.entries), fresh, full=True)

    def _diff(
        self, decisions: dict[Prefix, Decision], announced: dict[Prefix, AnnouncedEntry]
    ) -> list[Command]:
        return diff(desired(decisions.values(), self.policy), announced, may_withdraw=True)

    def _track(self, fresh: dict[Prefix, Decision], scope: Set[Prefix], now: float) -> None:
        for prefix in scope:
            new, old = fresh.get(prefix), self.decisions.get(prefix)
            if new is None:
                self.decided_at.pop(prefix, None)
            elif old is None or (old.announce, old.reason) != (new.announce, new.reason):
                self.decided_at[prefix] = now
