"""The control socket: ``announcer status|drain|undrain`` talk to the running daemon.

A unix stream socket, mode 0600, that answers only peers whose uid is 0 (SO_PEERCRED).
One JSON object per line in, one JSON object per line out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("announcer.control")

MAX_REQUEST_BYTES = 64 * 1024
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(Exception):
    """The daemon could not be reached or refused the request."""


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def ensure_directory(path: Path, mode: int = 0o750) -> None:
    """Create ``path`` (and its parents) with exactly ``mode``, whatever the umask: under
    Debian's ExaBGP (umask 0o137) a plain mkdir made /run/anycast-announcer drw-r-----,
    which no one can enter. An existing directory is left as its owner made it."""
    missing = []
    for parent in (path, *path.parents):
        if parent.exists():
            break
        missing.append(parent)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            os.chmod(directory, mode)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")


def fallback_socket() -> Path | None:
    """Where the socket goes when its directory cannot be made: systemd's RuntimeDirectory
    of the unit that runs ExaBGP (Debian's exabgp.service: /run/exabgp, user exabgp)."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime) / "anycast-announcer" / "control.sock" if runtime else None


# `announcer status` looks here when there is no socket at control.socket (Debian's layout).
DEBIAN_SOCKET = Path("/run/exabgp/anycast-announcer/control.sock")


def locate(configured: Path) -> Path:
    """The socket to talk to: the configured one, or the fallback under Debian's exabgp."""
    if not configured.exists() and DEBIAN_SOCKET.exists():
        return DEBIAN_SOCKET
    return configured


class ControlServer:
    def __init__(self, path: Path, handler: Handler, allowed_uids: frozenset[int] = frozenset({0})):
        self.path = path
        self.handler = handler
        self.allowed_uids = allowed_uids
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        try:
            ensure_directory(self.path.parent)
        except OSError:  # e.g. Debian's exabgp user may not create /run/anycast-announcer
            fallback = fallback_socket()
            if fallback is None:
                raise
            log.warning("control_socket_fallback path=%s fallback=%s", self.path, fallback)
            self.path = fallback
            ensure_directory(self.path.parent)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)  # the socket is created 0600
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock)
            # read the request first, even to refuse it: answering before the peer has
            # written races its write into a broken pipe
            line = await asyncio.wait_for(reader.readline(), 5.0)
            if uid not in self.allowed_uids:
                log.warning("control_refused uid=%d", uid)
                await self._reply(writer, {"ok": False, "error": "permission denied: root only"})
                return
            if len(line) > MAX_REQUEST_BYTES:
                await self._reply(writer, {"ok": False, "error": "request too large"})
                return
            request = _object(line)
            if request is None:
                await self._reply(writer, {"ok": False, "error": "request is not a JSON object"})
                return
            await self._reply(writer, self.handler(request))
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
            log.warning("control_request_failed error=%s", exc)
        finally:
            writer.close()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
        writer.write(json.dumps(payload).encode() + b"\n")
        await writer.drain()


def _object(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def request(path: Path, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the running daemon and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps(payload).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise ControlError(f"cannot talk to the announcer at {path}: {exc}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"the announcer at {path} answered garbage: {data[:200]!r}") from None
    if not isinstance(answer, dict):
        raise ControlError(f"the announcer at {path} answered {answer!r}")
    return answer
