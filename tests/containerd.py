"""A real containerd (Debian's 1.6) inside a test network namespace and a private mount one.

``containerd(ns, workdir)`` starts ``containerd`` under ``nsenter --net=/run/netns/NS
unshare --mount``: its root, state, socket and config live under workdir, and inside its
mount namespace only, /etc, /opt and /var/lib are overlays of the machine's (writes land
under workdir) with workdir's directories bound on the paths a CNI runtime hard-codes:

    /etc/cni/net.d  <- workdir/net.d     the conflists `ctr run --cni` reads
    /opt/cni/bin    <- workdir/bin       where it looks for every CNI plugin, IPAM too
    /var/lib/cni    <- workdir/var-lib-cni   libcni's result cache, host-local's leases
    /usr/lib/cni    <- workdir/usr-lib-cni   Debian's plugin dir: copies of host-local,
                                             static, loopback (a test may take them away)
    /run/containerd <- a tmpfs           shim sockets, fifos, runc state

``ctr`` runs in the same namespaces (``nsenter --mount=/proc/<containerd>/ns/mnt``), so
nothing of this touches the machine's directories. An OCI archive of a one-binary busybox
image is assembled here and imported (no registry is reachable). On exit every task is
killed, containerd and its shims are stopped and workdir is removed, also on failure.

    with netns("ctrd") as ns, containerd(ns, tmp_path / "ctrd") as c:
        c.ctr("run", "-d", "--cni", c.image, "web", "sleep", "600")
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.daemons import NetnsDaemon, run_checked, serving
from tests.netlab import CommandError, poll

IMAGE = "docker.io/library/aa-busybox:test"
NAMESPACE = "aa"  # containerd's namespace: container ids given to CNI are "aa-<id>"
BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "ip", "ping", "cat", "ls", "echo", "ifconfig", "nc")
START_TIMEOUT = 30.0
TOOLS = ("containerd", "ctr", "containerd-shim-runc-v2", "runc", "nsenter", "unshare")
DEBIAN_CNI_DIR = Path("/usr/lib/cni")  # containernetworking-plugins
DEBIAN_PLUGINS = ("host-local", "static", "loopback")


def missing() -> str | None:
    """Why a real containerd cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to run containerd in a namespace"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install containerd)"
    if not BUSYBOX.exists():
        return f"{BUSYBOX} is missing (apt-get install busybox-static)"
    if not all((DEBIAN_CNI_DIR / p).exists() for p in DEBIAN_PLUGINS):
        return "needs Debian's containernetworking-plugins (host-local, static in /usr/lib/cni)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs (the private /etc, /opt, /var/lib need it)"
    return None


def _layer() -> bytes:
    """A rootfs with /bin/busybox and its applets as symlinks, as an uncompressed tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "proc", "sys", "dev", "etc", "run"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, "bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buf.getvalue()


def oci_archive(path: Path, name: str = IMAGE) -> None:
    """An OCI image layout (index.json, blobs) in a tar, as `ctr images import` reads it."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    layer = _layer()
    packed = gzip.compress(layer, mtime=0)
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }  # fmt: skip
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **blob(json.dumps(config).encode())},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(packed)}],
    }  # fmt: skip
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **blob(json.dumps(manifest).encode()),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]},
        }],
    }  # fmt: skip
    files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
             "index.json": json.dumps(index).encode()}  # fmt: skip
    files |= {f"blobs/sha256/{d.removeprefix('sha256:')}": data for d, data in blobs.items()}
    with tarfile.open(path, "w") as tar:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# The private mount namespace: overlays give mount points without touching the machine.
_MOUNTS = """set -e
for d in etc opt var/lib; do
  mkdir -p "$W/ov/$d/up" "$W/ov/$d/work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/ov/$d/up,workdir=$W/ov/$d/work" "/$d"
done
mkdir -p /etc/cni/net.d /opt/cni/bin /var/lib/cni
mount --bind "$W/net.d" /etc/cni/net.d
mount --bind "$W/bin" /opt/cni/bin
mount --bind "$W/var-lib-cni" /var/lib/cni
mount --bind "$W/usr-lib-cni" /usr/lib/cni
mount -t tmpfs tmpfs /run/containerd
exec containerd --config "$W/config.toml"
"""


@dataclass
class Containerd(NetnsDaemon):
    """A running containerd; ``ctr`` talks to it from its namespaces."""

    NAME = "containerd"
    image: str = IMAGE

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def net_d(self) -> Path:
        """/etc/cni/net.d as ctr sees it."""
        return self.workdir / "net.d"

    @property
    def bin(self) -> Path:
        """/opt/cni/bin as ctr sees it."""
        return self.workdir / "bin"

    @property
    def var_lib_cni(self) -> Path:
        """/var/lib/cni as ctr and the plugins see it (libcni cache, host-local leases)."""
        return self.workdir / "var-lib-cni"

    @property
    def usr_lib_cni(self) -> Path:
        """/usr/lib/cni as ctr sees it (Debian's ctr also looks there)."""
        return self.workdir / "usr-lib-cni"

    def _ctr_argv(self, args: tuple[str, ...]) -> list[str]:
        """`ctr args` in containerd's mount and network namespaces."""
        return ["nsenter", f"--mount=/proc/{self.pid}/ns/mnt", f"--net=/run/netns/{self.ns}",
                "ctr", "--address", str(self.socket), "--namespace", NAMESPACE, *args]  # fmt: skip

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """`ctr args`; CommandError when check and it fails."""
        return run_checked(self._ctr_argv(args), check=check, timeout=timeout)

    def ctr_background(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """`ctr args` left running (`ctr run` without -d waits for its task)."""
        argv = self._ctr_argv(args)
        with log.open("ab") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)  # fmt: skip

    def start(self) -> None:
        for d in ("net.d", "bin", "var-lib-cni", "usr-lib-cni", "root", "state", "opt"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        for plugin in DEBIAN_PLUGINS:
            shutil.copy2(DEBIAN_CNI_DIR / plugin, self.usr_lib_cni / plugin)
        self._write_config()
        argv = ["nsenter", f"--net=/run/netns/{self.ns}", "unshare", "--mount",
                "--propagation", "private", "sh", "-c", _MOUNTS]  # fmt: skip
        # nsenter, unshare and sh exec in turn: the Popen pid is containerd's.
        self._spawn(argv, env={**os.environ, "W": str(self.workdir)})
        poll(self._ready, START_TIMEOUT, f"containerd in {self.ns} answering ({self.log_path})")

    def _write_config(self) -> None:
        w = self.workdir
        (w / "config.toml").write_text(
            "version = 2\n"
            f'root = "{w / "root"}"\nstate = "{w / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",'
            ' "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",'
            ' "io.containerd.snapshotter.v1.devmapper"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{w / "opt"}"\n'
        )

    def _ready(self) -> bool:
        self._raise_if_exited()
        return self.socket.exists() and self.ctr("version", check=False).returncode == 0

    def import_image(self) -> None:
        archive = self.workdir / "busybox-oci.tar"
        oci_archive(archive)
        self.ctr("images", "import", str(archive))
        archive.unlink()

    def remove_everything(self) -> None:
        """Kill and delete every task and container (their shims exit with them)."""
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "delete", "--force", task, check=False)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", container, check=False)

    def _shims(self) -> list[int]:
        """Pids of shims serving our socket (their command line names it)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                    if (
                        cmdline
                        and cmdline[0].endswith(b"containerd-shim-runc-v2")
                        and (str(self.socket).encode() in cmdline)
                    ):
                        found.append(int(entry.name))
        return found

    def stop(self, timeout: float = 20.0) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(CommandError, AssertionError, subprocess.TimeoutExpired):
            self.remove_everything()
        self._terminate(self._shims(), timeout)


def containerd(ns: str, workdir: Path) -> contextlib.AbstractContextManager[Containerd]:
    """containerd in namespace ns with its state in workdir, the busybox image imported."""
    return serving(Containerd(ns, workdir), missing())
