"""Address families and the per-family report shape: IPv4 figures where single-stack
consumers read them, IPv6 beside them with the same keys, a verdict that needs both."""

import pytest

from announcer.lab.family import (
    IPV4,
    IPV6,
    combine,
    family_of,
    family_results,
    joint_pass,
    schema_errors,
)


def test_families_name_their_host_prefixes_and_tools():
    assert (IPV4.host("10.200.0.1"), IPV6.host("fd00:200::1")) == (
        "10.200.0.1/32",
        "fd00:200::1/128",
    )
    assert (IPV4.afi, IPV6.afi) == ("ipv4 unicast", "ipv6 unicast")
    assert (IPV4.ip_flag, IPV6.ip_flag) == ("-4", "-6")
    assert (IPV4.suffix, IPV6.suffix) == ("", "-ipv6")  # IPv4 artifacts keep their names
    assert (IPV4.frr_suffix, IPV6.frr_suffix) == ("", "6")


@pytest.mark.parametrize(
    ("ip", "family"),
    [("10.200.0.1", IPV4), ("fd00:200::1", IPV6), ("fd00:200::1/128", IPV6), ("10.0.0.0/8", IPV4)],
)
def test_family_of(ip, family):
    assert family_of(ip) is family


def test_family_of_names_what_is_not_an_address():
    with pytest.raises(ValueError, match="'inst1' is not an IPv4 or IPv6 address"):
        family_of("inst1")


@pytest.mark.parametrize(
    ("verdicts", "joint"),
    [
        ([True, True], True),
        ([True, False], False),
        ([False, True], False),
        ([None, None], None),
        ([True, None], False),
        ([], False),
    ],
)
def test_a_scenario_passes_only_when_every_family_did(verdicts, joint):
    assert joint_pass(verdicts) is joint


def test_combine_keeps_ipv4_at_the_top_and_nests_ipv6():
    v4 = {"pass": True, "detection_ms": 300, "bfd": {"lost_packets": 3}}
    v6 = {"pass": False, "detection_ms": 410, "bfd": {"lost_packets": 5}}
    entry = combine({"ipv4": v4, "ipv6": v6})
    assert entry["detection_ms"] == 300
    assert entry["bfd"] == {"lost_packets": 3}
    assert entry["ipv6"] == v6
    assert entry["pass"] is False
    assert entry["pass_by_family"] == {"ipv4": True, "ipv6": False}
    assert family_results(entry) == {"ipv4": v4, "ipv6": v6}


def test_combine_of_one_family_is_that_family():
    entry = combine({"ipv4": {"pass": True, "flows": 10}})
    assert entry == {"pass": True, "flows": 10, "pass_by_family": {"ipv4": True}}
    with pytest.raises(ValueError, match="no family results"):
        combine({})


def test_schema_wants_both_families_with_the_same_figures():
    good = combine({"ipv4": {"pass": True, "a": 1, "b": 2}, "ipv6": {"pass": True, "a": 3, "b": 4}})
    assert schema_errors(good) == []
    lacking = combine({"ipv4": {"pass": True, "a": 1, "b": 2}, "ipv6": {"pass": True, "a": 3}})
    assert schema_errors(lacking) == ["ipv6 figures differ from ipv4: missing ['b'], extra []"]
    assert schema_errors({"pass": True, "a": 1}) == ["no ipv6 result"]
    assert schema_errors({"a": 1}) == ["no 'pass'", "no ipv6 result"]


def test_schema_forgives_differing_figures_when_a_family_failed_with_an_error():
    failed = combine({"ipv4": {"pass": True, "a": 1}, "ipv6": {"pass": False, "error": "x"}})
    assert schema_errors(failed) == []
