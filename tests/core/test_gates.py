"""The safety gates, on the path production takes (Reconciler.step), with hypothesis:
nothing is sent before the world is known; a mass withdraw is held while a source is lost,
and a held prefix says so."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.core.damping import Damper, DampingParams
from announcer.core.gates import Guard, hold_mass_withdraw, sync_gate
from announcer.core.plan import AnnouncedTable, Withdraw
from announcer.core.policy import Policy
from announcer.core.reconciler import Reconciler
from announcer.core.world import SourceStatus, World
from announcer.events import (
    IFF_LOWER_UP,
    IFF_UP,
    Instance,
    InstanceState,
    KernelLink,
    KernelRoute,
    KernelSnapshot,
    SourceListed,
    SourceLost,
)
from announcer.model import Advert, Prefix, Reason

UP = IFF_UP | IFF_LOWER_UP
LINKS = (KernelLink(2, "vethr1", UP),)
PREFIXES = [Prefix.make(4, 0x0A000000 + i, 32) for i in range(40)]
POLICY = Policy(interfaces=("vethr*",), allow=(Prefix("10.0.0.0/8"),))
GUARD = Guard(sync_timeout=30.0, max_withdraw_fraction=0.5, min_withdraws=3)


def world_with(routes: list[IPv4Network], sources: dict[str, SourceStatus]) -> World:
    world = World()
    world.apply(KernelSnapshot(tuple(KernelRoute(p, 254, 3, oif=2) for p in routes), LINKS, ()))
    world.sources.update(sources)
    return world


subsets = st.sets(st.sampled_from(PREFIXES), max_size=len(PREFIXES)).map(sorted)
statuses = st.dictionaries(
    st.sampled_from(["docker", "marathon", "files"]),
    st.builds(SourceStatus, synced=st.booleans()),
    max_size=3,
)


@given(subsets, subsets, statuses, st.floats(0, 29.99))
@settings(max_examples=200, deadline=None)
def test_nothing_is_sent_before_every_source_listed_once(
    kernel: list[IPv4Network],
    rib: list[IPv4Network],
    sources: dict[str, SourceStatus],
    elapsed: float,
) -> None:
    world = world_with(kernel, sources)
    table = AnnouncedTable()
    table.load([(IPv4Address("10.99.0.1"), p) for p in rib])  # a respawn: ExaBGP's adj-rib-out
    reconciler = Reconciler(POLICY, Damper(DampingParams(enabled=False)), GUARD, started=100.0)
    step = reconciler.step(world, table, 100.0 + elapsed)
    waiting = {name for name, status in sources.items() if not status.synced}
    if waiting:
        assert not step.gate.open
        assert step.commands == []
        assert world.dirty_all  # what happened meanwhile is decided once the gate opens
    else:
        assert step.gate.open
        assert {c.prefix for c in step.commands if isinstance(c, Withdraw)} == set(rib) - set(
            kernel
        )


@given(subsets, statuses)
@settings(max_examples=50, deadline=None)
def test_a_silent_source_does_not_block_forever(
    kernel: list[IPv4Network], sources: dict[str, SourceStatus]
) -> None:
    world = world_with(kernel, sources)
    table = AnnouncedTable(known=True)
    reconciler = Reconciler(POLICY, Damper(DampingParams(enabled=False)), GUARD, started=100.0)
    step = reconciler.step(world, table, 130.0)
    assert step.gate.open
    assert set(step.gate.waiting) == {n for n, s in sources.items() if not s.synced}
    assert {c.prefix for c in step.commands} == set(kernel)


def test_the_gate_stays_shut_until_the_kernel_and_exabgp_are_known() -> None:
    world = World()
    assert not sync_gate(world, True, 0.0, 1e9, GUARD).open  # the kernel not dumped yet
    world.apply(KernelSnapshot((), LINKS, ()))
    assert not sync_gate(world, False, 0.0, 1e9, GUARD).open  # ExaBGP's RIB not read yet
    assert sync_gate(world, True, 0.0, 0.0, GUARD).open


@given(subsets, subsets, st.booleans())
@settings(max_examples=200, deadline=None)
def test_a_mass_withdraw_is_held_while_a_source_is_lost_and_the_held_say_so(
    kernel: list[IPv4Network], announced: list[IPv4Network], lost: bool
) -> None:
    world = world_with(kernel, {"docker": SourceStatus(synced=True)})
    if lost:
        world.apply(SourceLost("docker", 50.0, "connection refused"))
    table = AnnouncedTable(known=True)
    for prefix in announced:
        table.entries[prefix] = Advert()
    reconciler = Reconciler(POLICY, Damper(DampingParams(enabled=False)), GUARD, started=0.0)
    step = reconciler.step(world, table, 60.0)
    gone = set(announced) - set(kernel)
    limit = max(GUARD.min_withdraws, GUARD.max_withdraw_fraction * len(announced))
    sent = {c.prefix for c in step.commands if isinstance(c, Withdraw)}
    if lost and len(gone) > limit:
        assert sent == set()
        assert {w.prefix for w in step.hold.withdraws} == gone
        assert step.hold.sources_lost == ("docker",)
        for prefix in gone:
            decision = reconciler.decisions.get(prefix)
            assert decision is None or decision.reason is Reason.WITHDRAW_HELD
    else:
        assert sent == gone
        assert step.hold.withdraws == ()
    # announces are never held
    assert {c.prefix for c in step.commands if not isinstance(c, Withdraw)} == set(kernel) - set(
        announced
    )


def test_withdraws_resume_when_the_lost_source_lists_again() -> None:
    announced = PREFIXES[:10]
    instance = Instance(
        "docker", "c1", "web", InstanceState.SERVING, ips=(announced[0].network_address,)
    )
    world = world_with(announced[:1], {"docker": SourceStatus(synced=True)})
    world.apply(SourceLost("docker", 50.0, "gone"))
    table = AnnouncedTable(known=True)
    for prefix in announced:
        table.entries[prefix] = Advert()
    reconciler = Reconciler(POLICY, Damper(DampingParams(enabled=False)), GUARD, started=0.0)
    held = reconciler.step(world, table, 60.0)
    assert held.commands == []
    assert len(held.hold.withdraws) == 9
    assert reconciler.decisions[announced[1]].reason is Reason.WITHDRAW_HELD  # status shows it
    world.apply(SourceListed("docker", (instance,)))
    resumed = reconciler.step(world, table, 61.0)
    assert {c.prefix for c in resumed.commands} == set(announced[1:])
    assert resumed.hold.withdraws == ()


def test_hold_is_a_pure_function_of_commands_world_and_size() -> None:
    world = world_with([], {"files": SourceStatus(synced=True, lost_since=1.0)})
    withdraws = [Withdraw(p) for p in PREFIXES[:4]]
    sent, hold = hold_mass_withdraw(list(withdraws), world, announced=4, guard=GUARD)
    assert sent == []
    assert hold.withdraws == tuple(withdraws)
    sent, hold = hold_mass_withdraw(list(withdraws[:3]), world, announced=4, guard=GUARD)
    assert sent == withdraws[:3]
    assert hold.withdraws == ()
