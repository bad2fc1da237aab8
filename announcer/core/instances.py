"""The instance rules: which instances are trusted, whether each serves now, and which
health checks to run. Pure: ``now`` and the health verdicts are passed in."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from announcer.core.policy import Policy, Weights
from announcer.core.world import World
from announcer.events import Instance, InstanceState
from announcer.model import Prefix, Reason, host_prefix
from announcer.spec.checks import CheckTarget
from announcer.spec.labels import ServiceSpec

# Why no claiming instance serves, most telling first.
INSTANCE_REASONS: dict[InstanceState, Reason] = {
    InstanceState.STOPPING: Reason.INSTANCE_STOPPING,
    InstanceState.UNHEALTHY: Reason.INSTANCE_UNHEALTHY,
    InstanceState.STARTING: Reason.INSTANCE_STARTING,
    InstanceState.STOPPED: Reason.INSTANCE_STOPPED,
}
INSTANCE_RANK = (
    Reason.INSTANCE_STOPPING,
    Reason.INSTANCE_UNHEALTHY,
    Reason.CHECK_FAILING,
    Reason.CHECK_PENDING,
    Reason.LABEL_INVALID,
    Reason.INSTANCE_STARTING,
    Reason.INSTANCE_STOPPED,
)


def trusted_instances(world: World, policy: Policy, now: float) -> list[Instance]:
    """Instances whose source is synced and not lost for longer than ``stale_after``."""
    result = []
    for instance in world.instances.values():
        status = world.sources.get(instance.source)
        lost = status.lost_since if status is not None else None
        if lost is not None and now - lost > policy.stale_after:
            continue
        result.append(instance)
    return sorted(result, key=lambda i: i.key)


def instance_verdict(
    instance: Instance, policy: Policy, now: float, health: Mapping[tuple[str, str], bool | None]
) -> Reason | None:
    """None when the instance serves now; else the reason word."""
    if instance.error is not None:
        return Reason.LABEL_INVALID
    spec = instance.spec
    if spec is not None:
        if (spec.as_path_prepend or spec.unhealthy == "deprefer") and policy.local_as is None:
            return Reason.LABEL_INVALID
        if spec.neighbors and policy.neighbors and not spec.neighbors <= policy.neighbors:
            return Reason.LABEL_INVALID
    if spec is not None and spec.check is not None and instance.state is InstanceState.SERVING:
        verdict = health.get(instance.key)
        if verdict is None:
            return Reason.CHECK_PENDING
        return None if verdict else Reason.CHECK_FAILING
    if instance.state is InstanceState.SERVING:
        return None
    drain = spec.drain_seconds if spec is not None else 0.0
    if instance.state is InstanceState.STOPPING and now < instance.since + drain:
        return None  # anycast.drain-seconds: still announced until the drain ends
    return INSTANCE_REASONS[instance.state]


def claims(instances: Iterable[Instance]) -> dict[Prefix, list[Instance]]:
    """The instances claiming each prefix (their own and their anycast addresses)."""
    result: dict[Prefix, list[Instance]] = {}
    for instance in instances:
        for address in instance.ips:
            result.setdefault(host_prefix(address), []).append(instance)
    return result


def label(instance: Instance) -> str:
    return f"{instance.source}:{instance.name}"


@dataclass(frozen=True, slots=True)
class Serving:
    """What the instances claiming a prefix say about it."""

    reason: Reason | None  # why none serves; None when one does (or the prefix is deprefered)
    spec: ServiceSpec | None  # of the first serving claimant (it gives the attributes)
    labels: tuple[str, ...]
    weight: int = 0  # summed weight of the serving claimants (with weights on)
    deprefer: bool = False  # none serves, but an unhealthy one asks to stay as a last resort


DEPREFERRED = (Reason.CHECK_FAILING, Reason.INSTANCE_UNHEALTHY)


def serving(world: World, claimants: list[Instance], policy: Policy, now: float) -> Serving:
    labels = tuple(label(c) for c in claimants)
    verdicts = [(instance_verdict(c, policy, now, world.health), c) for c in claimants]
    live = [c for verdict, c in verdicts if verdict is None]
    if live:
        weight = 0
        if policy.weights is not None:
            weight = sum(effective_weight(c, world, policy.weights, now) for c in live)
        return Serving(None, live[0].spec, labels, weight)
    last_resort = [
        c
        for verdict, c in verdicts
        if verdict in DEPREFERRED and c.spec is not None and c.spec.unhealthy == "deprefer"
    ]
    if last_resort:
        return Serving(None, last_resort[0].spec, labels, 1 if policy.weights else 0, True)
    reasons = [verdict for verdict, _ in verdicts if verdict is not None]
    return Serving(min(reasons, key=INSTANCE_RANK.index), None, labels)


def joined_at(instance: Instance, world: World) -> float:
    """When the instance began to serve: its state's start, or its check's passing."""
    return max(instance.since, world.health_since.get(instance.key, instance.since))


def effective_weight(instance: Instance, world: World, weights: Weights, now: float) -> int:
    """anycast.weight, ramped in ``slow_start_steps`` steps over anycast.slow-start-seconds
    after the instance joins (at least 1)."""
    spec = instance.spec
    full = spec.weight if spec is not None else 1
    ramp = spec.slow_start_seconds if spec is not None else 0.0
    elapsed = now - joined_at(instance, world)
    if ramp <= 0 or elapsed >= ramp:
        return full
    step = min(weights.slow_start_steps, int(elapsed * weights.slow_start_steps / ramp) + 1)
    return max(1, full * step // weights.slow_start_steps)


def next_ramp(world: World, policy: Policy, now: float) -> float | None:
    """The next time a slow start takes a step (a weight changes with no event)."""
    if policy.weights is None:
        return None
    steps = policy.weights.slow_start_steps
    times = []
    for instance in world.instances.values():
        spec = instance.spec
        if spec is None or spec.slow_start_seconds <= 0:
            continue
        start = joined_at(instance, world)
        if now - start >= spec.slow_start_seconds:
            continue
        interval = spec.slow_start_seconds / steps
        times.append(start + (int((now - start) / interval) + 1) * interval)
    return min(times, default=None)


def health_targets(world: World, policy: Policy, now: float) -> list[CheckTarget]:
    """One check per instance that declares one, probed at its first address (its own
    container IP first), from the host through the routed path."""
    targets = []
    for instance in trusted_instances(world, policy, now):
        spec = instance.spec
        if spec is not None and spec.check is not None and instance.ips and not instance.error:
            targets.append(CheckTarget(instance.key, instance.ips[0], spec.check))
    return targets


def unhealthy_members(
    world: World,
    policy: Policy,
    now: float,
    pending: bool = True,
    parked: Collection[str] = (),
) -> frozenset[str]:
    """Host devices of shared routes (several local instances of one anycast IP) whose
    instance does not serve now: the host's own multipath must not send them traffic
    (docs/adr/0004). Found through each instance's own address: its host route's device.
    ``pending``: whether an instance whose check has not reported yet counts as not serving
    (the daemon leaves them in for a grace period after its start). ``parked``: the names
    published last time; the plugin took those devices out of their groups, so the routes
    no longer show them, yet they still hold the IP: they count as shared while they exist
    (else naming them would put them back, which names them again, and so on)."""
    shared = world.shared_devices()
    shared |= {i for i, link in world.links.items() if link.name in parked}
    if not shared:
        return frozenset()
    names: set[str] = set()
    for instance in trusted_instances(world, policy, now):
        verdict = instance_verdict(instance, policy, now, world.health)
        if not instance.ips or verdict is None or (verdict is Reason.CHECK_PENDING and not pending):
            continue
        for via in world.routes_of(host_prefix(instance.ips[0])):
            if via.oif in shared and (name := world.link_name(via.oif)) is not None:
                names.add(name)
    return frozenset(names)
