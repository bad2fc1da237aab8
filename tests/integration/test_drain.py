"""Drain, undrain, maintenance file, SIGTERM drain, persistence, damping: `announcer run`
in a namespace with the test playing ExaBGP, driven through the real control socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.fake_exabgp import ANNOUNCER, FakeExaBGP
from tests.netlab import netns, poll, sh

pytestmark = [pytest.mark.netns]


@dataclass
class Rig:
    ns: str
    tmp: Path
    config: Path

    def start(self, rib: list[str] | None = None) -> FakeExaBGP:
        return FakeExaBGP(self.ns, self.config, rib=rib)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(self.ns, ANNOUNCER, *args, "-c", str(self.config), check=check)

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)


def write_config(tmp: Path, extra: str = "") -> Path:
    config = tmp / "announcer.yaml"
    config.write_text(
        "kernel:\n  interfaces: ['vethr*']\n  resync_interval_seconds: 3600\n"
        "policy:\n  allow: ['10.0.0.0/8']\n"
        f"control:\n  socket: {tmp}/ctl.sock\n  state_directory: {tmp}/state\n"
        f"drain:\n  maintenance_file: {tmp}/maintenance\n  graceful_seconds: 1\n" + extra
    )
    return config


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with netns("drain") as ns:
        sh(ns, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        sh(ns, "ip", "link", "set", "vethr1", "up")
        sh(ns, "ip", "link", "set", "ctr1", "up")
        for i in (1, 2):
            sh(ns, "ip", "route", "add", f"10.200.0.{i}/32", "dev", "vethr1")
        yield Rig(ns, tmp_path, write_config(tmp_path))


def started(rig: Rig, rib: list[str] | None = None) -> FakeExaBGP:
    exa = rig.start(rib)
    exa.wait_for(lambda s: len(s) == 2, 10, "both routes announced")
    poll((rig.tmp / "ctl.sock").exists, 10, "control socket")
    return exa


def test_status_drain_undrain_and_persistence_across_a_restart(rig: Rig) -> None:
    exa = started(rig)
    try:
        rows = {r["prefix"]: r for r in rig.status()["decisions"]}
        assert rows["10.200.0.1/32"]["announced"]
        assert rows["10.200.0.1/32"]["reason"] == "host_route"
        assert "10.200.0.1/32" in rig.cli("status").stdout
        rig.cli("drain", "10.200.0.1/32")
        exa.expect("withdraw route 10.200.0.1/32")
        assert {r["prefix"]: r["reason"] for r in rig.status()["decisions"]}[
            "10.200.0.1/32"
        ] == "drained"
    finally:
        assert exa.close() == 0
    # a new announcer (as after a respawn) finds the drain persisted
    exa = rig.start(rib=["10.99.0.1 ipv4 unicast 10.200.0.2/32 next-hop 10.99.0.2"])
    try:
        exa.expect("announce route 10.200.0.2/32 next-hop self")
        exa.no_command_within(0.5)
        assert "drains_restored count=1" in exa.stderr()
        rig.cli("undrain", "10.200.0.1/32")
        exa.expect("announce route 10.200.0.1/32 next-hop self")
        plan = json.loads(rig.cli("plan", "--json").stdout)
        assert all(
            row["reason"] == "host_route"
            for row in plan["decisions"]
            if row["prefix"].startswith("10.200")
        )
    finally:
        exa.close()


def test_graceful_drain_with_a_duration_then_back(rig: Rig) -> None:
    exa = started(rig)
    try:
        rig.cli("drain", "--all", "--for", "3s", "--mode", "graceful")
        lines = exa.wait_for(
            lambda s: len(s) >= 4, 10, "graceful-shutdown, then withdraw, for both"
        )
        assert "announce route 10.200.0.1/32 next-hop self community [65535:0]" in lines
        assert "withdraw route 10.200.0.1/32" in lines
        # the drain expires by itself
        exa.wait_for(
            lambda s: "announce route 10.200.0.1/32 next-hop self" in s,
            10,
            "re-announced after --for",
        )
    finally:
        exa.close()
    seen = exa.seen
    assert seen.index("withdraw route 10.200.0.1/32") > seen.index(
        "announce route 10.200.0.1/32 next-hop self community [65535:0]"
    )


def test_the_maintenance_file_drains_while_it_exists(rig: Rig) -> None:
    exa = started(rig)
    try:
        (rig.tmp / "maintenance").write_text("10.200.0.2/32\n")
        exa.expect("withdraw route 10.200.0.2/32")
        (rig.tmp / "maintenance").unlink()
        exa.expect("announce route 10.200.0.2/32 next-hop self")
        (rig.tmp / "maintenance").write_text("")
        exa.wait_for(
            lambda s: {"withdraw route 10.200.0.1/32", "withdraw route 10.200.0.2/32"} <= s,
            10,
            "empty file drains all",
        )
    finally:
        exa.close()


def test_sigterm_drains_everything_before_exit_when_configured(rig: Rig) -> None:
    rig.config.write_text(
        rig.config.read_text().replace(
            "  graceful_seconds: 1\n", "  graceful_seconds: 1\n  on_sigterm: true\n"
        )
    )
    exa = started(rig)
    try:
        # ours only: pgrep sees every process on the machine, namespaces or not
        announcer = [
            int(p)
            for p in sh(rig.ns, "pgrep", "-f", f"{ANNOUNCER} run -c {rig.config}").stdout.split()
        ]
        assert len(announcer) == 1
        for pid in announcer:
            os.kill(pid, signal.SIGTERM)
        lines = exa.wait_for(
            lambda s: {"withdraw route 10.200.0.1/32", "withdraw route 10.200.0.2/32"} <= s,
            10,
            "withdrawn on SIGTERM",
        )
        assert lines
        assert exa.proc.wait(10) == 0
    finally:
        exa.close()


def test_control_socket_refuses_non_root_peers(rig: Rig) -> None:
    public = Path(tempfile.mkdtemp(prefix="aactl", dir="/tmp"))  # traversable by nobody
    public.chmod(0o755)
    sock = public / "ctl.sock"
    rig.config.write_text(
        rig.config.read_text().replace(f"socket: {rig.tmp}/ctl.sock", f"socket: {sock}")
    )
    exa = rig.start()
    try:
        exa.wait_for(lambda s: len(s) == 2, 10, "both routes announced")
        poll(sock.exists, 10, "control socket")
        assert oct(sock.stat().st_mode & 0o777) == "0o600"
        # import everything first: after setuid, /root/.pyenv is not readable
        code = (
            "import os, socket\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "try:\n"
            f"    s.connect('{sock}')\n"
            "except PermissionError:\n"
            "    print('EACCES'); raise SystemExit\n"
            's.sendall(b\'{"command": "drain", "all": true}\\n\')\n'
            "print(s.recv(65536).decode())\n"
        )
        assert sh(rig.ns, sys.executable, "-c", code).stdout.strip() == "EACCES"  # mode 0600
        os.chmod(sock, 0o666)  # get past the file mode to prove the SO_PEERCRED check too
        assert "permission denied: root only" in sh(rig.ns, sys.executable, "-c", code).stdout
        exa.no_command_within(0.5)
    finally:
        exa.close()
        shutil.rmtree(public, ignore_errors=True)
    assert "control_refused uid=65534" in exa.stderr()


def test_an_unwritable_state_directory_keeps_announcing_and_says_why(rig: Rig) -> None:
    rig.config.write_text(
        rig.config.read_text().replace(
            f"state_directory: {rig.tmp}/state", "state_directory: /proc/version/state"
        )
    )
    exa = started(rig)
    try:
        result = rig.cli("drain", "10.200.0.1/32")
        assert "not persisted" in result.stderr
        exa.expect("withdraw route 10.200.0.1/32")
        assert rig.status()["stats"]["persist_error"]
    finally:
        exa.close()
    assert "state_not_persisted" in exa.stderr()


def test_a_route_flapping_every_200ms_is_damped_then_reannounced(rig: Rig) -> None:
    rig.config.write_text(
        rig.config.read_text() + "damping:\n  half_life_seconds: 2\n  max_suppress_seconds: 30\n"
    )
    exa = started(rig)
    try:
        flap = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                rig.ns,
                "sh",
                "-c",
                "for i in 1 2 3 4 5 6 7 8 9 10; do ip route del 10.200.0.1/32 dev vethr1; sleep 0.1; "
                "ip route add 10.200.0.1/32 dev vethr1; sleep 0.1; done",
            ]
        )
        assert flap.wait(20) == 0
        reasons = lambda: {r["prefix"]: r["reason"] for r in rig.status()["decisions"]}  # noqa: E731
        poll(lambda: reasons()["10.200.0.1/32"] == "damped", 10, "suppressed while flapping")
        exa.wait_for(
            lambda s: (
                "announce route 10.200.0.1/32 next-hop self" in s
                and reasons()["10.200.0.1/32"] == "host_route"
            ),
            30,
            "re-announced after it settled",
        )
    finally:
        exa.close()
    announces = exa.seen.count("announce route 10.200.0.1/32 next-hop self")
    withdraws = exa.seen.count("withdraw route 10.200.0.1/32")
    assert withdraws >= 2
    assert announces < 10  # not every flap reached ExaBGP
