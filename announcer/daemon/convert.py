"""The configuration as the core sees it: plain frozen objects, no pydantic."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Literal

from announcer.config import Config
from announcer.core.damping import DampingParams
from announcer.core.gates import Guard
from announcer.core.policy import Policy, Weights
from announcer.model import NextHop


def _next_hop(value: Literal["self"] | IPv4Address | IPv6Address) -> NextHop:
    return value if value == "self" else ip_address(value)


def to_policy(config: Config) -> Policy:
    """The core's view of the configuration."""
    return Policy(
        tables=frozenset(config.kernel.tables),
        interfaces=config.kernel.interfaces,
        protocols=frozenset(config.kernel.protocols),
        address_interfaces=config.kernel.address_interfaces,
        allow=config.policy.networks(),
        max_routes=config.policy.max_routes,
        next_hop=_next_hop(config.exabgp.next_hop),
        attributes=config.policy.attributes.to_attributes(),
        neighbors=frozenset(config.exabgp.neighbors),
        local_as=config.exabgp.local_as,
        stale_after=config.lifecycle.stale_after_seconds,
        require_instance=config.lifecycle.require_instance,
        weights=to_weights(config),
        deprefer_prepend=config.weights.deprefer_as_path_prepend,
    )


AS_TRANS = 23456  # RFC 6793: the 2-byte stand-in for a 4-byte AS


def to_weights(config: Config) -> Weights | None:
    w = config.weights
    if not w.enabled:
        return None
    local_as = config.exabgp.local_as
    asn = w.asn or (local_as if local_as is not None and local_as <= 0xFFFF else AS_TRANS)
    return Weights(
        w.unit_bytes_per_second, asn, w.transitive, w.min_interval_seconds, w.slow_start_steps
    )


def to_damping(config: Config) -> DampingParams:
    d = config.damping
    return DampingParams(
        d.enabled, d.penalty, d.suppress, d.reuse, d.half_life_seconds, d.max_suppress_seconds
    )


def to_guard(config: Config) -> Guard:
    """The core's view of the safety gates' settings."""
    return Guard(
        sync_timeout=config.lifecycle.sync_timeout_seconds,
        max_withdraw_fraction=config.guard.max_withdraw_fraction,
        min_withdraws=config.guard.min_withdraws,
    )
