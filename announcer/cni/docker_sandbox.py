"""The container's side under Docker: extra (anycast) IPs on its ``lo``.

libnetwork configures only the primary IP on the interface it moves into the container;
the driver puts the extra IPs on the container's ``lo`` through the sandbox's netns file
(``SandboxKey``), and takes them off again at Leave.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from announcer.cni import scheme

log = logging.getLogger("announcer.docker_driver")


def place_extra_ips(
    ep_id: str,
    sandbox: str,
    mac: str,
    ips: tuple[str, ...],
    timeout: float,
    then: Callable[[], None] = lambda: None,
) -> None:
    """Put the extra IPs on the container's lo once libnetwork has moved our peer in; then().

    Not at Join: dockerd joins in a placeholder namespace, and only at container start
    (libnetwork-setkey hook) bind-mounts the container's own over the same SandboxKey
    path. Our peer (known by its MAC) showing up there says it is the real one.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _has_mac(sandbox, mac):
                set_addresses("add", sandbox, ips)
                log.info("extra_ips_placed endpoint=%s ips=%s", ep_id[:12], ",".join(ips))
                then()
                return
        except (NetlinkError, OSError) as e:
            log.debug("extra_ips_retry endpoint=%s error=%s", ep_id[:12], e)
        time.sleep(0.05)  # polling the sandbox: nothing tells us when libnetwork is done
    log.error("extra_ips_not_placed endpoint=%s sandbox=%s: container interface never "
              "appeared", ep_id[:12], sandbox)  # fmt: skip


def _has_mac(sandbox: str, mac: str) -> bool:
    if not Path(sandbox).exists():
        return False
    with IPRoute(netns=sandbox, flags=0) as ipr:
        return any(link.get("address") == mac for link in ipr.get_links())


def set_addresses(op: str, sandbox: str, ips: Iterable[str]) -> None:
    """Add or delete ips as host prefixes on the sandbox's lo (skipped if it is gone)."""
    parsed = [scheme.parse_ip(ip) for ip in ips]
    if not parsed or not sandbox or not Path(sandbox).exists():
        return
    with IPRoute(netns=sandbox, flags=0) as ipr:
        index = ipr.link_lookup(ifname="lo")[0]
        for ip in parsed:
            try:
                ipr.addr(op, index=index, address=str(ip), prefixlen=ip.max_prefixlen)
            except NetlinkError as e:
                if e.code not in (errno.EEXIST, errno.EADDRNOTAVAIL):
                    raise
