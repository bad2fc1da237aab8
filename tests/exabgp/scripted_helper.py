"""A scripted ExaBGP API process for contract tests (run by ExaBGP, not imported).

    python scripted_helper.py DIR

* lines written to the FIFO ``DIR/ctl.fifo`` are forwarded to stdout (to ExaBGP), one
  write(2) per line; ``@BATCH a|b|c`` forwards the lines a, b, c in a single write(2), so
  ExaBGP reads them in one go; ``@EXIT <code>`` makes the helper exit with that code;
* every line read from stdin (from ExaBGP) is appended to ``DIR/helper.log``;
* stdin EOF (ExaBGP gone) is logged and ends the helper;
* if ``DIR/crash`` exists at start, the helper exits at once with code 3 (a crash loop).

``DIR/helper.log`` has one record per line, ``<epoch> <pid> <KIND> <text>``, KIND one of
START, IN, OUT, EOF, SIGTERM, EXIT. Records are single appends, so several helper
generations (respawns) can share the file.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

_lock = threading.Lock()


def _record(log: Path, kind: str, text: str = "") -> None:
    line = f"{time.time():.6f} {os.getpid()} {kind} {text}\n"
    with _lock, log.open("a") as out:
        out.write(line)


def _forward_control(fifo: Path, log: Path) -> None:
    """FIFO lines -> stdout. O_RDWR keeps the FIFO open, so no EOF when a writer leaves."""
    fd = os.open(fifo, os.O_RDWR)
    pending = b""
    while True:
        pending += os.read(fd, 65536)
        while b"\n" in pending:
            raw, pending = pending.split(b"\n", 1)
            line = raw.decode()
            if line.startswith("@EXIT"):
                code = int(line.split()[1])
                _record(log, "EXIT", str(code))
                os._exit(code)
            lines = (
                line.removeprefix("@BATCH ").split("|") if line.startswith("@BATCH ") else [line]
            )
            try:
                os.write(1, "".join(f"{one}\n" for one in lines).encode())
            except OSError as exc:
                _record(log, "EXIT", f"stdout {exc}")
                os._exit(4)
            for one in lines:
                _record(log, "OUT", one)


def main(argv: list[str]) -> int:
    workdir = Path(argv[1])
    log = workdir / "helper.log"
    _record(log, "START", f"ppid={os.getppid()} pgid={os.getpgrp()} uid={os.getuid()}")
    if (workdir / "crash").exists():
        _record(log, "EXIT", "3 crash")
        return 3

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        _record(log, "SIGTERM")
        os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    threading.Thread(target=_forward_control, args=(workdir / "ctl.fifo", log), daemon=True).start()
    for raw in sys.stdin.buffer:
        _record(log, "IN", raw.decode(errors="replace").rstrip("\n"))
    _record(log, "EOF")
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
