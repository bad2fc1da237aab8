"""The daemon's health verdicts reach the host's own multipath (issue 16, docs/adr/0004):
`announcer run` (the test plays ExaBGP) beside the plugin in one host namespace, three
local containers sharing one anycast IP per family, each declared by a drop-in with a TCP
check on its own address. The one without a listener is left out of both shared routes'
nexthop groups while the others serve; once it listens, it is back in. IPv4 and IPv6."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cni.conftest import LOCK_FILE, Runtime, netconf, our_routes, static_ipam
from tests.integration.fake_exabgp import FakeExaBGP, final_state
from tests.netlab import poll

pytestmark = [pytest.mark.netns, pytest.mark.cni, pytest.mark.slow]

ANY4, ANY6 = "10.9.9.1", "fd00:9::1"
LISTEN = (
    "import socket,sys; s=socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 8080)); "
    "s.listen(64); print('ready', flush=True)\nwhile True: s.accept()[0].close()"
)


def config(tmp_path: Path, routes_d: Path) -> Path:
    path = tmp_path / "announcer.yaml"
    path.write_text(
        "kernel:\n  tables: [main]\n  interfaces: ['vethr*']\n  protocols: [180]\n"
        "  resync_interval_seconds: 3600\n"
        "policy:\n  allow: ['10.0.0.0/8', 'fd00::/8']\n"
        "exabgp:\n  watchdog_seconds: 0\n"
        f"files:\n  enabled: true\n  directory: {routes_d}\n"
        f"control:\n  socket: {tmp_path}/ctl.sock\n  state_directory: {tmp_path}/state\n"
        f"routed:\n  lock_file: {LOCK_FILE}\n"
    )
    return path


@pytest.fixture
def servers() -> Iterator[Callable[[str, str], None]]:
    started: list[subprocess.Popen[str]] = []

    def start(ns: str, address: str) -> None:
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", LISTEN, address],
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def groups(host: str) -> tuple[frozenset[str], frozenset[str]]:
    return our_routes(host, 4).get(ANY4, frozenset()), our_routes(host, 6).get(ANY6, frozenset())


def test_a_failing_local_instance_leaves_its_shared_ips_group_until_it_serves(
    runtime: Runtime,
    containers: Callable[[], str],
    servers: Callable[[str, str], None],
    tmp_path: Path,
) -> None:
    host = runtime.host
    routes_d = tmp_path / "routes.d"
    routes_d.mkdir()
    netnses = [containers() for _ in range(3)]
    for i, ns in enumerate(netnses, 1):
        conf = netconf(
            static_ipam(f"10.1.0.{i}/24", f"fd00:1::{i}/64"),
            args={"cni": {"extraIPs": [ANY4, ANY6]}},
        )
        assert runtime.add(conf, f"c{i}", ns).ok
        (routes_d / f"c{i}.yaml").write_text(
            f"ips: [10.1.0.{i}, {ANY4}, {ANY6}]\n"
            "check: 'tcp:8080 interval=0.2 timeout=0.2 rise=2 fall=2'\n"
        )
    veths = {i: next(iter(our_routes(host, 4)[f"10.1.0.{i}"])) for i in (1, 2, 3)}
    assert groups(host) == (frozenset(veths.values()),) * 2
    servers(netnses[0], "10.1.0.1")
    servers(netnses[2], "10.1.0.3")
    exa = FakeExaBGP(host, config(tmp_path, routes_d))
    try:
        poll(lambda: {f"{ANY4}/32", f"{ANY6}/128"} <= final_state(exa.seen), 20, "announced")
        serving = frozenset({veths[1], veths[3]})
        poll(lambda: groups(host) == (serving, serving), 30, "c2 out of both groups")
        servers(netnses[1], "10.1.0.2")
        everyone = frozenset(veths.values())
        poll(lambda: groups(host) == (everyone, everyone), 30, "c2 back in both groups")
    finally:
        exa.close()
    log = exa.stderr()
    assert f"shared_verdicts_published unhealthy={veths[2]}" in log
    assert "shared_verdicts_published unhealthy=- " in log
