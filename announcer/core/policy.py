"""The policy (what the operator configured, as the core sees it) and a decision (what the
core concluded about one prefix, and why). Plain frozen values; no pydantic, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from announcer.model import (
    NO_ATTRIBUTES,
    Attributes,
    IPAddress,
    NextHop,
    Prefix,
    Reason,
)
from announcer.spec.labels import ServiceSpec


@dataclass(frozen=True, slots=True)
class Weights:
    """Weighted anycast (config ``weights``): a prefix carries the link-bandwidth community
    ``unit`` bytes/s times the summed weight of its serving local instances."""

    unit: int = 125_000  # bytes/s of one unit of anycast.weight (1 Mbit/s)
    asn: int = 23456  # the community's 2-byte ASN (AS_TRANS unless configured)
    transitive: bool = True
    min_interval: float = 5.0  # a prefix's weight changes at most this often
    slow_start_steps: int = 4  # anycast.slow-start-seconds ramps in this many steps


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
    weights: Weights | None = None  # None: no link-bandwidth community (plain ECMP)
    deprefer_prepend: int = 3  # anycast.unhealthy=deprefer: our AS this many more times


@dataclass(frozen=True, slots=True)
class Decision:
    """One prefix's verdict (the prefix is the key it is stored under). Equal decisions are
    one object: a table of 100k prefixes announced for the same reason holds a handful."""

    announce: bool
    reason: Reason
    sources: tuple[str, ...] = ()
    spec: ServiceSpec | None = None  # labels of the serving instance that gives attributes
    graceful_shutdown: bool = False  # draining gracefully: add GRACEFUL_SHUTDOWN (65535:0)
    weight: int = 0  # summed weight of the serving local instances, in units (0: none)
    deprefer: bool = False  # announced as a last resort: longer AS path, minimal weight


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
