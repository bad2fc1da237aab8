"""lab-report.json has the issue's shape; the table and the figures are produced."""

import json

from announcer.lab import report


def results(tmp_path):
    tl = tmp_path / "timeline-graceful_removal.json"
    tl.write_text(json.dumps({"event": "graceful_removal",
                              "packets": [[-1.0, 0, "inst1"], [0.1, 0, None], [1.0, 0, "inst2"]]}))
    shares = {"inst1": 0.25, "inst2": 0.25, "inst3": 0.25, "inst4": 0.25}
    return {
        "scenarios": {
            "convergence": {"pass": True, "convergence_ms": 1200},
            "hashing": {"pass": True, "flows": 2400, "shares": shares, "sticky_fraction": 1.0},
            "graceful_removal": {"pass": True, "convergence_ms": 500, "lost_packets": 40,
                                 "moved_surviving_fraction": 0.0, "timeline": str(tl)},
            "withdraw_before_stop": {"pass": True, "lost_packets": 0,
                                     "drain_to_fabric_stopped_ms": 120,
                                     "graceful": {"community_ms": 90, "lost_packets": 0}},
            "server_failure": {"pass": True, "detection_ms": 300, "lost_packets": 200,
                               "hold_timer": {"detection_ms": 8000}},
            "recovery": {"pass": True, "shares": shares},
            "health_failover": {"pass": True, "detection_ms": 480, "lost_packets": 500,
                                "shares_after": {**shares, "inst2": 0.0}, "rejoin_ms": 1100},
        },
        "versions": {"frr": "8.4.4", "exabgp": "5.0.15", "kernel": "6.1"},
    }


def test_report_shape_and_figures(tmp_path):
    path = report.write_report(results(tmp_path), tmp_path)
    doc = json.loads(path.read_text())
    assert set(doc["scenarios"]) == set(report.SCENARIOS)
    assert doc["scenarios"]["hashing"]["flows"] == 2400
    assert doc["scenarios"]["withdraw_before_stop"]["lost_packets"] == 0
    assert doc["scenarios"]["health_failover"]["detection_ms"] == 480
    assert doc["pass"] is True
    assert set(doc["versions"]) >= {"frr", "exabgp", "kernel"}
    for png in ("shares.png", "failover-timeline.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_a_failed_scenario_fails_the_run_and_shows_in_the_table(tmp_path):
    res = results(tmp_path)
    res["scenarios"]["hashing"] = {"pass": False, "error": "no route"}
    assert report.verdict(res["scenarios"]) is False
    table = report.render_table(res["scenarios"])
    assert "hashing               FAIL  error=no route" in table
    assert "withdraw_before_stop  PASS  lost_packets=0 drain_to_fabric_stopped_ms=120" in table
    assert "graceful: community_ms=90" in table
    assert "health_failover       PASS  detection_ms=480" in table


def test_a_skipped_scenario_does_not_fail_the_run(tmp_path):
    res = results(tmp_path)
    res["scenarios"]["withdraw_before_stop"] = {"pass": None, "skipped": "no control socket"}
    assert report.verdict(res["scenarios"]) is True
    assert "withdraw_before_stop  SKIP  skipped=no control socket" in report.render_table(
        res["scenarios"])
