"""The self-watchdog: ends ExaBGP when the announcer stops making progress.

A stopped or wedged announcer cannot withdraw anything, and ExaBGP keeps its routes
announced forever. So the announcer starts this tiny process with a pipe on its stdin and
writes a heartbeat byte every second from its event loop. If no heartbeat arrives for
``--timeout`` seconds, the watchdog sends SIGTERM to ExaBGP (the announcer's parent):
ExaBGP closes its sessions and the peers drop this host's routes (fail closed). When the
announcer exits, the pipe reaches EOF and the watchdog exits quietly: ExaBGP's respawn
handles a dead announcer.

It only ever signals a process whose command line names exabgp.

    python -m announcer.daemon.watchdog --target PID --timeout SECONDS   (heartbeats on stdin)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("announcer")


LAUNCHER_MODULE = "announcer.exabgp.launcher"
LAUNCHER_FILE = "announcer/exabgp/launcher.py"


def is_exabgp(pid: int) -> bool:
    """``exabgp ...``, ``/usr/sbin/exabgp ...``, ``python3 [-I] /path/exabgp ...``,
    ``python3 -m exabgp ...`` or our launcher (``python3 -I .../announcer/exabgp/launcher.py``
    as ``announcer exabgp`` execs it, or ``-m announcer.exabgp.launcher``): nothing else is
    ever signalled."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    argv = [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    if not argv:
        return False
    if Path(argv[0]).name == "exabgp":
        return True
    if not Path(argv[0]).name.startswith("python"):
        return False
    rest = argv[1:]
    while rest and rest[0].startswith("-") and rest[0] != "-m":
        rest = rest[1:]  # interpreter flags: -I, -u, -E...
    if rest[:1] == ["-m"]:
        return rest[1:2] in (["exabgp"], [LAUNCHER_MODULE])
    return bool(rest) and (Path(rest[0]).name == "exabgp" or rest[0].endswith(LAUNCHER_FILE))


def watch(fd: int, target: int, timeout: float) -> str:
    """Block until EOF (returns "announcer_exited") or expiry (returns what was done)."""
    last = time.monotonic()
    while True:
        remaining = timeout - (time.monotonic() - last)
        if remaining <= 0:
            return expire(target, timeout)
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            if not os.read(fd, 4096):
                return "announcer_exited"
            last = time.monotonic()


def expire(target: int, timeout: float) -> str:
    if not is_exabgp(target):
        action = f"none: parent {target} is not exabgp"
    else:
        try:
            os.kill(target, signal.SIGTERM)
            action = f"sigterm_exabgp pid={target}"
        except OSError as exc:
            action = f"none: {exc}"
    print(f"watchdog_expired timeout={timeout:g}s action={action}", file=sys.stderr, flush=True)
    return action


class SelfWatchdog:
    """The announcer's side: starts the watchdog child and feeds it heartbeats."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout  # 0: no watchdog
        self.process: subprocess.Popen[bytes] | None = None
        self._heartbeat: int | None = None

    def start(self) -> None:
        """Watch ExaBGP (our parent) from a child process, if a timeout is set."""
        if not self.timeout:
            return
        read_end, self._heartbeat = os.pipe()
        os.set_blocking(self._heartbeat, False)
        argv = [sys.executable, "-m", "announcer.daemon.watchdog", "--target", str(os.getppid())]
        self.process = subprocess.Popen(
            [*argv, "--timeout", str(self.timeout)], stdin=read_end, stdout=subprocess.DEVNULL
        )
        os.close(read_end)
        log.info("watchdog_started pid=%d timeout=%gs", self.process.pid, self.timeout)

    def beat(self) -> None:
        if self._heartbeat is not None:
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(self._heartbeat, b".")

    def close(self) -> None:
        if self._heartbeat is not None:
            os.close(self._heartbeat)  # EOF: the watchdog exits quietly
            self._heartbeat = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="announcer.daemon.watchdog")
    parser.add_argument("--target", type=int, required=True, help="ExaBGP's pid")
    parser.add_argument("--timeout", type=float, required=True, help="seconds without heartbeat")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on a terminal is for the announcer
    watch(sys.stdin.fileno(), args.target, args.timeout)


if __name__ == "__main__":
    main()
