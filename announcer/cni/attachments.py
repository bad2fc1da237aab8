"""Who owns each host veth: the alias we write on it, listing by alias, GC, deletion.

Every host veth the routed wiring makes carries a JSON alias naming its owner (network,
attachment id, ifname). That alias is the only state the CNI plugin keeps, and what the
Docker driver reads back after a restart to adopt its endpoints and find orphans.
"""

from __future__ import annotations

import errno
import json

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from announcer.cni import shared_routes
from announcer.cni.scheme import DEFAULT_PREFIX, WiringConfig

ALIAS_TAG = "announcer-routed"


def render_alias(network: str, attachment_id: str, ifname: str) -> str:
    """The host veth's alias: who it belongs to, for humans, GC and driver restarts."""
    return json.dumps({"by": ALIAS_TAG, "net": network, "id": attachment_id, "if": ifname},
                      separators=(",", ":"))  # fmt: skip


def parse_alias(alias: str | None) -> tuple[str, str, str] | None:
    """(network, attachment id, ifname) from a host veth alias we wrote, else None."""
    try:
        doc = json.loads(alias or "")
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("by") != ALIAS_TAG:
        return None
    fields = (doc.get("net"), doc.get("id"), doc.get("if"))
    if not all(isinstance(f, str) for f in fields):
        return None
    return (str(fields[0]), str(fields[1]), str(fields[2]))


def delete_link(ipr: IPRoute, ifname: str) -> bool:
    """Delete ifname if it exists (a veth takes its peer and its routes along); True if it did."""
    found: list[int] = ipr.link_lookup(ifname=ifname)
    if not found:
        return False
    try:
        ipr.link("del", index=found[0])
    except NetlinkError as e:
        if e.code != errno.ENODEV:
            raise
        return False
    return True


def delete_attachment(ipr: IPRoute, host: str, config: WiringConfig) -> bool:
    """Take host out of every shared route, then delete it; True if it existed."""
    found: list[int] = ipr.link_lookup(ifname=host)
    if not found:
        return False
    shared_routes.leave(found[0], host, config)
    return delete_link(ipr, host)


def list_attachments(config: WiringConfig | None = None) -> dict[str, tuple[str, str, str]]:
    """host veth name -> (network, attachment id, ifname) for every veth we made here."""
    prefix = config.host_veth_prefix if config is not None else DEFAULT_PREFIX
    found = {}
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = str(link.get("ifname"))
            owner = parse_alias(link.get("ifalias"))
            if name.startswith(prefix) and owner is not None:
                found[name] = owner
    return found


def collect_garbage(
    network: str, valid: set[tuple[str, str]], config: WiringConfig | None = None
) -> list[str]:
    """Delete this network's host veths whose (attachment id, ifname) is not in valid (out
    of their shared routes first), then nexthop objects of ours that no route uses."""
    removed = []
    with IPRoute() as ipr:
        for name, (net, attachment, ifname) in list_attachments(config).items():
            if net != network or (attachment, ifname) in valid:
                continue
            if delete_attachment(ipr, name, config or WiringConfig()):
                removed.append(name)
    shared_routes.sweep(config or WiringConfig())
    return removed
