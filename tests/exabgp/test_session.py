"""The pure protocol state (announcer/exabgp/session.py), on a FakeClock: reply matching and
the query barrier, the withdraw echo, the adj-rib-out check's schedule, drift, the dialect."""

from __future__ import annotations

from ipaddress import IPv4Address

from announcer.core.plan import Announce, Unconfirmed, Withdraw
from announcer.exabgp.commands import Ack, NeighborState, Text
from announcer.exabgp.session import (
    ECHO_DELAY,
    ECHO_WINDOW,
    VERIFY_COST_FACTOR,
    Pipe,
    Reply,
    RibCheck,
    Upkeep,
    dialect_mismatch,
    drift,
    replay_on_up,
)
from announcer.model import Advert, Prefix
from announcer.testing import FakeClock

P1, P2 = Prefix("10.0.0.1/32"), Prefix("10.0.0.2/32")


def test_replies_resolve_lines_in_order_and_a_query_waits_for_an_empty_pipe() -> None:
    clock = FakeClock()
    idle: list[bool] = []
    pipe = Pipe(clock, on_idle=lambda: idle.append(True))
    replies: list[tuple[str, Reply]] = []
    pipe.submit("announce route 10.0.0.1/32 next-hop self", lambda r: replies.append(("a", r)))
    pipe.submit("version", lambda r: replies.append(("v", r)), query=True)
    pipe.submit("withdraw route 10.0.0.2/32", lambda r: replies.append(("w", r)))
    assert pipe.take_writable() == ["announce route 10.0.0.1/32 next-hop self"]  # the barrier
    assert pipe.in_flight == 3
    assert pipe.receive("done") is None
    assert pipe.take_writable() == ["version"]  # alone: nothing else while it is in flight
    assert pipe.receive("exabgp 5.0.15") is None  # the query's output
    assert pipe.receive("done") is None
    assert pipe.take_writable() == ["withdraw route 10.0.0.2/32"]
    assert pipe.receive("error") is None
    assert [(k, r.ok, r.lines) for k, r in replies] == [
        ("a", True, []),
        ("v", True, ["exabgp 5.0.15"]),
        ("w", False, []),
    ]
    assert idle == [True]  # once: when the last line in flight was answered
    assert (pipe.sent, pipe.acked, pipe.in_flight) == (3, 3, 0)


def test_what_is_not_a_reply_goes_back_to_the_caller() -> None:
    pipe = Pipe(FakeClock())
    assert pipe.receive("done") == Ack(True)  # nothing waits for it: the caller says so
    assert pipe.receive("shutdown in progress") == Text("shutdown in progress")
    state = '{ "type": "state", "neighbor": { "address": { "peer": "10.99.0.1" }, "state": "up" } }'
    assert pipe.receive(state) == NeighborState(IPv4Address("10.99.0.1"), "up")


def test_stalled_counts_from_the_last_progress_only_while_lines_wait() -> None:
    clock = FakeClock()
    pipe = Pipe(clock)
    assert pipe.stalled_for() == 0.0
    clock.advance(100)
    pipe.submit("withdraw route 10.0.0.1/32", lambda r: None)
    pipe.submit("withdraw route 10.0.0.2/32", lambda r: None)
    clock.advance(7)
    assert pipe.stalled_for() == 7
    pipe.receive("done")
    clock.advance(2)
    assert pipe.stalled_for() == 2  # a reply is progress
    pipe.receive("done")
    assert pipe.stalled_for() == 0.0


def test_a_withdraw_soon_after_its_announce_is_echoed_once_unless_announced_again() -> None:
    upkeep = Upkeep()
    now = 1000.0
    upkeep.sent([Announce(P1, Advert()), Announce(P2, Advert())], now)
    now += ECHO_WINDOW - 1
    upkeep.sent([Withdraw(P1), Withdraw(P2)], now)
    assert upkeep.echoes_due(now + ECHO_DELAY - 0.01, set()) == []
    assert upkeep.echoes_due(now + ECHO_DELAY, {P2}) == [Withdraw(P1)]  # P2 is back: no echo
    assert upkeep.echoes_due(now + 10 * ECHO_DELAY, set()) == []  # once


def test_a_withdraw_long_after_its_announce_is_not_echoed() -> None:
    upkeep = Upkeep()
    upkeep.sent([Announce(P1, Advert())], 1000.0)
    upkeep.sent([Withdraw(P1)], 1000.0 + ECHO_WINDOW)
    assert upkeep.echo == {}


def test_announce_times_are_forgotten_after_the_echo_window_at_most_once_per_window() -> None:
    upkeep = Upkeep()
    now = 1000.0
    upkeep.sent([Announce(P1, Advert())], now)
    now += ECHO_WINDOW - 1
    upkeep.sent([Announce(P2, Advert())], now)
    now += 2  # P1 is past the window, P2 is not
    upkeep.forget_old_announces(now)
    assert set(upkeep.announced_at) == {P2}
    upkeep.announced_at[P1] = now - 10 * ECHO_WINDOW
    upkeep.forget_old_announces(now + 1)  # pruning is at most once per window: cheap per tick
    assert P1 in upkeep.announced_at


def test_the_rib_check_skips_big_tables_says_so_once_and_spaces_itself_by_its_cost() -> None:
    check = RibCheck(max_routes=3)
    assert check.due(100.0, 3) == (True, False)
    assert check.due(100.0, 4) == (False, True)  # too big: said once ...
    assert check.due(200.0, 4) == (False, False)  # ... not every interval
    assert check.due(200.0, 3) == (True, False)
    check.checked(started=100.0, took=1.0)
    assert check.not_before == 100.0 + VERIFY_COST_FACTOR
    assert check.due(149.0, 3) == (False, False)
    assert check.due(150.0, 3) == (True, False)
    assert check.due(151.0, 9) == (False, True)  # a second growth past the limit is said again


def test_drift_names_what_exabgp_has_unasked_and_what_it_lacks() -> None:
    neighbor = IPv4Address("10.99.0.1")
    p3 = Prefix("10.0.0.3/32")
    announced = {P1: Advert(), P2: Unconfirmed(), p3: Advert()}
    rib = [(neighbor, P1), (neighbor, Prefix("10.0.0.9/32"))]
    found, where = drift(rib, announced)
    # P2 is unconfirmed (its state unknown anyway); p3 was announced and ExaBGP lacks it
    assert sorted(found) == [p3, Prefix("10.0.0.9/32")]
    assert where[P1] == frozenset({neighbor})


def test_replay_on_up_only_once_the_rib_is_known() -> None:
    assert replay_on_up("up", rib_known=True)
    assert not replay_on_up("up", rib_known=False)
    assert not replay_on_up("down", rib_known=True)
    assert not replay_on_up("connected", rib_known=True)


def test_dialect_mismatch() -> None:
    assert not dialect_mismatch("exabgp 5.0.15", 5)
    assert dialect_mismatch("exabgp 4.2.21", 5)
    assert not dialect_mismatch("something else", 5)  # unknown: not claimed as a mismatch


def test_busy_counts_from_the_first_line_until_everything_is_answered() -> None:
    clock = FakeClock()
    pipe = Pipe(clock)
    assert pipe.busy_for() == 0.0
    pipe.submit("announce route 10.0.0.1/32 next-hop self", lambda r: None)
    clock.advance(3)
    pipe.submit("announce route 10.0.0.2/32 next-hop self", lambda r: None)
    pipe.receive("done")  # progress, but never all answered: still busy since the first
    clock.advance(3)
    assert pipe.busy_for() == 6
    assert not pipe.query_queued
    pipe.submit("version", lambda r: None, query=True)
    assert pipe.query_queued
    assert pipe.take_writable()[-1] != "version"  # the barrier waits for the answers
    pipe.receive("done")
    assert pipe.take_writable() == ["version"]
    pipe.receive("done")
    assert pipe.busy_for() == 0.0
