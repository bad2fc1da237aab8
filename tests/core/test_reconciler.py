"""Incremental reconciles give exactly what a full recompute gives (hypothesis)."""

from __future__ import annotations

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
    LinkRemoved,
    RouteAdded,
    RouteRemoved,
)
from announcer.model import Prefix

UP = IFF_UP | IFF_LOWER_UP
LINKS = (KernelLink(2, "vethr1", UP), KernelLink(3, "eth0", UP))
routes = st.builds(
    KernelRoute,
    prefix=st.sampled_from(
        [Prefix.make(4, 0x0A000000 + i, 32) for i in range(12)]
        + [Prefix("192.168.0.1/32"), Prefix("10.9.0.0/24")]
    ),
    table=st.sampled_from([254, 100]),
    protocol=st.just(3),
    oif=st.sampled_from([2, 3]),
    priority=st.sampled_from([0, 10]),
    nexthops=st.sampled_from([(), ((2, None), (4, None)), ((4, None),)]),
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


@given(st.lists(events, min_size=1, max_size=12), st.integers(2, 20), st.sampled_from([1, 2, 4096]))
@settings(max_examples=300, deadline=None)
def test_incremental_steps_equal_full_recomputes(
    batches: list[list[object]], max_routes: int, chunk: int
) -> None:
    """Whatever the events, the table after the incremental steps (decided in chunks of
    ``chunk`` prefixes, stepping until nothing is left) is the table a full recompute gives."""
    policy = Policy(interfaces=("vethr*",), allow=(Prefix("10.0.0.0/8"),), max_routes=max_routes)
    incremental_world, full_world = World(), World()
    for world in (incremental_world, full_world):
        world.apply(KernelSnapshot((), LINKS, ()))
    reconciler = Reconciler(policy, Damper(DampingParams(enabled=False)), chunk=chunk)
    table_a, table_b = AnnouncedTable(known=True), AnnouncedTable(known=True)
    for batch in batches:
        for event in batch:
            incremental_world.apply(event)  # type: ignore[arg-type]
            full_world.apply(event)  # type: ignore[arg-type]
        more = True
        while more:
            step = reconciler.step(incremental_world, table_a, 0.0)
            for command in step.commands:
                table_a.record(command)
            more = step.more
        want = desired(decide(full_world, policy, table_b.entries.keys()).items(), policy)
        for command in diff(want, table_b.entries):
            table_b.record(command)
        assert table_a.entries == table_b.entries
        assert reconciler.decisions == decide(full_world, policy, table_b.entries.keys())


def test_a_route_change_is_decided_alone() -> None:
    policy = Policy(interfaces=("vethr*",), allow=(Prefix("10.0.0.0/8"),))
    world = World()
    world.apply(
        KernelSnapshot(
            tuple(
                KernelRoute(Prefix.make(4, 0x0A000000 + i, 32), 254, 3, oif=2) for i in range(1000)
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
    world.apply(RouteAdded(KernelRoute(Prefix("10.200.0.1/32"), 254, 3, oif=2)))
    second = reconciler.step(world, table, 1.0)
    assert not second.full
    assert list(second.decided) == [Prefix("10.200.0.1/32")]
    assert len(second.commands) == 1


@given(st.lists(events, min_size=1, max_size=12))
@settings(max_examples=200, deadline=None)
def test_the_compact_route_store_always_matches_a_plain_model(batches: list[list[object]]) -> None:
    """World keeps routes per prefix as shared Vias; after any sequence of adds, replaces,
    removes and link changes it holds exactly the routes a plain (prefix, table, priority)
    map holds, counts them right, and equal Vias are one object."""
    world = World()
    world.apply(KernelSnapshot((), LINKS, ()))
    model: dict[tuple[object, int, int], KernelRoute] = {}
    for batch in batches:
        for event in batch:
            world.apply(event)  # type: ignore[arg-type]
            if isinstance(event, RouteAdded):
                model[(event.route.prefix, event.route.table, event.route.priority)] = event.route
            elif isinstance(event, RouteRemoved):
                model.pop((event.route.prefix, event.route.table, event.route.priority), None)
            stored = {(p, v.table, v.priority): (p, v) for p, v in world.all_routes()}
            assert stored == {k: (r.prefix, r.via) for k, r in model.items()}
            assert world.route_count == len(model)
            vias = [v for _, v in world.all_routes()]
            assert all(a is b for a in vias for b in vias if a == b)
            shared = {oif for v in vias for oif, _ in v.nexthops}
            assert world.shared_devices() == shared


@given(st.lists(routes, max_size=20), st.lists(routes, max_size=20))
@settings(max_examples=200, deadline=None)
def test_a_resync_marks_exactly_what_differs(
    before: list[KernelRoute], after: list[KernelRoute]
) -> None:
    """A periodic dump that finds the kernel as the world knows it decides nothing again;
    one that differs marks exactly the prefixes whose routes differ."""
    world = World()
    world.apply(KernelSnapshot(tuple(before), LINKS, ()))
    world.take_dirty()
    world.apply(KernelSnapshot(tuple(after), LINKS, ()))
    everything, dirty = world.take_dirty()
    assert not everything

    def routes_by_prefix(rs: list[KernelRoute]) -> dict[object, set[object]]:
        by: dict[object, dict[object, object]] = {}
        for r in rs:
            by.setdefault(r.prefix, {})[(r.table, r.priority)] = r.via
        return {p: set(v.values()) for p, v in by.items()}

    old, new = routes_by_prefix(before), routes_by_prefix(after)
    assert dirty == {p for p in old.keys() | new.keys() if old.get(p) != new.get(p)}
    world.apply(KernelSnapshot(tuple(after), (KernelLink(2, "vethr1", IFF_UP), LINKS[1]), ()))
    assert world.take_dirty()[0]  # a link changed: anything may


@given(
    st.lists(st.one_of(routes.map(RouteAdded), routes.map(RouteRemoved), st.just(LinkRemoved(4))))
)
@settings(max_examples=200, deadline=None)
def test_shared_devices_are_kept_exact(events_: list[object]) -> None:
    """The devices of multipath routes, kept as routes come, go and shrink with a removed
    link, are always what a walk of the table finds."""
    world = World()
    world.apply(KernelSnapshot((), LINKS, ()))
    for event in events_:
        world.apply(event)  # type: ignore[arg-type]
        walked = {oif for _, v in world.all_routes() for oif, _ in v.nexthops}
        assert world.shared_devices() == walked
