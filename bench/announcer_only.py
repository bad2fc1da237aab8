"""The announcer's own share: the announcer (through bench/probe.py) with bench.standin_exabgp
in ExaBGP's place, which answers every line at once.

In the bench's host namespace (the leaf is there but no BGP session is made), with the
config the other runs use (only the kernel source enabled):

* ``startup_1k``: 1k /32s in the kernel, the announcer starts; its peak RSS (VmHWM over its
  whole life: imports, kernel dump, first lines) and its watchdog's: the 1k figure;
* ``one_route``: one /32 at a time, kernel change -> line written to the pipe (and its
  stages), as the latency trials of the other tools;
* ``churn``: 1,000 changes/s, kernel change -> line written (p99: the target), netlink read
  -> line queued, reconcile steps, GC pauses, CPU;
* ``burst``: N /32s with one ``ip -batch`` -> the last line written; peak RSS and CPU.

ExaBGP's answers never keep the announcer waiting here, so these are the announcer's own
costs; the same figures with ExaBGP are in the ``probe`` section.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from bench.measure import _batch, churn, loadavg
from bench.nl import dump_host_routes, wait_until
from bench.setups import VENV_PY, AnnouncerTool, Lab, cpu_seconds, pid_rss_hwm_mb, reset_peak
from bench.stages import Trial, breakdown, event_to_command, parse_probe
from bench.stats import summarize
from tests.netlab import REPO, kill_and_wait, netns_argv, session_pids

NAME = "announcer-only"


@dataclass
class StandInAnnouncer(AnnouncerTool):
    """The probed announcer under bench.standin_exabgp instead of ExaBGP."""

    proc: subprocess.Popen[bytes] | None = None

    @property
    def status_file(self) -> Path:
        return self.workdir / "standin.status"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "announcer.yaml"
        config.write_text(self.config_text())
        assert self.probe_log is not None
        argv = (VENV_PY, "-m", "bench.standin_exabgp", str(self.status_file), "--",
                VENV_PY, "-m", "bench.probe", "run", "-c", str(config))  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO), "BENCH_PROBE_LOG": str(self.probe_log)}
        self.started_at = time.monotonic()
        with (self.workdir / "standin.stderr").open("ab") as err:
            self.proc = subprocess.Popen(
                netns_argv(self.ns, argv), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                env=env, start_new_session=True,
            )  # fmt: skip

    def routes_held(self) -> int:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(self.status_file.read_text().split()[0])
        return -1

    def announcer_pids(self) -> list[int]:
        assert self.proc is not None
        found = []
        for pid in session_pids(self.proc.pid):
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if pid != self.proc.pid and b"bench.probe\0run" in cmd:
                    found.append(pid)
        return found

    def processes(self) -> dict[str, list[int]]:
        assert self.proc is not None
        daemon = self.announcer_pids()
        others = [p for p in session_pids(self.proc.pid) if p != self.proc.pid]
        return {"announcer": daemon, "watchdog": [p for p in others if p not in daemon]}

    def stop(self) -> None:
        if self.proc is None:
            return
        pids = session_pids(self.proc.pid)
        left = kill_and_wait(pids, signal.SIGTERM, 5)
        kill_and_wait(left, signal.SIGKILL, 3)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(3)


def _wait_held(tool: StandInAnnouncer, count: int, timeout: float) -> bool:
    return wait_until(lambda: tool.routes_held() == count, timeout, 0.01)


def _rss(tool: StandInAnnouncer) -> dict[str, float]:
    return {role: round(sum(pid_rss_hwm_mb(p) for p in pids), 1)
            for role, pids in tool.processes().items()}  # fmt: skip


def startup(lab_: Lab, tool: StandInAnnouncer, prefixes: list[IPv4Address]) -> dict[str, Any]:
    _batch(lab_, "add", prefixes)
    tool.start()
    if not _wait_held(tool, len(prefixes), 120):
        return {"failed": f"the stand-in never held {len(prefixes)} routes"}
    done = time.monotonic()
    wait_until(lambda: len(tool.processes()["watchdog"]) > 0, 10, 0.05)
    return {"routes": len(prefixes), "start_to_all_held_seconds": round(done - tool.started_at, 3),
            "peak_rss_mb": _rss(tool), "loadavg_1m": loadavg()}  # fmt: skip


def one_route(lab_: Lab, tool: StandInAnnouncer, prefixes: list[IPv4Address],
              base: int) -> list[Trial]:  # fmt: skip
    """One /32 at a time; the stand-in's table size says when the line arrived."""
    trials = []
    for prefix in prefixes:
        t_add = lab_.writer.add(prefix)
        _wait_held(tool, base + 1, 5)
        time.sleep(0.02)
        t_del = lab_.writer.delete(prefix)
        _wait_held(tool, base, 5)
        time.sleep(0.02)
        trials += [Trial(str(prefix), "announce", t_add, None, None),
                   Trial(str(prefix), "withdraw", t_del, None, None)]  # fmt: skip
    return trials


def big_burst(lab_: Lab, tool: StandInAnnouncer, prefixes: list[IPv4Address],
              base: int) -> dict[str, Any]:  # fmt: skip
    """ip -batch -> the stand-in holds them all (its status lags <= 20 ms; the probe's
    write times give the exact last line)."""
    for pids in tool.processes().values():
        for pid in pids:
            reset_peak(pid)
    [daemon] = tool.announcer_pids()
    cpu0 = cpu_seconds(daemon)
    t0 = _batch(lab_, "add", prefixes)
    if not _wait_held(tool, base + len(prefixes), 300):
        return {"failed": f"not all {len(prefixes)} written within 300 s"}
    if os.environ.get("BENCH_PROBE_TRACEMALLOC"):  # a memory profile: its state at the peak
        os.kill(daemon, signal.SIGUSR1)
    assert tool.probe_log is not None
    log = parse_probe(tool.probe_log.read_text().splitlines())
    last = max((t for t in log.written_at if t >= t0), default=0.0)
    result = {"routes": len(prefixes), "kernel_to_last_line_written_seconds": round(last - t0, 3),
              "announcer_cpu_seconds": round(cpu_seconds(daemon) - cpu0, 2),
              "peak_rss_mb": _rss(tool)}  # fmt: skip
    t1 = _batch(lab_, "del", prefixes)
    if _wait_held(tool, base, 300):
        log = parse_probe(tool.probe_log.read_text().splitlines())
        last = max((t for t in log.written_at if t >= t1), default=0.0)
        result["withdraw_kernel_to_last_line_written_seconds"] = round(last - t1, 3)
    return result


def measure(lab_: Lab, tool: StandInAnnouncer, start_routes: list[IPv4Address],
            trials: list[IPv4Address], churn_prefixes: list[IPv4Address], churn_seconds: float,
            burst: list[IPv4Address]) -> dict[str, Any]:  # fmt: skip
    report: dict[str, Any] = {"startup": startup(lab_, tool, start_routes)}
    if "failed" in report["startup"]:
        return report
    base = len(start_routes)
    assert tool.probe_log is not None
    found = one_route(lab_, tool, trials, base)
    log = parse_probe(tool.probe_log.read_text().splitlines())
    report["one_route_ms"] = breakdown(log, found)
    changes, report["churn"] = churn(
        lab_, tool, churn_prefixes, 1000, churn_seconds, check_leaf=False
    )
    log = parse_probe(tool.probe_log.read_text().splitlines())
    since = changes[0][2]
    report["churn"]["event_to_line"] = event_to_command(log, changes)
    report["churn"]["reconcile_ms"] = summarize(
        [(e - s) * 1000 for s, e in log.reconciles if s >= since]
    )
    pauses = [s * 1000 for t, _, s in log.gc_pauses if t >= since]
    report["churn"]["gc_pauses_over_1ms"] = {
        "count": len(pauses),
        "max_ms": round(max(pauses, default=0.0), 1),
    }
    left = {int(p) for p in churn_prefixes} & _host_routes(lab_)
    _clear(lab_, left)
    if _wait_held(tool, base, 60):
        try:
            report["burst"] = big_burst(lab_, tool, burst, base)
        except Exception as exc:  # keep the other figures
            report["burst"] = {"failed": f"{type(exc).__name__}: {exc}"}
    else:
        report["burst"] = {"failed": "the churn's routes never left the stand-in's table"}
    return report


def _host_routes(lab_: Lab) -> set[int]:
    return dump_host_routes(lab_.host)


def _clear(lab_: Lab, dsts: set[int]) -> None:
    if dsts:
        _batch(lab_, "del", [IPv4Address(d) for d in sorted(dsts)])
