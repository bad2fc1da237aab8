"""The Python API the lab calls (add_container/del_container), run inside a host namespace."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.cni.conftest import LOCK_FILE, links, routes
from tests.netlab import netns, python, sh

pytestmark = [pytest.mark.netns, pytest.mark.cni]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from announcer.cni.wiring import AddressInUse, WiringConfig, add_container, del_container
    c1, c2, lock = sys.argv[1:4]
    cfg = WiringConfig(lock_file=lock)
    w = add_container(c1, ["fd00:1::5"], ["10.9.9.9"], config=cfg)
    out = {"host": w.host_ifname, "mac": w.mac}
    try:
        add_container(c2, ["10.9.9.9"], config=cfg)
    except AddressInUse as e:
        out["refused"] = str(e)
    out["removed"] = [del_container(c1, config=cfg), del_container(c1, config=cfg)]
    w = add_container(c1, ["fd00:1::5"], config=cfg)  # v6 only
    out["mac_v6"] = w.mac
    print(json.dumps(out))
    """
)


def test_python_api(cni_ready: None) -> None:
    with netns("cnih") as host, netns("cnic") as c1, netns("cnic") as c2:
        out = json.loads(sh(host, python(), "-c", SCRIPT, c1, c2, str(LOCK_FILE)).stdout)
        assert out["removed"] == [True, False]
        assert "10.9.9.9" in out["refused"]
        assert out["host"] in out["refused"]
        assert out["mac"] == "02:42:0a:09:09:09"
        assert out["mac_v6"] == "02:42:00:00:00:05"
        assert links(c1)["eth0"]["address"] == "02:42:00:00:00:05"
        assert set(links(c2)) == {"lo"}
        host_routes = [
            (r["dst"], r["protocol"]) for r in routes(host, 6) if r["dst"] != "fe80::/64"
        ]
        assert host_routes == [("fd00:1::5", "180")]
