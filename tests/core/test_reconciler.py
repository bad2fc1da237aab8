"""Incremental reconciles give exactly what a full recompute gives (hypothesis)."""

from __future__ import annotations

from ipaddress import IPv4Network, ip_network

from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.core.damping import Damper, DampingParams
from announcer.core.decide import decide, desired
from announcer.core.plan import AnnouncedTable, diff
from announcer.core.policy import Policy
from announcer.core.reconciler import Reconciler
from announcer.core.world import World
from announcer.events import (
    IFF_LOWER_UP,
    IFF_UP,
    KernelLink,
    KernelRoute,
    KernelSnapshot,
    LinkChanged,
    RouteAdded,
    RouteRemoved,
)

UP = IFF_UP | IFF_LOWER_UP
LINKS = (KernelLink(2, "vethr1", UP), KernelLink(3, "eth0", UP))
routes = st.builds(
    KernelRoute,
    prefix=st.sampled_from(
        [IPv4Network((0x0A000000 + i, 32)) for i in range(12)]
        + [ip_network("192.168.0.1/32"), ip_network("10.9.0.0/24")]
    ),
    table=st.sampled_from([254, 100]),
    protocol=st.just(3),
    oif=st.sampled_from([2, 3]),
    priority=st.sampled_from([0, 10]),
)
events = st.lists(
    st.one_of(
        routes.map(RouteAdded),
        routes.map(RouteRemoved),
        st.sampled_from(
            [LinkChanged(KernelLink(2, "vethr1", IFF_UP)), LinkChanged(KernelLink(2, "vethr1", UP))]
        ),
    ),
    max_size=6,
)


@given(st.lists(events, min_size=1, max_size=12), st.integers(2, 20))
@settings(max_examples=200, deadline=None)
def test_incremental_steps_equal_full_recomputes(
    batches: list[list[object]], max_routes: int
) -> None:
    policy = Policy(
        interfaces=("vethr*",), allow=(ip_network("10.0.0.0/8"),), max_routes=max_routes
    )
    incremental_world, full_world = World(), World()
    for world in (incremental_world, full_world):
        world.apply(KernelSnapshot((), LINKS, ()))
    reconciler = Reconciler(policy, Damper(DampingParams(enabled=False)))
    table_a, table_b = AnnouncedTable(known=True), AnnouncedTable(known=True)
    for batch in batches:
        for event in batch:
            incremental_world.apply(event)  # type: ignore[arg-type]
            full_world.apply(event)  # type: ignore[arg-type]
        for command in reconciler.step(incremental_world, table_a, 0.0).commands:
            table_a.record(command)
        want = desired(decide(full_world, policy, table_b.entries.keys()).values(), policy)
        for command in diff(want, table_b.entries):
            table_b.record(command)
        assert table_a.entries == table_b.entries
        assert reconciler.decisions == decide(full_world, policy, table_b.entries.keys())


def test_a_route_change_is_decided_alone() -> None:
    policy = Policy(interfaces=("vethr*",), allow=(ip_network("10.0.0.0/8"),))
    world = World()
    world.apply(
        KernelSnapshot(
            tuple(
                KernelRoute(IPv4Network((0x0A000000 + i, 32)), 254, 3, oif=2) for i in range(1000)
            ),
            LINKS,
            (),
        )
    )
    reconciler, table = Reconciler(policy), AnnouncedTable(known=True)
    first = reconciler.step(world, table, 0.0)
    assert first.full
    assert len(first.commands) == 1000
    for command in first.commands:
        table.record(command)
    world.apply(RouteAdded(KernelRoute(ip_network("10.200.0.1/32"), 254, 3, oif=2)))
    second = reconciler.step(world, table, 1.0)
    assert not second.full
    assert list(second.decided) == [ip_network("10.200.0.1/32")]
    assert len(second.commands) == 1


@given(st.lists(events, min_size=1, max_size=12))
@settings(max_examples=200, deadline=None)
def test_the_prefix_index_always_matches_the_routes(batches: list[list[object]]) -> None:
    """by_prefix (what incremental steps read) names each route of a prefix exactly once,
    whatever order routes are added, replaced, removed, or the links change in."""
    world = World()
    world.apply(KernelSnapshot((), LINKS, ()))
    for batch in batches:
        for event in batch:
            world.apply(event)  # type: ignore[arg-type]
            expected: dict[object, list[object]] = {}
            for key, route in world.routes.items():
                expected.setdefault(route.prefix, []).append(key)
            assert {p: sorted(k, key=str) for p, k in world.by_prefix.items()} == {
                p: sorted(k, key=str) for p, k in expected.items()
            }
            assert all(len(set(k)) == len(k) for k in world.by_prefix.values())
