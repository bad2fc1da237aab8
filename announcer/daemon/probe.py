"""``announcer check --probe``: what the configuration cannot say by itself.

Each probe looks at the environment the announcer will run in and reports ``ok``, ``warn``
or ``fail`` with what it saw: the control socket's directory, the netlink buffer, and, given
ExaBGP's configuration, whether ExaBGP's user can run the announcer at all (an API process
it cannot execute makes ExaBGP 4.2.21 crash with an unrelated traceback), whether the
neighbors and graceful-restart settings agree with the announcer's, and which ExaBGP runs.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from announcer.config import Config
from announcer.daemon.control import fallback_socket

SO_RCVBUFFORCE = 33


@dataclass(frozen=True)
class Finding:
    level: str  # ok, warn, fail
    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.level:<5} {self.check:<18} {self.detail}"


def probe(
    config: Config, exabgp_conf: Path | None, exabgp_user: str | None, exabgp: str
) -> list[Finding]:
    findings = [_control(config), _netlink(config), _exabgp_version(config, exabgp)]
    if exabgp_conf is not None:
        findings += _exabgp_conf(config, exabgp_conf, exabgp_user)
    return findings


def _control(config: Config) -> Finding:
    path = Path(config.control.socket)
    directory = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("/"))
    if os.access(directory, os.W_OK | os.X_OK):
        return Finding("ok", "control_socket", f"{path} can be created")
    fallback = fallback_socket()
    where = f"; it will use {fallback}" if fallback else ""
    return Finding("warn", "control_socket", f"{directory} is not writable for this user{where}")


def _netlink(config: Config) -> Finding:
    wanted = config.kernel.netlink_rcvbuf_bytes
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, wanted)
            return Finding("ok", "netlink_buffer", f"{wanted} bytes (CAP_NET_ADMIN)")
        except PermissionError:
            pass
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    if rmem_max >= wanted:
        return Finding("ok", "netlink_buffer", f"{wanted} bytes (net.core.rmem_max {rmem_max})")
    return Finding(
        "warn",
        "netlink_buffer",
        f"capped at net.core.rmem_max {rmem_max} < {wanted}: bursts overrun and are repaired "
        "by a resync (give CAP_NET_ADMIN or raise net.core.rmem_max; docs/exabgp.md)",
    )


def _exabgp_version(config: Config, exabgp: str) -> Finding:
    if shutil.which(exabgp) is None:
        return Finding("warn", "exabgp_version", f"{exabgp} not found in PATH")
    argv = [exabgp, "version"] if config.exabgp.dialect == 5 else [exabgp, "--version"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return Finding("warn", "exabgp_version", f"{exabgp} did not answer: {exc}")
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    if match is None:
        return Finding("warn", "exabgp_version", f"{exabgp}: no version in its output")
    version = match.group(0)
    if int(match.group(1)) != config.exabgp.dialect:
        return Finding(
            "warn",
            "exabgp_version",
            f"{exabgp} is {version}, exabgp.dialect says {config.exabgp.dialect}",
        )
    return Finding("ok", "exabgp_version", f"{exabgp} is {version}")


_RUN = re.compile(r"^\s*run\s+([^;]+);", re.MULTILINE)
_NEIGHBOR = re.compile(r"^\s*neighbor\s+(\S+)\s*\{", re.MULTILINE)


def _exabgp_conf(config: Config, path: Path, user: str | None) -> list[Finding]:
    try:
        text = path.read_text()
    except OSError as exc:
        return [Finding("fail", "exabgp_conf", f"cannot read {path}: {exc.strerror}")]
    findings = [_runnable(run.split()[0], user) for run in _RUN.findall(text)]
    neighbors = {ip_address(n) for n in _NEIGHBOR.findall(text)}
    configured = set(config.exabgp.neighbors)
    if {n.version for n in neighbors} == {4, 6} and not configured:
        findings.append(Finding(
            "warn", "neighbors",
            f"{path} has IPv4 and IPv6 neighbors but exabgp.neighbors is empty: ExaBGP will log "
            "an error for every route sent to the other family's neighbor; list them",
        ))  # fmt: skip
    elif configured and not configured <= neighbors:
        missing = ", ".join(sorted(map(str, configured - neighbors)))
        findings.append(
            Finding("fail", "neighbors", f"exabgp.neighbors names {missing}, {path} does not")
        )
    manual = "manual-eor true" in text
    if manual != config.exabgp.manual_eor:
        findings.append(Finding(
            "fail", "end_of_rib",
            f"{path} {'has' if manual else 'lacks'} 'manual-eor true' but exabgp.manual_eor is "
            f"{str(config.exabgp.manual_eor).lower()}: after a restart the leaf would "
            + ("keep stale routes until its stale timer" if manual else "flush routes early"),
        ))  # fmt: skip
    return findings


def _runnable(program: str, user: str | None) -> Finding:
    """Whether ``user`` (ExaBGP's, after it drops privileges) can execute ``program``."""
    if not os.path.exists(program):
        return Finding("fail", "exabgp_process", f"{program} does not exist")
    if user is not None and os.geteuid() == 0 and shutil.which("runuser"):
        test = ["runuser", "-u", user, "--", "test", "-x", program]
        ok = subprocess.run(test, capture_output=True, timeout=10, check=False).returncode == 0
    else:
        ok = os.access(program, os.X_OK)
    who = f"user {user}" if user else "this user"
    if not ok:
        return Finding(
            "fail", "exabgp_process",
            f"{program} is not executable by {who} (check the modes of its directories, e.g. "
            "the venv's: ExaBGP 4.2.21 then crashes with an unrelated traceback)",
        )  # fmt: skip
    return Finding("ok", "exabgp_process", f"{program} is executable by {who}")
