"""Handles into the host's and a container's network namespace: netlink, links, sysctls.

The process running the wiring is "the host": netlink sockets opened without a netns and
/proc/sys/net are its own namespace's. A container's namespace is reached by name (under
/run/netns) or by path (/proc/PID/ns/net, a runtime's bind mount).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyroute2 import IPRoute

from announcer.cni.scheme import NetnsNotFound


def netns_path(netns: str) -> str:
    return netns if "/" in netns else f"/run/netns/{netns}"


def open_netns(netns: str) -> int:
    """A file descriptor of the namespace (the caller closes it); NetnsNotFound if absent."""
    try:
        return os.open(netns_path(netns), os.O_RDONLY)
    except FileNotFoundError:
        raise NetnsNotFound(f"network namespace {netns!r} does not exist") from None


@contextmanager
def container_ipr(netns: str) -> Iterator[IPRoute]:
    path = netns_path(netns)
    if not Path(path).exists():
        raise NetnsNotFound(f"network namespace {netns!r} does not exist")
    with IPRoute(netns=path, flags=0) as ipr:
        yield ipr


def link_index(ipr: IPRoute, ifname: str) -> int | None:
    found: list[int] = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def write_sysctl(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def read_sysctl(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
