"""`announcer run` in a namespace the test creates, with the test playing ExaBGP.

Acceptance (issue 3): a /32 on a selected veth is announced, deleted -> withdrawn; a
route outside `allow`, a martian, a /24 or on another device -> nothing, and `plan` says why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fake_exabgp import ANNOUNCER, FakeExaBGP
from tests.netlab import netns, sh

pytestmark = [pytest.mark.netns]

CONFIG = """\
kernel:
  tables: [main]
  interfaces: ["vethr*"]
  resync_interval_seconds: 3600
policy:
  allow: ["10.0.0.0/8", "fd00:10::/64"]
"""


@pytest.fixture
def host(tmp_path: Path) -> Iterator[str]:
    with netns("run") as ns:
        sh(ns, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        sh(ns, "ip", "link", "add", "eth9", "type", "veth", "peer", "name", "eth9p")
        for dev in ("vethr1", "ctr1", "eth9", "eth9p"):
            sh(ns, "ip", "link", "set", dev, "up")
        yield ns


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "announcer.yaml"
    path.write_text(CONFIG)
    return path


def test_route_added_is_announced_and_deleted_is_withdrawn(host: str, config: Path) -> None:
    exa = FakeExaBGP(host, config)
    try:
        sh(host, "ip", "route", "add", "10.0.0.1/32", "dev", "vethr1")
        exa.expect("announce route 10.0.0.1/32 next-hop self")
        sh(host, "ip", "-6", "route", "add", "fd00:10::7/128", "dev", "vethr1")
        exa.expect("announce route fd00:10::7/128 next-hop self")
        sh(host, "ip", "route", "del", "10.0.0.1/32", "dev", "vethr1")
        exa.expect("withdraw route 10.0.0.1/32")
        # none of these may ever produce a command
        sh(host, "ip", "route", "add", "192.168.5.5/32", "dev", "vethr1")  # outside allow
        sh(host, "ip", "route", "add", "127.0.0.9/32", "dev", "vethr1")  # martian
        sh(host, "ip", "route", "add", "10.0.5.0/24", "dev", "vethr1")  # not a host route
        sh(host, "ip", "route", "add", "10.0.0.9/32", "dev", "eth9")  # device not selected
        sh(host, "ip", "route", "add", "10.0.0.2/32", "dev", "vethr1")  # a marker after them
        exa.expect("announce route 10.0.0.2/32 next-hop self")
        assert exa.close() == 0  # stdin EOF: ExaBGP is gone, exit cleanly
    finally:
        exa.close()
    plan = json.loads(sh(host, ANNOUNCER, "plan", "-c", str(config), "--json").stdout)
    reasons = {row["prefix"]: (row["announce"], row["reason"]) for row in plan["decisions"]}
    assert reasons["10.0.0.2/32"] == (True, "host_route")
    assert reasons["192.168.5.5/32"] == (False, "prefix_not_allowed")
    assert reasons["127.0.0.9/32"] == (False, "martian")
    assert reasons["10.0.5.0/24"] == (False, "not_host_prefix")
    assert reasons["10.0.0.9/32"] == (False, "interface_not_selected")
    assert "10.0.0.1/32" not in reasons
    assert sorted(plan["commands"]) == [
        "announce route 10.0.0.2/32 next-hop self",
        "announce route fd00:10::7/128 next-hop self",
    ]


def test_plan_text_names_each_reason(host: str, config: Path) -> None:
    sh(host, "ip", "route", "add", "192.168.5.5/32", "dev", "vethr1")
    sh(host, "ip", "route", "add", "10.0.0.3/32", "dev", "vethr1")
    out = sh(host, ANNOUNCER, "plan", "-c", str(config)).stdout
    assert any(
        line.split()[:3] == ["192.168.5.5/32", "withhold", "prefix_not_allowed"]
        for line in out.splitlines()
    )
    assert any(
        line.split()[:3] == ["10.0.0.3/32", "announce", "host_route"] for line in out.splitlines()
    )
    assert "announce route 10.0.0.3/32 next-hop self" in out.splitlines()


def test_restart_withdraws_only_what_is_no_longer_valid(host: str, config: Path) -> None:
    sh(host, "ip", "route", "add", "10.0.0.1/32", "dev", "vethr1")
    # ExaBGP's adj-rib-out as a respawned announcer finds it: one still valid, one stale
    rib = [
        "10.99.0.1 ipv4 unicast 10.0.0.1/32 next-hop 10.99.0.2",
        "10.99.0.1 ipv4 unicast 10.0.0.66/32 next-hop 10.99.0.2",
    ]
    exa = FakeExaBGP(host, config, rib=rib)
    try:
        # withdraws come first; the valid one is re-announced (ExaBGP sends no UPDATE for it)
        exa.expect("neighbor 10.99.0.1 withdraw route 10.0.0.66/32")
        exa.expect("announce route 10.0.0.1/32 next-hop self")
        exa.no_command_within(0.5)
        assert not any(
            line.startswith(("withdraw", "neighbor")) and "10.0.0.1/32" in line for line in exa.seen
        )
    finally:
        exa.close()


def test_neighbor_state_messages_are_consumed_and_shutdown_exits(host: str, config: Path) -> None:
    exa = FakeExaBGP(host, config)
    try:
        sh(host, "ip", "route", "add", "10.0.0.1/32", "dev", "vethr1")
        exa.expect("announce route 10.0.0.1/32 next-hop self")
        exa.send(
            '{ "exabgp": "5.0.0", "type": "state", "neighbor": { "address": { "local": "10.99.0.2", "peer": "10.99.0.1" }, "state": "up" } }'
        )
        exa.expect("announce route 10.0.0.1/32 next-hop self")  # a session came up: replay
        exa.send('{ "exabgp": "5.0.0", "type": "notification", "notification": "shutdown" }')
        assert exa.proc.wait(10) == 0
    finally:
        exa.close()
    assert "neighbor_state peer=10.99.0.1 state=up" in exa.stderr()


def test_without_acks_the_announcer_refuses_to_run(host: str, tmp_path: Path) -> None:
    path = tmp_path / "announcer.yaml"
    path.write_text(
        CONFIG.replace("exabgp_placeholder", "") + "exabgp:\n  startup_timeout_seconds: 1\n"
    )
    exa = FakeExaBGP(host, path, acks=False)
    try:
        assert exa.proc.wait(15) == 1
    finally:
        exa.close()
    assert "the announcer needs acks" in exa.stderr()


def test_an_error_reply_is_logged_and_retried(host: str, config: Path) -> None:
    exa = FakeExaBGP(host, config)
    try:
        # make the fake refuse the first announce
        original = exa._reply
        refused: list[bool] = []

        def refuse_once(*lines: str) -> None:
            if lines == ("done",) and not refused and exa.seen:
                refused.append(True)
                original("error")
                return
            original(*lines)

        exa._reply = refuse_once  # type: ignore[method-assign]
        sh(host, "ip", "route", "add", "10.0.0.1/32", "dev", "vethr1")
        exa.expect("announce route 10.0.0.1/32 next-hop self")
        exa.expect("announce route 10.0.0.1/32 next-hop self", timeout=10)  # the retry
    finally:
        exa.close()
    assert (
        "exabgp_command_failed command='announce route 10.0.0.1/32 next-hop self'" in exa.stderr()
    )


def test_drift_in_exabgps_rib_is_repaired(host: str, tmp_path: Path) -> None:
    """The periodic check finds a prefix ExaBGP announces that we do not (a withdraw it
    dropped) and one we announced that it lacks, and repairs both."""
    path = tmp_path / "announcer.yaml"
    path.write_text(CONFIG + "exabgp:\n  verify_interval_seconds: 1\n")
    sh(host, "ip", "route", "add", "10.0.0.1/32", "dev", "vethr1")
    exa = FakeExaBGP(host, path)
    try:
        exa.expect("announce route 10.0.0.1/32 next-hop self")
        exa.rib = [
            "10.99.0.1 ipv4 unicast 10.0.0.77/32 next-hop 10.99.0.2"
        ]  # ExaBGP's truth drifted
        lines = exa.wait_for(
            lambda s: (
                {
                    "neighbor 10.99.0.1 withdraw route 10.0.0.77/32",
                    "announce route 10.0.0.1/32 next-hop self",
                }
                <= s
            ),
            10,
            "drift repaired",
        )
        assert lines
    finally:
        exa.close()
    assert "exabgp_rib_drift prefixes=2" in exa.stderr()
