"""``python -m bench.standin_exabgp STATUS -- COMMAND...``: plays ExaBGP for the announcer.

Starts COMMAND (the announcer) with pipes on its stdin/stdout, as ExaBGP does, and answers
at once: ``version`` with ``exabgp 5.0.15``, ``show adj-rib out`` with the routes it was
told (ExaBGP 5.0.15's text form), every other line with ``done``. No BGP, no peer: what
is left is the announcer's own work, so "kernel change -> line written" and the churn
tail measured against it are the announcer's share, without ExaBGP's backlog.

STATUS gets ``<routes held> <lines read>`` (replaced atomically, at most every 20 ms and
20 ms after the last change), for the bench to wait on. Exits when the announcer does.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

PEER = "10.99.0.1"
SELF = "10.99.0.2"
VERSION = "exabgp 5.0.15"


def prefixes_of(line: str) -> tuple[str | None, list[str]]:
    """("announce"|"withdraw", prefixes) of one of the announcer's route lines."""
    words = line.split()
    verb = "announce" if "announce" in words else "withdraw" if "withdraw" in words else None
    if "nlri" in words:
        return verb, words[words.index("nlri") + 1 :]
    if "route" in words:
        return verb, words[words.index("route") + 1 : words.index("route") + 2]
    return None, []


class Rib:
    """What ExaBGP would hold, and its answers."""

    def __init__(self) -> None:
        self.routes: dict[str, None] = {}
        self.lines = 0

    def answer(self, line: str) -> list[str]:
        self.lines += 1
        if line == "version":
            return [VERSION, "done"]
        if line == "show adj-rib out":
            family = {False: "ipv4", True: "ipv6"}
            shown = [f"{PEER} {family[':' in p]} unicast {p} next-hop {SELF}" for p in self.routes]
            return [*shown, "done"]
        verb, prefixes = prefixes_of(line)
        for prefix in prefixes:
            if verb == "announce":
                self.routes[prefix] = None
            else:
                self.routes.pop(prefix, None)
        return ["done"]


def _status(path: Path, rib: Rib) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{len(rib.routes)} {rib.lines}\n")
    os.replace(tmp, path)


def serve(status: Path, argv: list[str]) -> int:
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None
    assert proc.stdout is not None
    out, into = proc.stdout.fileno(), proc.stdin.fileno()
    rib, pending, dirty, written = Rib(), b"", False, 0.0
    _status(status, rib)
    while True:
        ready, _, _ = select.select([out], [], [], 0.02)
        if ready:
            chunk = os.read(out, 1 << 16)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            replies = [r for raw in lines for r in rib.answer(raw.decode())]
            if replies:
                data = "".join(f"{r}\n" for r in replies).encode()
                while data:
                    data = data[os.write(into, data) :]
            dirty = True
        now = time.monotonic()
        if dirty and (not ready or now - written >= 0.02):
            _status(status, rib)
            dirty, written = False, now
    _status(status, rib)
    return proc.wait()


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: python -m bench.standin_exabgp STATUS -- COMMAND...")
    sys.exit(serve(Path(sys.argv[1]), sys.argv[3:]))
