"""The health monitor: one asyncio task per target, probing on a fixed schedule.

Results are observations: the monitor feeds each target's results through its rise/fall
:class:`~announcer.health.hysteresis.Hysteresis` and emits
:class:`~announcer.events.HealthObserved` when a verdict changes; the core decides what to
announce. The probes themselves live in :mod:`announcer.health.probes`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from announcer.events import HealthObserved
from announcer.health.hysteresis import Hysteresis
from announcer.health.probes import Probe, ProbeResult, run_probe
from announcer.spec.checks import MAX_DETAIL, CheckTarget, Key

log = logging.getLogger("announcer.health")


@dataclass(slots=True)
class ScheduleStats:
    """How far probe starts lag their schedule slots (the load signal for many checks)."""

    BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
    probes: int = 0
    skipped: int = 0  # slots dropped because the loop fell more than an interval behind
    late_total: float = 0.0
    late_max: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * 11)

    def record(self, late: float) -> None:
        self.probes += 1
        self.late_total += late
        self.late_max = max(self.late_max, late)
        ms = late * 1000
        self.histogram[next((i for i, b in enumerate(self.BUCKETS_MS) if ms <= b), 10)] += 1

    def percentile_ms(self, fraction: float) -> float:
        """Upper bound (bucket edge, ms) under which ``fraction`` of the probes started."""
        wanted, seen = fraction * self.probes, 0
        for bound, count in zip((*self.BUCKETS_MS, float("inf")), self.histogram, strict=True):
            seen += count
            if seen >= wanted:
                return float(bound)
        return float("inf")


def safe_detail(text: str) -> str:
    """Printable ASCII only (anything else escaped), at most MAX_DETAIL characters."""
    if not (text.isascii() and text.isprintable()):
        text = ascii(text)[1:-1]
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


class HealthMonitor:
    """Runs one check task per target and emits :class:`HealthObserved` on verdict changes.

    ``set_targets`` is level-triggered and idempotent: targets not given are stopped, new
    ones started, a changed one restarted (keeping its verdict, so editing a check does not
    by itself withdraw anything). Each task waits a random part of its interval first, so a
    restart does not probe every instance at once.
    """

    def __init__(
        self,
        emit: Callable[[HealthObserved], None],
        clock: Callable[[], float] = time.monotonic,
        *,
        probe: Probe | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._emit = emit
        self._clock = clock
        self._probe = probe or run_probe
        self._rng = rng or random.Random()  # noqa: S311 - start-up jitter, not secrecy
        self._targets: dict[Key, CheckTarget] = {}
        self._machines: dict[Key, Hysteresis] = {}
        self._details: dict[Key, str] = {}
        self._running: dict[Key, tuple[CheckTarget, asyncio.Task[None]]] = {}
        self._started = False
        self.stats = ScheduleStats()

    def set_targets(self, targets: Iterable[CheckTarget]) -> None:
        wanted: dict[Key, CheckTarget] = {}
        for target in targets:
            if target.key in wanted and wanted[target.key] != target:
                log.warning("health_target_duplicate key=%s (the last one is checked)", target.key)
            wanted[target.key] = target
        for key in self._targets.keys() - wanted.keys():
            self._machines.pop(key, None)
            self._details.pop(key, None)
        for key, target in wanted.items():
            if self._targets.get(key) != target:
                old = self._machines.get(key)
                verdict = old.verdict if old is not None else None
                self._machines[key] = Hysteresis(target.spec.rise, target.spec.fall, verdict)
        self._targets = wanted
        if self._started:
            self._reconcile()

    def state(self) -> dict[Key, bool | None]:
        return {key: self._machines[key].verdict for key in self._targets}

    def details(self) -> dict[Key, str]:
        """The last probe's outcome per target (for ``plan`` and logs); safe to show."""
        return dict(self._details)

    async def run(self) -> None:
        self._started = True
        self._reconcile()
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            self._started = False
            tasks = [task for _, task in self._running.values()]
            self._running.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _reconcile(self) -> None:
        for key, (target, task) in list(self._running.items()):
            if self._targets.get(key) != target:
                task.cancel()
                del self._running[key]
        for key, target in self._targets.items():
            if key not in self._running:
                task = asyncio.create_task(self._check(target), name=f"health {key}")
                self._running[key] = (target, task)

    async def _check(self, target: CheckTarget) -> None:
        """Probe target every interval, on a fixed schedule, for as long as it is wanted;
        every fast interval while its verdict is settling."""
        interval = target.spec.interval
        await asyncio.sleep(self._rng.uniform(0, interval))
        due = self._clock()
        while True:
            late = self._clock() - due
            if late >= interval:  # the loop fell behind: drop the missed slots, keep the phase
                missed = int(late // interval)
                self.stats.skipped += missed
                due += missed * interval
                late -= missed * interval
            self.stats.record(late)
            result = await self._probe_safely(target)
            entry = self._running.get(target.key)
            if entry is None or entry[0] is not target:
                return  # replaced or removed while probing
            self._observe(target, result)
            settling = self._machines[target.key].settling
            due += target.spec.fast if settling else interval
            await asyncio.sleep(max(0.0, due - self._clock()))

    async def _probe_safely(self, target: CheckTarget) -> ProbeResult:
        """The probe's result; a probe that overruns or raises is a failure, never an error."""
        try:
            async with asyncio.timeout(target.spec.timeout + 1.0):
                return await self._probe(target)
        except TimeoutError:
            return ProbeResult(False, f"{target.spec.kind} probe overran its timeout")
        except Exception as exc:
            log.exception("health_probe_crashed key=%s", target.key)
            return ProbeResult(False, f"{target.spec.kind} probe error {type(exc).__name__}")

    def _observe(self, target: CheckTarget, result: ProbeResult) -> None:
        machine = self._machines[target.key]
        changed = machine.observe(result.ok)
        threshold = machine.rise if result.ok else machine.fall
        detail = safe_detail(f"{result.detail} ({min(machine.streak, threshold)}/{threshold})")
        self._details[target.key] = detail
        if not changed:
            return
        assert machine.verdict is not None
        try:
            self._emit(HealthObserved(target.key, machine.verdict, detail, self._clock()))
        except Exception:
            log.exception("health_emit_failed key=%s", target.key)
