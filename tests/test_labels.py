"""The anycast.* label grammar: typed values or an error naming label and value."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from announcer.core.plan import Announce
from announcer.core.policy import Policy, attributes_for
from announcer.exabgp.commands import COMMAND_GRAMMAR, render
from announcer.model import Advert, Community, LargeCommunity, host_prefix
from announcer.spec.labels import LabelError, ServiceSpec, parse_labels


def test_a_full_set_of_labels() -> None:
    spec = parse_labels(
        {
            "anycast.ips": "10.200.0.1, fd00:200::1,10.200.0.1",
            "anycast.communities": "65001:100,GRACEFUL_SHUTDOWN,no-export",
            "anycast.large-communities": "65001:1:2",
            "anycast.med": "50",
            "anycast.local-pref": "200",
            "anycast.as-path-prepend": "2",
            "anycast.neighbors": "10.99.0.1",
            "anycast.drain-seconds": "5",
            "com.example.other": "ignored",
        }
    )
    assert spec == ServiceSpec(
        ips=(ip_address("10.200.0.1"), ip_address("fd00:200::1")),
        med=50,
        local_preference=200,
        communities=(Community(65001, 100), Community(65535, 0), Community(65535, 65281)),
        large_communities=(LargeCommunity(65001, 1, 2),),
        as_path_prepend=2,
        neighbors=frozenset({ip_address("10.99.0.1")}),
        drain_seconds=5.0,
    )


def test_no_anycast_labels_is_none() -> None:
    assert parse_labels({"maintainer": "x"}) is None


HOSTILE = [
    ("anycast.ips", "10.0.0.1\nshutdown", "characters outside"),
    ("anycast.ips", "10.0.0.1; announce route 0.0.0.0/0 next-hop self", "characters outside"),
    ("anycast.ips", "10.0.0.1 next-hop 1.2.3.4", "characters outside"),
    ("anycast.ips", "10.0.0.0/8", "characters outside"),
    ("anycast.ips", "::ffff:10.0.0.1", "IPv4-mapped"),
    ("anycast.ips", "\uff110.0.0.1", "characters outside"),  # a fullwidth digit one
    ("anycast.ips", "10.0.0.1,", "empty items"),
    (
        "anycast.ips",
        ",".join(f"10.0.{i // 256}.{i % 256}" for i in range(100_000)),
        "characters, at most",
    ),
    ("anycast.ips", ",".join(f"10.0.0.{i}" for i in range(65)), "at most 64"),
    ("anycast.ips", "bogus", "not an IPv4 or IPv6 address"),
    ("anycast.communities", "65536:1", "not 0-65535:0-65535"),
    ("anycast.communities", "graceful-shutdown]", "characters outside"),
    ("anycast.communities", "version", "not 0-65535:0-65535"),
    ("anycast.large-communities", "1:2", "not A:B:C"),
    ("anycast.large-communities", "4294967296:1:1", "not A:B:C"),
    ("anycast.med", "-1", "integer 0..4294967295"),
    ("anycast.med", "4294967296", "integer 0..4294967295"),
    ("anycast.med", "1e3", "integer"),
    ("anycast.local-pref", "", "integer"),
    ("anycast.as-path-prepend", "11", "0..10"),
    ("anycast.drain-seconds", "3601", "0..3600"),
    ("anycast.neighbors", "10.99.0.256", "not an IPv4 or IPv6 address"),
    ("anycast.ip", "10.0.0.1", "is not one of"),
]


@pytest.mark.parametrize(
    ("label", "value", "why"),
    HOSTILE,
    ids=[f"{label}:{value[:20]!r}" for label, value, _ in HOSTILE],
)
def test_hostile_and_bad_values_are_rejected_naming_label_and_value(
    label: str, value: str, why: str
) -> None:
    with pytest.raises(LabelError) as info:
        parse_labels({label: value})
    message = str(info.value)
    assert label in message
    assert why in message
    assert "\n" not in message  # escaped: a value cannot forge a log line
    assert len(message) < 400


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "anycast.ips",
                "anycast.communities",
                "anycast.large-communities",
                "anycast.med",
                "anycast.local-pref",
                "anycast.as-path-prepend",
                "anycast.neighbors",
                "anycast.drain-seconds",
            ]
        ),
        st.text(max_size=80),
    )
)
def test_any_label_text_parses_to_typed_values_or_a_label_error_and_renders_inside_the_grammar(
    labels: dict[str, str],
) -> None:
    try:
        spec = parse_labels(labels)
    except LabelError:
        return
    if spec is None:
        assert labels == {}
        return
    policy = Policy(local_as=65001)
    for address in spec.ips:
        line = render(
            Announce(
                host_prefix(address), Advert("self", attributes_for(policy, spec), spec.neighbors)
            )
        )
        assert COMMAND_GRAMMAR.fullmatch(line), line
