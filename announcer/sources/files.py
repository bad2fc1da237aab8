"""Drop-in files: ``routes.d/*.yaml``, each declaring prefixes with attributes.

A file is one instance (always serving while the file exists) whose keys are the
``anycast.*`` label grammar without the prefix, YAML-typed::

    ips: [10.200.0.53, "fd00:200::53"]
    communities: ["65001:53", GRACEFUL_SHUTDOWN]
    med: 10

Invalid or half-written files are reported, and the last good version of that file stays
in force. The directory is watched with watchdog and re-read in full on any change (and
periodically), so the source reports level, not edges.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from announcer.events import Instance, InstanceState, SourceListed
from announcer.model import quote
from announcer.sources.lifecycle import Clock, Emit
from announcer.spec.labels import PREFIX, LabelError, parse_labels

log = logging.getLogger("announcer.sources.files")

NAME = "files"
MAX_FILE_BYTES = 1 << 20
RESCAN_SECONDS = 30.0


class DropInError(ValueError):
    """A drop-in file that cannot be used; the message names the file and the key."""


def _as_label(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(_as_label(item) for item in value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError(f"{type(value).__name__} is not a string, a number or a list of them")
    return str(value)


def parse_drop_in(path: Path, text: str, since: float) -> Instance:
    """One drop-in file's text -> a serving instance; raises :class:`DropInError`."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DropInError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict) or not document:
        raise DropInError(f"{path}: expected a mapping of keys such as ips, communities, med")
    labels: dict[str, str] = {}
    for key, value in document.items():
        name = f"{PREFIX}{str(key).replace('_', '-')}"
        try:
            labels[name] = _as_label(value)
        except TypeError as exc:
            raise DropInError(f"{path}: key {quote(str(key))}: {exc}") from None
    try:
        spec = parse_labels(labels, allow_exec=True)  # drop-ins are the operator's
    except LabelError as exc:
        raise DropInError(f"{path}: {exc}") from None
    if spec is None or not spec.ips:
        raise DropInError(f"{path}: declares no ips")
    return Instance(NAME, str(path), path.name, InstanceState.SERVING, since, spec.ips, spec)


# Only changes count: watchdog also reports opens and read-only closes, and our own
# re-read would otherwise trigger the next one, forever.
CHANGES = frozenset({"created", "deleted", "modified", "moved", "closed"})


class Changes(FileSystemEventHandler):
    """Calls ``notify(path)`` (in the observer's thread) for changes only."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in CHANGES:
            self._notify(str(event.src_path))


def watch(directory: Path, loop: asyncio.AbstractEventLoop, changed: asyncio.Event) -> Any:
    """Set ``changed`` (thread-safely) whenever anything in ``directory`` changes."""
    observer = Observer()

    def notify(_path: str) -> None:
        loop.call_soon_threadsafe(changed.set)

    observer.schedule(Changes(notify), str(directory))
    observer.daemon = True
    observer.start()
    return observer


def _read_text(path: Path) -> str:
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise DropInError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return data.decode("utf-8")


class FilesSource:
    name = NAME

    def __init__(self, directory: Path, rescan_seconds: float = RESCAN_SECONDS) -> None:
        self.directory = directory
        self.rescan_seconds = rescan_seconds
        self._good: dict[Path, tuple[str, Instance]] = {}  # last good text and instance
        self._reported: dict[Path, str] = {}

    async def run(self, emit: Emit, clock: Clock) -> None:
        changed = asyncio.Event()
        observer = None
        try:
            while True:
                if observer is None and self.directory.is_dir():
                    observer = watch(self.directory, asyncio.get_running_loop(), changed)
                emit(SourceListed(NAME, tuple(self.scan(clock()))))
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), self.rescan_seconds)
                    await asyncio.sleep(0.05)  # let a burst of writes settle into one re-read
                except TimeoutError:
                    pass
        finally:
            if observer is not None:
                observer.stop()

    def scan(self, now: float) -> list[Instance]:
        """Every file's instance: the current version if valid, else its last good one."""
        present = sorted(self.directory.glob("*.yaml")) if self.directory.is_dir() else []
        self._good = {p: v for p, v in self._good.items() if p in present}
        for path in present:
            self._read(path, now)
        return [instance for _, instance in self._good.values()]

    def _read(self, path: Path, now: float) -> None:
        try:
            text = _read_text(path)
            previous = self._good.get(path)
            if previous is not None and previous[0] == text:
                return
            instance = parse_drop_in(path, text, now)
        except (OSError, UnicodeDecodeError, DropInError) as exc:
            message = str(exc)
            if self._reported.get(path) != message:
                kept = "last_good" if path in self._good else "none"
                log.error(
                    "drop_in_rejected file=%s kept=%s error=%s", path, kept, quote(message, 300)
                )
                self._reported[path] = message
            return
        self._reported.pop(path, None)
        self._good[path] = (text, instance)
        log.info("drop_in_loaded file=%s ips=%s", path, ",".join(map(str, instance.ips)))
