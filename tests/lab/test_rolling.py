"""Figures of a rolling restart (announcer.lab.rolling): homes, displaced packets, what is
excused while a host is out of rotation by design, and what is not."""

import pytest

from announcer.lab.rolling import Step, absent_ms, covered, homes, rolling_figures

STEPS = [Step("server3", "inst1", 10.0, 20.0), Step("server4", "inst2", 20.0, 30.0)]


def stream(answer, flows=(0, 1, 2, 3), until=35.0):
    """Packets every 0.5 s from t=7 for each flow; answer(t, flow) -> instance or None."""
    packets = []
    t = 7.0
    while t < until:
        packets += [(t, f, answer(t, f)) for f in flows]
        t += 0.5
    return packets


HOME = {0: "inst1", 1: "inst1", 2: "inst2", 3: "inst3"}


def test_nothing_moves_nothing_is_lost():
    f = rolling_figures(stream(lambda t, f: HOME[f]), STEPS, 2.0, excuse_own=True)
    assert f["flows"] == 4
    assert f["lost_packets"] == 0
    assert f["moved_fraction"] == 0.0
    assert f["moved_unneeded_fraction"] == 0.0
    assert f["out_of_rotation_ms"] == {"server3": 0, "server4": 0}
    assert f["lost_by_server"] == {"server3": 0, "server4": 0}
    assert f["total_s"] == 20.0


def drained(t, f):
    """inst1's flows on inst2 while server3 is out (12-15 s), inst2's on inst1 (22-26 s)."""
    if HOME[f] == "inst1" and 12.0 <= t <= 15.0:
        return "inst2"
    if HOME[f] == "inst2" and 22.0 <= t <= 26.0:
        return "inst1"
    return HOME[f]


def test_a_drain_moves_only_the_drained_hosts_flows():
    f = rolling_figures(stream(drained), STEPS, 2.0, excuse_own=True)
    assert f["moved_fraction"] == 0.75  # flows 0, 1 (inst1) and 2 (inst2) moved, 3 did not
    assert f["moved_unneeded_fraction"] == 0.0  # each while its own host was out
    assert f["out_of_rotation_ms"] == {"server3": 3000, "server4": 4000}
    assert f["lost_packets"] == 0


def test_graceful_restart_excuses_nothing():
    f = rolling_figures(stream(drained), STEPS, 2.0, excuse_own=False)
    assert f["moved_unneeded_fraction"] == 0.75


def test_a_flow_moved_while_its_home_was_in_rotation_is_unneeded():
    def rehashed(t, f):
        # server3's restart also moved flow 3 (inst3, on a host nobody touched)
        return "inst4" if f == 3 and 12.0 <= t <= 13.0 else drained(t, f)

    f = rolling_figures(stream(rehashed), STEPS, 2.0, excuse_own=True)
    assert f["moved_unneeded_fraction"] == 0.25


def test_losses_count_per_host_step_and_mark_it_out_of_rotation():
    def plain(t, f):
        return None if HOME[f] == "inst1" and 12.0 <= t < 12.6 else HOME[f]

    f = rolling_figures(stream(plain), STEPS, 2.0, excuse_own=True)
    assert f["lost_packets"] == 4  # 2 flows x 2 packets (12.0, 12.5)
    assert f["lost_by_server"] == {"server3": 4, "server4": 0}
    assert f["out_of_rotation_ms"]["server3"] == 500
    assert f["moved_fraction"] == 0.0


def test_homes_are_the_baseline_windows_majority():
    packets = [(8.0, 0, "a"), (8.5, 0, "a"), (9.0, 0, "b"), (9.5, 1, None), (10.5, 1, "c")]
    assert homes(packets, 10.0, 2.0) == {0: "a"}


def test_covered_and_errors():
    assert covered(stream(lambda t, f: HOME[f]), STEPS)
    assert not covered(stream(lambda t, f: HOME[f], until=29.0), STEPS)
    assert not covered([], STEPS)
    with pytest.raises(ValueError, match="no steps"):
        rolling_figures([], [], 2.0, excuse_own=True)


def test_absent_ms_sums_the_looks_that_found_it_missing():
    assert absent_ms([(0.0, True), (0.1, False), (0.25, False), (0.3, True), (0.4, True)]) == 200
    assert absent_ms([(0.0, True)]) == 0
    assert absent_ms([]) == 0
