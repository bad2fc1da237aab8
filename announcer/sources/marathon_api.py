"""Marathon's REST and event payloads, read into lifecycle observations. Pure: no I/O.

``parse_apps`` reads ``GET /v2/apps?embed=apps.tasks``, ``parse_app`` reads
``GET /v2/apps/{id}?embed=app.tasks``, ``parse_event`` reads one frame of ``GET /v2/events``.
Only tasks whose ``host`` is this agent become instances. A malformed app is reported as a
:class:`Problem` naming the app and what was wrong; the other apps are read as usual.

What the source remembers of this host's tasks, and what it emits, is
:class:`announcer.sources.marathon.LocalTasks` (which lives with the source).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address, ip_address

from announcer.events import Instance, InstanceState
from announcer.model import IPAddress, quote
from announcer.sources.lifecycle import make_instance

SOURCE = "marathon"
EVENT_TYPES = (
    "status_update_event",
    "instance_changed_event",
    "instance_health_changed_event",
    "health_status_changed_event",
    "api_post_event",
    "app_terminated_event",
    "deployment_info",
    "deployment_success",
    "deployment_failed",
    "deployment_step_success",
    "deployment_step_failure",
)
# Absolute, canonical app ids only: they are put into request paths.
_APP_ID = re.compile(r"(/[a-z0-9][a-z0-9.\-]{0,254})+")
_TASK_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,512}")

TASK_STATES: dict[str, InstanceState] = {
    "TASK_STAGING": InstanceState.STARTING,
    "TASK_STARTING": InstanceState.STARTING,
    "TASK_RUNNING": InstanceState.SERVING,  # refined by health checks
    "TASK_KILLING": InstanceState.STOPPING,
    "TASK_UNREACHABLE": InstanceState.UNHEALTHY,  # Marathon cannot vouch for it
    "TASK_UNKNOWN": InstanceState.UNHEALTHY,
    **dict.fromkeys(
        ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR",
         "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR"),
        InstanceState.STOPPED,
    ),
}  # fmt: skip
# instance_changed_event conditions that mean "stop sending traffic now".
CONDITION_STOPS: dict[str, InstanceState] = {
    "Killing": InstanceState.STOPPING,
    **dict.fromkeys(
        ("Killed", "Failed", "Finished", "Error", "Gone", "Dropped"), InstanceState.STOPPED
    ),
}
# A task only moves forward: a late reading never brings a stopping task back.
STATE_RANK = {
    InstanceState.STARTING: 0,
    InstanceState.SERVING: 1,
    InstanceState.UNHEALTHY: 1,
    InstanceState.STOPPING: 2,
    InstanceState.STOPPED: 3,
}


class PayloadError(ValueError):
    """A payload that cannot be read; the message says what was wrong, values quoted."""


@dataclass(frozen=True, slots=True)
class Problem:
    app_id: str | None  # None: not even the app's id could be read
    reason: str


@dataclass(frozen=True, slots=True)
class AppTasks:
    """One app as read: its id and the instances of its tasks on this agent."""

    app_id: str
    instances: tuple[Instance, ...]


@dataclass(frozen=True, slots=True)
class Listing:
    apps: tuple[AppTasks, ...]
    problems: tuple[Problem, ...] = ()

    @property
    def instances(self) -> list[Instance]:
        return [instance for app in self.apps for instance in app.instances]


@dataclass(frozen=True, slots=True)
class MarathonEvent:
    """What one event says: apps to re-read and, when it says so alone, a task to stop now."""

    type: str
    apps: tuple[str, ...] = ()
    relist: bool = False  # re-read everything (the event does not say which apps)
    host: str | None = None
    task: str | None = None  # a task id, or an instance id (prefix of its tasks' ids)
    stop: InstanceState | None = None  # STOPPING / STOPPED, for the task above
    health: bool = False  # a health change: re-read only if the task is one of ours


def decode(body: bytes | str) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        raise PayloadError(f"not JSON ({exc.__class__.__name__}): {quote(text)}") from None


def same_host(host: str, agent: str) -> bool:
    """Whether a task's ``host`` is this agent: ``agent`` is one name or several, comma-separated
    (hostname, FQDN, IP: however Mesos registered the agent), compared case-insensitively."""
    names = {name.strip().rstrip(".").casefold() for name in agent.split(",")}
    return host.strip().rstrip(".").casefold() in names - {""}


def parse_apps(payload: object, agent: str, now: float) -> Listing:
    """The local tasks of every app of a ``/v2/apps`` listing; bad apps become problems."""
    if not isinstance(payload, dict) or not isinstance(payload.get("apps"), list):
        raise PayloadError(f"expected an object with an 'apps' list, got {_shape(payload)}")
    apps: list[AppTasks] = []
    problems: list[Problem] = []
    for item in payload["apps"]:
        try:
            apps.append(_app(item, agent, now))
        except PayloadError as exc:
            problems.append(Problem(_app_id_or_none(item), str(exc)))
    return Listing(tuple(apps), tuple(problems))


def parse_app(payload: object, agent: str, now: float) -> AppTasks:
    """The local tasks of the app of a ``/v2/apps/{id}`` reply."""
    if not isinstance(payload, dict) or "app" not in payload:
        raise PayloadError(f"expected an object with an 'app', got {_shape(payload)}")
    return _app(payload["app"], agent, now)


def _app(item: object, agent: str, now: float) -> AppTasks:
    if not isinstance(item, dict):
        raise PayloadError(f"app is {_shape(item)}, not an object")
    app_id = _app_id(item.get("id"), "app id")
    tasks, labels = item.get("tasks"), item.get("labels", {})
    if not isinstance(tasks, list):
        raise PayloadError(f"app {app_id}: 'tasks' is {_shape(tasks)}, not a list (embedded?)")
    if labels is None:
        labels = {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise PayloadError(f"app {app_id}: 'labels' must map strings to strings")
    checks = item.get("healthChecks")
    health_checked = isinstance(checks, list) and len(checks) > 0
    container_ips = _container_networked(item)
    instances = []
    for task in tasks:
        if not isinstance(task, dict):
            raise PayloadError(f"app {app_id}: a task is {_shape(task)}, not an object")
        host = _text(task.get("host"), f"app {app_id}: task host")
        if not same_host(host, agent):
            continue
        instances.append(_instance(app_id, task, labels, health_checked, container_ips, now))
    return AppTasks(app_id, tuple(instances))


def _instance(
    app_id: str,
    task: Mapping[str, object],
    labels: Mapping[str, str],
    health_checked: bool,
    container_ips: bool,
    now: float,
) -> Instance:
    task_id = _task_id(task.get("id"), f"app {app_id}: task id")
    state = task_state(task, health_checked)
    ips = _ips(task.get("ipAddresses"), f"task {task_id}") if container_ips else []
    name = f"{app_id}:{short_task_id(task_id)}"
    return make_instance(SOURCE, task_id, name, state, now, ips, labels)


def task_state(task: Mapping[str, object], health_checked: bool) -> InstanceState:
    """A task's state; a running task of a health-checked app serves once all checks pass."""
    raw = task.get("state")
    state = TASK_STATES.get(raw, InstanceState.STARTING) if isinstance(raw, str) else None
    if state is None:
        raise PayloadError(f"task state is {_shape(raw)}, not a string")
    if state is not InstanceState.SERVING or not health_checked:
        return state
    results = task.get("healthCheckResults")
    if not isinstance(results, list) or not results:
        return InstanceState.STARTING  # no result yet (grace period)
    alive = [isinstance(r, dict) and r.get("alive") is True for r in results]
    return InstanceState.SERVING if all(alive) else InstanceState.UNHEALTHY


def short_task_id(task_id: str) -> str:
    """``svc.instance-7f1c2e4a-...._app.1`` or ``svc.7f1c2e4a-...`` → ``7f1c2e4a``."""
    if ".instance-" in task_id:
        return task_id.rsplit(".instance-", 1)[1][:8]
    return task_id.rsplit(".", 1)[-1][:8]


def parse_event(event: str, data: str) -> MarathonEvent | None:
    """One SSE frame (its ``event:`` name and ``data:`` text); None for a type we ignore."""
    if event not in EVENT_TYPES and event != "message":
        return None
    payload = decode(data)
    if not isinstance(payload, dict):
        raise PayloadError(f"{event}: data is {_shape(payload)}, not an object")
    kind = payload.get("eventType") if event == "message" else event
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        return None
    try:
        return _event(kind, payload)
    except PayloadError as exc:
        raise PayloadError(f"{kind}: {exc}") from None


def _event(kind: str, p: Mapping[str, object]) -> MarathonEvent:
    raw_host = p.get("host")
    host = raw_host if isinstance(raw_host, str) else None
    stop: InstanceState | None
    if kind == "status_update_event":
        state = TASK_STATES.get(_text(p.get("taskStatus"), "taskStatus"))
        stop = state if state in (InstanceState.STOPPING, InstanceState.STOPPED) else None
        task = _task_id(p.get("taskId"), "taskId")
        return MarathonEvent(kind, (_app_id(p.get("appId"), "appId"),), False, host, task, stop)
    if kind == "instance_changed_event":
        stop = CONDITION_STOPS.get(_text(p.get("condition"), "condition"))
        task = _task_id(p.get("instanceId"), "instanceId")
        app = _app_id(p.get("runSpecId"), "runSpecId")
        return MarathonEvent(kind, (app,), False, host, task, stop)
    if kind in ("instance_health_changed_event", "health_status_changed_event"):
        app = _app_id(p.get("runSpecId", p.get("appId")), "runSpecId/appId")
        task = _task_id(p.get("instanceId", p.get("taskId")), "instanceId")
        return MarathonEvent(kind, (app,), task=task, health=True)
    if kind == "app_terminated_event":
        return MarathonEvent(kind, (_app_id(p.get("appId"), "appId"),))
    if kind == "api_post_event":
        definition = p.get("appDefinition")
        app_id = definition.get("id") if isinstance(definition, dict) else None
        if isinstance(app_id, str) and _APP_ID.fullmatch(app_id):
            return MarathonEvent(kind, (app_id,))
        return MarathonEvent(kind, relist=True)  # a group or bulk change: read everything
    apps = _plan_apps(p)
    return MarathonEvent(kind, apps, relist=not apps)


def _plan_apps(payload: Mapping[str, object]) -> tuple[str, ...]:
    """App ids a deployment event names (light or full plan format)."""
    plan, current = payload.get("plan"), payload.get("currentStep")
    steps = plan.get("steps") if isinstance(plan, dict) else None
    found: list[object] = []
    for step in [*(steps if isinstance(steps, list) else []), current]:
        if not isinstance(step, dict):
            continue
        actions = step.get("actions")
        for action in actions if isinstance(actions, list) else [step]:
            if isinstance(action, dict):
                found.append(action.get("app"))
    ids = (app for app in found if isinstance(app, str) and _APP_ID.fullmatch(app))
    return tuple(dict.fromkeys(ids))


def task_named(task_id: str, name: str) -> bool:
    """Whether an event's task or instance id names this task (instance ids prefix tasks')."""
    return task_id == name or task_id.startswith(name + ".")


def _container_networked(app: Mapping[str, object]) -> bool:
    """True when the tasks have their own IPs (``container`` networking): then they count."""
    networks = app.get("networks")
    if isinstance(networks, list) and networks:
        return any(isinstance(n, dict) and n.get("mode") == "container" for n in networks)
    if isinstance(app.get("ipAddress"), dict):  # legacy (<= 1.4) IP-per-task
        return True
    container = app.get("container")
    docker = container.get("docker") if isinstance(container, dict) else None
    return isinstance(docker, dict) and docker.get("network") == "USER"


def _ips(value: object, what: str) -> list[IPAddress]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"{what}: 'ipAddresses' is {_shape(value)}, not a list")
    ips: list[IPAddress] = []
    for entry in value:
        text = entry.get("ipAddress") if isinstance(entry, dict) else None
        if not isinstance(text, str):
            raise PayloadError(f"{what}: an ipAddresses entry is {_shape(entry)}")
        try:
            address = ip_address(text)
        except ValueError:
            raise PayloadError(f"{what}: {quote(text)} is not an IP address") from None
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            raise PayloadError(f"{what}: {text} is an IPv4-mapped IPv6 address")
        ips.append(address)
    return ips


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise PayloadError(f"{what} is {_shape(value)}, not a non-empty string")
    return value


def _app_id(value: object, what: str) -> str:
    text = _text(value, what)
    if not _APP_ID.fullmatch(text):
        raise PayloadError(f"{what} {quote(text)} is not an absolute Marathon app id")
    return text


def _task_id(value: object, what: str) -> str:
    text = _text(value, what)
    if not _TASK_ID.fullmatch(text):
        raise PayloadError(f"{what} {quote(text)} has characters outside [A-Za-z0-9_.:-]")
    return text


def _app_id_or_none(item: object) -> str | None:
    value = item.get("id") if isinstance(item, dict) else None
    return value if isinstance(value, str) and _APP_ID.fullmatch(value) else None


def _shape(value: object) -> str:
    """What a value is, for an error message: its type, and the value itself if short."""
    if value is None:
        return "missing"
    if isinstance(value, dict | list):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} {quote(str(value), 40)}"
