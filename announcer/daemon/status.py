"""What `announcer status` shows: every prefix's decision, what is announced, sources,
drains and counters, as one JSON-able dict; and its table rendering for humans."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from announcer.core.plan import Announce, AnnouncedTable
from announcer.core.policy import Decision
from announcer.core.world import SourceStatus, World
from announcer.events import Drain
from announcer.exabgp.commands import render
from announcer.model import Advert, Prefix


def _row(
    prefix: Prefix, decision: Decision, table: AnnouncedTable, since: float, now: float
) -> dict[str, Any]:
    entry = table.entries.get(prefix)
    return {
        "prefix": str(prefix),
        "announce": decision.announce,
        "announced": entry is not None,
        "reason": decision.reason,
        "sources": list(decision.sources),
        "command": render(Announce(prefix, entry)) if isinstance(entry, Advert) else None,
        "age_seconds": round(now - since, 1),
    }


def _source(status: SourceStatus, now: float) -> str:
    text = "synced" if status.synced else "not_synced"
    if status.lost_since is not None:
        text += f", lost {now - status.lost_since:.0f}s ago: {status.reason}"
    return text


def _drain(drain: Drain, now: float) -> dict[str, Any]:
    return {
        "prefix": "all" if drain.prefix is None else str(drain.prefix),
        "mode": drain.mode.value,
        "origin": drain.origin,
        "remaining_seconds": None if drain.until is None else round(drain.until - now, 1),
    }


def status_report(
    world: World,
    decisions: Mapping[Prefix, Decision],
    table: AnnouncedTable,
    decided_at: Mapping[Prefix, float],
    now: float,
    stats: dict[str, Any],
) -> dict[str, Any]:
    ordered = sorted(decisions)  # a Prefix's order: IPv4 first, then by address
    return {
        "decisions": [_row(p, decisions[p], table, decided_at.get(p, now), now) for p in ordered],
        "sources": {name: _source(st, now) for name, st in world.sources.items()},
        "drains": [_drain(d, now) for d in world.drains.values()],
        "stats": stats,
    }


def render_table(report: Mapping[str, Any]) -> str:
    lines = [f"{'PREFIX':<40} {'ANNOUNCED':<9} {'REASON':<22} {'AGE':>8}  SOURCES"]
    for row in report["decisions"]:
        announced = "yes" if row["announced"] else "no"
        age = f"{row['age_seconds']:.0f}s"
        sources = " ".join(row["sources"])
        lines.append(f"{row['prefix']:<40} {announced:<9} {row['reason']:<22} {age:>8}  {sources}")
    for name, state in sorted(report["sources"].items()):
        lines.append(f"# source {name}: {state}")
    for drain in report["drains"]:
        left = drain["remaining_seconds"]
        until = "until undrained" if left is None else f"{left:.0f}s left"
        lines.append(f"# drain {drain['prefix']} ({drain['mode']}, {drain['origin']}, {until})")
    neighbors = report["stats"].get("neighbors") or {}
    for peer, state in sorted(neighbors.items()):
        lines.append(f"# neighbor {peer}: {state}")
    return "\n".join(lines)
