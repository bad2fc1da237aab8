"""Structured logs on stderr: ``key=value`` lines for humans, JSON lines for machines.

Every log message starts with a stable snake_case event name followed by ``key=value``
fields (``route_announced prefix=10.200.0.1/32 reason=host_route``); tests and dashboards
match on them. Two formats render the same record:

- ``text``: ``2024-05-01T12:00:00.123 info route_announced prefix=... reason=...``
- ``json``: ``{"ts": "2024-05-01T10:00:00.123Z", "level": "info", "event":
  "route_announced", "prefix": "...", "reason": "..."}``, one object per line, the fields
  parsed back into keys (numbers and booleans typed, quoted values unquoted).

Repeats are rate limited: the same message (event and fields) more than ``limit`` times in
``window`` seconds is dropped and summarised once the window closes, as
``log_repeated repeated=EVENT suppressed=N window_seconds=M line='...'``.
Logs never go to stdout: under ``announcer run`` stdout is ExaBGP's pipe.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
REPEAT_LIMIT = 10
REPEAT_WINDOW_SECONDS = 60.0
MAX_TRACKED = 4096  # distinct messages remembered for rate limiting (oldest forgotten)

_EVENT = re.compile(r"[a-z][a-z0-9_]{0,63}")
_FIELD = re.compile(
    r"""\s*([A-Za-z_][A-Za-z0-9_.:-]*)=("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\S*)(?=\s|$)"""
)
_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+")
# Keys the JSON format sets itself; a field of the same name is kept as field_<name>.
_RESERVED = frozenset({"ts", "level", "event", "logger", "text", "exc"})


class KeyValueFormatter(logging.Formatter):
    """``ts level event key=value ...``: the message is the stable event name + fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        text = f"{stamp}.{int(record.msecs):03d} {record.levelname.lower()} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _value(raw: str) -> Any:
    """A field's value, typed: quoted strings unquoted, integers, decimals, booleans."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        try:
            return ast.literal_eval(raw)  # repr()/ascii() quoting, as quote() produces
        except (ValueError, SyntaxError):
            return raw
    if _INT.fullmatch(raw):
        return int(raw)
    if _FLOAT.fullmatch(raw):
        return float(raw)
    if raw in ("True", "true", "False", "false"):
        return raw in ("True", "true")
    return raw


def parse_message(message: str) -> dict[str, Any]:
    """``event key=value ... free text`` as a dict: ``event``, the fields, and any text that
    is not a field under ``text``. A message not starting with an event name is all text."""
    head, _, rest = message.partition(" ")
    if not _EVENT.fullmatch(head):
        return {"event": "message", "text": message}
    parsed: dict[str, Any] = {"event": head}
    loose: list[str] = []
    position = 0
    while position < len(rest):
        match = _FIELD.match(rest, position)
        if match is None:
            word = re.compile(r"\s*(\S+)").match(rest, position)
            if word is None:
                break
            loose.append(word.group(1))
            position = word.end()
            continue
        key = match.group(1)
        parsed[f"field_{key}" if key in _RESERVED else key] = _value(match.group(2))
        position = match.end()
    if loose:
        parsed["text"] = " ".join(loose)
    return parsed


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC), level, event, the parsed fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        document: dict[str, Any] = {
            "ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
        }
        document.update(parse_message(record.getMessage()))
        if record.name not in ("root", "announcer"):
            document["logger"] = record.name
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=True)


@dataclass(slots=True)
class _Window:
    started: float
    seen: int
    level: int
    message: str


@dataclass(frozen=True, slots=True)
class Repeated:
    """A summary: ``message`` came ``suppressed`` more times than the limit allowed."""

    level: int
    message: str
    suppressed: int
    window: float

    def render(self) -> str:
        event = self.message.partition(" ")[0]
        line = ascii(self.message if len(self.message) <= 200 else self.message[:200] + "...")
        return (
            f"log_repeated repeated={event if _EVENT.fullmatch(event) else 'message'} "
            f"suppressed={self.suppressed} window_seconds={self.window:g} line={line}"
        )


class RepeatLimiter:
    """Pure bookkeeping: admit a message at most ``limit`` times per ``window`` seconds.

    A window opens at a message's first occurrence. When it closes, a message that was
    suppressed at least once yields a :class:`Repeated` summary (returned by the next
    :meth:`admit` or :meth:`flush`), and the next occurrence opens a new window.
    """

    def __init__(
        self,
        limit: int = REPEAT_LIMIT,
        window: float = REPEAT_WINDOW_SECONDS,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_tracked = max_tracked
        self._windows: OrderedDict[tuple[int, str], _Window] = OrderedDict()

    def admit(self, level: int, message: str, now: float) -> tuple[bool, list[Repeated]]:
        """(log this one?, summaries of windows that closed by ``now``)."""
        summaries = self._expire(now)
        key = (level, message)
        current = self._windows.get(key)
        if current is None:
            self._windows[key] = _Window(now, 1, level, message)
            while len(self._windows) > self.max_tracked:
                summaries += self._summary(self._windows.popitem(last=False)[1])
            return True, summaries
        current.seen += 1
        return current.seen <= self.limit, summaries

    def flush(self, now: float | None = None) -> list[Repeated]:
        """Summaries of every window (closed by ``now``, or all when ``now`` is None)."""
        if now is not None:
            return self._expire(now)
        summaries = [s for w in self._windows.values() for s in self._summary(w)]
        self._windows.clear()
        return summaries

    def _expire(self, now: float) -> list[Repeated]:
        summaries: list[Repeated] = []
        while self._windows:  # ordered by window start: stop at the first still open
            window = next(iter(self._windows.values()))
            if now - window.started < self.window:
                break
            self._windows.popitem(last=False)
            summaries += self._summary(window)
        return summaries

    def _summary(self, window: _Window) -> list[Repeated]:
        suppressed = window.seen - self.limit
        if suppressed <= 0:
            return []
        return [Repeated(window.level, window.message, suppressed, self.window)]


class RateLimitedHandler(logging.StreamHandler[TextIO]):
    """A stream handler that drops repeats beyond the limiter's budget and writes the
    summaries (at the repeated message's level) when their windows close."""

    def __init__(
        self,
        stream: TextIO,
        limiter: RepeatLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(stream)
        self.limiter = limiter or RepeatLimiter()
        self.clock = clock

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            self.handleError(record)
            return
        admitted, summaries = self.limiter.admit(record.levelno, message, self.clock())
        for summary in summaries:
            self._emit_summary(summary, record.name)
        if admitted:
            super().emit(record)

    def flush_repeats(self) -> None:
        """Write summaries of every open window that suppressed something."""
        for summary in self.limiter.flush():
            self._emit_summary(summary, "announcer")

    def _emit_summary(self, summary: Repeated, name: str) -> None:
        record = logging.LogRecord(name, summary.level, __file__, 0, summary.render(), None, None)
        super().emit(record)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # stderr gone at interpreter exit
            self.flush_repeats()
        super().close()


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return KeyValueFormatter()
    raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")


def setup_logging(
    level: str,
    log_format: str = "text",
    stream: TextIO | None = None,
    limiter: RepeatLimiter | None = None,
) -> RateLimitedHandler:
    """Route every log record to stderr (only), formatted and rate limited."""
    handler = RateLimitedHandler(stream or sys.stderr, limiter)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return handler
