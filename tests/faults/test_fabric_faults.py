"""Faults between the announcer, ExaBGP and the leaf (real ExaBGP 5.0.15, real FRR 8.4).

Each fault: inject, then assert the leaf's table equals the truth (the host kernel's
allowed host routes) within a generous deadline, and that nothing valid was withdrawn
where it must not be. Time to converge is recorded in artifacts/measurements.json and
reported in docs/reliability.md (not asserted).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_exabgp_frr import CONFIG, Host, exabgp_conf, record
from tests.netlab import (
    HOST_IF,
    HOST_V4,
    ExaBGPProcess,
    RouteMonitor,
    bgp_link,
    kernel_routes,
    pid_alive,
    poll,
    sh,
)

pytestmark = [pytest.mark.netns, pytest.mark.exabgp, pytest.mark.frr, pytest.mark.faults]
VALID = ["10.0.3.1/32", "10.0.3.2/32", "10.0.3.3/32"]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    config = tmp_path / "announcer.yaml"
    config.write_text(CONFIG)
    with bgp_link(tmp_path) as link:
        sh(link.host, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        for dev in ("vethr1", "ctr1"):
            sh(link.host, "ip", "link", "set", dev, "up")
        for prefix in VALID:
            sh(link.host, "ip", "route", "add", prefix, "dev", "vethr1")
        exabgp = ExaBGPProcess.start(
            link.host,
            tmp_path / "exabgp",
            exabgp_conf(config),
            env={"exabgp.api.terminate": "true"},
        )
        h = Host(link, exabgp)
        h.config = config  # type: ignore[attr-defined]
        try:
            poll(lambda: h.frr_v4() == set(VALID), 60, "initial routes at the leaf")
            yield h
        finally:
            h.exabgp.stop()


def truth(h: Host) -> set[str]:
    return {p for p in kernel_routes(h.ns) if p.startswith("10.0.")}


def converge(h: Host, what: str, since: float, timeout: float = 60) -> float:
    poll(
        lambda: h.frr_v4() == truth(h), timeout, f"leaf equals the host after {what}", interval=0.1
    )
    return round(time.monotonic() - since, 2)


def test_peer_restart_and_session_reset_with_changes_while_down(host: Host) -> None:
    frr = host.link.frr
    frr.stop()
    t0 = time.monotonic()
    sh(host.ns, "ip", "route", "del", "10.0.3.1/32", "dev", "vethr1")
    sh(host.ns, "ip", "route", "add", "10.0.3.9/32", "dev", "vethr1")
    frr.restart()
    peer_restart = converge(host, "an FRR restart with changes while it was down", t0)
    frr.vtysh("clear bgp *")
    t1 = time.monotonic()
    sh(host.ns, "ip", "route", "add", "10.0.3.10/32", "dev", "vethr1")
    sh(host.ns, "ip", "route", "del", "10.0.3.2/32", "dev", "vethr1")
    poll(lambda: frr.session_established(HOST_V4), 60, "session back after the reset")
    reset = converge(host, "a session reset with changes while it was down", t1)
    record("fault_peer_restart", {"converge_seconds": peer_restart})
    record("fault_session_reset", {"converge_seconds": reset})


def test_link_down_up_between_host_and_leaf(host: Host) -> None:
    sh(host.ns, "ip", "link", "set", HOST_IF, "down")
    t0 = time.monotonic()
    poll(lambda: not host.frr_v4(), 30, "the leaf dropped the routes with the link")
    down = round(time.monotonic() - t0, 2)
    sh(host.ns, "ip", "route", "add", "10.0.3.11/32", "dev", "vethr1")
    sh(host.ns, "ip", "link", "set", HOST_IF, "up")
    sh(host.ns, "ip", "addr", "replace", f"{HOST_V4}/24", "dev", HOST_IF)
    t1 = time.monotonic()
    up = converge(host, "the link came back", t1, timeout=90)
    record("fault_link_down_up", {"routes_gone_seconds": down, "converge_after_up_seconds": up})


def test_exabgp_killed_and_restarted(host: Host, tmp_path: Path) -> None:
    [announcer] = host.announcer_pids()
    host.exabgp.kill(signal.SIGKILL)
    t0 = time.monotonic()
    poll(lambda: not pid_alive(announcer), 10, "the announcer exits on stdin EOF")
    poll(lambda: not host.frr_v4(), 30, "the leaf dropped the routes of the dead speaker")
    sh(host.ns, "ip", "route", "add", "10.0.3.12/32", "dev", "vethr1")
    host.exabgp = ExaBGPProcess.start(
        host.ns,
        tmp_path / "exabgp2",
        exabgp_conf(host.config),
        env={"exabgp.api.terminate": "true"},
    )  # type: ignore[attr-defined]
    seconds = converge(host, "ExaBGP was killed and started again", t0, timeout=90)
    record("fault_exabgp_restart", {"converge_seconds_from_kill": seconds})


def test_announcer_crash_loop_ends_the_session_fail_closed(host: Host) -> None:
    host.config.write_text("kernel: [\n")  # type: ignore[attr-defined]  # every restart now fails (exit 78)
    [announcer] = host.announcer_pids()
    os.kill(announcer, signal.SIGKILL)
    t0 = time.monotonic()
    poll(lambda: not host.exabgp.alive(), 60, "ExaBGP gave up after its respawn budget")
    poll(lambda: not host.frr_v4(), 30, "the leaf has none of our routes")
    record("fault_crash_loop", {"routes_gone_seconds": round(time.monotonic() - t0, 2)})
    assert (
        "Too many death" in host.exabgp.log_text() or "terminat" in host.exabgp.log_text().lower()
    )


def test_kill_9_once_keeps_valid_routes_and_withdraws_stale(host: Host, tmp_path: Path) -> None:
    frr = host.link.frr
    updates = frr.updates_received(HOST_V4)
    with RouteMonitor.running(host.link.peer, tmp_path / "monitor.txt") as monitor:
        [announcer] = host.announcer_pids()
        os.kill(announcer, signal.SIGSTOP)
        sh(host.ns, "ip", "route", "del", "10.0.3.3/32", "dev", "vethr1")
        os.kill(announcer, signal.SIGKILL)
        t0 = time.monotonic()
        seconds = converge(host, "a kill -9 and respawn", t0)
        for prefix in VALID[:2]:
            assert monitor.deleted(prefix) == []
    assert frr.updates_received(HOST_V4) - updates == 1
    record("fault_kill9", {"converge_seconds": seconds})
    with contextlib.suppress(ProcessLookupError):
        os.kill(announcer, signal.SIGCONT)
