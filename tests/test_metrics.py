"""Prometheus metrics: the scrape-time collector, the hooks, and a real endpoint scraped
inside a namespace after a scenario (routes, a drain, a lost Marathon with credentials)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from announcer.config import ConfigError, MetricsConfig, parse_config
from announcer.core.damping import Damper, DampingParams
from announcer.core.plan import Announce, AnnouncedTable
from announcer.core.policy import Decision, Policy
from announcer.core.world import SourceStatus, World
from announcer.daemon.metrics import AnnouncerCollector, Metrics, in_loop, parse_listen
from announcer.events import Drain, DrainMode, DrainsSet, InstanceRemoved
from announcer.health.probes import ProbeResult
from announcer.model import Advert, Prefix
from announcer.spec.checks import CheckSpec, CheckTarget
from announcer.testing import FakeClock
from tests.integration.fake_exabgp import ANNOUNCER, FakeExaBGP
from tests.netlab import netns, poll, sh

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """{(sample name, sorted labels): value} of a text exposition."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


# --------------------------------------------------------------------------- a fake announcer


@dataclass
class FakeStats:
    reconciles: int = 7
    resyncs: int = 2
    overruns: int = 1
    commands: int = 12
    failures: int = 3
    last_reconcile_seconds: float = 0.002
    neighbors: dict[str, str] = field(
        default_factory=lambda: {"10.99.0.1": "up", "fd00:99::1": "down"}
    )


class FakeHealth:
    def state(self) -> dict[tuple[str, str], bool | None]:
        return {("docker", "a"): True, ("docker", "b"): False, ("docker", "c"): None}


class FakeChannel:
    in_flight = 4


def net(text: str) -> Prefix:
    return Prefix(text)


@dataclass
class FakeAnnouncer:
    world: World = field(default_factory=World)
    decisions: dict[Prefix, Decision] = field(default_factory=dict)
    table: AnnouncedTable = field(default_factory=AnnouncedTable)
    stats: FakeStats = field(default_factory=FakeStats)
    damper: Damper = field(default_factory=lambda: Damper(DampingParams()))
    held_withdraws: int = 5
    policy: Policy = field(default_factory=lambda: Policy(stale_after=300.0))
    health: FakeHealth = field(default_factory=FakeHealth)
    channel: FakeChannel = field(default_factory=FakeChannel)


def fake_announcer(now: float) -> FakeAnnouncer:
    fake = FakeAnnouncer()
    fake.world.kernel_synced = True
    fake.world.sources = {
        "docker": SourceStatus(synced=True),
        "marathon": SourceStatus(synced=True, lost_since=now - 400.0, reason="refused"),
        "files": SourceStatus(synced=False, lost_since=now - 10.0, reason="gone"),
    }
    fake.world.apply(
        DrainsSet(
            (Drain(net("10.0.0.3/32"), now, None, DrainMode.GRACEFUL, 30.0, "maintenance_file"),)
        )
    )
    rows = [
        ("10.0.0.1/32", True, "host_route", ("route:main:vethr1", "docker:web-1")),
        ("10.0.0.2/32", True, "host_route", ("route:main:vethr2",)),
        ("fd00::1/128", True, "local_address", ("address:anycast0",)),
        ("10.0.0.3/32", False, "drained", ("route:main:vethr3",)),
        ("10.0.0.4/32", False, "damped", ("route:main:vethr4",)),
        ("10.0.0.5/32", False, "prefix_not_allowed", ("route:main:vethr5",)),
    ]
    for text, announce, reason, sources in rows:
        fake.decisions[net(text)] = Decision(announce, reason, sources)
        if announce:
            fake.table.record(Announce(net(text), Advert()))
    fake.table.record(Announce(net("10.0.0.9/32"), Advert()))  # inherited, not decided
    fake.table.known = True
    fake.damper.suppressions = 6
    return fake


def scrape(metrics: Metrics) -> Samples:
    return samples(generate_latest(metrics.registry).decode())


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    yield m
    m.close()


def test_the_collector_reads_the_announcer_at_scrape_time(metrics: Metrics) -> None:
    async def main() -> Samples:
        fake = fake_announcer(asyncio.get_running_loop().time())
        metrics.serve(fake, asyncio.get_running_loop())
        # scraped from another thread, as the HTTP server does
        return await asyncio.to_thread(scrape, metrics)

    found = asyncio.run(main())
    assert value(found, "announcer_loop_responsive") == 1
    assert value(found, "announcer_announced_routes", family="ipv4") == 3
    assert value(found, "announcer_announced_routes", family="ipv6") == 1
    assert value(found, "announcer_announced_routes_by_source", source="route", family="ipv4") == 2
    assert value(found, "announcer_announced_routes_by_source", source="docker", family="ipv4") == 1
    assert (
        value(found, "announcer_announced_routes_by_source", source="address", family="ipv6") == 1
    )
    assert (
        value(found, "announcer_announced_routes_by_source", source="unknown", family="ipv4") == 1
    )
    assert value(found, "announcer_decisions", reason="host_route", announce="true") == 2
    assert value(found, "announcer_decisions", reason="drained", announce="false") == 1
    assert value(found, "announcer_decisions", reason="prefix_not_allowed", announce="false") == 1
    assert value(found, "announcer_exabgp_neighbor_up", peer="10.99.0.1") == 1
    assert value(found, "announcer_exabgp_neighbor_up", peer="fd00:99::1") == 0
    assert value(found, "announcer_source_synced", source="kernel") == 1
    assert value(found, "announcer_source_synced", source="files") == 0
    assert value(found, "announcer_source_lost", source="docker") == 0
    assert value(found, "announcer_source_lost", source="marathon") == 1
    assert value(found, "announcer_source_stale", source="marathon") == 1
    assert value(found, "announcer_source_stale", source="files") == 0
    assert 399 < (value(found, "announcer_source_lost_seconds", source="marathon") or 0) < 500
    assert value(found, "announcer_drains", mode="graceful", origin="maintenance_file") == 1
    assert value(found, "announcer_drained_all") == 0
    assert value(found, "announcer_damped_routes") == 1
    assert value(found, "announcer_damping_suppressions_total") == 6
    assert value(found, "announcer_held_withdraws") == 5
    assert value(found, "announcer_exabgp_commands_in_flight") == 4
    assert value(found, "announcer_health_instances", state="healthy") == 1
    assert value(found, "announcer_health_instances", state="unhealthy") == 1
    assert value(found, "announcer_health_instances", state="pending") == 1
    assert value(found, "announcer_reconciles_total") == 7
    assert value(found, "announcer_exabgp_commands_total") == 12
    assert value(found, "announcer_exabgp_command_failures_total") == 3
    assert value(found, "announcer_kernel_resyncs_total") == 2
    assert value(found, "announcer_netlink_overruns_total") == 1
    assert value(found, "announcer_exabgp_rib_known") == 1
    assert any(name == "process_resident_memory_bytes" for name, _ in found)
    assert any(name == "announcer_build_info" for name, _ in found)


def test_a_loop_that_does_not_answer_is_reported_not_waited_for() -> None:
    loop = asyncio.new_event_loop()  # never run: nothing it is handed ever executes
    try:
        read = in_loop(loop, lambda: pytest.fail("read outside the loop"), timeout=0.2)
        collector = AnnouncerCollector(read, "test")
        result: list[Any] = []
        thread = threading.Thread(target=lambda: result.extend(collector.collect()))
        thread.start()
        thread.join(5)
        names = {m.name: m.samples[0].value for m in result}
        assert names["announcer_loop_responsive"] == 0
        assert "announcer_announced_routes" not in names
    finally:
        loop.close()


def test_event_to_command_latency_is_measured_from_the_oldest_event() -> None:
    clock = FakeClock(0.0)
    m = Metrics(clock=clock)
    try:
        clock.now = 10.0
        m.events("kernel", 3)
        clock.now = 10.1
        m.lifecycle(InstanceRemoved("docker", "abc"))
        clock.now = 10.25
        m.commands_sent(2)
        m.reconciled(0.004)
        clock.now = 20.0
        m.events("kernel")
        m.commands_sent(0)  # a reconcile that changed nothing: no sample, the backlog clears
        clock.now = 30.0
        m.commands_sent(1)  # nothing observed since: no sample
        m.events("kernel", 0)  # nothing read: not counted
        found = scrape(m)
    finally:
        m.close()
    assert value(found, "announcer_event_to_command_seconds_count") == 1
    assert value(found, "announcer_event_to_command_seconds_sum") == pytest.approx(0.25)
    assert value(found, "announcer_events_total", source="kernel") == 4
    assert value(found, "announcer_events_total", source="docker") == 1
    assert value(found, "announcer_reconcile_duration_seconds_count") == 1
    assert value(found, "announcer_reconcile_duration_seconds_bucket", le="0.005") == 1
    # without serve(), no scrape-time metrics and no responsiveness claim
    assert value(found, "announcer_loop_responsive") is None


def test_health_probes_are_timed_by_kind_and_result() -> None:
    clock = FakeClock(0.0)
    m = Metrics(clock=clock)
    outcomes = iter([True, False, True])

    async def probe(target: CheckTarget) -> ProbeResult:
        clock.now += 0.03
        return ProbeResult(next(outcomes), "tcp 10.0.0.1:80")

    target = CheckTarget(
        ("docker", "a"), Prefix("10.0.0.1/32").network_address, CheckSpec("tcp", port=80)
    )
    timed = m.timed_probe(probe)
    try:
        results = [asyncio.run(timed(target)).ok for _ in range(3)]
        m.health_result(("files", "x"), healthy=False, latency=0.2)  # the generic hook
        found = scrape(m)
    finally:
        m.close()
    assert results == [True, False, True]
    assert value(found, "announcer_health_checks_total", kind="tcp", result="pass") == 2
    assert value(found, "announcer_health_checks_total", kind="tcp", result="fail") == 1
    assert value(found, "announcer_health_checks_total", kind="any", result="fail") == 1
    assert value(found, "announcer_health_check_duration_seconds_sum", kind="tcp") == pytest.approx(
        0.09
    )


def test_warnings_and_errors_are_counted_by_event_name(metrics: Metrics) -> None:
    log = logging.getLogger("announcer.sources.test")
    log.warning("source_lost source=%s reason=%s", "marathon", "refused")
    log.warning("source_lost source=%s reason=%s", "docker", "refused")
    log.error("Something without an event name")
    log.info("route_announced prefix=10.0.0.1/32")  # below warning: not counted
    found = scrape(metrics)
    assert value(found, "announcer_log_events_total", level="warning", event="source_lost") == 2
    assert value(found, "announcer_log_events_total", level="error", event="other") == 1
    assert not any(dict(labels).get("event") == "route_announced" for _, labels in found)
    metrics.close()
    log.warning("source_lost source=files reason=x")  # detached: not counted any more
    assert (
        value(scrape(metrics), "announcer_log_events_total", level="warning", event="source_lost")
        == 2
    )


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:9109", "[::1]:9109", "localhost:80", "0.0.0.0:65535"]
)
def test_listen_addresses(listen: str) -> None:
    config = parse_config({"metrics": {"listen": listen}})
    assert config.metrics == MetricsConfig(listen=listen)
    host, port = parse_listen(listen)
    assert port == int(listen.rsplit(":", 1)[1])
    assert "[" not in host


@pytest.mark.parametrize(
    "listen", ["9109", "127.0.0.1:0", "127.0.0.1:70000", "http://x:1", "a b:1", ":9109"]
)
def test_bad_listen_addresses_are_refused_by_name(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        parse_config({"metrics": {"listen": listen}})


def test_metrics_are_off_by_default() -> None:
    assert parse_config({}).metrics.listen is None


# --------------------------------------------------------------------------- end to end

SECRETS = ("pw-Zq81-never-shown", "tok-Hh27-never-shown")
SCRAPE = """
import sys, urllib.request
try:
    with urllib.request.urlopen("http://127.0.0.1:9109/metrics", timeout=5) as r:
        sys.stdout.write(r.read().decode())
except OSError as e:
    sys.stdout.write("")
"""


@pytest.mark.netns
def test_the_endpoint_after_a_scenario(tmp_path: Path) -> None:
    config = tmp_path / "announcer.yaml"
    config.write_text(
        "kernel:\n  interfaces: ['vethr*']\n  resync_interval_seconds: 3600\n"
        "policy:\n  allow: ['10.0.0.0/8']\n"
        "lifecycle:\n  sync_timeout_seconds: 1\n"
        f"control:\n  socket: {tmp_path}/ctl.sock\n  state_directory: {tmp_path}/state\n"
        f"drain:\n  maintenance_file: {tmp_path}/maintenance\n"
        "metrics:\n  listen: 127.0.0.1:9109\n"
        # unreachable inside the namespace: the source is lost; its credentials must not leak
        "marathon:\n  enabled: true\n  url: http://127.0.0.1:1\n  agent: host1\n"
        f"  username: ops\n  password: {SECRETS[0]}\n  token: {SECRETS[1]}\n"
    )
    with netns("metric") as ns:
        sh(ns, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        sh(ns, "ip", "link", "set", "vethr1", "up")
        sh(ns, "ip", "link", "set", "ctr1", "up")
        sh(ns, "ip", "route", "add", "10.200.0.1/32", "dev", "vethr1")
        sh(ns, "ip", "route", "add", "192.0.2.1/32", "dev", "vethr1")  # not allowed
        exa = FakeExaBGP(ns, config)
        try:
            exa.expect("announce route 10.200.0.1/32 next-hop self", timeout=15)
            sh(ns, "ip", "route", "add", "10.200.0.2/32", "dev", "vethr1")  # a kernel event
            exa.expect("announce route 10.200.0.2/32 next-hop self")
            sh(ns, ANNOUNCER, "drain", "10.200.0.1/32", "-c", str(config))
            exa.expect("withdraw route 10.200.0.1/32")

            def scraped() -> Samples | None:
                text = sh(ns, sys.executable, "-c", SCRAPE).stdout
                found = samples(text) if text else {}
                ready = value(found, "announcer_decisions", reason="drained", announce="false")
                return found if ready == 1 else None

            found = poll(scraped, 15, "the endpoint shows the drain")
            text = sh(ns, sys.executable, "-c", SCRAPE).stdout
        finally:
            exa.close()
    stderr = exa.stderr()
    assert "metrics_listening listen=127.0.0.1:9109" in stderr
    assert value(found, "announcer_loop_responsive") == 1
    assert value(found, "announcer_announced_routes", family="ipv4") == 1
    assert value(found, "announcer_announced_routes_by_source", source="route", family="ipv4") == 1
    assert value(found, "announcer_decisions", reason="host_route", announce="true") == 1
    assert value(found, "announcer_decisions", reason="prefix_not_allowed", announce="false") == 1
    assert value(found, "announcer_drains", mode="withdraw", origin="control") == 1
    assert value(found, "announcer_source_synced", source="kernel") == 1
    assert value(found, "announcer_source_lost", source="marathon") == 1
    assert value(found, "announcer_exabgp_commands_total") == 3
    assert (value(found, "announcer_reconciles_total") or 0) >= 3
    assert (value(found, "announcer_events_total", source="kernel") or 0) >= 1
    assert value(found, "announcer_events_total", source="control") == 1
    assert (value(found, "announcer_events_total", source="marathon") or 0) >= 1
    assert (value(found, "announcer_reconcile_duration_seconds_count") or 0) >= 3
    assert (value(found, "announcer_event_to_command_seconds_count") or 0) >= 2
    assert (
        value(found, "announcer_log_events_total", level="warning", event="source_lost") or 0
    ) >= 1
    assert (value(found, "process_resident_memory_bytes") or 0) > 10e6
    for secret in (*SECRETS, "ops"):
        assert secret not in text
    for secret in SECRETS:
        assert secret not in stderr
    assert json.dumps(sorted({name for name, _ in found}))  # every family has a name


# --------------------------------------------------------------------------- docs agree

REPO = Path(__file__).resolve().parent.parent


def exported_names() -> set[str]:
    """Every sample name a fully populated scrape produces (histogram/counter suffixes too)."""
    clock = FakeClock(0.0)
    m = Metrics(clock=clock)
    try:
        m.events("kernel")
        m.commands_sent(1)
        m.reconciled(0.001)
        m.health_result(("docker", "a"), healthy=True, latency=0.01, kind="tcp")
        logging.getLogger("announcer").warning("source_lost source=x reason=y")

        async def main() -> Samples:
            m.serve(fake_announcer(asyncio.get_running_loop().time()), asyncio.get_running_loop())
            return scrape(m)

        found = asyncio.run(main())
    finally:
        m.close()
    return {name for name, _ in found}


def test_the_dashboard_and_the_runbook_name_only_exported_metrics() -> None:
    names = exported_names()
    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {n for e in exprs for n in re.findall(r"\b((?:announcer|process)_[a-z_]+)\b", e)}
    assert used, "no metric in the dashboard"
    assert used <= names, f"the dashboard uses metrics that do not exist: {sorted(used - names)}"
    runbook = (REPO / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`(announcer_[a-z_]+)", runbook))
    families = {re.sub(r"_(bucket|sum|count|total|created)$", "", n) for n in names}
    missing = {d for d in documented if d not in names and d not in families}
    assert not missing, f"docs/operations.md names metrics that do not exist: {sorted(missing)}"
    # ...and every family we export is documented there
    undocumented = {f for f in families if f.startswith("announcer_")} - {
        re.sub(r"_total$", "", d) for d in documented
    }
    assert not undocumented, f"exported but not in docs/operations.md: {sorted(undocumented)}"
