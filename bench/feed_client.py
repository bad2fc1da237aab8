"""The driving side of bench.launcher_feed (the stand-in API process): its directory, the
ExaBGP ``process`` block that runs it, and one command -> its JSON answer. Used by the
floor (bench/floor.py) and the launcher bench (bench/launcher.py); kept out of
bench.launcher_feed itself, which ExaBGP runs and which imports nothing it does not need."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.netlab import poll


class FeedClient:
    """Commands to the stand-in through ``DIR/ctl.fifo``, answers from ``DIR/results.jsonl``."""

    def __init__(self, feed_dir: Path) -> None:
        self.feed_dir = feed_dir
        self.answered = 0

    def prepare(self) -> None:
        """The directory and the FIFO, before ExaBGP starts the stand-in."""
        self.feed_dir.mkdir(parents=True, exist_ok=True)
        fifo = self.feed_dir / "ctl.fifo"
        if not fifo.exists():
            os.mkfifo(fifo)

    def process_block(self) -> str:
        """ExaBGP's ``process feed`` block running the stand-in on this directory."""
        run = f"{sys.executable} -m bench.launcher_feed {self.feed_dir}"
        return f"process feed {{\n    run {run};\n    encoder json;\n}}\n"

    def _fifo(self) -> int | None:
        try:  # non-blocking: ENXIO until the stand-in has opened its end
            return os.open(self.feed_dir / "ctl.fifo", os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return None

    def command(self, line: str, timeout: float = 600, interval: float = 0.005) -> dict[str, Any]:
        """One command to the stand-in; its JSON answer (see bench.launcher_feed)."""
        fd = poll(self._fifo, 30, "the stand-in's command FIFO", interval=0.02)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)
        results = self.feed_dir / "results.jsonl"

        def answer() -> dict[str, Any] | None:
            if not results.exists():
                return None
            lines = results.read_text().splitlines()
            return json.loads(lines[self.answered]) if len(lines) > self.answered else None

        found = poll(answer, timeout, f"the stand-in's answer to {line!r}", interval=interval)
        self.answered += 1
        return found
