"""The withdraw echo as the sink sends it (announcer/exabgp/sink.py ``tick``): grouped like
any burst of withdraws, so a mass withdraw soon after a mass announce is echoed in a few
lines, not one line per prefix (10k single lines kept ExaBGP 5.0.15 busy for seconds)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from announcer.config import ExaBGPConfig
from announcer.core.plan import Announce, Withdraw
from announcer.exabgp.session import ECHO_DELAY
from announcer.exabgp.sink import ExaBGPSink, SinkHooks
from announcer.model import DEFAULT_ADVERT, Prefix
from announcer.testing import FakeClock


class Lines:
    """The channel as the sink uses it: records lines, never answers."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.pipe = SimpleNamespace(busy_for=lambda: 0.0, query_queued=False, in_flight=0)
        self.in_flight = 0

    def send(self, line: str, query: bool = False) -> asyncio.Future[Any]:
        self.lines.append(line)
        return self.loop.create_future()

    def stalled_for(self) -> float:
        return 0.0


def _sink() -> tuple[ExaBGPSink, Lines, FakeClock]:
    channel, clock = Lines(), FakeClock()
    hooks = SinkHooks(reconcile=lambda _delay: None, stop=lambda _code, _why: None)
    return ExaBGPSink(channel, ExaBGPConfig(), hooks, clock), channel, clock  # type: ignore[arg-type]


PREFIXES = [Prefix.make(4, (10 << 24) + i, 32) for i in range(1, 451)]


def test_a_mass_withdraw_soon_after_its_announce_is_echoed_in_grouped_lines() -> None:
    sink, channel, clock = _sink()
    sink.send([Announce(p, DEFAULT_ADVERT) for p in PREFIXES], {})
    sink.send([Withdraw(p) for p in PREFIXES], {})
    sent = len(channel.lines)
    clock.advance(ECHO_DELAY)
    sink.tick()
    echoes = channel.lines[sent:]
    assert len(echoes) == 3  # 200 + 200 + 50 prefixes, as the withdraw itself was sent
    assert all(line.startswith("withdraw attributes next-hop self nlri ") for line in echoes)
    echoed = [word for line in echoes for word in line.split(" nlri ")[1].split()]
    assert echoed == [str(p) for p in PREFIXES]
    assert sink.stats.echoed == len(PREFIXES)
    clock.advance(10 * ECHO_DELAY)
    sink.tick()
    assert len(channel.lines) == sent + 3  # once


def test_a_single_echo_is_still_one_plain_line_and_a_reannounced_prefix_is_not_echoed() -> None:
    sink, channel, clock = _sink()
    first, second = PREFIXES[:2]
    sink.send([Announce(first, DEFAULT_ADVERT), Announce(second, DEFAULT_ADVERT)], {})
    sink.send([Withdraw(first), Withdraw(second)], {})
    sink.send([Announce(second, DEFAULT_ADVERT)], {})  # back before the echo is due
    sent = len(channel.lines)
    clock.advance(ECHO_DELAY)
    sink.tick()
    assert channel.lines[sent:] == [f"withdraw route {first}"]
    assert sink.stats.echoed == 1
