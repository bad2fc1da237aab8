"""The announcer under the pinned ExaBGP 5, peering with a real FRR bgpd, in namespaces.

Acceptance (issue 3): a host route added on the host appears in FRR's RIB and in the peer
namespace's kernel; deleted -> gone from both. kill -9 of the announcer while 3 routes are
announced and one is deleted meanwhile -> after the respawn the deleted one is withdrawn
and the other two never left FRR's table. A 10,000-route burst is announced, then
withdrawn, with FRR's table equal to the host kernel's at the end of each phase.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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
    pid_alive,
    poll,
    sh,
)

pytestmark = [pytest.mark.netns, pytest.mark.exabgp, pytest.mark.frr]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CONFIG = """\
kernel:
  tables: [main]
  interfaces: ["vethr*"]
  resync_interval_seconds: 30
policy:
  allow: ["10.0.0.0/8", "fd00:10::/64"]
  max_routes: 20000
"""


@dataclass
class Host:
    link: BgpLink
    exabgp: ExaBGPProcess

    @property
    def ns(self) -> str:
        return self.link.host

    def announcer_pids(self) -> list[int]:
        return [
            pid
            for pid in self.exabgp.helpers()
            if b"announcer\0run" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]

    def frr_v4(self) -> set[str]:
        routes = self.link.frr.vtysh_json("show bgp ipv4 unicast json").get("routes") or {}
        return set(routes)

    def received(self, peer: str = HOST_V4) -> int:
        summary = self.link.frr.vtysh_json("show bgp ipv4 unicast summary json")
        return int(summary["peers"][peer].get("pfxRcd", 0))


def exabgp_conf(config: Path) -> str:
    process = f"process announcer {{\n    run {ANNOUNCER} run -c {config};\n    encoder json;\n}}\n"
    return (
        process
        + exabgp_neighbor(PEER_V4, HOST_V4, "ipv4", ["announcer"])
        + exabgp_neighbor(PEER_V6, HOST_V6, "ipv6", ["announcer"])
    )


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    tmp = tmp_path_factory.mktemp("exabgp-frr")
    config = tmp / "announcer.yaml"
    config.write_text(CONFIG)
    with bgp_link(tmp) as link:
        sh(link.host, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        for dev in ("vethr1", "ctr1"):
            sh(link.host, "ip", "link", "set", dev, "up")
        env = {"exabgp.api.terminate": "true"}
        exabgp = ExaBGPProcess.start(link.host, tmp / "exabgp", exabgp_conf(config), env=env)
        try:
            poll(lambda: link.frr.session_established(HOST_V4), 60, "IPv4 session up")
            poll(lambda: link.frr.session_established(HOST_V6), 60, "IPv6 session up")
            yield Host(link, exabgp)
        finally:
            exabgp.stop()
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "exabgp-frr.log").write_text(exabgp.log_text())


@pytest.fixture(autouse=True)
def clean_routes(host: Host) -> Iterator[None]:
    yield
    sh(host.ns, "ip", "route", "flush", "dev", "vethr1", check=False)
    sh(host.ns, "ip", "-6", "route", "flush", "dev", "vethr1", "proto", "boot", check=False)
    poll(lambda: not host.frr_v4(), 120, "FRR table empty after the test")


def test_host_route_reaches_frr_rib_and_peer_kernel_and_goes_away(host: Host) -> None:
    frr, peer = host.link.frr, host.link.peer
    sh(host.ns, "ip", "route", "add", "10.0.0.1/32", "dev", "vethr1")
    sh(host.ns, "ip", "-6", "route", "add", "fd00:10::1/128", "dev", "vethr1")
    poll(lambda: "10.0.0.1/32" in frr.bgp_prefixes("ipv4"), 30, "10.0.0.1/32 in FRR's RIB")
    poll(lambda: "10.0.0.1/32" in kernel_routes(peer), 30, "10.0.0.1/32 in the peer's kernel")
    poll(lambda: "fd00:10::1/128" in frr.bgp_prefixes("ipv6"), 30, "fd00:10::1/128 in FRR's RIB")
    poll(
        lambda: "fd00:10::1/128" in kernel_routes(peer, family=6),
        30,
        "fd00:10::1/128 in the peer's kernel",
    )
    path = frr.bgp_prefixes("ipv4")["10.0.0.1/32"]
    assert path["aspath"]["string"] == "65001"
    sh(host.ns, "ip", "route", "del", "10.0.0.1/32", "dev", "vethr1")
    sh(host.ns, "ip", "-6", "route", "del", "fd00:10::1/128", "dev", "vethr1")
    poll(lambda: "10.0.0.1/32" not in frr.bgp_prefixes("ipv4"), 30, "10.0.0.1/32 gone from FRR")
    poll(
        lambda: "10.0.0.1/32" not in kernel_routes(peer),
        30,
        "10.0.0.1/32 gone from the peer's kernel",
    )
    poll(lambda: "fd00:10::1/128" not in kernel_routes(peer, family=6), 30, "fd00:10::1/128 gone")


def test_kill_9_respawn_withdraws_the_stale_route_and_never_blips_the_others(
    host: Host, tmp_path: Path
) -> None:
    frr, peer = host.link.frr, host.link.peer
    mine = ["10.0.1.1/32", "10.0.1.2/32", "10.0.1.3/32"]
    for prefix in mine:
        sh(host.ns, "ip", "route", "add", prefix, "dev", "vethr1")
    poll(lambda: set(mine) <= set(frr.bgp_prefixes("ipv4")), 30, "3 routes at FRR")
    updates_before = frr.updates_received(HOST_V4)
    [old] = host.announcer_pids()
    with RouteMonitor.running(peer, tmp_path / "monitor.txt") as monitor:
        # Freeze the announcer, delete a route it can no longer see, then kill it: only the
        # respawned process can withdraw it, from what ExaBGP says it announces.
        os.kill(old, signal.SIGSTOP)
        sh(host.ns, "ip", "route", "del", "10.0.1.3/32", "dev", "vethr1")
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        poll(lambda: not pid_alive(old), 10, "old announcer gone")
        new = poll(
            lambda: [p for p in host.announcer_pids() if p != old], 30, "announcer respawned"
        )
        poll(
            lambda: "10.0.1.3/32" not in frr.bgp_prefixes("ipv4"),
            30,
            "stale route withdrawn after respawn",
        )
        converged = time.monotonic() - killed
        poll(
            lambda: "10.0.1.3/32" not in kernel_routes(peer),
            30,
            "stale route gone from the peer kernel",
        )
        assert set(mine[:2]) <= set(frr.bgp_prefixes("ipv4"))
        # Exactly one UPDATE reached FRR: the withdraw. The re-announce of the two valid
        # routes at start-up sent nothing (ExaBGP drops identical re-announcements).
        assert frr.updates_received(HOST_V4) - updates_before == 1
        for prefix in mine[:2]:
            assert monitor.deleted(prefix) == [], f"{prefix} left the peer's kernel"
        assert monitor.deleted("10.0.1.3/32"), "the stale route was not removed at the peer"
    assert new
    record("kill9_resync", {"stale_withdrawn_after_kill_seconds": round(converged, 3)})


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def record(name: str, figures: dict[str, object]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "measurements.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"{name}: {figures}")


@pytest.mark.slow
def test_10k_burst_is_announced_then_withdrawn_exactly(host: Host, tmp_path: Path) -> None:
    count = 10_000
    prefixes = [f"10.{20 + i // 65536}.{(i // 256) % 256}.{i % 256}/32" for i in range(count)]
    batch = tmp_path / "add.batch"
    batch.write_text("".join(f"route add {p} dev vethr1\n" for p in prefixes))
    started = time.monotonic()
    sh(host.ns, "ip", "-batch", str(batch))
    poll(lambda: host.received() >= count, 300, f"{count} routes received by FRR", interval=0.2)
    announced = time.monotonic() - started
    assert host.frr_v4() == kernel_routes(host.ns) & set(prefixes) == set(prefixes)
    [pid] = host.announcer_pids()
    figures = {
        "routes": count,
        "announce_seconds": round(announced, 2),
        "announcer_peak_rss_mb": round(rss_mb(pid), 1),
        "exabgp_peak_rss_mb": round(rss_mb(host.exabgp.pid), 1),
    }
    batch.write_text("".join(f"route del {p} dev vethr1\n" for p in prefixes))
    started = time.monotonic()
    sh(host.ns, "ip", "-batch", str(batch))
    poll(lambda: host.received() == 0, 300, "every route withdrawn at FRR", interval=0.2)
    figures["withdraw_seconds"] = round(time.monotonic() - started, 2)
    assert host.frr_v4() == set() == kernel_routes(host.ns) & set(prefixes)
    record("burst_10k", figures)


def test_a_hung_announcer_makes_the_watchdog_end_exabgp_and_the_peer_drops_the_routes(
    tmp_path: Path,
) -> None:
    config = tmp_path / "announcer.yaml"
    config.write_text(CONFIG + "exabgp:\n  watchdog_seconds: 3\n")
    with bgp_link(tmp_path) as link:
        sh(link.host, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        for dev in ("vethr1", "ctr1"):
            sh(link.host, "ip", "link", "set", dev, "up")
        sh(link.host, "ip", "route", "add", "10.0.7.1/32", "dev", "vethr1")
        exabgp = ExaBGPProcess.start(
            link.host,
            tmp_path / "exabgp",
            exabgp_conf(config),
            env={"exabgp.api.terminate": "true"},
        )
        host = Host(link, exabgp)
        try:
            poll(lambda: "10.0.7.1/32" in host.frr_v4(), 60, "route announced")
            [announcer] = host.announcer_pids()
            os.kill(announcer, signal.SIGSTOP)
            stopped = time.monotonic()
            poll(lambda: not exabgp.alive(), 20, "the watchdog ended ExaBGP")
            poll(
                lambda: "10.0.7.1/32" not in host.frr_v4(), 20, "FRR dropped the hung host's route"
            )
            gone = time.monotonic() - stopped
            # ExaBGP 5 SIGKILLs its helpers 2 s after SIGTERM; else SIGCONT -> EOF -> exit
            with contextlib.suppress(ProcessLookupError):
                os.kill(announcer, signal.SIGCONT)
            poll(lambda: not pid_alive(announcer), 20, "the hung announcer is gone")
            assert "watchdog_expired" in exabgp.log_text()
            record(
                "watchdog_hang",
                {"route_gone_after_sigstop_seconds": round(gone, 2), "watchdog_seconds": 3},
            )
        finally:
            exabgp.stop()


EXABGP4 = Path(__file__).resolve().parents[2] / ".venv-exabgp4" / "bin" / "exabgp"


@pytest.mark.skipif(not EXABGP4.exists(), reason="ExaBGP 4.2.21 venv missing (make venv-exabgp4)")
def test_under_exabgp_4_2_announce_withdraw_and_restart_safety(tmp_path: Path) -> None:
    """Debian 12 ships ExaBGP 4.2.21: same lines from us; its adj-rib-out lines carry a
    'neighbor ' prefix, which the restart path must read to withdraw only what is stale."""
    config = tmp_path / "announcer.yaml"
    config.write_text(CONFIG + "exabgp:\n  dialect: 4\n")
    with bgp_link(tmp_path) as link:
        sh(link.host, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        for dev in ("vethr1", "ctr1"):
            sh(link.host, "ip", "link", "set", dev, "up")
        for prefix in ("10.0.4.1/32", "10.0.4.2/32"):
            sh(link.host, "ip", "route", "add", prefix, "dev", "vethr1")
        exabgp = ExaBGPProcess.start(
            link.host,
            tmp_path / "exabgp",
            exabgp_conf(config),
            env={"exabgp.api.terminate": "true"},
            exabgp=str(EXABGP4),
        )
        host = Host(link, exabgp)
        try:
            poll(
                lambda: host.frr_v4() == {"10.0.4.1/32", "10.0.4.2/32"}, 60, "announced through 4.2"
            )
            updates = link.frr.updates_received(HOST_V4)
            [old] = host.announcer_pids()
            os.kill(old, signal.SIGSTOP)
            sh(link.host, "ip", "route", "del", "10.0.4.2/32", "dev", "vethr1")
            os.kill(old, signal.SIGKILL)
            poll(
                lambda: host.frr_v4() == {"10.0.4.1/32"},
                30,
                "stale route withdrawn after the 4.2 respawn",
            )
            assert link.frr.updates_received(HOST_V4) - updates == 1
            assert "exabgp_dialect_mismatch" not in exabgp.log_text()
            sh(link.host, "ip", "route", "del", "10.0.4.1/32", "dev", "vethr1")
            poll(lambda: not host.frr_v4(), 30, "withdrawn through 4.2")
        finally:
            exabgp.stop()
