"""Operator drains: from the control socket (persisted) and from the maintenance file.

Drains given over the control socket are written to ``<state_directory>/drains.json``
(wall-clock times, atomically), so a restarted announcer keeps them. The maintenance file
is its own persistence: while it exists, what it lists is drained (an empty file drains
everything). A state directory that cannot be written is reported, never fatal: the
announcer keeps announcing correctly and says why it cannot persist.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from announcer.daemon.control import ensure_directory
from announcer.events import Drain, DrainMode
from announcer.model import Prefix, is_host_prefix, quote

log = logging.getLogger("announcer.drains")

STATE_FILE = "drains.json"


class DrainRequestError(ValueError):
    """A drain/undrain request naming something that is not a host prefix."""


def parse_prefixes(texts: Iterable[str]) -> list[Prefix]:
    result: list[Prefix] = []
    for text in texts:
        try:
            prefix = Prefix(str(text).strip())
        except ValueError:
            raise DrainRequestError(f"{quote(str(text))} is not a prefix") from None
        if not is_host_prefix(prefix):
            raise DrainRequestError(f"{prefix} is not a /32 or /128")
        result.append(prefix)
    return result


class DrainStore:
    def __init__(
        self,
        state_directory: Path,
        maintenance_file: Path,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = state_directory / STATE_FILE
        self.maintenance_file = maintenance_file
        self._monotonic = monotonic
        self._wall = wall
        self._control: dict[Prefix | None, Drain] = {}
        self._maintenance: dict[Prefix | None, Drain] = {}
        self._maintenance_text: str | None = None
        self.persist_error: str | None = None

    def current(self) -> tuple[Drain, ...]:
        now = self._monotonic()
        merged = {**self._maintenance, **self._control}
        return tuple(d for d in merged.values() if d.active(now))

    # --- control socket ---

    def drain(
        self,
        prefixes: list[Prefix] | None,
        for_seconds: float | None,
        mode: DrainMode,
        graceful_seconds: float,
        origin: str = "control",
    ) -> None:
        now = self._monotonic()
        until = now + for_seconds if for_seconds else None
        for prefix in prefixes if prefixes is not None else [None]:
            self._control[prefix] = Drain(prefix, now, until, mode, graceful_seconds, origin)
        self._save()

    def undrain(self, prefixes: list[Prefix] | None) -> None:
        if prefixes is None:
            self._control.clear()
        for prefix in prefixes or []:
            self._control.pop(prefix, None)
        self._save()

    # --- persistence ---

    def _save(self) -> None:
        offset = self._wall() - self._monotonic()
        rows = [
            {
                "prefix": None if d.prefix is None else str(d.prefix),
                "since": d.since + offset,
                "until": None if d.until is None else d.until + offset,
                "mode": d.mode.value,
                "graceful_seconds": d.graceful_seconds,
            }
            for d in self._control.values()
            if d.origin == "control"
        ]
        tmp = self.path.with_suffix(".tmp")
        try:
            ensure_directory(self.path.parent)
            tmp.write_text(json.dumps({"drains": rows}, indent=1))
            os.replace(tmp, self.path)
        except OSError as exc:
            self.persist_error = f"{self.path}: {exc.strerror or exc}"
            log.error("state_not_persisted file=%s error=%s", self.path, quote(str(exc), 200))
            return
        self.persist_error = None

    def load(self) -> None:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("state_unreadable file=%s error=%s", self.path, quote(str(exc), 200))
            return
        offset = self._wall() - self._monotonic()
        for row in document.get("drains", []) if isinstance(document, dict) else []:
            try:
                prefix = None if row["prefix"] is None else parse_prefixes([row["prefix"]])[0]
                until = None if row["until"] is None else float(row["until"]) - offset
                drain = Drain(
                    prefix, float(row["since"]) - offset, until,
                    DrainMode(row["mode"]), float(row["graceful_seconds"]), "control",
                )  # fmt: skip
            except (KeyError, TypeError, ValueError) as exc:
                log.error(
                    "state_row_ignored file=%s row=%s error=%s", self.path, quote(str(row)), exc
                )
                continue
            self._control[prefix] = drain
        log.info("drains_restored count=%d", len(self._control))

    # --- maintenance file ---

    def poll_maintenance(self, mode: DrainMode, graceful_seconds: float) -> bool:
        """Re-read the maintenance file; True when the drains it implies changed."""
        try:
            text: str | None = self.maintenance_file.read_text(errors="replace")[:65536]
        except FileNotFoundError:
            text = None
        except OSError as exc:
            log.error("maintenance_file_unreadable file=%s error=%s", self.maintenance_file, exc)
            return False
        if text == self._maintenance_text:
            return False
        self._maintenance_text = text
        now = self._monotonic()
        self._maintenance = {}
        if text is None:
            log.info("maintenance_file_removed file=%s", self.maintenance_file)
            return True
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        try:
            targets: list[Prefix | None] = list(parse_prefixes(lines)) if lines else [None]
        except DrainRequestError as exc:
            log.error(
                "maintenance_file_invalid file=%s error=%s action=drain_all",
                self.maintenance_file,
                exc,
            )
            targets = [None]  # an unreadable intent to drain drains everything: the safe side
        for prefix in targets:
            self._maintenance[prefix] = Drain(
                prefix, now, None, mode, graceful_seconds, "maintenance_file"
            )
        log.info(
            "maintenance_file_present file=%s drains=%s",
            self.maintenance_file,
            ",".join("all" if p is None else str(p) for p in targets),
        )
        return True
