"""Pure statistics over what the traffic client recorded (no I/O)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

Packet = tuple[float, int, str | None]  # (send time, flow index, answering instance)


def flow_instance(answers: Sequence[str | None]) -> str | None:
    """The one instance that answered every packet of a flow; None if any was lost or split."""
    if not answers or any(a is None for a in answers) or len(set(answers)) != 1:
        return None
    return answers[0]


def sticky_fraction(flows: Sequence[Sequence[str | None]]) -> float:
    """Among flows with every packet answered, the fraction answered by exactly one instance."""
    complete = [f for f in flows if f and all(a is not None for a in f)]
    if not complete:
        return 0.0
    return sum(1 for f in complete if len(set(f)) == 1) / len(complete)


def shares(instances: Sequence[str | None], expected: Sequence[str]) -> dict[str, float]:
    counts = Counter(i for i in instances if i is not None)
    total = sum(counts.values()) or 1
    return {name: counts.get(name, 0) / total for name in sorted(expected)}


def ecmp_shares(leaf_of: dict[str, str]) -> dict[str, float]:
    """Each instance's share when every hop splits evenly (instance -> its leaf): the spines
    split among the leaves that serve, each leaf among its own instances. Plain BGP
    multipath knows no weights, so an instance alone behind its leaf takes that leaf's half."""
    per_leaf: Counter[str] = Counter(leaf_of.values())
    return {inst: 1 / len(per_leaf) / per_leaf[leaf] for inst, leaf in sorted(leaf_of.items())}


def max_deviation_from(share: dict[str, float], expected: dict[str, float]) -> float:
    if not expected:
        return 1.0
    return max(abs(share.get(name, 0.0) - want) for name, want in expected.items())


def max_deviation(share: dict[str, float]) -> float:
    if not share:
        return 1.0
    even = 1 / len(share)
    return max(abs(v - even) for v in share.values())


def chi_square(counts: Sequence[int]) -> tuple[float, float]:
    """(statistic, p-value) of counts against a uniform split, k-1 degrees of freedom."""
    total, k = sum(counts), len(counts)
    if k < 2 or total == 0:
        return 0.0, 1.0
    expected = total / k
    stat = sum((c - expected) ** 2 / expected for c in counts)
    return stat, chi2_sf(stat, k - 1)


def chi2_sf(x: float, dof: int) -> float:
    """Survival function of the chi-square distribution (regularised upper gamma Q(dof/2, x/2))."""
    a, z = dof / 2, x / 2
    if z <= 0:
        return 1.0
    if z < a + 1:  # series for the lower gamma
        term = total = 1 / a
        n = a
        while abs(term) > 1e-12 * abs(total):
            n += 1
            term *= z / n
            total += term
        return max(0.0, 1 - total * math.exp(-z + a * math.log(z) - math.lgamma(a)))
    # continued fraction for the upper gamma (Lentz)
    b, c, d = z + 1 - a, 1e300, 1 / (z + 1 - a)
    h = d
    for i in range(1, 200):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1 / d if abs(d) > 1e-300 else 1e300
        c = b + an / c if abs(c) > 1e-300 else 1e-300
        h *= d * c
        if abs(d * c - 1) < 1e-12:
            break
    return min(1.0, math.exp(-z + a * math.log(z) - math.lgamma(a)) * h)


def moved_fraction(before: dict[int, str], after: dict[int, str], removed: set[str]) -> float:
    """Fraction of flows that were on a surviving instance and now answer from another one."""
    surviving = [f for f, inst in before.items() if inst not in removed and f in after]
    if not surviving:
        return 0.0
    return sum(1 for f in surviving if after[f] != before[f]) / len(surviving)


def window_mapping(packets: Sequence[Packet], start: float, end: float) -> dict[int, str]:
    """flow -> the instance that answered most of its packets sent in [start, end)."""
    votes: dict[int, Counter[str]] = {}
    for t, flow, inst in packets:
        if start <= t < end and inst is not None:
            votes.setdefault(flow, Counter())[inst] += 1
    return {flow: c.most_common(1)[0][0] for flow, c in votes.items()}


def outage(packets: Sequence[Packet], trigger: float) -> dict[str, Any]:
    """Loss and how long after the trigger packets were still lost (ms)."""
    lost = [t for t, _, inst in packets if inst is None]
    after = [t for t in lost if t >= trigger]
    return {
        "sent_packets": len(packets),
        "lost_packets": len(lost),
        "lost_before_trigger": len(lost) - len(after),
        "last_loss_ms": round((max(after) - trigger) * 1000) if after else 0,
    }


def rehash_moved(before: dict[int, str], after: dict[int, str], removed: str) -> float:
    return moved_fraction(before, after, {removed})
