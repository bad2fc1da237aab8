"""Docker source: container lifecycle from the Docker Engine API (the official SDK).

Subscribe to events first, then list, so nothing falls between the two; after a
reconnect, resume the stream from the last event seen (``since``) and list again; re-list
periodically as a safety net. The SDK blocks, so its calls run in threads.

Withdraw before stop: a ``kill`` event carrying the container's stop signal (SIGTERM,
SIGKILL, or its own StopSignal) makes the container STOPPING at once, before it exits;
Docker does not order kill/die/stop, so the first of them wins. A container stays
STOPPING across re-lists (it still shows as running during its grace period) until it
dies or starts again.

``parse_*`` functions are pure and tested on recorded payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator, Mapping
from ipaddress import ip_address
from typing import Any

import docker
from docker.errors import DockerException, NotFound

from announcer.config import DockerConfig
from announcer.events import (
    Instance,
    InstanceChanged,
    InstanceRemoved,
    InstanceState,
    SourceListed,
    SourceLost,
)
from announcer.model import IPAddress, quote
from announcer.sources.lifecycle import Clock, Emit, make_instance

log = logging.getLogger("announcer.sources.docker")

NAME = "docker"
BACKOFF_MAX_SECONDS = 30.0
STOP_ACTIONS = frozenset({"die", "stop"})
INSPECT_ACTIONS = frozenset(
    {"create", "start", "restart", "unpause", "update", "rename", "connect", "disconnect"}
)
_END = object()


def signal_number(text: str) -> int | None:
    """'15', 'SIGTERM', 'TERM' -> 15; None when not a signal."""
    text = text.strip().upper()
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else f"SIG{text}"
    member = getattr(signal.Signals, name, None)
    return int(member) if member is not None else None


def stop_signals(inspect: Mapping[str, Any]) -> frozenset[int]:
    """Signals that mean "this container is being stopped" (not e.g. a SIGHUP reload)."""
    own = signal_number(str((inspect.get("Config") or {}).get("StopSignal") or ""))
    found = {int(signal.SIGTERM), int(signal.SIGKILL)}
    if own is not None:
        found.add(own)
    return frozenset(found)


def container_ips(inspect: Mapping[str, Any]) -> list[IPAddress]:
    networks = (inspect.get("NetworkSettings") or {}).get("Networks") or {}
    found: list[IPAddress] = []
    for settings in networks.values():
        for key in ("IPAddress", "GlobalIPv6Address"):
            text = (settings or {}).get(key) or ""
            if isinstance(text, str):  # ip_address(5) would be 0.0.0.5
                with contextlib.suppress(ValueError):
                    found.append(ip_address(text))
    return found


def container_state(inspect: Mapping[str, Any]) -> InstanceState:
    state = inspect.get("State") or {}
    if state.get("Paused"):
        return InstanceState.UNHEALTHY
    if state.get("Restarting"):
        return InstanceState.STARTING
    if not state.get("Running"):
        return InstanceState.STOPPED
    health = (state.get("Health") or {}).get("Status")
    if health == "unhealthy":
        return InstanceState.UNHEALTHY
    if health == "starting":
        return InstanceState.STARTING
    return InstanceState.SERVING


class PayloadError(ValueError):
    """An inspect payload of a shape we cannot use; the container is skipped, not the rest."""


def parse_container(inspect: Mapping[str, Any], since: float) -> Instance:
    """A container's inspect payload -> an instance (labels parsed, errors kept).

    Raises :class:`PayloadError` for a payload of the wrong shape.
    """
    try:
        cid, labels = _identity(inspect)
        name = str(inspect.get("Name") or cid[:12]).lstrip("/")
        return make_instance(
            NAME,
            cid,
            name,
            container_state(inspect),
            since,
            container_ips(inspect),
            {str(k): str(v) for k, v in labels.items()},
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise PayloadError(f"unusable container payload: {quote(str(exc), 120)}") from None


def _identity(inspect: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    cid = inspect["Id"]
    labels = (inspect.get("Config") or {}).get("Labels") or {}
    if not isinstance(cid, str) or not cid or not isinstance(labels, dict):
        raise TypeError("Id must be a non-empty string and Config.Labels a mapping")
    return cid, labels


class DockerSource:
    name = NAME

    def __init__(self, config: DockerConfig) -> None:
        self.config = config
        self._instances: dict[str, Instance] = {}
        self._signals: dict[str, frozenset[int]] = {}
        self._stopping: dict[str, float] = {}  # stop signal seen, not yet dead
        self._since: int | None = None  # last event time (s), to resume the stream
        self._listed = False

    async def run(self, emit: Emit, clock: Clock) -> None:
        backoff = 1.0
        while True:
            client: docker.DockerClient | None = None
            try:
                client = docker.DockerClient(
                    base_url=self.config.url, timeout=int(self.config.timeout_seconds)
                )
                await self._session(client, emit, clock)
            except (DockerException, OSError, ConnectionError) as exc:
                emit(SourceLost(NAME, clock(), str(exc)))
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            if self._listed:  # the last session worked: retry quickly
                backoff, self._listed = 1.0, False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    async def _session(self, client: docker.DockerClient, emit: Emit, clock: Clock) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stream = await asyncio.to_thread(
            client.events, decode=True, filters={"type": ["container"]}, since=self._since
        )
        threading.Thread(target=_pump, args=(stream, loop, queue), daemon=True).start()
        try:
            await self._relist(client, emit, clock)
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self.config.relist_interval_seconds)
                except TimeoutError:
                    await self._relist(client, emit, clock)
                    continue
                if item is _END or isinstance(item, BaseException):
                    why = "end of stream" if item is _END else str(item)
                    raise ConnectionError(f"docker event stream ended: {why}")
                await self._on_event(client, item, emit, clock)
        finally:
            with contextlib.suppress(Exception):
                stream.close()

    async def _relist(self, client: docker.DockerClient, emit: Emit, clock: Clock) -> None:
        payloads = await asyncio.to_thread(_inspect_all, client)
        now = clock()
        instances: dict[str, Instance] = {}
        for payload in payloads:
            try:
                parsed = parse_container(payload, now)
            except PayloadError as exc:
                log.error("docker_payload_invalid error=%s", exc)
                continue
            instance = self._with_stopping(parsed)
            self._signals[instance.id] = stop_signals(payload)
            instances[instance.id] = self._keep_since(instance)
        self._instances = instances
        self._stopping = {k: v for k, v in self._stopping.items() if k in instances}
        self._listed = True
        emit(SourceListed(NAME, tuple(instances.values())))

    async def _on_event(
        self, client: docker.DockerClient, event: Mapping[str, Any], emit: Emit, clock: Clock
    ) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        actor = event.get("Actor") or {}
        cid = str(actor.get("ID") or event.get("id") or "")
        if not cid:
            return
        self._since = int(event.get("time") or 0) or self._since
        now = clock()
        if action == "kill":
            number = signal_number(str((actor.get("Attributes") or {}).get("signal", "")))
            if number is not None and number in self._signals.get(cid, stop_signals({})):
                self._stopping.setdefault(cid, now)
                self._set(cid, InstanceState.STOPPING, now, emit)
        elif action in STOP_ACTIONS:
            self._stopping.pop(cid, None)
            self._set(cid, InstanceState.STOPPED, now, emit)
        elif action == "destroy":
            self._stopping.pop(cid, None)
            self._instances.pop(cid, None)
            emit(InstanceRemoved(NAME, cid))
        elif action == "pause":
            self._set(cid, InstanceState.UNHEALTHY, now, emit)
        elif action in INSPECT_ACTIONS or action.startswith("health_status"):
            if action in ("start", "restart"):
                self._stopping.pop(cid, None)
            await self._inspect(client, cid, emit, clock)

    def _set(self, cid: str, state: InstanceState, now: float, emit: Emit) -> None:
        current = self._instances.get(cid)
        if current is None or current.state is state:
            return
        changed = Instance(
            current.source, current.id, current.name, state, now,
            current.ips, current.spec, current.error,
        )  # fmt: skip
        self._instances[cid] = changed
        emit(InstanceChanged(changed))

    async def _inspect(
        self, client: docker.DockerClient, cid: str, emit: Emit, clock: Clock
    ) -> None:
        try:
            payload = await asyncio.to_thread(lambda: client.api.inspect_container(cid))
        except NotFound:
            self._instances.pop(cid, None)
            emit(InstanceRemoved(NAME, cid))
            return
        try:
            parsed = parse_container(payload, clock())
        except PayloadError as exc:
            log.error("docker_payload_invalid container=%s error=%s", quote(cid, 80), exc)
            return
        instance = self._keep_since(self._with_stopping(parsed))
        self._signals[cid] = stop_signals(payload)
        if instance.error and instance != self._instances.get(cid):
            log.error(
                "docker_label_invalid container=%s error=%s",
                instance.name,
                quote(instance.error, 300),
            )
        self._instances[cid] = instance
        emit(InstanceChanged(instance))

    def _with_stopping(self, instance: Instance) -> Instance:
        since = self._stopping.get(instance.id)
        if since is None or instance.state is InstanceState.STOPPED:
            return instance
        return Instance(
            instance.source, instance.id, instance.name, InstanceState.STOPPING, since,
            instance.ips, instance.spec, instance.error,
        )  # fmt: skip

    def _keep_since(self, instance: Instance) -> Instance:
        """An unchanged state keeps its original ``since`` (drain deadlines don't move)."""
        current = self._instances.get(instance.id)
        if current is None or current.state is not instance.state:
            return instance
        return Instance(
            instance.source, instance.id, instance.name, instance.state, current.since,
            instance.ips, instance.spec, instance.error,
        )  # fmt: skip


def _inspect_all(client: docker.DockerClient) -> list[dict[str, Any]]:
    payloads = []
    for summary in client.api.containers(all=True):
        with contextlib.suppress(NotFound):  # removed between list and inspect
            payloads.append(client.api.inspect_container(summary["Id"]))
    return payloads


def _pump(
    stream: Iterator[Any], loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]
) -> None:
    """Thread: move decoded events from the SDK's blocking stream into the loop's queue."""
    try:
        for event in stream:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        item: object = _END
    except Exception as exc:  # the stream broke: the session reconnects
        item = exc
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(queue.put_nowait, item)
