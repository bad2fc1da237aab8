"""Policy and the decision: which prefixes should be announced, and why (not).

``decide`` is a pure function of the world, the policy and the set of prefixes already
announced (only used to keep the announced ones when ``max_routes`` cuts the excess).
Every prefix the world mentions gets a :class:`Decision` with a stable reason word.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from ipaddress import IPv4Network, IPv6Network

from announcer.core.world import World
from announcer.events import (
    RT_TABLE_LOCAL,
    RTN_UNICAST,
    Drain,
    DrainMode,
    Instance,
    InstanceState,
    KernelAddress,
    KernelRoute,
)
from announcer.labels import ServiceSpec
from announcer.model import (
    GRACEFUL_SHUTDOWN,
    NO_ATTRIBUTES,
    Announcement,
    Attributes,
    IPAddress,
    NextHop,
    Prefix,
    host_prefix,
    is_host_prefix,
)

# Never announced, whatever the allowlist says.
MARTIANS: tuple[Prefix, ...] = (
    IPv4Network("0.0.0.0/8"),
    IPv4Network("127.0.0.0/8"),
    IPv4Network("169.254.0.0/16"),
    IPv4Network("224.0.0.0/4"),
    IPv4Network("240.0.0.0/4"),
    IPv6Network("::/128"),
    IPv6Network("::1/128"),
    IPv6Network("::ffff:0:0/96"),
    IPv6Network("fe80::/10"),
    IPv6Network("ff00::/8"),
)

# Reasons, in the order the checks run. When no candidate of a prefix is eligible, the
# decision shows the reason of the candidate that got furthest: the most useful answer
# to "why is X not announced?".
WITHHELD_REASONS: tuple[str, ...] = (
    "not_host_prefix",
    "martian",
    "table_not_selected",
    "protocol_not_selected",
    "multipath_route",
    "no_interface",
    "interface_not_selected",
    "route_has_gateway",
    "link_down",
    "prefix_not_allowed",
    "max_routes_exceeded",
)
_RANK = {reason: rank for rank, reason in enumerate(WITHHELD_REASONS)}
ANNOUNCE_REASONS = ("host_route", "local_address")
# Why no claiming instance serves, most telling first.
INSTANCE_REASONS: dict[InstanceState, str] = {
    InstanceState.STOPPING: "instance_stopping",
    InstanceState.UNHEALTHY: "instance_unhealthy",
    InstanceState.STARTING: "instance_starting",
    InstanceState.STOPPED: "instance_stopped",
}
INSTANCE_RANK = (
    "instance_stopping",
    "instance_unhealthy",
    "check_failing",
    "check_pending",
    "label_invalid",
    "instance_starting",
    "instance_stopped",
)
TABLE_NAMES = {253: "default", 254: "main", 255: "local"}


@dataclass(frozen=True, slots=True)
class Policy:
    tables: frozenset[int] = frozenset({254})
    interfaces: tuple[str, ...] = ("vethr*",)
    protocols: frozenset[int] = frozenset()
    address_interfaces: tuple[str, ...] = ()
    allow: tuple[Prefix, ...] = ()
    max_routes: int = 10000
    next_hop: NextHop = "self"
    attributes: Attributes = NO_ATTRIBUTES
    neighbors: frozenset[IPAddress] = frozenset()
    local_as: int | None = None
    # Lifecycle: how long a lost source's last state is trusted; whether a route must be
    # claimed by a serving instance (True) or is announced on the kernel's word alone.
    stale_after: float = 300.0
    require_instance: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    prefix: Prefix
    announce: bool
    reason: str
    sources: tuple[str, ...] = ()
    spec: ServiceSpec | None = None  # labels of the serving instance that gives attributes
    graceful_shutdown: bool = False  # draining gracefully: add GRACEFUL_SHUTDOWN (65535:0)


Ranges = tuple[tuple[int, int, int], ...]  # (version, first, last) as integers


def _ranges(prefixes: Iterable[Prefix]) -> Ranges:
    return tuple((p.version, int(p.network_address), int(p.broadcast_address)) for p in prefixes)


MARTIAN_RANGES = _ranges(MARTIANS)


def _inside(prefix: Prefix, ranges: Ranges) -> bool:
    """prefix lies within one of ranges: integer compares (subnet_of is ~10x slower)."""
    version = prefix.version
    first = int(prefix.network_address)
    last = first | ((1 << (prefix.max_prefixlen - prefix.prefixlen)) - 1)
    return any(v == version and lo <= first and last <= hi for v, lo, hi in ranges)


def is_martian(prefix: Prefix) -> bool:
    return prefix.prefixlen == 0 or _inside(prefix, MARTIAN_RANGES)


def is_allowed(prefix: Prefix, allow: Iterable[Prefix]) -> bool:
    return _inside(prefix, _ranges(allow))


def _matches(name: str | None, globs: Iterable[str]) -> bool:
    return name is not None and any(fnmatchcase(name, g) for g in globs)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """What decide() needs of the policy and the links, computed once per call."""

    allow: Ranges
    selected: frozenset[int]  # link indexes whose name matches kernel.interfaces
    up: frozenset[int]  # link indexes up with carrier


def _compile(world: World, policy: Policy) -> _Compiled:
    links = world.links.values()
    return _Compiled(
        _ranges(policy.allow),
        frozenset(k.index for k in links if _matches(k.name, policy.interfaces)),
        frozenset(k.index for k in links if k.up),
    )


def route_verdict(
    route: KernelRoute, world: World, policy: Policy, compiled: _Compiled | None = None
) -> str:
    """The reason word for one kernel route: an announce reason or a withheld one."""
    compiled = compiled or _compile(world, policy)
    prefix = route.prefix
    if not is_host_prefix(prefix):
        return "not_host_prefix"
    if is_martian(prefix):
        return "martian"
    if route.table not in policy.tables:
        return "table_not_selected"
    if policy.protocols and route.protocol not in policy.protocols:
        return "protocol_not_selected"
    if route.multipath:
        return "multipath_route"
    if route.oif is None or route.oif not in world.links:
        return "no_interface"
    if route.oif not in compiled.selected:
        return "interface_not_selected"
    if route.gateway is not None:
        return "route_has_gateway"
    if route.oif not in compiled.up:
        return "link_down"
    if not _inside(prefix, compiled.allow):
        return "prefix_not_allowed"
    return "host_route"


def address_verdict(address: KernelAddress, world: World, policy: Policy) -> str:
    prefix = host_prefix(address.address)
    if address.prefixlen != prefix.max_prefixlen:
        return "not_host_prefix"
    if is_martian(prefix):
        return "martian"
    link = world.links.get(address.index)
    if link is None or not link.up:
        return "link_down"
    if not is_allowed(prefix, policy.allow):
        return "prefix_not_allowed"
    return "local_address"


def _routes(world: World, only: Set[Prefix] | None) -> Iterable[KernelRoute]:
    if only is None:
        return world.routes.values()
    return (world.routes[k] for p in only for k in world.by_prefix.get(p, ()))


def _candidates(
    world: World, policy: Policy, only: Set[Prefix] | None = None
) -> Iterable[tuple[Prefix, str, str]]:
    """(prefix, reason, source) for every route and selected address in the world
    (or only those of the prefixes in ``only``)."""
    compiled = _compile(world, policy)
    names: dict[tuple[int, int | None], str] = {}
    for route in _routes(world, only):
        if route.type != RTN_UNICAST:
            continue
        if route.table == RT_TABLE_LOCAL and RT_TABLE_LOCAL not in policy.tables:
            continue
        source = names.get((route.table, route.oif))
        if source is None:
            table = TABLE_NAMES.get(route.table, str(route.table))
            source = f"route:{table}:{world.link_name(route.oif) or '?'}"
            names[(route.table, route.oif)] = source
        yield route.prefix, route_verdict(route, world, policy, compiled), source
    if not policy.address_interfaces:
        return
    for address in world.addresses.values():
        ifname = world.link_name(address.index)
        if ifname is None or not _matches(ifname, policy.address_interfaces):
            continue
        prefix = host_prefix(address.address)
        if only is None or prefix in only:
            yield prefix, address_verdict(address, world, policy), f"address:{ifname}"


def _sort_key(prefix: Prefix) -> tuple[int, int, int]:
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


def _kernel_decisions(
    world: World, policy: Policy, only: Set[Prefix] | None
) -> tuple[dict[Prefix, list[tuple[str, str]]], dict[Prefix, tuple[str, str]]]:
    """Kernel candidates: eligible (reason, source) lists, and the best withheld reason."""
    eligible: dict[Prefix, list[tuple[str, str]]] = {}
    withheld: dict[Prefix, tuple[str, str]] = {}
    for prefix, reason, source in _candidates(world, policy, only):
        if reason in ANNOUNCE_REASONS:
            eligible.setdefault(prefix, []).append((reason, source))
        else:
            best = withheld.get(prefix)
            # furthest check wins; ties go to the smallest source, whatever the dict order
            if best is None or (-_RANK[reason], source) < (-_RANK[best[0]], best[1]):
                withheld[prefix] = (reason, source)
    return eligible, withheld


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
) -> str | None:
    """None when the instance serves now; else the reason word."""
    if instance.error is not None:
        return "label_invalid"
    spec = instance.spec
    if spec is not None:
        if spec.as_path_prepend and policy.local_as is None:
            return "label_invalid"
        if spec.neighbors and policy.neighbors and not spec.neighbors <= policy.neighbors:
            return "label_invalid"
    if spec is not None and spec.check is not None and instance.state is InstanceState.SERVING:
        verdict = health.get(instance.key)
        if verdict is None:
            return "check_pending"
        return None if verdict else "check_failing"
    if instance.state is InstanceState.SERVING:
        return None
    drain = spec.drain_seconds if spec is not None else 0.0
    if instance.state is InstanceState.STOPPING and now < instance.since + drain:
        return None  # anycast.drain-seconds: still announced until the drain ends
    return INSTANCE_REASONS[instance.state]


def _claims(instances: Iterable[Instance]) -> dict[Prefix, list[Instance]]:
    claims: dict[Prefix, list[Instance]] = {}
    for instance in instances:
        for address in instance.ips:
            claims.setdefault(host_prefix(address), []).append(instance)
    return claims


def _label(instance: Instance) -> str:
    return f"{instance.source}:{instance.name}"


def _lifecycle(
    world: World, claimants: list[Instance], policy: Policy, now: float
) -> tuple[str | None, ServiceSpec | None, tuple[str, ...]]:
    """(withheld reason or None, spec of the first serving claimant, claimant labels)."""
    labels = tuple(_label(c) for c in claimants)
    verdicts = [(instance_verdict(c, policy, now, world.health), c) for c in claimants]
    serving = [c for verdict, c in verdicts if verdict is None]
    if serving:
        return None, serving[0].spec, labels
    reasons = [verdict for verdict, _ in verdicts if verdict is not None]
    return min(reasons, key=INSTANCE_RANK.index), None, labels


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
    eligible, withheld = _kernel_decisions(world, policy, only)
    claims = _claims(trusted_instances(world, policy, now))
    if only is not None:
        claims = {p: c for p, c in claims.items() if p in only}
    decisions: dict[Prefix, Decision] = {}
    for prefix, (reason, source) in withheld.items():
        if prefix not in eligible:
            labels = tuple(_label(c) for c in claims.get(prefix, ()))
            decisions[prefix] = Decision(prefix, False, reason, (source, *labels))
    for prefix, claimants in claims.items():
        if prefix not in eligible and prefix not in withheld:
            labels = tuple(_label(c) for c in claimants)
            decisions[prefix] = Decision(prefix, False, "no_kernel_route", labels)
    candidates: list[tuple[Prefix, str, tuple[str, ...], ServiceSpec | None]] = []
    for prefix, found in eligible.items():
        found.sort()
        sources = tuple(source for _, source in found)
        claimants = claims.get(prefix, [])
        if not claimants:
            if policy.require_instance:
                decisions[prefix] = Decision(prefix, False, "no_instance", sources)
            else:
                candidates.append((prefix, found[0][0], sources, None))
            continue
        why_not, spec, labels = _lifecycle(world, claimants, policy, now)
        if why_not is not None:
            decisions[prefix] = Decision(prefix, False, why_not, sources + labels)
        else:
            candidates.append((prefix, found[0][0], sources + labels, spec))
    # Over max_routes: keep what is already announced, then the lowest prefixes.
    candidates.sort(key=lambda c: (c[0] not in announced, _sort_key(c[0])))
    for position, (prefix, reason, sources, spec) in enumerate(candidates):
        if position >= policy.max_routes:
            decisions[prefix] = Decision(prefix, False, "max_routes_exceeded", sources, spec)
            continue
        drain = active_drain(world, prefix, now)
        if drain is None:
            decisions[prefix] = Decision(prefix, True, reason, sources, spec)
        elif drain.mode is DrainMode.GRACEFUL and now < drain.since + drain.graceful_seconds:
            decisions[prefix] = Decision(prefix, True, "draining", sources, spec, True)
        else:
            decisions[prefix] = Decision(prefix, False, "drained", sources, spec)
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


def attributes_for(policy: Policy, spec: ServiceSpec | None) -> Attributes:
    """Config attributes, with the labels' values over them (communities add up)."""
    base = policy.attributes
    if spec is None:
        return base
    as_path: tuple[int, ...] = ()
    if spec.as_path_prepend and policy.local_as is not None:
        as_path = (policy.local_as,) * (1 + spec.as_path_prepend)
    return Attributes(
        med=spec.med if spec.med is not None else base.med,
        local_preference=(
            spec.local_preference if spec.local_preference is not None else base.local_preference
        ),
        communities=base.communities + spec.communities,
        large_communities=base.large_communities + spec.large_communities,
        as_path=as_path,
    )


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
