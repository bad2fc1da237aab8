"""labs/spine-leaf.clab.yml parsed into the node/link model, and the parser's rules."""

import ipaddress
import re
from pathlib import Path

import pytest
import yaml

from announcer.config import parse_config
from announcer.daemon.bfd import render_bfdd
from announcer.lab.instances import parse_instances
from announcer.lab.netns import ANNOUNCER_CONF, EXABGP_CONF, FRR_CONF, INSTANCES
from announcer.lab.scenarios import expected_paths, find_service, find_services
from announcer.lab.topology import TopologyError, load_topology, parse_topology

LAB = Path(__file__).resolve().parents[2] / "labs" / "spine-leaf.clab.yml"


def test_the_lab_file_has_the_issue_topology():
    topo = load_topology(LAB)
    roles = {
        r: sorted(n.name for n in topo.by_role(r)) for r in ("spine", "leaf", "server", "client")
    }
    assert roles == {
        "spine": ["spine1", "spine2"],
        "leaf": ["leaf1", "leaf2", "leaf3"],
        "server": [f"server{i}" for i in range(1, 7)],
        "client": ["client"],
    }
    assert len(topo.links) == 2 * 3 + 6 + 1
    for server in topo.by_role("server"):
        assert next(o.node for _, o in topo.links_of(server.name)).startswith("leaf")
        for target in (ANNOUNCER_CONF, EXABGP_CONF, INSTANCES):
            assert server.bind_source(target).is_file(), (server.name, target)
        # BFD from the announcer's config (a standalone bfdd), no FRR config of their own
        assert server.bind_source(FRR_CONF) is None, server.name
    for router in topo.by_role("spine") + topo.by_role("leaf"):
        assert router.image.startswith("quay.io/frrouting/frr:")
        for family in ("ipv4", "ipv6"):
            assert f"sysctl -w net.{family}.fib_multipath_hash_policy=3" in router.exec
            assert f"sysctl -w net.{family}.fib_multipath_hash_fields=0x0037" in router.exec
        # one seed sysctl, for both families (there is no net.ipv6 one)
        assert any(
            e.startswith("sysctl -w -e net.ipv4.fib_multipath_hash_seed=") for e in router.exec
        )
        assert "sysctl -w net.ipv6.conf.all.forwarding=1" in router.exec
        assert router.bind_source(FRR_CONF).is_file()


def test_anycast_is_served_by_four_servers_behind_two_leaves():
    topo = load_topology(LAB)
    svc = find_service(topo)
    assert svc.ip == "10.200.0.1"
    assert len(svc.where) == 4
    assert len(set(svc.where.values())) == 4
    assert len({svc.leaf_of[s] for s in svc.where.values()}) >= 2
    assert expected_paths(svc, topo) == {
        "leaf1": 2,
        "leaf2": 2,
        "leaf3": 2,
        "spine1": 2,
        "spine2": 2,
    }


def test_anycast_is_dual_stack_on_the_same_instances():
    topo = load_topology(LAB)
    services = find_services(topo)
    assert list(services) == ["ipv4", "ipv6"]
    v4, v6 = services["ipv4"], services["ipv6"]
    assert (v4.prefix, v6.prefix) == ("10.200.0.1/32", "fd00:200::1/128")
    assert v6.where == v4.where
    assert v6.leaf_of == v4.leaf_of
    assert expected_paths(v6, topo) == expected_paths(v4, topo)


def _v6_addresses(topo) -> dict[tuple[str, str], ipaddress.IPv6Interface]:
    """(node, interface) -> its IPv6 address: routers' frr.conf, hosts' exec lines."""
    found = {}
    for node in topo.nodes.values():
        conf = node.bind_source(FRR_CONF)
        text = conf.read_text() if conf and node.role in ("spine", "leaf") else ""
        for ifname, addr in re.findall(r"^interface (\S+)\n(?:(?! ipv6 address).*\n)*? ipv6 "
                                       r"address (\S+)", text, re.M):  # fmt: skip
            found[(node.name, ifname)] = ipaddress.IPv6Interface(addr)
        for line in node.exec:
            if m := re.match(r"ip -6 addr add (\S+) dev (\S+) nodad$", line):
                found[(node.name, m[2])] = ipaddress.IPv6Interface(m[1])
    return found


def test_every_link_has_an_ipv6_network_and_every_v6_peer_is_at_the_other_end():
    topo = load_topology(LAB)
    addresses = _v6_addresses(topo)
    for link in topo.links:
        a = addresses[(link.a.node, link.a.interface)]
        b = addresses[(link.b.node, link.b.interface)]
        assert a.network == b.network, (link, a, b)
        assert a.ip != b.ip
    local = {str(i.ip) for i in addresses.values()}
    for router in topo.by_role("spine") + topo.by_role("leaf"):
        conf = router.bind_source(FRR_CONF).read_text()
        peers = re.findall(r"^ neighbor (fd00:\S+) peer-group", conf, re.M)
        assert peers, router.name
        assert set(peers) <= local, (router.name, set(peers) - local)


def test_router_configs_have_the_ipv6_half():
    for name in ("spine1", "spine2", "leaf1", "leaf2", "leaf3"):
        conf = (LAB.parent / name / "frr.conf").read_text()
        assert "address-family ipv6 unicast" in conf
        assert conf.count("maximum-paths 16") == 2
        assert "ipv6 prefix-list FABRIC6 seq 10 permit fd00::/16 le 128" in conf
        assert "\nipv6 forwarding\n" in conf
        # the startup race of FRR 8.4 (docs/lab.md): every v6 fabric peer names its interface
        fabric = re.findall(r"^ neighbor (fd00:0:\S+) peer-group", conf, re.M)
        sources = re.findall(r"^ neighbor (fd00:0:\S+) update-source eth\d$", conf, re.M)
        assert sorted(fabric) == sorted(sources), name
    leaf = (LAB.parent / "leaf2" / "frr.conf").read_text()
    assert "ipv6 prefix-list HOST-ROUTES6 seq 20 permit fd00:200::/64 ge 128" in leaf
    assert "neighbor SERVERS6 route-map HOSTS6-IN in" in leaf
    assert "neighbor SERVERS6 bfd profile servers" in leaf
    assert "neighbor SERVERS6 maximum-prefix 64" in leaf


@pytest.mark.parametrize("number", range(1, 7))
def test_servers_have_a_session_per_family(number):
    topo = load_topology(LAB)
    server = topo.nodes[f"server{number}"]
    exabgp = server.bind_source(EXABGP_CONF).read_text()
    leaf_v4, leaf_v6 = f"10.1.{number}.0", f"fd00:1:{number}::1"
    for neighbor, family in ((leaf_v4, "ipv4"), (leaf_v6, "ipv6")):
        block = exabgp[exabgp.index(f"neighbor {neighbor} {{") :]
        block = block[: block.index("\n}")]
        assert f"{family} unicast;" in block
        assert "processes [ announcer ];" in block
        # graceful restart with manual End-of-RIB, as exabgp/exabgp5.conf ships them
        assert "manual-eor true;" in block
        assert re.search(r"capability \{\s*graceful-restart 20;", block)
    announcer = yaml.safe_load(server.bind_source(ANNOUNCER_CONF).read_text())
    assert announcer["exabgp"]["neighbors"] == [leaf_v4, leaf_v6]
    assert announcer["exabgp"]["manual_eor"] is True
    assert {"fd00:100::/32", "fd00:200::/64"} <= set(announcer["policy"]["allow"])
    # the host's bfdd config is generated from bfd: (render_bfdd, as `announcer bfd-config`)
    bfd = render_bfdd(parse_config(announcer))
    assert f" peer {leaf_v4} local-address 10.1.{number}.1\n" in bfd
    assert f" peer {leaf_v6} local-address fd00:1:{number}::2\n" in bfd
    assert "  receive-interval 100\n" in bfd
    assert "interface" not in bfd  # a bfdd without zebra cannot enable such a peer


def test_router_configs_have_the_fabric_settings():
    for name in ("spine1", "spine2", "leaf1", "leaf2", "leaf3"):
        conf = (LAB.parent / name / "frr.conf").read_text()
        assert "maximum-paths 16" in conf
        assert "bgp bestpath as-path multipath-relax" in conf
        assert "timers bgp 3 9" in conf
    leaf = (LAB.parent / "leaf2" / "frr.conf").read_text()
    assert "ip prefix-list HOST-ROUTES seq 10 permit 10.100.0.0/16 ge 32" in leaf
    assert "neighbor SERVERS maximum-prefix 64" in leaf
    assert "neighbor SERVERS route-map HOSTS-IN in" in leaf
    assert "neighbor SERVERS bfd profile servers" in leaf


@pytest.mark.parametrize("name", ["leaf1", "leaf2", "leaf3"])
def test_leaves_have_the_graceful_restart_advice(name):
    """docs: keep BFD, cap stale paths, never check-control-plane-failure (the hosts' bfdd
    sends C-bit 0)."""
    conf = (LAB.parent / name / "frr.conf").read_text()
    assert "\n bgp graceful-restart stalepath-time 60\n" in conf
    assert "neighbor SERVERS bfd profile servers" in conf
    assert "neighbor SERVERS6 bfd profile servers" in conf
    assert not re.search(r"^ *neighbor \S+ bfd check-control-plane-failure", conf, re.M)
    assert "graceful-restart-disable" not in conf


def test_instances_file():
    spec = parse_instances((LAB.parent / "server6" / "instances.yaml").read_text())
    assert spec.port == 7000
    assert [(i.name, i.ips, i.extra_ips) for i in spec.autostarted] == [
        ("inst4", ("10.100.6.10", "fd00:100:6::10"), ("10.200.0.1", "fd00:200::1")),
        ("web6", ("10.100.6.20", "fd00:100:6::20"), ()),
    ]
    # the deprefer scenario's instance: started by it, its own check on a health port
    dep = spec.get("dep6")
    assert (dep.autostart, dep.extra_ips) == (False, ("10.200.0.2", "fd00:200::2"))
    assert dep.check == "tcp:7001 interval=0.2 timeout=0.2 rise=2 fall=2"
    assert (dep.health_port, dep.drop_in) == (7001, (("unhealthy", "deprefer"),))


def test_precedence_node_over_group_over_kind_over_defaults(tmp_path):
    text = """
name: t
topology:
  defaults: {kind: linux, image: d, labels: {role: x}}
  kinds: {linux: {image: k, exec: [from-kind]}}
  groups: {g: {image: g}}
  nodes:
    a: {group: g, binds: ["a/f:/etc/f"]}
    b: {image: own, exec: [mine]}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
"""
    topo = parse_topology(text, tmp_path)
    assert (topo.nodes["a"].image, topo.nodes["a"].exec) == ("g", ("from-kind",))
    assert (topo.nodes["b"].image, topo.nodes["b"].exec) == ("own", ("mine",))
    assert topo.nodes["a"].bind_source("/etc/f") == tmp_path / "a" / "f"
    assert topo.nodes["b"].role == "x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: t\ntopology: {nodes: {a: {}}}", "no kind"),
        ("name: t\ntopology: {nodes: {a: {kind: linux, group: nope}}}", "no such group"),
        (
            "name: t\ntopology: {nodes: {a: {kind: linux}}, links: [{endpoints: ['a:eth1', 'z:eth1']}]}",
            "no node 'z'",
        ),
        (
            "name: t\ntopology: {nodes: {a: {kind: linux}, b: {kind: linux}}, links: [{endpoints: ['a:eth1', 'b:eth1']}, {endpoints: ['a:eth1', 'b:eth2']}]}",
            "used by two links",
        ),
        ("name: t\ntopology: {nodes: {a: {kind: linux, binds: [nocolon]}}}", "source:target"),
        ("topology: {nodes: {}}", "name"),
    ],
)
def test_errors_name_the_offending_value(tmp_path, text, message):
    with pytest.raises(TopologyError, match=message):
        parse_topology(text, tmp_path)


def test_routers_replace_ipv6_routes_atomically():
    """FRR 8.4's zebra deletes and re-adds an IPv6 route at each change without this."""
    from announcer.lab.frr import daemon_options

    for name in ("spine1", "spine2", "leaf1", "leaf2", "leaf3"):
        options = daemon_options((LAB.parent / name / "daemons").read_text())
        assert "--v6-rr-semantics" in options["zebra"], name
