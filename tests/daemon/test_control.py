"""The control socket's directory: made with explicit modes whatever the umask (Debian's
ExaBGP runs its processes with umask 0o137), and a fallback under Debian's exabgp.service,
whose user cannot create /run/anycast-announcer."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from announcer.daemon.control import ControlServer, ensure_directory, request


def test_directories_get_their_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o137)  # Debian's /etc/exabgp/exabgp.env: umask = '0o137'
    try:
        ensure_directory(tmp_path / "run" / "anycast-announcer")
    finally:
        os.umask(old)
    for made in (tmp_path / "run", tmp_path / "run" / "anycast-announcer"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o750
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o700)
    ensure_directory(existing)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o700  # an existing one is left alone


def test_the_socket_answers_when_made_under_a_harsh_umask(tmp_path: Path) -> None:
    path = tmp_path / "run" / "control.sock"

    async def scenario() -> dict[str, object]:
        server = ControlServer(path, lambda request: {"ok": True, "seen": request["command"]})
        old = os.umask(0o137)
        try:
            await server.start()
        finally:
            os.umask(old)
        try:
            return await asyncio.to_thread(request, path, {"command": "status"})
        finally:
            await server.close()

    assert asyncio.run(scenario()) == {"ok": True, "seen": "status"}


def test_a_directory_it_cannot_create_falls_back_to_the_units_runtime_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under Debian's exabgp.service the announcer runs as user exabgp, which may not create
    /run/anycast-announcer; systemd gives the unit RUNTIME_DIRECTORY=/run/exabgp."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    runtime = Path(tempfile.mkdtemp(prefix="aactl-", dir="/tmp"))  # AF_UNIX paths are short
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime))

    async def scenario() -> tuple[Path, dict[str, object]]:
        server = ControlServer(blocked / "control.sock", lambda r: {"ok": True})
        await server.start()
        try:
            return server.path, await asyncio.to_thread(request, server.path, {"command": "x"})
        finally:
            await server.close()

    try:
        used, answer = asyncio.run(scenario())
    finally:
        shutil.rmtree(runtime)
    assert used == runtime / "anycast-announcer" / "control.sock"
    assert answer == {"ok": True}
