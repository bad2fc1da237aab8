"""GC's reclaiming, pure part: host-local lease files and libcni cache entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from announcer.cni import reclaim
from announcer.cni.netconf import CNIError, parse_netconf


@pytest.mark.parametrize(
    ("text", "owner"),
    [
        ("aa-web\r\neth0", ("aa-web", "eth0")),  # host-local >= 0.8 (recorded from 1.1.1)
        ("aa-web", ("aa-web", None)),  # the old format: the container id alone
        ("", None),
        ("a\nb\nc", None),
    ],
)
def test_parse_lease(text: str, owner: tuple[str, str | None] | None) -> None:
    assert reclaim.parse_lease(text) == owner


def test_stale_leases(tmp_path: Path) -> None:
    files = {"10.1.0.2": "keep\r\neth0", "10.1.0.3": "gone\r\neth0", "fd00:1::2": "keep\r\neth1",
             "10.1.0.4": "old", "10.1.0.5": "keep", "lock": "", "last_reserved_ip.0": "10.1.0.5",
             "10.1.0.6": "x\ny\nz"}  # fmt: skip
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    valid = {("keep", "eth0")}
    assert reclaim.stale_leases(tmp_path, valid) == [
        ("10.1.0.3", "gone", "eth0"), ("10.1.0.4", "old", "eth0"), ("fd00:1::2", "keep", "eth1"),
    ]  # fmt: skip
    assert reclaim.stale_leases(tmp_path / "missing", valid) == []


def test_remove_cached_results(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()

    def entry(net: str, cid: str, ifname: str = "eth0") -> dict[str, str]:
        return {"kind": "cniCacheV1", "networkName": net, "containerId": cid, "ifName": ifname}

    docs = {"routed-aa-keep-eth0": entry("routed", "aa-keep"),
            "routed-aa-gone-eth0": entry("routed", "aa-gone"),
            "other-aa-gone-eth0": entry("other", "aa-gone"),
            "routed-weird": {"kind": "something else"}}  # fmt: skip
    for name, doc in docs.items():
        (results / name).write_text(json.dumps(doc))
    removed = reclaim.remove_cached_results(tmp_path, "routed", {("aa-keep", "eth0")})
    assert removed == ["routed-aa-gone-eth0"]
    assert sorted(p.name for p in results.iterdir()) == [
        "other-aa-gone-eth0", "routed-aa-keep-eth0", "routed-weird"]  # fmt: skip


def test_host_local_dir_and_config_key() -> None:
    assert reclaim.host_local_dir({}, "routed") == Path("/var/lib/cni/networks/routed")
    assert reclaim.host_local_dir({"dataDir": "/x"}, "n") == Path("/x/n")
    raw = {"cniVersion": "1.1.0", "name": "routed", "type": "announcer-routed",
           "ipam": {"type": "host-local", "dataDir": "/x"}}  # fmt: skip
    conf = parse_netconf(json.dumps(raw | {"libcniCacheDir": "/var/lib/cni"}).encode(), "GC")
    assert (conf.libcni_cache_dir, conf.ipam["dataDir"]) == ("/var/lib/cni", "/x")
    with pytest.raises(CNIError, match="libcniCacheDir"):
        parse_netconf(json.dumps(raw | {"libcniCacheDir": "var/lib/cni"}).encode(), "GC")
