"""What the real-runtime fixtures share (tests/dockerd.py, tests/containerd.py): a daemon
started in a test's network namespace with its state under a work directory and its log
beside it (pytest keeps the last runs' tmp dirs, so the log outlives a failed test), a
checked command line, and a context manager that starts it, imports the test image and
removes everything on the way out, also on failure."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, ClassVar, TypeVar

from tests.netlab import CommandError, kill_and_wait, pid_alive


def run_checked(
    argv: Sequence[str], *, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """argv, output captured as text; CommandError (with stdout and stderr) when check fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise CommandError(f"command failed (rc={proc.returncode}): {list(argv)!r}\n"
                           f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}")  # fmt: skip
    return proc


def unmount_under(path: Path) -> None:
    """Lazily unmount whatever dockerd/containerd left mounted below path (deepest first)."""
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


@dataclass
class NetnsDaemon:
    """One daemon process (Popen's pid is the daemon's: the launchers exec it)."""

    NAME: ClassVar[str] = "daemon"

    ns: str
    workdir: Path
    image: str = ""
    _proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self.workdir.with_name(f"{self.workdir.name}.{self.NAME}.log")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _spawn(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def _raise_if_exited(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise CommandError(f"{self.NAME} exited ({self._proc.returncode}):\n{self.log_text()}")

    def _terminate(self, others: Iterable[int], timeout: float) -> None:
        """SIGTERM the daemon, then SIGKILL it and ``others`` if still alive; close the log."""
        if self._proc is None:
            return
        left = kill_and_wait([self.pid], signal.SIGTERM, timeout)
        left += [p for p in others if pid_alive(p)]
        if left:
            kill_and_wait(left, signal.SIGKILL, 5.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(5)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def start(self) -> None:
        raise NotImplementedError

    def import_image(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 20.0) -> None:
        raise NotImplementedError


D = TypeVar("D", bound=NetnsDaemon)


@contextlib.contextmanager
def serving(daemon: D, missing: str | None) -> Iterator[D]:
    """daemon started with the test image imported; on exit stopped, what it mounted under
    its workdir unmounted and the workdir removed. ``missing``: why it cannot run here."""
    if missing:
        raise RuntimeError(missing)
    try:
        daemon.start()
        daemon.import_image()
        yield daemon
    finally:
        daemon.stop()
        unmount_under(daemon.workdir)
        shutil.rmtree(daemon.workdir, ignore_errors=True)
