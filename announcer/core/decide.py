"""The decision: which prefixes should be announced, and why (not). Pure.

``decide`` is a function of the world, the policy, ``now`` and the set of prefixes
already announced (only used to keep the announced ones when ``max_routes`` cuts the
excess). Every prefix the world mentions gets a :class:`Decision` with a stable reason
word: the kernel rules (:mod:`announcer.core.eligibility`) and the instance rules
(:mod:`announcer.core.instances`) say whether it may be announced, then ``max_routes``
and the operator's drains have their say.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from dataclasses import replace

from announcer.core.eligibility import ANNOUNCE_REASONS, KernelRules, best_withheld
from announcer.core.instances import claims, label, next_ramp, serving, trusted_instances
from announcer.core.policy import Decision, Policy, attributes_for
from announcer.core.world import World
from announcer.events import Drain, DrainMode, Instance, InstanceState
from announcer.model import (
    GRACEFUL_SHUTDOWN,
    UINT32_MAX,
    Advert,
    IPAddress,
    LinkBandwidth,
    Prefix,
    Reason,
)
from announcer.spec.labels import ServiceSpec


class _Interned:
    """Equal decisions (and source lists) of one decide() call share one object."""

    def __init__(self) -> None:
        self._decisions: dict[Decision, Decision] = {}
        self._sources: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __call__(
        self,
        announce: bool,
        reason: Reason,
        sources: tuple[str, ...] = (),
        spec: ServiceSpec | None = None,
        graceful: bool = False,
        weight: int = 0,
        deprefer: bool = False,
    ) -> Decision:
        sources = self._sources.setdefault(sources, sources)
        decision = Decision(announce, reason, sources, spec, graceful, weight, deprefer)
        return self._decisions.setdefault(decision, decision)


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
    One pass over the prefixes; the cut sorts only when there are more than ``max_routes``.
    """
    make = _Interned()
    rules = KernelRules(world, policy)
    claimed = claims(trusted_instances(world, policy, now))
    if only is None:
        prefixes: Iterable[Prefix] = world.routes.keys() | rules.addresses.keys() | claimed.keys()
    else:
        prefixes = only
    drains = bool(world.drains)
    decisions: dict[Prefix, Decision] = {}
    candidates: list[Prefix] = []
    for prefix in prefixes:
        decision = _decide_one(prefix, rules, claimed.get(prefix, ()), world, now, make)
        if decision is None:
            continue
        if decision.announce:
            candidates.append(prefix)
            if drains:
                decision = _drained(world, prefix, decision, now, make)
        decisions[prefix] = decision
    if len(candidates) > policy.max_routes:
        # Over max_routes: keep what is already announced, then the lowest prefixes.
        candidates.sort(key=lambda p: (p not in announced, p))
        for prefix in candidates[policy.max_routes :]:
            d = decisions[prefix]
            decisions[prefix] = make(False, Reason.MAX_ROUTES_EXCEEDED, d.sources, d.spec)
    return decisions


def _decide_one(
    prefix: Prefix,
    rules: KernelRules,
    claimants: Sequence[Instance],
    world: World,
    now: float,
    make: _Interned,
) -> Decision | None:
    """The decision for one prefix before max_routes and drains; None if not mentioned."""
    found = rules.candidates(prefix)
    eligible = [c for c in found if c[0] in ANNOUNCE_REASONS]
    if not eligible:
        labels = tuple(label(c) for c in claimants)
        if found:
            reason, source = best_withheld(found)
            return make(False, reason, (source, *labels))
        return make(False, Reason.NO_KERNEL_ROUTE, labels) if claimants else None
    eligible.sort()
    sources = tuple(source for _, source in eligible)
    if not claimants:
        if rules.policy.require_instance:
            return make(False, Reason.NO_INSTANCE, sources)
        return make(True, eligible[0][0], sources)
    service = serving(world, list(claimants), rules.policy, now)
    if service.reason is not None:
        return make(False, service.reason, sources + service.labels)
    reason = Reason.UNHEALTHY_DEPREFERRED if service.deprefer else eligible[0][0]
    return make(
        True, reason, sources + service.labels, service.spec, False, service.weight,
        service.deprefer,
    )  # fmt: skip


def _drained(
    world: World, prefix: Prefix, decision: Decision, now: float, make: _Interned
) -> Decision:
    drain = active_drain(world, prefix, now)
    if drain is None:
        return decision
    d = decision
    if drain.mode is DrainMode.GRACEFUL and now < drain.since + drain.graceful_seconds:
        return make(True, Reason.DRAINING, d.sources, d.spec, True, d.weight, d.deprefer)
    return make(False, Reason.DRAINED, d.sources, d.spec)


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
    ramp = next_ramp(world, policy, now)
    if ramp is not None:
        times.append(ramp)
    return min(times, default=None)


def desired(decisions: Iterable[tuple[Prefix, Decision]], policy: Policy) -> dict[Prefix, Advert]:
    """The advert of every (prefix, decision) that says announce; prefixes announced the
    same way share one Advert."""
    result: dict[Prefix, Advert] = {}
    shared: dict[tuple[int, Decision], Advert] = {}
    for prefix, decision in decisions:
        if not decision.announce:
            continue
        key = (prefix.version, decision)
        advert = shared.get(key)
        if advert is None:
            advert = shared[key] = _advert(prefix.version, decision, policy)
        result[prefix] = advert
    return result


def for_family(neighbors: frozenset[IPAddress], version: int) -> frozenset[IPAddress]:
    """The neighbors a prefix of this family goes to. With neighbors of both families (a v4
    and a v6 session, the usual dual stack), only those of the prefix's own: ExaBGP logs an
    error for every route sent to a neighbor without the family (4.2 also answers a
    withdraw there "route not found"). With one family only, all of them (one session may
    carry both families)."""
    if {n.version for n in neighbors} != {4, 6}:
        return neighbors
    return frozenset(n for n in neighbors if n.version == version)


def _advert(version: int, decision: Decision, policy: Policy) -> Advert:
    next_hop = policy.next_hop
    if next_hop != "self" and next_hop.version != version:
        next_hop = "self"
    spec = decision.spec
    neighbors = for_family(
        spec.neighbors if spec is not None and spec.neighbors else policy.neighbors, version
    )
    attributes = attributes_for(policy, spec)
    if decision.graceful_shutdown:
        attributes = replace(attributes, communities=(*attributes.communities, GRACEFUL_SHUTDOWN))
    if decision.deprefer and policy.local_as is not None:
        longer = attributes.as_path or (policy.local_as,)
        attributes = replace(
            attributes, as_path=(policy.local_as,) * policy.deprefer_prepend + longer
        )
    weights = policy.weights
    if weights is not None and decision.weight > 0:
        value = min(decision.weight * weights.unit, UINT32_MAX)  # FRR 8.4: 32 bits
        bandwidth = LinkBandwidth(weights.asn, value, weights.transitive)
        attributes = replace(attributes, link_bandwidth=bandwidth)
    return Advert(next_hop, attributes, neighbors)
