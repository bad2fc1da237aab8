"""The container's side under Docker: extra (anycast) IPs, and no IPv6 on-link route.

libnetwork configures only the primary IPs on the interface it moves into the container,
with the pool's prefix length; the driver adds the extra IPs (IPv4 on ``lo``, IPv6 on that
interface) and removes the IPv6 pool's on-link route, through the sandbox's netns file
(``SandboxKey``), and takes the extra IPs off again at Leave.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from announcer.cni import scheme
from announcer.cni.libnetwork import Endpoint
from announcer.cni.scheme import IPAddress

log = logging.getLogger("announcer.docker_driver")
_RTPROT_KERNEL = 2
_IFA_F_NODAD = 0x02


def settle(
    ep_id: str,
    sandbox: str,
    mac: str,
    endpoint: Endpoint,
    timeout: float,
    then: Callable[[], None] = lambda: None,
) -> None:
    """Finish the container end once libnetwork has configured it; then().

    Puts the extra IPs on the container (set_addresses), and takes the on-link route of the IPv6
    pool (fd00:34::/64 dev eth0, made by libnetwork's fd00:34::5/64) out: IPv6 has no
    proxy_arp, so a neighbour in that prefix would be sought on the link and never
    answered; without the route it is reached through the host (default via fe80::1).

    Not at Join: dockerd joins in a placeholder namespace, and only at container start
    (libnetwork-setkey hook) bind-mounts the container's own over the same SandboxKey
    path. Our peer (known by its MAC) holding its IPv6 address there says it is done.
    """
    v6 = [ip for ip in map(scheme.parse_ip, endpoint.ips) if ip.version == 6]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _configured(sandbox, mac, v6):
                set_addresses("add", sandbox, endpoint)
                dropped = _drop_prefix_routes(sandbox, mac, v6)
                log.info("container_end_settled endpoint=%s extra_ips=%s dropped_routes=%s",
                         ep_id[:12], ",".join(endpoint.extra_ips) or "-",
                         ",".join(dropped) or "-")  # fmt: skip
                break
        except (NetlinkError, OSError) as e:
            log.debug("settle_retry endpoint=%s error=%s", ep_id[:12], e)
        time.sleep(0.05)  # polling the sandbox: nothing tells us when libnetwork is done
    else:
        log.error("container_end_not_settled endpoint=%s sandbox=%s: container interface "
                  "never appeared configured", ep_id[:12], sandbox)  # fmt: skip
        return
    then()


def _link(ipr: IPRoute, mac: str) -> int | None:
    for link in ipr.get_links():
        if link.get("address") == mac:
            return int(link["index"])
    return None


def _configured(sandbox: str, mac: str, v6: Sequence[IPAddress]) -> bool:
    """Our peer is in the sandbox, with its IPv6 addresses (if any) on it."""
    if not Path(sandbox).exists():
        return False
    with IPRoute(netns=sandbox, flags=0) as ipr:
        index = _link(ipr, mac)
        if index is None:
            return False
        present = {a.get("address") for a in ipr.get_addr(family=10, index=index)}
        return all(str(ip) in present for ip in v6)


def _drop_prefix_routes(sandbox: str, mac: str, v6: Sequence[IPAddress]) -> list[str]:
    """Delete the kernel's on-link routes of the pools of v6 on our interface."""
    if not v6:
        return []
    dropped = []
    with IPRoute(netns=sandbox, flags=0) as ipr:
        index = _link(ipr, mac)
        for route in ipr.get_routes(family=10, oif=index) if index is not None else []:
            dst, length = route.get("dst"), route["dst_len"]
            if route["proto"] != _RTPROT_KERNEL or not dst or not 0 < length < 128:
                continue
            prefix = ipaddress.ip_network(f"{dst}/{length}")
            if any(ip in prefix for ip in v6) and not prefix.is_link_local:
                ipr.route("del", dst=str(prefix), oif=index, family=10)
                dropped.append(str(prefix))
    return dropped


def _has_mac(sandbox: str, mac: str) -> bool:
    if not Path(sandbox).exists():
        return False
    with IPRoute(netns=sandbox, flags=0) as ipr:
        return any(link.get("address") == mac for link in ipr.get_links())


def set_addresses(op: str, sandbox: str, endpoint: Endpoint) -> None:
    """Add or delete the endpoint's extra IPs as host prefixes in the sandbox (skipped if
    it is gone): IPv4 ones on lo, IPv6 ones on our interface (found by its MAC).

    IPv6 neighbour discovery answers only for addresses of the interface asked on (ARP
    answers for any local address), so an extra IPv6 address on lo would be unreachable
    through the host's device route; IPv6 ones get no DAD, as the CNI plugin's.
    """
    parsed = [scheme.parse_ip(ip) for ip in endpoint.extra_ips]
    if not parsed or not sandbox or not Path(sandbox).exists():
        return
    mac = scheme.container_mac([scheme.parse_ip(ip) for ip in endpoint.ips + endpoint.extra_ips])
    with IPRoute(netns=sandbox, flags=0) as ipr:
        lo, eth = ipr.link_lookup(ifname="lo")[0], _link(ipr, mac)
        for ip in parsed:
            index = lo if ip.version == 4 else eth
            if index is None:
                continue  # our interface has gone already: so has the address
            try:
                ipr.addr(op, index=index, address=str(ip), prefixlen=ip.max_prefixlen,
                         flags=_IFA_F_NODAD if ip.version == 6 else 0)  # fmt: skip
            except NetlinkError as e:
                if e.code not in (errno.EEXIST, errno.EADDRNOTAVAIL):
                    raise
