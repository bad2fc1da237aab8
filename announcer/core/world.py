"""The world: everything the sources have observed, as one snapshot.

:meth:`World.apply` folds one observation into the snapshot. It mutates in place for
speed (a 100k-route table is not copied per event) but does no I/O and reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    RouteKey,
    RouteRemoved,
    SourceListed,
    SourceLost,
)
from announcer.model import Prefix

AddressKey = tuple[int, object, int]
InstanceKey = tuple[str, str]


@dataclass
class SourceStatus:
    """A lifecycle source: synced once it listed everything; lost_since while unreachable."""

    synced: bool = False
    lost_since: float | None = None
    reason: str = ""


@dataclass
class World:
    routes: dict[RouteKey, KernelRoute] = field(default_factory=dict)
    links: dict[int, KernelLink] = field(default_factory=dict)
    addresses: dict[AddressKey, KernelAddress] = field(default_factory=dict)
    kernel_synced: bool = False
    instances: dict[InstanceKey, Instance] = field(default_factory=dict)
    sources: dict[str, SourceStatus] = field(default_factory=dict)
    drains: dict[Prefix | None, Drain] = field(default_factory=dict)  # None: all prefixes
    health: dict[InstanceKey, bool | None] = field(default_factory=dict)
    # Incremental reconcile: route events mark their prefix dirty; anything else (links,
    # addresses, instances, drains, health, a snapshot) may touch any prefix: all dirty.
    # Tuples, not sets: nearly every prefix has one route, and a 1-tuple is a quarter of an
    # empty set's size (100k routes: 27 MB less). The keys are the ``routes`` dict's own.
    by_prefix: dict[Prefix, tuple[RouteKey, ...]] = field(default_factory=dict)
    dirty: set[Prefix] = field(default_factory=set)
    dirty_all: bool = True

    def take_dirty(self) -> tuple[bool, set[Prefix]]:
        """(everything changed?, prefixes changed) since the last call."""
        result = (self.dirty_all, self.dirty)
        self.dirty_all, self.dirty = False, set()
        return result

    def apply(self, event: Event) -> None:
        if isinstance(event, RouteAdded | RouteRemoved):
            self.dirty.add(event.route.prefix)
        else:
            self.dirty_all = True
        match event:
            case KernelSnapshot():
                self.routes = {route.key: route for route in event.routes}
                self._index()
                self.links = {link.index: link for link in event.links}
                self.addresses = {addr.key: addr for addr in event.addresses}
                self.kernel_synced = True
            case RouteAdded(route):
                self._add_route(route)
            case RouteRemoved(route):
                self._remove_route(route)
            case LinkChanged(link):
                self.links[link.index] = link
            case LinkRemoved(index):
                self._forget_link(index)
            case AddressAdded(address):
                self.addresses[address.key] = address
            case AddressRemoved(address):
                self.addresses.pop(address.key, None)
            case InstanceChanged(instance):
                self.instances[instance.key] = instance
                self._heard_from(instance.source)
            case InstanceRemoved(source, id_):
                self.instances.pop((source, id_), None)
                self._heard_from(source)
            case SourceListed(source, instances):
                self.instances = {k: i for k, i in self.instances.items() if k[0] != source}
                self.instances.update((i.key, i) for i in instances)
                self.sources[source] = SourceStatus(synced=True)
            case HealthObserved(key, healthy, _detail):
                self.health[key] = healthy
            case DrainsSet(drains):
                self.drains = {drain.prefix: drain for drain in drains}
            case SourceLost(source, since, reason):
                status = self.sources.setdefault(source, SourceStatus())
                if status.lost_since is None:
                    status.lost_since = since
                status.reason = reason
            case _:
                assert_never(event)

    def _add_route(self, route: KernelRoute) -> None:
        key = route.key
        if key not in self.routes:  # else replaced: by_prefix already has the key
            self.by_prefix[route.prefix] = (*self.by_prefix.get(route.prefix, ()), key)
        self.routes[key] = route

    def _remove_route(self, route: KernelRoute) -> None:
        key = route.key
        if self.routes.pop(key, None) is not None:
            keys = tuple(k for k in self.by_prefix.get(route.prefix, ()) if k != key)
            if keys:
                self.by_prefix[route.prefix] = keys
            else:
                self.by_prefix.pop(route.prefix, None)

    def _heard_from(self, source: str) -> None:
        status = self.sources.setdefault(source, SourceStatus())
        status.lost_since = None
        status.reason = ""

    def _forget_link(self, index: int) -> None:
        # The kernel drops IPv4 routes and addresses of a deleted device without
        # sending RTM_DELROUTE for each: forget them here instead of waiting for a dump.
        self.links.pop(index, None)
        self.routes = {k: r for k, r in self.routes.items() if r.oif != index}
        self._index()
        self.addresses = {k: a for k, a in self.addresses.items() if a.index != index}

    def _index(self) -> None:
        by_prefix: dict[Prefix, list[RouteKey]] = {}
        for key, route in self.routes.items():
            by_prefix.setdefault(route.prefix, []).append(key)
        self.by_prefix = {prefix: tuple(keys) for prefix, keys in by_prefix.items()}

    def link_name(self, index: int | None) -> str | None:
        link = self.links.get(index) if index is not None else None
        return link.name if link is not None else None
