"""The CNI plugin run as a runtime runs it, against real namespaces and Debian's IPAM plugins."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from announcer.cni.scheme import host_ifname
from tests.cni.conftest import (
    Runtime,
    host_local_ipam,
    ip_json,
    links,
    netconf,
    nexthops,
    routes,
    static_ipam,
    sysctl,
)
from tests.netlab import poll, sh

pytestmark = [pytest.mark.netns, pytest.mark.cni]

NewNs = Callable[[], str]


def _host_routes(host: str, family: int = 4, table: str = "main") -> dict[str, dict[str, object]]:
    return {r["dst"]: r for r in routes(host, family, table) if r.get("protocol") == "180"}


def _pings(ns: str, dst: str) -> bool:
    return sh(ns, "ping", "-c1", "-W1", dst, check=False).returncode == 0


def test_add_wires_host_and_container_ends(runtime: Runtime, containers: NewNs) -> None:
    c1 = containers()
    conf = netconf(static_ipam("10.1.0.5/24"), mtu=1400,
                   args={"cni": {"extraIPs": ["10.9.9.9"]}})  # fmt: skip
    reply = runtime.add(conf, "cid-1", c1)
    assert reply.ok, reply
    veth = host_ifname("cid-1", "eth0")
    assert veth.startswith("vethr")
    assert len(veth) == 15

    # The result is the spec's: two interfaces, both IPs as host prefixes on eth0.
    assert reply.doc["cniVersion"] == "1.0.0"
    assert [i["name"] for i in reply.doc["interfaces"]] == [veth, "eth0"]
    assert reply.doc["interfaces"][1] == {"name": "eth0", "mac": "02:42:0a:01:00:05",
                                          "sandbox": f"/run/netns/{c1}"}  # fmt: skip
    assert [ip["address"] for ip in reply.doc["ips"]] == ["10.1.0.5/32", "10.9.9.9/32"]
    assert reply.doc["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]

    host = runtime.host
    hl = links(host)[veth]
    assert hl["mtu"] == 1400
    assert "UP" in hl["flags"]
    host_addrs = ip_json(host, "-4", "addr", "show", "dev", veth)[0]["addr_info"]
    assert [(a["local"], a["prefixlen"], a["scope"]) for a in host_addrs] == [
        ("169.254.1.1", 32, "link")
    ]
    assert sysctl(host, f"net.ipv4.conf.{veth}.proxy_arp") == "1"
    assert sysctl(host, f"net.ipv4.conf.{veth}.forwarding") == "1"
    assert sysctl(host, f"net.ipv6.conf.{veth}.forwarding") == "1"
    hr = _host_routes(host)
    assert set(hr) == {"10.1.0.5", "10.9.9.9"}
    assert (hr["10.1.0.5"]["dev"], hr["10.1.0.5"]["scope"]) == (veth, "link")
    # The extra IP is a shareable route: through a device nexthop object of ours (which
    # netlink dumps as a plain `dev` route, as before: the announcer needs no change).
    assert (hr["10.9.9.9"]["dev"], hr["10.9.9.9"]["protocol"]) == (veth, "180")
    nhs = {nh["id"]: nh for nh in nexthops(host)}
    assert (nhs[hr["10.9.9.9"]["nhid"]]["dev"], nhs[hr["10.9.9.9"]["nhid"]]["protocol"]) == (
        veth, "180")  # fmt: skip

    cl = links(c1)["eth0"]
    assert cl["address"] == "02:42:0a:01:00:05"
    assert cl["mtu"] == 1400
    caddrs = ip_json(c1, "-4", "addr", "show", "dev", "eth0")[0]["addr_info"]
    assert {(a["local"], a["prefixlen"]) for a in caddrs} == {("10.1.0.5", 32), ("10.9.9.9", 32)}
    croutes = {(r["dst"], r.get("gateway"), r.get("scope")) for r in routes(c1)}
    assert croutes == {("169.254.1.1", None, "link"), ("default", "169.254.1.1", None)}


def test_custom_table_and_protocol(runtime: Runtime, containers: NewNs) -> None:
    c1 = containers()
    conf = netconf(static_ipam("10.1.0.7/32"), table=100, routeProtocol=181,
                   hostVethPrefix="cali")  # fmt: skip
    assert runtime.add(conf, "cid-t", c1).ok
    veth = host_ifname("cid-t", "eth0", "cali")
    table = routes(runtime.host, 4, "100")
    assert [(r["dst"], r["dev"], r["protocol"]) for r in table] == [("10.1.0.7", veth, "181")]
    assert _host_routes(runtime.host) == {}
    assert runtime.delete(conf, "cid-t", c1).ok
    assert routes(runtime.host, 4, "100") == []


def test_two_containers_ping_through_host_routes(
    runtime: Runtime, containers: NewNs, tmp_path: Path
) -> None:
    c1, c2 = containers(), containers()
    conf = netconf(host_local_ipam(tmp_path / "ipam", "10.2.0.0/24", "fd00:2::/64"))
    r1 = runtime.add(conf, "cid-a", c1, args="IgnoreUnknown=1;EXTRA_IPS=10.9.9.1,fd00:9::1")
    r2 = runtime.add(conf, "cid-b", c2)
    assert r1.ok, (r1, r2)
    assert r2.ok, (r1, r2)
    ip1 = [i["address"].split("/")[0] for i in r1.doc["ips"]]
    ip2 = [i["address"].split("/")[0] for i in r2.doc["ips"]]
    assert ip1[2:] == ["10.9.9.1", "fd00:9::1"]
    assert len(ip2) == 2
    assert {"dst": "::/0", "gw": "fe80::1"} in r1.doc["routes"]

    v6_routes = ip_json(c1, "-6", "route", "show", "default")
    assert [(r["gateway"], r["dev"]) for r in v6_routes] == [("fe80::1", "eth0")]
    host_v6 = {r["dst"] for r in routes(runtime.host, 6) if r.get("protocol") == "180"}
    assert host_v6 == {ip1[1], "fd00:9::1", ip2[1]}
    for src, dst in ((c1, ip2[0]), (c2, ip1[0]), (c2, "10.9.9.1"), (c1, ip2[1]),
                     (c2, "fd00:9::1")):  # fmt: skip
        poll(lambda src=src, dst=dst: _pings(src, dst), 10, f"ping {dst} from {src}")


def test_same_ip_twice_is_refused_and_leaves_nothing(runtime: Runtime, containers: NewNs) -> None:
    c1, c2 = containers(), containers()
    first = netconf(static_ipam("10.1.0.5/24"))
    assert runtime.add(first, "cid-1", c1).ok
    veth1 = host_ifname("cid-1", "eth0")

    for conf, args in ((first, ""), (netconf(static_ipam("10.1.0.6/24")),
                                     "IgnoreUnknown=1;EXTRA_IPS=10.1.0.5")):  # fmt: skip
        reply = runtime.add(conf, "cid-2", c2, args=args)
        assert reply.rc == 1
        assert reply.doc["code"] == 100
        assert "10.1.0.5" in reply.doc["msg"]
        assert veth1 in reply.doc["msg"]
        assert host_ifname("cid-2", "eth0") not in links(runtime.host)
        assert set(links(c2)) == {"lo"}
        assert _host_routes(runtime.host) == {"10.1.0.5": _host_routes(runtime.host)["10.1.0.5"]}
        assert _host_routes(runtime.host)["10.1.0.5"]["dev"] == veth1

    # Once the first container is gone, the same ADD goes through.
    assert runtime.delete(first, "cid-1", c1).ok
    assert runtime.add(first, "cid-2", c2).ok
    assert _host_routes(runtime.host)["10.1.0.5"]["dev"] == host_ifname("cid-2", "eth0")


def test_ipam_failure_leaves_nothing(runtime: Runtime, containers: NewNs) -> None:
    c1 = containers()
    reply = runtime.add(netconf(static_ipam("not-an-ip")), "cid-1", c1)
    assert reply.rc == 1, reply
    assert "static" in reply.doc["msg"], reply
    assert [n for n in links(runtime.host) if n.startswith("vethr")] == []
    assert set(links(c1)) == {"lo"}


def test_wiring_failure_releases_ipam_and_leaves_nothing(
    runtime: Runtime, containers: NewNs, tmp_path: Path
) -> None:
    c1 = containers()
    sh(c1, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "taken")  # ifname taken
    data = tmp_path / "ipam"
    conf = netconf(host_local_ipam(data, "10.3.0.0/24"))
    reply = runtime.add(conf, "cid-1", c1)
    assert reply.rc == 1, reply
    assert reply.doc["code"] == 101, reply
    assert "eth0" in reply.doc["msg"], reply
    assert [n for n in links(runtime.host) if n.startswith("vethr")] == []
    assert _host_routes(runtime.host) == {}
    allocated = [p.name for p in (data / "routed").iterdir() if p.name.startswith("10.")]
    assert allocated == []

    sh(c1, "ip", "link", "del", "eth0")
    assert runtime.add(conf, "cid-1", c1).ok  # ADD after a failed ADD


def test_del_removes_everything_and_is_idempotent(
    runtime: Runtime, containers: NewNs, tmp_path: Path
) -> None:
    c1 = containers()
    data = tmp_path / "ipam"
    conf = netconf(host_local_ipam(data, "10.4.0.0/24", "fd00:4::/64"))
    assert runtime.add(conf, "cid-1", c1).ok
    assert len(_host_routes(runtime.host)) == 1
    for _ in range(2):
        reply = runtime.delete(conf, "cid-1", c1)
        assert reply.ok, reply
        assert reply.doc is None, reply
        assert [n for n in links(runtime.host) if n.startswith("vethr")] == []
        assert _host_routes(runtime.host) == {}
        assert _host_routes(runtime.host, 6) == {}
        assert set(links(c1)) == {"lo"}
        assert not [p for p in (data / "routed").iterdir() if p.name[0] in "1f"]


def test_del_after_the_netns_is_gone(runtime: Runtime, tmp_path: Path) -> None:
    from tests.netlab import netns

    data = tmp_path / "ipam"
    conf = netconf(host_local_ipam(data, "10.5.0.0/24"))
    with netns("cnic") as c1:
        assert runtime.add(conf, "cid-1", c1).ok
        path = f"/run/netns/{c1}"
    # The kernel removes the pair (and its routes) with the namespace.
    poll(lambda: not [n for n in links(runtime.host) if n.startswith("vethr")], 10, "veth gone")
    for netns_arg in (path, ""):
        reply = runtime.delete(conf, "cid-1", netns_arg)
        assert reply.ok, reply
    assert _host_routes(runtime.host) == {}
    assert not [p for p in (data / "routed").iterdir() if p.name.startswith("10.")]


def test_check_passes_then_fails_when_broken(runtime: Runtime, containers: NewNs) -> None:
    c1 = containers()
    conf = netconf(static_ipam("10.1.0.5/24"), args={"cni": {"extraIPs": ["10.9.9.9"]}})
    added = runtime.add(conf, "cid-1", c1)
    assert added.ok
    checked = dict(conf, prevResult=added.doc)
    reply = runtime.call("CHECK", checked, "cid-1", c1)
    assert reply.ok, reply
    assert reply.doc is None, reply

    sh(runtime.host, "ip", "route", "del", "10.1.0.5/32")
    reply = runtime.call("CHECK", checked, "cid-1", c1)
    assert reply.rc == 1, reply
    assert "host route 10.1.0.5/32 dev vethr" in reply.doc["msg"], reply

    sh(runtime.host, "ip", "route", "add", "10.1.0.5/32", "dev", host_ifname("cid-1", "eth0"),
       "proto", "180", "scope", "link")  # fmt: skip
    assert runtime.call("CHECK", checked, "cid-1", c1).ok
    sh(runtime.host, "ip", "route", "del", "10.9.9.9/32")
    reply = runtime.call("CHECK", checked, "cid-1", c1)
    assert reply.rc == 1, reply
    assert "shared host route 10.9.9.9/32 proto 180 table 254 is missing" in reply.doc["msg"]
    assert runtime.delete(conf, "cid-1", c1).ok
    assert runtime.add(conf, "cid-1", c1).ok
    assert runtime.call("CHECK", checked, "cid-1", c1).ok
    sh(c1, "ip", "route", "del", "default")
    reply = runtime.call("CHECK", checked, "cid-1", c1)
    assert reply.rc == 1, reply
    assert "default route" in reply.doc["msg"], reply


def test_version(runtime: Runtime) -> None:
    reply = runtime.call("VERSION", {"cniVersion": "1.0.0"})
    assert reply.ok
    assert reply.doc == {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}


def test_bad_config_is_a_spec_error(runtime: Runtime, containers: NewNs) -> None:
    c1 = containers()
    reply = runtime.add(netconf(static_ipam("10.1.0.5/24"), mtu="big"), "cid-1", c1)
    assert reply.rc == 1
    assert reply.doc["code"] == 7
    assert "mtu" in reply.doc["msg"]
    assert "big" in reply.doc["msg"]
    reply = runtime.add(netconf(static_ipam("10.1.0.5/24"), colour="blue"), "cid-1", c1)
    assert reply.doc["code"] == 2
    assert "colour" in reply.doc["msg"]
    assert set(links(c1)) == {"lo"}


def test_status_and_gc(runtime: Runtime, containers: NewNs, tmp_path: Path) -> None:
    """GC/STATUS are CNI 1.1; Debian's IPAM plugins stop at 1.0, so a stand-in IPAM answers."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "fake-ipam"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$CNI_COMMAND" = ADD ]; then\n'
        '  echo "{\\"cniVersion\\":\\"1.1.0\\",'
        '\\"ips\\":[{\\"address\\":\\"${CNI_ARGS#IP=}/24\\"}]}"\n'
        "fi\n"
    )
    fake.chmod(0o755)
    rt = Runtime(runtime.host, cni_path=str(bindir))
    conf = dict(netconf({"type": "fake-ipam"}), cniVersion="1.1.0")
    c1, c2 = containers(), containers()
    assert rt.call("STATUS", conf).ok
    assert rt.add(conf, "keep", c1, args="IP=10.6.0.1").ok
    assert rt.add(conf, "drop", c2, args="IP=10.6.0.2").ok
    reply = rt.add(conf, "bad", c2, args="IP=nonsense")
    assert reply.doc["code"] == 102, reply
    assert "nonsense" in reply.doc["msg"], reply

    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    assert rt.call("GC", gc).ok
    names = {n for n in links(runtime.host) if n.startswith("vethr")}
    assert names == {host_ifname("keep", "eth0")}
    assert set(_host_routes(runtime.host)) == {"10.6.0.1"}
    assert rt.call("STATUS", dict(conf, ipam={"type": "missing"})).doc["code"] == 50
    assert runtime.call("STATUS", dict(conf, cniVersion="1.0.0")).doc["code"] == 1
