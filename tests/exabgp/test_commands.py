"""Rendering and parsing of ExaBGP's text API (pure)."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from hypothesis import given
from hypothesis import strategies as st

from announcer.core.plan import Announce, Withdraw
from announcer.exabgp.commands import (
    COMMAND_GRAMMAR,
    Ack,
    ExaBGPShutdown,
    NeighborState,
    OtherJSON,
    Text,
    parse_adj_rib_out,
    parse_message,
    render,
)
from announcer.model import Advert, Attributes, Community, LargeCommunity, Prefix

v4 = st.integers(0, 2**32 - 1).map(IPv4Address)
v6 = st.integers(0, 2**128 - 1).map(IPv6Address)
addresses = v4 | v6
prefixes = st.one_of(
    st.tuples(v4, st.integers(0, 32)).map(lambda t: Prefix(IPv4Network(t, strict=False))),
    st.tuples(v6, st.integers(0, 128)).map(lambda t: Prefix(IPv6Network(t, strict=False))),
)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
attrs = st.builds(
    Attributes,
    med=st.none() | u32,
    local_preference=st.none() | u32,
    communities=st.lists(st.builds(Community, u16, u16), max_size=4).map(tuple),
    large_communities=st.lists(st.builds(LargeCommunity, u32, u32, u32), max_size=3).map(tuple),
)


@st.composite
def announcements(draw: st.DrawFn) -> Announce:
    prefix = draw(prefixes)
    same_family = v4 if prefix.version == 4 else v6
    next_hop = draw(st.just("self") | same_family)
    neighbors = draw(st.frozensets(addresses, max_size=3))
    return Announce(prefix, Advert(next_hop, draw(attrs), neighbors))


# ExaBGP runs any command whose name appears in a line (substring dispatch): none may.
FOREIGN_COMMANDS = re.compile(
    r"shutdown|version|teardown|reload|restart|reset|crash|help|flush|clear|show|eor|operational|refresh"
)


@given(announcements())
def test_every_announce_line_matches_our_strict_grammar(announcement: Announce) -> None:
    line = render(announcement)
    assert COMMAND_GRAMMAR.fullmatch(line), line
    assert "\n" not in line
    assert ";" not in line
    assert not FOREIGN_COMMANDS.search(line), line
    assert line.count(" route ") == 1


@given(prefixes, st.frozensets(addresses, max_size=3))
def test_every_withdraw_line_matches_our_strict_grammar(
    prefix: IPv4Network | IPv6Network, neighbors: frozenset[IPv4Address | IPv6Address]
) -> None:
    line = render(Withdraw(prefix, neighbors))
    assert COMMAND_GRAMMAR.fullmatch(line), line
    assert not FOREIGN_COMMANDS.search(line), line


def test_golden_lines() -> None:
    a = Advert(
        "self",
        Attributes(
            med=100,
            local_preference=200,
            communities=(Community(65535, 0), Community(65001, 42)),
            large_communities=(LargeCommunity(65001, 1, 2),),
        ),
        frozenset({ip_address("10.99.0.3"), ip_address("10.99.0.1")}),
    )
    assert render(Announce(Prefix("10.1.1.1/32"), a)) == (
        "neighbor 10.99.0.1, neighbor 10.99.0.3 announce route 10.1.1.1/32 next-hop self "
        "med 100 local-preference 200 community [65001:42 65535:0] large-community [65001:1:2]"
    )
    assert (
        render(Announce(Prefix("fd00:10::1/128"), Advert()))
        == "announce route fd00:10::1/128 next-hop self"
    )
    assert render(Withdraw(Prefix("10.1.1.1/32"))) == "withdraw route 10.1.1.1/32"
    assert (
        render(Withdraw(Prefix("10.1.1.1/32"), frozenset({ip_address("fd00:99::1")})))
        == "neighbor fd00:99::1 withdraw route 10.1.1.1/32"
    )


def test_grammar_rejects_injections() -> None:
    for line in (
        "announce route 10.1.1.1/32 next-hop self\nshutdown",
        "announce route 10.1.1.1/32 next-hop self community [graceful-shutdown]",
        "announce route 10.1.1.1/32 next-hop 1.2.3.4; announce route 0.0.0.0/0 next-hop self",
        "neighbor * announce route 10.1.1.1/32 next-hop self",
        "announce route 10.1.1.1/32 next-hop self med -1",
    ):
        assert not COMMAND_GRAMMAR.fullmatch(line), line


# Lines as ExaBGP 5.0.15 and 4.2.21 write them (research notes A.8, observed against FRR).
V5_UP = '{ "exabgp": "5.0.0", "time": 1795425958.99, "host" : "vm", "pid" : 18196, "ppid" : 1, "counter": 2, "type": "state", "neighbor": { "address": { "local": "fd00:99::2", "peer": "fd00:99::1" }, "asn": { "local": 65001, "peer": 65000 }, "router-id": "10.99.0.2" , "state": "up" } }'
V4_DOWN = '{ "exabgp": "4.0.1", "time": 1795426180.80, "host" : "vm", "pid" : 28527, "ppid" : 1, "counter": 5, "type": "state", "neighbor": { "address": { "local": "10.99.0.2", "peer": "10.99.0.1" }, "asn": { "local": 65001, "peer": 65000 } , "state": "down", "reason": "peer reset, message (notification received (6,4)) error(Cease / Administrative Reset)" } }'
SHUTDOWN = '{ "exabgp": "5.0.0", "time": 1795426139.19, "host" : "vm", "pid" : 24356, "ppid" : 1, "type": "notification", "notification": "shutdown" }'
UPDATE = '{ "exabgp": "5.0.0", "time": 1.0, "type": "update", "neighbor": { "address": { "local": "10.99.0.2", "peer": "10.99.0.1" } } }'


def test_parse_messages() -> None:
    assert parse_message("done") == Ack(True)
    assert parse_message("error") == Ack(False)
    assert parse_message(V5_UP) == NeighborState(ip_address("fd00:99::1"), "up", "")
    down = parse_message(V4_DOWN)
    assert isinstance(down, NeighborState)
    assert down.state == "down"
    assert "Cease" in down.reason
    assert parse_message(SHUTDOWN) == ExaBGPShutdown()
    assert parse_message(UPDATE) == OtherJSON("update")
    assert parse_message("exabgp 5.0.15") == Text("exabgp 5.0.15")
    assert parse_message("{not json") == Text("{not json")
    assert parse_message(
        '{"type": "state", "neighbor": {"address": {"peer": "bogus"}}}'
    ) == OtherJSON("state")


def test_parse_adj_rib_out() -> None:
    lines = [
        "10.99.0.1 ipv4 unicast 10.0.0.1/32 next-hop 10.99.0.2",
        "fd00:99::1 ipv6 unicast fd00:10::10/128 next-hop fd00:99::2",
        "neighbor 10.99.0.3 ipv4 unicast 10.0.0.2/32 next-hop self",  # ExaBGP 4.2.21's form
        "something else entirely",
    ]
    entries, unparsed = parse_adj_rib_out(lines)
    assert entries == [
        (ip_address("10.99.0.1"), Prefix("10.0.0.1/32")),
        (ip_address("fd00:99::1"), Prefix("fd00:10::10/128")),
        (ip_address("10.99.0.3"), Prefix("10.0.0.2/32")),
    ]
    assert unparsed == ["something else entirely"]


def test_runs_of_identical_attributes_share_a_line_and_small_changes_do_not() -> None:
    from announcer.exabgp.commands import GROUP_MAX, GROUP_MIN, render_batches

    many = [
        Announce(Prefix(f"10.1.{i // 256}.{i % 256}/32"), Advert()) for i in range(GROUP_MAX + 5)
    ]
    few = [Withdraw(Prefix(f"10.2.0.{i}/32")) for i in range(GROUP_MIN - 1)]
    batches = render_batches(few + many)
    assert [len(cmds) for _, cmds in batches] == [1] * (GROUP_MIN - 1) + [GROUP_MAX, 5]
    assert batches[0][0] == "withdraw route 10.2.0.0/32"
    line, cmds = batches[GROUP_MIN - 1]
    assert line.startswith("announce attributes next-hop self nlri 10.1.0.0/32 10.1.0.1/32 ")
    assert line.split()[5:] == [str(c.prefix) for c in cmds]
    withdraws = render_batches(
        [
            Withdraw(Prefix(f"10.3.0.{i}/32"), frozenset({ip_address("10.99.0.1")}))
            for i in range(GROUP_MIN)
        ]
    )
    assert withdraws[0][0].startswith(
        "neighbor 10.99.0.1 withdraw attributes next-hop self nlri 10.3.0.0/32 "
    )
    for line, _ in render_batches(few + many) + withdraws:
        assert COMMAND_GRAMMAR.fullmatch(line)


@given(st.lists(announcements(), min_size=1, max_size=30))
def test_every_batch_line_matches_the_grammar_and_covers_each_command_once(
    items: list[Announce],
) -> None:
    from announcer.exabgp.commands import render_batches

    commands: list[Announce | Withdraw] = list(items)
    batches = render_batches(commands)
    assert [c for _, cmds in batches for c in cmds] == commands
    for line, _ in batches:
        assert COMMAND_GRAMMAR.fullmatch(line), line
        assert not FOREIGN_COMMANDS.search(line), line
