"""The lab's files for weighted ECMP and the host stack as shipped (issue 16 item 5): the
FRR fabric's lines, the servers' hashing and config, the scenarios' extra instances, and
ExaBGP started through `announcer exabgp` with the shipped exabgp.env."""

import re
from pathlib import Path

import pytest
import yaml

from announcer.config import parse_config
from announcer.exabgp.start import parse_env
from announcer.lab.deprefer import alone_first
from announcer.lab.hoststack import runs_exabgp
from announcer.lab.instances import InstancesError, parse_instances, render_drop_in
from announcer.lab.netns import ANNOUNCER_CONF, EXABGP_CONF, EXABGP_ENV, LAB_EXABGP_ENV, ROUTED_LOCK
from announcer.lab.scenarios import find_services
from announcer.lab.topology import load_topology

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "labs" / "spine-leaf.clab.yml"


@pytest.mark.parametrize("leaf", ["leaf1", "leaf2", "leaf3"])
def test_leaves_pass_the_cumulative_bandwidth_to_the_spines(leaf):
    """docs/weighted.md: the set line in the route-map every spine session sends through."""
    conf = (LAB.parent / leaf / "frr.conf").read_text()
    for peers, route_map in (("SPINES", "FABRIC-OUT"), ("SPINES6", "FABRIC6-OUT")):
        assert f"  neighbor {peers} route-map {route_map} out\n" in conf
        block = re.search(rf"^route-map {route_map} permit 10\n(.*?)^exit", conf, re.M | re.S)
        assert block is not None
        assert " set extcommunity bandwidth cumulative\n" in block[1]
    assert "bgp bestpath bandwidth" not in conf  # FRR 8.4's default: weighted multipath


def test_spines_relax_the_as_path_and_set_nothing():
    for spine in ("spine1", "spine2"):
        conf = (LAB.parent / spine / "frr.conf").read_text()
        assert "bgp bestpath as-path multipath-relax" in conf
        assert "extcommunity bandwidth" not in conf


def test_every_router_and_server_hashes_the_5_tuple_with_its_own_seed():
    topo = load_topology(LAB)
    seeds = {}
    for node in [*topo.by_role("spine"), *topo.by_role("leaf"), *topo.by_role("server")]:
        for family in ("ipv4", "ipv6"):
            assert f"sysctl -w net.{family}.fib_multipath_hash_policy=3" in node.exec, node.name
            assert f"sysctl -w net.{family}.fib_multipath_hash_fields=0x0037" in node.exec
        seed = [e for e in node.exec if "fib_multipath_hash_seed=" in e]
        assert len(seed) == 1, node.name
        seeds[node.name] = seed[0].rsplit("=", 1)[1]
    assert len(set(seeds.values())) == len(seeds), seeds


@pytest.mark.parametrize("number", range(1, 7))
def test_servers_have_weights_off_their_as_and_a_routed_lock(number):
    server = load_topology(LAB).nodes[f"server{number}"]
    doc = yaml.safe_load(server.bind_source(ANNOUNCER_CONF).read_text())
    config = parse_config(doc)
    assert config.weights.enabled is False  # the weighted and deprefer scenarios turn it on
    local_as = re.search(r"local-as (\d+);", server.bind_source(EXABGP_CONF).read_text())
    assert local_as is not None
    assert config.exabgp.local_as == int(local_as[1])
    assert config.routed.lock_file == ROUTED_LOCK


@pytest.mark.parametrize("number", range(1, 7))
def test_servers_run_exabgp_with_the_shipped_settings(number):
    server = load_topology(LAB).nodes[f"server{number}"]
    assert server.bind_source(EXABGP_ENV).resolve() == REPO / "exabgp" / "exabgp.env"
    additions = parse_env(server.bind_source(LAB_EXABGP_ENV).read_text())
    assert additions == {"exabgp.daemon.user": "root"}


def test_containerlab_servers_start_exabgp_as_the_product_does():
    start = (LAB.parent / "shared" / "lab-exabgp.sh").read_text()
    assert "announcer exabgp --env /etc/anycast-announcer/exabgp.env" in start
    assert '\n  exabgp "$conf"' not in start  # not the plain console script
    restart = (LAB.parent / "shared" / "lab-restart-exabgp.sh").read_text()
    assert "announcer/exabgp/launcher[.]py" in restart


def test_the_weighted_service_adds_instances_so_hosts_differ():
    topo = load_topology(LAB)
    base = find_services(topo)["ipv4"]
    assert sorted(base.where) == ["inst1", "inst2", "inst3", "inst4"]
    every = find_services(topo, {"10.200.0.1", "fd00:200::1"}, every=True)
    for svc in every.values():
        counts = {s: sum(1 for v in svc.where.values() if v == s) for s in set(svc.where.values())}
        assert counts == {"server3": 1, "server4": 2, "server5": 3, "server6": 1}
    assert every["ipv6"].ip == "fd00:200::1"


def test_the_deprefer_service_puts_a_host_alone_behind_its_leaf_first():
    services = find_services(load_topology(LAB), {"10.200.0.2", "fd00:200::2"}, every=True)
    svc = services["ipv4"]
    assert svc.where == {"dep3": "server3", "dep5": "server5", "dep6": "server6"}
    assert alone_first(svc) == ["server3", "server5", "server6"]
    assert services["ipv6"].where == svc.where


def test_instances_parse_and_render_the_scenario_keys():
    spec = parse_instances(
        "port: 7000\ncheck: 'tcp:7000'\ninstances:\n"
        "  - {name: a, ips: [10.0.0.1], extra_ips: [10.9.9.9]}\n"
        "  - {name: b, ips: [10.0.0.2], extra_ips: [10.9.9.9], autostart: false,\n"
        "     health_port: 7001, check: 'tcp:7001', drop_in: {unhealthy: deprefer, weight: 2}}\n"
    )
    assert [i.name for i in spec.autostarted] == ["a"]
    assert render_drop_in(spec, spec.get("a")).splitlines()[1:] == [
        "ips: [10.0.0.1, 10.9.9.9]",
        "check: 'tcp:7000'",
    ]
    assert render_drop_in(spec, spec.get("b")).splitlines()[1:] == [
        "ips: [10.0.0.2, 10.9.9.9]",
        "check: 'tcp:7001'",
        "unhealthy: 'deprefer'",
        "weight: '2'",
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: a, ips: [10.0.0.1], autostrat: false}", "instance a: unknown keys ['autostrat']"),
        ("{name: a, ips: [10.0.0.1], autostart: 'no'}", "instance a: autostart 'no' is not"),
        ("{name: a, ips: [10.0.0.1], drop_in: {ips: [1.2.3.4]}}", "instance a: drop_in must"),
        ("{ips: [10.0.0.1]}", "every entry needs a name"),
    ],
)
def test_instances_refuse_what_they_cannot_use(entry, message):
    with pytest.raises(InstancesError, match=re.escape(message)):
        parse_instances(f"instances:\n  - {entry}\n")


@pytest.mark.parametrize(
    ("argv", "exabgp"),
    [
        (["/v/bin/python", "-I", "/src/announcer/exabgp/launcher.py", "/etc/x.conf"], True),
        (["/v/bin/python", "/v/bin/announcer", "exabgp", "--env", "e", "c"], True),
        (["/v/bin/python", "/v/bin/announcer", "run", "-c", "a.yaml"], False),
        (["/v/bin/python", "-m", "announcer.daemon.watchdog", "1"], False),
        (["/v/bin/python", "/v/bin/exabgp", "/etc/x.conf"], False),  # not how it is started
        ([], False),
    ],
)
def test_the_unit_is_found_by_its_launcher(argv, exabgp):
    assert runs_exabgp(argv) is exabgp
