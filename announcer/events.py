"""Observations: what sources report, in the past tense.

Sources turn what they read (netlink messages, API payloads) into these typed values;
the core applies them to its world snapshot. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from announcer.model import IPAddress, Prefix
from announcer.spec.labels import ServiceSpec

# Kernel constants (linux/rtnetlink.h, linux/if.h) the core needs to name.
RTN_UNICAST = 1
RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


# A multipath route's paths: (device index, gateway or None). IPv6 refuses device-only
# multipath routes, so there each path names the instance's link-local address.
NextHops = tuple[tuple[int, "IPAddress | None"], ...]


@dataclass(frozen=True, slots=True)
class Via:
    """What a kernel route says besides its prefix. Routes that agree on all of it share
    one Via in the world (``World`` interns them). A multipath route has ``nexthops``
    (and no ``oif``): several local instances of one anycast IP, one veth each."""

    table: int
    protocol: int
    type: int = RTN_UNICAST
    oif: int | None = None
    gateway: IPAddress | None = None
    priority: int = 0
    nexthops: NextHops = ()

    @property
    def multipath(self) -> bool:
        return bool(self.nexthops)

    @property
    def slot(self) -> tuple[int, int]:
        """With the prefix, what identifies a route in the kernel (a delete names these)."""
        return (self.table, self.priority)

    def fields(self) -> tuple[int, int, int, int | None, IPAddress | None, int, NextHops]:
        return (
            self.table, self.protocol, self.type, self.oif, self.gateway, self.priority,
            self.nexthops,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class KernelRoute:
    """One route of the kernel's routing tables (RTM_NEWROUTE)."""

    prefix: Prefix
    table: int
    protocol: int
    type: int = RTN_UNICAST
    oif: int | None = None
    gateway: IPAddress | None = None
    priority: int = 0
    nexthops: NextHops = ()

    @property
    def via(self) -> Via:
        return Via(
            self.table, self.protocol, self.type, self.oif, self.gateway, self.priority,
            self.nexthops,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class KernelLink:
    """A network interface (RTM_NEWLINK)."""

    index: int
    name: str
    flags: int

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP) and bool(self.flags & IFF_LOWER_UP)


@dataclass(frozen=True, slots=True)
class KernelAddress:
    """An address on an interface (RTM_NEWADDR)."""

    index: int
    address: IPAddress
    prefixlen: int

    @property
    def key(self) -> tuple[int, IPAddress, int]:
        return (self.index, self.address, self.prefixlen)


@dataclass(frozen=True, slots=True)
class KernelSnapshot:
    """A full dump of routes, links and addresses: replaces everything known of the kernel."""

    routes: tuple[KernelRoute, ...]
    links: tuple[KernelLink, ...]
    addresses: tuple[KernelAddress, ...]


@dataclass(frozen=True, slots=True)
class RouteAdded:
    route: KernelRoute


@dataclass(frozen=True, slots=True)
class RouteRemoved:
    route: KernelRoute


@dataclass(frozen=True, slots=True)
class LinkChanged:
    link: KernelLink


@dataclass(frozen=True, slots=True)
class LinkRemoved:
    index: int


@dataclass(frozen=True, slots=True)
class AddressAdded:
    address: KernelAddress


@dataclass(frozen=True, slots=True)
class AddressRemoved:
    address: KernelAddress


KernelEvent = (
    KernelSnapshot
    | RouteAdded
    | RouteRemoved
    | LinkChanged
    | LinkRemoved
    | AddressAdded
    | AddressRemoved
)


# --- container lifecycle -------------------------------------------------------------


class InstanceState(StrEnum):
    """Where an instance (a container, a Marathon task, a drop-in file) is in its life."""

    STARTING = "starting"  # created/staging, or health check not passed yet
    SERVING = "serving"  # running, and healthy where it has a health check
    UNHEALTHY = "unhealthy"
    STOPPING = "stopping"  # stop signal sent (Docker kill, TASK_KILLING): withdraw now
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance as a lifecycle source sees it.

    ``ips`` are the addresses it serves: its own (container IP) and those its labels
    declare; ``spec`` is the parsed labels (None: no anycast labels); ``error`` says why
    its labels are unusable (the instance then serves nothing; the rest is unaffected).
    ``since`` is when ``state`` began, on the runtime's monotonic clock.
    """

    source: str
    id: str
    name: str
    state: InstanceState
    since: float = 0.0
    ips: tuple[IPAddress, ...] = ()
    spec: ServiceSpec | None = None
    error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.id)


@dataclass(frozen=True, slots=True)
class InstanceChanged:
    instance: Instance


@dataclass(frozen=True, slots=True)
class InstanceRemoved:
    source: str
    id: str


@dataclass(frozen=True, slots=True)
class SourceListed:
    """A full listing of one source: replaces everything known from it; the source is synced."""

    source: str
    instances: tuple[Instance, ...]


@dataclass(frozen=True, slots=True)
class SourceLost:
    """The source stopped answering at ``since``; its last state is kept for a bounded time."""

    source: str
    since: float
    reason: str


LifecycleEvent = InstanceChanged | InstanceRemoved | SourceListed | SourceLost


# --- operator drain ------------------------------------------------------------------


class DrainMode(StrEnum):
    WITHDRAW = "withdraw"  # withdraw at once
    GRACEFUL = "graceful"  # announce with GRACEFUL_SHUTDOWN (65535:0) first, then withdraw


@dataclass(frozen=True, slots=True)
class Drain:
    """An operator's drain of one prefix (``prefix`` None: every prefix)."""

    prefix: Prefix | None
    since: float
    until: float | None = None  # None: until undrained
    mode: DrainMode = DrainMode.WITHDRAW
    graceful_seconds: float = 0.0
    origin: str = "control"  # control socket, maintenance_file, sigterm

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True, slots=True)
class DrainsSet:
    """The complete set of drains in force (level, not edges)."""

    drains: tuple[Drain, ...]


@dataclass(frozen=True, slots=True)
class HealthObserved:
    """A health check's verdict on an instance changed (None: not decided yet)."""

    key: tuple[str, str]
    healthy: bool | None
    detail: str = ""
    at: float = 0.0  # when the verdict changed (the monitor's clock): slow start counts from it


Event = KernelEvent | LifecycleEvent | DrainsSet | HealthObserved
