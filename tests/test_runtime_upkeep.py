"""The runtime's upkeep, in process: announce times are kept only for the withdraw echo's
window, and the periodic adj-rib-out check stays cheap (ExaBGP runs no route command while
it prints its adj-rib-out)."""

from __future__ import annotations

import io
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from announcer import runtime
from announcer.config import Config
from announcer.core.plan import Announce, Withdraw
from announcer.model import Announcement


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, **exabgp: object) -> runtime.Announcer:
    config = Config.model_validate(
        {
            "control": {"socket": str(tmp_path / "c.sock"), "state_directory": str(tmp_path)},
            "drain": {"maintenance_file": str(tmp_path / "maintenance")},
            "exabgp": exabgp,
        }
    )
    return runtime.Announcer(config, io.BytesIO(), io.BytesIO(), sources=[])


def test_announce_times_are_forgotten_after_the_echo_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    announcer = make(tmp_path)
    clock = Clock()
    monkeypatch.setattr(runtime.time, "monotonic", clock)
    sent: list[str] = []
    monkeypatch.setattr(announcer.channel, "send", lambda line, query=False: sent.append(line) or _Done())
    old, new = IPv4Network("10.0.0.1/32"), IPv4Network("10.0.0.2/32")
    announcer._send("a", [Announce(Announcement(old))], quiet=True)
    clock.now += runtime.ECHO_WINDOW - 1
    announcer._send("b", [Announce(Announcement(new))], quiet=True)
    clock.now += 2  # old is past the window, new is not
    announcer._forget_old_announces()
    assert set(announcer._announced_at) == {new}
    # a withdraw right after its announce is echoed; one long after is not
    announcer._send("c", [Withdraw(old), Withdraw(new)], quiet=True)
    assert set(announcer._echo) == {Withdraw(new)}
    # pruning is at most once per window: cheap on every tick
    announcer._announced_at[old] = clock.now - 10 * runtime.ECHO_WINDOW
    announcer._forget_old_announces()
    assert old in announcer._announced_at


class _Done:
    def add_done_callback(self, callback: object) -> None:
        pass


def test_the_rib_check_skips_big_tables_and_spaces_itself_by_its_cost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    announcer = make(tmp_path, verify_max_routes=3)
    prefixes = [IPv4Network((0x0A000000 + i, 32)) for i in range(4)]
    for prefix in prefixes[:3]:
        announcer.table.record(Announce(Announcement(prefix)))
    assert announcer._verify_due(100.0)
    announcer.table.record(Announce(Announcement(prefixes[3])))
    with caplog.at_level("INFO"):
        assert not announcer._verify_due(100.0)
        assert not announcer._verify_due(200.0)
    skipped = [r for r in caplog.records if "exabgp_rib_check_skipped" in r.getMessage()]
    assert len(skipped) == 1  # said once, not every interval
    assert "routes=4 verify_max_routes=3" in skipped[0].getMessage()
    announcer.table.record(Withdraw(prefixes[3]))
    announcer._verify_not_before = 150.0  # the last check took 1 s at t=100: 50x apart
    assert not announcer._verify_due(149.0)
    assert announcer._verify_due(150.0)
