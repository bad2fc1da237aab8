"""The plugin's shared anycast IPs as the announcer sees them (issue 16): `announcer run`
next to the plugin in one host namespace announces an extra IP shared by several local
containers (a route over a nexthop group), keeps it while any holder remains, withdraws it
with the last one; `plan` says the same. IPv4 and IPv6."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cni.conftest import Runtime, netconf, static_ipam
from tests.integration.fake_exabgp import ANNOUNCER, FakeExaBGP, final_state
from tests.netlab import poll, sh

pytestmark = [pytest.mark.netns, pytest.mark.cni]

ANY4, ANY6 = "10.9.9.1", "fd00:9::1"
CONFIG = """\
kernel:
  tables: [main]
  interfaces: ["vethr*"]
  protocols: [180]
  resync_interval_seconds: 3600
policy:
  allow: ["10.0.0.0/8", "fd00::/8"]
exabgp:
  watchdog_seconds: 0
"""


def conf(primary: str, primary6: str) -> dict[str, Any]:
    return netconf(static_ipam(primary, primary6), args={"cni": {"extraIPs": [ANY4, ANY6]}})


def plan(host: str, config: Path) -> dict[str, dict[str, Any]]:
    rows = json.loads(sh(host, ANNOUNCER, "plan", "-c", str(config), "--json").stdout)["decisions"]
    return {row["prefix"]: row for row in rows}


def test_a_shared_extra_ip_is_announced_while_any_local_holder_remains(
    runtime: Runtime, containers: Callable[[], str], tmp_path: Path
) -> None:
    host = runtime.host
    config = tmp_path / "announcer.yaml"
    config.write_text(CONFIG)
    exa = FakeExaBGP(host, config)
    try:
        cs = {f"h{i}": containers() for i in range(3)}
        for i, (cid, ns) in enumerate(cs.items()):
            assert runtime.add(conf(f"10.1.0.{i + 1}/24", f"fd00:1::{i + 1}/64"), cid, ns).ok
        anycast = {f"{ANY4}/32", f"{ANY6}/128"}
        poll(lambda: anycast <= final_state(exa.seen), 15, "the shared IPs announced")
        rows = plan(host, config)
        for prefix in (f"{ANY4}/32", f"{ANY6}/128"):
            assert (rows[prefix]["announce"], rows[prefix]["reason"]) == (True, "host_route")
            assert rows[prefix]["sources"][0].count("+") == 2  # route:main:vethrA+vethrB+vethrC
        # DELs of all but one holder: the route stays, nothing is withdrawn
        for i, cid in enumerate(("h0", "h1")):
            assert runtime.delete(
                conf(f"10.1.0.{i + 1}/24", f"fd00:1::{i + 1}/64"), cid, cs[cid]
            ).ok
        gone = {"10.1.0.1/32", "10.1.0.2/32"}
        poll(lambda: not gone & final_state(exa.seen), 15, "the two primaries withdrawn")
        assert anycast <= final_state(exa.seen)
        assert not any(ANY4 in line and "withdraw" in line for line in exa.seen)
        assert plan(host, config)[f"{ANY4}/32"]["reason"] == "host_route"
        assert runtime.delete(conf("10.1.0.3/24", "fd00:1::3/64"), "h2", cs["h2"]).ok
        poll(lambda: not anycast & final_state(exa.seen), 15, "the shared IPs withdrawn")
    finally:
        while not exa.commands.empty():  # consumed through exa.seen, not one by one
            exa.commands.get_nowait()
        exa.close()
    assert "multipath_route" not in exa.stderr()
