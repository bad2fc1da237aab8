"""The probes behind health checks: TCP connect, HTTP(S) GET, UDP send/expect, exec.

All asyncio on the caller's loop, no thread per check. Every probe is bounded by its spec's
timeout and returns a :class:`ProbeResult`; a failure (refused, timed out,
wrong status, bad reply, non-zero exit) is a result with a detail, never an exception.

HTTPS does not verify the certificate: the instance is addressed by its IP, which its
certificate normally does not name, and what we want to know is whether the service answers
on the path traffic takes, not who it is. The request carries ``Host: <address>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from announcer.model import quote
from announcer.spec.checks import CheckTarget

if TYPE_CHECKING:
    from ipaddress import IPv4Address, IPv6Address

EXEC_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
MAX_STATUS_LINE = 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9]{2})(?: |\r?\n)")
USER_AGENT = "anycast-announcer-health"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    detail: str  # what was probed and what happened; made safe before it is shown


Probe = Callable[[CheckTarget], Awaitable[ProbeResult]]


async def run_probe(target: CheckTarget) -> ProbeResult:
    """Probe target once, within its timeout."""
    spec = target.spec
    what = _describe(target)
    try:
        async with asyncio.timeout(spec.timeout):
            if spec.kind == "tcp":
                return await _tcp(target, what)
            if spec.kind in ("http", "https"):
                return await _http(target, what)
            if spec.kind == "udp":
                return await _udp(target, what)
            return await _exec(target, what)
    except TimeoutError:
        return ProbeResult(False, f"{what} timed out after {spec.timeout:g}s")
    except OSError as exc:
        return ProbeResult(False, f"{what} {_os_error(exc)}")


def _describe(target: CheckTarget) -> str:
    spec = target.spec
    if spec.kind == "exec":
        where = f" in netns {quote(target.netns)}" if target.netns else ""
        return f"exec {spec.command[0]}{where}"
    return f"{spec.kind} {_hostport(target.address, spec.port or 0)}"


def _hostport(address: IPv4Address | IPv6Address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _os_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connect refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    reason = exc.strerror or type(exc).__name__
    return f"failed: {reason}"


async def _tcp(target: CheckTarget, what: str) -> ProbeResult:
    family = socket.AF_INET6 if target.address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (str(target.address), target.spec.port))
    finally:
        sock.close()
    return ProbeResult(True, f"{what} connected")


@functools.cache
def _insecure_tls() -> ssl.SSLContext:
    """TLS without verification: instances are addressed by IP (see the module docstring)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _http(target: CheckTarget, what: str) -> ProbeResult:
    spec = target.spec
    tls = _insecure_tls() if spec.kind == "https" else None
    port = spec.port or 0
    reader, writer = await asyncio.open_connection(
        str(target.address), port, ssl=tls, limit=MAX_STATUS_LINE
    )
    try:
        default_port = 443 if tls else 80
        host = _hostport(target.address, port) if port != default_port else str(target.address)
        if target.address.version == 6 and port == default_port:
            host = f"[{target.address}]"
        request = (
            f"GET {spec.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("ascii"))
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            line = exc.partial
        except asyncio.LimitOverrunError:
            return ProbeResult(False, f"{what} status line longer than {MAX_STATUS_LINE} bytes")
    finally:
        writer.transport.abort()  # we only want the status; no lingering or TLS shutdown
    match = _STATUS_LINE.match(line)
    if match is None:
        shown = quote(line.decode("latin-1"), limit=40) if line else "nothing"
        return ProbeResult(False, f"{what}{spec.path} answered {shown}, not an HTTP status line")
    status = int(match[1])
    if status != spec.expect_status:
        return ProbeResult(False, f"{what}{spec.path} status {status}, want {spec.expect_status}")
    return ProbeResult(True, f"{what}{spec.path} status {status}")


class _FirstReply(asyncio.DatagramProtocol):
    def __init__(self, reply: asyncio.Future[bytes]) -> None:
        self.reply = reply

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable on the connected socket
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _udp(target: CheckTarget, what: str) -> ProbeResult:
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[bytes] = loop.create_future()
    family = socket.AF_INET6 if target.address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((str(target.address), target.spec.port or 0))  # replies from it only
        transport, _ = await loop.create_datagram_endpoint(lambda: _FirstReply(reply), sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        # Sent on the socket itself: the transport silently drops an empty datagram, and
        # an empty one is a legitimate probe ("any reply will do").
        sock.send(target.spec.send)
        data = await reply
    finally:
        transport.abort()
    if target.spec.expect not in data:
        return ProbeResult(False, f"{what} reply of {len(data)} bytes lacks the expected bytes")
    return ProbeResult(True, f"{what} reply of {len(data)} bytes")


async def _exec(target: CheckTarget, what: str) -> ProbeResult:
    """Run the command in its own session; its whole process group dies when the probe ends."""
    argv = list(target.spec.command)
    if target.netns:
        argv = ["ip", "netns", "exec", target.netns, *argv]
    env = {**EXEC_ENV, "ANYCAST_CHECK_ADDRESS": str(target.address)}
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        code = await process.wait()
    finally:
        # On timeout or cancellation the leader is still running; on a normal exit it may
        # have left children behind. Either way nothing of the check may outlive it.
        _kill_group(process.pid)
        if process.returncode is None:
            await process.wait()
    if code == 0:
        return ProbeResult(True, f"{what} exit 0")
    if code < 0:
        return ProbeResult(False, f"{what} killed by signal {-code}")
    return ProbeResult(False, f"{what} exit {code}")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
