"""The Docker source against a real dockerd in a namespace the test creates.

`announcer run` (driven by a fake ExaBGP) follows containers: a labelled container that
runs is announced; a failing HEALTHCHECK withdraws it and a passing one re-announces it;
`docker stop` of a container that takes a second to exit withdraws before its `die`
event; dockerd killed and restarted causes no spurious withdraw.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from announcer.events import InstanceState
from announcer.sources.docker import (
    PayloadError,
    container_state,
    parse_container,
    signal_number,
    stop_signals,
)
from tests.daemons import serving
from tests.dockerd import Dockerd, missing
from tests.integration.fake_exabgp import FakeExaBGP
from tests.netlab import kill_and_wait, netns, poll, sh

SLOW_STOP = "trap 'sleep 1; exit 0' TERM; while true; do sleep 0.1; done"


def inspect_payload(**state: Any) -> dict[str, Any]:
    return {
        "Id": "c0ffee",
        "Name": "/web",
        "State": {"Running": True, **state},
        "Config": {
            "Labels": {"anycast.ips": "10.200.0.1", "anycast.med": "5"},
            "StopSignal": "SIGQUIT",
        },
        "NetworkSettings": {
            "Networks": {"routed": {"IPAddress": "10.30.0.5", "GlobalIPv6Address": ""}}
        },
    }


def test_parse_container_payloads() -> None:
    instance = parse_container(inspect_payload(), 1.0)
    assert (instance.name, instance.state) == ("web", InstanceState.SERVING)
    assert [str(i) for i in instance.ips] == ["10.30.0.5", "10.200.0.1"]
    assert (
        container_state(inspect_payload(Health={"Status": "unhealthy"})) is InstanceState.UNHEALTHY
    )
    assert container_state(inspect_payload(Health={"Status": "starting"})) is InstanceState.STARTING
    assert container_state(inspect_payload(Paused=True)) is InstanceState.UNHEALTHY
    assert container_state({"State": {"Running": False}}) is InstanceState.STOPPED
    assert stop_signals(inspect_payload()) == {15, 9, 3}
    assert signal_number("SIGHUP") == 1
    assert signal_number("15") == 15
    assert signal_number("bogus") is None
    bad = inspect_payload()
    bad["Config"]["Labels"]["anycast.med"] = "-1"
    assert parse_container(bad, 0.0).error is not None


@dataclass
class Rig:
    ns: str
    docker: Dockerd
    exa: FakeExaBGP

    def run(self, name: str, *args: str) -> None:
        self.docker.cli("run", "-d", "--name", name, "--network", "none", *args)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    if reason := missing():
        pytest.skip(reason)
    with netns("dsrc") as ns:
        sh(ns, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        sh(ns, "ip", "link", "set", "vethr1", "up")
        sh(ns, "ip", "link", "set", "ctr1", "up")
        # containerd's sockets live under the exec root: unix socket paths stop at 104 bytes
        daemon = LiveRestoreDockerd(ns, Path(tempfile.mkdtemp(prefix="aads", dir="/tmp")))
        try:
            with serving(daemon, None):
                config = tmp_path / "announcer.yaml"
                config.write_text(
                    "kernel:\n  interfaces: ['vethr*']\n  resync_interval_seconds: 3600\n"
                    "policy:\n  allow: ['10.0.0.0/8']\n"
                    "lifecycle:\n  require_instance: true\n  sync_timeout_seconds: 10\n  stale_after_seconds: 120\n"
                    f"docker:\n  enabled: true\n  url: {daemon.host}\n  relist_interval_seconds: 2\n"
                )
                exa = FakeExaBGP(ns, config)
                try:
                    yield Rig(ns, daemon, exa)
                finally:
                    exa.close()
                    (tmp_path / "announcer.log").write_text(exa.stderr())
        finally:
            if daemon.log_path.exists():  # into the test's tmp dir: nothing left in /tmp
                shutil.move(daemon.log_path, tmp_path / "dockerd.log")


class LiveRestoreDockerd(Dockerd):
    """dockerd as production runs it: live-restore, and containerd as its own service
    (Debian's containerd.service), so a dockerd crash leaves containers and containerd up."""

    containerd: subprocess.Popen[bytes] | None = None

    def _config_file(self) -> Path:
        path = self.workdir / "daemon.json"
        sock = self.workdir / "ctd" / "c.sock"
        path.write_text(json.dumps({"live-restore": True, "containerd": str(sock)}))
        return path

    def start(self) -> None:
        if self.containerd is None or self.containerd.poll() is not None:
            self._start_containerd()
        super().start()

    def _start_containerd(self) -> None:
        ctd = self.workdir / "ctd"
        ctd.mkdir(parents=True, exist_ok=True)
        (ctd / "config.toml").write_text(
            f'version = 2\nroot = "{ctd}/root"\nstate = "{ctd}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{ctd}/c.sock"\n[ttrpc]\n  address = "{ctd}/c.sock.ttrpc"\n'
            '[debug]\n  address = ""\n'
        )
        log = (ctd / "containerd.log").open("ab")
        self.containerd = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{self.ns}",
                "containerd",
                "--config",
                str(ctd / "config.toml"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        poll((ctd / "c.sock").exists, 30, "containerd listening")

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)
        if self.containerd is not None:
            self.containerd.terminate()
            try:
                self.containerd.wait(10)
            except subprocess.TimeoutExpired:
                self.containerd.kill()
                self.containerd.wait(5)
            self.containerd = None
        # shims of containers live-restore kept running
        out = subprocess.run(
            ["pgrep", "-f", f"containerd-shim.*{self.workdir}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        kill_and_wait([int(p) for p in out.split()], signal.SIGKILL, 5.0)


pytestmark = [pytest.mark.netns, pytest.mark.docker]


def test_labelled_container_is_announced_and_withdrawn_before_it_dies(rig: Rig) -> None:
    sh(rig.ns, "ip", "route", "add", "10.200.0.1/32", "dev", "vethr1")
    rig.exa.no_command_within(0.5)  # the route alone is not enough: no instance claims it
    rig.run(
        "web",
        "--label",
        "anycast.ips=10.200.0.1",
        "--label",
        "anycast.communities=65001:1",
        rig.docker.image,
        "sh",
        "-c",
        SLOW_STOP,
    )
    rig.exa.expect("announce route 10.200.0.1/32 next-hop self community [65001:1]", timeout=20)
    started = int(time.time())
    stopper = threading.Thread(target=rig.docker.cli, args=("stop", "-t", "10", "web"))
    stopper.start()
    rig.exa.expect("withdraw route 10.200.0.1/32", timeout=20)
    stopper.join(30)
    withdrawn_ns = next(t for t, line in rig.exa.times if line.startswith("withdraw"))
    out = rig.docker.cli(
        "events",
        "--since",
        str(started),
        "--until",
        str(int(time.time()) + 1),
        "--filter",
        "container=web",
        "--format",
        "{{json .}}",
    ).stdout
    events = {e["Action"]: e["timeNano"] for e in map(json.loads, out.splitlines())}
    assert "die" in events, events
    assert withdrawn_ns < events["die"], f"withdraw {withdrawn_ns} not before die {events['die']}"
    assert events["die"] - events["kill"] > 500_000_000  # the container really took its time


def test_healthcheck_failing_withdraws_and_passing_reannounces(rig: Rig) -> None:
    sh(rig.ns, "ip", "route", "add", "10.200.0.2/32", "dev", "vethr1")
    rig.run(
        "api",
        "--label",
        "anycast.ips=10.200.0.2",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "--health-timeout",
        "1s",
        rig.docker.image,
        "sleep",
        "600",
    )
    rig.exa.no_command_within(2.5)  # health "starting" then "unhealthy": not announced
    rig.docker.cli("exec", "api", "busybox", "touch", "/tmp/ok")
    rig.exa.expect("announce route 10.200.0.2/32 next-hop self", timeout=20)
    rig.docker.cli("exec", "api", "busybox", "rm", "/tmp/ok")
    rig.exa.expect("withdraw route 10.200.0.2/32", timeout=20)
    rig.docker.cli("exec", "api", "busybox", "touch", "/tmp/ok")
    rig.exa.expect("announce route 10.200.0.2/32 next-hop self", timeout=20)


def test_dockerd_killed_and_restarted_withdraws_nothing_that_still_runs(rig: Rig) -> None:
    sh(rig.ns, "ip", "route", "add", "10.200.0.3/32", "dev", "vethr1")
    rig.run("db", "--label", "anycast.ips=10.200.0.3", rig.docker.image, "sleep", "600")
    rig.exa.expect("announce route 10.200.0.3/32 next-hop self", timeout=20)
    rig.docker.kill(signal.SIGKILL)
    poll(
        lambda: "source_lost source=docker" in rig.exa.stderr(),
        20,
        "the announcer noticed dockerd is gone",
    )
    rig.docker.start()
    poll(
        lambda: rig.exa.stderr().count("source_synced source=docker") >= 2,
        40,
        "docker source re-listed after the restart",
    )
    rig.exa.no_command_within(2.5)
    # and it still follows the container afterwards
    rig.docker.cli("stop", "-t", "1", "db")
    rig.exa.expect("withdraw route 10.200.0.3/32", timeout=20)
    assert [line for line in rig.exa.seen if "10.200.0.3" in line] == [
        "announce route 10.200.0.3/32 next-hop self",
        "withdraw route 10.200.0.3/32",
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=10,
)
payload_keys = st.sampled_from(
    [
        "Id",
        "Name",
        "State",
        "Config",
        "NetworkSettings",
        "Labels",
        "Running",
        "Health",
        "Networks",
        "IPAddress",
    ]
)
payloads = st.dictionaries(payload_keys, json_values, max_size=6)


@given(payloads)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_fuzz_any_payload_is_an_instance_or_a_payload_error(payload: dict[str, Any]) -> None:
    try:
        instance = parse_container(payload, 0.0)
    except PayloadError:
        return
    assert instance.id == payload["Id"]
    assert all(isinstance(ip, IPv4Address | IPv6Address) for ip in instance.ips)


def test_a_payload_of_the_wrong_shape_is_a_payload_error() -> None:
    for bad in (
        {},
        {"Id": 5},
        {"Id": "x", "Config": {"Labels": ["a"]}},
        {"Id": "x", "Config": "nope"},
    ):
        with pytest.raises(PayloadError):
            parse_container(bad, 0.0)
