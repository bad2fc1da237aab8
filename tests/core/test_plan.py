"""diff() and AnnouncedTable: hypothesis properties of the sink contract."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from announcer.core.plan import (
    UNKNOWN,
    Announce,
    AnnouncedEntry,
    AnnouncedTable,
    Unconfirmed,
    Withdraw,
    diff,
)
from announcer.model import Advert, Attributes, Prefix

PEERS = [IPv4Address("10.99.0.1"), IPv4Address("10.99.0.3")]
prefixes = st.integers(0, 40).map(lambda i: Prefix.make(4, 0x0A000000 + i, 32))
attributes = st.builds(Attributes, med=st.none() | st.integers(0, 3))
neighbor_sets = st.frozensets(st.sampled_from(PEERS))
adverts = st.builds(Advert, attributes=attributes, neighbors=neighbor_sets)
desired_maps = st.dictionaries(prefixes, adverts, max_size=20)
entries = st.one_of(adverts, neighbor_sets.map(Unconfirmed))
announced_maps = st.dictionaries(prefixes, entries, max_size=20)


def apply(
    announced: dict[Prefix, AnnouncedEntry], commands: list[Announce | Withdraw]
) -> dict[Prefix, AnnouncedEntry]:
    table = AnnouncedTable(dict(announced), known=True)
    for command in commands:
        table.record(command)
    return table.entries


@given(desired_maps)
def test_diff_of_a_state_with_itself_is_empty(desired: dict[Prefix, Advert]) -> None:
    assert diff(desired, dict(desired)) == []


@given(desired_maps, announced_maps)
def test_applying_the_diff_reaches_the_desired_state(
    desired: dict[Prefix, Advert], announced: dict[Prefix, AnnouncedEntry]
) -> None:
    commands = diff(desired, announced)
    assert apply(announced, commands) == desired
    assert diff(desired, apply(announced, commands)) == []


@given(desired_maps, announced_maps)
def test_withdraws_only_name_announced_prefixes_and_come_first(
    desired: dict[Prefix, Advert], announced: dict[Prefix, AnnouncedEntry]
) -> None:
    commands = diff(desired, announced)
    kinds = [isinstance(c, Withdraw) for c in commands]
    assert kinds == sorted(kinds, reverse=True)
    for command in commands:
        if isinstance(command, Withdraw):
            assert command.prefix in announced


@given(desired_maps)
def test_valid_routes_found_in_exabgp_are_reannounced_never_withdrawn(
    desired: dict[Prefix, Advert],
) -> None:
    # A respawned announcer loads ExaBGP's adj-rib-out: attributes unknown.
    table = AnnouncedTable()
    table.load([(PEERS[0], p) for p in desired])
    commands = diff(desired, table.entries)
    assert not any(isinstance(c, Withdraw) for c in commands if not desired[c.prefix].neighbors)
    assert {c.prefix for c in commands if isinstance(c, Announce)} == set(desired)


def test_stale_neighbors_are_withdrawn_from_before_the_reannounce() -> None:
    p = Prefix("10.0.0.1/32")
    want = Advert(neighbors=frozenset({PEERS[0]}))
    commands = diff({p: want}, {p: Unconfirmed(frozenset(PEERS))})
    assert commands == [Withdraw(p, frozenset({PEERS[1]})), Announce(p, want)]


def test_a_failed_command_makes_the_prefix_unknown_so_it_is_retried() -> None:
    p = Prefix("10.0.0.1/32")
    table = AnnouncedTable(known=True)
    table.record(Announce(p, Advert()))
    table.fail(Announce(p, Advert()))
    assert table.entries[p] == UNKNOWN
    assert diff({p: Advert()}, table.entries) == [Announce(p, Advert())]
    assert diff({}, table.entries) == [Withdraw(p)]


def test_unknown_is_not_empty() -> None:
    table = AnnouncedTable()
    assert not table.known
    table.load([])
    assert table.known
    assert table.entries == {}
