"""announcer check --probe: it catches what made a new user's first hour fail."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from announcer.config import Config
from announcer.daemon.probe import probe

CONF = """\
process announcer {{
    run {program} run -c /etc/anycast-announcer/announcer.yaml;
    encoder json;
}}
neighbor 10.99.0.1 {{
    {eor}
}}
neighbor fd00:99::1 {{
}}
"""


def findings(config: Config, conf: Path, user: str | None = None) -> dict[str, str]:
    return {f.check: f.level for f in probe(config, conf, user, sys.executable)}


def write(tmp_path: Path, program: Path, eor: str = "") -> Path:
    conf = tmp_path / "exabgp5.conf"
    conf.write_text(CONF.format(program=program, eor=eor))
    return conf


def test_an_api_process_exabgp_cannot_execute_fails(tmp_path: Path) -> None:
    program = tmp_path / "announcer"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o644)
    assert findings(Config(), write(tmp_path, program))["exabgp_process"] == "fail"
    program.chmod(0o755)
    assert findings(Config(), write(tmp_path, program))["exabgp_process"] == "ok"


@pytest.mark.skipif(os.geteuid() != 0, reason="checks as another user through runuser")
def test_executable_for_root_is_not_enough_when_exabgp_runs_as_another_user(tmp_path: Path) -> None:
    venv = tmp_path / "venv"  # a venv made with a 0700 umask: nobody else may enter it
    venv.mkdir(mode=0o700)
    program = venv / "announcer"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    result = findings(Config(), write(tmp_path, program), user="nobody")
    assert result["exabgp_process"] == "fail"


def test_dual_stack_without_neighbors_warns_and_end_of_rib_must_agree(tmp_path: Path) -> None:
    program = Path(sys.executable)
    plain = findings(Config(), write(tmp_path, program))
    assert plain["neighbors"] == "warn"
    assert "end_of_rib" not in plain
    both = Config.model_validate({"exabgp": {"neighbors": ["10.99.0.1", "fd00:99::1"]}})
    mismatch = findings(both, write(tmp_path, program, eor="manual-eor true;"))
    assert "neighbors" not in mismatch
    assert mismatch["end_of_rib"] == "fail"
    agreed = Config.model_validate(
        {"exabgp": {"neighbors": ["10.99.0.1", "fd00:99::1"], "manual_eor": True}}
    )
    assert "end_of_rib" not in findings(agreed, write(tmp_path, program, eor="manual-eor true;"))
    wrong = Config.model_validate({"exabgp": {"neighbors": ["10.99.0.9"]}})
    assert findings(wrong, write(tmp_path, program))["neighbors"] == "fail"
