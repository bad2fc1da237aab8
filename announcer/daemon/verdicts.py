"""Health verdicts to the host's own multipath (docs/adr/0004-shared-anycast-ip-multipath.md).

When several local instances share an anycast IP, the routed plugin routes it over a
nexthop group of their veths. The fabric's view (the announced weight) follows their
health through the core; the host's own group must too, or the leaf keeps hashing flows
to an instance that fails its check. The core names the devices
(:func:`~announcer.core.instances.unhealthy_members`); this publishes them with the
plugin's :func:`~announcer.cni.shared_routes.set_unhealthy`, in a thread (it reads and
may change kernel state under the plugin's lock), one call at a time, the latest set
winning. A failure is logged with the plugin's message and retried; it never touches
what is announced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from announcer.config import RoutedConfig

log = logging.getLogger("announcer")

RETRY_SECONDS = 10.0  # after a failed publication (the lock busy, a permission missing)
# Until this long after the start, an instance whose check has not reported yet stays in
# its group: at a restart every check is pending at once, and taking them all out and back
# would move flows for nothing. Later, a pending check (a new instance) keeps it out.
STARTUP_GRACE_SECONDS = 10.0

Publish = Callable[[Collection[str]], object]


def plugin_publisher(config: RoutedConfig) -> Publish | None:
    """set_unhealthy bound to the plugin's settings; None when verdicts are off."""
    if not config.health_verdicts:
        return None
    from announcer.cni.scheme import WiringConfig
    from announcer.cni.shared_routes import set_unhealthy

    given = {"lock_file": config.lock_file, "table": config.table,
             "route_protocol": config.route_protocol}  # fmt: skip
    wiring = WiringConfig(**{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]

    def publish(names: Collection[str]) -> object:
        return set_unhealthy(names, wiring)

    return publish


class Verdicts:
    """The last set published, the set wanted, one publication in flight at most."""

    def __init__(
        self,
        publish: Publish | None,
        started: float = 0.0,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._publish = publish
        self._grace_end = started + STARTUP_GRACE_SECONDS
        self._retry_seconds = retry_seconds
        self._wanted: frozenset[str] = frozenset()
        self._published: frozenset[str] | None = None  # None: not yet (a file may be stale)
        self._in_flight: frozenset[str] = frozenset()  # being published now
        self._task: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._last_error = ""

    @property
    def published(self) -> frozenset[str] | None:
        return self._published

    @property
    def parked(self) -> frozenset[str]:
        """Devices the plugin has taken (or is taking) out of their groups for health: the
        routes no longer show them, yet they still hold their IPs (unhealthy_members)."""
        return (self._published or frozenset()) | self._in_flight

    @property
    def enabled(self) -> bool:
        return self._publish is not None

    def wanted(self, shared: Collection[int]) -> bool:
        """Whether to look for unhealthy members: on, and some route is shared or a set
        was published (to clear it). A host without shared IPs makes no call at all."""
        return self._publish is not None and bool(shared or self._published)

    def grace_ends(self, now: float) -> float | None:
        """When pending checks start to count as not serving, while that is ahead."""
        return self._grace_end if self._publish is not None and now < self._grace_end else None

    def report(self) -> dict[str, object]:
        """For ``announcer status``: what is wanted, what was published, the last error."""
        published = None if self._published is None else sorted(self._published)
        return {"unhealthy": sorted(self._wanted), "published": published,
                "error": self._last_error or None}  # fmt: skip

    def update(self, names: frozenset[str]) -> None:
        """The unhealthy members now; publishes if they differ from what was published."""
        self._wanted = names
        if self._publish is None or self._task is not None or self._retry is not None:
            return  # off, or the running publication / the retry picks the latest set up
        if names == self._published:
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self._publish is not None
        names = self._wanted
        self._in_flight = names
        try:
            changed = await asyncio.to_thread(self._publish, names)
        except Exception as exc:  # the plugin's WiringError, or anything else: never fatal
            self._failed(names, exc)
        else:
            self._published = names
            if self._last_error:
                log.info("shared_verdicts_recovered")
                self._last_error = ""
            log.info(
                "shared_verdicts_published unhealthy=%s changed=%s",
                ",".join(sorted(names)) or "-",
                ",".join(str(ip) for ip in changed) if isinstance(changed, list) else "-",
            )
        finally:
            self._task = None
            self._in_flight = frozenset()
        if self._retry is None:
            self.update(self._wanted)  # what changed meanwhile

    def _failed(self, names: frozenset[str], exc: Exception) -> None:
        message = str(exc) or type(exc).__name__
        if message != self._last_error:
            log.error(
                "shared_verdicts_failed unhealthy=%s error=%s retry_seconds=%s",
                ",".join(sorted(names)) or "-", message, self._retry_seconds,
            )  # fmt: skip
            self._last_error = message
        self._retry = asyncio.get_running_loop().call_later(self._retry_seconds, self._retried)

    def _retried(self) -> None:
        self._retry = None
        self._published = None  # the failed call may have got half way: publish again
        self.update(self._wanted)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._task is not None:
            self._task.cancel()
