"""`announcer exabgp [--env FILE] [--python PYTHON] [--stock] ARGS`: the one command that
starts ExaBGP as the units do. The env file's parsing and precedence, usage errors, and
real runs of both ExaBGP releases through the launcher (what ExaBGP itself reports back)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from announcer.exabgp.start import EnvFileError, apply_env, argv_for, parse_env, start
from tests.netlab import REPO

ANNOUNCER = str(REPO / ".venv" / "bin" / "announcer")
PYTHON4 = REPO / ".venv-exabgp4" / "bin" / "python"
SHIPPED_ENV = REPO / "exabgp" / "exabgp.env"


def test_env_lines_comments_and_a_bad_line_named() -> None:
    text = (
        "# ExaBGP\n\nexabgp.api.ack=true\n  exabgp.log.level = WARNING  \nexabgp_api_chunk=1000\n"
    )
    assert parse_env(text) == {
        "exabgp.api.ack": "true",
        "exabgp.log.level": "WARNING",
        "exabgp_api_chunk": "1000",
    }
    with pytest.raises(EnvFileError, match=r"f\.env:2: not key=value: .exabgp\.api\.ack."):
        parse_env("# x\nexabgp.api.ack\n", "f.env")
    with pytest.raises(EnvFileError, match=r"f\.env:1"):
        parse_env("$(reboot)=1\n", "f.env")


def test_the_callers_environment_wins_over_the_file() -> None:
    environ = {"exabgp.log.level": "INFO"}
    kept = apply_env({"exabgp.log.level": "WARNING", "exabgp.api.chunk": "1000"}, environ)
    assert kept == ["exabgp.log.level"]
    assert environ == {"exabgp.log.level": "INFO", "exabgp.api.chunk": "1000"}


def test_the_shipped_env_file_parses() -> None:
    values = parse_env(SHIPPED_ENV.read_text(), str(SHIPPED_ENV))
    assert values["exabgp.api.ack"] == "true"


def test_usage_errors_say_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert start([]) == 64
    assert "ExaBGP's arguments are missing" in capsys.readouterr().err
    assert start(["--env"]) == 64
    assert "--env needs a value" in capsys.readouterr().err
    bad = tmp_path / "bad.env"
    bad.write_text("exabgp.api.ack\n")
    assert start(["--env", str(bad), "x.conf"]) == 78
    assert f"{bad}:1: not key=value" in capsys.readouterr().err
    assert start(["--env", str(tmp_path / "missing.env"), "x.conf"]) == 78
    assert "missing.env" in capsys.readouterr().err
    assert start(["--python", str(tmp_path / "nope"), "x.conf"]) == 69
    assert "cannot run" in capsys.readouterr().err


def test_argv_runs_the_launcher_file_isolated() -> None:
    argv = argv_for("/usr/bin/python3", ["--stock", "a.conf"])
    assert argv[:2] == ["/usr/bin/python3", "-I"]
    assert argv[2].endswith("announcer/exabgp/launcher.py")
    assert argv[3:] == ["--stock", "a.conf"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ANNOUNCER, "exabgp", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_exabgp_5_reads_the_env_file_and_the_caller_wins(tmp_path: Path) -> None:
    env = tmp_path / "e.env"
    env.write_text("exabgp.log.level=WARNING\nexabgp.api.chunk=1000\n")
    done = run("--env", str(env), "env", "-d", env={"exabgp.api.chunk": "7"})
    assert done.returncode == 0, done.stderr
    assert "mode=accelerated version=5.0.15" in done.stderr
    assert "level = WARNING" in done.stdout
    assert "chunk = 7" in done.stdout


@pytest.mark.skipif(not PYTHON4.exists(), reason="ExaBGP 4.2.21 venv missing (make venv-exabgp4)")
def test_exabgp_4_runs_from_its_own_interpreter(tmp_path: Path) -> None:
    env = tmp_path / "e.env"
    env.write_text("exabgp.log.level=WARNING\n")
    done = run("--env", str(env), "--python", str(PYTHON4), "--stock", "--de")
    assert done.returncode == 0, done.stderr
    assert "mode=stock version=4.2.21" in done.stderr
    assert "exabgp.log.level=WARNING" in done.stdout
