"""Run the documentation's shell blocks as written, on a throwaway view of this machine.

``Host`` is a private mount namespace (``unshare --mount --propagation private``) inside a
test network namespace: /etc, /opt, /usr, /var and /root are overlays of the machine's
(every write lands under the test's workdir), /run is a fresh tmpfs with a 1777 /run/lock,
and /usr/bin/systemctl is tests/unitrun.py (there is no systemd PID 1 here). Nothing the
blocks do reaches the machine's own directories, addresses or routes.

A block runs with ``bash -e -o pipefail -x`` from a copy of the project's files, with
Debian's root PATH and environment (``env -i``), plus:

* ``EDITOR``: a program that applies the edits the docs tell the user to make (``set
  policy.allow``), as explicit substitutions given by the test; it fails when the text to
  replace is not in the file, so a changed file cannot silently skip an edit;
* ``PIP_NO_INDEX``/``PIP_FIND_LINKS``: pip installs from a local wheelhouse made before
  (the block runs in a namespace with no route out), ``PIP_CONFIG_FILE=/dev/null``: not
  this machine's pip configuration, as on a fresh Debian.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.netlab import REPO, kill_and_wait, poll, session_pids

DEBIAN_ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OVERLAID = ("etc", "opt", "usr", "var", "root")
UNITRUN = REPO / "tests" / "unitrun.py"

_MOUNTS = """set -e
for d in {overlaid}; do
  mkdir -p "$W/ov/$d/up" "$W/ov/$d/work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/ov/$d/up,workdir=$W/ov/$d/work" "/$d"
done
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -m 1777 /run/lock
mount --bind "$W/bin/systemctl" /usr/bin/systemctl
touch "$W/mounted"
exec sleep infinity
"""

_EDITOR = """#!/usr/bin/python3
import json, os, sys
edits = json.load(open(sys.argv[0] + ".json"))
path = os.path.abspath(sys.argv[1])
log = sys.argv[0] + ".done"
done = open(log).read().split() if os.path.exists(log) else []
sets = edits.get(path, [])
if done.count(path) >= len(sets):
    sys.exit(f"EDITOR: the test has no (further) edit for {path}")
text = open(path).read()
for old, new in sets[done.count(path)]:
    if old not in text:
        sys.exit(f"EDITOR: {old!r} is not in {path}")
    text = text.replace(old, new)
open(path, "w").write(text)
with open(log, "a") as f:
    f.write(path + "\\n")
"""


# --------------------------------------------------------------------------- Markdown


def section(markdown: str, heading: str) -> str:
    """The text under ``heading`` (a whole heading line, e.g. "## Install"), up to the next
    heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = markdown.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        raise AssertionError(f"heading {heading!r} not found") from None
    end = next((i for i in range(start + 1, len(lines))
                if re.match(rf"^#{{1,{level}}} ", lines[i])), len(lines))  # fmt: skip
    return "\n".join(lines[start + 1 : end])


FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, text) of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(markdown)]


def shell_block(path: Path, heading: str) -> list[str]:
    """The lines of the only ```sh block under ``heading`` in ``path``."""
    blocks = [text for lang, text in fenced_blocks(section(path.read_text(), heading))
              if lang == "sh"]  # fmt: skip
    assert len(blocks) == 1, f"{path.name} {heading!r}: {len(blocks)} sh blocks, want 1"
    return blocks[0].splitlines()


def insert_at(lines: list[str], marker: str, extra: str, before: bool = False) -> list[str]:
    """``extra`` after (or before) the one line containing ``marker``."""
    hits = [i for i, line in enumerate(lines) if marker in line]
    assert len(hits) == 1, f"{marker!r} is on {len(hits)} lines of the block, want 1"
    at = hits[0] if before else hits[0] + 1
    return [*lines[:at], extra, *lines[at:]]


# --------------------------------------------------------------------------- the host


@dataclass
class Script:
    """A block running in the background; its output in ``log``."""

    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.running():
            for pid in session_pids(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            kill_and_wait(session_pids(self.proc.pid), signal.SIGKILL, 10.0)
            self.proc.wait(10)


@dataclass
class Host:
    """A throwaway view of this machine: ``ns``'s network, a private mount namespace."""

    ns: str
    workdir: Path
    holder: subprocess.Popen[bytes]
    edits: dict[str, list[list[tuple[str, str]]]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    @contextlib.contextmanager
    def started(cls, ns: str, workdir: Path, wheelhouse: Path) -> Iterator[Host]:
        (workdir / "bin").mkdir(parents=True)
        units = workdir / "units"
        stand_in = workdir / "bin" / "systemctl"
        stand_in.write_text(f'#!/bin/sh\nUNITRUN_DIR={units} exec /usr/bin/python3 -I '
                            f'{UNITRUN} "$@"\n')  # fmt: skip
        editor = workdir / "bin" / "editor"
        editor.write_text(_EDITOR)
        for program in (stand_in, editor):
            program.chmod(0o755)
        argv = ["nsenter", f"--net=/run/netns/{ns}", "unshare", "--mount", "--propagation",
                "private", "sh", "-c", _MOUNTS.format(overlaid=" ".join(OVERLAID))]  # fmt: skip
        with (workdir / "mounts.log").open("ab") as log:
            holder = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "W": str(workdir)},
                                      start_new_session=True)  # fmt: skip
        env = {"PATH": DEBIAN_ROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
               "EDITOR": str(editor), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse),
               "PIP_CONFIG_FILE": "/dev/null", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
               "PIP_ROOT_USER_ACTION": "ignore"}  # fmt: skip
        host = cls(ns, workdir, holder, env=env)
        try:
            poll(host._mounted, 10, f"the private mount namespace ({workdir / 'mounts.log'})")
            yield host
        finally:
            host._stop()

    def _mounted(self) -> bool:
        if self.holder.poll() is not None:
            log = (self.workdir / "mounts.log").read_text(errors="replace")
            raise AssertionError(f"the mount namespace setup failed:\n{log}")
        return (self.workdir / "mounted").exists()

    def _stop(self) -> None:
        """Every process in the mount namespace, then the holder (the overlays go with it)."""
        try:
            mine = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        except OSError:
            mine = None
        others = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != self.holder.pid:
                with contextlib.suppress(OSError):
                    if mine is not None and os.readlink(entry / "ns" / "mnt") == mine:
                        others.append(int(entry.name))
        kill_and_wait(kill_and_wait(others, signal.SIGTERM, 5.0), signal.SIGKILL, 5.0)
        self.holder.kill()
        self.holder.wait(10)

    def edit(self, path: str, *replacements: tuple[str, str]) -> None:
        """What the next ``$EDITOR path`` does: each (old, new) in turn (old must be there)."""
        self.edits.setdefault(path, []).append(list(replacements))
        (self.workdir / "bin" / "editor.json").write_text(json.dumps(self.edits))

    def edited(self) -> list[str]:
        done = self.workdir / "bin" / "editor.done"
        return done.read_text().split() if done.exists() else []

    def _argv(self, lines: list[str], cwd: Path) -> list[str]:
        script = "\n".join([f"cd {cwd}", *lines])
        return ["nsenter", f"--net=/run/netns/{self.ns}",
                f"--mount=/proc/{self.holder.pid}/ns/mnt", "--", "env", "-i",
                *(f"{k}={v}" for k, v in self.env.items()),
                "bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-x", "-c", script]  # fmt: skip

    def start(self, lines: list[str], cwd: Path, name: str) -> Script:
        """Run ``lines`` as one bash script in the background."""
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(self._argv(lines, cwd), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        return Script(proc, log)

    def run(self, lines: list[str], cwd: Path, name: str, timeout: float = 300) -> str:
        """Run ``lines`` to the end; AssertionError with the output unless it exits 0."""
        script = self.start(lines, cwd, name)
        try:
            code = script.wait(timeout)
        finally:
            script.stop()
        output = script.output()
        assert code == 0, f"{name}: the block exited {code}:\n{output}"
        return output

    def path(self, inside: str) -> Path:
        """Where a file written inside the namespace is, seen from outside (overlays only)."""
        top = inside.strip("/").split("/", 1)
        assert top[0] in OVERLAID, inside
        return self.workdir / "ov" / top[0] / "up" / (top[1] if len(top) > 1 else "")
