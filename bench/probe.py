"""``python -m bench.probe run -c FILE``: the announcer with stage timestamps (bench only).

The shipped announcer has no timing hooks, so this entry point wraps four of its seams
before running the ordinary ``announcer run`` (nothing in announcer/ changes):

  nl  netlink datagrams read (NetlinkSubscription.read), with the /32s they carried
  rs/re  a reconcile started / ended (Announcer.reconcile)
  q   a line handed to the channel (ExaBGPChannel.send)
  w   lines written to ExaBGP's pipe (the writer thread's os.write)
  a   replies (``done``/``error``) read from ExaBGP (the reader thread's os.read)

Each record is one line ``tag monotonic data`` appended to $BENCH_PROBE_LOG. Replies come in
the order lines were written, so the n-th ``a`` belongs to the n-th line of ``q``.

With BENCH_GROUP=N > 1 it is also a *prototype* of grouped announcements: the writer
thread turns runs of ``announce route P next-hop self`` into ``announce attributes next-hop
self nlri P1 P2 ...`` (and withdraws likewise), up to N prefixes per line, and expands the
single reply of a grouped line back into one reply per original command. This measures
what grouping would give; the real change belongs to announcer/exabgp (see docs/performance.md).
"""

from __future__ import annotations

import os
import queue
import sys
import time
import types
from collections import deque
from typing import Any

from announcer import cli, runtime
from announcer.events import RouteAdded, RouteRemoved
from announcer.exabgp import channel as channel_module
from announcer.exabgp.channel import ExaBGPChannel
from announcer.exabgp.commands import Ack, parse_message
from announcer.sources import kernel as kernel_module

_LOG = os.open(
    os.environ.get("BENCH_PROBE_LOG", os.devnull), os.O_WRONLY | os.O_APPEND | os.O_CREAT
)
GROUP = int(os.environ.get("BENCH_GROUP", "0") or 0)
_real_write = os.write
_real_read = os.read


def record(tag: str, data: str = "") -> None:
    _real_write(_LOG, f"{tag} {time.monotonic():.6f} {data}\n".encode())


# --- netlink ------------------------------------------------------------------------

_real_nl_read = kernel_module.NetlinkSubscription.read


def _nl_read(self: Any, max_datagrams: int = 256) -> Any:
    events = _real_nl_read(self, max_datagrams)
    if events:
        changes = [
            ("+" if isinstance(e, RouteAdded) else "-") + str(e.route.prefix.network_address)
            for e in events
            if isinstance(e, RouteAdded | RouteRemoved)
        ]
        record("nl", ",".join(changes))
    return events


# --- reconcile and the channel ------------------------------------------------------

_real_reconcile = runtime.Announcer.reconcile


def _reconcile(self: Any) -> None:
    record("rs")
    _real_reconcile(self)
    record("re")


_real_send = ExaBGPChannel.send


def _send(self: Any, line: str, query: bool = False) -> Any:
    record("q", line)
    return _real_send(self, line, query)


class _OsProxy(types.SimpleNamespace):
    """The channel module's ``os``: write/read timed, everything else passed through."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def write(fd: int, data: Any) -> int:
        written = _real_write(fd, data)
        record("w", str(bytes(data[:written]).count(b"\n")))
        return written

    @staticmethod
    def read(fd: int, size: int) -> bytes:
        data = _real_read(fd, size)
        acks = data.count(b"done\n") + data.count(b"error\n")
        if acks:
            record("a", str(acks))
        return data


# --- the grouping prototype ---------------------------------------------------------

_GROUPS: deque[int] = deque()  # per written line, how many commands it carries


def group_lines(lines: list[str], limit: int) -> list[tuple[str, int]]:
    """Runs of plain announces/withdraws -> ``announce/withdraw attributes ... nlri``."""
    out: list[tuple[str, int]] = []
    run: list[str] = []
    verb = ""

    def flush() -> None:
        if run:
            if len(run) == 1:
                out.append(
                    (f"{verb} route {run[0]}" + (" next-hop self" if verb == "announce" else ""), 1)
                )
            else:
                out.append((f"{verb} attributes next-hop self nlri " + " ".join(run), len(run)))
            run.clear()

    for line in lines:
        words = line.split()
        kind = ""
        if (
            len(words) == 5
            and words[:2] == ["announce", "route"]
            and words[3:] == ["next-hop", "self"]
        ):
            kind = "announce"
        elif len(words) == 3 and words[:2] == ["withdraw", "route"]:
            kind = "withdraw"
        if kind and kind == verb and len(run) < limit:
            run.append(words[2])
            continue
        flush()
        if kind:
            verb = kind
            run.append(words[2])
        else:
            verb = ""
            out.append((line, 1))
    flush()
    return out


def _grouped_write(self: Any) -> None:
    fd = self._stdout.fileno()
    closing = False
    while not closing:
        item = self._outbox.get()
        batch: list[str] = []
        while True:
            if item is None:
                closing = True
                break
            batch.append(item)
            if len(batch) >= 4096:
                break
            try:
                item = self._outbox.get_nowait()
            except queue.Empty:
                break
        if not batch:
            continue
        grouped = group_lines(batch, GROUP)
        _GROUPS.extend(size for _, size in grouped)
        data = memoryview(("\n".join(line for line, _ in grouped) + "\n").encode())
        while data:
            written = _real_write(fd, data)
            data = data[written:]
        record("w", str(len(batch)))


_real_on_line = ExaBGPChannel._on_line


def _grouped_on_line(self: Any, line: str) -> None:
    if isinstance(parse_message(line), Ack) and _GROUPS:
        for _ in range(_GROUPS.popleft()):
            _real_on_line(self, line)
        return
    _real_on_line(self, line)


def install() -> None:
    kernel_module.NetlinkSubscription.read = _nl_read  # type: ignore[method-assign]
    runtime.Announcer.reconcile = _reconcile  # type: ignore[method-assign]
    ExaBGPChannel.send = _send  # type: ignore[method-assign]
    channel_module.os = _OsProxy()  # type: ignore[assignment]
    if GROUP > 1:
        ExaBGPChannel._write = _grouped_write  # type: ignore[method-assign]
        ExaBGPChannel._on_line = _grouped_on_line  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    sys.exit(cli.main())
