"""The containerlab backend: ``containerlab deploy / inspect --format json / destroy
--cleanup`` through subprocess, nodes reached with ``docker exec``.

``parse_inspect`` accepts both JSON shapes of ``inspect --format json``: containerlab >=
0.68 groups containers by lab name (``{"<lab>": [ {...} ]}``), older releases wrap them in
``{"containers": [ {...} ]}``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from announcer.lab.namespaces import LabError
from announcer.lab.topology import Topology, load_topology

# lab-exabgp's copy of the bound announcer.yaml, which the running announcer reads
RUNNING_CONFIG = "/var/lib/lab/announcer.yaml"


@dataclass(frozen=True)
class ClabContainer:
    name: str
    node: str
    lab: str
    state: str
    ipv4: str
    kind: str = ""
    image: str = ""


def parse_inspect(text: str) -> list[ClabContainer]:
    doc = json.loads(text or "{}")
    if not isinstance(doc, dict):
        raise LabError(f"containerlab inspect: expected a JSON object, got {type(doc).__name__}")
    if "containers" in doc:
        entries: list[Any] = doc["containers"] or []
    else:
        entries = [c for group in doc.values() if isinstance(group, list) for c in group]
    found = []
    for entry in entries:
        lab = str(entry.get("lab_name", ""))
        name = str(entry.get("name", ""))
        prefix = f"clab-{lab}-"
        node = name[len(prefix) :] if lab and name.startswith(prefix) else name
        found.append(
            ClabContainer(
                name,
                node,
                lab,
                str(entry.get("state", "")),
                str(entry.get("ipv4_address", "")),
                str(entry.get("kind", "")),
                str(entry.get("image", "")),
            )
        )
    return found


def _clab(*args: str, timeout: float = 600) -> str:
    proc = subprocess.run(["containerlab", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise LabError(f"containerlab {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


class ClabLab:
    """The same operations as NetnsLab, on containerlab's containers."""

    def __init__(self, topo_path: Path, rundir: Path) -> None:
        self.topo_path = topo_path
        self.topo: Topology = load_topology(topo_path)
        self.rundir = rundir

    def container(self, node: str) -> str:
        return f"clab-{self.topo.name}-{node}"

    def up(self) -> None:
        _clab("deploy", "-t", str(self.topo_path), "--reconfigure")
        states = {c.node: c.state for c in self.inspect()}
        missing = [n for n in self.topo.nodes if states.get(n) != "running"]
        if missing:
            raise LabError(f"containerlab: nodes not running: {missing}")

    def inspect(self) -> list[ClabContainer]:
        return parse_inspect(_clab("inspect", "-t", str(self.topo_path), "--format", "json"))

    def down(self) -> None:
        _clab("destroy", "-t", str(self.topo_path), "--cleanup")

    def exec(self, node: str, argv: list[str], *, check: bool = True, timeout: float = 30,
             input_text: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        full = ["docker", "exec", "-i", self.container(node), *argv]
        proc = subprocess.run(full, input=input_text, capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip
        if check and proc.returncode != 0:
            raise LabError(f"{full!r} failed (rc={proc.returncode}): {proc.stderr}")
        return proc

    def spawn(self, node: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            return subprocess.Popen(["docker", "exec", self.container(node), *argv],
                                    stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    def vtysh(self, node: str, *commands: str) -> str:
        argv = ["vtysh"]
        for cmd in commands:
            argv += ["-c", cmd]
        return self.exec(node, argv).stdout

    def vtysh_json(self, node: str, command: str) -> Any:
        return json.loads(self.vtysh(node, command))

    def instances(self, server: str, action: str, *names: str) -> None:
        argv = ["python3", "-m", "announcer.lab.instances", action, "/etc/lab/instances.yaml",
                *names, "--drop-ins", "/etc/anycast-announcer/routes.d"]  # fmt: skip
        self.exec(server, argv, timeout=60)

    def announcer(self, server: str, *args: str, check: bool = True
                  ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return self.exec(server, self.announcer_argv(server, *args), check=check)

    def announcer_argv(self, server: str, *args: str) -> list[str]:
        return ["announcer", *args, "-c", RUNNING_CONFIG]

    def edit_announcer_config(self, server: str, edit: Callable[[str], str]) -> None:
        """The running announcer's config (lab-exabgp's copy, not the bound file) replaced
        with edit(its text), in one rename."""
        text = edit(self.exec(server, ["cat", RUNNING_CONFIG]).stdout)
        self.exec(server, ["sh", "-c", 'cat >"$0.tmp" && mv "$0.tmp" "$0"', RUNNING_CONFIG],
                  input_text=text)  # fmt: skip

    def exabgp_output(self, server: str) -> str:
        return self.exec(server, ["cat", "/var/log/lab/exabgp.out"], check=False).stdout

    def start_bgp(self, server: str) -> None:
        start = "setsid /usr/local/bin/lab-exabgp >>/var/log/lab/exabgp.out 2>&1 &"
        self.exec(server, ["sh", "-c", start])

    def restart_command(self, server: str, graceful: bool = True) -> str:
        return "/usr/local/bin/lab-restart-exabgp" + ("" if graceful else " --plain")

    def stop_bgp(self, server: str) -> None:
        self.exec(server, ["pkill", "-KILL", "-f", "exabgp|announcer run"], check=False)
