"""Weighted anycast against the real thing: ExaBGP 4.2.21 and 5.0.15 send the link-bandwidth
community as the announcer renders it, and FRR 8.4 installs a weighted multipath route in
its kernel (issue 16: two paths with 1 and 3 units -> nexthop weights 25 and 75).

One host namespace with two addresses stands for two hosts: ExaBGP has a neighbor block
per local address, so the leaf (FRR) sees two peers and two paths to one anycast prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from announcer.core.plan import Announce
from announcer.exabgp.commands import render
from announcer.model import Advert, Attributes, LinkBandwidth, Prefix
from tests import netlab
from tests.exabgp.scripted import ScriptedHelper
from tests.netlab import (
    HOST_IF,
    PEER_IF,
    PEER_V4,
    ExaBGPProcess,
    FrrPeer,
    netns,
    poll,
    sh,
    veth_pair,
)

pytestmark = [pytest.mark.netns, pytest.mark.exabgp, pytest.mark.frr, pytest.mark.slow]

HOSTS = ("10.99.0.2", "10.99.0.3")
UNIT = 125_000  # 1 Mbit/s
ANYCAST = Prefix("10.200.0.1/32")
RELEASES = {
    "5.0.15": netlab.DEFAULT_EXABGP,
    "4.2.21": str(netlab.REPO / ".venv-exabgp4" / "bin" / "exabgp"),
}


def neighbor(local: str, index: int) -> str:
    return (
        f"neighbor {PEER_V4} {{\n"
        f"    router-id 10.255.0.{index};\n"
        f"    local-address {local};\n"
        f"    local-as 6510{index};\n"
        f"    peer-as {netlab.PEER_ASN};\n"
        "    hold-time 9;\n"
        "    family { ipv4 unicast; }\n"
        "    api { processes [ ctl ]; neighbor-changes; }\n"
        "}\n"
    )


@pytest.fixture(params=sorted(RELEASES))
def fabric(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[FrrPeer, ScriptedHelper]]:
    binary = RELEASES[request.param]
    if not Path(binary).exists():
        pytest.skip(f"ExaBGP {request.param} is not installed at {binary}")
    with netns("wfhost") as host, netns("wfleaf") as leaf:
        veth_pair(host, HOST_IF, leaf, PEER_IF)
        for address in HOSTS:
            sh(host, "ip", "addr", "add", f"{address}/24", "dev", HOST_IF)
        sh(leaf, "ip", "addr", "add", f"{PEER_V4}/24", "dev", PEER_IF)
        neighbors = [(HOSTS[0], 65101), (HOSTS[1], 65102)]
        frr = FrrPeer.start(leaf, tmp_path / "frr", netlab.PEER_ASN, PEER_V4, neighbors)
        helper = ScriptedHelper(tmp_path / "helper")
        python = str(Path(binary).absolute().parent / "python")
        conf = f"process ctl {{\n    run {helper.run_line(python)};\n    encoder json;\n}}\n"
        conf += neighbor(HOSTS[0], 1) + neighbor(HOSTS[1], 2)
        exabgp = ExaBGPProcess.start(host, tmp_path, conf, None, binary)
        try:
            poll(lambda: all(frr.session_established(h) for h in HOSTS), 30, "both sessions up")
            yield frr, helper
        finally:
            exabgp.stop()
            frr.stop()


def line(local: str, units: int, transitive: bool = True) -> str:
    """The announcer's rendering, plus the local-ip selector only this test needs."""
    bandwidth = LinkBandwidth(65101, units * UNIT, transitive)
    advert = Advert(attributes=Attributes(link_bandwidth=bandwidth))
    return f"neighbor {PEER_V4} local-ip {local} " + render(Announce(ANYCAST, advert))


def kernel_weights(frr: FrrPeer) -> dict[str, int] | None:
    """{gateway: weight} of the leaf's kernel route to the anycast prefix (via its nhid)."""
    routes = json.loads(sh(frr.ns, "ip", "-j", "route", "show", str(ANYCAST)).stdout or "[]")
    if not routes or "nhid" not in routes[0]:
        return None
    group = json.loads(
        sh(frr.ns, "ip", "-j", "nexthop", "show", "id", str(routes[0]["nhid"])).stdout
    )
    members = group[0].get("group") or []
    weights: dict[str, int] = {}
    for member in members:
        hop = json.loads(sh(frr.ns, "ip", "-j", "nexthop", "show", "id", str(member["id"])).stdout)
        weights[hop[0]["gateway"]] = member.get("weight", 1)
    return weights if len(weights) == 2 else None


def test_the_leaf_installs_kernel_weights_from_the_rendered_community(
    fabric: tuple[FrrPeer, ScriptedHelper],
) -> None:
    frr, helper = fabric
    assert helper.command(line(HOSTS[0], 1)) == ["done"]
    assert helper.command(line(HOSTS[1], 3)) == ["done"]
    weights = poll(lambda: kernel_weights(frr), 20, "a weighted multipath route at the leaf")
    assert weights == {HOSTS[0]: 25, HOSTS[1]: 75}
    path = frr.vtysh_json(f"show bgp ipv4 unicast {ANYCAST} json")["paths"][0]
    assert "LB:65101:" in path["extendedCommunity"]["string"]
    # a weight change is a re-announce: 1:1 now
    assert helper.command(line(HOSTS[1], 1)) == ["done"]
    poll(lambda: kernel_weights(frr) == {HOSTS[0]: 50, HOSTS[1]: 50}, 20, "weights 50/50")


def test_the_non_transitive_form_weights_the_leaf_too(
    fabric: tuple[FrrPeer, ScriptedHelper],
) -> None:
    frr, helper = fabric
    assert helper.command(line(HOSTS[0], 1, transitive=False)) == ["done"]
    assert helper.command(line(HOSTS[1], 3, transitive=False)) == ["done"]
    weights = poll(lambda: kernel_weights(frr), 20, "a weighted multipath route at the leaf")
    assert weights == {HOSTS[0]: 25, HOSTS[1]: 75}
