"""``python -m bench.probe run -c FILE``: the announcer with stage timestamps (bench only).

The shipped announcer has no timing hooks, so this entry point wraps four of its seams
before running the ordinary ``announcer run`` (nothing in announcer/ changes):

  nl  netlink datagrams read (NetlinkSubscription.read), with the /32s they carried
  rs/re  a reconcile started / ended (Announcer.reconcile)
  q   a line handed to the channel (ExaBGPChannel.send)
  w   lines written to ExaBGP's pipe (the writer thread's os.write)
  a   replies (``done``/``error``) read from ExaBGP (the reader thread's os.read)
  gc  a cyclic garbage collection of 1 ms or more: its generation and duration

Each record is one line ``tag monotonic data`` appended to $BENCH_PROBE_LOG. Replies come in
the order lines were written, so the n-th ``a`` belongs to the n-th line of ``q``.

With $BENCH_PROBE_TRACEMALLOC=FILE (a memory profile; it slows the process and inflates
its RSS, so never in a measured run) tracemalloc runs from the start, and each SIGUSR1
appends to FILE the 30 source lines holding the most memory and the traced peak.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
import tracemalloc
import types
from typing import Any

from announcer import cli
from announcer.daemon import app
from announcer.events import RouteAdded, RouteRemoved
from announcer.exabgp import channel as channel_module
from announcer.exabgp.channel import ExaBGPChannel
from announcer.sources import kernel as kernel_module

_LOG = os.open(
    os.environ.get("BENCH_PROBE_LOG", os.devnull), os.O_WRONLY | os.O_APPEND | os.O_CREAT
)
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

_real_reconcile = app.Announcer.reconcile


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


_gc_started = [0.0]


def _gc(phase: str, info: dict[str, int]) -> None:
    """Python's cyclic collector: record collections of 1 ms or more (``gc gen seconds``)."""
    now = time.monotonic()
    if phase == "start":
        _gc_started[0] = now
    elif now - _gc_started[0] >= 0.001:
        record("gc", f"{info['generation']} {now - _gc_started[0]:.6f}")


def _dump_memory(path: str) -> None:
    current, peak = tracemalloc.get_traced_memory()
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))  # noqa: SIM115
    stats = tracemalloc.take_snapshot().statistics("lineno")[:30]
    with open(path, "a") as out:
        out.write(f"# traced {current / 2**20:.1f} MB (peak {peak / 2**20:.1f}), VmRSS "
                  f"{status['VmRSS'].strip()}, VmHWM {status['VmHWM'].strip()}\n")  # fmt: skip
        out.writelines(f"{stat}\n" for stat in stats)


def _memory_profile() -> None:
    path = os.environ.get("BENCH_PROBE_TRACEMALLOC")
    if path:
        tracemalloc.start(1)
        signal.signal(signal.SIGUSR1, lambda *_: _dump_memory(path))


def install() -> None:
    _memory_profile()
    gc.callbacks.append(_gc)
    kernel_module.NetlinkSubscription.read = _nl_read  # type: ignore[method-assign]
    app.Announcer.reconcile = _reconcile  # type: ignore[method-assign]
    ExaBGPChannel.send = _send  # type: ignore[method-assign]
    channel_module.os = _OsProxy()  # type: ignore[assignment]


if __name__ == "__main__":
    install()
    sys.exit(cli.main())
