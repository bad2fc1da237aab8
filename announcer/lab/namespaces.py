"""Named network namespaces and the processes the lab starts in them.

Every namespace the lab makes is named ``<prefix><node>`` with a per-run prefix that starts
with ``aalab``; everything runs inside those namespaces (``ip netns exec``), nothing touches
the root namespace's links, addresses, routes or sysctls. Teardown sweeps each namespace with
``ip netns pids`` (SIGTERM, then SIGKILL) before deleting it, so processes we did not start
ourselves (ExaBGP's API helpers, responders started by a server) go too.

Synchronisation is :func:`poll` (a condition and a deadline), never a sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
NS_PREFIX = "aalab"


class LabError(Exception):
    """Something in the lab failed; the message says what and where."""


def netns_argv(ns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


def run(
    ns: str | None,
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 30.0,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv inside namespace ns (root namespace only for `ip netns ...` itself)."""
    full = netns_argv(ns, argv)
    try:
        proc = subprocess.run(
            full, input=input_text, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {full!r}") from exc
    if check and proc.returncode != 0:
        raise LabError(
            f"command failed (rc={proc.returncode}): {full!r}\n{proc.stdout}{proc.stderr}"
        )
    return proc


def spawn(ns: str | None, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
          ) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start argv in ns as a session leader, stdout+stderr appended to log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            netns_argv(ns, argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def poll(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call fn until it returns something truthy; LabError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def list_namespaces() -> list[str]:
    out = run(None, ["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def create_namespace(name: str) -> None:
    if not name.startswith(NS_PREFIX):
        raise LabError(f"refusing namespace {name!r}: lab namespaces start with {NS_PREFIX}")
    run(None, ["ip", "netns", "add", name])
    run(name, ["ip", "link", "set", "lo", "up"])


def namespace_pids(ns: str) -> list[int]:
    out = run(None, ["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def kill_and_wait(pids: Sequence[int], sig: signal.Signals, timeout: float) -> list[int]:
    """Send sig to each pid; wait up to timeout; return the ones still alive."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _alive(p)]
    return alive


def sweep_namespace(ns: str, grace: float = 2.0) -> None:
    """Every process in ns: SIGTERM, then SIGKILL until the namespace is empty."""
    left = kill_and_wait(namespace_pids(ns), signal.SIGTERM, grace)
    for _ in range(20):
        left = namespace_pids(ns)
        if not left:
            return
        kill_and_wait(left, signal.SIGKILL, 1.0)


def delete_namespaces(names: Sequence[str]) -> None:
    """Sweep then delete each namespace (servers' instance namespaces included)."""
    ours = [n for n in names if n.startswith(NS_PREFIX)]
    for ns in ours:
        sweep_namespace(ns, grace=0.5)
    for ns in ours:
        sweep_namespace(ns, grace=0.5)  # a helper may have forked while others were dying
        run(None, ["ip", "netns", "del", ns], check=False)


def veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair made directly inside the two namespaces (never in the root one), up."""
    run(None, ["ip", "-n", ns_a, "link", "add", if_a, "type", "veth",
               "peer", "name", if_b, "netns", ns_b])  # fmt: skip
    run(None, ["ip", "-n", ns_a, "link", "set", if_a, "up"])
    run(None, ["ip", "-n", ns_b, "link", "set", if_b, "up"])
