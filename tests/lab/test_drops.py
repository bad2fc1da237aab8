"""Kernel drop counters of a lab node (announcer.lab.drops): parsing and growth."""

import pytest

from announcer.lab.drops import SEPARATOR, growth, of_family, parse_counters

SNMP6 = "Ip6InReceives                   	100\nIp6InNoRoutes                   	2\nIcmp6OutDestUnreachs            	3\n"
SNMP = (
    "Ip: Forwarding DefaultTTL InDiscards OutNoRoutes\nIp: 1 64 4 5\n"
    "Udp: InDatagrams NoPorts InErrors RcvbufErrors\nUdp: 9 1 0 7\n"
)
NETSTAT = "IpExt: InNoRoutes InTruncatedPkts\nIpExt: 6 0\n"


def output():
    return f"\n{SEPARATOR}\n".join([SNMP6, SNMP, NETSTAT]) + "\n"


def test_every_watched_counter_is_read():
    counters = parse_counters(output())
    assert counters["Ip6InNoRoutes"] == 2
    assert counters["Icmp6OutDestUnreachs"] == 3
    assert counters["Ip.InDiscards"] == 4
    assert counters["Ip.OutNoRoutes"] == 5
    assert counters["Udp.RcvbufErrors"] == 7
    assert counters["IpExt.InNoRoutes"] == 6
    assert "Ip6InReceives" not in counters  # not a drop


def test_a_missing_file_is_an_error():
    with pytest.raises(Exception, match="expected 3 files"):
        parse_counters(SNMP6)


def test_growth_keeps_what_grew_and_splits_by_family():
    before = {"leaf2": {"Ip6InNoRoutes": 2, "Ip.InDiscards": 4}, "spine1": {"Ip6InNoRoutes": 0}}
    after = {
        "leaf2": {"Ip6InNoRoutes": 3, "Ip.InDiscards": 4, "Icmp6OutDestUnreachs": 1},
        "spine1": {"Ip6InNoRoutes": 0},
        "new": {"Ip.OutNoRoutes": 2},
    }
    grown = growth(before, after)
    assert grown == {
        "leaf2": {"Icmp6OutDestUnreachs": 1, "Ip6InNoRoutes": 1},
        "new": {"Ip.OutNoRoutes": 2},
    }
    assert of_family(grown, 6) == {"leaf2": {"Icmp6OutDestUnreachs": 1, "Ip6InNoRoutes": 1}}
    assert of_family(grown, 4) == {"new": {"Ip.OutNoRoutes": 2}}
