"""Packaging: the wheel installs the three commands into a fresh venv and they run; the
systemd units pass systemd-analyze and agree with the config defaults; the Dockerfile
copies files that exist; the ExaBGP configs name the installed paths."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from announcer.cni.scheme import WiringConfig
from announcer.config import Config
from announcer.exabgp.start import parse_env

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "packaging" / "systemd"
EXABGP_UNIT = UNITS / "anycast-announcer-exabgp.service"
DRIVER_UNIT = UNITS / "anycast-announcer-docker-driver.service"
INSTALLED_BIN = "/usr/local/bin/"
# Modules that import every runtime dependency between them: a dependency missing from
# pyproject.toml fails here, not on a production host.
MODULES = (
    "announcer.cli", "announcer.daemon.app", "announcer.daemon.metrics", "announcer.daemon.logs",
    "announcer.cni.plugin", "announcer.cni.docker_driver", "announcer.sources.docker",
    "announcer.sources.marathon", "announcer.sources.kernel", "announcer.health.probes",
)  # fmt: skip


def run(*argv: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs
    )  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{argv}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def exabgp_env() -> dict[str, str]:
    values = parse_env((REPO / "exabgp" / "exabgp.env").read_text())
    return {key.replace(".", "_"): value for key, value in values.items()}


@pytest.mark.slow
def test_the_wheel_installs_the_commands_into_a_fresh_venv(
    tmp_path: Path, project_wheel: Path
) -> None:
    wheel = project_wheel  # built once per session (tests/conftest.py), on a copy of the source
    names = zipfile.ZipFile(wheel).namelist()
    assert "announcer/cni/plugin.py" in names
    assert not [n for n in names if n.startswith("tests/")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for command in ("announcer", "announcer-routed", "announcer-docker-routed"):
        assert re.search(rf"^{command} = ", scripts, re.MULTILINE), command

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "-q", wheel, timeout=600)
    bin_ = venv / "bin"
    checked = run(bin_ / "announcer", "check", "-c", REPO / "exabgp" / "announcer.yaml")
    assert "ok" in checked.stderr
    version = run(
        bin_ / "announcer-routed", input='{"cniVersion": "1.0.0"}', env={"CNI_COMMAND": "VERSION"}
    )
    assert "1.0.0" in version.stdout
    assert "--state-dir" in run(bin_ / "announcer-docker-routed", "--help").stdout
    imports = "; ".join(f"import {m}" for m in MODULES)
    proc = subprocess.run(
        [bin_ / "python", "-c", imports], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert proc.returncode == 0, (
        f"a runtime dependency is missing from pyproject.toml:\n{proc.stderr}"
    )


def test_the_exabgp_configs_name_the_installed_paths() -> None:
    for conf in ("exabgp4.conf", "exabgp5.conf"):
        text = (REPO / "exabgp" / conf).read_text()
        assert "run /usr/local/bin/announcer run -c /etc/anycast-announcer/announcer.yaml;" in text
    settings = unit_settings(EXABGP_UNIT)
    assert settings["ExecStart"] == [
        f"{INSTALLED_BIN}announcer exabgp /etc/anycast-announcer/exabgp5.conf"
    ]
    assert settings["ExecStartPre"] == [
        f"{INSTALLED_BIN}announcer check -c /etc/anycast-announcer/announcer.yaml"
    ]


def test_the_exabgp_unit_is_hardened_and_agrees_with_the_config_defaults() -> None:
    settings = unit_settings(EXABGP_UNIT)
    single = {key: values[-1] for key, values in settings.items()}
    assert single["CapabilityBoundingSet"] == "CAP_NET_ADMIN"
    assert single["AmbientCapabilities"] == "CAP_NET_ADMIN"
    assert single["NoNewPrivileges"] == "yes"
    assert single["ProtectSystem"] == "strict"
    assert single["RuntimeDirectory"] == "anycast-announcer"
    assert single["StateDirectory"] == "anycast-announcer"
    assert single["User"] != "root"
    defaults = Config().control
    writable = [path for value in settings["ReadWritePaths"] for path in value.split()]
    assert str(Path(defaults.socket).parent) == f"/run/{single['RuntimeDirectory']}"
    assert defaults.state_directory == f"/var/lib/{single['StateDirectory']}"
    assert {str(Path(defaults.socket).parent), defaults.state_directory} <= set(writable)
    # the routed plugin's lock and state files: health verdicts on shared anycast IPs
    assert str(Path(WiringConfig().lock_file).parent) in writable
    assert (
        Path(Config().drain.maintenance_file).parent
        == Path("/etc") / single["ConfigurationDirectory"]
    )
    # ExaBGP's environment is exabgp/exabgp.env, in the underscore form ExaBGP also reads
    environment = dict(value.split("=", 1) for value in settings["Environment"])
    assert exabgp_env().items() <= environment.items()


def test_the_docker_driver_unit_uses_its_own_state_directory() -> None:
    settings = {key: values[-1] for key, values in unit_settings(DRIVER_UNIT).items()}
    assert f"--state-dir /var/lib/{settings['StateDirectory']}" in settings["ExecStart"]
    assert settings["ExecStart"].startswith(f"{INSTALLED_BIN}announcer-docker-routed ")
    assert "ProtectSystem" not in settings  # must share dockerd's mount namespace
    assert settings["Before"] == "docker.service"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    """Verified as installed, with stand-ins for the installed commands (verify checks that
    ExecStart programs exist). Any warning (an unknown key, a bad value) fails."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for unit in UNITS.glob("*.service"):
        text = unit.read_text()
        for command in set(re.findall(rf"{INSTALLED_BIN}([\w.-]+)", text)):
            stand_in = bin_ / command
            stand_in.write_text("#!/bin/sh\nexit 0\n")
            stand_in.chmod(0o755)
        (tmp_path / unit.name).write_text(text.replace(INSTALLED_BIN, f"{bin_}/"))
    units = sorted(str(p) for p in tmp_path.glob("*.service"))
    assert len(units) == 3
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).strip() == "", proc.stdout + proc.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_dockerfile_copies_files_that_exist() -> None:
    copied: list[str] = []
    for instruction, args in dockerfile_instructions():
        if instruction not in ("COPY", "ADD") or args.startswith("--from"):
            continue
        *sources, _destination = args.split()
        copied += sources
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert {"pyproject.toml", "README.md", "announcer", "exabgp/exabgp5.conf"} <= set(copied)
    cmd = next(args for instruction, args in dockerfile_instructions() if instruction == "CMD")
    assert "/etc/anycast-announcer/exabgp5.conf" in cmd


def test_the_dockerfile_sets_exabgps_environment() -> None:
    env = " ".join(args for instruction, args in dockerfile_instructions() if instruction == "ENV")
    for key, value in exabgp_env().items():
        assert f"{key}={value}" in env, key


def test_the_debian_drop_ins_keep_the_units_settings() -> None:
    """docs/exabgp.md "Debian's ExaBGP 4.2.21": the drop-in for Debian's exabgp.service
    carries exactly our unit's ExaBGP settings (they beat Debian's exabgp.env) and check; the
    drop-in for our unit changes its ExecStart only, to the --python form."""
    ours = unit_settings(EXABGP_UNIT)
    debian = unit_settings(UNITS / "exabgp.service.d" / "anycast-announcer.conf")
    assert debian["Environment"] == ours["Environment"]
    assert debian["ExecStartPre"] == ours["ExecStartPre"]
    assert debian["StateDirectory"] == ours["StateDirectory"]
    dropin = unit_settings(UNITS / "anycast-announcer-exabgp.service.d" / "debian-exabgp.conf")
    assert dropin == {
        "ExecStart": [
            "",
            f"{INSTALLED_BIN}announcer exabgp --python /usr/bin/python3 "
            "/etc/anycast-announcer/exabgp4.conf",
        ]
    }
