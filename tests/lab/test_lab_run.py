"""The whole lab in namespaces: up -> scenarios -> down, verdicts asserted (about 2 min)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.lab, pytest.mark.netns, pytest.mark.frr, pytest.mark.exabgp,
              pytest.mark.slow]


def test_spine_leaf_lab_all_scenarios(tmp_path):
    if shutil.which("nft") is None:
        pytest.skip("nftables `nft` is needed to cut links silently")
    proc = subprocess.run(
        [sys.executable, "-m", "announcer.lab", "all", "labs/spine-leaf.clab.yml"],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert "lab-report.json" in proc.stdout, proc.stdout + proc.stderr
    report_path = Path(proc.stdout.split("report: ")[1].split()[0])
    doc = json.loads(report_path.read_text())
    s = doc["scenarios"]
    failed = {k: v for k, v in s.items() if v.get("pass") is False}
    assert not failed, json.dumps(failed, indent=1)[:3000]
    assert s["hashing"]["flows"] >= 2000
    assert s["hashing"]["sticky_fraction"] == 1.0
    assert s["server_failure"]["detection_ms"] < s["server_failure"]["hold_timer"]["detection_ms"]
    wbs = s["withdraw_before_stop"]
    assert wbs["pass"] is True
    assert wbs["lost_packets"] == 0
    assert wbs["graceful"]["lost_packets"] == 0
    assert wbs["graceful"]["communities_at_leaf"] == ["65535:0"]
    health = s["health_failover"]
    assert health["pass"] is True
    assert health["decision_reason"] == "check_failing"
    assert health["shares_after"][health["instance"]] == 0
    assert health["rejoin_ms"] is not None
    assert proc.returncode == 0
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True, check=False).stdout.split()
                if n.startswith("aalab")]
