"""Marathon source: this host's Marathon tasks, followed through the REST API and its events.

Subscribe first, then list: ``GET /v2/events`` (SSE) is opened, then ``GET /v2/apps?embed=
apps.tasks`` is read in full, then events are followed. Events are cache invalidation (they
may come out of order): each relevant one makes the source re-read the app it names with
``GET /v2/apps/{id}?embed=app.tasks``, except that a task being killed (``TASK_KILLING``,
condition ``Killing``, or a terminal state) is reported as stopping at once, before the
re-read. A full re-list every ``relist_interval_seconds`` repairs anything missed. When the
API or the stream fails: ``SourceLost``, reconnect with backoff (capped at 30 s), list again.

Payloads are read by the pure :mod:`announcer.sources.marathon_api`; :class:`LocalTasks`
(pure too) remembers the tasks and turns readings into lifecycle events. See docs/marathon.md.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import httpx
from httpx_sse import EventSource, SSEError

from announcer.config import MarathonConfig
from announcer.events import (
    Instance,
    InstanceChanged,
    InstanceRemoved,
    InstanceState,
    SourceListed,
    SourceLost,
)
from announcer.model import quote
from announcer.sources.lifecycle import Clock, Emit
from announcer.sources.marathon_api import (
    EVENT_TYPES,
    SOURCE,
    STATE_RANK,
    AppTasks,
    Listing,
    MarathonEvent,
    PayloadError,
    decode,
    parse_app,
    parse_apps,
    parse_event,
    same_host,
    task_named,
)

log = logging.getLogger("announcer.sources.marathon")

Query = list[tuple[str, str | int | float | bool | None]]

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
# Notice a silently dead stream (leader gone without a FIN): probes after 15 s idle.
_KEEPALIVE = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    *(
        (socket.IPPROTO_TCP, getattr(socket, name), value)
        for name, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
        if hasattr(socket, name)
    ),
]


@dataclass(frozen=True, slots=True)
class Reaction:
    changes: tuple[InstanceChanged, ...] = ()  # emit now, before any re-read
    apps: tuple[str, ...] = ()  # then re-read these
    relist: bool = False  # or everything


class LocalTasks:
    """This host's tasks as last read, and the lifecycle events their readings mean."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self._tasks: dict[str, Instance] = {}
        self._app_of: dict[str, str] = {}

    def listed(self, listing: Listing) -> SourceListed:
        """A full listing replaces everything, except the last state of apps it could not read."""
        read = {app.app_id for app in listing.apps}
        bad = {problem.app_id for problem in listing.problems}
        old_tasks, old_apps = self._tasks, self._app_of
        self._tasks, self._app_of = {}, {}
        for app in listing.apps:
            self._store(app.app_id, app.instances, old_tasks)
        for task_id, instance in old_tasks.items():
            app_id = old_apps[task_id]
            if app_id in bad or (None in bad and app_id not in read):
                self._tasks[task_id], self._app_of[task_id] = instance, app_id
        return SourceListed(SOURCE, tuple(self._tasks.values()))

    def app_read(self, app: AppTasks) -> list[InstanceChanged | InstanceRemoved]:
        """One app re-read (no tasks: it is gone); only what changed is reported."""
        changes: list[InstanceChanged | InstanceRemoved] = []
        now_ids = {instance.id for instance in app.instances}
        for task_id in [t for t, a in self._app_of.items() if a == app.app_id]:
            if task_id not in now_ids:
                del self._tasks[task_id], self._app_of[task_id]
                changes.append(InstanceRemoved(SOURCE, task_id))
        old = dict(self._tasks)
        for instance in self._store(app.app_id, app.instances, old):
            if old.get(instance.id) != instance:
                changes.append(InstanceChanged(instance))
        return changes

    def on_event(self, event: MarathonEvent, now: float) -> Reaction:
        ours = event.task is not None and any(task_named(t, event.task) for t in self._tasks)
        if event.health:
            wanted = ours
        else:
            wanted = ours or event.host is None or same_host(event.host, self.agent)
        changes: list[InstanceChanged] = []
        if event.stop is not None and event.task is not None:
            changes = self._stop(event.task, event.stop, now)
        return Reaction(tuple(changes), event.apps if wanted else (), event.relist)

    def _stop(self, name: str, state: InstanceState, now: float) -> list[InstanceChanged]:
        changes = []
        for task_id, instance in list(self._tasks.items()):
            if task_named(task_id, name) and STATE_RANK[state] > STATE_RANK[instance.state]:
                self._tasks[task_id] = replace(instance, state=state, since=now)
                changes.append(InstanceChanged(self._tasks[task_id]))
        return changes

    def _store(
        self, app_id: str, instances: Iterable[Instance], old: Mapping[str, Instance]
    ) -> list[Instance]:
        stored = []
        for instance in instances:
            settled = _settle(old.get(instance.id), instance)
            self._tasks[instance.id], self._app_of[instance.id] = settled, app_id
            stored.append(settled)
        return stored


def _settle(old: Instance | None, new: Instance) -> Instance:
    """Keep ``since`` while the state lasts; never move a stopping task back."""
    if old is None:
        return new
    if (
        STATE_RANK[old.state] >= STATE_RANK[InstanceState.STOPPING]
        and STATE_RANK[new.state] < STATE_RANK[old.state]
    ):
        return replace(new, state=old.state, since=old.since)
    return replace(new, since=old.since) if new.state is old.state else new


class MarathonError(Exception):
    """Marathon answered, but not with what was asked (an HTTP error status)."""


class AppNotFound(MarathonError):
    """404 for an app: it was deleted."""


class StreamEnded(Exception):
    """The event stream closed or broke."""


class MarathonSource:
    """Reports this agent's Marathon tasks as instances (see the module docstring).

    ``transport`` replaces the HTTP transport (tests); ``label_selector`` is passed as
    ``GET /v2/apps?label=...`` to list only matching apps (e.g. ``anycast.ips``).
    """

    name = SOURCE

    def __init__(
        self,
        config: MarathonConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        label_selector: str | None = None,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.config = config
        self.agent = config.agent or socket.gethostname()
        self.label_selector = label_selector
        self._transport = transport
        self._backoff = (backoff_initial, backoff_max)
        self._tasks = LocalTasks(self.agent)
        self._synced = False

    async def run(self, emit: Emit, clock: Clock) -> None:
        if not self.config.agent:
            log.warning("marathon_agent_defaulted agent=%s", quote(self.agent))
        log.info("marathon_starting url=%s agent=%s", _public_url(self.config.url), self.agent)
        initial, cap = self._backoff
        delay = initial
        while True:
            self._synced = False
            try:
                await self._session(emit, clock)
                reason = "event stream ended"
            except (httpx.HTTPError, SSEError, MarathonError, PayloadError, StreamEnded) as exc:
                reason = _describe(exc)
            except (OSError, ssl.SSLError) as exc:  # the CA file, the socket options
                reason = f"cannot set up the client: {_describe(exc)}"
            if self._synced:
                delay = initial
            emit(SourceLost(SOURCE, clock(), reason))
            log.warning("marathon_lost reason=%s retry_in=%.1fs", quote(reason, 300), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)

    async def _session(self, emit: Emit, clock: Clock) -> None:
        """One connection: subscribe, list, follow events until something breaks."""
        params: Query = [("event_type", kind) for kind in EVENT_TYPES]
        params.append(("plan-format", "light"))
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        timeout = httpx.Timeout(self.config.timeout_seconds, read=None)
        async with (
            self._client() as client,
            client.stream(
                "GET", "/v2/events", params=params, headers=headers, timeout=timeout
            ) as response,
        ):
            await _check(response, "/v2/events")
            events: asyncio.Queue[MarathonEvent | StreamEnded] = asyncio.Queue()
            reader = asyncio.create_task(_read_stream(response, events))
            try:
                await self._relist(client, emit, clock)
                self._synced = True
                await self._follow(client, events, emit, clock)
            finally:
                reader.cancel()
                await asyncio.wait([reader])

    async def _follow(
        self,
        client: httpx.AsyncClient,
        events: asyncio.Queue[MarathonEvent | StreamEnded],
        emit: Emit,
        clock: Clock,
    ) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.relist_interval_seconds
        next_relist = loop.time() + interval
        while True:
            try:
                first = await asyncio.wait_for(events.get(), max(0.0, next_relist - loop.time()))
            except TimeoutError:
                await self._relist(client, emit, clock)
                next_relist = loop.time() + interval
                continue
            batch = [first]
            while not events.empty():
                batch.append(events.get_nowait())
            apps, relist, ended = self._react(batch, emit, clock)
            if ended is not None:
                raise ended  # the re-list after reconnecting reads everything anyway
            if relist:
                await self._relist(client, emit, clock)
                next_relist = loop.time() + interval
            else:
                failed = [app for app in apps if not await self._reread(client, app, emit, clock)]
                if failed:  # kept their last state; a re-list soon reads them again
                    next_relist = min(
                        next_relist, loop.time() + min(interval, 10 * self._backoff[0])
                    )

    def _react(
        self, batch: list[MarathonEvent | StreamEnded], emit: Emit, clock: Clock
    ) -> tuple[list[str], bool, StreamEnded | None]:
        """Stop what the events stop, now; say what to re-read (coalesced)."""
        apps: dict[str, None] = {}
        relist = False
        for item in batch:
            if isinstance(item, StreamEnded):
                return list(apps), relist, item
            reaction = self._tasks.on_event(item, clock())
            for change in reaction.changes:
                log.info(
                    "marathon_task_stopping task=%s state=%s event=%s",
                    change.instance.id, change.instance.state, item.type,
                )  # fmt: skip
                emit(change)
            apps.update(dict.fromkeys(reaction.apps))
            relist = relist or reaction.relist
        return list(apps), relist, None

    async def _relist(self, client: httpx.AsyncClient, emit: Emit, clock: Clock) -> None:
        params: Query = [("embed", "apps.tasks")]
        if self.label_selector:
            params.append(("label", self.label_selector))
        listing = parse_apps(await _get_json(client, "/v2/apps", params), self.agent, clock())
        for problem in listing.problems:
            log.warning(
                "marathon_app_skipped app=%s reason=%s action=kept_last_state",
                problem.app_id or "?", problem.reason,
            )  # fmt: skip
        listed = self._tasks.listed(listing)
        log.debug(
            "marathon_listed apps=%d local_tasks=%d", len(listing.apps), len(listed.instances)
        )
        emit(listed)

    async def _reread(
        self, client: httpx.AsyncClient, app_id: str, emit: Emit, clock: Clock
    ) -> bool:
        """Re-read one app; on a bad answer keep what is known (and say so)."""
        try:
            payload = await _get_json(client, "/v2/apps" + app_id, [("embed", "app.tasks")])
            app = parse_app(payload, self.agent, clock())
        except AppNotFound:
            app = AppTasks(app_id, ())
        except (MarathonError, PayloadError) as exc:
            log.warning(
                "marathon_app_reread_failed app=%s reason=%s action=kept_last_state",
                app_id, exc,
            )  # fmt: skip
            return False
        for change in self._tasks.app_read(app):
            emit(change)
        return True

    def _client(self) -> httpx.AsyncClient:
        """A client with the configured auth and TLS; never logs the secrets."""
        config = self.config
        headers = {"Accept": "application/json", "User-Agent": "anycast-announcer"}
        auth: httpx.Auth | None = None
        if config.token:
            headers["Authorization"] = f"token={config.token}"  # DC/OS service/user token
        elif config.username is not None:
            auth = httpx.BasicAuth(config.username, config.password or "")
        transport = self._transport or httpx.AsyncHTTPTransport(
            verify=_tls(config), socket_options=_KEEPALIVE
        )
        return httpx.AsyncClient(
            base_url=config.url,
            headers=headers,
            auth=auth,
            transport=transport,
            timeout=config.timeout_seconds,
            follow_redirects=True,
        )


async def _read_stream(
    response: httpx.Response, events: asyncio.Queue[MarathonEvent | StreamEnded]
) -> None:
    """Queue the stream's relevant events; a half frame at the end is never delivered."""
    try:
        async for frame in EventSource(response).aiter_sse():
            try:
                event = parse_event(frame.event, frame.data)
            except PayloadError as exc:
                log.warning("marathon_event_unreadable reason=%s action=ignored", exc)
                continue
            if event is not None:
                events.put_nowait(event)
        events.put_nowait(StreamEnded("event stream closed by Marathon"))
    except (httpx.HTTPError, SSEError) as exc:
        events.put_nowait(StreamEnded(f"event stream broke: {_describe(exc)}"))
    except Exception as exc:  # never leave the follower waiting on a dead reader
        log.exception("marathon_stream_reader_failed")
        events.put_nowait(StreamEnded(f"event stream reader failed: {_describe(exc)}"))


async def _check(response: httpx.Response, path: str) -> None:
    if response.status_code == 404:
        raise AppNotFound(f"GET {path}: HTTP 404")
    if response.status_code != 200:
        body = (await response.aread()).decode("utf-8", "replace")
        raise MarathonError(f"GET {path}: HTTP {response.status_code} {quote(body, 120)}")


async def _get_json(client: httpx.AsyncClient, path: str, params: Query) -> object:
    response = await client.get(path, params=params)
    await _check(response, path)
    try:
        return decode(response.content)
    except PayloadError as exc:
        raise PayloadError(f"GET {path}: {exc}") from None


def _tls(config: MarathonConfig) -> ssl.SSLContext | bool:
    if not config.verify_tls:
        log.warning("marathon_tls_unverified url=%s", _public_url(config.url))
        return False
    if config.ca_file:
        return ssl.create_default_context(cafile=config.ca_file)
    return True


def _public_url(url: str) -> str:
    """The URL without any user:password@ part, for logs."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None))


def _describe(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return (
        text
        if isinstance(exc, MarathonError | PayloadError | StreamEnded)
        else (f"{exc.__class__.__name__}: {text}")
    )
