"""The lab of one measurement: host and leaf namespaces, and the announcing tool on the host.

host namespace ("aabenchh..."):  vethr1 (container side ctr1) carries the /32s under test;
    eth-peer 10.99.0.2 AS 65001 runs ONE of: the announcer under ExaBGP, FRR zebra+bgpd
    (``redistribute kernel route-map``), BIRD 2 (``kernel { learn; }`` + BGP export).
leaf namespace ("aabenchl..."):  eth-host 10.99.0.1 AS 65000, FRR zebra+bgpd, the same
    config for every tool (``frr defaults datacenter``, hold 9 s).
Nothing gets a route out of the namespaces; both are deleted on exit, also on failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from bench.nl import FibMonitor, RouteWriter
from bench.wire import WireCapture
from tests.netlab import (
    HOST_ASN,
    HOST_IF,
    HOST_V4,
    PEER_ASN,
    PEER_IF,
    PEER_V4,
    REPO,
    ExaBGPProcess,
    FrrPeer,
    exabgp_neighbor,
    kill_and_wait,
    netns,
    pid_alive,
    poll,
    session_pids,
    sh,
    veth_pair,
)

VENV_PY = str(REPO / ".venv" / "bin" / "python")
ANNOUNCER = str(REPO / ".venv" / "bin" / "announcer")
ALLOW = "10.0.0.0/8"
BIRD_TUNED_BUFFER = 128 << 20


def pid_rss_hwm_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of one process in MB, 0 when gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (``echo 5 > clear_refs``)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def launcher_mode(stdout: Path) -> str:
    """What announcer/exabgp/launcher.py said it runs (its one ``exabgp_launcher`` line)."""
    with contextlib.suppress(OSError):
        for line in stdout.read_text(errors="replace").splitlines():
            if "exabgp_launcher" in line:
                return line.split("exabgp_launcher", 1)[1].strip()
    return "unknown (no launcher line)"


# --------------------------------------------------------------------------- tools


@dataclass
class Tool:
    """One announcing setup in the host namespace."""

    name: str
    ns: str
    workdir: Path
    started_at: float = 0.0

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def processes(self) -> dict[str, list[int]]:
        """Role -> pids; the roles are summed for "announcing processes"."""
        raise NotImplementedError


@dataclass
class AnnouncerTool(Tool):
    """ExaBGP 5 running the announcer (optionally through bench/probe.py's stage hooks)."""

    env: dict[str, str] = field(default_factory=dict)
    probe_log: Path | None = None
    exabgp: ExaBGPProcess | None = None

    def config_text(self) -> str:
        w = self.workdir
        return (
            "kernel:\n  interfaces: ['vethr*']\n"
            f"policy:\n  allow: ['{ALLOW}']\n  max_routes: 300000\n"
            f"control:\n  socket: {w}/control.sock\n  state_directory: {w}/state\n"
            f"drain:\n  maintenance_file: {w}/maintenance\n"
        )

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "announcer.yaml"
        config.write_text(self.config_text())
        if self.probe_log is not None:
            run = f"{VENV_PY} -m bench.probe run -c {config}"
        else:
            run = f"{ANNOUNCER} run -c {config}"
        conf = f"process announcer {{\n    run {run};\n    encoder json;\n}}\n"
        conf += exabgp_neighbor(PEER_V4, HOST_V4, "ipv4", ["announcer"])
        env = {"exabgp.api.terminate": "true", "PYTHONPATH": str(REPO), **self.env}
        if self.probe_log is not None:
            env["BENCH_PROBE_LOG"] = str(self.probe_log)
        self.started_at = time.monotonic()
        self.exabgp = ExaBGPProcess.start(self.ns, self.workdir / "exabgp", conf, env=env)

    def announcer_pids(self) -> list[int]:
        assert self.exabgp is not None
        found = []
        for pid in self.exabgp.helpers():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"run\0-c" in cmd:
                    found.append(pid)
        return found

    def processes(self) -> dict[str, list[int]]:
        """ExaBGP, the announcer (the daemon ExaBGP runs) and its watchdog child apart."""
        assert self.exabgp is not None
        helpers = self.exabgp.helpers()
        daemon = self.announcer_pids()
        return {"exabgp": [self.exabgp.pid], "announcer": daemon,
                "watchdog": [p for p in helpers if p not in daemon]}  # fmt: skip

    def exabgp_mode(self) -> str:
        """The launcher's own line: ``mode=accelerated ...`` or ``mode=stock ... reason=...``."""
        assert self.exabgp is not None
        return launcher_mode(self.exabgp.workdir / "exabgp.stdout")

    def kill9(self) -> int:
        [pid] = self.announcer_pids()
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        if self.exabgp is not None:
            self.exabgp.stop()


@dataclass
class FrrTool(Tool):
    """FRR zebra + bgpd: ``redistribute kernel route-map`` of the host /32s."""

    frr: FrrPeer | None = None

    def start(self) -> None:
        extra = (
            " address-family ipv4 unicast\n"
            "  redistribute kernel route-map HOSTS\n"
            " exit-address-family\n"
            "exit\n"
            f"ip prefix-list HOSTS seq 5 permit {ALLOW} ge 32\n"
            "route-map HOSTS permit 10\n"
            " match ip address prefix-list HOSTS\n"
            "exit\n"
        )
        self.started_at = time.monotonic()
        self.frr = FrrPeer.start(
            self.ns, self.workdir, HOST_ASN, HOST_V4, [(PEER_V4, PEER_ASN)], extra
        )

    def processes(self) -> dict[str, list[int]]:
        assert self.frr is not None
        return {name: [proc.pid] for name, proc in self.frr.procs.items()}

    def stop(self) -> None:
        if self.frr is not None:
            self.frr.stop()


@dataclass
class BirdTool(Tool):
    """BIRD 2: ``protocol kernel { learn; }`` + BGP export, netlink buffer as given."""

    rx_buffer: int | None = BIRD_TUNED_BUFFER
    proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        buffer = f"  netlink rx buffer {self.rx_buffer};\n" if self.rx_buffer else ""
        hosts = "net ~ [ 10.0.0.0/8{32,32} ]"
        return (
            f'log "{self.workdir}/bird.log" {{ info, warning, error, fatal }};\n'
            f"router id {HOST_V4};\n"
            "protocol device { }\n"
            "protocol kernel {\n"
            "  learn;\n"
            f"{buffer}"
            f"  ipv4 {{ import filter {{ if {hosts} then accept; reject; }}; export none; }};\n"
            "}\n"
            "protocol bgp leaf {\n"
            f"  local {HOST_V4} as {HOST_ASN};\n"
            f"  neighbor {PEER_V4} as {PEER_ASN};\n"
            "  hold time 9;\n"
            "  keepalive time 3;\n"
            f"  ipv4 {{ import none; export filter {{ if {hosts} then accept; reject; }}; "
            "next hop self; };\n"
            "}\n"
        )

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "bird.conf"
        conf.write_text(self.config_text())
        argv = ["ip", "netns", "exec", self.ns, "bird", "-f", "-c", str(conf)]
        argv += ["-s", str(self.workdir / "bird.ctl"), "-P", str(self.workdir / "bird.pid")]
        self.started_at = time.monotonic()
        with (self.workdir / "bird.stdout").open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def processes(self) -> dict[str, list[int]]:
        assert self.proc is not None
        return {"bird": [self.proc.pid]}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            left = kill_and_wait([self.proc.pid], signal.SIGTERM, 5)
            kill_and_wait(left, signal.SIGKILL, 3)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(3)


# --------------------------------------------------------------------------- the lab


@dataclass
class Lab:
    host: str
    leaf: str
    workdir: Path
    frr: FrrPeer
    wire: WireCapture
    fib: FibMonitor
    writer: RouteWriter

    def session_up(self) -> bool:
        return self.frr.session_established(HOST_V4)

    def wait_session(self, timeout: float = 60) -> None:
        poll(self.session_up, timeout, "BGP session host -> leaf established", interval=0.05)


@contextlib.contextmanager
def lab(workdir: Path) -> Iterator[Lab]:
    """Fresh host + leaf namespaces, the leaf's FRR, wire capture and FIB monitor."""
    workdir.mkdir(parents=True, exist_ok=True)
    with netns("benchh") as host, netns("benchl") as leaf:
        veth_pair(host, HOST_IF, leaf, PEER_IF)
        sh(host, "ip", "addr", "add", f"{HOST_V4}/24", "dev", HOST_IF)
        sh(leaf, "ip", "addr", "add", f"{PEER_V4}/24", "dev", PEER_IF)
        sh(host, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        sh(host, "ip", "link", "set", "vethr1", "up")
        sh(host, "ip", "link", "set", "ctr1", "up")
        frr = FrrPeer.start(leaf, workdir / "leaf", PEER_ASN, PEER_V4, [(HOST_V4, HOST_ASN)])
        wire = WireCapture(leaf, PEER_IF, int(IPv4Address(HOST_V4)))
        fib = FibMonitor(leaf)
        wire.start()
        fib.start()
        writer = RouteWriter(host, "vethr1")
        try:
            yield Lab(host, leaf, workdir, frr, wire, fib, writer)
        finally:
            writer.close()
            fib.stop()
            wire.stop()
            frr.stop()


def pids_alive(pids: list[int]) -> bool:
    return all(pid_alive(p) for p in pids)


__all__ = [
    "AnnouncerTool",
    "BirdTool",
    "FrrTool",
    "Lab",
    "Tool",
    "cpu_seconds",
    "lab",
    "launcher_mode",
    "pid_rss_hwm_mb",
    "reset_peak",
    "session_pids",
]
