"""Configuration: unknown keys, bad CIDRs and bad globs are refused, naming file, key and value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from announcer.config import ConfigError, load_config, parse_config
from announcer.daemon.convert import to_policy
from announcer.model import Community

EXAMPLE = Path(__file__).parent.parent / "exabgp" / "announcer.yaml"


def error_of(text: str, tmp_path: Path) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("kernel:\n  tabels: [main]\n", ["kernel.tabels", "unknown key"]),
        ("bogus: 1\n", ["bogus", "unknown key"]),
        ("policy:\n  allow: ['10.0.0.0/33']\n", ["policy.allow", "10.0.0.0/33"]),
        ("policy:\n  allow: ['10.0.0.1/8']\n", ["policy.allow", "10.0.0.1/8"]),
        ("kernel:\n  interfaces: ['veth[r*']\n", ["kernel.interfaces", "veth[r*"]),
        ("kernel:\n  interfaces: ['veth r']\n", ["kernel.interfaces", "veth r"]),
        ("kernel:\n  protocols: [bogus]\n", ["kernel.protocols", "bogus"]),
        ("kernel:\n  tables: [-1]\n", ["kernel.tables", "-1"]),
        ("exabgp:\n  dialect: 6\n", ["exabgp.dialect", "6"]),
        ("exabgp:\n  neighbors: ['10.0.0.300']\n", ["exabgp.neighbors", "10.0.0.300"]),
        ("policy:\n  attributes:\n    communities: ['65536:1']\n", ["communities", "65536:1"]),
        ("policy:\n  attributes:\n    med: -1\n", ["policy.attributes.med", "-1"]),
        ("- just\n- a list\n", ["top level must be a mapping"]),
        ("kernel: [\n", ["not valid YAML"]),
        (
            "bfd:\n  peers: [{address: 10.0.0.1, interface: eth1}]\n",
            ["bfd.peers.0.interface", "eth1", "without zebra"],
        ),
        ("routed:\n  lock_file: run/lock/x\n", ["routed.lock_file", "run/lock/x", "absolute"]),
        ("routed:\n  table: 255\n", ["routed.table", "255"]),
        ("exabgp:\n  eor_max_hold_seconds: -1\n", ["exabgp.eor_max_hold_seconds", "-1"]),
    ],
)
def test_errors_name_file_key_and_value(text: str, needles: list[str], tmp_path: Path) -> None:
    message = error_of(text, tmp_path)
    assert "bad.yaml" in message
    for needle in needles:
        assert needle in message, message


def test_names_and_numbers_for_tables_and_protocols() -> None:
    config = parse_config(
        {"kernel": {"tables": ["main", 100, "local"], "protocols": ["boot", 180]}}
    )
    assert config.kernel.tables == (254, 100, 255)
    assert config.kernel.protocols == (3, 180)


def test_well_known_communities_become_numbers() -> None:
    config = parse_config(
        {"policy": {"attributes": {"communities": ["GRACEFUL_SHUTDOWN", "65000:7"]}}}
    )
    assert to_policy(config).attributes.communities == (Community(65000, 7), Community(65535, 0))


def test_the_shipped_example_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert to_policy(config).max_routes == config.policy.max_routes


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "announcer.cli", *args], capture_output=True, text=True, check=False
    )


def test_check_exits_78_naming_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kernel:\n  interfaces: ['[oops']\n")
    result = run_cli("check", "-c", str(bad))
    assert result.returncode == 78
    assert "kernel.interfaces" in result.stderr
    assert "[oops" in result.stderr
    assert result.stdout == ""


def test_check_exits_0_on_a_good_file() -> None:
    result = run_cli("check", "-c", str(EXAMPLE))
    assert result.returncode == 0, result.stderr


def test_missing_file_exits_78(tmp_path: Path) -> None:
    result = run_cli("check", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 78
    assert "nope.yaml" in result.stderr
