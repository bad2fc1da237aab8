"""Weighted anycast in the core: the prefix's weight is the sum of its serving local
instances' weights, slow start ramps it, a failing instance takes its share away, deprefer
keeps a last resort, and weight changes are rate-limited (issue 16)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from ipaddress import ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.core.decide import decide, desired, next_change
from announcer.core.plan import Announce, AnnouncedTable, Withdraw
from announcer.core.policy import Policy, Weights
from announcer.core.reconciler import Reconciler
from announcer.core.weighting import WeightLimiter
from announcer.core.world import World
from announcer.events import (
    IFF_LOWER_UP,
    IFF_UP,
    HealthObserved,
    Instance,
    InstanceChanged,
    InstanceState,
    KernelLink,
    KernelRoute,
    KernelSnapshot,
    LinkRemoved,
)
from announcer.model import Advert, Attributes, LinkBandwidth, Prefix, Reason
from announcer.spec.checks import CheckSpec
from announcer.spec.labels import ServiceSpec

ANYCAST = Prefix("10.200.0.1/32")
UNIT = 125_000
WEIGHTS = Weights(unit=UNIT, asn=65101, min_interval=5.0, slow_start_steps=4)
POLICY = Policy(
    interfaces=("vethr*",), allow=(Prefix("10.0.0.0/8"),), local_as=65101, weights=WEIGHTS
)
CHECK = CheckSpec("tcp", port=80)


def fabric(instances: int = 3) -> World:
    """One anycast IP served by several local instances: a multipath host route."""
    w = World()
    links = tuple(KernelLink(i, f"vethr{i}", IFF_UP | IFF_LOWER_UP) for i in range(1, 10))
    hops = tuple((i, None) for i in range(1, instances + 1))
    route = KernelRoute(ANYCAST, 254, 180, nexthops=hops)
    w.apply(KernelSnapshot((route,), links, ()))
    return w


def instance(n: int, weight: int = 1, **spec: object) -> Instance:
    ss = ServiceSpec(ips=(ip_address("10.200.0.1"),), weight=weight, **spec)  # type: ignore[arg-type]
    return Instance("docker", f"i{n}", f"web-{n}", InstanceState.SERVING, 0.0, ss.ips, ss)


def weight_of(w: World, now: float = 100.0, policy: Policy = POLICY) -> int:
    return decide(w, policy, now=now)[ANYCAST].weight


def test_the_weight_is_the_sum_of_the_serving_local_instances() -> None:
    w = fabric()
    for n, weight in enumerate((1, 2, 3), start=1):
        w.apply(InstanceChanged(instance(n, weight)))
    decision = decide(w, POLICY, now=100.0)[ANYCAST]
    assert (decision.announce, decision.reason, decision.weight) == (True, Reason.HOST_ROUTE, 6)
    advert = desired([(ANYCAST, decision)], POLICY)[ANYCAST]
    assert advert.attributes.link_bandwidth == LinkBandwidth(65101, 6 * UNIT, transitive=True)


def test_a_failing_instance_takes_its_share_away_and_the_last_one_withdraws() -> None:
    w = fabric()
    for n, weight in enumerate((1, 2, 3), start=1):
        w.apply(InstanceChanged(instance(n, weight, check=CHECK)))
        w.apply(HealthObserved(("docker", f"i{n}"), True, "ok", at=0.0))
    assert weight_of(w) == 6
    w.apply(HealthObserved(("docker", "i3"), False, "refused", at=50.0))
    assert weight_of(w) == 3
    w.apply(HealthObserved(("docker", "i1"), False, "refused", at=50.0))
    w.apply(HealthObserved(("docker", "i2"), False, "refused", at=50.0))
    decision = decide(w, POLICY, now=100.0)[ANYCAST]
    assert (decision.announce, decision.reason) == (False, Reason.CHECK_FAILING)


def test_without_weights_nothing_changes_on_the_wire() -> None:
    w = fabric()
    for n, weight in enumerate((1, 2, 3), start=1):
        w.apply(InstanceChanged(instance(n, weight)))
    plain = replace(POLICY, weights=None)
    decision = decide(w, plain, now=100.0)[ANYCAST]
    assert decision.weight == 0
    assert desired([(ANYCAST, decision)], plain)[ANYCAST] == Advert()


def test_deprefer_keeps_a_last_resort_with_a_longer_path_and_minimal_weight() -> None:
    w = fabric(2)
    for n in (1, 2):
        w.apply(InstanceChanged(instance(n, 5, check=CHECK, unhealthy="deprefer")))
        w.apply(HealthObserved(("docker", f"i{n}"), False, "refused", at=0.0))
    decision = decide(w, POLICY, now=100.0)[ANYCAST]
    assert decision.announce
    assert decision.reason == Reason.UNHEALTHY_DEPREFERRED
    assert decision.weight == 1
    advert = desired([(ANYCAST, decision)], POLICY)[ANYCAST]
    assert advert.attributes.as_path == (65101,) * 4  # ours, then 3 more
    assert advert.attributes.link_bandwidth == LinkBandwidth(65101, UNIT)
    # one healthy again: back to normal, its own weight only
    w.apply(HealthObserved(("docker", "i1"), True, "ok", at=100.0))
    decision = decide(w, POLICY, now=200.0)[ANYCAST]
    assert (decision.reason, decision.weight, decision.deprefer) == (Reason.HOST_ROUTE, 5, False)
    # stopping instances are not a last resort: withdrawn
    for n in (1, 2):
        stopping = replace(
            instance(n, 5, check=CHECK, unhealthy="deprefer"), state=InstanceState.STOPPING
        )
        w.apply(InstanceChanged(stopping))
    assert not decide(w, POLICY, now=300.0)[ANYCAST].announce


def test_deprefer_needs_our_as_to_prepend() -> None:
    w = fabric(1)
    w.apply(InstanceChanged(instance(1, check=CHECK, unhealthy="deprefer")))
    decision = decide(w, replace(POLICY, local_as=None), now=100.0)[ANYCAST]
    assert (decision.announce, decision.reason) == (False, Reason.LABEL_INVALID)


def test_slow_start_ramps_the_weight_in_steps_and_says_when_the_next_one_is() -> None:
    w = fabric(2)
    w.apply(InstanceChanged(instance(1, 8)))
    w.apply(InstanceChanged(replace(instance(2, 8, slow_start_seconds=40.0), since=100.0)))
    ramp = [weight_of(w, now) for now in (100.0, 109.9, 110.0, 120.0, 130.0, 140.0, 500.0)]
    assert ramp == [8 + 2, 8 + 2, 8 + 4, 8 + 6, 8 + 8, 8 + 8, 8 + 8]
    assert next_change(w, POLICY, 100.0) == 110.0
    assert next_change(w, POLICY, 125.0) == 130.0
    assert next_change(w, POLICY, 140.0) is None


def test_slow_start_counts_from_the_passing_check() -> None:
    w = fabric(1)
    w.apply(InstanceChanged(instance(1, 4, check=CHECK, slow_start_seconds=40.0)))
    w.apply(HealthObserved(("docker", "i1"), True, "ok", at=300.0))
    assert weight_of(w, 300.0) == 1
    assert weight_of(w, 340.0) == 4


def test_weight_changes_are_rate_limited_but_nothing_else_is() -> None:
    limiter = WeightLimiter(min_interval=5.0)
    one, two = (
        Advert(attributes=Attributes(link_bandwidth=LinkBandwidth(1, n * UNIT))) for n in (1, 2)
    )
    want = {ANYCAST: two}
    limiter.limit(want, {ANYCAST: one}, now=100.0)
    assert want == {ANYCAST: two}  # the first change goes
    want = {ANYCAST: one}
    limiter.limit(want, {ANYCAST: two}, now=102.0)
    assert want == {ANYCAST: two}  # the next waits ...
    assert limiter.due() == 105.0
    want = {ANYCAST: one}
    limiter.limit(want, {ANYCAST: two}, now=105.0)
    assert want == {ANYCAST: one}  # ... until min_interval passed
    other = Advert(attributes=Attributes(med=7, link_bandwidth=LinkBandwidth(1, UNIT)))
    want = {ANYCAST: other}
    limiter.limit(want, {ANYCAST: one}, now=105.5)
    assert want == {ANYCAST: other}  # another attribute changed too: goes at once


def test_a_flapping_instance_sends_at_most_one_weight_update_per_interval() -> None:
    w = fabric()
    for n in (1, 2, 3):
        w.apply(InstanceChanged(instance(n, 1, check=CHECK)))
        w.apply(HealthObserved(("docker", f"i{n}"), True, "ok", at=0.0))
    reconciler, table = Reconciler(POLICY), AnnouncedTable(known=True)
    sent: list[tuple[float, object]] = []
    for step in range(40):  # instance 3 flaps every 0.5 s for 20 s
        now = 100.0 + step * 0.5
        w.apply(HealthObserved(("docker", "i3"), step % 2 == 1, "", at=now))
        for command in reconciler.step(w, table, now).commands:
            table.record(command)
            sent.append((now, command))
    updates = [t for t, c in sent if isinstance(c, Announce)]
    assert not any(isinstance(c, Withdraw) for _, c in sent)  # two instances always serve
    gaps = [b - a for a, b in itertools.pairwise(updates[1:])]  # after the first announce
    assert all(gap >= 5.0 for gap in gaps), updates
    assert len(updates) <= 1 + 20 / 5 + 1


@given(
    st.lists(st.tuples(st.integers(1, 20), st.booleans(), st.booleans()), min_size=1, max_size=8)
)
@settings(max_examples=200, deadline=None)
def test_the_weight_is_always_the_sum_of_the_live_instances(
    spec: list[tuple[int, bool, bool]],
) -> None:
    w = fabric(len(spec))
    for n, (weight, checked, healthy) in enumerate(spec, start=1):
        w.apply(InstanceChanged(instance(n, weight, check=CHECK if checked else None)))
        if checked:
            w.apply(HealthObserved(("docker", f"i{n}"), healthy, "", at=0.0))
    live = [weight for weight, checked, healthy in spec if healthy or not checked]
    decision = decide(w, POLICY, now=100.0)[ANYCAST]
    assert decision.announce == bool(live)
    assert decision.weight == (sum(live) if live else 0)


def test_the_devices_of_failing_local_instances_of_a_shared_ip_are_named() -> None:
    """The host's own multipath must stop sending a failing instance traffic too: the core
    names its device, found through the instance's own address's route."""
    from announcer.core.instances import unhealthy_members

    w = fabric()  # 10.200.0.1 over vethr1..3
    own = []
    for n in (1, 2, 3):
        own.append(KernelRoute(Prefix(f"10.100.0.{n}/32"), 254, 180, oif=n))
    w.apply(
        KernelSnapshot(
            (*own, KernelRoute(ANYCAST, 254, 180, nexthops=((1, None), (2, None), (3, None)))),
            tuple(w.links.values()),
            (),
        )
    )
    for n in (1, 2, 3):
        spec = ServiceSpec(ips=(ip_address(f"10.100.0.{n}"), ip_address("10.200.0.1")), check=CHECK)
        w.apply(
            InstanceChanged(
                Instance("docker", f"i{n}", f"web-{n}", InstanceState.SERVING, 0.0, spec.ips, spec)
            )
        )
        w.apply(HealthObserved(("docker", f"i{n}"), n != 2, "", at=0.0))
    assert unhealthy_members(w, POLICY, 100.0) == {"vethr2"}
    w.apply(HealthObserved(("docker", "i2"), True, "", at=1.0))
    assert unhealthy_members(w, POLICY, 100.0) == frozenset()
    w.apply(HealthObserved(("docker", "i3"), None, "", at=2.0))  # pending (a new instance)
    assert unhealthy_members(w, POLICY, 100.0) == {"vethr3"}
    assert unhealthy_members(w, POLICY, 100.0, pending=False) == frozenset()


def test_a_member_the_plugin_parked_stays_named_while_its_instance_fails() -> None:
    """Once published, the plugin takes the failing member out of the group, so the route no
    longer shows its device. Found in the lab (issue 16 item 5): the core then named nobody,
    the plugin put the member back, the core named it again, ~20 times in 0.1 s, until the
    last publication happened to be the empty set and a dead instance kept a third of its
    host's flows. With the published names passed in (``parked``) the answer is stable."""
    from announcer.core.instances import unhealthy_members

    w = fabric()
    own = tuple(KernelRoute(Prefix(f"10.100.0.{n}/32"), 254, 180, oif=n) for n in (1, 2, 3))
    parked_route = KernelRoute(ANYCAST, 254, 180, nexthops=((1, None), (3, None)))
    w.apply(KernelSnapshot((*own, parked_route), tuple(w.links.values()), ()))
    for n in (1, 2, 3):
        spec = ServiceSpec(ips=(ip_address(f"10.100.0.{n}"), ip_address("10.200.0.1")), check=CHECK)
        w.apply(
            InstanceChanged(
                Instance("docker", f"i{n}", f"web-{n}", InstanceState.SERVING, 0.0, spec.ips, spec)
            )
        )
        w.apply(HealthObserved(("docker", f"i{n}"), n != 2, "", at=0.0))
    assert unhealthy_members(w, POLICY, 100.0) == frozenset()  # what the loop fed on
    assert unhealthy_members(w, POLICY, 100.0, parked={"vethr2"}) == {"vethr2"}
    w.apply(HealthObserved(("docker", "i2"), True, "", at=1.0))  # healthy again: back in
    assert unhealthy_members(w, POLICY, 100.0, parked={"vethr2"}) == frozenset()
    w.apply(HealthObserved(("docker", "i2"), False, "", at=2.0))
    w.apply(LinkRemoved(2))  # its container went: nothing of it to name
    assert unhealthy_members(w, POLICY, 100.0, parked={"vethr2"}) == frozenset()
