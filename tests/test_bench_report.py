"""bench-report.json's headline keys (bench/summary.py) and their tables (bench/report_md.py).

Pure: a synthetic report goes in, no timing is measured or asserted.
"""

from __future__ import annotations

import copy
from typing import Any

from bench.report_md import render
from bench.summary import assemble

LEGACY_RATIOS = {
    "announce_wire_median_vs_best",
    "withdraw_wire_median_vs_best",
    "announce_median_vs_best",
    "withdraw_median_vs_best",
    "burst_100k_vs_best",
}


def _tool(wire: float, bursts: dict[str, float], rss: dict[str, float]) -> dict[str, Any]:
    return {
        "latency": {
            key: {"median": wire if "wire" in key else wire + 60, "p99": wire * 2}
            for key in (
                "announce_wire_ms",
                "withdraw_wire_ms",
                "announce_fib_ms",
                "withdraw_fib_ms",
            )
        },
        "burst": {
            size: {
                "announce_fib_seconds": seconds,
                "withdraw_fib_seconds": seconds / 2,
                "peak_rss_mb": rss,
                "peak_rss_mb_total": round(sum(rss.values()), 1),
                "cpu_seconds_announce": dict.fromkeys(rss, 1.0),
            }
            for size, seconds in bursts.items()
        },
    }


def _report(size: str = "100000") -> dict[str, Any]:
    ours = {"exabgp": 95.0, "announcer": 50.0, "watchdog": 10.0}
    return {
        "mode": "full" if size == "100000" else "quick",
        "machine": {"nproc": 2, "cpu": "test", "loadavg_at_start": [0.5, 0.5, 0.5]},
        "tools": {
            "announcer": {
                **_tool(2.0, {"1000": 0.5, size: 6.0}, ours),
                "exabgp_mode": "mode=accelerated",
            },
            "announcer-stock": {
                **_tool(2.1, {"1000": 1.0, size: 30.0}, ours),
                "exabgp_mode": "mode=stock",
            },
            "exabgp-alone": _tool(1.0, {"1000": 0.2, size: 4.0}, {"exabgp": 90.0}),
            "frr": _tool(60.0, {"1000": 0.2, size: 5.0}, {"zebra": 180.0, "bgpd": 80.0}),
            "bird": _tool(0.2, {"1000": 0.1, size: 4.0}, {"bird": 24.0}),
        },
        "announcer_only_run": {
            "startup": {"peak_rss_mb": {"announcer": 30.0, "watchdog": 8.0}},
            "one_route_ms": {"announce": {"kernel_to_pipe_write": {"median": 0.5}}},
            "churn": {"event_to_line": {"kernel_change_to_line_written_ms": {"p99": 3.0}}},
            "burst": {"routes": int(size), "kernel_to_last_line_written_seconds": 1.2},
        },
        "announcer_probe": {
            mode: {
                "churn": {"event_to_command": {"kernel_change_to_line_written_ms": {"p99": p99}}}
            }
            for mode, p99 in (("accelerated", 4.0), ("stock", 400.0))
        },
        "idle": {
            "announcer": {"cpu_percent": 3.0},
            "frr": {"cpu_percent": 0.1},
            "bird": {"failed": "no bird"},
        },
        "micro_core": {
            "instance_health_change": {
                "rows": [{"routes": 1000, "mean_ms": 0.05}, {"routes": 100000, "mean_ms": 0.05}],
                "complexity": "O(changes)",
            }
        },
    }


def test_the_report_keeps_its_ratios_and_adds_the_floor_our_share_idle_and_modes() -> None:
    report = _report()
    assemble(report)
    assert set(report["ratios"]) >= LEGACY_RATIOS
    assert report["ratios"]["burst_100k_vs_best"] == 1.5  # 6.0 / BIRD's 4.0
    assert report["ratios_to_floor"]["burst_100k_vs_floor"] == 1.5  # 6.0 / 4.0 alone
    assert report["ratios_to_floor"]["announce_wire_median_vs_floor"] == 2.0
    assert report["stock"]["ratios"]["burst_100k_vs_best"] == 7.5
    assert report["floor"]["burst_100k_exabgp_alone_s"] == 4.0
    assert report["floor"]["routes"] == 100_000
    assert "note" not in report["floor"]
    ours = report["announcer_only"]
    assert {
        k: ours[k]
        for k in (
            "peak_rss_mb_100k",
            "peak_rss_mb_1k",
            "churn_event_to_line_p99_ms",
            "kernel_to_line_median_ms",
        )
    } == {
        "peak_rss_mb_100k": 50.0,  # the daemon; its watchdog (10) is reported beside it
        "peak_rss_mb_1k": 30.0,
        "churn_event_to_line_p99_ms": 3.0,
        "kernel_to_line_median_ms": 0.5,
    }
    assert report["idle_cpu_percent"] == {"announcer": 3.0, "frr": 0.1, "bird": None}
    modes = report["exabgp_modes"]
    assert modes["accelerated"]["exabgp_mode"] == "mode=accelerated"
    assert modes["stock"]["burst_announce_fib_s"]["100000"] == 30.0
    assert modes["stock"]["churn_event_to_line_p99_ms"] == 400.0
    assert modes["stock_over_accelerated_burst"]["value"] == 5.0


def test_targets_say_met_or_not_met_each() -> None:
    report = _report()
    assemble(report)
    met = {t["target"]: t["met"] for t in report["targets"]}
    assert met == {
        "100k burst <= 1.5x best anchor": True,
        "peak RSS announcer + ExaBGP at 100k": True,  # 155
        "peak RSS announcer at 100k": True,  # 50
        "peak RSS announcer at 1k, kernel source only": True,  # 30
        "churn 1k/s event -> line p99 (ours)": True,
        "one instance's change O(its prefixes)": True,
        "kernel -> line, one route, median (ours)": False,  # 0.5 > 0.3
    }
    assert not any("provisional" in t for t in report["targets"])
    rss_1k = next(
        t for t in report["targets"] if t["target"].startswith("peak RSS announcer at 1k")
    )
    assert rss_1k["value"] == 30.0
    assert rss_1k["watchdog_mb"] == 8.0  # reported beside the daemon, not hidden
    broken = _report()
    del broken["announcer_only_run"]
    broken["micro_core"] = {}
    assemble(broken)
    unknown = [t["target"] for t in broken["targets"] if t["met"] is None]
    assert "peak RSS announcer at 1k, kernel source only" in unknown
    assert "one instance's change O(its prefixes)" in unknown


def test_a_quick_run_quotes_its_largest_burst_and_says_so() -> None:
    report = _report("5000")
    assemble(report)
    assert report["floor"]["burst_100k_exabgp_alone_s"] == 4.0
    assert report["floor"]["routes"] == 5000
    assert "5000" in report["floor"]["note"]
    assert "quick mode" in report["ratios"]["details"]["burst_100k_vs_best"]["note"]
    assert "quick mode" in report["ratios_to_floor"]["details"]["burst_100k_vs_floor"]["note"]
    provisional = [t["target"] for t in report["targets"] if "provisional" in t]
    assert "peak RSS announcer + ExaBGP at 100k" in provisional


def test_missing_tools_give_none_not_zero() -> None:
    report = {"tools": {}}
    assemble(report)
    assert report["floor"]["burst_100k_exabgp_alone_s"] is None
    assert report["announcer_only"]["peak_rss_mb_100k"] is None
    assert report["ratios_to_floor"]["burst_100k_vs_floor"] is None
    assert report["idle_cpu_percent"] == {}


def test_the_markdown_tables_carry_the_figures_and_the_verdicts() -> None:
    report = _report()
    assemble(report)
    text = render(copy.deepcopy(report))
    assert "| announcer |" in text
    assert "| exabgp-alone |" in text
    assert "not met" in text
    assert "**met**" in text
    assert "6.00" in text  # the announcer's 100k burst
    assert "1.50\u00d7" in text  # its ratio to the best anchor and to the floor
    assert "| announcer | 100k | 95.0 | 50.0 | 10.0 | 1.00 | 1.00 |" in text
