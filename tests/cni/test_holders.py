"""holders' pure part: the members rule and the two state files' contents."""

from __future__ import annotations

import ipaddress
import re
import struct

import pytest

from announcer.cni import holders, rtnl
from announcer.cni.scheme import WiringError

A, B, C = 3, 5, 7
NAMES = {A: "vethrA", B: "vethrB", C: "vethrC"}


@pytest.mark.parametrize(
    ("usable", "unhealthy", "expected"),
    [
        ({A, B, C}, set(), {A, B, C}),
        ({A, B, C}, {"vethrB"}, {A, C}),
        ({A, B, C}, {"vethrA", "vethrB", "vethrC"}, {A, B, C}),  # all sick: all serve
        ({A, B}, {"vethrA"}, {B}),
        ({A, B}, {"vethrB", "vethrC"}, {A}),  # C not usable (no carrier): not a member
        ({B}, {"vethrB"}, {B}),  # the only usable one serves though unhealthy
        (set(), set(), set()),
        ({A, B, C}, {"vethrX"}, {A, B, C}),  # a name that holds nothing is ignored
    ],
)
def test_serving(usable: set[int], unhealthy: set[str], expected: set[int]) -> None:
    assert holders.serving(NAMES, usable, unhealthy) == expected


def test_files_round_trip() -> None:
    record = {ipaddress.ip_address("10.9.9.1"): {"vethrB": 5, "vethrA": 3},
              ipaddress.ip_address("fd00:9::1"): {"vethrA": 4}}  # fmt: skip
    text = holders.render_holders("boot/cookie:3", record)
    assert holders.parse_holders(text) == ("boot/cookie:3", record)
    text = holders.render_unhealthy("boot/cookie:3", {"vethrB", "vethrA"})
    assert '"unhealthy": ["vethrA", "vethrB"]' in text
    assert holders.parse_unhealthy(text) == ("boot/cookie:3", {"vethrA", "vethrB"})


@pytest.mark.parametrize(
    ("text", "named"),
    [('["vethrA"]', "vethrA"), ('{"netns": "n"}', "netns"), ('{"netns": 1, "holders": {}}', "1"),
     ('{"netns": "n", "holders": {"10.9.9.1": ["vethrA"]}}', "['vethrA']"),
     ('{"netns": "n", "holders": {"10.9.9.1": {"vethrA": "3"}}}', "'3'"),
     ('{"netns": "n", "holders": {"not-an-ip": {"vethrA": 3}}}', "not-an-ip"),
     ("{", "Expecting")],
)  # fmt: skip
def test_bad_holders_files_are_refused(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        holders.parse_holders(text)


@pytest.mark.parametrize(
    ("text", "named"),
    [('{"netns": "n", "unhealthy": "vethrA"}', "'vethrA'"),
     ('{"netns": "n", "unhealthy": [1]}', "[1]"), ('["vethrA"]', "vethrA")],
)  # fmt: skip
def test_bad_verdict_files_are_refused(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        holders.parse_unhealthy(text)


def test_names_are_validated() -> None:
    assert holders.validate_names(["vethrA", "vethrA"]) == {"vethrA"}
    with pytest.raises(WiringError, match="'veth A'"):
        holders.validate_names(["vethrA", "veth A"])


def test_parse_link() -> None:
    name = b"vethrA\0\0"
    attr = struct.pack("=HH", 4 + 7, rtnl.IFLA_IFNAME) + name
    body = struct.pack("=BxHiII", 0, 1, 9, rtnl.IFF_UP | rtnl.IFF_LOWER_UP, 0) + attr
    link = rtnl.parse_link(body, 0, len(body))
    assert link == rtnl.Link(9, "vethrA", rtnl.IFF_UP | rtnl.IFF_LOWER_UP)
    assert link.carrier
    assert not rtnl.Link(9, "vethrA", rtnl.IFF_UP).carrier
