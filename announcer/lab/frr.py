"""FRR daemons of one lab node, started from the node's bound ``daemons`` and ``frr.conf``.

The files are the ones containerlab binds into the FRR image (/etc/frr/daemons,
/etc/frr/frr.conf). Here each daemon named ``yes`` in ``daemons`` (zebra always) runs in the
node's namespace, with its ``<daemon>_options`` from that file, and private paths: vty
sockets, zserv socket and pid files under the node's socket directory, log under its log
directory, no TCP vty (``-P 0``). The daemons start
with an empty config and the profile of ``frr defaults ...``; ``vtysh -f frr.conf`` then
applies the integrated config, as ``vtysh -b`` does at boot in the image.

They run as root with group ``frrvty``: FRR requires the run-as user to be in the vty group and
checks it with getgrouplist(user, group), which passes when that group is the one named.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from announcer.lab.namespaces import LabError, poll, run, spawn

FRR_DIR = Path("/usr/lib/frr")
DAEMON_ORDER = ("zebra", "bfdd", "staticd", "bgpd")
_YES = re.compile(r"^\s*([a-z0-9]+)\s*=\s*yes\s*$", re.MULTILINE)
_PROFILE = re.compile(r"^\s*frr defaults (\w+)", re.MULTILINE)
_OPTIONS = re.compile(r"^\s*([a-z0-9]+)_options\s*=\s*\"([^\"]*)\"", re.MULTILINE)


def enabled_daemons(daemons_text: str) -> list[str]:
    """Daemons set to yes in an FRR ``daemons`` file, zebra first, in start order."""
    named = set(_YES.findall(daemons_text)) | {"zebra"}
    return [d for d in DAEMON_ORDER if d in named]


def daemon_options(daemons_text: str) -> dict[str, list[str]]:
    """``<daemon>_options="..."`` of an FRR ``daemons`` file, split into words."""
    return {m[1]: shlex.split(m[2]) for m in _OPTIONS.finditer(daemons_text)}


def profile(frr_conf: str) -> str:
    match = _PROFILE.search(frr_conf)
    return match[1] if match else "traditional"


@dataclass
class FrrNode:
    ns: str
    name: str
    conf: Path
    daemons: list[str]
    sockdir: Path
    logdir: Path
    options: dict[str, list[str]] = field(default_factory=dict)  # the daemons file's
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> None:
        self.sockdir.mkdir(parents=True, exist_ok=True)
        empty = self.sockdir / "empty.conf"
        empty.write_text("")
        text = self.conf.read_text()
        # zebra first, the others once its zserv socket exists: a client whose first
        # connect fails retries only 10 s later (FRR's zclient), and a bgpd that registers
        # its BFD sessions before it is connected never has them installed (measured: the
        # leaf detected a silent failure by the hold timer, not BFD)
        for daemon in self.daemons:
            self.procs[daemon] = spawn(self.ns, self._argv(daemon, profile(text), empty),
                                       self.logdir / f"{daemon}.stdout")  # fmt: skip
            if daemon == "zebra":
                poll(self._zserv_ready, 20, f"{self.name}: zebra's zserv socket")
        for daemon in self.daemons:
            poll(partial(self._ready, daemon), 20, f"{self.name}: {daemon} vty socket")
        out = run(self.ns, ["vtysh", "--vty_socket", str(self.sockdir), "-f", str(self.conf)],
                  check=False)  # fmt: skip
        (self.logdir / "vtysh-apply.log").write_text(out.stdout + out.stderr)
        if out.returncode != 0:
            raise LabError(f"{self.name}: vtysh -f {self.conf} failed:\n{out.stdout}{out.stderr}")

    def _argv(self, daemon: str, defaults: str, empty: Path) -> list[str]:
        argv = [str(FRR_DIR / daemon), "-u", "root", "-g", "frrvty", "-P", "0",
                "-F", defaults, "-f", str(empty),
                "-i", str(self.sockdir / f"{daemon}.pid"),
                "-z", str(self.sockdir / "zserv.api"),
                "--vty_socket", str(self.sockdir),
                "--log", f"file:{self.logdir / f'{daemon}.log'}"]  # fmt: skip
        if daemon == "bfdd":  # its control socket defaults to one path for the machine
            argv += ["--bfdctl", str(self.sockdir / "bfdd.sock")]
        return argv + self.options.get(daemon, [])

    def _zserv_ready(self) -> bool:
        self._ready("zebra")  # raises if zebra exited
        return (self.sockdir / "zserv.api").exists()

    def _ready(self, daemon: str) -> bool:
        proc = self.procs[daemon]
        if proc.poll() is not None:
            log = (self.logdir / f"{daemon}.stdout").read_text(errors="replace")
            raise LabError(f"{self.name}: {daemon} exited with {proc.returncode}: {log}")
        return (self.sockdir / f"{daemon}.vty").exists()

    def vtysh(self, *commands: str, timeout: float = 20) -> str:
        argv = ["vtysh", "--vty_socket", str(self.sockdir)]
        for cmd in commands:
            argv += ["-c", cmd]
        return run(self.ns, argv, timeout=timeout).stdout

    def vtysh_json(self, command: str) -> Any:
        out = self.vtysh(command)
        try:
            return json.loads(out)
        except ValueError as exc:
            raise LabError(f"{self.name}: vtysh {command!r} did not return JSON: {out!r}") from exc
