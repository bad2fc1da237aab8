"""The instance rules: which instances are trusted, whether each serves now, and which
health checks to run. Pure: ``now`` and the health verdicts are passed in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from announcer.core.policy import Policy
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
        if spec.as_path_prepend and policy.local_as is None:
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


def serving(
    world: World, claimants: list[Instance], policy: Policy, now: float
) -> tuple[Reason | None, ServiceSpec | None, tuple[str, ...]]:
    """(withheld reason or None, spec of the first serving claimant, claimant labels)."""
    labels = tuple(label(c) for c in claimants)
    verdicts = [(instance_verdict(c, policy, now, world.health), c) for c in claimants]
    live = [c for verdict, c in verdicts if verdict is None]
    if live:
        return None, live[0].spec, labels
    reasons = [verdict for verdict, _ in verdicts if verdict is not None]
    return min(reasons, key=INSTANCE_RANK.index), None, labels


def health_targets(world: World, policy: Policy, now: float) -> list[CheckTarget]:
    """One check per instance that declares one, probed at its first address (its own
    container IP first), from the host through the routed path."""
    targets = []
    for instance in trusted_instances(world, policy, now):
        spec = instance.spec
        if spec is not None and spec.check is not None and instance.ips and not instance.error:
            targets.append(CheckTarget(instance.key, instance.ips[0], spec.check))
    return targets
