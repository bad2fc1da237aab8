"""What every lifecycle source (Docker, Marathon, drop-in files) has in common.

A source runs forever as one asyncio task and reports through ``emit``:
 - ``SourceListed`` after every full listing (first sync, reconnect, periodic re-list);
 - ``InstanceChanged`` / ``InstanceRemoved`` as events arrive;
 - ``SourceLost`` when it stops answering (then it reconnects with backoff and lists again).
It never decides anything: the core does. ``since`` values come from ``clock`` (the
runtime's monotonic clock), so drain deadlines and staleness are computed on one clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from announcer.events import Instance, InstanceState, LifecycleEvent
from announcer.model import IPAddress
from announcer.spec.labels import LabelError, ServiceSpec, parse_labels

Emit = Callable[[LifecycleEvent], None]
Clock = Callable[[], float]


class LifecycleSource(Protocol):
    name: str

    async def run(self, emit: Emit, clock: Clock) -> None:
        """Report forever; return only when cancelled."""
        ...


def make_instance(
    source: str,
    id_: str,
    name: str,
    state: InstanceState,
    since: float,
    own_ips: Iterable[IPAddress],
    labels: Mapping[str, str],
) -> Instance:
    """An instance from what its orchestrator says; bad labels make it serve nothing.

    ``own_ips`` are the instance's own addresses (container IP, task IP); the labels may
    add anycast IPs. With unusable labels the instance keeps its own IPs (so it still
    gates its own route) but is marked with the error, and serves nothing.
    """
    error: str | None = None
    spec: ServiceSpec | None = None
    try:
        spec = parse_labels(labels)
    except LabelError as exc:
        error = str(exc)
    ips = list(dict.fromkeys(own_ips))
    if spec is not None:
        ips.extend(ip for ip in spec.ips if ip not in ips)
    return Instance(source, id_, name, state, since, tuple(ips), spec, error)
