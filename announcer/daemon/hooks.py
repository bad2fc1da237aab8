"""The daemon's measurement hooks, and the metrics they feed only when someone reads them.

Every part of the daemon reports through :class:`Hooks` (an event observed, commands sent,
a reconcile's duration, a probe's result). With ``metrics.listen`` unset nobody can read
metrics, so the hooks do nothing and prometheus_client is never imported (it costs the
process ~5 MB); with it set, ``daemon/instruments.py`` (``hooks_for``) gives the real
:class:`~announcer.daemon.metrics.Metrics`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from announcer.core.damping import Damper
from announcer.core.plan import AnnouncedTable
from announcer.core.policy import Decision, Policy
from announcer.core.world import World
from announcer.events import LifecycleEvent
from announcer.health.probes import Probe
from announcer.model import Prefix
from announcer.spec.checks import Key


class _Stats(Protocol):
    @property
    def reconciles(self) -> int: ...
    @property
    def resyncs(self) -> int: ...
    @property
    def overruns(self) -> int: ...
    @property
    def commands(self) -> int: ...
    @property
    def failures(self) -> int: ...
    @property
    def last_reconcile_seconds(self) -> float: ...
    @property
    def neighbors(self) -> Mapping[str, str]: ...


class _Health(Protocol):
    def state(self) -> Mapping[Key, bool | None]: ...


class _Channel(Protocol):
    @property
    def in_flight(self) -> int: ...


class Observable(Protocol):
    """The parts of the running ``Announcer`` the collector reads (read-only)."""

    @property
    def world(self) -> World: ...
    @property
    def decisions(self) -> Mapping[Prefix, Decision]: ...
    @property
    def table(self) -> AnnouncedTable: ...
    @property
    def stats(self) -> _Stats: ...
    @property
    def damper(self) -> Damper: ...
    @property
    def held_withdraws(self) -> int: ...
    @property
    def policy(self) -> Policy: ...
    @property
    def health(self) -> _Health: ...
    @property
    def channel(self) -> _Channel: ...


class Hooks:
    """Measurement hooks that measure nothing."""

    def events(self, source: str, count: int = 1) -> None:
        """``count`` observations from ``source`` were applied to the world."""

    def lifecycle(self, event: LifecycleEvent) -> None:
        """One observation from a lifecycle source."""

    def commands_sent(self, count: int) -> None:
        """A reconcile handed ``count`` commands to the channel."""

    def reconciled(self, seconds: float) -> None:
        """A reconcile took ``seconds``."""

    def timed_probe(self, probe: Probe) -> Probe:
        """``probe``, measured."""
        return probe

    def serve(self, announcer: Observable, loop: asyncio.AbstractEventLoop) -> None:
        """Start answering scrapes, if there is an endpoint."""

    def close(self) -> None:
        """Stop answering scrapes."""
