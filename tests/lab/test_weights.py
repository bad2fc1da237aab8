"""Weighted ECMP in the lab, the pure part: the kernel weights FRR makes of the instance
counts hop by hop, the shares they give, and the figures of the weighted scenario."""

import pytest
import yaml

from announcer.lab import stats
from announcer.lab.namespaces import LabError
from announcer.lab.weighted import failover_figures, schema_errors, weights_text
from announcer.lab.weights import (
    expected_shares,
    frr_weights,
    hop_weights,
    hops_match,
    instances_per_host,
    max_deviation_from_even,
    per_host,
)

# the lab's weighted service: 1, 2, 3 and 1 local instances on servers 3-6
WHERE = {"inst1": "server3", "inst2": "server4", "inst2b": "server4", "inst3": "server5",
         "inst3b": "server5", "inst3c": "server5", "inst4": "server6"}  # fmt: skip
LEAF_OF = {"server3": "leaf2", "server4": "leaf2", "server5": "leaf3", "server6": "leaf3"}
SPINES = ["spine1", "spine2"]


@pytest.mark.parametrize(
    ("bandwidth", "weights"),
    [
        ({"a": 1, "b": 3}, {"a": 25, "b": 75}),  # docs/weighted.md: 1:3 -> 25/75
        ({"a": 1, "b": 2}, {"a": 33, "b": 66}),  # 1 % granularity, floor
        ({"a": 3, "b": 4}, {"a": 42, "b": 57}),
        ({"a": 1, "b": 1000}, {"a": 1, "b": 99}),  # never 0
        ({"a": 5}, {"a": 1}),  # one path: no weights
    ],
)
def test_frr_weights(bandwidth, weights):
    assert frr_weights(bandwidth) == weights


def test_frr_weights_refuse_what_is_no_bandwidth():
    with pytest.raises(ValueError, match="positive"):
        frr_weights({"a": 0, "b": 1})


def test_hop_weights_are_what_the_lab_measured():
    """The weights the lab's leaves and spines installed (run 20261204-205523)."""
    assert hop_weights(WHERE, LEAF_OF, SPINES) == {
        "leaf2": {"server3": 33, "server4": 66},
        "leaf3": {"server5": 75, "server6": 25},
        "spine1": {"leaf2": 42, "leaf3": 57},
        "spine2": {"leaf2": 42, "leaf3": 57},
    }
    assert hop_weights(WHERE, LEAF_OF, SPINES, weighted=False) == {
        "leaf2": {"server3": 1, "server4": 1}, "leaf3": {"server5": 1, "server6": 1},
        "spine1": {"leaf2": 1, "leaf3": 1}, "spine2": {"leaf2": 1, "leaf3": 1},
    }  # fmt: skip


def test_weighted_shares_are_near_even_and_unweighted_skewed_per_instance_only():
    weighted = expected_shares(WHERE, LEAF_OF, hop_weights(WHERE, LEAF_OF, SPINES), "spine1")
    assert sum(weighted.values()) == pytest.approx(1)
    assert max_deviation_from_even(weighted) < 0.002  # FRR's 1 % steps: 0.1414 / 0.1439
    plain = hop_weights(WHERE, LEAF_OF, SPINES, weighted=False)
    unweighted = expected_shares(WHERE, LEAF_OF, plain, "spine1")
    assert unweighted["inst1"] == pytest.approx(0.25)
    assert unweighted["inst3b"] == pytest.approx(1 / 12)
    assert max_deviation_from_even(unweighted) == pytest.approx(0.25 - 1 / 7)
    assert per_host(unweighted, WHERE) == pytest.approx(dict.fromkeys(LEAF_OF, 0.25))


def test_one_instance_less_rebalances_every_hop():
    without = {k: v for k, v in WHERE.items() if k != "inst3b"}
    hops = hop_weights(without, LEAF_OF, SPINES)
    assert hops["leaf3"] == {"server5": 66, "server6": 33}
    assert hops["spine1"] == {"leaf2": 50, "leaf3": 50}
    assert max_deviation_from_even(expected_shares(without, LEAF_OF, hops, "spine1")) < 0.002


def test_hops_match_wants_every_router_exactly():
    want = {"leaf2": {"server3": 33, "server4": 66}}
    assert hops_match({"leaf2": {"server3": 33, "server4": 66}, "leaf1": {}}, want)
    assert not hops_match({"leaf2": {"server3": 1, "server4": 1}}, want)
    assert not hops_match({}, want)


def test_instances_per_host():
    assert instances_per_host(WHERE) == {"server3": 1, "server4": 2, "server5": 3, "server6": 1}


def test_weights_text_sets_only_the_switch():
    text = "exabgp:\n  local_as: 65105\nweights:\n  enabled: false\n  unit_bytes_per_second: 1\n"
    doc = yaml.safe_load(weights_text(text, True))
    assert doc == {"exabgp": {"local_as": 65105},
                   "weights": {"enabled": True, "unit_bytes_per_second": 1}}  # fmt: skip
    assert yaml.safe_load(weights_text("policy: {}\n", False))["weights"] == {"enabled": False}
    with pytest.raises(LabError, match="not a mapping"):
        weights_text("- a list\n", True)


def packets(lost_at: list[float], moved: int) -> list[stats.Packet]:
    """10 flows at 10 packets/s for 4 s, event at t=2: inst3b's flows (0, 1) lost at the given
    times then answered by inst3; ``moved`` surviving flows change instance after t=2.5."""
    found: list[stats.Packet] = []
    for step in range(40):
        t = step / 10
        for flow in range(10):
            home = "inst3b" if flow < 2 else f"inst{flow}"
            if flow < 2 and t >= 2:
                found.append((t, flow, None if t in lost_at else "inst3"))
            elif 2 <= flow < 2 + moved and t >= 2.5:
                found.append((t, flow, "inst9"))
            else:
                found.append((t, flow, home))
    return found


def test_failover_figures_count_from_the_first_loss():
    after = {"shares": {"inst1": 0.5, "inst3b": 0.0, "inst4": 0.5}, "flows": 1200,
             "sticky_fraction": 1.0, "answered_fraction": 1.0}  # fmt: skip
    seen = {"host_group_ms": 400, "leaf_weights_ms": 500, "spine_weights_ms": 600}
    fig = failover_figures("inst3b", packets([2.1, 2.2], moved=2), 1.9, seen, after, 700)
    assert (fig["host_group_ms"], fig["spine_weights_ms"], fig["convergence_ms"]) == (200, 400, 400)
    assert (fig["lost_packets"], fig["outage_ms"], fig["tail_lost"]) == (4, 100, 0)
    assert fig["moved_surviving_fraction"] == 0.25  # 2 of the 8 surviving flows
    assert fig["pass"] is True
    assert fig["rejoin_ms"] == 700
    still = {**after, "shares": {**after["shares"], "inst3b": 0.01}}
    assert failover_figures("inst3b", packets([2.1], 0), 1.9, seen, still, 0)["pass"] is False


def test_the_weighted_schema_wants_unequal_hosts_and_the_failover():
    ok = {"flows": 3000, "instances_per_host": {"a": 1, "b": 2}, "shares": {"x": 0.5, "y": 0.3,
          "z": 0.2}, "max_deviation": 0.01, "chi_square_p": 0.5, "unweighted_shares": {},
          "unweighted_max_deviation": 0.1,
          "failover": {"convergence_ms": 1, "lost_packets": 0, "moved_surviving_fraction": 0,
                       "shares_after": {}, "max_deviation_after": 0}}  # fmt: skip
    assert schema_errors(ok) == []
    assert schema_errors({"error": "lab down"}) == []
    even = {**ok, "instances_per_host": {"a": 1, "b": 1, "c": 1}}
    assert schema_errors(even) == ["instances_per_host {'a': 1, 'b': 1, 'c': 1}: the counts "
                                   "must differ"]  # fmt: skip
    assert schema_errors({**ok, "failover": {}})[0] == "failover: no convergence_ms"
