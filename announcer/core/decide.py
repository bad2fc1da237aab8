"""The decision: which prefixes should be announced, and why (not). Pure.

``decide`` is a function of the world, the policy, ``now`` and the set of prefixes
already announced (only used to keep the announced ones when ``max_routes`` cuts the
excess). Every prefix the world mentions gets a :class:`Decision` with a stable reason
word: the kernel rules (:mod:`announcer.core.eligibility`) and the instance rules
(:mod:`announcer.core.instances`) say whether it may be announced, then ``max_routes``
and the operator's drains have their say.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import replace

from announcer.core.eligibility import kernel_candidates
from announcer.core.instances import claims, label, serving, trusted_instances
from announcer.core.policy import Decision, Policy, attributes_for
from announcer.core.world import World
from announcer.events import Drain, DrainMode, InstanceState
from announcer.model import GRACEFUL_SHUTDOWN, Announcement, Prefix, Reason, prefix_order
from announcer.spec.labels import ServiceSpec

_Candidate = tuple[Prefix, Reason, tuple[str, ...], ServiceSpec | None]


def decide(
    world: World,
    policy: Policy,
    announced: Set[Prefix] = frozenset(),
    now: float = 0.0,
    only: Set[Prefix] | None = None,
) -> dict[Prefix, Decision]:
    """One decision per prefix the world mentions (kernel routes, addresses, instance IPs).

    With ``only``, just those prefixes (a prefix the world no longer mentions gets none).
    The ``max_routes`` cut is then the caller's to rule out: see core/reconciler.py.
    """
    eligible, withheld = kernel_candidates(world, policy, only)
    claimed = claims(trusted_instances(world, policy, now))
    if only is not None:
        claimed = {p: c for p, c in claimed.items() if p in only}
    decisions: dict[Prefix, Decision] = {}
    for prefix, (reason, source) in withheld.items():
        if prefix not in eligible:
            labels = tuple(label(c) for c in claimed.get(prefix, ()))
            decisions[prefix] = Decision(prefix, False, reason, (source, *labels))
    for prefix, claimants in claimed.items():
        if prefix not in eligible and prefix not in withheld:
            labels = tuple(label(c) for c in claimants)
            decisions[prefix] = Decision(prefix, False, Reason.NO_KERNEL_ROUTE, labels)
    candidates: list[_Candidate] = []
    for prefix, found in eligible.items():
        found.sort()
        sources = tuple(source for _, source in found)
        claimants = claimed.get(prefix, [])
        if not claimants:
            if policy.require_instance:
                decisions[prefix] = Decision(prefix, False, Reason.NO_INSTANCE, sources)
            else:
                candidates.append((prefix, found[0][0], sources, None))
            continue
        why_not, spec, labels = serving(world, claimants, policy, now)
        if why_not is not None:
            decisions[prefix] = Decision(prefix, False, why_not, sources + labels)
        else:
            candidates.append((prefix, found[0][0], sources + labels, spec))
    decisions.update(_cut_and_drain(world, policy, candidates, announced, now))
    return decisions


def _cut_and_drain(
    world: World, policy: Policy, candidates: list[_Candidate], announced: Set[Prefix], now: float
) -> dict[Prefix, Decision]:
    """Over max_routes: keep what is already announced, then the lowest prefixes; the rest
    as the operator's drains say."""
    decisions: dict[Prefix, Decision] = {}
    candidates.sort(key=lambda c: (c[0] not in announced, prefix_order(c[0])))
    for position, (prefix, reason, sources, spec) in enumerate(candidates):
        if position >= policy.max_routes:
            decisions[prefix] = Decision(prefix, False, Reason.MAX_ROUTES_EXCEEDED, sources, spec)
            continue
        drain = active_drain(world, prefix, now)
        if drain is None:
            decisions[prefix] = Decision(prefix, True, reason, sources, spec)
        elif drain.mode is DrainMode.GRACEFUL and now < drain.since + drain.graceful_seconds:
            decisions[prefix] = Decision(prefix, True, Reason.DRAINING, sources, spec, True)
        else:
            decisions[prefix] = Decision(prefix, False, Reason.DRAINED, sources, spec)
    return decisions


def active_drain(world: World, prefix: Prefix, now: float) -> Drain | None:
    """The drain in force for a prefix (its own, else the drain of everything)."""
    for key in (prefix, None):
        drain = world.drains.get(key)
        if drain is not None and drain.active(now):
            return drain
    return None


def next_change(world: World, policy: Policy, now: float) -> float | None:
    """The earliest future time a decision can change with no new event (drain, staleness)."""
    times: list[float] = []
    for instance in world.instances.values():
        if instance.state is InstanceState.STOPPING and instance.spec is not None:
            end = instance.since + instance.spec.drain_seconds
            if end > now:
                times.append(end)
    for status in world.sources.values():
        if status.lost_since is not None and status.lost_since + policy.stale_after > now:
            times.append(status.lost_since + policy.stale_after)
    for drain in world.drains.values():
        ends = (drain.until, drain.since + drain.graceful_seconds)
        times.extend(t for t in ends if t is not None and t > now)
    return min(times, default=None)


def desired(decisions: Iterable[Decision], policy: Policy) -> dict[Prefix, Announcement]:
    """The announcements for every decision that says announce."""
    result: dict[Prefix, Announcement] = {}
    for decision in decisions:
        if not decision.announce:
            continue
        next_hop = policy.next_hop
        if next_hop != "self" and next_hop.version != decision.prefix.version:
            next_hop = "self"
        spec = decision.spec
        neighbors = spec.neighbors if spec is not None and spec.neighbors else policy.neighbors
        attributes = attributes_for(policy, spec)
        if decision.graceful_shutdown:
            attributes = replace(
                attributes, communities=(*attributes.communities, GRACEFUL_SHUTDOWN)
            )
        result[decision.prefix] = Announcement(decision.prefix, next_hop, attributes, neighbors)
    return result
