"""``python -m bench [--quick]``: the announcer against FRR and BIRD, side by side.

Writes artifacts/bench/bench-report.json and bench-latency-cdf.png (ignored by git; the
figures worth keeping go to docs/performance.md) and prints a table. Every setup runs in
its own pair of namespaces (aabenchh*/aabenchl*), created and removed here, also on
failure and Ctrl-C/SIGTERM. See docs/performance.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import announcer_only, exabgp_profile, failover, floor, idle, micro
from bench.measure import block, burst, churn, latency, loadavg, resync, startup
from bench.nl import wait_until
from bench.setups import REPO, AnnouncerTool, BirdTool, FrrTool, Lab, Tool, lab
from bench.stages import Trial, breakdown, event_to_command, pace, parse_probe
from bench.stats import render_table, summarize, table_rows
from bench.summary import STOCK, assemble
from tests.netlab import cleanup_stale_namespaces

ARTIFACTS = REPO / "artifacts" / "bench"


@dataclass(frozen=True)
class Plan:
    quick: bool
    trials: int
    bursts: tuple[int, ...]
    churn_seconds: float
    startup_routes: int
    probe_trials: int
    probe_burst: int
    idle_seconds: float

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, 20, (1_000, 5_000), 10, 2_000, 15, 5_000, 15)
        return cls(False, 100, (1_000, 10_000, 100_000), 30, 10_000, 40, 10_000, 60)


# Disjoint prefix blocks (bench.measure.block) per figure: nothing is ever reused.
WARMUP, LATENCY, STARTUP, CHURN = 1, 2, 3, 4
BURST_BLOCKS = {1_000: 10, 5_000: 11, 10_000: 12, 100_000: 13}  # 100k spans 13 and 14
FRESH, IDLE = 20, 30  # (bench.floor needs blocks >= 8 for its bursts and idle routes)


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')} load {loadavg():.2f}] {message}", flush=True)


def _attempt(what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except Exception as exc:  # one figure failing must not lose the others
        traceback.print_exc()
        return {"failed": f"{what}: {type(exc).__name__}: {exc}"}


def _trials(lab_: Lab, count: int) -> tuple[dict[str, Any], list[Trial], dict[str, list[float]]]:
    latency(lab_, block(WARMUP, 3))  # the first UPDATEs after a session comes up are slower
    result = latency(lab_, block(LATENCY, count))
    trials = []
    for prefix, t_add, t_del in result.prefixes:
        dst = int(prefix)
        trials.append(Trial(str(prefix), "announce", t_add,
                            lab_.wire.first_after("announced", dst, t_add),
                            lab_.fib.added.get(dst)))  # fmt: skip
        trials.append(Trial(str(prefix), "withdraw", t_del,
                            lab_.wire.first_after("withdrawn", dst, t_del),
                            lab_.fib.deleted.get(dst)))  # fmt: skip
    raw = {
        "announce_wire_ms": [round(v, 4) for v in result.announce_wire],
        "announce_fib_ms": [round(v, 4) for v in result.announce_fib],
        "withdraw_wire_ms": [round(v, 4) for v in result.withdraw_wire],
        "withdraw_fib_ms": [round(v, 4) for v in result.withdraw_fib],
    }
    return result.report(), trials, raw


def run_tool(name: str, make: Callable[[Path, str], Tool], plan: Plan, work: Path,
             bursts: tuple[int, ...], do_latency: bool = True) -> dict[str, Any]:  # fmt: skip
    """One tool, one lab: startup at N routes, (resync), latency, bursts, (churn)."""
    report: dict[str, Any] = {}
    _log(f"{name}: lab up")
    with lab(work / name) as lab_:
        tool = make(work / name / "tool", lab_.host)
        try:
            start_routes = block(STARTUP, plan.startup_routes)
            report["startup"] = _attempt("startup", lambda: startup(lab_, tool, start_routes, 180))
            _log(f"{name}: startup {report['startup']}")
            lab_.wait_session(60)
            if isinstance(tool, AnnouncerTool):
                report["resync_after_kill9"] = _attempt("resync", lambda: resync(
                    lab_, tool, start_routes, block(FRESH, 1)[0], 60))  # fmt: skip
                _log(f"{name}: resync {report['resync_after_kill9']}")
            _clear(lab_, [*start_routes, *block(FRESH, 1)])
            if isinstance(tool, AnnouncerTool):
                report["exabgp_mode"] = tool.exabgp_mode()
            for pid_list in tool.processes().values():
                report.setdefault("pids", []).extend(pid_list)
            if do_latency:
                report["latency"], _, report["raw"] = _trials(lab_, plan.trials)
                _log(f"{name}: latency {_brief(report['latency'])}")
            report["burst"] = {}
            for size in bursts:
                timeout = 400 if size >= 100_000 else 120
                prefixes = block(BURST_BLOCKS[size], size)
                report["burst"][str(size)] = _attempt(
                    f"burst {size}", lambda p=prefixes, t=timeout: burst(lab_, tool, p, t)
                )
                _log(f"{name}: burst {size} {report['burst'][str(size)]}")
        finally:
            tool.stop()
    report.pop("pids", None)
    return report


def _clear(lab_: Lab, prefixes: list[Any]) -> None:
    path = lab_.workdir / "clear.batch"
    path.write_text("".join(f"route del {p}/32 dev vethr1\n" for p in prefixes))
    subprocess.run(["ip", "-n", lab_.host, "-force", "-batch", str(path)],
                   capture_output=True, check=False, timeout=120)  # fmt: skip
    wanted = {int(p) for p in prefixes}
    wait_until(lambda: lab_.fib.count(wanted) == 0, 300, 0.05)


def _brief(lat: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {v.get('median')}/{v.get('p99')}" for k, v in lat.items() if isinstance(v, dict)
    )


def run_probed(name: str, plan: Plan, work: Path, env: dict[str, str],
               bursts: tuple[int, ...], trials: int, do_churn: bool) -> dict[str, Any]:  # fmt: skip
    """The announcer through bench/probe.py: per-stage breakdown, a burst's pace, churn."""
    report: dict[str, Any] = {"exabgp_env": env}
    probe_log = work / name / "probe.log"
    _log(f"{name}: lab up")
    with lab(work / name) as lab_:
        tool = AnnouncerTool(name, lab_.host, work / name / "tool", env=env,
                             probe_log=probe_log)  # fmt: skip
        tool.start()
        try:
            lab_.wait_session(60)
            time.sleep(1.0)
            if trials:
                report["latency"], trial_list, _ = _trials(lab_, trials)
                log = parse_probe(probe_log.read_text().splitlines())
                report["stages_ms"] = breakdown(log, trial_list)
                _log(f"{name}: latency {_brief(report['latency'])}")
            report["burst"] = {}
            for size in bursts:
                since = time.monotonic()
                prefixes = block(BURST_BLOCKS[size], size)
                result = _attempt(f"burst {size}", lambda p=prefixes: burst(lab_, tool, p, 400))
                log = parse_probe(probe_log.read_text().splitlines())
                result["pace"] = pace(log, since, time.monotonic())
                report["burst"][str(size)] = result
                _log(f"{name}: burst {size} {result}")
            if do_churn:
                changes, report["churn"] = churn(
                    lab_, tool, block(CHURN, 1000 * int(plan.churn_seconds) + 10), 1000,
                    plan.churn_seconds,
                )  # fmt: skip
                log = parse_probe(probe_log.read_text().splitlines())
                report["churn"]["event_to_command"] = event_to_command(log, changes)
                reconciles = [(e - s) * 1000 for s, e in log.reconciles if s >= changes[0][2]]
                report["churn"]["reconcile_ms"] = summarize(reconciles)
                pauses = [(g, s * 1000) for t, g, s in log.gc_pauses if t >= changes[0][2]]
                longest = max((p for _, p in pauses), default=0.0)
                report["churn"]["gc_pauses_over_1ms"] = {
                    "count": len(pauses), "max_ms": round(longest, 1),
                    "total_ms": round(sum(p for _, p in pauses), 1),
                    "generation_2": sum(1 for g, _ in pauses if g == 2),
                }  # fmt: skip
                _log(f"{name}: churn {report['churn']}")
        finally:
            tool.stop()
    return report


def machine() -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return "missing"
        return (
            (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""
        )

    import os

    return {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "?",
        ),
        "exabgp": version([str(REPO / ".venv/bin/exabgp"), "version"]),
        "frr": version(["/usr/lib/frr/zebra", "--version"]),
        "bird": version(["bird", "--version"]),
        "loadavg_at_start": os.getloadavg(),
        "commit": version(["git", "-C", str(REPO), "log", "-1", "--format=%h %ci %s"]),
        "announcer_dirty": bool(
            version(["git", "-C", str(REPO), "status", "--porcelain", "announcer"])
        ),
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_floor(plan: Plan, work: Path) -> dict[str, Any]:
    """ExaBGP alone (bench/floor.py) in the same lab: latency and bursts from the line written."""
    _log(f"{floor.NAME}: lab up")
    with lab(work / floor.NAME) as lab_:
        tool = floor.FloorTool(floor.NAME, lab_.host, work / floor.NAME / "tool")
        tool.start()
        try:
            floor.up(lab_, tool)
            bursts = {size: block(BURST_BLOCKS[size], size) for size in plan.bursts}
            report = floor.measure_all(lab_, tool, block(WARMUP, 3),
                                       block(LATENCY, plan.trials), bursts)  # fmt: skip
        finally:
            tool.stop()
    _log(f"{floor.NAME}: latency {_brief(report['latency'])}; bursts {report['burst']}")
    return report


def run_announcer_only(plan: Plan, work: Path) -> dict[str, Any]:
    """The announcer with a stand-in ExaBGP answering at once (bench/announcer_only.py)."""
    name = announcer_only.NAME
    _log(f"{name}: lab up")
    with lab(work / name) as lab_:
        tool = announcer_only.StandInAnnouncer(name, lab_.host, work / name / "tool",
                                               probe_log=work / name / "probe.log")  # fmt: skip
        try:
            size = plan.bursts[-1]
            report = announcer_only.measure(
                lab_, tool, block(STARTUP, 1_000), block(LATENCY, plan.trials),
                block(CHURN, 1000 * int(plan.churn_seconds) + 10), plan.churn_seconds,
                block(BURST_BLOCKS[size], size),
            )  # fmt: skip
        finally:
            tool.stop()
    _log(f"{name}: {json.dumps(report)[:1500]}")
    return report


def sections(plan: Plan, work: Path, report: dict[str, Any], tools: dict[str, Any],
             only: set[str]) -> None:  # fmt: skip
    """Every section in order, each one optional with --only."""

    def wanted(name: str) -> bool:
        return not only or name in only

    if wanted("micro"):
        report["micro_core"] = micro.run(events=2 if plan.quick else 4)
    makers: dict[str, Callable[[Path, str], Tool]] = {
        "announcer": lambda w, ns: AnnouncerTool("announcer", ns, w),
        STOCK: lambda w, ns: AnnouncerTool(STOCK, ns, w, env=STOCK_ENV),
        "frr": lambda w, ns: FrrTool("frr", ns, w),
        "bird": lambda w, ns: BirdTool("bird", ns, w),
    }
    for name, make in makers.items():
        if wanted(name):
            tools[name] = run_tool(name, make, plan, work, plan.bursts)
    if wanted(floor.NAME):
        tools[floor.NAME] = _attempt(floor.NAME, lambda: run_floor(plan, work))
    if wanted("bird-default") and plan.quick:
        report["bird_default_note"] = "skipped in --quick (its 100k burst takes about a minute)"
    elif wanted("bird-default"):
        tools["bird-default"] = run_tool(
            "bird-default", lambda w, ns: BirdTool("bird-default", ns, w, rx_buffer=None),
            plan, work, plan.bursts[-1:], do_latency=False,
        )  # fmt: skip
    if wanted(announcer_only.NAME):
        report["announcer_only_run"] = _attempt(
            announcer_only.NAME, lambda: run_announcer_only(plan, work))  # fmt: skip
    if wanted("probe"):
        report["announcer_probe"] = probes(plan, work)
    if wanted("idle"):
        report["idle"] = idle.run(work / "idle", block(IDLE, idle.ROUTES), plan.idle_seconds, _log)
    if wanted("exabgp"):
        _log("ExaBGP profile")
        report["exabgp_profile"] = _attempt("exabgp", lambda: exabgp_profile.run(
            work / "exabgp", plan.probe_burst, 5 if plan.quick else 15))  # fmt: skip
    if wanted("failover"):
        _log("health failover")
        report["health_failover"] = failover.run(work / "failover", 1 if plan.quick else 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about 5 minutes, smaller figures")
    parser.add_argument("--out", default=str(ARTIFACTS / "bench-report.json"))
    parser.add_argument("--png", default=str(ARTIFACTS / "bench-latency-cdf.png"))
    parser.add_argument("--only", default="", help="comma list of sections (debugging)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    plan = Plan.make(args.quick)
    signal.signal(signal.SIGTERM, _interrupt)
    cleanup_stale_namespaces()
    work = Path(tempfile.mkdtemp(prefix="aabench-"))
    started = time.monotonic()
    report: dict[str, Any] = {"mode": "quick" if plan.quick else "full", "machine": machine()}
    tools: dict[str, Any] = {}
    try:
        sections(plan, work, report, tools, set(filter(None, args.only.split(","))))
    except KeyboardInterrupt:
        _log("interrupted: namespaces removed")
        return 130
    finally:
        if args.keep:
            _log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report["tools"] = tools
    report.setdefault("health_failover", {"skipped": "not selected (--only)"})
    assemble(report)
    report["peak_rss_mb_100k"] = _rss_100k(tools)
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    report["loadavg_at_end"] = loadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(render_table(table_rows(tools)))
    print(json.dumps({k: v for k, v in report["ratios"].items() if k != "details"}, indent=1))
    print(json.dumps(report["targets"], indent=1))
    if tools:
        from bench.plot import plot_cdfs

        plot_cdfs(tools, Path(args.png))
    _log(f"wrote {args.out} and {args.png} in {report['elapsed_seconds']} s")
    return 0


def _rss_100k(tools: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, report in tools.items():
        bursts = report.get("burst", {})
        size = "100000" if "100000" in bursts else max(bursts, key=int, default=None)
        if size is None or "peak_rss_mb" not in bursts[size]:
            continue
        result[name] = {"routes": int(size), "total": bursts[size]["peak_rss_mb_total"],
                        **bursts[size]["peak_rss_mb"]}  # fmt: skip
    return result


STOCK_ENV = {"ANNOUNCER_EXABGP_STOCK": "1"}  # the launcher runs ExaBGP unmodified


def probes(plan: Plan, work: Path) -> dict[str, Any]:
    """The announcer as shipped through bench/probe.py, on accelerated ExaBGP (stages of
    one route, a burst's pace, churn) and on stock ExaBGP (the burst and churn), each in
    its own lab. ExaBGP's own settings: exabgp/exabgp.env (what the product ships)."""
    big = (plan.probe_burst,)
    out: dict[str, Any] = {}
    for name, env, trials in (("accelerated", {}, plan.probe_trials), ("stock", STOCK_ENV, 0)):
        out[name] = _attempt(name, lambda n=name, e=env, t=trials: run_probed(
            f"probe-{n}", plan, work, e, big, t, True))  # fmt: skip
    return out


if __name__ == "__main__":
    sys.exit(main())
