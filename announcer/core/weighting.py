"""Weight changes, rate-limited. Pure.

With weights on, a prefix's link-bandwidth community follows the summed weight of its
serving local instances, so an instance that joins, fails or ramps up re-announces the
prefix with a new value. A flapping instance must not flood the fabric with UPDATEs: a
prefix's weight changes at most once per ``min_interval``; a change that comes sooner keeps
the announced weight until then (the prefix is re-diffed at that time). Only weight
changes wait: an announce, a withdraw or any other attribute change goes at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from announcer.core.plan import AnnouncedEntry
from announcer.model import Advert, Prefix


def _weight_only(current: Advert, wanted: Advert) -> bool:
    """The two adverts differ in their link bandwidth and nothing else."""
    a, b = current.attributes, wanted.attributes
    if a.link_bandwidth is None or b.link_bandwidth is None or a == b:
        return False
    return replace(current, attributes=replace(a, link_bandwidth=b.link_bandwidth)) == wanted


@dataclass
class WeightLimiter:
    min_interval: float = 5.0
    changed_at: dict[Prefix, float] = field(default_factory=dict)  # last weight change sent
    waiting: dict[Prefix, float] = field(default_factory=dict)  # held back until then
    _pruned: float = float("-inf")

    def limit(
        self, want: dict[Prefix, Advert], announced: Mapping[Prefix, AnnouncedEntry], now: float
    ) -> None:
        """Keep the announced advert in ``want`` for prefixes whose weight changed too
        recently; note the change time of those that may change now."""
        for prefix, wanted in want.items():
            current = announced.get(prefix)
            if not isinstance(current, Advert) or not _weight_only(current, wanted):
                self.waiting.pop(prefix, None)
                continue
            last = self.changed_at.get(prefix)
            if last is not None and now - last < self.min_interval:
                want[prefix] = current
                self.waiting[prefix] = last + self.min_interval
            else:
                self.changed_at[prefix] = now
                self.waiting.pop(prefix, None)
        if len(self.changed_at) > 2 * len(want) + 1024:  # forget changes long past
            self.changed_at = {
                p: t for p, t in self.changed_at.items() if now - t < self.min_interval
            }

    def due(self) -> float | None:
        """When the earliest held-back weight change may go."""
        return min(self.waiting.values(), default=None)
