"""In-process micro-benchmarks of the pure core: the cost of one route event at N routes.

Three measurements, each at 1k / 10k / 100k routes:
  step      what the runtime does per route event: ``World.apply`` + ``Reconciler.step``
            (incremental since "Incremental reconciles", 697000e: decide/damp/diff the dirty
            prefix only), with damping at the shipped defaults;
  full      a full step (``force_full``: what a snapshot, link, drain or health change costs);
  history   ``step`` again after N prefixes were withdrawn once (the damper remembers every
            withdrawn prefix for a while: does its bookkeeping grow with that history?).
If a cost grows with N, that path is O(table) (or O(history)), not O(changes).
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address
from typing import Any

from announcer.config import Config
from announcer.core.damping import Damper
from announcer.core.plan import AnnouncedTable
from announcer.core.policy import Policy
from announcer.core.reconciler import Reconciler
from announcer.core.world import World
from announcer.daemon.convert import to_damping
from announcer.events import (
    IFF_LOWER_UP,
    IFF_UP,
    HealthObserved,
    Instance,
    InstanceState,
    KernelLink,
    KernelRoute,
    KernelSnapshot,
    RouteAdded,
    RouteRemoved,
    SourceListed,
)
from announcer.model import Prefix
from announcer.spec.checks import CheckSpec
from announcer.spec.labels import ServiceSpec

OIF = 7
POLICY = Policy(allow=(Prefix("10.0.0.0/8"),), max_routes=10_000_000)


def _route(i: int) -> KernelRoute:
    prefix = Prefix.make(4, int(IPv4Address("10.0.0.1")) + i, 32)
    return KernelRoute(prefix=prefix, table=254, protocol=3, oif=OIF)


def _setup(size: int, withdrawn_history: int = 0) -> tuple[World, AnnouncedTable, Reconciler]:
    world = World()
    link = (KernelLink(OIF, "vethr1", IFF_UP | IFF_LOWER_UP),)
    total = size + withdrawn_history
    world.apply(KernelSnapshot(tuple(_route(i) for i in range(total)), link, ()))
    table = AnnouncedTable(known=True)
    reconciler = Reconciler(POLICY, Damper(to_damping(Config())))
    for command in reconciler.step(world, table, 0.0).commands:
        table.record(command)
    if withdrawn_history:  # these prefixes leave: one withdraw each, remembered by the damper
        world.apply(KernelSnapshot(tuple(_route(i) for i in range(size)), link, ()))
        more = True
        while more:  # a big change is decided in chunks, one step each
            step = reconciler.step(world, table, 1.0)
            for command in step.commands:
                table.record(command)
            more = step.more
    return world, table, reconciler


def _time_events(size: int, events: int, full: bool, history: int = 0) -> dict[str, Any]:
    world, table, reconciler = _setup(size, history)
    timings: list[float] = []
    for n in range(events):
        extra = _route(size + history + 1 + n // 2)  # each prefix flaps once: never damped
        started = time.perf_counter()
        world.apply(RouteAdded(extra) if n % 2 == 0 else RouteRemoved(extra))
        step = reconciler.step(world, table, 2.0 + n, force_full=full)
        for command in step.commands:
            table.record(command)
        timings.append(time.perf_counter() - started)
        assert len(step.commands) == 1
    return {
        "routes": size,
        "withdrawn_history": history,
        "events": events,
        "mean_ms": round(sum(timings) / len(timings) * 1000, 3),
        "best_ms": round(min(timings) * 1000, 3),
    }


def _time_instance(size: int, events: int) -> dict[str, Any]:
    """One instance's health verdict flips (it claims one prefix of the table)."""
    world, table, reconciler = _setup(size)
    claimed = _route(0).prefix
    spec = ServiceSpec(ips=(claimed.network_address,), check=CheckSpec("tcp", port=80))
    instance = Instance("docker", "c1", "web", InstanceState.SERVING, 0.0, spec.ips, spec)
    world.apply(SourceListed("docker", (instance,)))  # listed: the sync gate opens
    world.apply(HealthObserved(instance.key, True))
    for command in reconciler.step(world, table, 1.0).commands:
        table.record(command)
    timings: list[float] = []
    for n in range(events):
        started = time.perf_counter()
        now = 2.0 + 600.0 * n  # far apart: a flap penalty decays (never damped)
        world.apply(HealthObserved(instance.key, n % 2 == 1, "", now))
        step = reconciler.step(world, table, now)
        for command in step.commands:
            table.record(command)
        timings.append(time.perf_counter() - started)
        assert len(step.commands) == 1, step.commands
    return {
        "routes": size,
        "events": events,
        "mean_ms": round(sum(timings) / len(timings) * 1000, 3),
        "best_ms": round(min(timings) * 1000, 3),
    }


def _verdict(rows: list[dict[str, Any]], growth_key: str) -> dict[str, Any]:
    small, big = rows[0], rows[-1]
    growth = big["best_ms"] / small["best_ms"] if small["best_ms"] else None
    table_growth = big[growth_key] / max(small[growth_key], 1)
    return {
        "cost_growth": round(growth, 1) if growth else None,
        "size_growth": table_growth,
        "complexity": "O(changes)" if growth is not None and growth < table_growth / 10 else "O(N)",
    }


def run(sizes: tuple[int, ...] = (1_000, 10_000, 100_000), events: int = 4) -> dict[str, Any]:
    step = [_time_events(size, events * 5, full=False) for size in sizes]
    full = [_time_events(size, events, full=True) for size in sizes]
    history = [_time_events(1_000, events * 5, full=False, history=h) for h in (0, *sizes)]
    instance = [_time_instance(size, events * 5) for size in sizes]
    return {
        "instance_health_change": {"rows": instance, **_verdict(instance, "routes")},
        "step_per_route_event": {"rows": step, **_verdict(step, "routes")},
        "full_step": {"rows": full, **_verdict(full, "routes")},
        "step_after_withdrawn_history": {
            "rows": history,
            **_verdict(history[1:], "withdrawn_history"),
        },
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
