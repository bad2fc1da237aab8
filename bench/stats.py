"""Pure statistics and report assembly (tested by tests/test_bench_smoke.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

ANCHORS = ("frr", "bird")  # what the announcer is compared with
SUBJECT = "announcer"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """n / median / p99 / min / max, rounded to 3 decimals; {"n": 0} when empty."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def _dig(data: Mapping[str, Any], path: Sequence[str]) -> float | None:
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def _is_anchor(name: str, anchors: Sequence[str]) -> bool:
    return any(name == a or name.startswith(a + "-") for a in anchors)


def ratio_to_best(
    tools: Mapping[str, Mapping[str, Any]],
    path: Sequence[str],
    anchors: Sequence[str] = ANCHORS,
    subject: str = SUBJECT,
) -> dict[str, Any]:
    """subject / best (smallest) anchor for the figure at ``path`` in every tool's report.

    Anchors are matched by name prefix, so "bird" covers "bird" and "bird-default"; the
    figure is reported under the key "announcer" whoever the subject is.
    """
    mine = _dig(tools.get(subject, {}), path)
    candidates = {
        name: value
        for name, report in tools.items()
        if _is_anchor(name, anchors)
        for value in [_dig(report, path)]
        if value is not None and value > 0
    }
    if mine is None or not candidates:
        return {"ratio": None, "why": f"figure missing for {subject} or every anchor"}
    best = min(candidates, key=lambda k: candidates[k])
    return {
        "ratio": round(mine / candidates[best], 3),
        "announcer": mine,
        "best_anchor": best,
        "best": candidates[best],
    }


RATIO_PATHS: dict[str, tuple[str, ...]] = {
    "announce_wire_median_vs_best": ("latency", "announce_wire_ms", "median"),
    "withdraw_wire_median_vs_best": ("latency", "withdraw_wire_ms", "median"),
    "announce_median_vs_best": ("latency", "announce_fib_ms", "median"),
    "withdraw_median_vs_best": ("latency", "withdraw_fib_ms", "median"),
    "burst_100k_vs_best": ("burst", "100000", "announce_fib_seconds"),
}
FLOOR = "exabgp-alone"  # ExaBGP fed the announcer's lines by a stand-in (bench/floor.py)


def _with_burst_fallback(
    tools: Mapping[str, Mapping[str, Any]],
    subject: str,
    details: dict[str, dict[str, Any]],
    key: str,
    against: Sequence[str],
) -> None:
    """Quick mode has no 100k burst: use the largest burst measured by both sides."""
    if details[key]["ratio"] is not None:
        return
    sizes = sorted(tools.get(subject, {}).get("burst", {}), key=int, reverse=True)
    for size in sizes:
        fallback = ratio_to_best(tools, ("burst", size, "announce_fib_seconds"), against, subject)
        if fallback["ratio"] is not None:
            details[key] = {**fallback, "note": f"quick mode: {size} routes"}
            return


def ratios(tools: Mapping[str, Mapping[str, Any]], subject: str = SUBJECT) -> dict[str, Any]:
    """The headline ratios (plain numbers, None when not measurable) and their details.

    burst_100k_vs_best falls back to the largest burst measured by every tool (quick mode)."""
    details = {
        name: ratio_to_best(tools, path, subject=subject) for name, path in RATIO_PATHS.items()
    }
    _with_burst_fallback(tools, subject, details, "burst_100k_vs_best", ANCHORS)
    plain = {name: detail["ratio"] for name, detail in details.items()}
    return {**plain, "details": details}


def ratios_to_floor(
    tools: Mapping[str, Mapping[str, Any]], subject: str = SUBJECT
) -> dict[str, Any]:
    """The same figures as :func:`ratios`, divided by ExaBGP alone's (the floor): how much
    the announcer adds to what ExaBGP itself needs. Keys end in ``_vs_floor``."""
    details = {
        name.replace("_vs_best", "_vs_floor"): ratio_to_best(tools, path, (FLOOR,), subject)
        for name, path in RATIO_PATHS.items()
    }
    _with_burst_fallback(tools, subject, details, "burst_100k_vs_floor", (FLOOR,))
    plain = {name: detail["ratio"] for name, detail in details.items()}
    return {**plain, "details": details}


def cdf(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """(sorted values, cumulative fraction) for plotting."""
    ordered = sorted(values)
    n = len(ordered)
    return ordered, [(i + 1) / n for i in range(n)]


def table_rows(tools: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """The terminal table: one row per tool, the headline figures."""

    def fmt(value: float | None, unit: str = "") -> str:
        return "-" if value is None else f"{value:.2f}{unit}"

    rows = [["tool", "ann wire ms", "wd wire ms", "ann FIB ms", "wd FIB ms",
             "burst max s", "peak RSS MB"]]  # fmt: skip
    for name, report in tools.items():
        bursts = report.get("burst", {})
        biggest = max(bursts, key=int, default=None)
        lat = ("latency",)
        rows.append([
            name,
            fmt(_dig(report, (*lat, "announce_wire_ms", "median"))),
            fmt(_dig(report, (*lat, "withdraw_wire_ms", "median"))),
            fmt(_dig(report, (*lat, "announce_fib_ms", "median"))),
            fmt(_dig(report, (*lat, "withdraw_fib_ms", "median"))),
            f"{fmt(_dig(bursts, (biggest, 'announce_fib_seconds')))} ({biggest})"
            if biggest else "-",
            fmt(_dig(bursts, (biggest, "peak_rss_mb_total"))) if biggest else "-",
        ])  # fmt: skip
    return rows


def render_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
