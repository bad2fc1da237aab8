"""A line ExaBGP never answers: exit -> respawn -> exact resync, not a wedged announcer.

ExaBGP 4.2.21 sends neither ``done`` nor ``error`` for a line whose parsing raises (e.g.
``announce route 192.0.2.300/32 next-hop self``, tests/exabgp/test_contract_exabgp.py).
The announcer never renders such a line, so tests/integration/rewrite_shim.py sits between
ExaBGP and `announcer run` and turns the first announce of MARKER into one. The announcer
(``exabgp.ack_timeout_seconds: 3``) must notice the missing answer, exit, be respawned by
ExaBGP, read ``show adj-rib out`` and leave the FRR peer with exactly the valid set: MARKER
announced properly, a route deleted during the wait and one deleted while no announcer ran
(the shim holds the respawned announcer until the test says go) both withdrawn, the other
routes never withdrawn, ExaBGP's process and BGP sessions untouched throughout.

ExaBGP 5.0.15 answers ``error`` for the same line: the announcer retries the prefix (the
error-reply path) and never exits. Same end state, as a contrast.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import netlab
from tests.integration.fake_exabgp import ANNOUNCER
from tests.netlab import (
    HOST_V4,
    HOST_V6,
    PEER_V4,
    PEER_V6,
    BgpLink,
    ExaBGPProcess,
    RouteMonitor,
    exabgp_neighbor,
    kernel_routes,
    poll,
    sh,
)

pytestmark = [pytest.mark.netns, pytest.mark.exabgp, pytest.mark.frr, pytest.mark.slow]

EXABGP4 = "4.2.21"
PINNED = "5.0.15"
RELEASES = {PINNED: netlab.DEFAULT_EXABGP, EXABGP4: str(netlab.REPO / ".venv-exabgp4/bin/exabgp")}
SHIM = Path(__file__).resolve().with_name("rewrite_shim.py")
ARTIFACTS = netlab.REPO / "artifacts"

ACK_TIMEOUT = 3.0
MARKER = "10.0.9.99/32"  # its first announce is rewritten ...
UNPARSABLE = "192.0.2.300/32"  # ... into this prefix, which ExaBGP cannot parse
KEPT = {"10.0.9.1/32", "10.0.9.2/32"}
GONE_WAITING = "10.0.9.3/32"  # deleted while the announcer waits for the missing answer
GONE_RESTARTING = "10.0.9.4/32"  # deleted while no announcer runs (4.2.21: held respawn)
V6 = "fd00:10::9/128"


def announcer_config(tmp: Path, dialect: int) -> str:
    return f"""\
kernel:
  tables: [main]
  interfaces: ["vethr*"]
policy:
  allow: ["10.0.0.0/8", "fd00:10::/64"]
exabgp:
  dialect: {dialect}
  ack_timeout_seconds: {ACK_TIMEOUT}
control:
  socket: {tmp}/ctl.sock
  state_directory: {tmp}/state
drain:
  maintenance_file: {tmp}/maintenance
"""


def exabgp_conf(state: Path) -> str:
    process = (
        f"process announcer {{\n    run {netlab.python()} {SHIM} {state};\n    encoder json;\n}}\n"
    )
    return (
        process
        + exabgp_neighbor(PEER_V4, HOST_V4, "ipv4", ["announcer"])
        + exabgp_neighbor(PEER_V6, HOST_V6, "ipv6", ["announcer"])
    )


@dataclass
class Silenced:
    """The link, ExaBGP running the shim, and what the shim and the announcer wrote."""

    link: BgpLink
    exabgp: ExaBGPProcess
    state: Path

    def events(self, name: str) -> list[dict[str, Any]]:
        path = self.state / "events.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [e for e in map(json.loads, lines) if e["event"] == name]

    def log_lines(self, event: str) -> list[str]:
        """The announcer's log lines (every generation) for one event name."""
        path = self.state / "announcer.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return [line for line in text.splitlines() if line.split()[2:3] == [event]]

    def at_peer(self) -> tuple[set[str], set[str], set[str], set[str]]:
        """(FRR v4, FRR v6, peer kernel v4, peer kernel v6) routes from us."""
        frr, peer = self.link.frr, self.link.peer
        return (
            set(frr.bgp_prefixes("ipv4")),
            set(frr.bgp_prefixes("ipv6")),
            kernel_routes(peer, 4, proto="bgp"),
            kernel_routes(peer, 6, proto="bgp"),
        )

    def connections(self) -> dict[str, int]:
        return {ip: self.link.frr.connections_established(ip) for ip in (HOST_V4, HOST_V6)}

    def host_route(self, verb: str, prefix: str) -> None:
        family = "-6" if ":" in prefix else "-4"
        sh(self.link.host, "ip", family, "route", verb, prefix, "dev", "vethr1")


@contextlib.contextmanager
def silenced(tmp_path: Path, release: str) -> Iterator[Silenced]:
    binary = RELEASES[release]
    if not Path(binary).exists():
        pytest.skip(f"ExaBGP {release} is not installed at {binary} (make venv-exabgp4)")
    state = tmp_path / "shim"
    state.mkdir()
    config = tmp_path / "announcer.yaml"
    config.write_text(announcer_config(tmp_path, 4 if release == EXABGP4 else 5))
    shim = {
        "argv": [ANNOUNCER, "run", "-c", str(config)],
        "prefix": MARKER,
        "replacement": UNPARSABLE,
        "hold_respawn": True,
    }
    (state / "shim.json").write_text(json.dumps(shim))
    with netlab.bgp_link(tmp_path) as link:
        sh(link.host, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        for dev in ("vethr1", "ctr1"):
            sh(link.host, "ip", "link", "set", dev, "up")
        env = {"exabgp.api.terminate": "true"}
        exabgp = ExaBGPProcess.start(
            link.host, tmp_path / "exabgp", exabgp_conf(state), env=env, exabgp=binary
        )
        try:
            yield Silenced(link, exabgp, state)
        finally:
            exabgp.stop()
            ARTIFACTS.mkdir(exist_ok=True)
            name = f"exabgp{release[0]}-silence"
            (ARTIFACTS / f"{name}.log").write_text(exabgp.log_text())
            log = state / "announcer.log"
            if log.exists():
                (ARTIFACTS / f"{name}-announcer.log").write_text(log.read_text(errors="replace"))


def record(name: str, figures: dict[str, object]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "measurements.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"{name}: {figures}")


@pytest.mark.parametrize("release", [EXABGP4, PINNED])
def test_a_line_exabgp_never_answers_ends_in_exit_respawn_and_exact_resync(
    tmp_path: Path, release: str
) -> None:
    start = KEPT | {GONE_WAITING, GONE_RESTARTING}
    final = (KEPT | {MARKER}, {V6})
    with silenced(tmp_path, release) as s:
        for prefix in (*sorted(start), V6):
            s.host_route("add", prefix)
        poll(lambda: s.at_peer() == (start, {V6}, start, {V6}), 60, "the start set at the peer")
        connections = s.connections()
        [first_start] = s.log_lines("announcer_started")

        with RouteMonitor.running(s.link.peer, tmp_path / "monitor.txt") as monitor:
            s.host_route("add", MARKER)
            [rewritten] = poll(lambda: s.events("rewritten"), 10, f"the {MARKER} line rewritten")
            assert rewritten["sent"].startswith(f"announce route {UNPARSABLE} "), rewritten
            s.host_route("del", GONE_WAITING)

            figures: dict[str, Any] = {}
            if release == EXABGP4:
                figures = exit_and_held_respawn(s)
                s.host_route("del", GONE_RESTARTING)
                released = time.monotonic()
                (s.state / "go").touch()
                poll(lambda: len(s.log_lines("announcer_started")) == 2, 30, "announcer restarted")
            else:
                poll(lambda: s.log_lines("exabgp_command_failed"), 10, "the error reply seen")
                s.host_route("del", GONE_RESTARTING)
                released = time.monotonic()

            poll(lambda: s.at_peer() == (*final, *final), 30, "exactly the valid set at the peer")
            exact = time.monotonic()
            for prefix in (*KEPT, V6):
                assert monitor.deleted(prefix) == [], f"{prefix} left the peer's kernel"
            assert monitor.deleted(GONE_WAITING), f"{GONE_WAITING} stayed at the peer"
            assert monitor.deleted(GONE_RESTARTING), f"{GONE_RESTARTING} stayed at the peer"

        assert s.exabgp.alive(), "ExaBGP exited"
        assert s.connections() == connections, "a BGP session was re-established"
        assert all(s.link.frr.session_established(ip) for ip in (HOST_V4, HOST_V6))
        if release == EXABGP4:
            figures.update(
                resync_after_release_seconds=round(exact - released, 2),
                exact_after_unanswered_line_seconds=round(exact - rewritten["t"], 2),
            )
            record("exabgp4_silent_line_resync", figures)
        else:
            assert_no_exit(s, rewritten["t"], first_start)
            record(
                "exabgp5_error_line_retry",
                {"exact_after_error_line_seconds": round(exact - rewritten["t"], 2)},
            )


def exit_and_held_respawn(s: Silenced) -> dict[str, Any]:
    """4.2.21: the announcer gave up on the unanswered line, exited, and ExaBGP started a
    new shim (held before it runs the announcer). Timings from the unanswered line."""
    [rewritten] = s.events("rewritten")
    [exited] = poll(lambda: s.events("announcer_exited"), ACK_TIMEOUT + 15, "the announcer exit")
    [gave_up] = s.log_lines("exabgp_not_acknowledging")
    # the unanswered line, plus the barrier query when the stall outlasted ack_timeout of
    # work (queued behind it, never written: exabgp_barrier in announcer/exabgp/sink.py)
    barrier = bool(s.log_lines("exabgp_barrier"))
    assert f"in_flight={1 + barrier} " in gave_up, gave_up
    assert "action=exit_for_resync" in gave_up, gave_up
    assert s.log_lines("announcer_stopping")[0].endswith("reason=exabgp_not_acknowledging code=1")
    assert exited["code"] == 1, exited
    # exactly one line of the old announcer went unanswered: the rewritten one
    assert exited["replies"] == exited["sent"] - 1, exited
    starts = poll(lambda: s.events("shim_started")[1:], 15, "ExaBGP respawned the shim")
    poll(lambda: s.events("held"), 5, "the respawned shim holding the announcer back")
    assert len(starts) == 1, starts
    assert s.exabgp.alive(), "ExaBGP exited with the announcer"
    return {
        "ack_timeout_seconds": ACK_TIMEOUT,
        "exit_after_unanswered_line_seconds": round(exited["t"] - rewritten["t"], 2),
        "exit_after_last_reply_seconds": round(exited["t"] - exited["last_reply"], 2),
        "respawn_after_unanswered_line_seconds": round(starts[0]["t"] - rewritten["t"], 2),
        "respawn_after_exit_seconds": round(starts[0]["t"] - exited["t"], 3),
    }


def assert_no_exit(s: Silenced, since: float, first_start: str) -> None:
    """5.0.15: the error was retried; well past the ack timeout nobody gave up or exited."""
    poll(lambda: time.monotonic() > since + ACK_TIMEOUT + 2, ACK_TIMEOUT + 5, "the ack timeout")
    assert s.log_lines("exabgp_not_acknowledging") == []
    assert s.log_lines("announcer_started") == [first_start]
    assert s.events("announcer_exited") == []
    assert len(s.events("shim_started")) == 1
    [failed] = s.log_lines("exabgp_command_failed")
    assert f"announce route {MARKER} " in failed, failed  # its own line, as it sent it
