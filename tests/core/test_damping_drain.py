"""Flap damping and operator drain, with a fake clock (time is a number passed in)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.core.damping import Damper, DampingParams
from announcer.core.decide import decide, desired, next_change
from announcer.core.policy import Decision, Policy
from announcer.core.world import World
from announcer.events import (
    IFF_LOWER_UP,
    IFF_UP,
    Drain,
    DrainMode,
    DrainsSet,
    KernelLink,
    KernelRoute,
    KernelSnapshot,
)
from announcer.model import GRACEFUL_SHUTDOWN, Prefix, Reason

P = Prefix("10.200.0.1/32")
Q = Prefix("10.200.0.2/32")
POLICY = Policy(interfaces=("vethr*",), allow=(Prefix("10.0.0.0/8"),))


def decision(announce: bool) -> dict:
    return {P: Decision(announce, Reason.HOST_ROUTE if announce else Reason.LINK_DOWN)}


class Remembering:
    """A Damper fed its own last result as ``previous``, as the reconciler does."""

    def __init__(self, params: DampingParams | None = None) -> None:
        self.damper = Damper(params or DampingParams())
        self.last: dict = {}

    def apply(self, decisions: dict, now: float) -> dict:
        self.last = self.damper.apply(decisions, now, self.last)
        return self.last

    def __getattr__(self, name: str) -> object:
        return getattr(self.damper, name)


def test_a_single_withdraw_is_never_delayed_and_the_route_comes_back_at_once() -> None:
    damper = Remembering()
    assert damper.apply(decision(True), 0.0)[P].announce
    assert not damper.apply(decision(False), 1.0)[P].announce
    assert damper.apply(decision(True), 2.0)[P].announce


def test_a_route_flapping_every_200ms_is_suppressed_then_reused_after_it_settles() -> None:
    damper = Remembering(DampingParams(half_life=10.0))
    now, verdicts = 0.0, []
    for flap in range(10):
        verdicts.append(damper.apply(decision(flap % 2 == 0), now)[P])
        now += 0.2
    # withdraws always pass through; announces after the 3rd withdraw are damped
    assert all(not v.announce for v in verdicts[1::2])
    assert [v.reason for v in verdicts[0::2]] == [
        "host_route",
        "host_route",
        "host_route",
        "damped",
        "damped",
    ]
    assert damper.suppressions == 1
    reuse_at = damper.next_reuse(now)
    assert reuse_at is not None
    assert now < reuse_at < now + 60
    assert damper.apply(decision(True), reuse_at - 0.5)[P].reason == "damped"
    assert damper.apply(decision(True), reuse_at + 0.01)[P].announce


def test_max_suppress_caps_the_hold() -> None:
    damper = Remembering(DampingParams(half_life=1000.0, max_suppress=30.0))
    for i in range(8):
        damper.apply(decision(i % 2 == 0), i * 0.1)
    assert damper.apply(decision(True), 5.0)[P].reason == "damped"
    assert damper.apply(decision(True), 31.0)[P].announce


def test_disabled_damping_changes_nothing() -> None:
    damper = Remembering(DampingParams(enabled=False))
    for i in range(10):
        assert damper.apply(decision(i % 2 == 0), i * 0.1)[P].announce == (i % 2 == 0)


def world() -> World:
    w = World()
    w.apply(
        KernelSnapshot(
            (KernelRoute(P, 254, 3, oif=1), KernelRoute(Q, 254, 3, oif=1)),
            (KernelLink(1, "vethr1", IFF_UP | IFF_LOWER_UP),),
            (),
        )
    )
    return w


def test_graceful_drain_announces_graceful_shutdown_then_withdraws() -> None:
    w = world()
    w.apply(DrainsSet((Drain(P, since=100.0, mode=DrainMode.GRACEFUL, graceful_seconds=10.0),)))
    during = decide(w, POLICY, now=105.0)
    assert (during[P].announce, during[P].reason) == (True, "draining")
    assert GRACEFUL_SHUTDOWN in desired(during.items(), POLICY)[P].attributes.communities
    assert GRACEFUL_SHUTDOWN not in desired(during.items(), POLICY)[Q].attributes.communities
    assert next_change(w, POLICY, 105.0) == 110.0
    after = decide(w, POLICY, now=110.0)
    assert (after[P].announce, after[P].reason) == (False, "drained")
    assert after[Q].announce


def test_drain_all_with_a_duration_expires() -> None:
    w = world()
    w.apply(DrainsSet((Drain(None, since=0.0, until=60.0),)))
    assert {d.reason for d in decide(w, POLICY, now=30.0).values()} == {"drained"}
    assert next_change(w, POLICY, 30.0) == 60.0
    assert all(d.announce for d in decide(w, POLICY, now=60.0).values())


def test_undrain_is_an_empty_set() -> None:
    w = world()
    w.apply(DrainsSet((Drain(P, since=0.0),)))
    assert not decide(w, POLICY, now=1.0)[P].announce
    w.apply(DrainsSet(()))
    assert decide(w, POLICY, now=2.0)[P].announce


flap_events = st.lists(
    st.tuples(st.sampled_from([P, Q]), st.booleans(), st.floats(0.0, 30.0)), max_size=60
)


@given(flap_events)
@settings(max_examples=200, deadline=None)
def test_the_damper_only_withholds_forgets_when_quiet_and_knows_its_next_reuse(
    events: list[tuple[Prefix, bool, float]],
) -> None:
    damper = Damper(DampingParams(half_life=5.0, max_suppress=40.0))
    now, last = 0.0, {}
    for prefix, announce, gap in events:
        now += gap
        wanted = {
            **{p: d for p, d in last.items() if p != prefix},
            prefix: Decision(announce, Reason.HOST_ROUTE if announce else Reason.LINK_DOWN),
        }
        result = damper.apply(wanted, now, last, scope={prefix})
        decided = result[prefix]
        assert decided.announce <= announce  # only ever withholds an announce
        if announce and not decided.announce:
            assert decided.reason == Reason.DAMPED
            reuse = damper.next_reuse(now)
            assert reuse is not None
            assert reuse >= now
            suppressed = [p for p, s in damper.flaps.items() if s.suppressed_since is not None]
            brute = min(damper._reuse_at(damper.flaps[p]) for p in suppressed)
            assert reuse == max(now, brute)
        last = result
    # quiet long enough: every penalty decays below the floor and is forgotten
    damper.apply(last, now + 10_000.0, last, scope=set())
    assert damper.flaps == {}
    assert damper.next_reuse(now + 10_000.0) is None
