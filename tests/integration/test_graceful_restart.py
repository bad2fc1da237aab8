"""Graceful restart of the host stack against the real thing (issue 18): ExaBGP 4.2.21 and
5.0.15 with `graceful-restart` + `manual-eor true`, the announcer with exabgp.manual_eor,
FRR 8.4 as the leaf (a GR helper by default).

ExaBGP is stopped (SIGTERM, as systemctl restart does) and started again. Meanwhile the leaf
keeps the host's routes as stale and installed; a route deleted on the host during the
restart must be gone after the new announcer's End-of-RIB, and the valid ones must never
leave the leaf's kernel.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

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
    bgp_link,
    exabgp_neighbor,
    kernel_routes,
    poll,
    sh,
)

pytestmark = [pytest.mark.netns, pytest.mark.exabgp, pytest.mark.frr, pytest.mark.slow]

RELEASES = {
    "5.0.15": netlab.DEFAULT_EXABGP,
    "4.2.21": str(netlab.REPO / ".venv-exabgp4" / "bin" / "exabgp"),
}
GR = "    manual-eor true;\n    capability { graceful-restart 20; }\n"
VALID = ("10.0.0.1/32", "10.0.0.2/32")
DIES = "10.0.0.3/32"  # its container dies while ExaBGP restarts


def config(tmp: Path) -> Path:
    path = tmp / "announcer.yaml"
    path.write_text(
        "exabgp:\n  manual_eor: true\n  neighbors: [10.99.0.1, 'fd00:99::1']\n"
        "  watchdog_seconds: 0\n"
        "kernel:\n  tables: [main]\n  interfaces: ['vethr*']\n"
        "policy:\n  allow: ['10.0.0.0/8']\n"
        f"control:\n  socket: {tmp}/c.sock\n  state_directory: {tmp}/state\n"
        f"drain:\n  maintenance_file: {tmp}/maintenance\n"
    )
    return path


def exabgp_conf(announcer_config: Path) -> str:
    process = (
        f"process announcer {{\n    run {ANNOUNCER} run -c {announcer_config};\n"
        "    encoder json;\n}\n"
    )
    return (
        process
        + exabgp_neighbor(PEER_V4, HOST_V4, "ipv4", ["announcer"], GR)
        + exabgp_neighbor(PEER_V6, HOST_V6, "ipv6", ["announcer"], GR)
    )


@pytest.fixture(params=sorted(RELEASES))
def link(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[BgpLink, str]]:
    binary = RELEASES[request.param]
    if not Path(binary).exists():
        pytest.skip(f"ExaBGP {request.param} is not installed at {binary}")
    with bgp_link(tmp_path) as bgp:
        sh(bgp.host, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        for dev in ("vethr1", "ctr1"):
            sh(bgp.host, "ip", "link", "set", dev, "up")
        yield bgp, binary


def start(bgp: BgpLink, tmp: Path, binary: str, name: str) -> ExaBGPProcess:
    conf = exabgp_conf(config(tmp))
    return ExaBGPProcess.start(bgp.host, tmp / name, conf, {"exabgp.api.terminate": "true"}, binary)


def test_a_restart_keeps_valid_routes_in_the_leafs_kernel_and_drops_the_dead_one(
    link: tuple[BgpLink, str], tmp_path: Path
) -> None:
    bgp, binary = link
    for prefix in (*VALID, DIES):
        sh(bgp.host, "ip", "route", "add", prefix, "dev", "vethr1")
    first = start(bgp, tmp_path, binary, "first")
    try:
        want = {*VALID, DIES}
        poll(lambda: want <= kernel_routes(bgp.peer), 60, "every route in the leaf's kernel")
        poll(lambda: "end_of_rib_sent" in first.log_text(), 30, "the first End-of-RIB")
        with RouteMonitor.running(bgp.peer, tmp_path / "leaf-routes.txt") as monitor:
            os.kill(first.pid, signal.SIGTERM)  # systemctl restart: stop ...
            first.wait(30)
            sh(bgp.host, "ip", "route", "del", DIES, "dev", "vethr1")  # dies meanwhile
            stale = bgp.frr.bgp_prefixes("ipv4")
            assert set(VALID) <= set(stale)  # kept, as stale, while we are gone
            second = start(bgp, tmp_path, binary, "second")  # ... and start
            try:
                poll(lambda: "end_of_rib_sent" in second.log_text(), 60, "the new End-of-RIB")
                poll(lambda: DIES not in kernel_routes(bgp.peer), 30, f"{DIES} gone at the leaf")
                assert set(VALID) <= kernel_routes(bgp.peer)
                for prefix in VALID:
                    assert monitor.deleted(prefix) == [], monitor.text()
            finally:
                second.stop()
    finally:
        if first.alive():
            first.stop()
