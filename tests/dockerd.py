"""A real dockerd (with its own containerd) inside a test network namespace.

``dockerd(ns, workdir)`` starts Debian's dockerd under ``nsenter --net=/run/netns/NS``
(``ip netns exec`` would remount /sys, which dockerd does not survive), with its own
data-root, exec-root, API socket and pidfile under workdir, no bridge and no iptables. It
imports a one-binary busybox image (no registry is reachable), and on exit stops dockerd
and the containerd it started, unmounts what they left and removes workdir, also when the
test failed. Plugins are still looked up in /run/docker/plugins (a fixed path): give them
unique names.

    with netns("dock") as ns, dockerd(ns, tmp_path / "docker") as d:
        d.cli("run", "-d", "--network", "none", d.image, "sleep", "60")
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.daemons import NetnsDaemon, run_checked, serving
from tests.netlab import poll

IMAGE = "aa-busybox:test"
BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "ip", "ping", "nc", "cat", "ls", "echo", "hostname", "ifconfig")
START_TIMEOUT = 30.0


def missing() -> str | None:
    """Why a real dockerd cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to run dockerd in a namespace"
    for tool in ("dockerd", "containerd", "docker", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install docker.io)"
    if not BUSYBOX.exists():
        return f"{BUSYBOX} is missing (apt-get install busybox-static)"
    return None


def _busybox_tar(path: Path) -> None:
    """A rootfs with /bin/busybox and its applets as symlinks, as a tar for `docker import`."""
    with tarfile.open(path, "w") as tar:
        for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, "bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)


@dataclass
class Dockerd(NetnsDaemon):
    """A running dockerd; ``cli`` talks to it, ``restart``/``kill`` drive it."""

    NAME = "dockerd"
    image: str = IMAGE
    _containerd_pids: list[int] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.workdir / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """`docker -H <ours> args...`; CommandError (with stderr) when check and it fails."""
        return run_checked(["docker", "-H", self.host, *args], check=check, timeout=timeout)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            "nsenter", f"--net=/run/netns/{self.ns}", "dockerd",
            "--data-root", str(self.workdir / "data"), "--exec-root", str(self.workdir / "exec"),
            "-H", self.host, "--pidfile", str(self.workdir / "docker.pid"),
            "--config-file", str(self._config_file()),
            "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
            "--userland-proxy=false",
        ]  # fmt: skip
        # nsenter execs dockerd: the Popen pid is dockerd's.
        self._spawn(argv)
        poll(self._ready, START_TIMEOUT, f"dockerd in {self.ns} answering (log {self.log_path})")
        self._containerd_pids = self._children("containerd")

    def _config_file(self) -> Path:
        path = self.workdir / "daemon.json"
        path.write_text(json.dumps({}))
        return path

    def _ready(self) -> bool:
        self._raise_if_exited()
        return self.socket.exists() and self.cli("version", check=False, timeout=10).returncode == 0

    def _children(self, name: str) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.pid), "-x", name],
                             capture_output=True, text=True, check=False).stdout  # fmt: skip
        return [int(p) for p in out.split()]

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal dockerd only (its containerd keeps running, as after a dockerd crash)."""
        os.kill(self.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM dockerd (it stops containers and its containerd), SIGKILL what is left."""
        if self._proc is None:
            return
        self._terminate([*self._containerd_pids, *self._children("containerd")], timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def import_image(self) -> None:
        tar = self.workdir / "busybox.tar"
        _busybox_tar(tar)
        self.cli("import", str(tar), self.image)
        tar.unlink()


def dockerd(ns: str, workdir: Path) -> contextlib.AbstractContextManager[Dockerd]:
    """dockerd in namespace ns with its state in workdir, the busybox image imported."""
    return serving(Dockerd(ns, workdir), missing())
