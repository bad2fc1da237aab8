"""``python -m bench.report_md [REPORT]``: bench-report.json's figures as docs/performance.md's
Markdown tables, to paste (default REPORT: artifacts/bench/bench-report.json).

Every table of the page's "The run" part comes from here, so updating the page after a
run is mechanical. A figure the run did not measure prints as ``-``. The report's headline
keys are added if the file lacks them (bench/summary.py), so an older report renders too.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.summary import STOCK, assemble

DEFAULT = Path(__file__).resolve().parents[1] / "artifacts" / "bench" / "bench-report.json"
TIMES = "\u00d7"  # the multiplication sign of "1.50x" in the page
TOOL_ORDER = ("announcer", STOCK, "exabgp-alone", "frr", "bird", "bird-default")


def dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return None
        data = data[key]
    return data


def num(value: Any, digits: int = 2, unit: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.{digits}f}{unit}"


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _tools(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    tools = report.get("tools", {})
    names = [n for n in TOOL_ORDER if n in tools] + [n for n in tools if n not in TOOL_ORDER]
    return [(n, tools[n]) for n in names]


def machine(report: Mapping[str, Any]) -> str:
    m = report.get("machine", {})
    load = m.get("loadavg_at_start") or [None]
    return (
        f"Mode **{report.get('mode')}**, {num(report.get('elapsed_seconds', 0) / 60, 1)} min; "
        f"{m.get('nproc')} CPUs ({m.get('cpu')}), Linux {m.get('kernel')}, Python "
        f"{m.get('python')}, {m.get('exabgp')}, {m.get('frr')}, {m.get('bird')}; commit "
        f"{' '.join(str(m.get('commit')).split()[:3])} (announcer/ dirty: "
        f"{m.get('announcer_dirty')}); 1-minute load "
        f"{num(load[0])} at the start, {num(report.get('loadavg_at_end'))} at the end."
    )


def targets(report: Mapping[str, Any]) -> str:
    rows = []
    for t in report.get("targets", []):
        digits = {"MB": 1, "x": 2}.get(t["unit"], 3)
        value = t["value"]
        if not isinstance(value, str):
            value = num(value, digits, f" {t['unit']}")
        limit = t["limit"] if isinstance(t["limit"], str) else f"≤ {t['limit']} {t['unit']}"
        status = {True: "**met**", False: "**not met**", None: "not measured"}[t["met"]]
        if t.get("provisional"):
            status += f" ({t['provisional']})"
        if "watchdog_mb" in t:
            value += f" (+ its watchdog child {num(t['watchdog_mb'], 1)} MB)"
        rows.append([t["target"], value.strip(), limit.strip(), status])
    return table(["target (issue 15)", "value", "limit", "status"], rows)


def latency(report: Mapping[str, Any]) -> str:
    rows = []
    for name, tool in _tools(report):
        lat = tool.get("latency")
        if not isinstance(lat, Mapping):
            continue
        cells = [f"{num(dig(lat, k, 'median'), 3)} / {num(dig(lat, k, 'p99'), 1)}"
                 for k in ("announce_wire_ms", "withdraw_wire_ms", "announce_fib_ms",
                           "withdraw_fib_ms")]  # fmt: skip
        rows.append([name, *cells, num(lat.get("loadavg_1m"))])
    head = ["tool", "announce → wire", "withdraw → wire", "announce → leaf FIB",
            "withdraw → leaf FIB", "load"]  # fmt: skip
    return table(head, rows)


def _rss(rss: Any) -> str:
    if not isinstance(rss, Mapping):
        return "-"
    parts = " + ".join(f"{k} {num(v, 1)}" for k, v in rss.items())
    return f"{num(sum(rss.values()), 1)} ({parts})" if len(rss) > 1 else num(sum(rss.values()), 1)


def bursts(report: Mapping[str, Any]) -> str:
    sizes = sorted({s for _, t in _tools(report) for s in t.get("burst", {})}, key=int)
    rows = []
    for name, tool in _tools(report):
        got = tool.get("burst", {})
        cells = []
        for size in sizes:
            b = got.get(size, {})
            failed = "failed" in b
            cells.append("failed" if failed else f"{num(b.get('announce_fib_seconds'))} / "
                         f"{num(b.get('withdraw_fib_seconds'))}")  # fmt: skip
        biggest = max(got, key=int, default=None)
        rows.append([name, *cells, _rss(dig(got, biggest, "peak_rss_mb")) if biggest else "-"])
    head = ["tool", *[f"{int(s) // 1000}k add / del (s)" for s in sizes], "peak RSS, MB"]
    return table(head, rows)


def ratios(report: Mapping[str, Any]) -> str:
    figures = [("announce → wire, median", "announce_wire_median"),
               ("withdraw → wire, median", "withdraw_wire_median"),
               ("announce → leaf FIB, median", "announce_median"),
               ("withdraw → leaf FIB, median", "withdraw_median"),
               ("100k burst → leaf FIB", "burst_100k")]  # fmt: skip
    sources = [("ratios", "_vs_best"), ("ratios_to_floor", "_vs_floor")]
    stock = report.get("stock", {})
    rows = []
    for label, key in figures:
        row = [label]
        for block in (report, stock):
            for section, suffix in sources:
                row.append(num(dig(block, section, key + suffix), 2, TIMES))
        detail = dig(report, "ratios", "details", key + "_vs_best") or {}
        row.append(
            str(detail.get("best_anchor", "-"))
            + (f" ({detail['note']})" if "note" in detail else "")
        )
        rows.append(row)
    head = ["figure", "announcer ÷ best anchor", "announcer ÷ ExaBGP alone",
            "stock ÷ best anchor", "stock ÷ ExaBGP alone", "best anchor"]  # fmt: skip
    return table(head, rows)


def modes(report: Mapping[str, Any]) -> str:
    m = report.get("exabgp_modes", {})
    acc, stock = m.get("accelerated", {}), m.get("stock", {})
    sizes = sorted(set(acc.get("burst_announce_fib_s", {})) | set(stock.get(
        "burst_announce_fib_s", {})), key=int)  # fmt: skip

    def row(label: str, get: Callable[[Mapping[str, Any]], Any], digits: int = 2) -> list[str]:
        return [label, num(get(acc), digits), num(get(stock), digits)]

    rows = [row(f"{int(s) // 1000}k burst add / del, s",
                lambda d, s=s: dig(d, "burst_announce_fib_s", s)) for s in sizes]  # fmt: skip
    for r, s in zip(rows, sizes, strict=True):
        for i, side in ((1, acc), (2, stock)):
            r[i] += f" / {num(dig(side, 'burst_withdraw_fib_s', s))}"
    rows += [
        row(
            f"ExaBGP peak RSS at {int(s) // 1000}k, MB",
            lambda d, s=s: dig(d, "peak_rss_mb_exabgp", s),
            1,
        )
        for s in sizes[-1:]
    ]
    rows += [
        row("one route → wire, median ms", lambda d: d.get("announce_wire_median_ms"), 3),
        row("startup → leaf FIB, s", lambda d: d.get("startup_to_leaf_fib_s")),
        row("churn 1k/s, event → line p99, ms", lambda d: d.get("churn_event_to_line_p99_ms"), 1),
        row("churn 1k/s, ExaBGP CPU %", lambda d: d.get("churn_exabgp_cpu_percent"), 1),
    ]
    note = (f"\n\nLauncher: accelerated `{acc.get('exabgp_mode')}`; "
            f"stock `{stock.get('exabgp_mode')}`.")  # fmt: skip
    return table(["figure", "accelerated (default)", "stock"], rows) + note


def own_share(report: Mapping[str, Any]) -> str:
    ours = report.get("announcer_only", {})
    d = ours.get("details", {})
    run = report.get("announcer_only_run", {})
    rows = [
        ["peak RSS at 1k (fresh, kernel source only), MB",
         _rss(d.get("peak_rss_mb_1k_by_process"))],
        [f"peak RSS in the {d.get('rss_100k_routes')}-route burst, MB",
         _rss(d.get("peak_rss_mb_100k_by_process"))],
        ["CPU seconds of that burst's announce, by process",
         _rss(d.get("cpu_seconds_100k_announce")).replace(" MB", "")],
        ["one route: kernel → line written, median ms (stand-in / with ExaBGP)",
         f"{num(ours.get('kernel_to_line_median_ms'), 3)} / "
         f"{num(d.get('kernel_to_line_median_ms_with_exabgp'), 3)}"],
        ["churn 1k/s: kernel → line written p99, ms (stand-in / with ExaBGP)",
         f"{num(ours.get('churn_event_to_line_p99_ms'), 2)} / "
         f"{num(d.get('churn_event_to_line_p99_ms_with_exabgp'), 2)}"],
        ["churn 1k/s: announcer CPU %", num(dig(run, "churn", "cpu_percent", "announcer"), 1)],
        [f"burst of {num(d.get('burst_routes'), 0)} routes: kernel → last line written, s",
         num(d.get("burst_kernel_to_last_line_s"), 3)],
    ]  # fmt: skip
    return table(["the announcer's own share", "value"], rows)


def processes(report: Mapping[str, Any]) -> str:
    """The announcer's processes apart from ExaBGP's, per burst: peak RSS and CPU seconds."""
    rows = []
    for name, tool in _tools(report):
        if name not in ("announcer", STOCK, "exabgp-alone"):
            continue
        for size, b in sorted(tool.get("burst", {}).items(), key=lambda item: int(item[0])):
            if not isinstance(b, Mapping) or "failed" in b:
                continue
            rss, cpu = b.get("peak_rss_mb", {}), b.get("cpu_seconds_announce", {})
            rows.append([name, f"{int(size) // 1000}k",
                         *(num(rss.get(r), 1) for r in ("exabgp", "announcer", "watchdog")),
                         *(num(cpu.get(r), 2) for r in ("exabgp", "announcer"))])  # fmt: skip
    head = ["tool", "burst", "peak RSS ExaBGP MB", "announcer MB", "watchdog MB",
            "CPU s (announce) ExaBGP", "announcer"]  # fmt: skip
    return table(head, rows)


STAGES = ("kernel_to_netlink_read", "netlink_read_to_line_queued", "queued_to_pipe_write",
          "kernel_to_pipe_write", "pipe_write_to_exabgp_reply", "pipe_write_to_wire",
          "wire_to_leaf_fib", "total_to_wire")  # fmt: skip


def stages(report: Mapping[str, Any]) -> str:
    alone = dig(report, "announcer_only_run", "one_route_ms") or {}
    real = dig(report, "announcer_probe", "accelerated", "stages_ms") or {}
    rows = []
    for stage in STAGES:
        cells = [f"{num(dig(src, verb, stage, 'median'), 3)} / "
                 f"{num(dig(src, verb, stage, 'p99'), 2)}"
                 for src in (alone, real) for verb in ("announce", "withdraw")]  # fmt: skip
        rows.append([stage.replace("_", " "), *cells])
    head = ["stage (ms, median / p99)", "stand-in: announce", "stand-in: withdraw",
            "ExaBGP: announce", "ExaBGP: withdraw"]  # fmt: skip
    return table(head, rows)


def churn(report: Mapping[str, Any]) -> str:
    sources = [("stand-in ExaBGP", dig(report, "announcer_only_run", "churn"), "event_to_line"),
               ("accelerated ExaBGP", dig(report, "announcer_probe", "accelerated", "churn"),
                "event_to_command"),
               ("stock ExaBGP", dig(report, "announcer_probe", "stock", "churn"),
                "event_to_command")]  # fmt: skip
    rows = []
    for label, c, key in sources:
        if not isinstance(c, Mapping):
            continue
        e = c.get(key, {})
        rows.append([label, num(c.get("achieved_rate"), 0),
                     f"{e.get('matched')} / {e.get('changes', '-')}",
                     *(f"{num(dig(e, k, 'median'), 2)} / {num(dig(e, k, 'p99'), 1)}"
                       for k in ("netlink_read_to_command_ms",
                                 "kernel_change_to_line_written_ms")),
                     f"{num(dig(c, 'reconcile_ms', 'median'), 2)} / "
                     f"{num(dig(c, 'reconcile_ms', 'p99'), 1)}",
                     " + ".join(f"{k} {v}" for k, v in c.get("cpu_percent", {}).items()),
                     str(dig(c, "gc_pauses_over_1ms", "max_ms"))])  # fmt: skip
    head = ["ExaBGP side", "changes/s", "matched", "netlink read → queued ms",
            "kernel → line written ms", "reconcile ms", "CPU %", "longest GC ms"]  # fmt: skip
    return table(head, rows)


def idle(report: Mapping[str, Any]) -> str:
    rows = []
    for name, r in report.get("idle", {}).items():
        if "failed" in r:
            rows.append([name, "failed: " + r["failed"], "-", "-"])
            continue
        by = " + ".join(f"{k} {num(v)}" for k, v in r.get("cpu_percent_by_process", {}).items())
        rows.append([name, f"**{num(r.get('cpu_percent'))}** ({by})", _rss(r.get("rss_mb")),
                     r.get("health_checks", "none")])  # fmt: skip
    return table(["tool (100 routes)", "CPU % of one core", "RSS, MB", "health checks"], rows)


def startup(report: Mapping[str, Any]) -> str:
    rows = []
    for name, tool in _tools(report):
        s = tool.get("startup")
        if isinstance(s, Mapping) and "failed" not in s:
            rows.append([name, num(s.get("start_to_wire_seconds")),
                         num(s.get("start_to_leaf_fib_seconds")),
                         num(s.get("start_to_open_seconds")),
                         num(s.get("open_to_wire_seconds"))])  # fmt: skip
    head = ["tool", "start → last UPDATE on the wire", "→ leaf FIB", "start → OPEN",
            "OPEN → last UPDATE"]  # fmt: skip
    resync = [
        f"{n}: {num(dig(t, 'resync_after_kill9', 'kill_to_resynced_wire_seconds'))} s, "
        f"{dig(t, 'resync_after_kill9', 'other_routes_that_left_the_leaf')} other routes "
        "left the leaf"
        for n, t in _tools(report)
        if "resync_after_kill9" in t
    ]
    return table(head, rows) + "\n\nResync after kill -9: " + "; ".join(resync or ["-"])


def micro(report: Mapping[str, Any]) -> str:
    rows = []
    for key, label in (("step_per_route_event", "incremental step (route event)"),
                       ("instance_health_change", "one instance's health change"),
                       ("full_step", "full step"),
                       ("step_after_withdrawn_history", "step after N withdrawn")):  # fmt: skip
        m = dig(report, "micro_core", key)
        if isinstance(m, Mapping):
            cells = [f"{num(r.get('mean_ms'), 3)} ms" for r in m.get("rows", [])]
            rows.append([label, " · ".join(cells), str(m.get("complexity"))])
    return table(["micro (mean per event at 1k · 10k · 100k)", "cost", "verdict"], rows)


def profile(report: Mapping[str, Any]) -> str:
    """ExaBGP under cProfile, stock and accelerated: named parts, then the top functions."""
    p = report.get("exabgp_profile", {})
    stock, fast = p.get("burst_profile", {}), p.get("burst_profile_accelerated", {})
    parts = list(dict.fromkeys([*stock.get("share_of_exabgp_wall_time", {}),
                                *fast.get("share_of_exabgp_wall_time", {})]))  # fmt: skip
    rows = [["routes → FRR, s (profiled)", num(stock.get("seconds_to_peer_profiled")),
             num(fast.get("seconds_to_peer_profiled"))]]  # fmt: skip
    rows += [[part.replace("_", " "),
              num(dig(stock, "share_of_exabgp_wall_time", part), 3),
              num(dig(fast, "share_of_exabgp_wall_time", part), 3)] for part in parts]  # fmt: skip
    top = [[t["function"], num(t["share"], 3)] for t in fast.get("top_own_time", [])]
    idle = p.get("idle", {})
    speeds = ", ".join(f"reactor.speed {v} {num(idle.get(f'reactor_speed_{v}_cpu_percent'))}"
                       for v in ("1.0", "0.1"))  # fmt: skip
    return (table(["share of ExaBGP's profiled time", "stock", "accelerated"], rows)
            + "\n\n" + table(["accelerated: most own time", "share"], top)
            + f"\n\nIdle ExaBGP, CPU %: {speeds}.")  # fmt: skip


def failover(report: Mapping[str, Any]) -> str:
    f = report.get("health_failover", {})
    rows = [[name, num(dig(r, "service_stop_to_update_seconds", "median"), 3),
             num(dig(r, "service_stop_to_update_seconds", "p99"), 3),
             str(dig(r, "service_stop_to_update_seconds", "n"))]
            for name, r in f.items() if isinstance(r, Mapping) and name != "settings"]  # fmt: skip
    return table(["setting", "median s", "p99 s", "trials"], rows)


SECTIONS: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = [
    ("Machine and load", machine), ("Targets", targets), ("Ratios", ratios),
    ("One /32 at a time (ms, median / p99)", latency),
    ("Bursts (seconds until the last route is in / gone from the leaf FIB)", bursts),
    ("Accelerated and stock ExaBGP", modes), ("The announcer's own share", own_share),
    ("Per process, per burst", processes),
    ("Stages of one route", stages), ("Churn, 1,000 changes/s", churn),
    ("Idle, 100 routes", idle), ("Startup (seconds)", startup),
    ("Core micro-benchmarks", micro), ("ExaBGP's profile (burst of the announcer's lines)",
                                       profile), ("Health failover", failover),
]  # fmt: skip


def render(report: dict[str, Any]) -> str:
    if "targets" not in report:
        assemble(report)
    return "\n\n".join(f"### {title}\n\n{fn(report)}" for title, fn in SECTIONS) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT
    sys.stdout.write(render(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
