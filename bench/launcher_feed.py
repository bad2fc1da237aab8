"""The stand-in API process of bench/launcher.py: writes the announcer's lines to ExaBGP.

    python -m bench.launcher_feed DIR        (ExaBGP runs it, from its ``process`` block)

Commands arrive one a line on the FIFO ``DIR/ctl.fifo`` and each gets one JSON line in
``DIR/results.jsonl``:

* ``up``: wait for a neighbor ``up`` state message;
* ``announce FIRST COUNT`` / ``withdraw FIRST COUNT``: the /32s FIRST_PREFIX + FIRST + i,
  as the announcer renders them (``render_batches``: 200 prefixes a line, ``next-hop
  self``), with at most WINDOW lines unacknowledged (the announcer's send window);
* ``one ADDRESS``: ``announce route ADDRESS/32 next-hop self`` (ADDRESS an integer);
  ``wone ADDRESS``: ``withdraw route ADDRESS/32`` (both as the announcer renders them);
* ``show``: ``show adj-rib out``, its lines saved in ``DIR/show-N.txt``.

Times are CLOCK_MONOTONIC (``t0`` just before the first write), comparable with the BGP
sink's receive times in the bench process.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

FIRST_PREFIX = int(IPv4Address("10.16.0.0"))
WINDOW = 64


def _lines(kind: str, first: int, count: int) -> list[str]:
    from announcer.core.plan import Announce, Withdraw
    from announcer.exabgp.commands import render_batches
    from announcer.model import Advert, Prefix

    prefixes = [Prefix.make(4, FIRST_PREFIX + first + i, 32) for i in range(count)]
    advert = Advert()
    commands = [Announce(p, advert) if kind == "announce" else Withdraw(p) for p in prefixes]
    return [line for line, _ in render_batches(commands)]


def _one(kind: str, address: int) -> str:
    """The announcer's line for one /32: ``announce route P/32 next-hop self`` (one) or
    ``withdraw route P/32`` (wone)."""
    from announcer.core.plan import Announce, Withdraw
    from announcer.exabgp.commands import render
    from announcer.model import DEFAULT_ADVERT, Prefix

    prefix = Prefix.make(4, address, 32)
    return render(Announce(prefix, DEFAULT_ADVERT) if kind == "one" else Withdraw(prefix))


def _read_exabgp(inbox: queue.Queue[tuple[str, str, float]]) -> None:
    for raw in sys.stdin:
        line, now = raw.rstrip("\n"), time.monotonic()
        if line in ("done", "error"):
            inbox.put(("ack", line, now))
        elif line.startswith("{"):
            if '"state"' in line and '"up"' in line:
                inbox.put(("up", line, now))
        else:
            inbox.put(("text", line, now))
    os._exit(0)


def _write(line: str) -> float:
    now = time.monotonic()
    os.write(1, f"{line}\n".encode())
    return now


def _send(lines: list[str], inbox: queue.Queue[tuple[str, str, float]]) -> dict[str, Any]:
    """Write lines with at most WINDOW unacknowledged; wait for every ack."""
    acks: list[str] = []
    started, last_ack, outstanding = time.monotonic(), 0.0, 0
    for line in [*lines, None]:
        while outstanding and (line is None or outstanding >= WINDOW):
            kind, text, when = inbox.get()
            if kind == "ack":
                acks.append(text)
                outstanding, last_ack = outstanding - 1, when
        if line is not None:
            _write(line)
            outstanding += 1
    return {
        "t0": started,
        "t_last_ack": last_ack,
        "done": acks.count("done"),
        "error": acks.count("error"),
        "lines": len(lines),
    }


def _feed_show(inbox: queue.Queue[tuple[str, str, float]], path: Path) -> dict[str, Any]:
    started, shown = _write("show adj-rib out"), []
    while True:
        kind, text, when = inbox.get()
        if kind == "text":
            shown.append(text)
        elif kind == "ack":
            break
    path.write_text("".join(f"{line}\n" for line in shown))
    return {"t0": started, "t_done": when, "ack": text, "routes": len(shown)}


def feed(workdir: Path) -> None:
    """ExaBGP's API process: commands from DIR/ctl.fifo, one JSON result line each."""
    inbox: queue.Queue[tuple[str, str, float]] = queue.Queue()
    threading.Thread(target=_read_exabgp, args=(inbox,), daemon=True).start()
    fd, pending, shows = os.open(workdir / "ctl.fifo", os.O_RDWR), b"", 0
    while True:
        pending += os.read(fd, 4096)
        while b"\n" in pending:
            raw, pending = pending.split(b"\n", 1)
            words = raw.decode().split()
            result: dict[str, Any] = {"command": words}
            if words[0] == "up":
                while inbox.get()[0] != "up":
                    pass
            elif words[0] in ("announce", "withdraw"):
                result |= _send(_lines(words[0], int(words[1]), int(words[2])), inbox)
            elif words[0] in ("one", "wone"):
                result |= _send([_one(words[0], int(words[1]))], inbox)
            elif words[0] == "show":
                shows += 1
                result |= _feed_show(inbox, workdir / f"show-{shows}.txt")
            with (workdir / "results.jsonl").open("a") as out:
                out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    feed(Path(sys.argv[1]))
