"""The containerlab wrapper against recorded `inspect --format json` output, and the argv it
runs (a fake `containerlab` on PATH records its arguments)."""

import json
import os
import stat
from pathlib import Path

import pytest

from announcer.lab.clab import ClabLab, parse_inspect
from announcer.lab.namespaces import LabError

DATA = Path(__file__).resolve().parents[1] / "data"
LAB = Path(__file__).resolve().parents[2] / "labs" / "spine-leaf.clab.yml"


def test_parse_inspect_new_shape_grouped_by_lab():
    found = parse_inspect((DATA / "clab_inspect_v0_68.json").read_text())
    assert [(c.node, c.state, c.ipv4) for c in found] == [
        ("leaf1", "running", "172.20.20.4/24"),
        ("server3", "running", "172.20.20.9/24"),
    ]
    assert found[0].name == "clab-anycast-leaf1"
    assert found[0].lab == "anycast"


def test_parse_inspect_old_shape_containers_list():
    found = parse_inspect((DATA / "clab_inspect_v0_60.json").read_text())
    assert [(c.node, c.state) for c in found] == [("spine1", "running"), ("client", "exited")]


def test_parse_inspect_empty_and_bad():
    assert parse_inspect("{}") == []
    assert parse_inspect('{"containers": null}') == []
    with pytest.raises(LabError):
        parse_inspect("[]")


@pytest.fixture
def fake_clab(tmp_path, monkeypatch):
    log = tmp_path / "argv.log"
    script = tmp_path / "containerlab"
    sample = DATA / "clab_inspect_v0_68.json"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\ncase "$1" in inspect) cat {sample};; esac\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return log


def test_deploy_inspect_destroy_argv(fake_clab, tmp_path):
    lab = ClabLab(LAB, tmp_path)
    with pytest.raises(LabError, match="not running"):  # the sample holds 2 of 12 nodes
        lab.up()
    lab.down()
    calls = fake_clab.read_text().splitlines()
    assert calls == [
        f"deploy -t {LAB} --reconfigure",
        f"inspect -t {LAB} --format json",
        f"destroy -t {LAB} --cleanup",
    ]
    assert lab.container("leaf1") == "clab-anycast-leaf1"


def test_failure_carries_stderr(tmp_path, monkeypatch):
    script = tmp_path / "containerlab"
    script.write_text("#!/bin/sh\necho 'permission denied' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(LabError, match="permission denied"):
        ClabLab(LAB, tmp_path).down()
    assert json.loads("{}") == {}
