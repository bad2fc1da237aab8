"""Throwaway network namespaces with FRR and ExaBGP, for contract tests.

Everything here runs inside namespaces this module creates; nothing touches the root
namespace's addresses or routes, and no namespace gets a route out. Every namespace carries
a marker file under ``MARKER_DIR`` naming the process that created it, so a later run can
remove what a crashed run left behind without touching a concurrent run's namespaces.

Synchronise with ``poll`` (a deadline and a named condition), never with sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

from announcer.lab.namespaces import LabError, netns_argv, run

T = TypeVar("T")

NS_PREFIX = "aa"
MARKER_DIR = Path("/run/anycast-announcer-tests")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_EXABGP = str(REPO / ".venv" / "bin" / "exabgp")
FRR_DIR = Path("/usr/lib/frr")

# The BGP link between the "host" namespace (ExaBGP side) and the "peer" namespace (FRR).
HOST_IF = "eth-peer"
PEER_IF = "eth-host"
HOST_V4 = "10.99.0.2"
PEER_V4 = "10.99.0.1"
HOST_V6 = "fd00:99::2"
PEER_V6 = "fd00:99::1"
HOST_ASN = 65001
PEER_ASN = 65000


# --------------------------------------------------------------------------- commands


class CommandError(AssertionError):
    """A command failed; the message carries argv, exit code, stdout and stderr."""


_netns_argv = netns_argv  # the earlier private name


def sh(
    ns: str | None,
    *argv: str,
    check: bool = True,
    input: str | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run argv (inside namespace ``ns`` unless None), text mode, output captured.

    The lab's runner (announcer/lab/namespaces.py) does the work; a failure becomes a
    CommandError, an AssertionError, so a test reports it as a failed check."""
    try:
        return run(ns, argv, check=check, timeout=timeout, input_text=input)
    except LabError as exc:
        raise CommandError(str(exc)) from exc


def poll(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call fn until it returns something truthy and return that; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last value: {last!r}"
            )
        time.sleep(interval)


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is the state), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def session_pids(sid: int) -> list[int]:
    """Live processes whose session id is sid (helpers keep it across setpgrp)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields and fields[0] != "Z" and int(fields[3]) == sid:
                found.append(int(entry.name))
    return found


def kill_and_wait(pids: list[int], sig: signal.Signals, timeout: float) -> list[int]:
    """Send sig to every pid, wait up to timeout for them to go; return the ones still alive."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if pid_alive(p)]
    return alive


def _ns_pids(ns: str) -> list[int]:
    out = sh(None, "ip", "netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split()]


def _kill_namespace_processes(ns: str) -> None:
    """SIGTERM everything in ns, then SIGKILL what is left, until ns is empty."""
    pids = _ns_pids(ns)
    if kill_and_wait(pids, signal.SIGTERM, 3.0) or _ns_pids(ns):
        for _ in range(50):
            left = _ns_pids(ns)
            if not left:
                break
            kill_and_wait(left, signal.SIGKILL, 1.0)


# --------------------------------------------------------------------------- namespaces


def _marker(ns: str) -> Path:
    return MARKER_DIR / ns


def _delete_namespace(ns: str) -> None:
    _kill_namespace_processes(ns)
    sh(None, "ip", "netns", "del", ns, check=False)
    _marker(ns).unlink(missing_ok=True)


def _creator_alive(marker: Path) -> bool:
    try:
        owner = json.loads(marker.read_text())
        return _start_time(int(owner["pid"])) == int(owner["start"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cleanup_stale_namespaces() -> list[str]:
    """Delete namespaces an earlier, dead run of ours left behind; return their names.

    Only namespaces that start with NS_PREFIX *and* have a marker file whose creator
    process is gone are touched; a concurrent run's namespaces stay.
    """
    if not MARKER_DIR.is_dir():
        return []
    existing = set(sh(None, "ip", "netns", "list", check=False).stdout.split())
    removed = []
    for marker in MARKER_DIR.iterdir():
        if not marker.name.startswith(NS_PREFIX) or _creator_alive(marker):
            continue
        if marker.name in existing:
            _delete_namespace(marker.name)
            removed.append(marker.name)
        else:
            marker.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def netns(hint: str) -> Iterator[str]:
    """A fresh namespace named aa<hint><random>, lo up; all its processes killed on exit."""
    name = f"{NS_PREFIX}{hint[:6]}{secrets.token_hex(3)}"
    MARKER_DIR.mkdir(parents=True, exist_ok=True)
    _marker(name).write_text(json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid())}))
    try:
        sh(None, "ip", "netns", "add", name)
        sh(name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        _delete_namespace(name)


def veth_pair(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """A veth pair created directly inside ns_a/ns_b (never in the root namespace), both up."""
    peer = ["peer", "name", name_b, "netns", ns_b]
    sh(None, "ip", "-n", ns_a, "link", "add", name_a, "type", "veth", *peer)
    sh(None, "ip", "-n", ns_a, "link", "set", name_a, "up")
    sh(None, "ip", "-n", ns_b, "link", "set", name_b, "up")


def kernel_routes(ns: str, family: int = 4, proto: str | None = None) -> set[str]:
    """Host-route destinations (/32 or /128) in the main table of ns, as 'addr/len'."""
    argv = ["ip", f"-{family}", "-j", "route", "show", "table", "main"]
    if proto:
        argv += ["proto", proto]
    routes = json.loads(sh(ns, *argv).stdout or "[]")
    host_len = "/32" if family == 4 else "/128"
    found = set()
    for route in routes:
        dst = route.get("dst", "")
        if dst == "default":
            continue
        if "/" not in dst:
            dst += host_len
        if dst.endswith(host_len):
            found.add(dst)
    return found


class RouteMonitor:
    """`ip -timestamp monitor route` in a namespace, written to a file for the whole test."""

    PROBE = "10.255.255.254/32"

    def __init__(self, ns: str, path: Path) -> None:
        self.ns = ns
        self.path = path
        self._out: IO[str] = path.open("w")
        self._proc = subprocess.Popen(
            ["ip", "-n", ns, "-timestamp", "monitor", "route"],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            text=True,
        )

    @classmethod
    @contextlib.contextmanager
    def running(cls, ns: str, path: Path) -> Iterator[RouteMonitor]:
        """Start, prove it is listening (a blackhole probe route shows up), stop on exit."""
        monitor = cls(ns, path)
        try:

            def probed() -> bool:
                # Re-probe until seen: a probe sent before `ip monitor` subscribed is lost.
                # Add *and* delete each time: the kernel does not notify an `ip route
                # replace` that changes nothing, so a re-sent identical route is silent.
                if cls.PROBE.removesuffix("/32") in monitor.text():
                    return True
                sh(ns, "ip", "route", "add", "blackhole", cls.PROBE, check=False)
                sh(ns, "ip", "route", "del", "blackhole", cls.PROBE, check=False)
                return False

            poll(probed, 20, "route monitor ready", interval=0.2)
            yield monitor
        finally:
            monitor._proc.terminate()
            monitor._proc.wait(5)
            monitor._out.close()

    def text(self) -> str:
        self._out.flush()
        return self.path.read_text()

    def deleted(self, dst: str) -> list[str]:
        """Lines reporting a deletion of dst (given with or without the host length)."""
        wanted = {dst, dst.split("/", maxsplit=1)[0]}
        return [
            line
            for line in self.text().splitlines()
            if "Deleted" in line.split() and wanted & set(line.split())
        ]


# --------------------------------------------------------------------------- FRR


def _frr_config(
    daemon: str,
    workdir: Path,
    asn: int,
    router_id: str,
    neighbors: list[tuple[str, int]],
    extra_config: str,
) -> str:
    lines = ["frr defaults datacenter", f"hostname {daemon}", f"log file {workdir / daemon}.log"]
    if daemon == "bgpd":
        lines += [
            "debug bgp neighbor-events",  # session changes and refused connections, in bgpd.log
            f"router bgp {asn}",
            f" bgp router-id {router_id}",
            " no bgp ebgp-requires-policy",
            " no bgp default ipv4-unicast",
            " bgp bestpath as-path multipath-relax",
        ]
        lines += [f" neighbor {ip} remote-as {peer_asn}" for ip, peer_asn in neighbors]
        for afi in ("ipv4", "ipv6"):
            lines += [f" address-family {afi} unicast", "  maximum-paths 8"]
            lines += [f"  neighbor {ip} activate" for ip, _ in neighbors if _afi(ip) == afi]
            lines.append(" exit-address-family")
        lines.append(extra_config)
    return "\n".join(lines) + "\n"


def _afi(ip: str) -> str:
    return "ipv6" if ":" in ip else "ipv4"


# `-u root -g root` is refused: FRR insists the run-as user be in the vty group
# ("privs_init: user(root) is not part of vty group specified(frrvty)"), and it checks with
# getgrouplist(user, <the -g group>), so naming frrvty as the group passes that check without
# changing /etc/group. FRR changes neither uid nor gid when the user is the current one.
_RUN_AS_ROOT = ("-u", "root", "-g", "frrvty")


@dataclass
class FrrPeer:
    """zebra + bgpd inside a namespace, every path private to workdir.

    The daemons run as root: pytest's tmp_path is mode 0700 under /tmp/pytest-of-root,
    which the ``frr`` user could not enter, and a throwaway namespace gains nothing from the
    privilege drop. See ``_RUN_AS_ROOT`` for why the group is ``frrvty``. TCP vty ports are off (``-P 0``); vtysh talks to
    the daemons through the unix sockets in ``workdir/run``.
    """

    ns: str
    workdir: Path
    asn: int
    router_id: str
    neighbors: list[tuple[str, int]]
    extra_config: str
    procs: dict[str, subprocess.Popen[bytes]]

    @classmethod
    def start(
        cls,
        ns: str,
        workdir: Path,
        asn: int,
        router_id: str,
        neighbors: list[tuple[str, int]],
        extra_config: str = "",
    ) -> FrrPeer:
        (workdir / "run").mkdir(parents=True, exist_ok=True)
        peer = cls(ns, workdir, asn, router_id, list(neighbors), extra_config, {})
        try:
            peer._start_daemons()
        except BaseException:
            peer.stop()
            raise
        return peer

    @property
    def rundir(self) -> Path:
        return self.workdir / "run"

    def _start_daemons(self) -> None:
        zserv = self.rundir / "zserv.api"
        # a restart must not mistake the stopped daemons' sockets for the new ones
        for stale in (zserv, self.rundir / "zebra.vty", self.rundir / "bgpd.vty"):
            stale.unlink(missing_ok=True)
        for daemon in ("zebra", "bgpd"):
            conf = self.workdir / f"{daemon}.conf"
            conf.write_text(
                _frr_config(
                    daemon,
                    self.workdir,
                    self.asn,
                    self.router_id,
                    self.neighbors,
                    self.extra_config,
                )
            )
            argv: tuple[str, ...] = (str(FRR_DIR / daemon), *_RUN_AS_ROOT, "-P", "0")
            argv += ("-f", str(conf), "-i", str(self.rundir / f"{daemon}.pid"), "-z", str(zserv))
            argv += ("--vty_socket", str(self.rundir))
            with (self.workdir / f"{daemon}.stdout").open("ab") as out:
                self.procs[daemon] = subprocess.Popen(
                    netns_argv(self.ns, argv),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            sock = zserv if daemon == "zebra" else self.rundir / "bgpd.vty"
            poll(partial(self._started, daemon, sock), 15, f"{daemon} socket {sock}")
        poll(self._vtysh_reaches_bgpd, 15, "vtysh reaches bgpd")

    def _vtysh_reaches_bgpd(self) -> bool:
        argv = ("vtysh", "--vty_socket", str(self.rundir), "-c", "show daemons")
        return "bgpd" in sh(self.ns, *argv, check=False).stdout

    def _started(self, daemon: str, sock: Path) -> bool:
        return self._check_alive(daemon) and sock.exists()

    def _check_alive(self, daemon: str) -> bool:
        proc = self.procs[daemon]
        if proc.poll() is not None:
            out = (self.workdir / f"{daemon}.stdout").read_text(errors="replace")
            raise AssertionError(f"{daemon} exited with {proc.returncode}:\n{out}")
        return True

    def vtysh(self, cmd: str) -> str:
        return sh(self.ns, "vtysh", "--vty_socket", str(self.rundir), "-c", cmd).stdout

    def vtysh_json(self, cmd: str) -> Any:
        out = self.vtysh(cmd)
        try:
            return json.loads(out)
        except ValueError as exc:
            raise AssertionError(f"vtysh {cmd!r} did not return JSON: {out!r}") from exc

    def vtysh_json_many(self, cmds: list[str]) -> list[Any]:
        """Several JSON commands in one vtysh run (one object per command, in order)."""
        if not cmds:
            return []
        argv = ["vtysh", "--vty_socket", str(self.rundir)]
        for cmd in cmds:
            argv += ["-c", cmd]
        out = sh(self.ns, *argv).stdout
        decoder, pos, objects = json.JSONDecoder(), 0, list[Any]()
        while len(objects) < len(cmds):
            while pos < len(out) and out[pos].isspace():
                pos += 1
            try:
                obj, pos = decoder.raw_decode(out, pos)
            except ValueError as exc:
                raise AssertionError(f"vtysh {cmds!r} did not return JSON: {out!r}") from exc
            objects.append(obj)
        return objects

    def bgp_prefixes(self, afi: str = "ipv4") -> dict[str, dict[str, Any]]:
        """prefix -> best (else first) path from `show bgp <afi> unicast <prefix> json`.

        The path dict is FRR 8.4's: ``lastUpdate`` ({"epoch": seconds, "string": ...}),
        ``peer`` ({"peerId": ...}), ``aspath``, ``metric`` (MED), ``nexthops`` ...
        """
        table = self.vtysh_json(f"show bgp {afi} unicast json")
        prefixes = sorted((table.get("routes") or {}).keys())
        details = self.vtysh_json_many([f"show bgp {afi} unicast {p} json" for p in prefixes])
        result: dict[str, dict[str, Any]] = {}
        for prefix, detail in zip(prefixes, details, strict=True):
            paths = detail.get("paths") or []
            if not paths:
                continue  # withdrawn between the two queries
            best = [p for p in paths if p.get("bestpath", {}).get("overall")]
            result[prefix] = (best or paths)[0]
        return result

    def neighbor(self, peer_ip: str) -> dict[str, Any]:
        data = self.vtysh_json(f"show bgp neighbors {peer_ip} json")
        info: dict[str, Any] = data.get(peer_ip, {})
        return info

    def session_established(self, peer_ip: str) -> bool:
        return self.neighbor(peer_ip).get("bgpState") == "Established"

    def updates_received(self, peer_ip: str) -> int:
        """UPDATE messages received from peer_ip (End-of-RIB markers included)."""
        return int(self.neighbor(peer_ip)["messageStats"]["updatesRecv"])

    def connections_established(self, peer_ip: str) -> int:
        return int(self.neighbor(peer_ip).get("connectionsEstablished", 0))

    def restart(self) -> None:
        self.stop()
        self.procs = {}
        self._start_daemons()

    def stop(self) -> None:
        for daemon in ("bgpd", "zebra"):
            proc = self.procs.get(daemon)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# --------------------------------------------------------------------------- ExaBGP


SHIPPED_ENV = REPO / "exabgp" / "exabgp.env"
LAUNCHER = REPO / "announcer" / "exabgp" / "launcher.py"


def shipped_exabgp_settings() -> dict[str, str]:
    """exabgp/exabgp.env: the settings the product runs ExaBGP with."""
    from announcer.exabgp.start import parse_env

    return parse_env(SHIPPED_ENV.read_text(), str(SHIPPED_ENV))


def exabgp_argv(exabgp: str, conf: str) -> tuple[str, ...]:
    """ExaBGP as the product starts it (`announcer exabgp`): the launcher, run by the
    interpreter of the venv ``exabgp`` belongs to (so its ExaBGP release runs). Any other
    executable (a test's own wrapper) runs as given. ANNOUNCER_EXABGP_STOCK=1 in the
    environment makes the launcher run ExaBGP stock."""
    bindir = Path(exabgp).parent
    python = bindir / "python"
    if (bindir.parent / "pyvenv.cfg").exists() and python.exists():
        return (str(python), "-I", str(LAUNCHER), conf)
    return (exabgp, conf)


def exabgp_env(workdir: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ExaBGPProcess starts ExaBGP with: the shipped settings, then root,
    foreground, a log file of its own."""
    merged = dict(os.environ)
    merged.update(shipped_exabgp_settings())
    merged.update(
        {
            "exabgp.daemon.user": "root",
            "exabgp.daemon.daemonize": "false",
            "exabgp.log.destination": str(workdir / "exabgp.log"),
            "exabgp.api.cli": "false",
        }
    )
    merged.update(env or {})
    return merged


@dataclass
class ExaBGPProcess:
    """ExaBGP in the foreground inside a namespace.

    It is started as a session leader, so its API helpers (which ExaBGP puts in their own
    process group with setpgrp, but which keep the session) can be found and killed with it.
    ExaBGP's own stdout/stderr (tracebacks) go to ``workdir/exabgp.stdout``.
    """

    ns: str
    workdir: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls,
        ns: str,
        workdir: Path,
        conf_text: str,
        env: dict[str, str] | None = None,
        exabgp: str = DEFAULT_EXABGP,
    ) -> ExaBGPProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "exabgp.conf"
        conf.write_text(conf_text)
        with (workdir / "exabgp.stdout").open("ab") as out:
            proc = subprocess.Popen(
                netns_argv(ns, exabgp_argv(exabgp, str(conf))),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=exabgp_env(workdir, env),
                start_new_session=True,
            )
        return cls(ns, workdir, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        parts = []
        for name in ("exabgp.log", "exabgp.stdout"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send sig to ExaBGP only (not to its helpers)."""
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def helpers(self) -> list[int]:
        """Live processes in ExaBGP's session other than ExaBGP itself."""
        return [p for p in session_pids(self.pid) if p != self.pid]

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, SIGKILL at the deadline; then kill helpers left in the session."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        left = kill_and_wait(self.helpers(), signal.SIGTERM, 3.0)
        kill_and_wait(left, signal.SIGKILL, 3.0)
        return self.proc.returncode


def exabgp_neighbor(
    peer: str, local: str, family: str, processes: list[str], extra: str = ""
) -> str:
    """One `neighbor` block for the standard link (AS 65001 -> 65000, hold-time 9).

    ``adj-rib-in false`` as exabgp/exabgp5.conf ships it: FRR sends the host's routes back,
    and ExaBGP would keep (and decode) them all (docs/performance.md, "ExaBGP's memory").
    """
    return (
        f"neighbor {peer} {{\n"
        f"    router-id {HOST_V4};\n"
        f"    local-address {local};\n"
        f"    local-as {HOST_ASN};\n"
        f"    peer-as {PEER_ASN};\n"
        f"    hold-time 9;\n"
        f"    adj-rib-in false;\n"
        f"    family {{ {family} unicast; }}\n"
        f"    api {{ processes [ {' '.join(processes)} ]; neighbor-changes; }}\n"
        f"{extra}"
        f"}}\n"
    )


# --------------------------------------------------------------------------- the BGP link


@dataclass
class BgpLink:
    """Two namespaces joined by a veth; FRR (AS 65000) in ``peer`` expects ExaBGP in ``host``."""

    host: str
    peer: str
    frr: FrrPeer
    workdir: Path


def _add_address(ns: str, ifname: str, cidr: str) -> None:
    family = "-6" if ":" in cidr else "-4"
    extra = ["nodad"] if family == "-6" else []
    sh(ns, "ip", family, "addr", "add", cidr, "dev", ifname, *extra)


def _tentative(ns: str) -> bool:
    return "tentative" in sh(ns, "ip", "-6", "addr").stdout


@contextlib.contextmanager
def bgp_link(tmp_path: Path) -> Iterator[BgpLink]:
    """host (10.99.0.2, fd00:99::2 on eth-peer) <-veth-> peer (10.99.0.1, fd00:99::1 on
    eth-host) with FRR in peer, neighbors 10.99.0.2 and fd00:99::2 in AS 65001."""
    workdir = tmp_path
    with netns("host") as host, netns("peer") as peer:
        veth_pair(host, HOST_IF, peer, PEER_IF)
        for ns, ifname, v4, v6 in (
            (host, HOST_IF, HOST_V4, HOST_V6),
            (peer, PEER_IF, PEER_V4, PEER_V6),
        ):
            _add_address(ns, ifname, f"{v4}/24")
            _add_address(ns, ifname, f"{v6}/64")
        poll(lambda: not _tentative(host) and not _tentative(peer), 10, "IPv6 DAD finished")
        frr = FrrPeer.start(
            peer, workdir / "frr", PEER_ASN, PEER_V4, [(HOST_V4, HOST_ASN), (HOST_V6, HOST_ASN)]
        )
        try:
            yield BgpLink(host=host, peer=peer, frr=frr, workdir=workdir)
        finally:
            frr.stop()


def python() -> str:
    """The interpreter running the tests (helpers run with it)."""
    return sys.executable
