"""decide(): every prefix gets a decision with a reason; tables of cases and scenarios."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, ip_address

import pytest

from announcer.core.decide import decide, desired
from announcer.core.eligibility import is_martian
from announcer.core.policy import Policy
from announcer.core.world import World
from announcer.events import (
    IFF_LOWER_UP,
    IFF_UP,
    AddressAdded,
    KernelAddress,
    KernelLink,
    KernelRoute,
    KernelSnapshot,
    LinkChanged,
    LinkRemoved,
    RouteAdded,
    RouteRemoved,
)
from announcer.model import Advert, Attributes, Community, Prefix

UP = IFF_UP | IFF_LOWER_UP
POLICY = Policy(
    tables=frozenset({254}),
    interfaces=("vethr*", "cali*"),
    allow=(Prefix("10.0.0.0/8"), Prefix("fd00::/8")),
)


def world(*routes: KernelRoute, links: tuple[KernelLink, ...] = ()) -> World:
    w = World()
    default_links = (
        KernelLink(2, "vethr1", UP),
        KernelLink(3, "eth0", UP),
        KernelLink(4, "cali9", UP),
    )
    w.apply(KernelSnapshot(tuple(routes), links or default_links, ()))
    return w


def route(prefix: str, oif: int = 2, **kw: object) -> KernelRoute:
    return KernelRoute(
        prefix=Prefix(prefix),
        table=kw.pop("table", 254),
        protocol=kw.pop("protocol", 3),
        oif=oif,
        **kw,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("r", "announce", "reason"),
    [
        (route("10.1.1.1/32"), True, "host_route"),
        (route("fd00:10::1/128"), True, "host_route"),
        (route("10.1.1.1/32", oif=4), True, "host_route"),
        (route("10.1.0.0/24"), False, "not_host_prefix"),
        (route("0.0.0.0/0"), False, "not_host_prefix"),
        (route("127.0.0.5/32"), False, "martian"),
        (route("169.254.1.1/32"), False, "martian"),
        (route("224.0.0.5/32"), False, "martian"),
        (route("0.1.2.3/32"), False, "martian"),
        (route("fe80::1/128"), False, "martian"),
        (route("ff02::1/128"), False, "martian"),
        (route("::ffff:10.1.1.1/128"), False, "martian"),
        (route("10.1.1.1/32", table=100), False, "table_not_selected"),
        (route("10.1.1.1/32", oif=3), False, "interface_not_selected"),
        (route("10.1.1.1/32", oif=99), False, "no_interface"),
        (route("10.1.1.1/32", gateway=IPv4Address("10.9.9.9")), False, "route_has_gateway"),
        (route("10.1.1.1/32", nexthops=((2, None), (3, None)), oif=None), False, "multipath_route"),
        (route("10.1.1.1/32", nexthops=((2, None), (4, None)), oif=None), True, "host_route"),
        (
            route("10.1.1.1/32", nexthops=((2, None), (4, IPv4Address("10.9.9.9"))), oif=None),
            False,
            "route_has_gateway",
        ),
        (
            route(
                "fd00::1/128",
                nexthops=((2, ip_address("fe80::2")), (4, ip_address("fe80::3"))),
                oif=None,
            ),
            True,
            "host_route",
        ),
        (route("10.1.1.1/32", nexthops=((2, None), (77, None)), oif=None), True, "host_route"),
        (route("10.1.1.1/32", nexthops=((66, None), (77, None)), oif=None), False, "no_interface"),
        (route("192.168.1.1/32"), False, "prefix_not_allowed"),
        (route("11.0.0.1/32"), False, "prefix_not_allowed"),
    ],
)
def test_each_route_gets_a_decision_with_its_reason(
    r: KernelRoute, announce: bool, reason: str
) -> None:
    decisions = decide(world(r), POLICY)
    assert decisions[r.prefix].announce is announce
    assert decisions[r.prefix].reason == reason


def test_martians_are_never_announced_even_when_allowed() -> None:
    policy = Policy(interfaces=("vethr*",), allow=(Prefix("0.0.0.0/1"), Prefix("128.0.0.0/1")))
    for prefix in ("127.0.0.1/32", "169.254.1.1/32", "0.0.0.1/32", "239.1.1.1/32"):
        assert decide(world(route(prefix)), policy)[Prefix(prefix)].reason == "martian"
    assert decide(world(route("8.8.8.8/32")), policy)[Prefix("8.8.8.8/32")].announce


def test_empty_allowlist_announces_nothing() -> None:
    decisions = decide(world(route("10.1.1.1/32")), Policy(interfaces=("vethr*",)))
    assert decisions[Prefix("10.1.1.1/32")].reason == "prefix_not_allowed"


def test_protocol_filter_selects_by_route_protocol() -> None:
    policy = Policy(interfaces=("vethr*",), protocols=frozenset({180}), allow=POLICY.allow)
    decisions = decide(
        world(route("10.1.1.1/32", protocol=180), route("10.1.1.2/32", protocol=3)), policy
    )
    assert decisions[Prefix("10.1.1.1/32")].announce
    assert decisions[Prefix("10.1.1.2/32")].reason == "protocol_not_selected"


def test_route_on_a_link_without_carrier_is_withheld() -> None:
    w = world(route("10.1.1.1/32"), links=(KernelLink(2, "vethr1", IFF_UP),))
    assert decide(w, POLICY)[Prefix("10.1.1.1/32")].reason == "link_down"


def test_local_table_and_non_unicast_routes_are_not_even_listed() -> None:
    w = world(route("10.1.1.1/32", table=255), route("10.1.1.2/32", type=2))
    assert decide(w, POLICY) == {}


def test_best_reason_is_the_candidate_that_got_furthest() -> None:
    # same /32 in an unselected table and on an unselected device: the device is the answer
    w = world(route("10.1.1.1/32", table=100), route("10.1.1.1/32", oif=3, priority=5))
    assert decide(w, POLICY)[Prefix("10.1.1.1/32")].reason == "interface_not_selected"


def test_one_eligible_candidate_is_enough() -> None:
    w = world(route("10.1.1.1/32", oif=3), route("10.1.1.1/32", priority=10))
    decision = decide(w, POLICY)[Prefix("10.1.1.1/32")]
    assert decision.announce
    assert decision.sources == ("route:main:vethr1",)


def test_address_interfaces_announce_host_addresses_only() -> None:
    policy = Policy(interfaces=(), address_interfaces=("anycast*",), allow=POLICY.allow)
    w = World()
    w.apply(
        KernelSnapshot(
            (),
            (KernelLink(7, "anycast0", UP), KernelLink(8, "eth0", UP)),
            (
                KernelAddress(7, IPv4Address("10.5.5.5"), 32),
                KernelAddress(7, IPv4Address("10.6.6.6"), 24),
                KernelAddress(8, IPv4Address("10.7.7.7"), 32),
            ),
        )
    )
    decisions = decide(w, policy)
    assert decisions[Prefix("10.5.5.5/32")].reason == "local_address"
    assert decisions[Prefix("10.6.6.6/32")].reason == "not_host_prefix"
    assert Prefix("10.7.7.7/32") not in decisions


def test_max_routes_refuses_the_excess_and_keeps_what_is_announced() -> None:
    policy = Policy(interfaces=("vethr*",), allow=POLICY.allow, max_routes=2)
    w = world(*(route(f"10.0.0.{i}/32") for i in range(1, 5)))
    first = decide(w, policy)
    assert [str(p) for p, d in sorted(first.items()) if d.announce] == [
        "10.0.0.1/32",
        "10.0.0.2/32",
    ]
    assert first[Prefix("10.0.0.3/32")].reason == "max_routes_exceeded"
    # 10.0.0.4 was announced before: it keeps its place; the cut never flaps what is announced
    again = decide(w, policy, announced={Prefix("10.0.0.4/32")})
    assert {str(p) for p, d in again.items() if d.announce} == {"10.0.0.1/32", "10.0.0.4/32"}


def test_desired_carries_policy_attributes_and_next_hop_per_family() -> None:
    policy = Policy(
        interfaces=("vethr*",),
        allow=POLICY.allow,
        next_hop=IPv4Address("10.99.0.2"),
        attributes=Attributes(med=10, communities=(Community(65000, 1),)),
    )
    want = desired(
        decide(world(route("10.1.1.1/32"), route("fd00::1/128")), policy).items(), policy
    )
    assert want[Prefix("10.1.1.1/32")] == Advert(IPv4Address("10.99.0.2"), policy.attributes)
    assert want[Prefix("fd00::1/128")].next_hop == "self"


def test_is_martian_covers_default_routes() -> None:
    assert is_martian(Prefix("0.0.0.0/0"))
    assert is_martian(Prefix("::/0"))
    assert not is_martian(Prefix("10.0.0.1/32"))


def announced(w: World) -> set[str]:
    return {str(p) for p, d in decide(w, POLICY).items() if d.announce}


# Scenario: each step is a batch of events and the full expected announced set after it.
SCENARIO = [
    ([RouteAdded(route("10.1.1.1/32"))], {"10.1.1.1/32"}),
    (
        [RouteAdded(route("10.1.1.2/32")), RouteAdded(route("10.1.1.3/32", oif=3))],
        {"10.1.1.1/32", "10.1.1.2/32"},
    ),
    ([RouteRemoved(route("10.1.1.1/32"))], {"10.1.1.2/32"}),
    ([LinkChanged(KernelLink(2, "vethr1", IFF_UP))], set()),  # carrier lost
    ([LinkChanged(KernelLink(2, "vethr1", UP))], {"10.1.1.2/32"}),
    ([RouteAdded(route("10.1.1.9/32", oif=4))], {"10.1.1.2/32", "10.1.1.9/32"}),
    ([LinkRemoved(2)], {"10.1.1.9/32"}),  # veth deleted: its routes vanish without RTM_DELROUTE
    (
        [AddressAdded(KernelAddress(4, IPv4Address("10.8.8.8"), 32))],
        {"10.1.1.9/32"},
    ),  # not selected
]


def test_scenario_container_lifecycle_in_the_kernel() -> None:
    w = world()
    for events, expected in SCENARIO:
        for event in events:
            w.apply(event)
        assert announced(w) == expected, events


def test_dual_stack_neighbors_get_their_own_family_only() -> None:
    """A v4 and a v6 session: each family goes to its own neighbors only (ExaBGP would log
    'family not configured' for every route sent to the other); one family: all."""
    v4, v6 = ip_address("10.99.0.1"), ip_address("fd00:99::1")
    both = Policy(
        interfaces=("vethr*",), allow=(Prefix("10.0.0.0/8"), Prefix("fd00::/8")),
        neighbors=frozenset({v4, v6}),
    )  # fmt: skip
    want = desired(decide(world(route("10.1.1.1/32"), route("fd00::1/128")), both).items(), both)
    assert want[Prefix("10.1.1.1/32")].neighbors == {v4}
    assert want[Prefix("fd00::1/128")].neighbors == {v6}
    only_v4 = replace(both, neighbors=frozenset({v4}))
    want = desired(decide(world(route("fd00::1/128")), only_v4).items(), only_v4)
    assert want[Prefix("fd00::1/128")].neighbors == {v4}  # MP-BGP over one session
