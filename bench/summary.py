"""The headline keys of bench-report.json, from the raw sections (pure; tests/test_bench_report.py).

* ``ratios`` (announcer / best anchor, unchanged keys), ``ratios_to_floor`` (announcer /
  ExaBGP alone), ``stock`` (the same two for the announcer on stock ExaBGP);
* ``floor``: ExaBGP alone (bench/floor.py), ``burst_100k_exabgp_alone_s`` first;
* ``announcer_only``: the announcer's own RSS, churn tail and one-route share;
* ``idle_cpu_percent``: per tool, 100 routes (the announcer with 20 health checks);
* ``exabgp_modes``: accelerated (the default) and stock ExaBGP side by side;
* ``targets``: issue 15's "Done when", each with its value and met / not met.

A figure that was not measured is None, never 0. When a quick run has no 100k burst the
largest burst stands in, and the entry says so (``routes``, ``note``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.stats import FLOOR, SUBJECT, _dig, ratios, ratios_to_floor

STOCK = "announcer-stock"
# "announcer" is the daemon ExaBGP runs; its watchdog child (a second, small interpreter
# that only waits for heartbeats) is reported beside it, and counted in every total.
DAEMON = ("announcer",)


def _burst_size(report: Mapping[str, Any], wanted: int = 100_000) -> str | None:
    """The burst to quote: ``wanted`` routes if measured, else the largest one."""
    bursts = report.get("burst", {})
    done = [s for s, b in bursts.items() if isinstance(b, Mapping) and "failed" not in b]
    if str(wanted) in done:
        return str(wanted)
    return max(done, key=int, default=None)


def _sized(value: Any, size: str | None, wanted: int = 100_000) -> dict[str, Any]:
    out: dict[str, Any] = {"routes": int(size) if size else None}
    if size and int(size) != wanted:
        out["note"] = f"quick mode: {size} routes, not {wanted}"
    return {"value": value, **out}


def _sum_roles(rss: Mapping[str, Any] | None, roles: Sequence[str]) -> float | None:
    if not rss or not any(r in rss for r in roles):
        return None
    return round(sum(float(rss.get(r, 0.0)) for r in roles), 1)


def floor(tools: Mapping[str, Any]) -> dict[str, Any]:
    mine = tools.get(FLOOR, {})
    size = _burst_size(mine)
    burst = mine.get("burst", {}).get(size, {}) if size else {}
    sized = _sized(burst.get("announce_fib_seconds"), size)
    return {
        "burst_100k_exabgp_alone_s": sized.pop("value"),
        **sized,
        "withdraw_100k_exabgp_alone_s": burst.get("withdraw_fib_seconds"),
        "peak_rss_mb_exabgp": _dig(burst, ("peak_rss_mb", "exabgp")),
        "announce_wire_median_ms": _dig(mine, ("latency", "announce_wire_ms", "median")),
        "withdraw_wire_median_ms": _dig(mine, ("latency", "withdraw_wire_ms", "median")),
        "exabgp_mode": mine.get("exabgp_mode"),
    }


def announcer_only(report: Mapping[str, Any]) -> dict[str, Any]:
    """RSS at 100k of the announcer (the daemon) in the real 100k burst (the same burst as
    the total); RSS at 1k, churn and one-route share from the stand-in run. The watchdog
    child's RSS is in the details (``*_by_process``)."""
    tools = report.get("tools", {})
    size = _burst_size(tools.get(SUBJECT, {}))
    burst = tools.get(SUBJECT, {}).get("burst", {}).get(size, {}) if size else {}
    alone = report.get("announcer_only_run", {})
    probe = report.get("announcer_probe", {}).get("accelerated", {})
    sized = _sized(_sum_roles(burst.get("peak_rss_mb"), DAEMON), size)
    return {
        "peak_rss_mb_100k": sized.pop("value"),
        "peak_rss_mb_1k": _sum_roles(_dig_map(alone, ("startup", "peak_rss_mb")), DAEMON),
        "churn_event_to_line_p99_ms": _dig(
            alone, ("churn", "event_to_line", "kernel_change_to_line_written_ms", "p99")
        ),
        "kernel_to_line_median_ms": _dig(
            alone, ("one_route_ms", "announce", "kernel_to_pipe_write", "median")
        ),
        "details": {
            **{f"rss_100k_{k}": v for k, v in sized.items()},
            "peak_rss_mb_100k_by_process": burst.get("peak_rss_mb"),
            "peak_rss_mb_1k_by_process": _dig_map(alone, ("startup", "peak_rss_mb")),
            "cpu_seconds_100k_announce": burst.get("cpu_seconds_announce"),
            "churn_event_to_line_p99_ms_with_exabgp": _dig(
                probe, ("churn", "event_to_command", "kernel_change_to_line_written_ms", "p99")
            ),
            "kernel_to_line_median_ms_with_exabgp": _dig(
                probe, ("stages_ms", "announce", "kernel_to_pipe_write", "median")
            ),
            "burst_kernel_to_last_line_s": _dig(
                alone, ("burst", "kernel_to_last_line_written_seconds")
            ),
            "burst_routes": _dig(alone, ("burst", "routes")),
            "sources": "rss_100k: tools.announcer burst (real ExaBGP); the rest: "
            "announcer_only_run (stand-in ExaBGP answering at once)",
        },
    }


def _dig_map(data: Mapping[str, Any], path: Sequence[str]) -> Mapping[str, Any] | None:
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, Mapping) else None


def idle_cpu(idle: Mapping[str, Any]) -> dict[str, float | None]:
    return {name: _dig(result, ("cpu_percent",)) for name, result in idle.items()}


def _mode(tools: Mapping[str, Any], name: str, probe: Mapping[str, Any]) -> dict[str, Any]:
    mine = tools.get(name, {})
    bursts = {s: b for s, b in mine.get("burst", {}).items() if isinstance(b, Mapping)}
    return {
        "exabgp_mode": mine.get("exabgp_mode"),
        "burst_announce_fib_s": {s: b.get("announce_fib_seconds") for s, b in bursts.items()},
        "burst_withdraw_fib_s": {s: b.get("withdraw_fib_seconds") for s, b in bursts.items()},
        "peak_rss_mb_exabgp": {s: _dig(b, ("peak_rss_mb", "exabgp")) for s, b in bursts.items()},
        "announce_wire_median_ms": _dig(mine, ("latency", "announce_wire_ms", "median")),
        "startup_to_leaf_fib_s": _dig(mine, ("startup", "start_to_leaf_fib_seconds")),
        "churn_event_to_line_p99_ms": _dig(
            probe, ("churn", "event_to_command", "kernel_change_to_line_written_ms", "p99")
        ),
        "churn_exabgp_cpu_percent": _dig(probe, ("churn", "cpu_percent", "exabgp")),
    }


def exabgp_modes(report: Mapping[str, Any]) -> dict[str, Any]:
    tools = report.get("tools", {})
    probes = report.get("announcer_probe", {})
    out: dict[str, Any] = {
        "accelerated": _mode(tools, SUBJECT, probes.get("accelerated", {})),
        "stock": _mode(tools, STOCK, probes.get("stock", {})),
    }
    size = _burst_size(tools.get(SUBJECT, {}))
    fast = out["accelerated"]["burst_announce_fib_s"].get(size) if size else None
    slow = out["stock"]["burst_announce_fib_s"].get(size) if size else None
    out["stock_over_accelerated_burst"] = {
        **_sized(round(slow / fast, 2) if fast and slow else None, size)
    }
    return out


def _target(name: str, value: float | None, limit: float, unit: str,
            provisional: str | None = None) -> dict[str, Any]:  # fmt: skip
    entry: dict[str, Any] = {"target": name, "value": value, "limit": limit, "unit": unit,
                             "met": None if value is None else value <= limit}  # fmt: skip
    if provisional:
        entry["provisional"] = provisional
    return entry


def targets(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue 15's "Done when", in its order."""
    ratio = report.get("ratios", {})
    note = ratio.get("details", {}).get("burst_100k_vs_best", {}).get("note")
    mine = report.get("tools", {}).get(SUBJECT, {})
    size = _burst_size(mine)
    total = _dig(mine, ("burst", size, "peak_rss_mb_total")) if size else None
    quick = f"quick run: {size} routes" if size and size != "100000" else None
    ours = report.get("announcer_only", {})
    micro = report.get("micro_core", {}).get("instance_health_change", {})
    rows, complexity = micro.get("rows", []), micro.get("complexity")
    instance = {
        "target": "one instance's change O(its prefixes)",
        "value": f"{rows[-1]['mean_ms']} ms at {rows[-1]['routes']} routes" if rows else None,
        "limit": "O(changes)",
        "unit": "",
        "met": None if complexity is None else complexity == "O(changes)",
    }
    by_1k = ours.get("details", {}).get("peak_rss_mb_1k_by_process") or {}
    by_100k = ours.get("details", {}).get("peak_rss_mb_100k_by_process") or {}
    rss_100k = _target("peak RSS announcer at 100k", ours.get("peak_rss_mb_100k"), 60, "MB", quick)
    rss_1k = _target(
        "peak RSS announcer at 1k, kernel source only", ours.get("peak_rss_mb_1k"), 40, "MB"
    )
    for entry, by in ((rss_100k, by_100k), (rss_1k, by_1k)):
        if "watchdog" in by:
            entry["watchdog_mb"] = by["watchdog"]  # its child, not in the value
    return [
        _target("100k burst <= 1.5x best anchor", ratio.get("burst_100k_vs_best"), 1.5, "x",
                note),
        _target("peak RSS announcer + ExaBGP at 100k", total, 200, "MB", quick),
        rss_100k,
        rss_1k,
        _target("churn 1k/s event -> line p99 (ours)", ours.get("churn_event_to_line_p99_ms"),
                5, "ms"),
        instance,
        _target("kernel -> line, one route, median (ours)",
                ours.get("kernel_to_line_median_ms"), 0.3, "ms"),
    ]  # fmt: skip


def assemble(report: dict[str, Any]) -> None:
    """Adds the headline keys to a report that has its raw sections."""
    tools = report.get("tools", {})
    report["ratios"] = ratios(tools)
    report["ratios_to_floor"] = ratios_to_floor(tools)
    report["stock"] = {
        "ratios": ratios(tools, STOCK),
        "ratios_to_floor": ratios_to_floor(tools, STOCK),
    }
    report["floor"] = floor(tools)
    report["announcer_only"] = announcer_only(report)
    report["idle_cpu_percent"] = idle_cpu(report.get("idle", {}))
    report["exabgp_modes"] = exabgp_modes(report)
    report["targets"] = targets(report)
