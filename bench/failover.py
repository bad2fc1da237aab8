"""Health failover: a TCP service stops -> its /32's UPDATE on the wire (withdraw, or for
ExaBGP healthcheck's defaults the re-announce with the "down" MED, which is what it does).

The service is a listener on 10.x.y.z:8080 in the host namespace (the address on ctr1, the
/32 routed to vethr1 as for a container). Compared: the announcer (a drop-in file with a
``tcp:8080`` check, its defaults and a fast setting) and ExaBGP's own ``healthcheck``
process (its defaults, and its fastest sane settings with ``--withdraw-on-down``).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from bench.nl import wait_until
from bench.setups import AnnouncerTool, Lab, Tool, lab
from bench.stats import summarize
from tests.netlab import (
    HOST_V4,
    PEER_V4,
    REPO,
    ExaBGPProcess,
    exabgp_neighbor,
    kill_and_wait,
    netns_argv,
)

PORT = 8080
SERVICE_IP = IPv4Address("10.120.0.53")
LISTENER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind((sys.argv[1], {PORT})); s.listen(64)\n"
    "while True:\n    c,_=s.accept(); c.close()\n"
)
# ExaBGP's config tokenizer cannot carry quotes or ';' in a run line: the check is a script.
TCP_PROBE = "#!/bin/bash\n# connect or fail (refused -> non-zero)\nexec 3<>/dev/tcp/{ip}/{port}\n"


@dataclass
class Service:
    ns: str
    ip: IPv4Address
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            netns_argv(self.ns, (sys.executable, "-c", LISTENER, str(self.ip))),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def stop(self) -> float:
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)
        return t0


@dataclass
class HealthcheckTool(Tool):
    """ExaBGP running its own ``healthcheck`` for one /32."""

    ip: IPv4Address = SERVICE_IP
    args: tuple[str, ...] = ()
    exabgp: ExaBGPProcess | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        probe = self.workdir / "check-tcp.sh"
        probe.write_text(TCP_PROBE.format(ip=self.ip, port=PORT))
        probe.chmod(0o755)
        run = (
            f"{REPO}/.venv/bin/exabgp healthcheck --no-syslog --no-ip-setup "
            f"--ip {self.ip}/32 {' '.join(self.args)} --cmd {probe}"
        )
        conf = f"process hc {{\n    run {run};\n    encoder text;\n}}\n"
        conf += exabgp_neighbor(PEER_V4, HOST_V4, "ipv4", ["hc"])
        self.started_at = time.monotonic()
        self.exabgp = ExaBGPProcess.start(self.ns, self.workdir, conf)

    def processes(self) -> dict[str, list[int]]:
        assert self.exabgp is not None
        return {"exabgp": [self.exabgp.pid], "healthcheck": self.exabgp.helpers()}

    def stop(self) -> None:
        if self.exabgp is not None:
            self.exabgp.stop()


class CheckedAnnouncer(AnnouncerTool):
    """The announcer with a drop-in file declaring the service and its check."""

    check: str = f"tcp:{PORT}"
    ip: IPv4Address = SERVICE_IP

    def config_text(self) -> str:
        routes = self.workdir / "routes.d"
        routes.mkdir(parents=True, exist_ok=True)
        (routes / "svc.yaml").write_text(f"ips: [{self.ip}]\ncheck: '{self.check}'\n")
        return super().config_text() + f"files:\n  enabled: true\n  directory: {routes}\n"


def _trials(lab_: Lab, service: Service, count: int, timeout: float) -> dict[str, Any]:
    dst = int(service.ip)
    down: list[float] = []
    for _ in range(count):
        t0 = service.stop()
        seen = wait_until(
            lambda t=t0: (
                lab_.wire.first_after("withdrawn", dst, t) is not None
                or lab_.wire.first_after("announced", dst, t) is not None
            ),
            timeout,
            0.005,
        )
        if seen:
            times = [lab_.wire.first_after(k, dst, t0) for k in ("withdrawn", "announced")]
            down.append(min(t for t in times if t is not None) - t0)
        service.start()
        time.sleep(0.3)
        t1 = time.monotonic()
        # back up: an announce after t1 (bounded); then let it settle
        wait_until(lambda t=t1: lab_.wire.first_after("announced", dst, t) is not None, timeout)
        time.sleep(0.5)
    return {"service_stop_to_update_seconds": summarize(down), "lost": count - len(down)}


def measure(tool_name: str, make: Any, work: Path, trials: int, timeout: float,
            ip: IPv4Address) -> dict[str, Any]:  # fmt: skip
    with lab(work / tool_name) as lab_:
        from tests.netlab import sh

        sh(lab_.host, "ip", "addr", "add", f"{ip}/32", "dev", "ctr1")
        sh(lab_.host, "ip", "route", "add", f"{ip}/32", "dev", "vethr1")
        service = Service(lab_.host, ip)
        service.start()
        tool: Tool = make(work / tool_name / "tool", lab_.host)
        tool.start()
        try:
            lab_.wait_session(60)
            if not wait_until(lambda: lab_.fib.count({int(ip)}) == 1, 60, 0.05):
                return {"failed": "the service's /32 was never announced"}
            time.sleep(0.5)
            return _trials(lab_, service, trials, timeout)
        finally:
            tool.stop()
            if service.proc is not None:
                kill_and_wait([service.proc.pid], signal.SIGKILL, 3)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    service.proc.wait(3)


FASTEST_HEALTHCHECK = ("--interval", "1", "--fast-interval", "1", "--rise", "1", "--fall", "1",
                       "--timeout", "1", "--withdraw-on-down")  # fmt: skip


def run(work: Path, trials: int, only: tuple[str, ...] = ()) -> dict[str, Any]:
    ip = SERVICE_IP
    out: dict[str, Any] = {}

    def announcer(check: str) -> Any:
        def make(w: Path, ns: str) -> Tool:
            tool = CheckedAnnouncer("announcer", ns, w)
            tool.check, tool.ip = check, ip
            return tool

        return make

    def healthcheck(args: tuple[str, ...]) -> Any:
        return lambda w, ns: HealthcheckTool("healthcheck", ns, w, ip=ip, args=args)

    cases = [
        ("announcer_defaults", announcer(f"tcp:{PORT}"), 30.0),
        ("announcer_fast", announcer(f"tcp:{PORT} interval=0.2 timeout=0.2"), 30.0),
        ("exabgp_healthcheck_defaults", healthcheck(()), 60.0),
        ("exabgp_healthcheck_fastest", healthcheck(FASTEST_HEALTHCHECK), 30.0),
    ]
    for name, make, timeout in cases:
        if only and name not in only:
            continue
        try:
            out[name] = measure(name, make, work, trials, timeout, ip)
        except Exception as exc:  # report, keep the other cases
            out[name] = {"failed": f"{type(exc).__name__}: {exc}"}
    mine = out.get("announcer_defaults", {}).get("service_stop_to_update_seconds", {})
    theirs = out.get("exabgp_healthcheck_defaults", {}).get("service_stop_to_update_seconds", {})
    if mine.get("median") and theirs.get("median"):
        out["speedup_vs_healthcheck_defaults"] = round(theirs["median"] / mine["median"], 1)
    out["settings"] = {
        "announcer_defaults": "tcp:8080 (interval 1, fast-interval 0.2, timeout 1, rise/fall 2)",
        "announcer_fast": "tcp:8080 interval=0.2 timeout=0.2 (fast-interval 0.1 s, rise 2, fall 2)",
        "exabgp_healthcheck_defaults": "interval 5, fast-interval 1, timeout 5, rise 3, fall 3;"
        " down = re-announce with MED 1000 (not a withdraw)",
        "exabgp_healthcheck_fastest": " ".join(FASTEST_HEALTHCHECK),
    }
    return out
