"""``python -m announcer.lab``: up, down, status, exec, test, report, all, restart-exabgp
(docs/lab.md)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from announcer.lab import report, scenarios, suite
from announcer.lab.clab import ClabLab
from announcer.lab.namespaces import LabError
from announcer.lab.netns import STATE_FILE, LabState, NetnsLab, clean_stale

DEFAULT_TOPOLOGY = Path("labs/spine-leaf.clab.yml")
ARTIFACTS = Path("artifacts/lab")


def _sigterm(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def _new_rundir() -> Path:
    rundir = (ARTIFACTS / time.strftime("%Y%m%d-%H%M%S")).resolve()
    rundir.mkdir(parents=True, exist_ok=True)
    return rundir


def _up(topology: Path, backend: str, rundir: Path, keep: bool) -> NetnsLab | ClabLab:
    if backend == "containerlab":
        clab = ClabLab(topology, rundir)
        LabState(rundir.name, "clab-", str(topology.resolve()), str(rundir), str(rundir), 0,
                 True, [], "containerlab").save()  # fmt: skip
        clab.up()
        return clab
    lab = NetnsLab.create(topology, rundir, keep=keep)
    try:
        lab.up()
    except BaseException:
        lab.down()
        raise
    return lab


def _attach() -> NetnsLab | ClabLab:
    state = LabState.load()
    if state is None:
        raise LabError("no lab is up (run `python -m announcer.lab up` first)")
    if state.backend == "containerlab":
        return ClabLab(Path(state.topology), Path(state.rundir))
    return NetnsLab.attach()


def run_scenarios(lab: NetnsLab | ClabLab, started: float, only: list[str] | None = None
                  ) -> tuple[dict[str, Any], dict[str, float]]:  # fmt: skip
    fabric = scenarios.Fabric(scenarios.find_services(lab.topo), started)
    chosen = tuple(s for s in suite.SUITE if not only or s.name in only)
    return suite.run_suite(lab, fabric, chosen)


def cmd_test(lab: NetnsLab | ClabLab, started: float, only: list[str] | None = None
             ) -> dict[str, Any]:  # fmt: skip
    load_before = os.getloadavg()
    found, seconds = run_scenarios(lab, started, only)
    host = {"cpus": os.cpu_count(), "load_average_1_5_15_min": {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()]}}  # fmt: skip
    servers = [n.name for n in lab.topo.by_role("server")]
    launcher = report.launcher_runs({s: lab.exabgp_output(s) for s in servers})
    results = {"scenarios": found, "scenario_seconds": seconds, "host": host,
               "versions": report.versions(), "exabgp_launcher": launcher,
               "run_dir": str(lab.rundir)}  # fmt: skip
    (lab.rundir / "results.json").write_text(json.dumps(results, indent=1))
    return results


def cmd_report(rundir: Path) -> bool:
    results = json.loads((rundir / "results.json").read_text())
    path = report.write_report(results, rundir)
    print(report.render_table(results["scenarios"]))
    print(f"report: {path}  figures: {rundir / 'shares.png'} {rundir / 'failover-timeline.png'}")
    return report.verdict(results["scenarios"])


def cmd_all(topology: Path, backend: str, keep: bool) -> bool:
    t0 = time.monotonic()
    rundir = _new_rundir()
    lab = _up(topology, backend, rundir, keep)
    try:
        results = cmd_test(lab, t0)
        results["total_seconds"] = round(time.monotonic() - t0, 1)
        (rundir / "results.json").write_text(json.dumps(results, indent=1))
        return cmd_report(rundir)
    finally:
        if not keep:
            lab.down()


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _sigterm)
    parser = argparse.ArgumentParser(prog="python -m announcer.lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "all"):
        p = sub.add_parser(name)
        p.add_argument("file", type=Path, nargs="?", default=DEFAULT_TOPOLOGY)
        p.add_argument("--backend", choices=["netns", "containerlab"], default="netns")
        if name == "all":
            p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    sub.add_parser("down")
    sub.add_parser("status")
    tst = sub.add_parser("test")
    tst.add_argument(
        "--only",
        nargs="+",
        choices=list(suite.BY_NAME),
        metavar="SCENARIO",
        help="run these scenarios only (in the suite's order)",
    )
    rep = sub.add_parser("report")
    rep.add_argument("--run-dir", type=Path)
    rs = sub.add_parser(
        "restart-exabgp",
        help="`systemctl restart` of a server's ExaBGP "
        "(restart-stack's --restart-command in rolling_upgrade)",
    )
    rs.add_argument("server")
    rs.add_argument(
        "--plain",
        action="store_true",
        help="start it without graceful restart and manual End-of-RIB",
    )
    ex = sub.add_parser("exec")
    ex.add_argument("node")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        sys.exit(_dispatch(args))
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("lab: interrupted; the lab was torn down unless it was `up`", file=sys.stderr)
        sys.exit(130)


def _dispatch(args: argparse.Namespace) -> int:
    match args.command:
        case "up":
            lab = _up(args.file, args.backend, _new_rundir(), keep=True)
            print(f"lab up; logs under {lab.rundir}")
        case "down":
            state = LabState.load()
            if state is not None and state.backend == "containerlab":
                ClabLab(Path(state.topology), Path(state.rundir)).down()
                STATE_FILE.unlink(missing_ok=True)
            clean_stale(log=lambda m: print(m, file=sys.stderr))
        case "status":
            lab = _attach()
            print(json.dumps(lab.status() if isinstance(lab, NetnsLab)
                             else [c.__dict__ for c in lab.inspect()], indent=1))  # fmt: skip
        case "restart-exabgp":
            lab = _attach()
            if not isinstance(lab, NetnsLab):
                raise LabError("restart-exabgp: containerlab servers have lab-restart-exabgp")
            lab.restart_exabgp(args.server, not args.plain)  # quiet, as systemctl restart
        case "exec":
            proc = _attach().exec(args.node, args.cmd, check=False)
            sys.stdout.write(proc.stdout)
            sys.stderr.write(proc.stderr)
            return proc.returncode
        case "test":
            results = cmd_test(_attach(), time.monotonic(), args.only)
            print(report.render_table(results["scenarios"]))
            return 0 if report.verdict(results["scenarios"]) else 1
        case "report":
            rundir = args.run_dir or Path(_attach().rundir)
            return 0 if cmd_report(rundir) else 1
        case "all":
            return 0 if cmd_all(args.file, args.backend, args.keep) else 1
    return 0
