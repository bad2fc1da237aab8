"""GC's reclaiming for runtimes that never call DEL (``ctr run -d --cni``): what is left.

When a container's netns goes without a DEL, its veth and routes go with it (the kernel),
but two things stay: the IPAM plugin's lease, and the runtime's libcni cache entry. GC is
told which attachments are still valid; for the others this module finds

- host-local's leases of this network (``<dataDir>/<network>/<ip>``, a file holding the
  container id and ifname): the plugin has host-local release them itself (a DEL with
  that id and ifname), when host-local cannot be sent GC (it supports no CNI 1.1.0, as
  Debian's 1.1.1);
- libcni's cached results of this network (``<libcniCacheDir>/results/<net>-<id>-<if>``,
  JSON ``kind: cniCacheV1``), only if the config names that directory (it is the
  runtime's, at a place the runtime chooses).

Nothing else: other IPAM plugins' state has no format we know; a lease or cache file not
in the shapes above is left alone and logged.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

log = logging.getLogger("announcer.cni")

HOST_LOCAL_DATA_DIR = "/var/lib/cni/networks"  # host-local's default dataDir


def host_local_dir(ipam: Mapping[str, Any], network: str) -> Path:
    return Path(str(ipam.get("dataDir") or HOST_LOCAL_DATA_DIR)) / network


def parse_lease(text: str) -> tuple[str, str | None] | None:
    """(container id, ifname) of a host-local lease file; ifname None in the old format
    (the id alone); None if it is neither."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or len(lines) > 2:
        return None
    return lines[0], lines[1] if len(lines) == 2 else None


def stale_leases(lease_dir: Path, valid: Set[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(ip, container id, ifname) of every lease whose attachment is not valid."""
    ids = {cid for cid, _ in valid}
    stale = []
    for path in sorted(lease_dir.iterdir()) if lease_dir.is_dir() else []:
        try:
            ipaddress.ip_address(path.name)
        except ValueError:
            continue  # lock, last_reserved_ip.N
        owner = parse_lease(path.read_text(errors="replace"))
        if owner is None:
            log.warning("lease_unreadable path=%s", path)
            continue
        cid, ifname = owner
        if (ifname is None and cid not in ids) or (
            ifname is not None and (cid, ifname) not in valid
        ):
            stale.append((path.name, cid, ifname or "eth0"))
    return stale


def parse_cached_result(text: str) -> tuple[str, str, str] | None:
    """(network, container id, ifname) of a libcni cache file, None if it is not one."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("kind") != "cniCacheV1":
        return None
    fields = (doc.get("networkName"), doc.get("containerId"), doc.get("ifName"))
    if not all(isinstance(f, str) for f in fields):
        return None
    return str(fields[0]), str(fields[1]), str(fields[2])


def remove_cached_results(cache_dir: Path, network: str, valid: Set[tuple[str, str]]) -> list[str]:
    """Delete this network's cached results of attachments not in valid; their names."""
    removed = []
    results = cache_dir / "results"
    for path in sorted(results.iterdir()) if results.is_dir() else []:
        if not path.name.startswith(f"{network}-"):
            continue
        found = parse_cached_result(path.read_text(errors="replace"))
        if found is None:
            log.warning("cache_entry_unreadable path=%s", path)
            continue
        net, cid, ifname = found
        if net == network and (cid, ifname) not in valid:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
