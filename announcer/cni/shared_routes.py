"""Extra (anycast) IPs shared by several containers of one host: one route, one nexthop group.

    10.9.9.1 proto 180 nhid 2000000002              (table and protocol as configured)
        group 2000000002 = [2000000000, 2000000001]  (proto 180)
        2000000000 dev vethrAAAA (proto 180)   2000000001 dev vethrBBBB (proto 180)

Each host veth holding an extra IP has a device nexthop object per address family; each
shared IP's route points at a group of those (kernel >= 5.3). ADD joins the group (or makes
it, with the route), DEL/GC leave it (the last one out deletes the route and the group).
Why nexthop objects and not a plain multipath route (docs/adr/0004): the kernel deletes a
whole IPv4 multipath route when *any* of its devices goes away, and refuses IPv6 multipath
routes of device-only nexthops; a group instead loses just the member whose veth went
(the container's netns vanished without a DEL) and disappears with its last member.

Every change runs under an exclusive flock on ``config.lock_file``, shared by the CNI
plugin and the Docker driver, so concurrent ADD/DEL/GC of any number of processes leave an
exact member set. The kernel itself may change a group meanwhile (a veth vanishing): a
change it then refuses (ENOENT, EEXIST) is recomputed from a fresh read.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

from announcer.cni.host_routes import Routed, all_routed, device_names, family, in_use, routed
from announcer.cni.rtnl import (
    AF_INET,
    AF_INET6,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    RTM_DELNEXTHOP,
    RTM_DELROUTE,
    RTM_NEWNEXTHOP,
    RTM_NEWROUTE,
    Nexthop,
    Rtnl,
    RtnlError,
    nexthop_body,
    nexthop_id_body,
    route_body,
)
from announcer.cni.scheme import IPAddress, WiringConfig, WiringError

NEXTHOP_ID_BASE = 2_000_000_000  # ours are created from here up (EXCL: never over others')
LOCK_TIMEOUT_SECONDS = 60.0
ATTEMPTS = 5  # reads and retries when the kernel changed a group under us
T = TypeVar("T")


@contextmanager
def route_lock(path: str, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """An exclusive flock on path (made if missing) for as long as the block runs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WiringError(f"lock {path} still held after {timeout:.0f} s") from None
                time.sleep(0.002)  # a holder keeps it for milliseconds; flock has no timeout
        yield
    finally:
        os.close(fd)  # releases the lock


def _free_id(nexthops: dict[int, Nexthop]) -> int:
    nh_id = NEXTHOP_ID_BASE
    while nh_id in nexthops:
        nh_id += 1
    return nh_id


def _device_nexthop(
    rtnl: Rtnl, index: int, fam: int, cfg: WiringConfig, nexthops: dict[int, Nexthop]
) -> int:
    """The id of our device nexthop for (index, family), made if missing."""
    for nh in nexthops.values():
        if nh.oif == index and nh.family == fam and nh.protocol == cfg.route_protocol:
            return nh.id
    nh_id = _free_id(nexthops)
    rtnl.request(RTM_NEWNEXTHOP, NLM_F_CREATE | NLM_F_EXCL,
                 nexthop_body(nh_id, fam, cfg.route_protocol, oif=index))  # fmt: skip
    nexthops[nh_id] = Nexthop(nh_id, fam, cfg.route_protocol, index)
    return nh_id


def _set_members(
    rtnl: Rtnl, state: Routed, members: tuple[int, ...], cfg: WiringConfig,
    nexthops: dict[int, Nexthop],
) -> None:  # fmt: skip
    """Make state.ip's route go through exactly members (device nexthop ids): no route, a
    route through the one device nexthop, or through a group of them. Every change of an
    existing route is an atomic replace: listeners never see it deleted while it has one."""
    current = state.nexthop
    if len(members) > 1 and current is not None and current.group:
        if current.group != members:
            body = nexthop_body(current.id, 0, cfg.route_protocol, group=members)
            rtnl.request(RTM_NEWNEXTHOP, NLM_F_REPLACE, body)
        return
    if not members:
        if state.routes:
            _delete_route(rtnl, state.ip, cfg)
    else:
        target = members[0]
        if len(members) > 1:
            target = _free_id(nexthops)
            rtnl.request(RTM_NEWNEXTHOP, NLM_F_CREATE | NLM_F_EXCL,
                         nexthop_body(target, 0, cfg.route_protocol, group=members))  # fmt: skip
            nexthops[target] = Nexthop(target, 0, cfg.route_protocol, None, members)
        flags = NLM_F_REPLACE if state.routes else NLM_F_CREATE | NLM_F_EXCL
        body = route_body(state.ip, cfg.table, cfg.route_protocol, nhid=target)
        try:
            rtnl.request(RTM_NEWROUTE, flags, body)
        except BaseException:
            if target not in members:
                _delete_nexthop(rtnl, target)
            raise
    if current is not None and current.group:
        _delete_nexthop(rtnl, current.id)  # the route no longer uses it


def _join_once(rtnl: Rtnl, ip: IPAddress, index: int, cfg: WiringConfig) -> None:
    state = routed(rtnl, ip, cfg)
    nexthops = dict(state.nexthops)
    if not state.free and not state.shared:
        raise in_use(state, cfg)
    me = _device_nexthop(rtnl, index, family(ip), cfg, nexthops)
    if me not in state.members:
        _set_members(rtnl, state, (*state.members, me), cfg, nexthops)


def join(ips: Sequence[IPAddress], index: int, dev: str, cfg: WiringConfig) -> None:
    """Route the extra IPs through the veth index too; AddressInUse if one is not shareable."""
    if not ips:
        return
    with route_lock(cfg.lock_file), Rtnl() as rtnl:
        for ip in ips:
            _retry(partial(_join_once, rtnl, ip, index, cfg), f"sharing host route {ip} dev {dev}")
            try:
                joined = index in routed(rtnl, ip, cfg).oifs()
            except RtnlError as e:
                raise WiringError(f"reading host route {ip}: {e}") from e
            if not joined:
                raise WiringError(f"host route {ip} does not go through {dev} after joining it")


def _retry(step: Callable[[], T], what: str) -> T:
    """step(), again from a fresh read when the kernel changed a group under it."""
    for attempt in range(ATTEMPTS):
        try:
            return step()
        except RtnlError as e:
            if e.errno not in (errno.ENOENT, errno.EEXIST) or attempt == ATTEMPTS - 1:
                raise WiringError(f"{what}: {e}") from e
    raise AssertionError("unreachable")


def _delete_nexthop(rtnl: Rtnl, nh_id: int) -> None:
    try:
        rtnl.request(RTM_DELNEXTHOP, 0, nexthop_id_body(nh_id))
    except RtnlError as e:
        if e.errno != errno.ENOENT:
            raise


def _delete_route(rtnl: Rtnl, ip: IPAddress, cfg: WiringConfig) -> None:
    """Delete ip's route explicitly, so that listeners see RTM_DELROUTE."""
    try:
        rtnl.request(RTM_DELROUTE, 0, route_body(ip, cfg.table, cfg.route_protocol))
    except RtnlError as e:
        if e.errno not in (errno.ESRCH, errno.ENOENT):
            raise


def _leave_once(rtnl: Rtnl, index: int, cfg: WiringConfig) -> list[IPAddress]:
    """Take index's device nexthops out of every shared route; the IPs it left."""
    states, nexthops = all_routed(rtnl, cfg)
    mine = {nh.id for nh in nexthops.values()
            if nh.oif == index and nh.protocol == cfg.route_protocol}  # fmt: skip
    left = []
    for state in states:
        if mine & set(state.members):
            rest = tuple(i for i in state.members if i not in mine)
            _set_members(rtnl, state, rest, cfg, nexthops)
            left.append(state.ip)
    for nh_id in mine:
        _delete_nexthop(rtnl, nh_id)
    return left


def leave(index: int, dev: str, cfg: WiringConfig) -> list[IPAddress]:
    """Take the veth out of every shared route (before deleting it); the IPs it left."""
    with Rtnl() as rtnl:
        # Only a join for this very veth makes its nexthops: none now, none to come.
        if not any(nh.oif == index and nh.protocol == cfg.route_protocol
                   for nh in rtnl.nexthops().values()):  # fmt: skip
            return []
    with route_lock(cfg.lock_file), Rtnl() as rtnl:
        return _retry(partial(_leave_once, rtnl, index, cfg), f"leaving shared routes of {dev}")


def sweep(cfg: WiringConfig) -> list[int]:
    """Delete nexthop objects of ours that no route uses (left by a process that died
    halfway through a change, or by the kernel); their ids."""
    with Rtnl() as rtnl:
        if not any(nh.protocol == cfg.route_protocol for nh in rtnl.nexthops().values()):
            return []
    with route_lock(cfg.lock_file), Rtnl() as rtnl:
        nexthops = rtnl.nexthops()
        used: set[int] = set()
        for fam in (AF_INET, AF_INET6):  # every table: another network may use another
            for nh_id in (r.nhid for r in rtnl.routes(fam, None) if r.nhid in nexthops):
                used |= {nh_id, *nexthops[nh_id].group}
        unused = [i for i, nh in nexthops.items()
                  if nh.protocol == cfg.route_protocol and i not in used]  # fmt: skip
        for nh_id in sorted(unused, key=lambda i: (not nexthops[i].group, i)):  # groups first
            _delete_nexthop(rtnl, nh_id)
        return sorted(unused)


def members(ip: IPAddress, cfg: WiringConfig) -> str | None:
    """The devices of ip's shared route ("vethrA,vethrB"), or None if it is not shared."""
    with Rtnl() as rtnl:
        state = routed(rtnl, ip, cfg)
        return device_names(state.oifs()) if state.shared else None
