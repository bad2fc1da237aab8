"""In-process micro-benchmarks of the pure core: the cost of one event at N routes.

One event = ``World.apply`` of one RouteAdded/RouteRemoved, then what ``reconcile`` does
with it: ``decide`` + ``desired`` + ``diff`` against the announced table. If the cost per
event grows with the table, the path is O(table), not O(changes).
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from announcer.core.plan import AnnouncedTable, diff
from announcer.core.policy import Policy, decide, desired
from announcer.core.world import World
from announcer.events import (
    IFF_LOWER_UP,
    IFF_UP,
    KernelLink,
    KernelRoute,
    KernelSnapshot,
    RouteAdded,
    RouteRemoved,
)

OIF = 7
POLICY = Policy(allow=(IPv4Network("10.0.0.0/8"),), max_routes=10_000_000)


def _route(i: int) -> KernelRoute:
    prefix = IPv4Network((IPv4Address(int(IPv4Address("10.0.0.1")) + i), 32))
    return KernelRoute(prefix=prefix, table=254, protocol=3, oif=OIF)


def _world(size: int) -> tuple[World, AnnouncedTable]:
    world = World()
    routes = tuple(_route(i) for i in range(size))
    world.apply(KernelSnapshot(routes, (KernelLink(OIF, "vethr1", IFF_UP | IFF_LOWER_UP),), ()))
    table = AnnouncedTable(known=True)
    for command in diff(desired(decide(world, POLICY).values(), POLICY), {}, may_withdraw=True):
        table.record(command)
    return world, table


def _one_event(
    world: World, table: AnnouncedTable, route: KernelRoute, add: bool, spent: dict[str, float]
) -> int:
    t0 = time.perf_counter()
    world.apply(RouteAdded(route) if add else RouteRemoved(route))
    t1 = time.perf_counter()
    decisions = decide(world, POLICY, table.entries.keys(), 0.0)
    t2 = time.perf_counter()
    want = desired(decisions.values(), POLICY)
    t3 = time.perf_counter()
    commands = diff(want, table.entries, may_withdraw=True)
    t4 = time.perf_counter()
    for command in commands:
        table.record(command)
    for name, took in (("apply", t1 - t0), ("decide", t2 - t1), ("desired", t3 - t2),
                       ("diff", t4 - t3)):  # fmt: skip
        spent[name] = spent.get(name, 0.0) + took
    return len(commands)


def per_event(size: int, events: int) -> dict[str, Any]:
    """Mean and best time of one add or delete event at ``size`` routes."""
    world, table = _world(size)
    extra = _route(size + 1)
    timings: list[float] = []
    spent: dict[str, float] = {}
    for n in range(events):
        started = time.perf_counter()
        changed = _one_event(world, table, extra, n % 2 == 0, spent)
        timings.append(time.perf_counter() - started)
        assert changed == 1
    return {
        "routes": size,
        "events": events,
        "mean_ms": round(sum(timings) / len(timings) * 1000, 3),
        "best_ms": round(min(timings) * 1000, 3),
        "mean_ms_by_step": {k: round(v / events * 1000, 3) for k, v in spent.items()},
    }


def run(sizes: tuple[int, ...] = (1_000, 10_000, 100_000), events: int = 4) -> dict[str, Any]:
    rows = [per_event(size, events) for size in sizes]
    small, big = rows[0], rows[-1]
    growth = big["best_ms"] / small["best_ms"] if small["best_ms"] else None
    table_growth = big["routes"] / small["routes"]
    return {
        "per_event": rows,
        "cost_growth": round(growth, 1) if growth else None,
        "table_growth": table_growth,
        "verdict": (
            "O(table): one event costs time proportional to the table (decide recomputes "
            "every prefix, diff walks every announced prefix)"
            if growth and growth > table_growth / 10
            else "O(changes): cost per event roughly independent of the table size"
        ),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
