"""The withdraw echo's bookkeeping, in process: announce times are kept only for the echo
window, so a large table does not keep one timestamp per prefix forever."""

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


def test_announce_times_are_forgotten_after_the_echo_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Config.model_validate(
        {
            "control": {"socket": str(tmp_path / "c.sock"), "state_directory": str(tmp_path)},
            "drain": {"maintenance_file": str(tmp_path / "maintenance")},
        }
    )
    announcer = runtime.Announcer(config, io.BytesIO(), io.BytesIO(), sources=[])
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
