"""Health-gated anycast end to end: a routed "container" (wired by announcer-routed's
wiring), a TCP service in it, a drop-in declaring a check; `announcer run` with the test
playing ExaBGP. Service stopped -> withdrawn after `fall` failures; back -> announced
after `rise`. Times are recorded (artifacts/measurements.json), not asserted."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fake_exabgp import FakeExaBGP
from tests.integration.test_exabgp_frr import record
from tests.netlab import netns, sh

pytestmark = [pytest.mark.netns]
REPO = Path(__file__).resolve().parents[2]
SERVER = "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('10.200.0.9', 8080)); s.listen(64); print('ready', flush=True)\nwhile True: s.accept()[0].close()"


@pytest.fixture
def hosts() -> Iterator[tuple[str, str]]:
    with netns("hhost") as host, netns("hctr") as ctr:
        code = f"from announcer.cni.wiring import add_container; add_container('{ctr}', ['10.200.0.9'])"
        sh(host, "env", f"PYTHONPATH={REPO}", sys.executable, "-c", code)
        yield host, ctr


def start_server(ctr: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ctr, sys.executable, "-c", SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_stopped_service_is_withdrawn_after_fall_and_back_after_rise(
    hosts: tuple[str, str], tmp_path: Path
) -> None:
    host, ctr = hosts
    routes_d = tmp_path / "routes.d"
    routes_d.mkdir()
    (routes_d / "svc.yaml").write_text(
        "ips: [10.200.0.9]\ncheck: 'tcp:8080 interval=0.2 timeout=0.2 rise=2 fall=2'\n"
    )
    config = tmp_path / "announcer.yaml"
    config.write_text(
        "kernel:\n  interfaces: ['vethr*']\n  protocols: [180]\n  resync_interval_seconds: 3600\n"
        "policy:\n  allow: ['10.0.0.0/8']\nlifecycle:\n  require_instance: true\n"
        f"files:\n  enabled: true\n  directory: {routes_d}\n"
        f"control:\n  socket: {tmp_path}/ctl.sock\n  state_directory: {tmp_path}/state\n"
    )
    server = start_server(ctr)
    exa = FakeExaBGP(host, config)
    try:
        exa.expect("announce route 10.200.0.9/32 next-hop self", timeout=20)
        server.kill()
        server.wait()
        t0 = time.monotonic()
        exa.expect("withdraw route 10.200.0.9/32", timeout=20)
        down = time.monotonic() - t0
        server = start_server(ctr)
        t1 = time.monotonic()
        exa.expect("announce route 10.200.0.9/32 next-hop self", timeout=20)
        up = time.monotonic() - t1
    finally:
        server.kill()
        exa.close()
    log = exa.stderr()
    assert "health_changed key=files:" in log
    record(
        "health_tcp_0.2s_rise2_fall2",
        {
            "withdrawn_after_stop_seconds": round(down, 2),
            "announced_after_start_seconds": round(up, 2),
        },
    )
