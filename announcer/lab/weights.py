"""Weighted ECMP in the lab, the pure part: which kernel next-hop weights the fabric should
install for an anycast IP, and which share of the flows each instance should then get.

FRR (8.4) weighs the paths of a multipath route by their link-bandwidth communities:
``floor(bandwidth x 100 / total)`` each (at least 1), which zebra installs as the kernel's
nexthop weights (docs/weighted.md). In the lab every instance counts one unit: a leaf
weighs its servers by their local instance counts (the hosts' announcers sum their serving
instances), a spine its leaves by the sum over the leaf's servers (the leaves send
``set extcommunity bandwidth cumulative``). With weights off every weight is 1. A hop with a
single path has no weights (1). Leaf1, the client's leaf, splits between the spines by
whatever each spine passes on; both spines split alike, so it does not change the shares.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

Hops = dict[str, dict[str, int]]  # router -> next-hop node -> kernel weight


def frr_weights(bandwidth: Mapping[str, int]) -> dict[str, int]:
    """FRR's nexthop weights for paths of these bandwidths (any unit); one path: 1."""
    if any(v <= 0 for v in bandwidth.values()):
        raise ValueError(f"bandwidths must be positive: {dict(bandwidth)}")
    if len(bandwidth) <= 1:
        return dict.fromkeys(bandwidth, 1)
    total = sum(bandwidth.values())
    return {k: max(1, v * 100 // total) for k, v in bandwidth.items()}


def hop_weights(where: Mapping[str, str], leaf_of: Mapping[str, str], spines: Sequence[str],
                weighted: bool = True) -> Hops:  # fmt: skip
    """Per router, the weights of its next hops towards the serving instances ``where``
    (instance -> server), one unit each; ``weighted`` False: plain ECMP, 1 each."""
    per_server = Counter(where.values())
    per_leaf: Counter[str] = Counter()
    for server, count in per_server.items():
        per_leaf[leaf_of[server]] += count
    hops: Hops = {}
    for leaf in per_leaf:
        units = {s: n for s, n in per_server.items() if leaf_of[s] == leaf}
        hops[leaf] = frr_weights(units) if weighted else dict.fromkeys(units, 1)
    for spine in spines:
        hops[spine] = frr_weights(per_leaf) if weighted else dict.fromkeys(per_leaf, 1)
    return hops


def expected_shares(where: Mapping[str, str], leaf_of: Mapping[str, str], hops: Hops,
                    spine: str) -> dict[str, float]:  # fmt: skip
    """Each instance's share of the flows when every hop splits by ``hops`` (the spines all
    alike: ``spine``'s weights) and a server evenly over its local instances."""
    per_server = Counter(where.values())

    def part(weights: Mapping[str, int], key: str) -> float:
        return weights[key] / sum(weights.values())

    return {inst: part(hops[spine], leaf_of[server]) * part(hops[leaf_of[server]], server)
            / per_server[server] for inst, server in sorted(where.items())}  # fmt: skip


def per_host(shares: Mapping[str, float], where: Mapping[str, str]) -> dict[str, float]:
    """Instance shares summed per server."""
    found: dict[str, float] = {}
    for inst, share in shares.items():
        found[where[inst]] = found.get(where[inst], 0.0) + share
    return dict(sorted(found.items()))


def max_deviation_from_even(shares: Mapping[str, float]) -> float:
    """The largest distance of a share from 1/N (N: the number of shares)."""
    if not shares:
        return 1.0
    even = 1 / len(shares)
    return max(abs(v - even) for v in shares.values())


def hops_match(have: Mapping[str, Mapping[str, int]], want: Hops) -> bool:
    """Every router of ``want`` has exactly those next hops with those weights."""
    return all(dict(have.get(router, {})) == weights for router, weights in want.items())


def instances_per_host(where: Mapping[str, str]) -> dict[str, int]:
    return dict(sorted(Counter(where.values()).items()))
