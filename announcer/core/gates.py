"""The two safety gates between the decisions and ExaBGP. Pure: ``now`` is passed in.

1. **Sync gate.** Nothing is sent, so nothing is withdrawn, before the world is known: the
   kernel dumped, ExaBGP's adj-rib-out read, and every lifecycle source listed once. A
   source still silent after ``sync_timeout`` seconds does not block forever: the gate
   opens and names it (a source down at start must not keep every route out).
2. **Mass-withdraw hold.** While a lifecycle source is lost, a plan that withdraws more
   than ``max(min_withdraws, max_withdraw_fraction * announced)`` prefixes is held: our
   blindness is no reason to take traffic away. The announces go; the withdraws wait until
   the source is back (its listing makes the next step a full one).
"""

from __future__ import annotations

from dataclasses import dataclass

from announcer.core.plan import Command, Withdraw
from announcer.core.world import World


@dataclass(frozen=True, slots=True)
class Guard:
    """The gates' settings (config ``lifecycle.sync_timeout_seconds`` and ``guard``)."""

    sync_timeout: float = 30.0
    max_withdraw_fraction: float = 0.5
    min_withdraws: int = 10


@dataclass(frozen=True, slots=True)
class SyncGate:
    open: bool
    waiting: tuple[str, ...] = ()  # lifecycle sources not listed yet (open: past the timeout)


def sync_gate(world: World, rib_known: bool, started: float, now: float, guard: Guard) -> SyncGate:
    """Whether a step may send anything yet, and which sources it still waits for."""
    if not world.kernel_synced or not rib_known:
        return SyncGate(False)
    waiting = tuple(name for name, status in world.sources.items() if not status.synced)
    return SyncGate(not waiting or now - started >= guard.sync_timeout, waiting)


@dataclass(frozen=True, slots=True)
class Hold:
    """What the mass-withdraw hold kept back, and the lost sources it held them for."""

    withdraws: tuple[Withdraw, ...] = ()
    sources_lost: tuple[str, ...] = ()


def hold_mass_withdraw(
    commands: list[Command], world: World, announced: int, guard: Guard
) -> tuple[list[Command], Hold]:
    """The commands to send now, and what is held (nothing while every source answers)."""
    lost = tuple(name for name, status in world.sources.items() if status.lost_since is not None)
    if not lost:
        return commands, Hold()
    withdraws = tuple(c for c in commands if isinstance(c, Withdraw))
    limit = max(guard.min_withdraws, guard.max_withdraw_fraction * announced)
    if len(withdraws) <= limit:
        return commands, Hold()
    return [c for c in commands if not isinstance(c, Withdraw)], Hold(withdraws, lost)
