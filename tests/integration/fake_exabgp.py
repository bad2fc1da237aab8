"""Plays ExaBGP's side of the pipe for `announcer run`: acks every line, records commands.

It answers `version` and `show adj-rib out` like ExaBGP 5.0.15 does (tests/exabgp pins
that against the real one), so the announcer can be driven without a BGP session.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.netlab import netns_argv

ANNOUNCER = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "announcer")


def parse_command(line: str) -> tuple[str | None, list[str]]:
    """("announce"|"withdraw", prefixes) of one of our lines: `... route P ...` or a group
    `... attributes ... nlri P1 P2 ...`."""
    words = line.split()
    verb = "announce" if "announce" in words else "withdraw" if "withdraw" in words else None
    if "nlri" in words:
        return verb, words[words.index("nlri") + 1 :]
    if "route" in words:
        return verb, [words[words.index("route") + 1]]
    return None, []


def final_state(lines: list[str]) -> set[str]:
    """What ExaBGP would announce after these lines, in order."""
    state: set[str] = set()
    for line in lines:
        verb, prefixes = parse_command(line)
        if verb == "announce":
            state.update(prefixes)
        elif verb == "withdraw":
            state.difference_update(prefixes)
    return state


def _private_control(config: Path) -> None:
    """A config without a control section would put the daemon's socket and state in the
    machine's /run/anycast-announcer and /var/lib/anycast-announcer: give it its own."""
    document = yaml.safe_load(config.read_text()) or {}
    if "control" not in document:
        text = config.read_text()
        config.write_text(
            f"{text.rstrip()}\ncontrol:\n  socket: {config.parent}/control.sock\n"
            f"  state_directory: {config.parent}/state\n"
        )


class FakeExaBGP:
    def __init__(
        self, ns: str, config: Path, rib: list[str] | None = None, acks: bool = True
    ) -> None:
        self._rib: dict[str, str] = {}  # prefix -> adj-rib-out line
        self.rib = rib or []
        self.acks = acks
        self.commands: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.times: list[tuple[int, str]] = []  # (time.time_ns() when read, line)
        self.echoes: list[str] = []  # repeated withdraws (state unchanged), not queued
        _private_control(config)
        self.stderr_path = config.with_suffix(".stderr")
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            netns_argv(ns, (ANNOUNCER, "run", "-c", str(config))),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _reply(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        with self._lock:
            try:
                self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    def _serve(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode().rstrip("\n")
            done = ("done",) if self.acks else ()
            if line == "version":
                self._reply("exabgp 5.0.15", *done)
            elif line == "show adj-rib out":
                self._reply(*self.rib, *done)
            else:
                self.times.append((time.time_ns(), line))
                self.seen.append(line)
                verb, prefixes = parse_command(line)
                repeat = verb == "withdraw" and not any(p in self._rib for p in prefixes)
                self._track(line)
                if repeat:
                    self.echoes.append(line)  # the announcer's withdraw echo: no change
                else:
                    self.commands.put(line)
                self._reply(*done)

    @property
    def rib(self) -> list[str]:
        """ExaBGP's adj-rib-out lines as `show adj-rib out` prints them."""
        return list(self._rib.values())

    @rib.setter
    def rib(self, lines: list[str]) -> None:
        self._rib = {line.split()[3]: line for line in lines}

    def _track(self, line: str) -> None:
        """Keep `rib` as ExaBGP's adj-rib-out would be, for the periodic verification."""
        verb, prefixes = parse_command(line)
        for prefix in prefixes:
            if verb == "announce":
                family = "ipv6" if ":" in prefix else "ipv4"
                self._rib[prefix] = f"10.99.0.1 {family} unicast {prefix} next-hop 10.99.0.2"
            else:
                self._rib.pop(prefix, None)

    def send(self, *lines: str) -> None:
        self._reply(*lines)

    def expect(self, line: str, timeout: float = 10.0) -> None:
        """Wait until `line` is the next command (fails on any other command first)."""
        got = self.commands.get(timeout=timeout)
        assert got == line, f"expected {line!r}, got {got!r}"

    def wait_for(
        self, predicate: Callable[[set[str]], bool], timeout: float, what: str
    ) -> set[str]:
        deadline = time.monotonic() + timeout
        lines: set[str] = set()
        while True:
            remaining = deadline - time.monotonic()
            with contextlib.suppress(queue.Empty):
                lines.add(self.commands.get(timeout=max(0.01, min(remaining, 0.5))))
            if predicate(lines):
                return lines
            if remaining <= 0:
                raise AssertionError(f"{what}: got {len(lines)} lines, e.g. {sorted(lines)[:5]}")

    def no_command_within(self, seconds: float) -> None:
        try:
            line = self.commands.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected command {line!r}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def close(self, timeout: float = 10.0) -> int:
        if self.proc.stdin is not None:
            with self._lock, contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()  # EOF: ExaBGP is gone
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._stderr.close()
