"""Pure statistics of the lab: shares, stickiness, chi-square, moved flows, outage."""

import pytest

from announcer.lab import stats


def test_flow_instance_and_stickiness():
    assert stats.flow_instance(["a", "a", "a"]) == "a"
    assert stats.flow_instance(["a", "b", "a"]) is None
    assert stats.flow_instance(["a", None]) is None
    flows = [["a", "a"], ["b", "b"], ["a", "b"], ["a", None]]
    assert stats.sticky_fraction(flows) == pytest.approx(2 / 3)  # the lossy flow is not judged


def test_shares_include_silent_instances():
    assert stats.shares(["a", "a", "b", None], ["a", "b", "c"]) == {"a": 2 / 3, "b": 1 / 3, "c": 0}
    assert stats.max_deviation({"a": 0.3, "b": 0.2, "c": 0.25, "d": 0.25}) == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("x", "dof", "p"),
    [(7.815, 3, 0.05), (11.345, 3, 0.01), (3.841, 1, 0.05), (0.584, 3, 0.90), (0.0, 3, 1.0)],
)
def test_chi2_survival_matches_tables(x, dof, p):
    assert stats.chi2_sf(x, dof) == pytest.approx(p, abs=2e-3)


def test_chi_square_of_even_and_skewed_counts():
    assert stats.chi_square([600, 600, 600, 600]) == (0.0, 1.0)
    stat, p = stats.chi_square([1200, 0, 0, 0])
    assert stat == 3600
    assert p < 1e-12


def test_moved_fraction_counts_only_surviving_flows():
    before = {1: "a", 2: "b", 3: "c", 4: "d"}
    after = {1: "b", 2: "b", 3: "d", 4: "d"}
    assert stats.moved_fraction(before, after, {"a"}) == pytest.approx(1 / 3)


def test_window_mapping_and_outage():
    packets = [(0.0, 1, "a"), (0.5, 1, "a"), (1.0, 1, None), (1.2, 1, "b"), (0.9, 2, None)]
    assert stats.window_mapping(packets, 0, 0.8) == {1: "a"}
    assert stats.window_mapping(packets, 1.1, 2) == {1: "b"}
    assert stats.outage(packets, trigger=0.8) == {
        "sent_packets": 5,
        "lost_packets": 2,
        "lost_before_trigger": 0,
        "last_loss_ms": 200,
    }


def test_ecmp_shares_split_per_hop_not_per_instance():
    # four instances, two per leaf: even; one gone: its neighbour takes its leaf's half
    assert stats.ecmp_shares({"a": "l2", "b": "l2", "c": "l3", "d": "l3"}) == dict.fromkeys(
        "abcd", 0.25
    )
    assert stats.ecmp_shares({"a": "l2", "c": "l3", "d": "l3"}) == {"a": 0.5, "c": 0.25, "d": 0.25}
    assert stats.max_deviation_from(
        {"a": 0.52, "b": 0.0, "c": 0.24, "d": 0.24}, {"a": 0.5, "c": 0.25, "d": 0.25}
    ) == pytest.approx(0.02)


def test_stream_figures_from_a_packet_log():
    from announcer.lab.gating import first_loss
    from announcer.lab.streams import loss_figures, movement, tail_lost

    # flow 1 on a, flow 2 on b; at t=3 the event: a goes, flow 1 loses two packets and moves
    # to b; flow 2 stays; the stream runs until t=6
    packets = [(t / 2, 1, "a") for t in range(6)] + [(t / 2, 2, "b") for t in range(13)]
    packets += [(3.0, 1, None), (3.5, 1, None)] + [(t / 2, 1, "b") for t in range(8, 13)]
    assert loss_figures(packets, trigger=3.0) == {
        "lost_packets": 2,
        "sent_packets": 26,
        "last_loss_ms": 500,
    }
    assert first_loss(packets, 2.9) == 3.0
    assert first_loss(packets, 3.6) is None
    assert tail_lost(packets) == 0
    assert tail_lost([*packets, (5.9, 2, None)]) == 1
    assert movement(packets, t0=3.0, removed="a") == 0.0  # flow 2 never moved
    assert movement([(t, f, "c" if f == 2 and t > 4 else i) for t, f, i in packets], 3.0,
                    removed="a") == 1.0  # fmt: skip
