"""Test-side view of scripted_helper.py: drive it through its FIFO, read its log.

``ExaBGPUnderTest`` is ExaBGP (the pinned release unless told otherwise) running in the host
namespace of a ``BgpLink``, with one scripted helper named ``ctl`` serving both neighbors.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import netlab
from tests.netlab import HOST_V4, HOST_V6, PEER_V4, PEER_V6, BgpLink, ExaBGPProcess, poll

HELPER = Path(__file__).with_name("scripted_helper.py")
ACKS = ("done", "error")


@dataclass(frozen=True)
class Record:
    """One line of helper.log: when, which helper generation, what."""

    time: float
    pid: int
    kind: str  # START IN OUT EOF SIGTERM EXIT
    text: str

    def is_json(self) -> bool:
        return self.kind == "IN" and self.text.startswith("{")

    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.text)
        return value


class ScriptedHelper:
    """Control files of one scripted helper (shared by all its respawned generations)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.fifo = workdir / "ctl.fifo"
        self.log = workdir / "helper.log"
        os.mkfifo(self.fifo)
        self.log.touch()

    def run_line(self, python: str) -> str:
        """The `run` value for ExaBGP's process block."""
        return f"{python} {HELPER} {self.workdir}"

    def records(self) -> list[Record]:
        found = []
        for line in self.log.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # a record being written right now
            stamp, pid, kind, text = [*line.rstrip("\n").split(" ", 3), ""][:4]
            found.append(Record(float(stamp), int(pid), kind, text))
        return found

    def starts(self) -> list[Record]:
        return [r for r in self.records() if r.kind == "START"]

    def current_pid(self) -> int:
        starts = self.starts()
        assert starts, "the helper never started"
        return starts[-1].pid

    def crash_on_start(self) -> None:
        """From now on every new helper generation exits at once."""
        (self.workdir / "crash").touch()

    def send(self, line: str, timeout: float = 10) -> None:
        """Write one line to the FIFO; waits until some helper generation holds it open."""

        def try_open() -> list[int] | None:  # a list: fd 0 would read as "not yet"
            try:
                return [os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)]
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no reader yet
                    return None
                raise

        [fd] = poll(try_open, timeout, f"a helper reading {self.fifo}")
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def exchange(self, lines: list[str], acks: int, timeout: float = 10) -> list[Record]:
        """Send lines, wait until `acks` done/error lines came back; return what came back.

        Returns every IN record after the send (JSON events included, filter with
        ``is_json``), up to and including the last awaited ack.
        """
        mark = len(self.records())
        for line in lines:
            self.send(line)

        def answered() -> list[Record] | None:
            seen, got = 0, self.records()[mark:]
            for i, rec in enumerate(got):
                if rec.kind == "IN" and rec.text in ACKS:
                    seen += 1
                    if seen == acks:
                        return [r for r in got[: i + 1] if r.kind == "IN"]
            return None

        return poll(answered, timeout, f"{acks} answer(s) to {lines!r}")

    def command(self, line: str, timeout: float = 10) -> list[str]:
        """Send a command, return the text lines ExaBGP answered, ending with done/error."""
        return [r.text for r in self.exchange([line], 1, timeout) if not r.is_json()]

    def json_records(self, pid: int | None = None) -> list[Record]:
        return [r for r in self.records() if r.is_json() and pid in (None, r.pid)]

    def states(self, peer: str, pid: int | None = None) -> list[str]:
        """The `state` values received for peer, in order."""
        found = []
        for rec in self.json_records(pid):
            msg = rec.json()
            if msg.get("type") == "state" and msg["neighbor"]["address"]["peer"] == peer:
                found.append(msg["neighbor"]["state"])
        return found


def exabgp_conf(helper: ScriptedHelper, python: str, neighbor_extra: str = "") -> str:
    return (
        "process ctl {\n"
        f"    run {helper.run_line(python)};\n"
        "    encoder json;\n"
        "}\n"
        + netlab.exabgp_neighbor(PEER_V4, HOST_V4, "ipv4", ["ctl"], neighbor_extra)
        + netlab.exabgp_neighbor(PEER_V6, HOST_V6, "ipv6", ["ctl"], neighbor_extra)
    )


@dataclass
class ExaBGPUnderTest:
    link: BgpLink
    exabgp: ExaBGPProcess
    helper: ScriptedHelper
    workdir: Path

    def sessions_up(self) -> bool:
        frr = self.link.frr
        return frr.session_established(HOST_V4) and frr.session_established(HOST_V6)

    def sessions_down(self) -> bool:
        frr = self.link.frr
        return not frr.session_established(HOST_V4) and not frr.session_established(HOST_V6)

    def _alive_and_up(self) -> bool:
        if not self.exabgp.alive():
            raise AssertionError(f"ExaBGP exited:\n{self.exabgp.log_text()[-3000:]}")
        return self.sessions_up()

    def wait_up(self, timeout: float = 30) -> None:
        """Both sessions Established at FRR and the current helper told `up` for both."""
        poll(self._alive_and_up, timeout, "both BGP sessions Established at FRR")
        poll(
            lambda: all("up" in self.helper.states(p) for p in (PEER_V4, PEER_V6)),
            timeout,
            "helper received state up for both neighbors",
        )

    def frr_routes(self) -> set[str]:
        """Prefixes FRR has from us (both families)."""
        frr = self.link.frr
        return set(frr.bgp_prefixes("ipv4")) | set(frr.bgp_prefixes("ipv6"))


@contextlib.contextmanager
def exabgp_under_test(
    link: BgpLink,
    workdir: Path,
    env: dict[str, str] | None = None,
    exabgp: str = netlab.DEFAULT_EXABGP,
) -> Iterator[ExaBGPUnderTest]:
    """Start ExaBGP + helper, wait for both sessions; on exit stop it and wait until FRR
    has forgotten us (sessions down, no routes), so the next test starts clean."""
    helper = ScriptedHelper(workdir / "helper")
    python = str(Path(exabgp).absolute().parent / "python")
    proc = ExaBGPProcess.start(link.host, workdir, exabgp_conf(helper, python), env, exabgp)
    under_test = ExaBGPUnderTest(link, proc, helper, workdir)
    try:
        under_test.wait_up()
        yield under_test
    finally:
        started = time.monotonic()
        proc.stop()
        poll(under_test.sessions_down, 30, "both sessions down after ExaBGP stopped")
        poll(lambda: not under_test.frr_routes(), 30, "FRR without routes from ExaBGP")
        print(f"exabgp teardown {time.monotonic() - started:.2f}s, logs in {workdir}")
