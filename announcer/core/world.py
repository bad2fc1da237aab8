"""The world: everything the sources have observed, as one snapshot.

:meth:`World.apply` folds one observation into the snapshot. It mutates in place for
speed (a 100k-route table is not copied per event) but does no I/O and reads no clock.

Kept compact, because a host may hold 100k routes: routes are stored per prefix as the
:class:`~announcer.events.Via` they go through, and routes that agree on everything but
their prefix share one ``Via`` object. Each observation also says which prefixes it may
change (``dirty``), so a reconcile decides only those: a route, an instance, a health
verdict or a drain of one prefix costs O(its prefixes), not O(table). Only a snapshot, a
link or address change, or a drain of everything marks everything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import assert_never

from announcer.events import (
    AddressAdded,
    AddressRemoved,
    Drain,
    DrainsSet,
    Event,
    HealthObserved,
    Instance,
    InstanceChanged,
    InstanceRemoved,
    KernelAddress,
    KernelLink,
    KernelRoute,
    KernelSnapshot,
    LinkChanged,
    LinkRemoved,
    RouteAdded,
    RouteRemoved,
    SourceListed,
    SourceLost,
    Via,
)
from announcer.model import IPAddress, Prefix, host_prefix

AddressKey = tuple[int, IPAddress, int]
InstanceKey = tuple[str, str]
Vias = Via | tuple[Via, ...]  # one route (nearly always), or one per (table, priority)


@dataclass
class SourceStatus:
    """A lifecycle source: synced once it listed everything; lost_since while unreachable."""

    synced: bool = False
    lost_since: float | None = None
    reason: str = ""


def _as_tuple(vias: Vias | None) -> tuple[Via, ...]:
    if vias is None:
        return ()
    return vias if isinstance(vias, tuple) else (vias,)


def _same(a: Vias | None, b: Vias | None) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        return set(_as_tuple(a)) == set(_as_tuple(b))
    return a == b


@dataclass
class World:
    routes: dict[Prefix, Vias] = field(default_factory=dict)
    links: dict[int, KernelLink] = field(default_factory=dict)
    addresses: dict[AddressKey, KernelAddress] = field(default_factory=dict)
    kernel_synced: bool = False
    instances: dict[InstanceKey, Instance] = field(default_factory=dict)
    sources: dict[str, SourceStatus] = field(default_factory=dict)
    drains: dict[Prefix | None, Drain] = field(default_factory=dict)  # None: all prefixes
    health: dict[InstanceKey, bool | None] = field(default_factory=dict)
    health_since: dict[InstanceKey, float] = field(default_factory=dict)  # verdict's time
    # What changed since the last take_dirty(): these prefixes, or everything; and whether
    # instances, sources or drains changed (health targets and deadlines depend on them).
    dirty: set[Prefix] = field(default_factory=set)
    dirty_all: bool = True
    lifecycle_changed: bool = True
    _vias: dict[Via, Via] = field(default_factory=dict)  # interned: equal vias share one object
    _count: int = 0
    _shared: Counter[int] = field(default_factory=Counter)  # oif -> multipath routes through it

    def take_dirty(self) -> tuple[bool, set[Prefix]]:
        """(everything changed?, prefixes changed) since the last call."""
        result = (self.dirty_all, self.dirty)
        self.dirty_all, self.dirty = False, set()
        return result

    def take_lifecycle_changed(self) -> bool:
        changed, self.lifecycle_changed = self.lifecycle_changed, False
        return changed

    # --- reading routes ---

    @property
    def route_count(self) -> int:
        return self._count

    def routes_of(self, prefix: Prefix) -> tuple[Via, ...]:
        return _as_tuple(self.routes.get(prefix))

    def all_routes(self) -> Iterator[tuple[Prefix, Via]]:
        for prefix, vias in self.routes.items():
            if isinstance(vias, tuple):
                for via in vias:
                    yield prefix, via
            else:
                yield prefix, vias

    def shared_devices(self) -> set[int]:
        """Devices that are a nexthop of some multipath route (a shared anycast IP's
        local instances), kept as routes come and go: O(1) to ask, not a table walk."""
        return {oif for oif, n in self._shared.items() if n > 0}

    def link_name(self, index: int | None) -> str | None:
        link = self.links.get(index) if index is not None else None
        return link.name if link is not None else None

    # --- folding observations in ---

    def apply(self, event: Event) -> None:
        match event:
            case KernelSnapshot():
                self._resync(event)
            case RouteAdded(route):
                self._add_route(route)
            case RouteRemoved(route):
                self._remove_route(route)
            case LinkChanged(link):
                self.links[link.index] = link
                self.dirty_all = True
            case LinkRemoved(index):
                self._forget_link(index)
                self.dirty_all = True
            case AddressAdded(address):
                self.addresses[address.key] = address
                self.dirty_all = True
            case AddressRemoved(address):
                self.addresses.pop(address.key, None)
                self.dirty_all = True
            case InstanceChanged(instance):
                self._set_instance(instance.key, instance)
                self._heard_from(instance.source)
            case InstanceRemoved(source, id_):
                self._set_instance((source, id_), None)
                self._heard_from(source)
            case SourceListed(source, instances):
                self._listed(source, instances)
            case HealthObserved(key, healthy, _detail, at):
                if self.health.get(key) != healthy or key not in self.health:
                    self.health[key] = healthy
                    self.health_since[key] = at
                    self._touch(self.instances.get(key))
                    self.lifecycle_changed = True  # a slow start may begin
            case DrainsSet(drains):
                self._set_drains(drains)
            case SourceLost(source, since, reason):
                status = self.sources.setdefault(source, SourceStatus())
                if status.lost_since is None:
                    status.lost_since = since
                status.reason = reason
                self.lifecycle_changed = True
            case _:
                assert_never(event)

    # --- routes ---

    def _intern(self, via: Via) -> Via:
        return self._vias.setdefault(via, via)

    def _resync(self, snapshot: KernelSnapshot) -> None:
        """Replace what is known of the kernel by a dump. Only what differs is dirty (a
        periodic resync of 100k unchanged routes decides nothing again), unless links or
        addresses changed, which may touch any prefix."""
        old = self.routes
        self._load_routes(snapshot.routes)
        if not self.kernel_synced:
            self.dirty_all = True
        else:
            self.dirty.update(p for p, vias in self.routes.items() if not _same(old.get(p), vias))
            self.dirty.update(old.keys() - self.routes.keys())
        links = {link.index: link for link in snapshot.links}
        addresses = {addr.key: addr for addr in snapshot.addresses}
        if links != self.links or addresses != self.addresses:
            self.dirty_all = True
        self.links, self.addresses = links, addresses
        self.kernel_synced = True

    def _share(self, vias: Iterable[Via], sign: int) -> None:
        for via in vias:
            for oif, _ in via.nexthops:
                self._shared[oif] += sign
                if not self._shared[oif]:
                    del self._shared[oif]

    def _load_routes(self, routes: Iterable[KernelRoute]) -> None:
        self.routes, self._count, self._vias, self._shared = {}, 0, {}, Counter()
        for route in routes:
            self._add_route(route, mark=False)

    def _add_route(self, route: KernelRoute, mark: bool = True) -> None:
        prefix, via = route.prefix, self._intern(route.via)
        if mark:
            self.dirty.add(prefix)
        current = self.routes.get(prefix)
        if via.nexthops:
            self._share((via,), 1)
        if current is None:
            self.routes[prefix] = via
            self._count += 1
            return
        others = tuple(v for v in _as_tuple(current) if v.slot != via.slot)
        self._share((v for v in _as_tuple(current) if v.slot == via.slot), -1)
        self._count += len(others) + 1 - len(_as_tuple(current))
        self.routes[prefix] = (*others, via) if others else via

    def _remove_route(self, route: KernelRoute) -> None:
        prefix, slot = route.prefix, route.via.slot
        current = _as_tuple(self.routes.get(prefix))
        kept = tuple(v for v in current if v.slot != slot)
        if len(kept) == len(current):
            return
        self.dirty.add(prefix)
        self._share((v for v in current if v.slot == slot), -1)
        self._count -= len(current) - len(kept)
        if not kept:
            del self.routes[prefix]
        else:
            self.routes[prefix] = kept if len(kept) > 1 else kept[0]

    def _forget_link(self, index: int) -> None:
        # The kernel drops IPv4 routes and addresses of a deleted device without
        # sending RTM_DELROUTE for each, and shrinks nexthop groups silently: forget them
        # here instead of waiting for a dump.
        self.links.pop(index, None)
        routes = []
        for prefix, via in self.all_routes():
            if via.oif == index:
                continue
            kept = via
            if via.nexthops:
                hops = tuple(hop for hop in via.nexthops if hop[0] != index)
                if not hops:
                    continue
                kept = replace(via, nexthops=hops)
            routes.append(KernelRoute(prefix, *kept.fields()))
        self._load_routes(routes)
        self.addresses = {k: a for k, a in self.addresses.items() if a.index != index}

    # --- lifecycle ---

    def _touch(self, instance: Instance | None) -> None:
        """The prefixes an instance claims may decide differently now."""
        if instance is not None:
            self.dirty.update(host_prefix(ip) for ip in instance.ips)

    def _set_instance(self, key: InstanceKey, instance: Instance | None) -> None:
        old = self.instances.get(key)
        if old == instance:
            return
        self._touch(old)
        self._touch(instance)
        if instance is None:
            del self.instances[key]
            self.health.pop(key, None)
            self.health_since.pop(key, None)
        else:
            self.instances[key] = instance
        self.lifecycle_changed = True

    def _listed(self, source: str, instances: Iterable[Instance]) -> None:
        listed = {i.key: i for i in instances}
        mine = [k for k in self.instances if k[0] == source]
        for key in mine:
            if key not in listed:
                self._set_instance(key, None)
        for key, instance in listed.items():
            self._set_instance(key, instance)
        status = self.sources.get(source)
        if status is None or not status.synced or status.lost_since is not None:
            # back from silence (perhaps past stale_after): its instances count again
            for instance in listed.values():
                self._touch(instance)
            self.lifecycle_changed = True
        self.sources[source] = SourceStatus(synced=True)

    def _heard_from(self, source: str) -> None:
        status = self.sources.setdefault(source, SourceStatus())
        if status.lost_since is not None:
            for instance in self.instances.values():
                if instance.source == source:
                    self._touch(instance)
            self.lifecycle_changed = True
        status.lost_since = None
        status.reason = ""

    def _set_drains(self, drains: Iterable[Drain]) -> None:
        new = {drain.prefix: drain for drain in drains}
        for key in self.drains.keys() | new.keys():
            if self.drains.get(key) != new.get(key):
                if key is None:
                    self.dirty_all = True
                else:
                    self.dirty.add(key)
                self.lifecycle_changed = True
        self.drains = new
