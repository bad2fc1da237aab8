"""The sink: what ExaBGP has been told, and how commands reach it.

:class:`ExaBGPSink` owns the :class:`~announcer.core.plan.AnnouncedTable` (unknown until
read from ExaBGP's adj-rib-out at start), renders commands into lines, sends them through
the channel, handles the replies (a refused command makes its prefix unknown and is retried
with backoff), and runs the upkeep :mod:`announcer.exabgp.session` describes: withdraw
echoes, the adj-rib-out drift check, replay on session up, the dialect check, and exit when
ExaBGP stops answering.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from announcer.config import ExaBGPConfig
from announcer.core.plan import Announce, AnnouncedTable, Command, Unconfirmed
from announcer.core.policy import Decision
from announcer.exabgp.channel import ExaBGPChannel
from announcer.exabgp.commands import (
    SHOW_ADJ_RIB_OUT,
    VERSION,
    ExaBGPShutdown,
    Message,
    NeighborState,
    Text,
    parse_adj_rib_out,
    render_batches,
    render_eor,
)
from announcer.exabgp.session import (
    Clock,
    Reply,
    RibCheck,
    Upkeep,
    dialect_mismatch,
    drift,
    replay_on_up,
)
from announcer.model import IPAddress, Prefix, Reason, quote

log = logging.getLogger("announcer")

LOG_EACH_COMMAND_UP_TO = 50
SEND_WINDOW = 64  # lines ExaBGP may have unanswered before changes are held and batched
RETRY_MIN_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


class StartupError(Exception):
    """ExaBGP did not answer as the announcer needs (no acks, no reply)."""


@dataclass
class SinkStats:
    commands: int = 0
    failures: int = 0
    echoed: int = 0
    drift: int = 0
    neighbors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SinkHooks:
    """How the sink asks the daemon for something."""

    reconcile: Callable[[float], None]  # schedule a reconcile, after a delay (seconds)
    stop: Callable[[int, str], None]  # exit with a code, for a reason
    observed: Callable[[str], None] = lambda _source: None  # an event, for the metrics


class ExaBGPSink:
    def __init__(
        self, channel: ExaBGPChannel, config: ExaBGPConfig, hooks: SinkHooks, clock: Clock
    ) -> None:
        self.channel = channel
        self.config = config
        self.hooks = hooks
        self.clock = clock
        self.table = AnnouncedTable()
        self.stats = SinkStats()
        self.upkeep = Upkeep()
        self.rib_check = RibCheck(config.verify_max_routes)
        self.eor_pending: set[IPAddress] = set()  # neighbors up, waiting for our End-of-RIB
        self._retry_delay = RETRY_MIN_SECONDS

    # --- start ---

    async def ask(self, line: str, timeout: float) -> Reply:
        """A query at start: its reply, or StartupError."""
        try:
            reply = await asyncio.wait_for(self.channel.send(line, query=True), timeout)
        except TimeoutError:
            raise StartupError(
                f"no 'done' from ExaBGP for {line!r} within {timeout:g}s: "
                "is exabgp.api.ack=false? the announcer needs acks"
            ) from None
        if not reply.ok:
            raise StartupError(f"ExaBGP answered 'error' to {line!r}")
        return reply

    async def ask_version(self) -> str:
        """Ask ExaBGP its version: proves the pipe works and acks are on."""
        reply = await self.ask(VERSION, self.config.startup_timeout_seconds)
        return " ".join(reply.lines)

    def check_version(self, version: str) -> None:
        log.info("exabgp_connected version=%r", version)
        if dialect_mismatch(version, self.config.dialect):
            log.warning(
                "exabgp_dialect_mismatch configured=%d running=%r", self.config.dialect, version
            )

    async def read_rib(self) -> None:
        """What ExaBGP announces now (a respawned announcer inherits it): the table is known."""
        reply = await self.ask(SHOW_ADJ_RIB_OUT, self.config.startup_timeout_seconds)
        entries, unparsed = parse_adj_rib_out(reply.lines)
        for line in unparsed:
            log.warning("exabgp_rib_line_not_understood line=%r", line)
        self.table.load(entries)

    # --- commands ---

    @property
    def behind(self) -> bool:
        """ExaBGP has SEND_WINDOW lines unanswered: hold changes back and batch them."""
        return self.channel.in_flight >= SEND_WINDOW

    def send(self, commands: list[Command], decisions: Mapping[Prefix, Decision]) -> None:
        """One ExaBGP line per command, or per group of them (render_batches)."""
        quiet = len(commands) > LOG_EACH_COMMAND_UP_TO
        for line, batch in render_batches(commands):
            # Written first (its reply comes through the loop, after all of this): the
            # table, the echo times and the log lines say the same a moment later.
            future = self.channel.send(line)
            future.add_done_callback(functools.partial(self._on_reply, batch, line))
            now = self.clock()
            for command in batch:
                self.table.record(command)
                if not quiet:
                    decision = decisions.get(command.prefix)
                    reason = decision.reason if decision is not None else Reason.NOT_OBSERVED
                    verb = "route_announced" if isinstance(command, Announce) else "route_withdrawn"
                    log.info("%s prefix=%s reason=%s", verb, command.prefix, reason)
            self.upkeep.sent(batch, now)
        self.stats.commands += len(commands)
        if quiet:
            announces = sum(isinstance(c, Announce) for c in commands)
            log.info(
                "routes_changed announced=%d withdrawn=%d total_announced=%d",
                announces,
                len(commands) - announces,
                len(self.table.entries),
            )

    def _on_reply(self, commands: list[Command], line: str, future: asyncio.Future[Reply]) -> None:
        if future.cancelled() or future.result().ok:
            self._retry_delay = RETRY_MIN_SECONDS
            return
        self.stats.failures += 1
        for command in commands:
            self.table.fail(command)
        log.error(
            "exabgp_command_failed command=%s retry_in=%.0fs", quote(line, 120), self._retry_delay
        )
        self.hooks.reconcile(self._retry_delay)
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_SECONDS)

    def send_eor(self, families: Callable[[IPAddress], tuple[int, ...]]) -> None:
        """End-of-RIB to every neighbor that came up, now that what is desired has been
        re-announced and acknowledged: the peer drops only the stale routes left over."""
        for peer in sorted(self.eor_pending, key=lambda a: (a.version, int(a))):
            for version in families(peer):
                future = self.channel.send(render_eor(peer, version))
                future.add_done_callback(functools.partial(self._on_eor, peer, version))
        self.eor_pending.clear()

    @staticmethod
    def _on_eor(peer: IPAddress, version: int, future: asyncio.Future[Reply]) -> None:
        if future.cancelled():
            return
        if future.result().ok:
            log.info("end_of_rib_sent peer=%s family=ipv%d", peer, version)
        else:  # the family is not configured on that neighbor, or it went down meanwhile
            log.info("end_of_rib_refused peer=%s family=ipv%d", peer, version)

    # --- upkeep ---

    def tick(self) -> None:
        """Once a second: withdraw echoes, pruning, and exit if ExaBGP stopped answering."""
        now = self.clock()
        # Grouped like any burst of withdraws: a mass withdraw soon after its announce is
        # echoed in a few lines, not one per prefix (10k single lines kept ExaBGP busy).
        for line, batch in render_batches(self.upkeep.echoes_due(now, self.table.entries)):
            self.channel.send(line)
            self.stats.echoed += len(batch)
        self.upkeep.forget_old_announces(now)
        pipe = self.channel.pipe
        if pipe.busy_for() > self.config.ack_timeout_seconds and not pipe.query_queued:
            # Replies keep coming but never catch up: a line ExaBGP never answered (4.2.21
            # answers nothing to a line whose parsing raises) makes every later reply look
            # one line late. A query is written only once everything before it is answered,
            # and holds back what comes after it: if one reply is missing, the replies stop
            # and the stall below ends it. (A query's reply is not waited for here.)
            self.channel.send(VERSION, query=True)
            log.info(
                "exabgp_barrier busy_seconds=%.1f in_flight=%d", pipe.busy_for(), pipe.in_flight
            )
        stalled = self.channel.stalled_for()
        if stalled > self.config.ack_timeout_seconds:
            log.error(
                "exabgp_not_acknowledging in_flight=%d stalled_seconds=%.1f action=exit_for_resync",
                self.channel.in_flight,
                stalled,
            )
            # Exit: ExaBGP respawns us and the new process starts from its adj-rib-out.
            self.hooks.stop(1, "exabgp_not_acknowledging")

    async def verify_rib(self) -> bool:
        """Compare ExaBGP's adj-rib-out with what we think we announced. Drift makes those
        prefixes unconfirmed (a re-announce or re-withdraw repairs them): True when found."""
        started = self.clock()
        due, first_skip = self.rib_check.due(started, len(self.table.entries))
        if first_skip:
            log.info(
                "exabgp_rib_check_skipped routes=%d verify_max_routes=%d",
                len(self.table.entries),
                self.rib_check.max_routes,
            )
        if not due:
            return False
        try:
            reply = await asyncio.wait_for(
                self.channel.send(SHOW_ADJ_RIB_OUT, query=True), self.config.ack_timeout_seconds
            )
        except TimeoutError:
            return False  # tick() handles a silent ExaBGP
        finally:
            self.rib_check.checked(started, self.clock() - started)
        entries, _ = parse_adj_rib_out(reply.lines)
        found, where = drift(entries, self.table.entries)
        if not found:
            return False
        for prefix in found:
            self.table.entries[prefix] = Unconfirmed(where.get(prefix, frozenset()))
        self.stats.drift += len(found)
        log.warning("exabgp_rib_drift prefixes=%d example=%s action=repair", len(found), found[0])
        return True

    # --- what ExaBGP tells us ---

    def on_message(self, message: Message) -> None:
        match message:
            case NeighborState(peer, state, reason):
                self.stats.neighbors[str(peer)] = state
                log.info("neighbor_state peer=%s state=%s reason=%r", peer, state, reason)
                self.hooks.observed("exabgp")
                if state == "up" and self.config.manual_eor:
                    self.eor_pending.add(peer)
                elif state == "down":
                    self.eor_pending.discard(peer)
                if replay_on_up(state, self.table.known):
                    self.table.unconfirm()
                    self.hooks.reconcile(0.0)
            case ExaBGPShutdown():
                self.hooks.stop(0, "exabgp_shutdown")
            case Text(text):
                log.debug("exabgp_text line=%r", text)
            case _:
                pass
