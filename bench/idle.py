"""What every host pays all day: each tool's CPU and memory holding 100 routes, idle.

Each tool in its own fresh lab, 100 /32s in the host namespace's kernel (10.x on vethr1),
the session to the FRR leaf up and all 100 in the leaf's FIB, then CPU seconds of the
tool's processes over ``seconds`` (``/proc/PID/stat``; RSS at the end):

* ``announcer``: the shipped announcer under ExaBGP (launcher, accelerated), plus 20
  drop-in instances (``files`` source), each claiming one of the 100 addresses with a
  ``tcp:8080`` check at the default interval (1 s); the 20 addresses are on ctr1 with one
  listener (a Python accept loop, not counted) in the host namespace. So it pays for 20
  TCP probes a second, the drop-in directory's watch and 30 s rescan, the periodic
  ``show adj-rib out`` check, the watchdog's heartbeat and ExaBGP's keepalives.
* ``exabgp-alone``: ExaBGP holding the 100 routes the stand-in gave it (the floor).
* ``frr`` / ``bird``: the 100 kernel routes redistributed, no health checks (they have
  none to run: a route is there or not).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from bench.floor import FloorTool, up
from bench.measure import _batch, loadavg
from bench.nl import wait_until
from bench.setups import AnnouncerTool, BirdTool, FrrTool, Lab, Tool, cpu_seconds, lab
from tests.netlab import kill_and_wait, netns_argv, sh

ROUTES = 100
CHECKS = 20
PORT = 8080
LISTENER = (
    "import socket\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('0.0.0.0', {PORT})); s.listen(128)\n"
    "while True:\n    c,_=s.accept(); c.close()\n"
)


@dataclass
class CheckedAnnouncer(AnnouncerTool):
    """The announcer with one drop-in file per checked address."""

    checked: tuple[IPv4Address, ...] = field(default_factory=tuple)

    def config_text(self) -> str:
        routes = self.workdir / "routes.d"
        routes.mkdir(parents=True, exist_ok=True)
        for i, ip in enumerate(self.checked):
            (routes / f"svc{i:02d}.yaml").write_text(f"ips: [{ip}]\ncheck: 'tcp:{PORT}'\n")
        return super().config_text() + f"files:\n  enabled: true\n  directory: {routes}\n"


def _rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(lab_: Lab, tool: Tool, prefixes: list[IPv4Address], seconds: float,
            after_start: Callable[[], None] = lambda: None) -> dict[str, Any]:  # fmt: skip
    _batch(lab_, "add", prefixes)
    tool.start()
    after_start()
    wanted = {int(p) for p in prefixes}
    if not wait_until(lambda: lab_.fib.count(wanted) == len(wanted), 60, 0.05):
        return {"failed": f"{lab_.fib.count(wanted)} of {len(wanted)} routes at the leaf"}
    time.sleep(3.0)  # let the start's own work finish (not waiting for an event)
    roles = tool.processes()
    c0, t0 = {r: sum(cpu_seconds(p) for p in ps) for r, ps in roles.items()}, time.monotonic()
    time.sleep(seconds)  # measuring an idle period, not waiting for an event
    wall = time.monotonic() - t0
    used = {r: sum(cpu_seconds(p) for p in ps) - c0[r] for r, ps in roles.items()}
    per_role = {r: round(100 * u / wall, 2) for r, u in used.items()}
    return {
        "routes": len(prefixes),
        "seconds": round(wall, 1),
        "cpu_percent": round(100 * sum(used.values()) / wall, 2),
        "cpu_percent_by_process": per_role,
        "rss_mb": {r: round(sum(_rss_mb(p) for p in ps), 1) for r, ps in roles.items()},
        "leaf_still_has_all": lab_.fib.count(wanted) == len(wanted),
        "loadavg_1m": loadavg(),
    }


def _nothing() -> None:
    return None


def _listener(ns: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        netns_argv(ns, (sys.executable, "-c", LISTENER)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def one(name: str, work: Path, prefixes: list[IPv4Address], seconds: float) -> dict[str, Any]:
    with lab(work / f"idle-{name}") as lab_:
        tool_dir = work / f"idle-{name}" / "tool"
        listener = None
        after: Callable[[], None] = _nothing
        tool: Tool
        if name == "announcer":
            checked = tuple(prefixes[:CHECKS])
            for ip in checked:
                sh(lab_.host, "ip", "addr", "add", f"{ip}/32", "dev", "ctr1")
            listener = _listener(lab_.host)
            tool = CheckedAnnouncer(name, lab_.host, tool_dir, checked=checked)
        elif name == "exabgp-alone":
            floor = FloorTool(name, lab_.host, tool_dir)

            def after() -> None:  # the stand-in gives ExaBGP the routes
                up(lab_, floor)
                floor.send("announce", prefixes)

            tool = floor
        elif name == "frr":
            tool = FrrTool(name, lab_.host, tool_dir)
        else:
            tool = BirdTool(name, lab_.host, tool_dir)
        try:
            result = measure(lab_, tool, prefixes, seconds, after)
            if name == "announcer":
                result["health_checks"] = f"{CHECKS} x tcp:{PORT} (interval 1 s)"
            return result
        finally:
            tool.stop()
            if listener is not None:
                kill_and_wait([listener.pid], signal.SIGKILL, 3)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    listener.wait(3)


TOOLS = ("announcer", "exabgp-alone", "frr", "bird")


def run(work: Path, prefixes: list[IPv4Address], seconds: float,
        log: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {}
    for name in TOOLS:
        try:
            out[name] = one(name, work, prefixes, seconds)
        except Exception as exc:  # report, keep the other tools
            out[name] = {"failed": f"{type(exc).__name__}: {exc}"}
        log(f"idle {name}: {out[name]}")
    return out
