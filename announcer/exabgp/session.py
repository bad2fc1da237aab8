"""ExaBGP's side of the conversation, pure: reply matching and the quirks we work around.

No threads, no file descriptors, no asyncio: the clock is passed in and replies go to
callbacks. :mod:`announcer.exabgp.channel` moves the bytes; :mod:`announcer.exabgp.sink`
decides when to call what. Everything here is what ExaBGP itself makes necessary:

- **Replies** (:class:`Pipe`): ExaBGP answers ``done``/``error`` in order among route
  commands, but answers ``version``/``show ...`` before route commands read in the same
  batch (pinned by tests/exabgp). So a query is written only when nothing is in flight, and
  nothing is written while a query is (the *query barrier*). Text lines that arrive while a
  query is the oldest line in flight are its output.
- **Withdraw echo** (:class:`Upkeep`): ExaBGP 5.0.15 drops a withdraw that arrives while
  the announce of the same prefix is still pending inside it (seen in the soak), then sends
  the announce. A withdraw within ``ECHO_WINDOW`` of its announce is sent again
  ``ECHO_DELAY`` later.
- **Drift check** (:class:`RibCheck`, :func:`drift`): ExaBGP's adj-rib-out is compared with
  what we told it. ExaBGP runs no route command while it prints it (~0.3 ms a route in
  5.0.15), so tables over ``verify_max_routes`` are not checked, and checks are spaced by
  ``VERIFY_COST_FACTOR`` times the last one's duration.
- **Replay on up** (:func:`replay_on_up`): ExaBGP re-sends its adj-rib-out when a session
  comes up, but 5.0.15 was seen losing a route announced during session setup: on every
  ``up`` everything desired is announced again (identical routes send no UPDATE).
- **Dialect check** (:func:`dialect_mismatch`): the configured major version vs ``version``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field

from announcer.core.plan import Announce, AnnouncedEntry, Command
from announcer.exabgp.commands import Ack, Message, Text, parse_message
from announcer.model import Advert, IPAddress, Prefix

Clock = Callable[[], float]

ECHO_WINDOW = 5.0  # a withdraw this soon after the announce is sent again ...
ECHO_DELAY = 1.0  # ... this much later
VERIFY_COST_FACTOR = 50  # adj-rib-out checks at least 50x their own duration apart


# --------------------------------------------------------------------------- replies


@dataclass
class Reply:
    ok: bool
    lines: list[str] = field(default_factory=list)


OnReply = Callable[[Reply], None]


@dataclass
class _Pending:
    line: str
    on_reply: OnReply
    query: bool = False
    output: list[str] = field(default_factory=list)


class Pipe:
    """Lines written to ExaBGP and waiting for their reply, in order, with the query barrier.

    :meth:`submit` queues a line; :meth:`take_writable` hands out the lines that may be
    written now; :meth:`receive` takes one line ExaBGP wrote and returns what is not a
    reply (or an :class:`Ack` nobody waited for) for the caller to handle.
    """

    def __init__(self, clock: Clock, on_idle: Callable[[], None] | None = None) -> None:
        self._clock = clock
        self._on_idle = on_idle  # called when the last line in flight has been answered
        self._pending: deque[_Pending] = deque()  # written, waiting for their reply
        self._unsent: deque[_Pending] = deque()  # held back by the query barrier
        self._writable: list[str] = []
        self._last_progress = clock()
        self._busy_since: float | None = None  # lines in flight without a break since then
        self.sent = 0
        self.acked = 0

    def submit(self, line: str, on_reply: OnReply, query: bool = False) -> None:
        self._unsent.append(_Pending(line, on_reply, query))
        self._pump()

    def take_writable(self) -> list[str]:
        lines, self._writable = self._writable, []
        return lines

    def _pump(self) -> None:
        while self._unsent:
            head = self._unsent[0]
            if self._pending and (head.query or self._pending[-1].query):
                return
            self._unsent.popleft()
            if not self._pending:
                self._last_progress = self._clock()
                if self._busy_since is None:
                    self._busy_since = self._last_progress
            self._pending.append(head)
            self._writable.append(head.line)
            self.sent += 1

    def receive(self, line: str) -> Message | None:
        """One line from ExaBGP: a reply resolves the oldest line in flight; a query's
        output is kept for its reply; anything else is returned."""
        message = parse_message(line)
        if isinstance(message, Ack):
            if not self._pending:
                return message  # unexpected: nothing waits for it
            pending = self._pending.popleft()
            self._last_progress = self._clock()
            self.acked += 1
            pending.on_reply(Reply(message.ok, pending.output))
            self._pump()
            if not self.in_flight:
                self._busy_since = None
                if self._on_idle is not None:
                    self._on_idle()
            return None
        if isinstance(message, Text) and self._pending and self._pending[0].query:
            self._pending[0].output.append(message.text)
            return None
        return message

    def stalled_for(self) -> float:
        """Seconds without any reply while lines wait for one (0 when none wait)."""
        if not self._pending:
            return 0.0
        return self._clock() - self._last_progress

    def busy_for(self) -> float:
        """Seconds lines have been in flight without ever all being answered (0: idle)."""
        return 0.0 if self._busy_since is None else self._clock() - self._busy_since

    @property
    def query_queued(self) -> bool:
        return any(p.query for p in (*self._pending, *self._unsent))

    @property
    def in_flight(self) -> int:
        return len(self._pending) + len(self._unsent)


# --------------------------------------------------------------------------- quirks


class Upkeep:
    """Announce times for the withdraw echo, and the echoes due."""

    def __init__(self) -> None:
        self.announced_at: dict[Prefix, float] = {}  # pruned after ECHO_WINDOW
        self.echo: dict[Command, float] = {}  # withdraws to send again, and when
        self._pruned = float("-inf")

    def sent(self, commands: Iterable[Command], now: float) -> None:
        for command in commands:
            if isinstance(command, Announce):
                self.announced_at[command.prefix] = now
            elif now - self.announced_at.pop(command.prefix, -ECHO_WINDOW) < ECHO_WINDOW:
                self.echo[command] = now + ECHO_DELAY

    def echoes_due(self, now: float, announced: Container[Prefix]) -> list[Command]:
        """Withdraws to send again: their time came and the prefix is still not announced."""
        due = [c for c, when in self.echo.items() if when <= now]
        for command in due:
            del self.echo[command]
        return [c for c in due if c.prefix not in announced]

    def forget_old_announces(self, now: float) -> None:
        """Drop announce times past the echo window (100k of them hold ~10 MB): one O(n)
        pass at most once per window."""
        if now - self._pruned < ECHO_WINDOW:
            return
        self._pruned = now
        cutoff = now - ECHO_WINDOW
        self.announced_at = {p: t for p, t in self.announced_at.items() if t > cutoff}


class RibCheck:
    """When the periodic adj-rib-out check may run (it must stay cheap for ExaBGP)."""

    def __init__(self, max_routes: int) -> None:
        self.max_routes = max_routes
        self.not_before = 0.0
        self.skipping = False  # the last call skipped a big table (said once, not each time)

    def due(self, now: float, size: int) -> tuple[bool, bool]:
        """(run a check now?, is this the first skip of a too-big table?)"""
        if size > self.max_routes:
            first, self.skipping = not self.skipping, True
            return False, first
        self.skipping = False
        return now >= self.not_before, False

    def checked(self, started: float, took: float) -> None:
        self.not_before = started + VERIFY_COST_FACTOR * took


def drift(
    rib: Iterable[tuple[IPAddress, Prefix]], announced: Mapping[Prefix, AnnouncedEntry]
) -> tuple[list[Prefix], dict[Prefix, frozenset[IPAddress]]]:
    """Prefixes ExaBGP has that we did not tell it, then those we told it that it lacks;
    and where ExaBGP announces each prefix it has."""
    where: dict[Prefix, set[IPAddress]] = {}
    for neighbor, prefix in rib:
        where.setdefault(prefix, set()).add(neighbor)
    found = list(where.keys() - announced.keys())
    found += [p for p, e in announced.items() if p not in where and isinstance(e, Advert)]
    return found, {p: frozenset(n) for p, n in where.items()}


def replay_on_up(state: str, rib_known: bool) -> bool:
    """A session came up: announce everything desired again (see the module docstring)."""
    return state == "up" and rib_known


def dialect_mismatch(version: str, configured: int) -> bool:
    """``version``'s reply (``exabgp 5.0.15``) names another major than the configured one."""
    major = version.removeprefix("exabgp ").split(".", 1)[0]
    return major.isdigit() and int(major) != configured
