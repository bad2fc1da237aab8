"""Prometheus metrics: what the running announcer knows, read at scrape time, plus the few
measurements that need hooks in the loop.

- :class:`AnnouncerCollector` turns a :class:`Snapshot` of the running announcer into metric
  families at scrape time. The HTTP server answers in its own thread, but the announcer's
  tables belong to the event loop, so the snapshot is taken *in the loop* (handed over with
  ``call_soon_threadsafe``) under a deadline: a loop that does not answer makes the scrape
  say ``announcer_loop_responsive 0`` instead of hanging or reading torn state.
- :class:`~announcer.daemon.observations.Observations` holds what cannot be read after the
  fact (reconcile duration, event-to-command latency, events, health checks, log events).

Only counts, reason words, state words, source names and BGP peer addresses are exported:
no configuration value (Marathon credentials, URLs, labels) and no prefix (bounded
cardinality: a label per announced /32 would make a 100k-series scrape).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from announcer.config import MetricsConfig
from announcer.daemon.hooks import Observable
from announcer.daemon.observations import Observations
from announcer.model import Prefix

log = logging.getLogger("announcer.metrics")

SNAPSHOT_TIMEOUT_SECONDS = 5.0


# --------------------------------------------------------------------------- what we read


@dataclass(frozen=True, slots=True)
class SourceView:
    name: str
    synced: bool
    lost_seconds: float | None  # None: not lost
    stale: bool  # lost for longer than lifecycle.stale_after_seconds: no longer trusted


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Plain values copied out of the announcer in the loop thread."""

    announced: Mapping[str, int]  # family -> announced prefixes
    announced_by_source: Mapping[tuple[str, str], int]  # (source kind, family) -> prefixes
    decisions: Mapping[tuple[str, bool], int]  # (reason, announce) -> prefixes
    neighbors: Mapping[str, str]  # peer -> ExaBGP's last state word
    sources: tuple[SourceView, ...]
    kernel_synced: bool
    rib_known: bool
    drains: Mapping[tuple[str, str], int]  # (mode, origin) -> drains
    drained_all: bool
    damping_suppressions: int
    held_withdraws: int
    in_flight: int
    health: Mapping[str, int]  # healthy / unhealthy / pending -> instances
    reconciles: int
    commands: int
    failures: int
    resyncs: int
    overruns: int
    last_reconcile_seconds: float


def family(prefix: Prefix) -> str:
    return f"ipv{prefix.version}"


def source_kind(source: str) -> str:
    """``route:main:vethr1`` -> ``route``; ``docker:web-1`` -> ``docker`` (bounded labels)."""
    return source.split(":", 1)[0] or "unknown"


def snapshot_of(announcer: Observable, now: float) -> Snapshot:
    """Copy what the metrics show; ``now`` is the loop's monotonic clock."""
    world, stats = announcer.world, announcer.stats
    announced: Counter[str] = Counter()
    by_source: Counter[tuple[str, str]] = Counter()
    for prefix in announcer.table.entries:
        announced[family(prefix)] += 1
        decision = announcer.decisions.get(prefix)
        kinds = {source_kind(s) for s in decision.sources} if decision else set()
        for kind in kinds or {"unknown"}:
            by_source[kind, family(prefix)] += 1
    decisions: Counter[tuple[str, bool]] = Counter(
        (str(d.reason), d.announce) for d in announcer.decisions.values()
    )
    sources = tuple(
        SourceView(
            name,
            status.synced,
            None if status.lost_since is None else max(0.0, now - status.lost_since),
            status.lost_since is not None
            and now - status.lost_since > announcer.policy.stale_after,
        )
        for name, status in sorted(world.sources.items())
    )
    verdicts = announcer.health.state().values()
    health = Counter(
        "pending" if verdict is None else "healthy" if verdict else "unhealthy"
        for verdict in verdicts
    )
    return Snapshot(
        announced=dict(announced),
        announced_by_source=dict(by_source),
        decisions=dict(decisions),
        neighbors=dict(stats.neighbors),
        sources=sources,
        kernel_synced=world.kernel_synced,
        rib_known=announcer.table.known,
        drains=dict(Counter((d.mode.value, d.origin) for d in world.drains.values())),
        drained_all=None in world.drains,
        damping_suppressions=announcer.damper.suppressions,
        held_withdraws=announcer.held_withdraws,
        in_flight=announcer.channel.in_flight,
        health=dict(health),
        reconciles=stats.reconciles,
        commands=stats.commands,
        failures=stats.failures,
        resyncs=stats.resyncs,
        overruns=stats.overruns,
        last_reconcile_seconds=stats.last_reconcile_seconds,
    )


# --------------------------------------------------------------------------- rendering


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


def _labelled(
    name: str, text: str, labels: list[str], values: Mapping[Any, float]
) -> GaugeMetricFamily:
    """A gauge family with one sample per key (a tuple of label values)."""
    metric = GaugeMetricFamily(name, text, labels=labels)
    for key, value in sorted(values.items()):
        metric.add_metric(list(key), value)
    return metric


def render_snapshot(snap: Snapshot) -> list[Metric]:
    """The metric families of one snapshot (pure)."""
    sources = [("kernel", snap.kernel_synced, None, False)] + [
        (s.name, s.synced, s.lost_seconds, s.stale) for s in snap.sources
    ]
    return [
        _labelled(
            "announcer_announced_routes",
            "Prefixes ExaBGP has been told to announce, by address family.",
            ["family"],
            {(f,): n for f, n in ({"ipv4": 0, "ipv6": 0} | dict(snap.announced)).items()},
        ),
        _labelled(
            "announcer_announced_routes_by_source",
            "Announced prefixes by contributing source kind (route, address, docker, "
            "marathon, files) and family; a prefix with two kinds counts in both.",
            ["source", "family"],
            dict(snap.announced_by_source),
        ),
        _labelled(
            "announcer_decisions",
            "Prefixes by the current decision's reason and verdict.",
            ["reason", "announce"],
            {(r, str(a).lower()): n for (r, a), n in snap.decisions.items()},
        ),
        _labelled(
            "announcer_exabgp_neighbor_up",
            "1 while ExaBGP reports the BGP session to this peer up.",
            ["peer"],
            {(peer,): float(state == "up") for peer, state in snap.neighbors.items()},
        ),
        _labelled(
            "announcer_source_synced",
            "1 once the source listed everything (kernel: dumped).",
            ["source"],
            {(name,): float(synced) for name, synced, _, _ in sources},
        ),
        _labelled(
            "announcer_source_lost",
            "1 while the source does not answer.",
            ["source"],
            {(name,): float(lost is not None) for name, _, lost, _ in sources},
        ),
        _labelled(
            "announcer_source_lost_seconds",
            "How long the source has not answered (0 while it answers).",
            ["source"],
            {(name,): lost or 0.0 for name, _, lost, _ in sources},
        ),
        _labelled(
            "announcer_source_stale",
            "1 once a lost source's last state is no longer trusted (stale_after_seconds).",
            ["source"],
            {(name,): float(stale) for name, _, _, stale in sources},
        ),
        _gauge(
            "announcer_exabgp_rib_known", "1 once ExaBGP's adj-rib-out was read.", snap.rib_known
        ),
        _labelled(
            "announcer_drains",
            "Active drains by mode (withdraw, graceful) and origin.",
            ["mode", "origin"],
            dict(snap.drains),
        ),
        _gauge("announcer_drained_all", "1 while every prefix is drained.", snap.drained_all),
        _gauge(
            "announcer_damped_routes",
            "Prefixes withheld by flap damping now.",
            sum(n for (reason, _), n in snap.decisions.items() if reason == "damped"),
        ),
        _counter(
            "announcer_damping_suppressions",
            "Times a prefix crossed the damping suppress threshold.",
            snap.damping_suppressions,
        ),
        _gauge(
            "announcer_held_withdraws",
            "Withdraws held by the mass-withdraw guard at its last hold.",
            snap.held_withdraws,
        ),
        _gauge(
            "announcer_exabgp_commands_in_flight",
            "Commands sent to ExaBGP and not acknowledged yet.",
            snap.in_flight,
        ),
        _labelled(
            "announcer_health_instances",
            "Instances with a health check, by verdict (healthy, unhealthy, pending).",
            ["state"],
            {(s,): snap.health.get(s, 0) for s in ("healthy", "unhealthy", "pending")},
        ),
        _counter("announcer_reconciles", "Reconciles run.", snap.reconciles),
        _counter("announcer_exabgp_commands", "Commands sent to ExaBGP.", snap.commands),
        _counter(
            "announcer_exabgp_command_failures",
            "Commands ExaBGP answered with error (retried with backoff).",
            snap.failures,
        ),
        _counter("announcer_kernel_resyncs", "Full kernel re-dumps.", snap.resyncs),
        _counter(
            "announcer_netlink_overruns",
            "Netlink receive buffer overruns (each forces a full re-dump).",
            snap.overruns,
        ),
        _gauge(
            "announcer_last_reconcile_seconds",
            "Duration of the last reconcile.",
            snap.last_reconcile_seconds,
        ),
    ]


class AnnouncerCollector:
    """A prometheus_client collector that reads the announcer at scrape time."""

    def __init__(self, read: Callable[[], Snapshot], version: str) -> None:
        self._read = read
        self._version = version

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "announcer_build_info", "The running announcer's version.", labels=["version"]
        )
        info.add_metric([self._version], 1)
        yield info
        try:
            snap = self._read()
        except Exception as exc:  # a hung or stopped loop: say so, never hang the scrape
            log.warning("metrics_snapshot_failed error=%s", type(exc).__name__)
            yield _gauge("announcer_loop_responsive", "1 if the event loop answered.", 0)
            return
        yield _gauge("announcer_loop_responsive", "1 if the event loop answered.", 1)
        yield from render_snapshot(snap)


def in_loop(
    loop: asyncio.AbstractEventLoop, read: Callable[[], Snapshot], timeout: float
) -> Callable[[], Snapshot]:
    """``read`` run in ``loop``'s thread, waited for from any other thread (with a deadline)."""
    loop_thread = threading.get_ident()  # in_loop is called from the loop's thread

    def call() -> Snapshot:
        if threading.get_ident() == loop_thread:
            return read()
        future: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(read())
            except Exception as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        try:
            return future.result(timeout)
        finally:
            future.cancel()

    return call


def parse_listen(listen: str) -> tuple[str, int]:
    """``127.0.0.1:9109`` / ``[::1]:9109`` / ``localhost:9109`` -> (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def version() -> str:
    try:
        return metadata.version("anycast-announcer")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics(Observations):
    """The announcer's metrics: the hooks, the scrape-time collector and the HTTP server.

    Each instance has its own registry (never the process-global one), so tests can run
    several announcers in one process.
    """

    def __init__(
        self, config: MetricsConfig | None = None, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.config = config or MetricsConfig()
        self.registry = CollectorRegistry()
        super().__init__(self.registry, clock)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu, fds
        self._collector: AnnouncerCollector | None = None
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, announcer: Observable, loop: asyncio.AbstractEventLoop) -> None:
        """Read ``announcer`` at scrape time; listen if ``metrics.listen`` is set. Call from
        the loop's thread. A failed listen is logged, never fatal."""
        reader = in_loop(
            loop, lambda: snapshot_of(announcer, time.monotonic()), SNAPSHOT_TIMEOUT_SECONDS
        )
        if self._collector is None:
            self._collector = AnnouncerCollector(reader, version())
            self.registry.register(self._collector)
        if self.config.listen is None or self._server is not None:
            return
        host, port = parse_listen(self.config.listen)
        try:
            self._server, self._thread = start_http_server(port, host, self.registry)
        except OSError as exc:
            log.error("metrics_listen_failed listen=%s error=%s", self.config.listen, exc)
            return
        log.info("metrics_listening listen=%s", self.config.listen)

    def close(self) -> None:
        self.detach()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
