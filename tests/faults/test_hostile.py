"""Hostile input end to end: nothing of it reaches ExaBGP, and each is rejected with a
reason naming the value (drop-in files here; labels and payload parsers are fuzzed in
tests/test_labels.py, tests/sources/test_docker.py and tests/sources/test_marathon.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.fake_exabgp import FakeExaBGP
from tests.netlab import netns, sh

pytestmark = [pytest.mark.netns, pytest.mark.faults]

HOSTILE = {
    "newline.yaml": 'ips: ["10.200.0.1\\nshutdown"]\n',
    "semicolon.yaml": 'ips: ["10.200.0.1; announce route 0.0.0.0/0 next-hop self"]\n',
    "keyword.yaml": 'ips: ["10.200.0.1 next-hop 1.2.3.4"]\n',
    "community.yaml": "ips: [10.200.0.1]\ncommunities: ['65536:1']\n",
    "gshut-word.yaml": "ips: [10.200.0.1]\ncommunities: ['graceful-shutdown]']\n",
    "med.yaml": "ips: [10.200.0.1]\nmed: -1\n",
    "mapped.yaml": "ips: ['::ffff:10.200.0.1']\n",
    "lookalike.yaml": "ips: ['\\uff110.200.0.1']\n",
    "huge.yaml": "ips: [" + ",".join(f"10.201.{i // 256}.{i % 256}" for i in range(100)) + "]\n",
    # drop-ins are the operator's and may use exec checks, but only an absolute path with
    # plain arguments: a shell-ish relative command is refused (harmless if it were not)
    "check-exec.yaml": "ips: [10.200.0.1]\ncheck: 'exec:true; echo x'\n",
}


def test_hostile_drop_ins_reach_nothing_and_are_named(tmp_path: Path) -> None:
    routes_d = tmp_path / "routes.d"
    routes_d.mkdir()
    for name, text in HOSTILE.items():
        (routes_d / name).write_text(text)
    config = tmp_path / "announcer.yaml"
    config.write_text(
        "kernel:\n  interfaces: ['vethr*']\n  resync_interval_seconds: 3600\n"
        "policy:\n  allow: ['10.0.0.0/8']\nlifecycle:\n  require_instance: true\n"
        f"files:\n  enabled: true\n  directory: {routes_d}\n"
        f"control:\n  socket: {tmp_path}/ctl.sock\n  state_directory: {tmp_path}/state\n"
    )
    with netns("hostile") as ns:
        sh(ns, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        sh(ns, "ip", "link", "set", "vethr1", "up")
        sh(ns, "ip", "link", "set", "ctr1", "up")
        sh(ns, "ip", "route", "add", "10.200.0.1/32", "dev", "vethr1")
        sh(
            ns, "ip", "route", "add", "0.0.0.0/0", "dev", "vethr1"
        )  # a default route must never go out
        sh(ns, "ip", "route", "add", "10.0.0.0/8", "dev", "vethr1")  # nor a /8 "host route"
        exa = FakeExaBGP(ns, config)
        try:
            exa.no_command_within(3.0)
            (routes_d / "good.yaml").write_text("ips: [10.200.0.1]\n")  # proves the pipe works
            exa.expect("announce route 10.200.0.1/32 next-hop self")
        finally:
            exa.close()
    log = exa.stderr()
    assert exa.seen == ["announce route 10.200.0.1/32 next-hop self"]
    for name in HOSTILE:
        assert f"drop_in_rejected file={routes_d / name}" in log, name
    assert "at most 64" in log
    assert f"drop_in_rejected file={routes_d / 'check-exec.yaml'}" in log
    assert "\nshutdown" not in log  # values are escaped in logs too
