"""Extra IPs from Mesos' network labels, on payloads in the documented format (tests/data/mesos)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from announcer.cni.netconf import CNIError, parse_netconf
from announcer.cni.scheme import host_ifname
from tests.cni.conftest import LOCK_FILE, Runtime, ip_json, our_routes, static_ipam

DATA = Path(__file__).parents[1] / "data" / "mesos"


def _payload(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / name).read_text())
    return doc


def _extra(name: str) -> list[str]:
    return [str(ip) for ip in parse_netconf(json.dumps(_payload(name)).encode()).extra_ips]


def test_anycast_ips_label_is_read() -> None:
    assert _extra("add_anycast_labels.json") == ["10.9.9.9", "fd00:9::9"]
    assert _extra("add_no_labels.json") == []


def test_mesos_labels_add_to_the_other_sources() -> None:
    doc = _payload("add_anycast_labels.json")
    doc["args"]["cni"] = {"extraIPs": ["10.9.9.1"]}
    conf = parse_netconf(json.dumps(doc).encode())
    assert conf.extra_ips == tuple(map(ipaddress.ip_address, ["10.9.9.1", "10.9.9.9", "fd00:9::9"]))


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("add_bad_anycast_value.json",
         ["args.org.apache.mesos.network_info.labels.labels", "anycast.ips",
          r"'10.9.9.9\nannounce route 0.0.0.0/0 next-hop self'", "characters outside"]),
        ("add_anycast_twice.json", ["anycast.ips is given 2 times"]),
        ("add_anycast_without_value.json", ["anycast.ips=null", "must be a string"]),
    ],
)  # fmt: skip
def test_bad_labels_are_clear_errors(name: str, words: list[str]) -> None:
    with pytest.raises(CNIError) as info:
        parse_netconf(json.dumps(_payload(name)).encode())
    assert info.value.code == 7
    for word in words:
        assert word in info.value.msg
    assert "\n" not in info.value.msg + info.value.details  # never pasted unparsed


@pytest.mark.parametrize(
    ("mesos", "where"),
    [
        ([], "args.org.apache.mesos=[]: must be an object"),
        ({"network_info": "x"}, "network_info='x': must be an object"),
        ({"network_info": {"labels": {"labels": [{"key": 7}]}}}, '{"key": 7} has no string key'),
        ({"network_info": {"labels": []}}, "network_info.labels=[]: must be an object"),
        ({"network_info": {"labels": {"labels": {}}}}, "labels.labels={}: must be a list"),
        ({"network_info": {"labels": {"labels": ["anycast.ips"]}}}, "has no string key"),
    ],
)
def test_malformed_mesos_args_name_where(mesos: object, where: str) -> None:
    doc = dict(_payload("add_no_labels.json"), args={"org.apache.mesos": mesos})
    with pytest.raises(CNIError, match=r"args\.org\.apache\.mesos") as info:
        parse_netconf(json.dumps(doc).encode())
    assert where in info.value.msg


@pytest.mark.netns
@pytest.mark.cni
def test_add_with_a_mesos_payload(runtime: Runtime, containers: Callable[[], str]) -> None:
    """The plugin run as Mesos' isolator runs it, with the recorded payload (IPAM static)."""
    c1 = containers()
    conf = _payload("add_anycast_labels.json") | {"ipam": static_ipam("10.1.0.7/24"),
                                                  "lockFile": str(LOCK_FILE)}  # fmt: skip
    cid = "5baff64c-d028-47ba-864e-a5ee679fc069"  # a Mesos container id
    reply = runtime.add(conf, cid, c1)
    assert reply.ok, reply
    assert [ip["address"] for ip in reply.doc["ips"]] == [
        "10.1.0.7/32",
        "10.9.9.9/32",
        "fd00:9::9/128",
    ]
    veth = host_ifname(cid, "eth0")
    assert our_routes(runtime.host) == {"10.1.0.7": {veth}, "10.9.9.9": {veth}}
    assert our_routes(runtime.host, 6) == {"fd00:9::9": {veth}}
    addrs = ip_json(c1, "addr", "show", "eth0")[0]["addr_info"]
    assert {a["local"] for a in addrs if a["scope"] == "global"} == {
        "10.1.0.7",
        "10.9.9.9",
        "fd00:9::9",
    }
    assert runtime.delete(conf, cid, c1).ok
    assert our_routes(runtime.host) == {}
