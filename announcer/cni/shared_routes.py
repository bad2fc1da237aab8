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

A group's members are its holders minus the unhealthy ones (all holders if every one is
unhealthy): the holders are recorded and the announcer's health verdicts kept in files next
to the lock file (holders.py). join, leave, sweep (GC) and set_unhealthy (the announcer's
call) all apply that one rule whenever they change a group, so none undoes another.

Every change runs under an exclusive flock on ``config.lock_file`` (lock.py), shared by the
CNI plugin, the Docker driver and the announcer, so concurrent ADD/DEL/GC/verdicts of any
number of processes leave an exact member set. The kernel itself may change a group
meanwhile (a veth vanishing): a change it then refuses (ENOENT, EEXIST, ENETDOWN, ENODEV)
is recomputed from a fresh read.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import TypeVar

from announcer.cni.holders import (
    Context,
    Holders,
    StateFileDenied,
    holders_of,
    holders_path,
    load_holders,
    load_unhealthy,
    member_oifs,
    read_context,
    save_holders,
    save_unhealthy,
    unhealthy_path,
    validate_names,
    wanted,
)
from announcer.cni.host_routes import Routed, all_routed, device_names, family, in_use, routed
from announcer.cni.lock import route_lock
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
ATTEMPTS = 5  # reads and retries when the kernel changed a group under us
# What the kernel refuses when a group, a nexthop or a device changed under us.
RETRIED = (errno.ENOENT, errno.EEXIST, errno.ENETDOWN, errno.ENODEV)
T = TypeVar("T")
log = logging.getLogger("announcer.cni")


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


def _apply(
    rtnl: Rtnl, state: Routed, holders: dict[int, str], ctx: Context,
    nexthops: dict[int, Nexthop], cfg: WiringConfig, *, may_delete: bool,
) -> bool:  # fmt: skip
    """Give state.ip's route the members the rule wants (keeping the order of those that
    stay); whether it changed. Without may_delete a route is never deleted (only the
    last holder leaving may)."""
    want = wanted(holders, ctx)
    if member_oifs(state) == want or not (want or may_delete):
        return False
    keep = tuple(m for m in state.members if nexthops[m].oif in want)
    have = {nexthops[m].oif for m in keep}
    new = tuple(_device_nexthop(rtnl, i, family(state.ip), cfg, nexthops)
                for i in sorted(want - have))  # fmt: skip
    _set_members(rtnl, state, keep + new, cfg, nexthops)
    log.info("shared_route_changed ip=%s devices=%s unhealthy=%s", state.ip,
             ",".join(sorted(holders[i] for i in want)) or "-",
             ",".join(sorted(set(holders.values()) & ctx.unhealthy)) or "-")  # fmt: skip
    return True


def _join_once(rtnl: Rtnl, ip: IPAddress, index: int, dev: str, cfg: WiringConfig) -> None:
    state = routed(rtnl, ip, cfg)
    nexthops = dict(state.nexthops)
    if not state.free and not state.shared:
        raise in_use(state, cfg)
    _device_nexthop(rtnl, index, family(ip), cfg, nexthops)  # refused without carrier
    ctx = read_context(rtnl, cfg)
    holders = {**holders_of(state, ctx), index: dev}
    _apply(rtnl, state, holders, ctx, nexthops, cfg, may_delete=False)
    record = dict(ctx.record or {})
    record[ip] = {name: i for i, name in holders.items()}
    if record != (ctx.record or {}):
        save_holders(cfg, record)


def join(ips: Sequence[IPAddress], index: int, dev: str, cfg: WiringConfig) -> None:
    """Make the veth index a holder of the extra IPs, routed through it unless it is
    unhealthy while another holder is not; AddressInUse if an IP is not shareable."""
    if not ips:
        return
    with route_lock(cfg.lock_file), Rtnl() as rtnl:
        for ip in ips:
            what = f"sharing host route {ip} dev {dev}"
            _retry(partial(_join_once, rtnl, ip, index, dev, cfg), what)
            try:
                state = routed(rtnl, ip, cfg)
            except RtnlError as e:
                raise WiringError(f"reading host route {ip}: {e}") from e
            parked = state.shared and dev in load_unhealthy(cfg)  # out for health
            if index not in state.oifs() and not parked:
                raise WiringError(f"host route {ip} does not go through {dev} after joining it")


def _retry(step: Callable[[], T], what: str) -> T:
    """step(), again from a fresh read when the kernel changed a group under it."""
    for attempt in range(ATTEMPTS):
        try:
            return step()
        except RtnlError as e:
            if e.errno not in RETRIED or attempt == ATTEMPTS - 1:
                hint = " (needs CAP_NET_ADMIN)" if e.errno == errno.EPERM else ""
                raise WiringError(f"{what}: {e}{hint}") from e
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


def _leave_once(rtnl: Rtnl, index: int, dev: str, cfg: WiringConfig) -> list[IPAddress]:
    """Take index out of the holders of every shared route (its group re-made by the rule)
    and out of the record; delete its device nexthops. The IPs it held."""
    states, nexthops = all_routed(rtnl, cfg)
    ctx = read_context(rtnl, cfg)
    mine = {nh.id for nh in nexthops.values()
            if nh.oif == index and nh.protocol == cfg.route_protocol}  # fmt: skip
    record = {ip: {n: i for n, i in v.items() if n != dev} for ip, v in (ctx.record or {}).items()}
    left = []
    for state in states:
        if not (mine & set(state.members) or dev in (ctx.record or {}).get(state.ip, {})):
            continue
        if state.shared:
            holders = {i: n for i, n in holders_of(state, ctx).items() if i != index}
            _apply(rtnl, state, holders, ctx, nexthops, cfg, may_delete=True)
        left.append(state.ip)
    for nh_id in mine:
        _delete_nexthop(rtnl, nh_id)
    record = {ip: v for ip, v in record.items() if v}
    if record != (ctx.record or {}):
        save_holders(cfg, record)
    return left


def _recorded(dev: str, cfg: WiringConfig) -> bool:
    return any(dev in veths for veths in (load_holders(cfg) or {}).values())


def leave(index: int, dev: str, cfg: WiringConfig) -> list[IPAddress]:
    """Take the veth out of every shared route (before deleting it); the IPs it held."""
    with Rtnl() as rtnl:
        # Only a join for this very veth makes its nexthops and records it: none now, none
        # to come.
        if not any(nh.oif == index and nh.protocol == cfg.route_protocol
                   for nh in rtnl.nexthops().values()) and not _recorded(dev, cfg):  # fmt: skip
            return []
    with route_lock(cfg.lock_file), Rtnl() as rtnl:
        what = f"leaving shared routes of {dev}"
        return _retry(partial(_leave_once, rtnl, index, dev, cfg), what)


def _record_now(states: list[Routed], ctx: Context) -> Holders:
    """The record pruned of veths that are gone and completed from the groups as they
    are now (every live holder of every shared route)."""
    record: Holders = {}
    for ip, veths in (ctx.record or {}).items():
        live = {n: i for n, i in veths.items() if i in ctx.links and ctx.links[i].name == n}
        if live:
            record[ip] = live
    for state in (s for s in states if s.shared):
        holders = {name: i for i, name in holders_of(state, ctx).items()}
        if holders:
            record[state.ip] = holders
    return record


def _save_record(cfg: WiringConfig, old: Holders | None, record: Holders) -> None:
    """Save the record before any group changes. One that gains a holder must be saved (a
    holder taken out for health and missing from it would never come back): WiringError,
    nothing changed, if this process may not. One that only loses stale entries (ignored
    anyway) stays as it is then: the announcer, not root, may not replace root's file."""
    if record == (old or {}):
        return
    before = old or {}
    gained = sorted(f"{ip} {name}" for ip, veths in record.items()
                    for name, i in veths.items() if before.get(ip, {}).get(name) != i)  # fmt: skip
    try:
        save_holders(cfg, record)
    except StateFileDenied as e:
        if gained:
            more = f" and {len(gained) - 4} more" if len(gained) > 4 else ""
            raise WiringError(
                f"{e}: the record must gain {', '.join(gained[:4])}{more} before any group "
                "changes; no group changed: root completes it at the plugin's next GC (or "
                "ADD of a holder of that IP), which applies the verdicts too"
            ) from e
        log.debug("holders_prune_skipped path=%s error=%s", holders_path(cfg), e)


def _reconcile(rtnl: Rtnl, cfg: WiringConfig, changed: list[IPAddress]) -> None:
    """Every shared route's members by the rule (none deleted), after the record, pruned
    and completed from the groups, is saved (_save_record). Appends the IPs changed."""
    states, nexthops = all_routed(rtnl, cfg)
    ctx = read_context(rtnl, cfg)
    _save_record(cfg, ctx.record, _record_now(states, ctx))
    for state in (s for s in states if s.shared):
        if _apply(rtnl, state, holders_of(state, ctx), ctx, nexthops, cfg, may_delete=False):
            changed.append(state.ip)


def sweep(cfg: WiringConfig) -> list[int]:
    """GC: re-apply every shared route's members and prune the record (veths gone leave
    it), then delete nexthop objects of ours that no route uses (left by a process that
    died halfway through a change, by the kernel, or parked for health); their ids."""
    with Rtnl() as rtnl:
        if not any(nh.protocol == cfg.route_protocol for nh in rtnl.nexthops().values()) and (
            not load_holders(cfg)
        ):
            return []
    with route_lock(cfg.lock_file), Rtnl() as rtnl:
        _retry(partial(_reconcile, rtnl, cfg, []), "reconciling shared routes")
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


def _pending(rtnl: Rtnl, cfg: WiringConfig) -> bool:
    """Whether some shared route's members differ from the rule's (a read, no lock)."""
    if not any(nh.protocol == cfg.route_protocol for nh in rtnl.nexthops().values()):
        return False
    states, _ = all_routed(rtnl, cfg)
    ctx = read_context(rtnl, cfg)
    return any(member_oifs(s) != wanted(holders_of(s, ctx), ctx) for s in states if s.shared)


def set_unhealthy(ifnames: Collection[str], cfg: WiringConfig) -> list[IPAddress]:
    """Publish the full set of host veths whose instance is unhealthy (the last set given
    wins) and route every shared IP through its holders but those, or through all of them
    if every holder is unhealthy; the IPs whose group changed.

    The set is kept in ``<lock_file>.unhealthy.json``, so the plugin and the driver apply
    it too. A no-op without the lock when the file already says so and every group already
    agrees (one read of nexthops, routes and links). Needs CAP_NET_ADMIN, not root: the
    lock file may be root's (opened read-only), the verdict file is the caller's own (made
    in the lock file's directory, which it must be allowed to write in: /run/lock is
    sticky and world-writable), and the holders file, root's, is written only when the
    record must gain a holder (_save_record). WiringError otherwise, naming the file and
    what to do; or if a name is no interface name.
    """
    verdicts = validate_names(ifnames)
    with Rtnl() as rtnl:
        if load_unhealthy(cfg) == verdicts and not _pending(rtnl, cfg):
            return []
    changed: list[IPAddress] = []
    with route_lock(cfg.lock_file), Rtnl() as rtnl:
        if load_unhealthy(cfg) != verdicts or not unhealthy_path(cfg).exists():
            save_unhealthy(cfg, verdicts)
        _retry(partial(_reconcile, rtnl, cfg, changed), "applying health verdicts")
    return list(dict.fromkeys(changed))


def unserved(ips: Sequence[IPAddress], dev: str, cfg: WiringConfig) -> list[IPAddress]:
    """Those of dev's extra IPs that are not shared routes, or whose group lacks dev
    although the rule wants it there (the kernel drops a nexthop whose veth lost carrier
    and never puts it back): what joining again repairs. A read, no lock."""
    with Rtnl() as rtnl:
        ctx = read_context(rtnl, cfg)
        index = next((link.index for link in ctx.links.values() if link.name == dev), None)
        found = []
        for ip in ips:
            state = routed(rtnl, ip, cfg)
            holders = {**holders_of(state, ctx), **({index: dev} if index is not None else {})}
            want = wanted(holders, ctx)
            if not state.shared or (index in want and index not in member_oifs(state)):
                found.append(ip)
        return found


def members(ip: IPAddress, cfg: WiringConfig) -> str | None:
    """The devices of ip's shared route ("vethrA,vethrB"), or None if it is not shared."""
    with Rtnl() as rtnl:
        state = routed(rtnl, ip, cfg)
        return device_names(state.oifs()) if state.shared else None
