"""rolling_upgrade's verdict, findings and readiness rule (announcer.lab.upgrade, pure parts)."""

import pytest

from announcer.lab.namespaces import LabError
from announcer.lab.upgrade import (
    VARIANTS,
    entry,
    findings,
    restart_stack_timeline,
    schema_errors,
    serving,
    target_met,
)

HOSTS = ["server3", "server4"]


def variant(lost=0, unneeded=0.0, **extra):
    return {"lost_packets": lost, "lost_by_server": {"server3": lost, "server4": 0},
            "moved_unneeded_fraction": unneeded, "moved_fraction": 1.0,
            "out_of_rotation_ms": dict.fromkeys(HOSTS, 0), "total_s": 10.0,
            "leaf_fib_out_ms": dict.fromkeys(HOSTS, 0), "own_route_out_ms": dict.fromkeys(HOSTS, 0),
            "steps": {}, **extra}  # fmt: skip


def test_the_variants_run_plain_first_and_only_graceful_restart_excuses_nothing():
    assert [v.name for v in VARIANTS] == ["plain", "drain", "graceful_restart"]
    assert [v.excuse_own for v in VARIANTS] == [True, True, False]
    assert [v.graceful_restart for v in VARIANTS] == [False, True, True]


def test_pass_gates_drain_and_graceful_restart_on_lost_packets_only():
    ok = entry(
        {"drain": variant(), "graceful_restart": variant(), "plain": variant(lost=900)}, HOSTS
    )
    assert ok["pass"] is True  # plain is the contrast
    assert ok["targets_met"] == {"drain": True, "graceful_restart": True}
    assert ok["findings"] == []
    lost = entry(
        {"drain": variant(), "graceful_restart": variant(lost=1), "plain": variant()}, HOSTS
    )
    assert lost["pass"] is False
    assert lost["findings"] == [
        "graceful_restart: 1 packets lost (per host: {'server3': 1, 'server4': 0})"
    ]
    failed = entry({"drain": {"error": "restart-stack failed"}, "graceful_restart": variant(),
                    "plain": variant()}, HOSTS)  # fmt: skip
    assert failed["pass"] is False
    assert failed["findings"] == ["drain: restart-stack failed"]


def test_unneeded_moves_miss_the_target_but_not_the_gate():
    moved = entry({"drain": variant(), "graceful_restart": variant(unneeded=0.43),
                   "plain": variant()}, HOSTS)  # fmt: skip
    assert moved["pass"] is True
    assert moved["targets_met"]["graceful_restart"] is False
    assert target_met(variant()) is True
    assert target_met({"error": "x"}) is False
    assert "43.0% of the flows were answered by another instance" in moved["findings"][0]


def test_an_end_of_rib_before_anything_is_announced_is_named_with_its_evidence():
    steps = {
        "server3": {"end_of_rib_after_start_ms": 13, "announced_after_start_ms": 180},
        "server4": {"end_of_rib_after_start_ms": 200, "announced_after_start_ms": 180},
    }
    graceful = variant(steps=steps, leaf_fib_out_ms={"server3": 170, "server4": 0},
                       own_route_out_ms={"server3": 160, "server4": 0})  # fmt: skip
    found = findings({"drain": variant(), "graceful_restart": graceful, "plain": variant()})
    assert found == [
        "graceful_restart server3: the new announcer sent End-of-RIB 13 ms after it started, "
        "before it announced anything again (180 ms), so the leaf dropped the routes it kept "
        "as stale: no path via server3 for 170 ms, no route at all to the instance's own "
        "address for 160 ms"
    ]


def test_a_drain_that_withdraws_single_homed_addresses_is_named():
    drain = variant(own_route_out_ms={"server3": 3800, "server4": 0})
    found = findings({"drain": drain, "graceful_restart": variant(), "plain": variant()})
    assert found == [
        "drain: the instances' own (single-homed) addresses had no route at their "
        "leaf for {'server3': 3800, 'server4': 0} ms: a drain keeps traffic whole "
        "only where another path exists"
    ]


def status(pid=2, neighbors=None, rows=None, in_flight=0):
    return {"stats": {"pid": pid, "in_flight": in_flight,
                      "neighbors": {"10.1.3.0": "up"} if neighbors is None else neighbors},
            "decisions": rows if rows is not None else [
                {"prefix": "10.200.0.1/32", "announce": True, "announced": True,
                 "reason": "host_route"}]}  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "ready"),
    [
        (status(), True),
        (status(pid=1), False),  # still the old announcer
        ({}, False),  # not answering (restarting)
        (status(neighbors={"10.1.3.0": "up", "fd00:1:3::1": "connected"}), False),
        (status(neighbors={}), False),
        (status(rows=[{"announce": False, "announced": False, "reason": "check_pending"}]), False),
        (status(rows=[{"announce": True, "announced": False, "reason": "host_route"}]), False),
        (status(in_flight=2), False),
    ],
)
def test_serving_means_a_new_announcer_with_everything_decided_and_announced(doc, ready):
    assert serving(doc, old_pid=1) is ready


def test_restart_stack_timeline_is_its_last_line():
    out = 'stopped\n{"mode": "drain", "timeline": {"drain_requested": 0.01, "rejoined": 9.5}}\n'
    assert restart_stack_timeline(out) == {"drain_requested": 0.01, "rejoined": 9.5}
    with pytest.raises(LabError, match="no JSON timeline"):
        restart_stack_timeline("restart-stack failed\n")


def test_schema_errors_of_a_family_result():
    good = {
        "hosts": HOSTS,
        "variants": {v: variant() for v in ("drain", "graceful_restart", "plain")},
    }
    assert schema_errors(good) == []
    assert schema_errors({"error": "boom"}) == []
    assert schema_errors({"hosts": HOSTS}) == ["no variants"]
    bad = {"hosts": HOSTS, "variants": {"drain": {"error": "x"}, "plain": {"lost_packets": 0}}}
    assert schema_errors(bad) == [
        "variants.graceful_restart: missing",
        "variants.plain: no moved_unneeded_fraction",
        "variants.plain: no out_of_rotation_ms",
        "variants.plain: no total_s",
        "variants.plain.out_of_rotation_ms: hosts [], expected ['server3', 'server4']",
    ]
