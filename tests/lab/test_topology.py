"""labs/spine-leaf.clab.yml parsed into the node/link model, and the parser's rules."""

from pathlib import Path

import pytest

from announcer.lab.instances import parse_instances
from announcer.lab.netns import EXABGP_CONF, FRR_CONF, INSTANCES
from announcer.lab.scenarios import expected_paths, find_service
from announcer.lab.topology import TopologyError, load_topology, parse_topology

LAB = Path(__file__).resolve().parents[2] / "labs" / "spine-leaf.clab.yml"


def test_the_lab_file_has_the_issue_topology():
    topo = load_topology(LAB)
    roles = {r: sorted(n.name for n in topo.by_role(r)) for r in ("spine", "leaf", "server", "client")}
    assert roles == {
        "spine": ["spine1", "spine2"],
        "leaf": ["leaf1", "leaf2", "leaf3"],
        "server": [f"server{i}" for i in range(1, 7)],
        "client": ["client"],
    }
    assert len(topo.links) == 2 * 3 + 6 + 1
    for server in topo.by_role("server"):
        assert next(o.node for _, o in topo.links_of(server.name)).startswith("leaf")
        for target in (FRR_CONF, EXABGP_CONF, INSTANCES):
            assert server.bind_source(target).is_file(), (server.name, target)
    for router in topo.by_role("spine") + topo.by_role("leaf"):
        assert router.image.startswith("quay.io/frrouting/frr:")
        assert "sysctl -w net.ipv4.fib_multipath_hash_policy=3" in router.exec
        assert router.bind_source(FRR_CONF).is_file()


def test_anycast_is_served_by_four_servers_behind_two_leaves():
    topo = load_topology(LAB)
    svc = find_service(topo)
    assert svc.ip == "10.200.0.1"
    assert len(svc.where) == 4
    assert len(set(svc.where.values())) == 4
    assert len({svc.leaf_of[s] for s in svc.where.values()}) >= 2
    assert expected_paths(svc, topo) == {
        "leaf1": 2, "leaf2": 2, "leaf3": 2, "spine1": 2, "spine2": 2,
    }


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


def test_instances_file():
    spec = parse_instances((LAB.parent / "server6" / "instances.yaml").read_text())
    assert spec.port == 7000
    assert [(i.name, i.ips, i.extra_ips) for i in spec.instances] == [
        ("inst4", ("10.100.6.10",), ("10.200.0.1",)),
        ("web6", ("10.100.6.20",), ()),
    ]


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
        ("name: t\ntopology: {nodes: {a: {kind: linux}}, links: [{endpoints: ['a:eth1', 'z:eth1']}]}", "no node 'z'"),
        ("name: t\ntopology: {nodes: {a: {kind: linux}, b: {kind: linux}}, links: [{endpoints: ['a:eth1', 'b:eth1']}, {endpoints: ['a:eth1', 'b:eth2']}]}", "used by two links"),
        ("name: t\ntopology: {nodes: {a: {kind: linux, binds: [nocolon]}}}", "source:target"),
        ("topology: {nodes: {}}", "name"),
    ],
)
def test_errors_name_the_offending_value(tmp_path, text, message):
    with pytest.raises(TopologyError, match=message):
        parse_topology(text, tmp_path)
