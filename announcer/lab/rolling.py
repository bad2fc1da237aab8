"""Figures of a rolling restart under traffic (pure: no I/O).

One pass restarts the hosts of the anycast instances one after another (a ``Step`` each)
while a stream of many flows runs. Every flow has a *home*: the instance that answered it in
the baseline window before the first step. A packet is *displaced* when it was lost or
answered by another instance than its flow's home.

- A procedure that takes the host out of rotation (drain, a plain restart) excuses the
  displaced packets of the flows at home on that host's instance during that host's step;
  graceful restart excuses nothing: the instance is meant to stay in rotation throughout.
- ``moved_unneeded_fraction``: flows answered by another instance at a moment that is not
  excused (their home was in rotation): what resilient hashing is about.
- ``moved_fraction``: flows answered by another instance at any moment (for a stateful
  service each is a broken connection).
- ``out_of_rotation_ms[server]``: from the first to the last displaced packet of its
  instance's flows during its step, as the client saw them (0: none displaced).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from announcer.lab.stats import Packet, window_mapping


@dataclass(frozen=True)
class Step:
    """One host restarted: when (monotonic, the client's clock) and whose instance."""

    server: str
    instance: str
    start: float
    end: float

    def holds(self, t: float) -> bool:
        return self.start <= t <= self.end


def homes(packets: Sequence[Packet], start: float, window: float) -> dict[int, str]:
    """flow -> the instance that answered most of its packets in the window before start."""
    return window_mapping(packets, start - window, start)


def _excused(t: float, home: str, steps: Sequence[Step]) -> bool:
    return any(s.instance == home and s.holds(t) for s in steps)


def _spans(displaced: dict[str, list[float]], steps: Sequence[Step]) -> dict[str, int]:
    spans = {}
    for step in steps:
        times = [t for t in displaced.get(step.instance, []) if step.holds(t)]
        spans[step.server] = round((max(times) - min(times)) * 1000) if times else 0
    return spans


def rolling_figures(packets: Sequence[Packet], steps: Sequence[Step], window: float,
                    excuse_own: bool) -> dict[str, Any]:  # fmt: skip
    """The figures of one pass (module docstring); ``window``: the baseline's length (s)
    before the first step; ``excuse_own``: the procedure takes each host out of rotation."""
    if not steps:
        raise ValueError("rolling_figures: no steps")
    home = homes(packets, steps[0].start, window)
    moved: set[int] = set()
    unneeded: set[int] = set()
    displaced: dict[str, list[float]] = {}
    lost_by = dict.fromkeys((s.server for s in steps), 0)
    lost = 0
    for t, flow, inst in packets:
        if inst is None:
            lost += 1
            for step in steps:
                lost_by[step.server] += step.holds(t)
        mine = home.get(flow)
        if mine is None or inst == mine:
            continue
        displaced.setdefault(mine, []).append(t)
        if inst is not None:
            moved.add(flow)
            if not (excuse_own and _excused(t, mine, steps)):
                unneeded.add(flow)
    flows = max(1, len(home))
    return {
        "flows": len(home), "sent_packets": len(packets), "lost_packets": lost,
        "lost_by_server": lost_by,
        "moved_fraction": round(len(moved) / flows, 4),
        "moved_unneeded_fraction": round(len(unneeded) / flows, 4),
        "out_of_rotation_ms": _spans(displaced, steps),
        "total_s": round(steps[-1].end - steps[0].start, 1),
    }  # fmt: skip


def covered(packets: Sequence[Packet], steps: Sequence[Step]) -> bool:
    """The stream ran from before the first step until after the last one."""
    if not packets or not steps:
        return False
    times = [t for t, _, _ in packets]
    return min(times) < steps[0].start and max(times) > steps[-1].end


def absent_ms(samples: Sequence[tuple[float, bool]]) -> int:
    """How long something polled was absent (ms): from each look that found it missing to
    the next look (time-ordered (when, present) samples)."""
    total = 0.0
    for (t, present), (later, _) in pairwise(samples):
        if not present:
            total += later - t
    return round(total * 1000)
