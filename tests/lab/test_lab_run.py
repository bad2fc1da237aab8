"""The whole lab in namespaces: up -> scenarios -> down, verdicts asserted for both families
(3 min 55 s on the shared 2-core machine at a 1-minute load of 2-4, 45 % of it
rolling_upgrade)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from announcer.lab import report
from announcer.lab.family import family_results

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.lab,
    pytest.mark.netns,
    pytest.mark.frr,
    pytest.mark.exabgp,
    pytest.mark.slow,
]


def test_spine_leaf_lab_all_scenarios(tmp_path):
    if shutil.which("nft") is None:
        pytest.skip("nftables `nft` is needed to cut links silently")
    proc = subprocess.run(
        [sys.executable, "-m", "announcer.lab", "all", "labs/spine-leaf.clab.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=720,
        check=False,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert "lab-report.json" in proc.stdout, proc.stdout + proc.stderr
    report_path = Path(proc.stdout.split("report: ")[1].split()[0])
    doc = json.loads(report_path.read_text())
    assert report.report_errors(doc) == []
    s = doc["scenarios"]
    failed = {k: v for k, v in s.items() if v.get("pass") is not True}
    assert not failed, json.dumps(failed, indent=1)[:3000]
    for name, entry in s.items():
        assert entry["pass_by_family"] == {"ipv4": True, "ipv6": True}, name
    for family in ("ipv4", "ipv6"):
        by = {name: family_results(entry)[family] for name, entry in s.items()}
        assert by["hashing"]["flows"] >= 2000
        assert by["hashing"]["sticky_fraction"] == 1.0
        assert (
            by["server_failure"]["detection_ms"]
            < by["server_failure"]["hold_timer"]["detection_ms"]
        )
        wbs = by["withdraw_before_stop"]
        assert wbs["lost_packets"] == 0
        assert wbs["graceful"]["lost_packets"] == 0
        assert wbs["graceful"]["communities_at_leaf"] == ["65535:0"]
        health = by["health_failover"]
        assert health["decision_reason"] == "check_failing"
        assert health["shares_after"][health["instance"]] == 0
        assert health["rejoin_ms"] is not None
        weighted = by["weighted"]
        assert weighted["flows"] >= 3000
        assert len(set(weighted["instances_per_host"].values())) >= 3  # e.g. 1, 2 and 3
        assert weighted["max_deviation"] <= 0.05  # per instance within 5 points of 1/N
        assert weighted["unweighted_max_deviation"] >= 0.07  # the contrast: skewed
        assert weighted["unweighted_max_deviation_per_host"] <= 0.05  # ... per host even
        failover = weighted["failover"]
        assert failover["shares_after"][failover["instance"]] == 0
        assert failover["max_deviation_after"] <= 0.05
        deprefer = by["deprefer"]
        assert deprefer["share_of_unhealthy_host"] == 0
        assert deprefer["answered_fraction_all_unhealthy"] >= 0.99
        assert (
            deprefer["leaf_keeps_path_as_path"]
            .split()
            .count(deprefer["leaf_keeps_path_as_path"].split()[0])
            == 4
        )  # our AS, 3 more times
        upgrade = by["rolling_upgrade"]["variants"]
        assert upgrade["drain"]["lost_packets"] == 0
        assert upgrade["drain"]["moved_unneeded_fraction"] == 0.0
        assert upgrade["graceful_restart"]["lost_packets"] == 0
        # End-of-RIB waits for the first health checks: the leaf keeps every path throughout
        assert upgrade["graceful_restart"]["moved_unneeded_fraction"] == 0.0
        assert by["rolling_upgrade"]["targets_met"]["graceful_restart"] is True
        assert upgrade["drain"]["flows"] >= 2000
        # the contrast: a plain restart takes every host out of rotation, its flows move
        assert upgrade["plain"]["moved_fraction"] > 0.9
        assert all(ms > 0 for ms in upgrade["plain"]["leaf_fib_out_ms"].values())
    # every server's ExaBGP ran as the product starts it: the launcher said which mode
    assert {srv for run in doc["exabgp_launcher"] for srv in run["servers"]} == {
        f"server{n}" for n in range(1, 7)
    }
    assert s["convergence"]["anycast"] == "10.200.0.1"
    assert s["convergence"]["ipv6"]["anycast"] == "fd00:200::1"
    assert proc.returncode == 0
    assert not [
        n
        for n in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=False
        ).stdout.split()
        if n.startswith("aalab")
    ]
