"""An ExaBGP API helper that runs `announcer run` and copies lines both ways, except ONE.

    python rewrite_shim.py STATE_DIR

ExaBGP's ``process`` runs this; it runs the announcer (argv from ``STATE_DIR/shim.json``)
and copies ExaBGP's lines to it and its lines to ExaBGP, except that the first announcer
line announcing ``prefix`` has that prefix replaced by ``replacement`` (e.g. 192.0.2.300/32,
which ExaBGP cannot parse: 4.2.21 then answers nothing, 5.0.15 ``error``). The rewrite
happens once over all generations: ``STATE_DIR/rewritten`` is created exclusively.

When the announcer exits, so does the shim, and ExaBGP respawns both. With ``hold_respawn``
a shim started after the rewrite waits for ``STATE_DIR/go`` before it runs the announcer,
so a test can change the host while no announcer runs at all.

Everything the shim sees goes to ``STATE_DIR/events.jsonl`` (one JSON object per line,
times from ``time.monotonic()``, which is one clock for every process of the machine); the
announcer's stderr (its log) goes to ``STATE_DIR/announcer.log``. Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HOLD_DEADLINE_SECONDS = 60.0
REPLIES = (b"done", b"error")


class Shim:
    def __init__(self, state: Path) -> None:
        self.state = state
        settings = json.loads((state / "shim.json").read_text())
        self.argv: list[str] = settings["argv"]
        self.prefix: str = settings["prefix"]
        self.replacement: str = settings["replacement"]
        self.hold_respawn: bool = settings.get("hold_respawn", False)
        self.child: subprocess.Popen[bytes] | None = None
        self.sent = 0  # lines from the announcer to ExaBGP
        self.replies = 0  # done/error lines from ExaBGP to the announcer
        self.last_reply: float | None = None
        self._lock = threading.Lock()

    def event(self, name: str, **fields: Any) -> None:
        record = {"event": name, "t": time.monotonic(), "shim": os.getpid(), **fields}
        with self._lock, (self.state / "events.jsonl").open("a") as out:
            out.write(json.dumps(record) + "\n")

    # --- the announcer's lines to ExaBGP ---

    def rewrite(self, line: bytes) -> bytes:
        """line, or line with the marker prefix replaced, the first time only."""
        words = line.decode().split()
        if "announce" not in words or self.prefix not in words:
            return line
        try:
            (self.state / "rewritten").open("x").close()
        except FileExistsError:
            return line
        words[words.index(self.prefix)] = self.replacement
        return (" ".join(words) + "\n").encode()

    def forward_announcer(self) -> None:
        assert self.child is not None
        assert self.child.stdout is not None
        for line in self.child.stdout:
            sent = self.rewrite(line)
            try:
                write_all(1, sent)
            except OSError:  # ExaBGP is gone: end the announcer, which ends the shim
                self.child.terminate()
                continue
            self.sent += 1
            if sent != line:
                self.event("rewritten", line=line.decode().strip(), sent=sent.decode().strip())

    # --- ExaBGP's lines to the announcer ---

    def forward_exabgp(self) -> None:
        assert self.child is not None
        assert self.child.stdin is not None
        target, pending = self.child.stdin.fileno(), b""
        try:
            while chunk := os.read(0, 1 << 16):
                *lines, pending = (pending + chunk).split(b"\n")
                answered = sum(line.strip() in REPLIES for line in lines)
                if answered:
                    self.replies += answered
                    self.last_reply = time.monotonic()
                write_all(target, chunk)
        except OSError:  # the announcer is gone: its exit ends the shim
            return
        finally:
            self.child.stdin.close()

    # --- lifecycle ---

    def hold(self) -> None:
        """After the rewrite (a respawn), wait for the test's go, if asked to."""
        if not (self.hold_respawn and (self.state / "rewritten").exists()):
            return
        self.event("held")
        deadline = time.monotonic() + HOLD_DEADLINE_SECONDS
        while not (self.state / "go").exists():
            if time.monotonic() > deadline:
                self.event("hold_timed_out")
                return
            time.sleep(0.01)  # a helper waiting for a file, not a test synchronising
        self.event("released")

    def run(self) -> int:
        self.event("shim_started")
        signal.signal(signal.SIGTERM, self.on_sigterm)
        self.hold()
        with (self.state / "announcer.log").open("ab") as log:
            self.child = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
            )
        self.event("announcer_spawned", pid=self.child.pid)
        threading.Thread(target=self.forward_exabgp, daemon=True).start()
        self.forward_announcer()
        code = self.child.wait()
        self.event(
            "announcer_exited",
            pid=self.child.pid,
            code=code,
            sent=self.sent,
            replies=self.replies,
            last_reply=self.last_reply,
        )
        return code

    def on_sigterm(self, _signum: int, _frame: object) -> None:
        if self.child is None:
            os._exit(0)
        self.child.terminate()  # its exit ends the copy loop, then the shim


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


if __name__ == "__main__":
    code = Shim(Path(sys.argv[1])).run()
    os._exit(code if code >= 0 else 128 - code)
