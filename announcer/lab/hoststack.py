"""A lab server's host stack as systemd runs it on a real host.

- **BFD**: FRR's bfdd standalone, started from the Exec lines of the product's unit
  (packaging/systemd/anycast-announcer-bfdd.service, read by ``unit_commands``) with its
  paths mapped into the lab run: ``announcer bfd-config`` writes bfdd's configuration from
  the server's announcer.yaml (``bfd:``), exactly the file a host would get.
- **ExaBGP + the announcer** as anycast-announcer-exabgp.service: ``systemctl restart`` is
  SIGTERM to every process of the unit at once (KillMode=control-group: ExaBGP, its
  announcer, the announcer's watchdog), up to TimeoutStopSec for them to exit, SIGKILL for
  the rest, then the start again (``unit_pids``; netns.py does the start).
- **The plain variant** of a server's configs: ExaBGP without graceful restart and manual
  End-of-RIB, the announcer without ``exabgp.manual_eor`` - what hosts ran before issue 18
  (rolling_upgrade's contrast).

The text functions are pure; the process functions read /proc.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from announcer.lab.namespaces import LabError

BFDD_UNIT = Path(__file__).resolve().parents[2] / "packaging/systemd/anycast-announcer-bfdd.service"
# What `announcer exabgp` execs (announcer/exabgp/start.py): python -I <this file> ARGS
LAUNCHER = "announcer/exabgp/launcher.py"
STOP_TIMEOUT_S = 30.0  # anycast-announcer-exabgp.service's TimeoutStopSec
# systemd's prefixes of an Exec line ("+": full privileges, "-": failure ignored, ...)
_EXEC_PREFIXES = "+-@:!"


@dataclass(frozen=True)
class UnitCommands:
    """What a unit runs at start, its paths mapped: ExecStartPre lines, then ExecStart."""

    pre: tuple[tuple[str, ...], ...]
    start: tuple[str, ...]
    runtime_directory: str | None  # mapped RuntimeDirectory=, made before the commands
    runtime_mode: int


def map_word(word: str, paths: Mapping[str, str]) -> str:
    """word with its leading path replaced by its mapping (the longest that matches); a
    mapping ending in "/" maps everything under it."""
    for old in sorted(paths, key=len, reverse=True):
        new = paths[old]
        if old.endswith("/") and word.startswith(old):
            return new + word[len(old) :]
        if word == old or word.startswith(old + "/"):
            return new + word[len(old) :]
    return word


def unit_commands(text: str, paths: Mapping[str, str]) -> UnitCommands:
    """The [Service] start commands of a systemd unit, each word mapped (``paths``; the
    runtime directory is named by its /run path)."""
    pre: list[tuple[str, ...]] = []
    start: tuple[str, ...] = ()
    runtime, mode = None, 0o755
    for raw in text.splitlines():
        key, _, value = raw.strip().partition("=")
        if key in ("ExecStartPre", "ExecStart"):
            words = tuple(map_word(w, paths) for w in shlex.split(value.lstrip(_EXEC_PREFIXES)))
            if key == "ExecStart":
                start = words
            else:
                pre.append(words)
        elif key == "RuntimeDirectory":
            runtime = map_word(f"/run/{value.strip()}", paths)
        elif key == "RuntimeDirectoryMode":
            mode = int(value.strip(), 8)
    if not start:
        raise LabError("the unit has no ExecStart line")
    return UnitCommands(tuple(pre), start, runtime, mode)


def bfdd_commands(paths: Mapping[str, str], unit: Path = BFDD_UNIT) -> UnitCommands:
    try:
        return unit_commands(unit.read_text(), paths)
    except OSError as exc:
        raise LabError(f"cannot read the bfdd unit {unit}: {exc}") from exc


def option(argv: Iterable[str], name: str) -> str | None:
    """The value after ``name`` in argv (``--vty_socket DIR``), None if absent."""
    words = list(argv)
    return words[words.index(name) + 1] if name in words[:-1] else None


# --------------------------------------------------------------------------- the plain variant

_GR_LINE = re.compile(r"^[ \t]*graceful-restart[ \t]+\d+;[^\n]*\n", re.MULTILINE)
_EOR_LINE = re.compile(r"^[ \t]*manual-eor[ \t]+true;[^\n]*\n", re.MULTILINE)
_EMPTY_CAPABILITY = re.compile(r"^[ \t]*capability[ \t]*\{[ \t]*\n[ \t]*\}[^\n]*\n", re.MULTILINE)


def without_graceful_restart(exabgp_conf: str, announcer_conf: str, plain_conf: str) -> str:
    """ExaBGP's config with neither graceful restart nor manual End-of-RIB, its announcer
    reading plain_conf instead of announcer_conf; LabError if there was nothing to remove."""
    text, removed = _GR_LINE.subn("", exabgp_conf)
    text, eors = _EOR_LINE.subn("", text)
    if not removed or not eors:
        raise LabError(f"no graceful-restart ({removed}) / manual-eor true ({eors}) lines "
                       "in the ExaBGP config: nothing to turn off")  # fmt: skip
    text = _EMPTY_CAPABILITY.sub("", text)
    if announcer_conf not in text:
        raise LabError(f"the ExaBGP config does not run the announcer with {announcer_conf}")
    return text.replace(announcer_conf, plain_conf)


def plain_announcer(announcer_yaml: str) -> str:
    """The announcer's config with exabgp.manual_eor off (ExaBGP sends End-of-RIB itself)."""
    doc = yaml.safe_load(announcer_yaml) or {}
    doc.setdefault("exabgp", {})["manual_eor"] = False
    return "# the plain variant (announcer.lab.hoststack): no manual End-of-RIB\n" + yaml.safe_dump(
        doc, sort_keys=False
    )


# --------------------------------------------------------------------------- processes


def descendants(parents: Mapping[int, int], roots: Iterable[int]) -> set[int]:
    """roots and every process below them (pid -> parent pid)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def process_parents() -> dict[int, int]:
    """pid -> parent pid of every process on the machine."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return parents


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def runs_exabgp(argv: Sequence[str]) -> bool:
    """ExaBGP as the unit starts it: ``python -I .../announcer/exabgp/launcher.py ARGS``
    (what ``announcer exabgp`` execs), or ``announcer exabgp ...`` a moment before the exec."""
    head = list(argv[:3])
    if any(word.endswith(LAUNCHER) for word in head):
        return True
    return len(head) == 3 and Path(head[1]).name == "announcer" and head[2] == "exabgp"


def unit_pids(candidates: Iterable[int], is_root: Callable[[Sequence[str]], bool]) -> set[int]:
    """The unit's processes: those whose command line is_root (ExaBGP) among candidates
    (the server namespace's processes) and everything below them."""
    roots = [pid for pid in candidates if is_root(cmdline(pid))]
    return descendants(process_parents(), roots) if roots else set()
