"""Prometheus metrics: what the running announcer knows, read at scrape time, plus the few
measurements that need hooks in the loop.

- :class:`AnnouncerCollector` turns a :class:`Snapshot` of the running announcer into metric
  families at scrape time. The HTTP server answers in its own thread, but the announcer's
  tables belong to the event loop, so the snapshot is taken *in the loop* (handed over with
  ``call_soon_threadsafe``) under a deadline: a loop that does not answer makes the scrape
  say ``announcer_loop_responsive 0`` instead of hanging or reading torn state.
- :class:`Observations` holds what cannot be read after the fact: reconcile duration,
  event-to-command latency, events by source, health-check results and latency, and the
  warnings and errors logged, by event name.

Only counts, reason words, state words, source names and BGP peer addresses are exported:
no configuration value (Marathon credentials, URLs, labels) and no prefix (bounded
cardinality: a label per announced /32 would make a 100k-series scrape).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, start_http_server
from prometheus_client import Counter as CounterMetric
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from announcer.checks import Key
from announcer.config import MetricsConfig
from announcer.core.damping import Damper
from announcer.core.plan import AnnouncedTable
from announcer.core.policy import Decision, Policy
from announcer.core.world import World
from announcer.events import InstanceChanged, LifecycleEvent
from announcer.health import CheckTarget, Probe, ProbeResult
from announcer.model import Prefix

log = logging.getLogger(__name__)

SNAPSHOT_TIMEOUT_SECONDS = 5.0
# Reconciles take ~0.1 ms for a handful of routes and seconds for 100k.
RECONCILE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# Coalescing delays commands by up to 0.5 s under load; sync waits at start take longer.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
PROBE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


# --------------------------------------------------------------------------- what we read


class _Stats(Protocol):
    @property
    def reconciles(self) -> int: ...
    @property
    def resyncs(self) -> int: ...
    @property
    def overruns(self) -> int: ...
    @property
    def commands(self) -> int: ...
    @property
    def failures(self) -> int: ...
    @property
    def last_reconcile_seconds(self) -> float: ...
    @property
    def neighbors(self) -> Mapping[str, str]: ...


class _Health(Protocol):
    def state(self) -> Mapping[Key, bool | None]: ...


class _Channel(Protocol):
    @property
    def in_flight(self) -> int: ...


class Observable(Protocol):
    """The parts of the running ``Announcer`` the collector reads (read-only)."""

    @property
    def world(self) -> World: ...
    @property
    def decisions(self) -> Mapping[Prefix, Decision]: ...
    @property
    def table(self) -> AnnouncedTable: ...
    @property
    def stats(self) -> _Stats: ...
    @property
    def damper(self) -> Damper: ...
    @property
    def held_withdraws(self) -> int: ...
    @property
    def policy(self) -> Policy: ...
    @property
    def health(self) -> _Health: ...
    @property
    def channel(self) -> _Channel: ...


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
    decisions = Counter((d.reason, d.announce) for d in announcer.decisions.values())
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


# --------------------------------------------------------------------------- hooks


class _LogCounter(logging.Handler):
    """Counts warnings and errors by their event name (errors by kind, for free)."""

    def __init__(self, counter: CounterMetric) -> None:
        super().__init__(logging.WARNING)
        self._counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        head = str(record.msg).partition(" ")[0]
        event = head if _EVENT_NAME.fullmatch(head) else "other"
        self._counter.labels(record.levelname.lower(), event).inc()


class Observations:
    """Histograms and counters fed by hooks in runtime.py (cheap; no I/O)."""

    def __init__(
        self, registry: CollectorRegistry, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.clock = clock
        self._pending_since: float | None = None
        self.reconcile_seconds = Histogram(
            "announcer_reconcile_duration_seconds",
            "Time one reconcile took (decide, diff, hand commands to the channel).",
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        )
        self.event_to_command = Histogram(
            "announcer_event_to_command_seconds",
            "From the arrival of the oldest event a reconcile absorbed to its commands being "
            "handed to the ExaBGP channel (only reconciles that sent commands).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.events_total = CounterMetric(
            "announcer_events",
            "Observations processed, by source (kernel, docker, marathon, files, health, "
            "drain, control).",
            ["source"],
            registry=registry,
        )
        self.health_checks = CounterMetric(
            "announcer_health_checks",
            "Health probe results by check kind and result (pass, fail).",
            ["kind", "result"],
            registry=registry,
        )
        self.health_seconds = Histogram(
            "announcer_health_check_duration_seconds",
            "Health probe latency by check kind.",
            ["kind"],
            buckets=PROBE_BUCKETS,
            registry=registry,
        )
        self.log_events = CounterMetric(
            "announcer_log_events",
            "Warnings and errors logged, by level and event name (errors by kind).",
            ["level", "event"],
            registry=registry,
        )
        self._log_counter = _LogCounter(self.log_events)
        logging.getLogger("announcer").addHandler(self._log_counter)

    def events(self, source: str, count: int = 1) -> None:
        """``count`` observations from ``source`` were applied to the world."""
        if count <= 0:
            return
        self.events_total.labels(source).inc(count)
        if self._pending_since is None:
            self._pending_since = self.clock()

    def lifecycle(self, event: LifecycleEvent) -> None:
        """One observation from a lifecycle source (counted under the source's name)."""
        self.events(event.instance.source if isinstance(event, InstanceChanged) else event.source)

    def commands_sent(self, count: int) -> None:
        """A reconcile handed ``count`` commands to the channel: everything observed before
        it is now reflected; the oldest such event's wait is one latency sample."""
        if count and self._pending_since is not None:
            self.event_to_command.observe(max(0.0, self.clock() - self._pending_since))
        self._pending_since = None

    def reconciled(self, seconds: float) -> None:
        self.reconcile_seconds.observe(seconds)

    def health_result(self, key: Key, healthy: bool, latency: float, kind: str = "any") -> None:
        """One probe of instance ``key`` ended (``key`` is not a label: unbounded)."""
        del key
        self.health_checks.labels(kind, "pass" if healthy else "fail").inc()
        self.health_seconds.labels(kind).observe(max(0.0, latency))

    def timed_probe(self, probe: Probe) -> Probe:
        """``probe``, reporting each result and its latency to :meth:`health_result`."""

        async def timed(target: CheckTarget) -> ProbeResult:
            started = self.clock()
            result = await probe(target)
            elapsed = self.clock() - started
            self.health_result(target.key, result.ok, elapsed, str(target.spec.kind))
            return result

        return timed

    def detach(self) -> None:
        logging.getLogger("announcer").removeHandler(self._log_counter)


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
