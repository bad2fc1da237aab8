"""The measurements that need hooks in the loop: reconcile duration, event-to-command
latency, events by source, health-check results and latency, and the warnings and errors
logged, by event name. Cheap; no I/O. :class:`announcer.daemon.metrics.Metrics` adds the
scrape-time collector and the HTTP server.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as CounterMetric

from announcer.daemon.hooks import Hooks
from announcer.events import InstanceChanged, LifecycleEvent
from announcer.health.probes import Probe, ProbeResult
from announcer.spec.checks import CheckTarget, Key

# Reconciles take ~0.1 ms for a handful of routes and seconds for 100k.
RECONCILE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# Coalescing delays commands by up to 0.5 s under load; sync waits at start take longer.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
PROBE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class _LogCounter(logging.Handler):
    """Counts warnings and errors by their event name (errors by kind, for free)."""

    def __init__(self, counter: CounterMetric) -> None:
        super().__init__(logging.WARNING)
        self._counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        head = str(record.msg).partition(" ")[0]
        event = head if _EVENT_NAME.fullmatch(head) else "other"
        self._counter.labels(record.levelname.lower(), event).inc()


class Observations(Hooks):
    """Histograms and counters fed by hooks in the daemon (cheap; no I/O)."""

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
