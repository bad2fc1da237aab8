"""lab-report.json has the issue's shape for both families; the table and the figures are
produced (a row per family, a panel or column per family)."""

import json

import pytest

from announcer.lab import report
from announcer.lab.family import combine

SHARES = {"inst1": 0.25, "inst2": 0.25, "inst3": 0.25, "inst4": 0.25}


def figures(timeline, shift: int, upgrade_timeline=None) -> dict[str, dict]:
    """One family's figures of every scenario (shift makes IPv6 differ from IPv4)."""
    return {
        "convergence": {"pass": True, "convergence_ms": 1200 + shift},
        "hashing": {"pass": True, "flows": 2400, "shares": SHARES, "sticky_fraction": 1.0},
        "graceful_removal": {"pass": True, "convergence_ms": 500 + shift, "lost_packets": 40,
                             "moved_surviving_fraction": 0.0, "timeline": str(timeline)},
        "withdraw_before_stop": {"pass": True, "lost_packets": 0,
                                 "drain_to_fabric_stopped_ms": 120 + shift,
                                 "graceful": {"community_ms": 90 + shift, "lost_packets": 0}},
        "server_failure": {"pass": True, "detection_ms": 300 + shift, "lost_packets": 200,
                           "hold_timer": {"detection_ms": 8000 + shift}},
        "recovery": {"pass": True, "shares": SHARES},
        "health_failover": {"pass": True, "detection_ms": 480 + shift, "lost_packets": 500,
                            "shares_after": {**SHARES, "inst2": 0.0}, "rejoin_ms": 1100},
        "weighted": weighted(shift),
        "deprefer": {"pass": True, "flows": 1200, "unhealthy_host": "server3",
                     "share_of_unhealthy_host": 0.0, "answered_fraction_all_unhealthy": 1.0,
                     "deprefer_ms": 600 + shift,
                     "healthy": {"shares": {"dep3": 0.33, "dep5": 0.34, "dep6": 0.33}},
                     "one_host_unhealthy": {"shares": {"dep3": 0.0, "dep5": 0.5, "dep6": 0.5}},
                     "all_unhealthy": {"shares": {"dep3": 0.3, "dep5": 0.4, "dep6": 0.3}}},
        "rolling_upgrade": {"pass": True, "hosts": HOSTS, "variants": {
            "drain": variant(0, 0.0, 6000 + shift, 38.0, upgrade_timeline),
            "graceful_restart": variant(0, 0.0, 0, 19.0),
            "plain": variant(3, 0.0, 1900 + shift, 16.0)}},
    }  # fmt: skip


HOSTS = ["server3", "server4", "server5", "server6"]
WEIGHTED_HOSTS = {"server3": 1, "server4": 2, "server5": 3, "server6": 1}


def weighted(shift: int) -> dict:
    """One family's weighted figures: 7 instances on 4 hosts, shares with weights on/off."""
    names = ["inst1", "inst2", "inst2b", "inst3", "inst3b", "inst3c", "inst4"]
    off = dict(zip(names, [0.25, 0.125, 0.125, 0.083, 0.083, 0.084, 0.25], strict=True))
    return {
        "pass": True,
        "flows": 3000,
        "instances_per_host": WEIGHTED_HOSTS,
        "shares": dict.fromkeys(names, 1 / 7),
        "max_deviation": 0.01,
        "chi_square_p": 0.7,
        "unweighted_shares": off,
        "unweighted_max_deviation": 0.107,
        "failover": {
            "convergence_ms": 270 + shift,
            "lost_packets": 70,
            "moved_surviving_fraction": 0.1,
            "max_deviation_after": 0.02,
            "shares_after": {**dict.fromkeys(names, 1 / 6), "inst3b": 0.0},
        },
    }


def variant(lost, unneeded, out_ms, total_s, timeline=None) -> dict:
    """One rolling_upgrade variant's figures (the keys issue 18 asks for)."""
    return {"lost_packets": lost, "moved_unneeded_fraction": unneeded,
            "out_of_rotation_ms": dict.fromkeys(HOSTS, out_ms), "total_s": total_s,
            "moved_fraction": 1.0 if out_ms else 0.0,
            **({"timeline": str(timeline)} if timeline else {})}  # fmt: skip


def results(tmp_path):
    per = {}
    for family, shift in (("ipv4", 0), ("ipv6", 7)):
        tl = tmp_path / f"timeline-graceful_removal-{family}.json"
        tl.write_text(json.dumps({"event": "graceful_removal", "family": family, "packets": [
            [-1.0, 0, "inst1"], [0.1, 0, None], [1.0, 0, "inst2"]]}))  # fmt: skip
        up = tmp_path / f"timeline-rolling_upgrade_drain-{family}.json"
        up.write_text(
            json.dumps(
                {
                    "event": "rolling_upgrade_drain",
                    "family": family,
                    "packets": [[-1.0, 0, "inst1"], [5.0, 0, "inst2"]],
                }
            )
        )
        per[family] = figures(tl, shift, up)
    return {
        "scenarios": {name: combine({f: per[f][name] for f in per}) for name in per["ipv4"]},
        "versions": {"frr": "8.4.4", "exabgp": "5.0.15", "kernel": "6.1"},
        "exabgp_launcher": [
            {
                "mode": "accelerated",
                "version": "5.0.15",
                "starts": 30,
                "fixes": "poll_while_queued,resolve_self_shared",
                "reason": "verified release, sources match",
                "servers": [f"server{n}" for n in range(1, 7)],
            }
        ],
    }


def test_report_shape_and_figures(tmp_path):
    path = report.write_report(results(tmp_path), tmp_path)
    doc = json.loads(path.read_text())
    assert report.report_errors(doc) == []
    assert set(doc["scenarios"]) == set(report.SCENARIOS)
    s = doc["scenarios"]
    # the IPv4 figures stay where single-stack consumers read them
    assert s["hashing"]["flows"] == 2400
    assert s["withdraw_before_stop"]["lost_packets"] == 0
    assert s["health_failover"]["detection_ms"] == 480
    assert s["server_failure"]["hold_timer"]["detection_ms"] == 8000
    # the IPv6 ones beside them, with the same keys
    assert s["health_failover"]["ipv6"]["detection_ms"] == 487
    assert s["server_failure"]["ipv6"]["hold_timer"]["detection_ms"] == 8007
    for name in report.SCENARIOS:
        assert s[name]["pass_by_family"] == {"ipv4": True, "ipv6": True}
        assert set(s[name]["ipv6"]) == set(s[name]) - {"ipv6", "pass_by_family"}
    assert doc["pass"] is True
    assert set(doc["versions"]) >= {"frr", "exabgp", "kernel"}
    for png in ("shares.png", "failover-timeline.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_timelines_are_found_per_family(tmp_path):
    columns = report.timelines(results(tmp_path)["scenarios"])
    assert [p.name for p in columns["ipv4"]] == [
        "timeline-graceful_removal-ipv4.json",
        "timeline-rolling_upgrade_drain-ipv4.json",
    ]
    assert [p.name for p in columns["ipv6"]] == [
        "timeline-graceful_removal-ipv6.json",
        "timeline-rolling_upgrade_drain-ipv6.json",
    ]


def test_rolling_upgrade_has_every_variant_per_family(tmp_path):
    s = json.loads(report.write_report(results(tmp_path), tmp_path).read_text())["scenarios"]
    up = s["rolling_upgrade"]
    assert set(up["variants"]) == {"drain", "graceful_restart", "plain"}
    assert up["variants"]["drain"]["out_of_rotation_ms"]["server3"] == 6000
    assert up["ipv6"]["variants"]["drain"]["out_of_rotation_ms"]["server3"] == 6007
    assert up["ipv6"]["variants"]["plain"]["lost_packets"] == 3
    table = report.render_table(s)
    assert (
        "rolling_upgrade       ipv4  PASS  variants.drain.lost_packets=0 "
        "variants.drain.moved_unneeded_fraction=0.0 variants.drain.moved_fraction=1.0 "
        "variants.drain.total_s=38.0 variants.graceful_restart.lost_packets=0"
    ) in table


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda s: s["hashing"].pop("ipv6"), "scenarios.hashing: no ipv6 result"),
        (
            lambda s: s["hashing"]["ipv6"].pop("flows"),
            "scenarios.hashing: ipv6 figures differ from ipv4: missing ['flows'], extra []",
        ),
        (lambda s: s.pop("recovery"), "scenarios.recovery: missing"),
        (lambda s: s["convergence"].pop("pass"), "scenarios.convergence: no 'pass'"),
        (
            lambda s: s["weighted"]["ipv6"].pop("unweighted_max_deviation"),
            "scenarios.weighted (ipv6): no unweighted_max_deviation",
        ),
        (
            lambda s: s["weighted"]["failover"].pop("moved_surviving_fraction"),
            "scenarios.weighted (ipv4): failover: no moved_surviving_fraction",
        ),
        (
            lambda s: s["weighted"].update(instances_per_host={"server3": 1, "server4": 1}),
            "scenarios.weighted (ipv4): shares has 7 instances, instances_per_host "
            "{'server3': 1, 'server4': 1}",
        ),
        (
            lambda s: s["deprefer"]["ipv6"].pop("all_unhealthy"),
            "scenarios.deprefer (ipv6): no all_unhealthy",
        ),
        (
            lambda s: s["rolling_upgrade"]["ipv6"]["variants"].pop("plain"),
            "scenarios.rolling_upgrade (ipv6): variants.plain: missing",
        ),
        (
            lambda s: s["rolling_upgrade"]["variants"]["drain"].pop("total_s"),
            "scenarios.rolling_upgrade (ipv4): variants.drain: no total_s",
        ),
        (
            lambda s: s["rolling_upgrade"]["ipv6"]["variants"]["graceful_restart"][
                "out_of_rotation_ms"
            ].pop("server5"),
            "scenarios.rolling_upgrade (ipv6): variants.graceful_restart.out_of_rotation_ms: "
            "hosts ['server3', 'server4', 'server6'], expected ['server3', 'server4', 'server5', "
            "'server6']",
        ),
    ],
)
def test_the_schema_check_names_what_is_missing(tmp_path, damage, error):
    doc = {**results(tmp_path), "pass": True}
    damage(doc["scenarios"])
    assert error in report.report_errors(doc)


def test_the_report_says_which_mode_exabgp_ran_in(tmp_path):
    doc = {**results(tmp_path), "pass": True}
    assert report.report_errors(doc) == []
    doc["exabgp_launcher"] = []
    assert report.report_errors(doc) == [
        "exabgp_launcher: no launcher line from the servers' ExaBGP ([])"
    ]


def test_launcher_runs_count_each_start_per_mode():
    line = (
        "2026-12-04T20:55:31 info exabgp_launcher mode={} version=5.0.15 fixes={} "
        "reason='verified release, sources match'"
    )
    outputs = {
        "server3": "\n".join(
            [
                line.format("accelerated", "poll_while_queued"),
                "2026-12-04T20:55:31.838 info neighbor_state peer=10.1.3.0",
                line.format("accelerated", "poll_while_queued"),
            ]
        ),
        "server4": line.format("stock", "none"),
        "server5": "no launcher here",
    }
    assert report.launcher_runs(outputs) == [
        {"mode": "accelerated", "version": "5.0.15", "fixes": "poll_while_queued",
         "reason": "verified release, sources match", "starts": 2, "servers": ["server3"]},
        {"mode": "stock", "version": "5.0.15", "fixes": "none",
         "reason": "verified release, sources match", "starts": 1, "servers": ["server4"]},
    ]  # fmt: skip


def test_the_weighted_and_deprefer_rows(tmp_path):
    table = report.render_table(results(tmp_path)["scenarios"])
    assert (
        "weighted              ipv4  PASS  flows=3000 max_deviation=0.01 "
        "unweighted_max_deviation=0.107 chi_square_p=0.7 failover.convergence_ms=270 "
        "failover.lost_packets=70 failover.moved_surviving_fraction=0.1 "
        "failover.max_deviation_after=0.02"
    ) in table
    assert (
        "deprefer              ipv4  PASS  share_of_unhealthy_host=0.0 "
        "answered_fraction_all_unhealthy=1.0 deprefer_ms=600"
    ) in table


def test_a_family_that_fails_fails_the_scenario_and_the_run(tmp_path):
    res = results(tmp_path)
    v4 = dict(res["scenarios"]["hashing"])
    res["scenarios"]["hashing"] = combine({"ipv4": {k: v for k, v in v4.items() if k not in (
        "ipv6", "pass_by_family")}, "ipv6": {"pass": False, "error": "no route"}})  # fmt: skip
    assert res["scenarios"]["hashing"]["pass"] is False
    assert report.verdict(res["scenarios"]) is False
    table = report.render_table(res["scenarios"]).splitlines()
    row = table.index(next(r for r in table if r.startswith("hashing ")))
    assert table[row].startswith("hashing               ipv4  PASS  flows=2400")
    assert table[row + 1] == "                      ipv6  FAIL  error=no route"


def test_the_table_has_a_row_per_family_with_nested_figures(tmp_path):
    table = report.render_table(results(tmp_path)["scenarios"])
    assert (
        "withdraw_before_stop  ipv4  PASS  lost_packets=0 drain_to_fabric_stopped_ms=120 "
        "graceful.community_ms=90 graceful.lost_packets=0"
    ) in table
    assert (
        "                      ipv6  PASS  lost_packets=0 drain_to_fabric_stopped_ms=127 "
        "graceful.community_ms=97 graceful.lost_packets=0"
    ) in table
    assert (
        "server_failure        ipv4  PASS  detection_ms=300 lost_packets=200 "
        "hold_timer.detection_ms=8000" in table
    )
    assert "health_failover       ipv4  PASS  detection_ms=480" in table


def test_a_skipped_scenario_does_not_fail_the_run(tmp_path):
    res = results(tmp_path)
    res["scenarios"]["withdraw_before_stop"] = combine(
        {f: {"pass": None, "skipped": "no control socket"} for f in ("ipv4", "ipv6")}
    )
    assert report.verdict(res["scenarios"]) is True
    assert "withdraw_before_stop  ipv4  SKIP  skipped=no control socket" in report.render_table(
        res["scenarios"]
    )
