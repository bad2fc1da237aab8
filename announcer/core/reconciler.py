"""One reconcile step: gates, decisions, damping, diff. Incremental when it can be. Pure.

This is the path production takes from the world to the commands for ExaBGP, and the one
the hypothesis properties exercise (tests/core/test_reconciler.py, test_gates.py):

1. the sync gate (:mod:`announcer.core.gates`): nothing at all before the world is known;
2. decide (kernel rules, instance rules, ``max_routes``, drains), then damping;
3. diff against what ExaBGP was told;
4. the mass-withdraw hold; a held prefix's decision says ``withdraw_held``.

Every observation marks the prefixes it may change dirty (World.take_dirty): a route its
prefix; an instance, a health verdict or a drain the prefixes it claims or names. Only
those are decided again, damped, diffed: O(changes), not O(table). What can touch any
prefix (a snapshot, a link, an address, a drain of everything, a deadline, a policy
change), or a ``max_routes`` cut that may move, makes the step a full one. Held withdraws
are looked at again on every step. A property proves both give the same commands.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field, replace

from announcer.core.damping import Damper
from announcer.core.decide import decide, desired
from announcer.core.gates import Guard, Hold, SyncGate, hold_mass_withdraw, sync_gate
from announcer.core.plan import AnnouncedEntry, AnnouncedTable, Command, diff
from announcer.core.policy import Decision, Policy
from announcer.core.weighting import WeightLimiter
from announcer.core.world import World
from announcer.model import Prefix, Reason

CHUNK = 4096  # prefixes an incremental step decides at most; the rest stay dirty for the next
OPEN = SyncGate(True)
NOTHING_HELD = Hold()


@dataclass(frozen=True, slots=True)
class Step:
    commands: list[Command]
    decided: dict[Prefix, Decision]  # what this step (re)decided
    full: bool
    gate: SyncGate = OPEN
    hold: Hold = NOTHING_HELD
    lifecycle: bool = False  # instances, sources or drains changed (or a full step)
    more: bool = False  # prefixes left dirty for the next step (a burst is decided in chunks)


def _any_lost(world: World) -> bool:
    return any(status.lost_since is not None for status in world.sources.values())


@dataclass
class Reconciler:
    policy: Policy
    damper: Damper = field(default_factory=Damper)
    guard: Guard = field(default_factory=Guard)
    started: float = 0.0  # when the sync gate's timeout began (the announcer's start)
    decisions: dict[Prefix, Decision] = field(default_factory=dict)
    decided_at: dict[Prefix, float] = field(default_factory=dict)  # when each last changed
    capped: bool = False  # some prefix is withheld by max_routes: any change may move the cut
    held: set[Prefix] = field(default_factory=set)  # withdraws the hold keeps back
    chunk: int = CHUNK
    weights: WeightLimiter = field(default_factory=WeightLimiter)

    def gate(self, world: World, table: AnnouncedTable, now: float) -> SyncGate:
        return sync_gate(world, table.known, self.started, now, self.guard)

    def step(
        self, world: World, table: AnnouncedTable, now: float, force_full: bool = False
    ) -> Step:
        gate = self.gate(world, table, now)
        if not gate.open:
            return Step([], {}, full=False, gate=gate)  # changes stay dirty for later
        everything, dirty = world.take_dirty()
        lifecycle = world.take_lifecycle_changed()
        dirty |= self.held
        dirty |= self.weights.waiting.keys()
        full = (
            everything
            or force_full
            or self.capped
            or len(table.entries) + len(dirty) > self.policy.max_routes
        )
        more = False
        if not full and len(dirty) > self.chunk and not _any_lost(world):
            # A burst in chunks: bounded memory and loop turns. Not while a source is lost:
            # the mass-withdraw hold must see every withdraw of the burst at once.
            chunk = {dirty.pop() for _ in range(self.chunk)}
            # The rest, for the next step: the same set handed back, not copied (a burst's
            # dirty set is 4 MB at 100k prefixes, and a copy was the step's memory peak).
            dirty |= world.dirty  # (empty: nothing observes between take_dirty and here)
            world.dirty = dirty
            dirty, more = chunk, True
        if full:
            fresh = decide(world, self.policy, table.entries.keys(), now)
            fresh = self.damper.apply(fresh, now, self.decisions)
            self.capped = any(d.reason is Reason.MAX_ROUTES_EXCEEDED for d in fresh.values())
            announced: dict[Prefix, AnnouncedEntry] = table.entries
            scope: Set[Prefix] = fresh.keys() | self.decisions.keys()
        else:
            fresh = decide(world, self.policy, table.entries.keys(), now, only=dirty)
            fresh = self.damper.apply(fresh, now, self.decisions, scope=dirty)
            announced = {p: e for p in dirty if (e := table.entries.get(p)) is not None}
            scope = dirty
        want = desired(fresh.items(), self.policy)
        if self.policy.weights is not None:
            self.weights.min_interval = self.policy.weights.min_interval
            self.weights.limit(want, announced, now)
        commands = diff(want, announced)
        commands, hold = hold_mass_withdraw(commands, world, len(table.entries), self.guard)
        self.held = {withdraw.prefix for withdraw in hold.withdraws}
        for withdraw in hold.withdraws:  # a held prefix is still announced: say why
            held = fresh.get(withdraw.prefix)
            fresh[withdraw.prefix] = (
                Decision(False, Reason.WITHDRAW_HELD)
                if held is None
                else replace(held, reason=Reason.WITHDRAW_HELD)
            )
        self._track(fresh, scope | fresh.keys(), now)
        if full:
            self.decisions = fresh
        else:
            for prefix in dirty:
                if prefix in fresh:
                    self.decisions[prefix] = fresh[prefix]
                else:
                    self.decisions.pop(prefix, None)
        return Step(commands, fresh, full, gate, hold, lifecycle or full, more)

    def _track(self, fresh: dict[Prefix, Decision], scope: Set[Prefix], now: float) -> None:
        for prefix in scope:
            new, old = fresh.get(prefix), self.decisions.get(prefix)
            if new is None:
                self.decided_at.pop(prefix, None)
            elif old is None or (old.announce, old.reason) != (new.announce, new.reason):
                self.decided_at[prefix] = now
