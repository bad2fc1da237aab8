"""Config validation, naming and rendering: pure, no namespaces."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from announcer.cni import netconf
from announcer.cni.attachments import parse_alias, render_alias
from announcer.cni.netconf import CNIError, parse_netconf
from announcer.cni.plugin import handle
from announcer.cni.scheme import (
    WiringConfig,
    WiringError,
    container_mac,
    host_ifname,
    validate_ips,
)


def _conf(**overrides: Any) -> bytes:
    doc: dict[str, Any] = {"cniVersion": "1.0.0", "name": "routed", "type": "announcer-routed",
                           "ipam": {"type": "static"}}  # fmt: skip
    doc.update(overrides)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def test_defaults() -> None:
    conf = parse_netconf(_conf())
    assert conf.wiring == WiringConfig("vethr", 1500, 254, 180)
    assert conf.extra_ips == ()


def test_own_keys_are_read() -> None:
    conf = parse_netconf(_conf(hostVethPrefix="cali", mtu=9000, table=100, routeProtocol=200,
                               args={"cni": {"extraIPs": ["10.9.9.9", "fd00::9/128"]}},
                               runtimeConfig={"extraIPs": ["10.9.9.10/32"]}))  # fmt: skip
    assert conf.wiring == WiringConfig("cali", 9000, 100, 200)
    assert [str(ip) for ip in conf.extra_ips] == ["10.9.9.9", "fd00::9", "10.9.9.10"]


@pytest.mark.parametrize(
    ("overrides", "code", "words"),
    [
        ({"colour": "blue"}, 2, ["colour", "blue"]),
        ({"cniVersion": "0.3.1"}, 1, ["cniVersion", "0.3.1"]),
        ({"cniVersion": None}, 1, ["cniVersion"]),
        ({"name": "bad name"}, 7, ["name", "bad name"]),
        ({"ipam": None}, 7, ["ipam"]),
        ({"ipam": {"type": "../../bin/sh"}}, 7, ["ipam.type", "../../bin/sh"]),
        ({"mtu": "1500"}, 7, ["mtu", "1500"]),
        ({"mtu": True}, 7, ["mtu", "True"]),
        ({"mtu": 20}, 7, ["mtu", "20"]),
        ({"table": 255}, 7, ["table", "255"]),
        ({"table": 0}, 7, ["table", "0"]),
        ({"routeProtocol": 4}, 7, ["routeProtocol", "4"]),
        ({"routeProtocol": 256}, 7, ["routeProtocol", "256"]),
        ({"hostVethPrefix": "veth-too-long"}, 7, ["hostVethPrefix", "veth-too-long"]),
        ({"hostVethPrefix": "1veth"}, 7, ["hostVethPrefix", "1veth"]),
        ({"hostVethPrefix": "ve/th"}, 7, ["hostVethPrefix", "ve/th"]),
        ({"args": {"cni": {"extraIPs": "10.9.9.9"}}}, 7, ["args.cni.extraIPs", "10.9.9.9"]),
        ({"args": {"cni": {"extraIPs": ["nonsense"]}}}, 7, ["args.cni.extraIPs", "nonsense"]),
        ({"runtimeConfig": {"extraIPs": [1]}}, 7, ["runtimeConfig.extraIPs"]),
        ({"prevResult": []}, 7, ["prevResult"]),
    ],
)
def test_bad_config_names_key_and_value(
    overrides: dict[str, Any], code: int, words: list[str]
) -> None:
    with pytest.raises(CNIError) as info:
        parse_netconf(_conf(**overrides))
    assert info.value.code == code
    for word in words:
        assert word in info.value.msg


def test_not_json() -> None:
    with pytest.raises(CNIError) as info:
        parse_netconf(b"{nope")
    assert info.value.code == 6


def test_cni_keys_runtimes_add_are_accepted() -> None:
    parse_netconf(_conf(capabilities={"ips": True}, dns={"nameservers": ["10.0.0.53"]},
                        runtimeConfig={"ips": ["10.1.0.5/24"]}, ipMasq=False))  # fmt: skip


def test_environment() -> None:
    env = netconf.parse_environment({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c",
                                     "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
                                     "CNI_PATH": "/a::/b", "CNI_ARGS": "A=1;EXTRA_IPS=10.9.9.9"})  # fmt: skip
    assert env.path == ("/a", "/b")
    assert env.args == {"A": "1", "EXTRA_IPS": "10.9.9.9"}
    assert netconf.extra_ips(parse_netconf(_conf()), env) == (ipaddress.ip_address("10.9.9.9"),)
    with pytest.raises(CNIError, match="CNI_NETNS") as info:
        netconf.parse_environment({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c",
                                   "CNI_IFNAME": "eth0", "CNI_PATH": "/a"})  # fmt: skip
    assert info.value.code == 4
    # DEL needs no netns: the runtime may have removed it already.
    netconf.parse_environment({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c",
                               "CNI_IFNAME": "eth0", "CNI_PATH": "/a"})  # fmt: skip
    with pytest.raises(CNIError, match="FROB"):
        netconf.parse_environment({"CNI_COMMAND": "FROB"})
    with pytest.raises(CNIError, match="garbage"):
        netconf.parse_cni_args("A=1;garbage")


def test_host_ifname_is_short_stable_and_distinct() -> None:
    a = host_ifname("mesos-executor-0001-aaaaaaaaaaaaaaaa", "eth0")
    b = host_ifname("mesos-executor-0001-aaaaaaaaaaaaaaab", "eth0")
    assert a == host_ifname("mesos-executor-0001-aaaaaaaaaaaaaaaa", "eth0")
    assert a != b
    assert a != host_ifname("mesos-executor-0001-aaaaaaaaaaaaaaaa", "eth1")
    assert len(a) == 15
    assert a.startswith("vethr")
    assert len(host_ifname("x", "eth0", "abcdefghijk")) == 15


def test_container_mac() -> None:
    ip = ipaddress.ip_address
    assert container_mac([ip("10.1.0.5")]) == "02:42:0a:01:00:05"
    assert container_mac([ip("fd00::1:a0b:c0d"), ip("10.1.0.5")]) == "02:42:0a:01:00:05"
    assert container_mac([ip("fd00::1:a0b:c0d")]) == "02:42:0a:0b:0c:0d"


def test_validate_ips() -> None:
    primary, extra = validate_ips(["10.1.0.5/24"], ["10.9.9.9/32"])
    assert [str(i) for i in primary + extra] == ["10.1.0.5", "10.9.9.9"]
    with pytest.raises(WiringError, match=r"10\.1\.0\.5 is listed twice"):
        validate_ips(["10.1.0.5"], ["10.1.0.5"])
    with pytest.raises(WiringError, match="at least one"):
        validate_ips([], ["10.9.9.9"])


def test_alias_round_trip() -> None:
    assert parse_alias(render_alias("net", "cid", "eth0")) == ("net", "cid", "eth0")
    assert parse_alias("someone else's alias") is None
    assert parse_alias(None) is None


def test_result_rendering() -> None:
    ips = [ipaddress.ip_address("10.1.0.5"), ipaddress.ip_address("fd00::5")]
    result = netconf.render_result("1.0.0", [{"name": "eth0"}], ips, None)
    assert result["ips"][0] == {"address": "10.1.0.5/32", "gateway": "169.254.1.1", "interface": 1}
    assert result["ips"][1]["address"] == "fd00::5/128"
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                                {"dst": "::/0", "gw": "fe80::1"}]  # fmt: skip
    assert netconf.render_result("0.4.0", [], ips, None)["ips"][0]["version"] == "4"


def test_ipam_result_without_ips_is_an_error() -> None:
    with pytest.raises(CNIError) as info:
        netconf.ipam_ips({"ips": []})
    assert info.value.code == 102


def test_version_needs_nothing_else() -> None:
    assert handle(b'{"cniVersion":"0.4.0"}', {"CNI_COMMAND": "VERSION"}) == {
        "cniVersion": "0.4.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}  # fmt: skip
    assert handle(b"", {"CNI_COMMAND": "VERSION"})["cniVersion"] == "1.1.0"  # type: ignore[index]
