"""The bfdd unit, run as written (minus systemd): its commands, with the unit's paths mapped
to a temporary directory, bring up a standalone bfdd in a namespace of the test that answers
a peer configured in announcer.yaml, and nothing of the machine is touched."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.netlab import FRR_DIR, netns, poll, sh
from tests.test_packaging import REPO, UNITS, unit_settings

UNIT = UNITS / "anycast-announcer-bfdd.service"
ANNOUNCER = REPO / ".venv" / "bin" / "announcer"

pytestmark = [pytest.mark.netns, pytest.mark.frr]


def commands(runtime: Path, config: Path) -> tuple[list[list[str]], list[str]]:
    """The unit's ExecStartPre and ExecStart argv, with its paths mapped for the test."""

    def argv(line: str) -> list[str]:
        line = line.removeprefix("+")
        line = line.replace("/run/anycast-announcer-bfdd", str(runtime))
        line = line.replace("/etc/anycast-announcer/announcer.yaml", str(config))
        line = line.replace("/usr/local/bin/announcer", str(ANNOUNCER))
        return shlex.split(line)

    settings = unit_settings(UNIT)
    return [argv(line) for line in settings["ExecStartPre"]], argv(settings["ExecStart"][0])


def test_the_unit_starts_a_bfdd_for_the_configured_peers(tmp_path: Path) -> None:
    if not (FRR_DIR / "bfdd").exists():
        pytest.skip("FRR's bfdd is not installed")
    # bfdd drops to user frr, which cannot reach into pytest's 0700 tmp_path: a directory of
    # its own under /tmp, made like RuntimeDirectory= makes it (root's, 0750)
    base = Path(tempfile.mkdtemp(prefix="aabfdu-", dir="/tmp"))
    try:
        run_unit(base, tmp_path)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_unit(base: Path, tmp_path: Path) -> None:
    base.chmod(0o755)
    runtime = base / "run"
    runtime.mkdir(mode=0o750)
    config = tmp_path / "announcer.yaml"
    config.write_text(
        "exabgp:\n  neighbors: [10.99.0.1, 'fd00:99::1']\nbfd:\n  detect_multiplier: 5\n"
    )
    pre, start = commands(runtime, config)
    assert pre[0][0] == shutil.which("chown") or pre[0][0] == "/bin/chown"
    with netns("bfdu") as ns:
        sh(ns, "ip", "link", "set", "lo", "up")
        for argv in pre:
            subprocess.run(argv, check=True, timeout=30)
        assert "detect-multiplier 5" in (runtime / "bfdd.conf").read_text()
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{ns}", *start],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            vtysh = ["vtysh", "--vty_socket", str(runtime), "-c", "show bfd peers json"]
            peers = poll(
                lambda: json.loads(sh(ns, *vtysh, check=False).stdout or "null"), 20, "bfdd answers"
            )
            assert {p["peer"] for p in peers} == {"10.99.0.1", "fd00:99::1"}
            assert all(p["detect-multiplier"] == 5 for p in peers)
            # bfdd dropped to frr and listens on no TCP vty port (-P 0)
            assert (runtime / "bfdd.pid").stat().st_uid == int(sh(None, "id", "-u", "frr").stdout)
            listening = sh(ns, "ss", "-ltnH").stdout
            assert listening.strip() == "", listening
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
