"""The namespace backend: the clab file brought up as named namespaces on this machine.

One namespace per node (``aalab<id>-<node>``), one veth per link, each node's ``exec``
commands run inside its namespace, FRR where a node binds /etc/frr/frr.conf, and on servers
(nodes binding /etc/lab/instances.yaml) the containers, then ExaBGP + the announcer. Paths
inside configs that are bind targets are mapped to their sources, /usr/local/bin/ (where
the server image installs the announcer) to this interpreter's bin directory, and the
announcer's own directories (control socket, drains, drop-ins: private to each container
under containerlab) to per-server directories of the run (PRIVATE_DIRS).

The lab's state (namespaces, run directory) is written to STATE_FILE before anything is
created, so ``down`` - from this process, a later one, or after a crash - removes everything.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from announcer.lab.frr import FrrNode, daemon_options, enabled_daemons
from announcer.lab.hoststack import (
    STOP_TIMEOUT_S,
    bfdd_commands,
    option,
    plain_announcer,
    runs_exabgp,
    unit_pids,
    without_graceful_restart,
)
from announcer.lab.instances import parse_instances
from announcer.lab.namespaces import (
    NS_PREFIX,
    LabError,
    create_namespace,
    delete_namespaces,
    kill_and_wait,
    list_namespaces,
    namespace_pids,
    poll,
    run,
    spawn,
    veth,
)
from announcer.lab.topology import Node, Topology, load_topology

STATE_DIR = Path("/run/anycast-announcer-lab")
STATE_FILE = STATE_DIR / "state.json"
FRR_CONF = "/etc/frr/frr.conf"
FRR_DAEMONS = "/etc/frr/daemons"
EXABGP_CONF = "/etc/anycast-announcer/exabgp.conf"
EXABGP_ENV = "/etc/anycast-announcer/exabgp.env"  # the shipped exabgp/exabgp.env
LAB_EXABGP_ENV = "/etc/lab/exabgp.env"  # the lab's additions, in the environment (they win)
INSTANCES = "/etc/lab/instances.yaml"
ANNOUNCER_CONF = "/etc/anycast-announcer/announcer.yaml"
DROP_INS = "/etc/anycast-announcer/routes.d"
# The routed plugin's lockFile (its state files next to it): the servers' announcer.yaml
# name it as routed.lock_file; each server has its own here (one file system for all).
ROUTED_LOCK = "/run/lock/announcer-routed.lock"
# A container's private directories -> (base, sub-path): "sock" is the run's socket
# directory (short paths: a unix socket path has 108 bytes), "run" the run directory.
PRIVATE_DIRS = {
    "/run/anycast-announcer": ("sock", "announcer"),
    "/var/lib/anycast-announcer": ("run", "fs/var/lib/anycast-announcer"),
    "/etc/anycast-announcer": ("run", "fs/etc/anycast-announcer"),
    "/run/lock": ("sock", "lock"),
}
_PRIVATE = re.compile("(" + "|".join(map(re.escape, PRIVATE_DIRS)) + r")(?![\w.-])")


@dataclass
class LabState:
    run_id: str
    prefix: str
    topology: str
    rundir: str
    sockdir: str
    owner_pid: int
    keep: bool = False
    namespaces: list[str] = field(default_factory=list)
    backend: str = "netns"

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls) -> LabState | None:
        try:
            return cls(**json.loads(STATE_FILE.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _owner_alive(state: LabState) -> bool:
    return state.owner_pid != os.getpid() and Path(f"/proc/{state.owner_pid}").exists()


def clean_stale(log: Any = print) -> None:
    """Remove a lab an earlier run left (crashed, or kept with --keep)."""
    state = LabState.load()
    if state is not None and state.backend != "netns":
        raise LabError(f"a {state.backend} lab is up ({state.topology}); `down` it first")
    if state is not None:
        if _owner_alive(state) and not state.keep:
            raise LabError(f"a lab is running (owner pid {state.owner_pid}); `down` it first")
        log(f"cleaning up the earlier lab {state.run_id}")
        teardown(state)
    strays = [n for n in list_namespaces() if n.startswith(NS_PREFIX) and "-" in n]
    if strays:
        log(f"removing stray lab namespaces: {' '.join(strays)}")
        delete_namespaces(strays)


def teardown(state: LabState) -> None:
    names = set(state.namespaces)
    names |= {n for n in list_namespaces() if n.startswith(state.prefix)}
    # instance namespaces first: their veths' host ends live in the servers
    delete_namespaces(sorted(names, key=lambda n: -n.count("-")))
    subprocess.run(["rm", "-rf", state.sockdir], check=False)
    STATE_FILE.unlink(missing_ok=True)


class NetnsLab:
    """A running lab; the scenarios drive it through these methods (see backend.Lab)."""

    def __init__(self, topo: Topology, state: LabState) -> None:
        self.topo = topo
        self.state = state
        self.rundir = Path(state.rundir)
        self.sockdir = Path(state.sockdir)
        self.frr: dict[str, FrrNode] = {}
        self.exabgp: dict[str, subprocess.Popen[bytes]] = {}

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def create(cls, topo_path: Path, rundir: Path, keep: bool = False) -> NetnsLab:
        clean_stale()
        run_id = rundir.name
        prefix = f"{NS_PREFIX}{secrets.token_hex(2)}-"
        state = LabState(run_id, prefix, str(topo_path.resolve()), str(rundir),
                         str(STATE_DIR / run_id), os.getpid(), keep)  # fmt: skip
        state.save()
        return cls(load_topology(topo_path), state)

    @classmethod
    def attach(cls) -> NetnsLab:
        state = LabState.load()
        if state is None:
            raise LabError("no lab is up (no state file)")
        lab = cls(load_topology(Path(state.topology)), state)
        for node in lab.topo.nodes.values():
            conf = node.bind_source(FRR_CONF)
            if conf is not None:
                lab.frr[node.name] = lab._frr_node(node, conf)
        return lab

    def ns(self, node: str) -> str:
        if node not in self.topo.nodes:
            raise LabError(f"no node {node!r} (nodes: {', '.join(self.topo.nodes)})")
        return self.state.prefix + node

    def up(self) -> None:
        for name in self.topo.nodes:
            self.state.namespaces.append(self.ns(name))
            self.state.save()
            create_namespace(self.ns(name))
        for link in self.topo.links:
            veth(self.ns(link.a.node), link.a.interface, self.ns(link.b.node), link.b.interface)
        for node in self.topo.nodes.values():
            for command in node.exec:
                run(self.ns(node.name), ["sh", "-c", command])
        for node in self.topo.nodes.values():
            conf = node.bind_source(FRR_CONF)
            if conf is not None:
                self.frr[node.name] = self._frr_node(node, conf)
                self.frr[node.name].start()
        for node in self.topo.nodes.values():
            if node.bind_source(INSTANCES) is not None:
                self.instances(node.name, "up")
            if node.bind_source(ANNOUNCER_CONF) is not None:
                self.start_host_bfd(node.name)  # the unit starts before ExaBGP's
            if node.bind_source(EXABGP_CONF) is not None:
                self.wait_peer_ready(node.name)
                self.start_bgp(node.name)

    def down(self) -> None:
        teardown(self.state)

    def _frr_node(self, node: Node, conf: Path) -> FrrNode:
        daemons_file = node.bind_source(FRR_DAEMONS)
        text = daemons_file.read_text() if daemons_file else ""
        return FrrNode(self.ns(node.name), node.name, conf, enabled_daemons(text),
                       self.sockdir / node.name, self.rundir / node.name,
                       daemon_options(text))  # fmt: skip

    # ---------------------------------------------------------------- operations

    def exec(self, node: str, argv: list[str], *, check: bool = True, timeout: float = 30,
             input_text: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return run(self.ns(node), argv, check=check, timeout=timeout, input_text=input_text)

    def spawn(self, node: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        return spawn(self.ns(node), argv, log)

    def vtysh_json(self, node: str, command: str) -> Any:
        return self.frr[node].vtysh_json(command)

    def vtysh(self, node: str, *commands: str) -> str:
        return self.frr[node].vtysh(*commands)

    def instances(self, server: str, action: str, *names: str) -> None:
        """Run announcer.lab.instances in server; its namespaces are made/removed here."""
        spec = self.topo.nodes[server].bind_source(INSTANCES)
        if spec is None:
            raise LabError(f"{server} binds no {INSTANCES}")
        listed = parse_instances(spec.read_text())
        every = listed.autostarted if action == "up" else listed.instances
        chosen = list(names) or [i.name for i in every]
        inst_ns = [f"{self.ns(server)}-{name}" for name in chosen]
        lock = Path(self.private(server, ROUTED_LOCK))
        lock.parent.mkdir(parents=True, exist_ok=True)
        if action in ("up", "start"):
            for ns in inst_ns:
                self.state.namespaces.append(ns)
                self.state.save()
                create_namespace(ns)
        argv = [sys.executable, "-m", "announcer.lab.instances", action, str(spec), *names,
                "--netns-prefix", f"{self.ns(server)}-",
                "--logdir", str(self.rundir / server / "instances"),
                "--drop-ins", self.private(server, DROP_INS), "--lock-file", str(lock),
                "--external-netns"]  # fmt: skip
        run(self.ns(server), argv, timeout=60)
        if action in ("down", "stop"):
            delete_namespaces(inst_ns)
            self.state.namespaces = [n for n in self.state.namespaces if n not in inst_ns]
            self.state.save()

    def private(self, server: str, path: str) -> str:
        """Where a path private to server's container lives on this machine."""

        def where(match: re.Match[str]) -> str:
            base, sub = PRIVATE_DIRS[match.group(1)]
            return str((self.sockdir if base == "sock" else self.rundir) / server / sub)

        return _PRIVATE.sub(where, path)

    def announcer_config(self, server: str, plain: bool = False) -> Path:
        """server's announcer.yaml with its private paths mapped (written at start_bgp)."""
        return self.rundir / server / ("announcer-plain.yaml" if plain else "announcer.yaml")

    def announcer(self, server: str, *args: str, check: bool = True
                  ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """`announcer ARGS -c CONFIG` on server (status, drain, undrain)."""
        return self.exec(server, self.announcer_argv(server, *args), check=check)

    def edit_announcer_config(self, server: str, edit: Callable[[str], str]) -> None:
        """Replace the config server's running announcer reads with edit(its text), in one
        rename (the announcer applies an edit of weights, policy, ... without a restart)."""
        path = self.announcer_config(server)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(edit(path.read_text()))
        os.replace(tmp, path)

    def exabgp_output(self, server: str) -> str:
        """What server's ExaBGP unit wrote to stdout/stderr (the launcher, the announcer)."""
        path = self.rundir / server / "exabgp.stdout"
        return path.read_text(errors="replace") if path.exists() else ""

    def announcer_argv(self, server: str, *args: str) -> list[str]:
        exe = str(Path(sys.executable).parent / "announcer")
        return [exe, *args, "-c", str(self.announcer_config(server))]

    def write_configs(self, server: str) -> None:
        """server's announcer.yaml and exabgp.conf, mapped, and their plain variants (no
        graceful restart, no manual End-of-RIB: hoststack.without_graceful_restart)."""
        node = self.topo.nodes[server]
        logdir = self.rundir / server
        logdir.mkdir(parents=True, exist_ok=True)
        source = node.bind_source(ANNOUNCER_CONF)
        if source is not None:
            mapped = self.private(server, source.read_text())
            self.announcer_config(server).write_text(mapped)
            self.announcer_config(server, plain=True).write_text(plain_announcer(mapped))
            for private in PRIVATE_DIRS:
                Path(self.private(server, private)).mkdir(parents=True, exist_ok=True)
        text = self._mapped(node, (node.bind_source(EXABGP_CONF) or Path()).read_text())
        (logdir / "exabgp.conf").write_text(text)
        if source is not None:
            plain = without_graceful_restart(
                text,
                str(self.announcer_config(server)),
                str(self.announcer_config(server, plain=True)),
            )
            (logdir / "exabgp-plain.conf").write_text(plain)

    def start_bgp(self, server: str, graceful: bool = True) -> None:
        """Start ExaBGP (and so the announcer) on server as the product does: ``announcer
        exabgp --env <the shipped exabgp.env> CONF`` (the launcher), the lab's additions and
        the log file in the environment; graceful=False: the plain variant."""
        self.write_configs(server)
        node = self.topo.nodes[server]
        logdir = self.rundir / server
        conf = logdir / ("exabgp.conf" if graceful else "exabgp-plain.conf")
        shipped = node.bind_source(EXABGP_ENV)
        if shipped is None:
            raise LabError(f"{server} binds no {EXABGP_ENV} (the shipped exabgp/exabgp.env)")
        env = dict(os.environ)
        env.update(_env_file(node.bind_source(LAB_EXABGP_ENV)))
        env["exabgp.log.destination"] = str(logdir / "exabgp.log")
        argv = ["ip", "netns", "exec", self.ns(server), announcer_program(), "exabgp",
                "--env", str(shipped), str(conf)]  # fmt: skip
        with (logdir / "exabgp.stdout").open("ab") as out:
            self.exabgp[server] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )  # fmt: skip

    def restart_exabgp(self, server: str, graceful: bool = True) -> float:
        """`systemctl restart` of server's ExaBGP unit (hoststack): SIGTERM to ExaBGP, its
        announcer and the announcer's watchdog at once, SIGKILL for what is left after
        TimeoutStopSec, then start; the seconds the stop took."""
        started = time.monotonic()
        unit = unit_pids(namespace_pids(self.ns(server)), runs_exabgp)
        left = kill_and_wait(sorted(unit), signal.SIGTERM, STOP_TIMEOUT_S)
        kill_and_wait(left, signal.SIGKILL, 5)
        stopped = time.monotonic() - started
        self.start_bgp(server, graceful)
        with (self.rundir / server / "restarts.log").open("a") as log:
            log.write(f"{time.time():.3f} restart pids={sorted(unit)} sigkilled={left} "
                      f"stop_s={stopped:.3f} graceful_restart={graceful}\n")  # fmt: skip
        return stopped

    def restart_command(self, server: str, graceful: bool = True) -> str:
        """The command restart-stack runs to restart server's stack (in its namespace)."""
        plain = "" if graceful else " --plain"
        return f"{sys.executable} -m announcer.lab restart-exabgp {server}{plain}"

    def start_host_bfd(self, server: str) -> None:
        """bfdd as anycast-announcer-bfdd.service runs it, its paths mapped into the run:
        the unit's pre-start commands (chown, `announcer bfd-config`), then bfdd."""
        here = self.sockdir / server / "bfdd"
        unit = bfdd_commands({"/run/anycast-announcer-bfdd": str(here),
                              ANNOUNCER_CONF: str(self.announcer_config(server)),
                              "/usr/local/bin/": f"{Path(sys.executable).parent}/"})  # fmt: skip
        self.write_configs(server)
        Path(unit.runtime_directory or here).mkdir(parents=True, exist_ok=True)
        os.chmod(unit.runtime_directory or here, unit.runtime_mode)
        for argv in unit.pre:
            self.exec(server, list(argv))
        self.spawn(server, list(unit.start), self.rundir / server / "bfdd.log")
        vty = Path(option(unit.start, "--vty_socket") or here) / "bfdd.vty"
        poll(vty.exists, 20, f"{server}: bfdd's vty socket {vty}")

    def wait_peer_ready(self, server: str) -> None:
        """Wait until the FRR peers of server's ExaBGP accept its connection (not Idle).

        ExaBGP 5.0.15 can lose a route the announcer adds while a connection attempt is
        being refused (docs/lab.md, "Problems found"); starting once the leaf listens
        avoids those refused attempts.
        """
        conf = (self.topo.nodes[server].bind_source(EXABGP_CONF) or Path()).read_text()
        peers = re.findall(r"^\s*local-address\s+([^;\s]+)\s*;", conf, re.MULTILINE)
        for _, other in self.topo.links_of(server):
            frr = self.frr.get(other.node)
            for ip in peers if frr else []:
                poll(lambda f=frr, ip=ip: _peer_state(f, ip) in ("Active", "Connect"),  # type: ignore[misc]
                     20, f"{other.node} ready for {server}'s session {ip}")  # fmt: skip

    def stop_bgp(self, server: str) -> None:
        """Kill ExaBGP and the announcer on server (SIGKILL: a crash, not a clean stop)."""
        ns = self.ns(server)
        frr_pids = {int(p) for p in _pidfiles(self.sockdir / server)}
        victims = [p for p in namespace_pids(ns) if p not in frr_pids and _is_bgp(p)]
        kill_and_wait(victims, signal.SIGKILL, 5)

    def _mapped(self, node: Node, text: str) -> str:
        for bind in node.binds:
            source = bind.source
            if bind.target == ANNOUNCER_CONF:
                source = self.announcer_config(node.name)
            text = text.replace(bind.target, str(source))
        return text.replace("/usr/local/bin/", f"{Path(sys.executable).parent}/")

    def status(self) -> dict[str, Any]:
        existing = set(list_namespaces())
        nodes = {}
        for node in self.topo.nodes:
            ns = self.ns(node)
            nodes[node] = {
                "namespace": ns,
                "up": ns in existing,
                "processes": len(namespace_pids(ns)) if ns in existing else 0,
            }
        return {"run_id": self.state.run_id, "rundir": str(self.rundir), "nodes": nodes}


def announcer_program() -> str:
    return str(Path(sys.executable).parent / "announcer")


def _peer_state(frr: FrrNode, ip: str) -> str:
    info = frr.vtysh_json(f"show bgp neighbors {ip} json").get(ip, {})
    return str(info.get("bgpState", ""))


def _env_file(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    pairs = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip()
    return pairs


def _pidfiles(directory: Path) -> list[str]:
    return [p.read_text().strip() for p in directory.glob("*.pid") if p.read_text().strip()]


def _is_bgp(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return "exabgp" in cmdline or "announcer run" in cmdline
