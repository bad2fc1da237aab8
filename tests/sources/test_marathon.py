"""Marathon source: pure parsers on recorded payloads, and the source against a fake Marathon.

No Marathon can be installed here. ``FakeMarathon`` is a small HTTP/1.1 server on 127.0.0.1
(ephemeral port) that replays Marathon's documented API: ``GET /v2/apps?embed=apps.tasks``,
``GET /v2/apps/{id}?embed=app.tasks`` (404 for an unknown app) and ``GET /v2/events`` as
Server-Sent Events driven by the test. Its payloads copy the *shapes* of Marathon's
documented examples (see tests/data/marathon/README.md). Emitted events are applied to the
real core ``World``, so assertions read what the core would know. Synchronisation is by
polling with a deadline, never by sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.config import MarathonConfig
from announcer.core.world import World
from announcer.events import (
    Instance,
    InstanceChanged,
    InstanceRemoved,
    InstanceState,
    LifecycleEvent,
    SourceListed,
    SourceLost,
)
from announcer.sources.marathon import LocalTasks, MarathonSource
from announcer.sources.marathon_api import (
    AppTasks,
    Listing,
    MarathonEvent,
    PayloadError,
    Problem,
    decode,
    parse_app,
    parse_apps,
    parse_event,
    same_host,
    short_task_id,
    task_state,
)

DATA = Path(__file__).parent.parent / "data" / "marathon"
AGENT = "agent-1.example.org"
DNS = "/anycast/dns"
T1 = "anycast_dns.instance-7f1c2e4a-0861-11ef-9a2d-0242ac110002._app.1"
T2 = "anycast_dns.instance-81d0b6f5-0861-11ef-9a2d-0242ac110002._app.1"
T3 = "anycast_dns.instance-8e44a1c0-0861-11ef-9a2d-0242ac110002._app.1"  # on agent-2
WEB_TASK = "web_frontend.5dd78972-6771-11e5-94e1-be5b2935a987"
S, U, ST, SP = (
    InstanceState.SERVING,
    InstanceState.UNHEALTHY,
    InstanceState.STARTING,
    InstanceState.STOPPING,
)


def recorded(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def frames(text: str) -> list[tuple[str, str]]:
    """(event, data) of each complete SSE frame of a recorded stream."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields:
            out.append((fields.get("event", "message"), fields.get("data", "")))
    return out


def ip(text: str) -> Any:
    return ip_address(text)


# --- pure parsers on recorded payloads --------------------------------------------------------


def test_parse_apps_keeps_only_this_agents_tasks() -> None:
    listing = parse_apps(recorded("apps_embed_tasks.json"), AGENT, 5.0)
    assert listing.problems == ()
    assert [app.app_id for app in listing.apps] == [DNS, "/web/frontend", "/batch/report"]
    by_id = {i.id: i for i in listing.instances}
    assert set(by_id) == {T1, T2, WEB_TASK}  # T3 and batch's task run on agent-2
    t1, t2, web = by_id[T1], by_id[T2], by_id[WEB_TASK]
    assert (t1.state, t2.state, web.state) == (S, U, ST)  # alive / not alive / staging
    assert t1.ips == (ip("198.51.100.11"), ip("192.0.2.53"), ip("2001:db8::53"))
    assert t1.spec is not None
    assert t1.error is None
    assert t1.since == 5.0
    assert t1.name == "/anycast/dns:7f1c2e4a"
    assert t1.source == "marathon"
    assert web.ips == ()  # host networking: the task's "IP" is the agent's, never claimed
    assert web.name == "/web/frontend:5dd78972"


def test_parse_app_reads_the_single_app_reply() -> None:
    app = parse_app(recorded("app_dns.json"), AGENT, 1.0)
    assert app.app_id == DNS
    assert [(i.id, i.state) for i in app.instances] == [(T1, S), (T2, U)]
    assert parse_app(recorded("app_dns.json"), "agent-2.example.org", 1.0).instances[0].id == T3


def test_parse_event_reads_every_recorded_frame() -> None:
    parsed = [parse_event(e, d) for e, d in frames((DATA / "events.sse").read_text())]
    instance2 = T2.removesuffix("._app.1")
    assert parsed == [
        None,  # event_stream_attached
        MarathonEvent("status_update_event", (DNS,), host=AGENT, task=T1),
        MarathonEvent("status_update_event", (DNS,), host=AGENT, task=T1, stop=SP),
        MarathonEvent("instance_changed_event", (DNS,), host=AGENT, task=instance2, stop=SP),
        MarathonEvent("instance_health_changed_event", (DNS,), task=instance2, health=True),
        MarathonEvent("health_status_changed_event", (DNS,), task=instance2, health=True),
        MarathonEvent("api_post_event", (DNS,)),
        MarathonEvent("api_post_event", relist=True),
        MarathonEvent("deployment_info", (DNS, "/web/frontend")),
        MarathonEvent("deployment_success", relist=True),
        MarathonEvent("app_terminated_event", ("/batch/report",)),
        None,  # unhealthy_instance_kill_event: the status updates that follow say it
    ]


@pytest.mark.parametrize(
    ("task", "checked", "expected"),
    [
        ({"state": "TASK_RUNNING"}, False, S),
        ({"state": "TASK_RUNNING"}, True, ST),  # grace period: no result yet
        ({"state": "TASK_RUNNING", "healthCheckResults": []}, True, ST),
        (
            {"state": "TASK_RUNNING", "healthCheckResults": [{"alive": True}, {"alive": True}]},
            True,
            S,
        ),
        (
            {"state": "TASK_RUNNING", "healthCheckResults": [{"alive": True}, {"alive": False}]},
            True,
            U,
        ),
        ({"state": "TASK_RUNNING", "healthCheckResults": [{"alive": "yes"}]}, True, U),
        # The app has no health check (any more): a stale result does not count.
        ({"state": "TASK_RUNNING", "healthCheckResults": [{"alive": False}]}, False, S),
        ({"state": "TASK_STAGING"}, True, ST),
        ({"state": "TASK_STARTING"}, False, ST),
        ({"state": "TASK_KILLING"}, False, SP),
        ({"state": "TASK_UNREACHABLE"}, False, U),
        ({"state": "TASK_SOMETHING_NEW"}, False, ST),
        *[
            ({"state": s}, False, InstanceState.STOPPED)
            for s in (
                "TASK_FINISHED",
                "TASK_FAILED",
                "TASK_KILLED",
                "TASK_LOST",
                "TASK_ERROR",
                "TASK_DROPPED",
                "TASK_GONE",
            )
        ],
    ],
)
def test_task_state(task: dict[str, Any], checked: bool, expected: InstanceState) -> None:
    assert task_state(task, checked) is expected


def test_same_host_and_short_ids() -> None:
    assert same_host("AGENT-1.example.org.", AGENT)
    assert same_host("10.0.0.31", "agent-1.example.org, 10.0.0.31")
    assert not same_host("agent-10.example.org", AGENT)
    assert not same_host("", "a,,b")
    assert short_task_id("foo.0664256e-6771-11e5-94e1-be5b2935a987") == "0664256e"
    assert short_task_id("my-app_0-1396592784349") == "my-app_0"


def test_one_bad_app_is_a_problem_and_the_rest_is_read() -> None:
    payload = recorded("apps_embed_tasks.json")
    payload["apps"][1]["tasks"] = "oops"
    payload["apps"][2]["labels"] = {"anycast.ips": 5}
    payload["apps"].append({"id": "../../v2/leader", "tasks": []})
    payload["apps"].append(["not", "an", "app"])
    listing = parse_apps(payload, AGENT, 0.0)
    assert [a.app_id for a in listing.apps] == [DNS]
    assert [p.app_id for p in listing.problems] == ["/web/frontend", "/batch/report", None, None]
    assert "'tasks' is str 'oops'" in listing.problems[0].reason
    assert "'../../v2/leader' is not an absolute Marathon app id" in listing.problems[2].reason


def test_bad_labels_make_an_instance_that_serves_nothing() -> None:
    payload = recorded("app_dns.json")
    payload["app"]["labels"]["anycast.med"] = "lots\nlots"
    instance = parse_app(payload, AGENT, 0.0).instances[0]
    assert instance.state is S
    assert instance.error is not None
    assert "anycast.med='lots\\nlots'" in instance.error


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"<html>502 Bad Gateway</html>",
            "not JSON (JSONDecodeError): '<html>502 Bad Gateway</html>'",
        ),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_decode_reports_garbage(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode(body)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"message": "App '/x' does not exist"},
            "expected an object with an 'apps' list, got a dict of 1",
        ),
        (["apps"], "got a list of 1"),
        (None, "got missing"),
    ],
)
def test_parse_apps_rejects_a_wrong_shape_cleanly(payload: object, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_apps(payload, AGENT, 0.0)


def test_parse_event_errors_name_the_event() -> None:
    with pytest.raises(PayloadError, match="status_update_event: taskId is missing"):
        parse_event("status_update_event", '{"appId":"/a","taskStatus":"TASK_RUNNING"}')
    with pytest.raises(PayloadError, match="not JSON"):
        parse_event("status_update_event", '{"taskId":')
    assert parse_event(
        "message",
        '{"eventType":"status_update_event","taskId":"a.b","appId":"/a","taskStatus":"TASK_KILLED"}',
    ) == MarathonEvent("status_update_event", ("/a",), task="a.b", stop=InstanceState.STOPPED)


# --- LocalTasks: the source's memory, pure --------------------------------------------------


def _instance(task_id: str, state: InstanceState, since: float = 0.0) -> Instance:
    return Instance("marathon", task_id, f"/a:{task_id}", state, since)


def test_local_tasks_keep_since_and_never_bring_a_stopping_task_back() -> None:
    tasks = LocalTasks(AGENT)
    tasks.listed(Listing((AppTasks("/a", (_instance("a.1", S, 1.0),)),)))
    # Same state: ``since`` is kept, nothing to report.
    assert tasks.app_read(AppTasks("/a", (_instance("a.1", S, 9.0),))) == []
    stop = MarathonEvent("status_update_event", ("/a",), host=AGENT, task="a.1", stop=SP)
    reaction = tasks.on_event(stop, 10.0)
    assert reaction.changes == (InstanceChanged(_instance("a.1", SP, 10.0)),)
    assert reaction.apps == ("/a",)
    # A late re-read that still says running does not revive it.
    assert tasks.app_read(AppTasks("/a", (_instance("a.1", S, 11.0),))) == []
    assert tasks.app_read(AppTasks("/a", ())) == [InstanceRemoved("marathon", "a.1")]


def test_local_tasks_reread_only_what_concerns_this_host() -> None:
    tasks = LocalTasks(AGENT)
    tasks.listed(Listing((AppTasks("/a", (_instance("a.instance-1._app.1", S),)),)))
    other_host = MarathonEvent("status_update_event", ("/b",), host="agent-2", task="b.1")
    assert tasks.on_event(other_host, 0.0).apps == ()
    other_health = MarathonEvent(
        "instance_health_changed_event", ("/b",), task="b.instance-9", health=True
    )
    assert tasks.on_event(other_health, 0.0).apps == ()
    ours = MarathonEvent("instance_health_changed_event", ("/a",), task="a.instance-1", health=True)
    assert tasks.on_event(ours, 0.0).apps == ("/a",)
    killing_elsewhere = MarathonEvent(
        "instance_changed_event", ("/a",), host="agent-2", task="a.instance-2", stop=SP
    )
    assert tasks.on_event(killing_elsewhere, 0.0).changes == ()


def test_a_listing_keeps_the_last_state_of_apps_it_could_not_read() -> None:
    tasks = LocalTasks(AGENT)
    tasks.listed(
        Listing((AppTasks("/a", (_instance("a.1", S),)), AppTasks("/b", (_instance("b.1", S),))))
    )
    listed = tasks.listed(Listing((AppTasks("/b", ()),), (Problem("/a", "bad"),)))
    assert [i.id for i in listed.instances] == ["a.1"]  # /a kept, /b's task really gone
    listed = tasks.listed(Listing((), (Problem(None, "no id"),)))
    # A problem with no app id keeps every app the listing did not read.
    assert [i.id for i in listed.instances] == ["a.1"]
    assert tasks.listed(Listing(())).instances == ()


# --- fuzz: any JSON gives instances or a clean PayloadError ----------------------------------

KEYS = [
    "id",
    "apps",
    "app",
    "tasks",
    "labels",
    "healthChecks",
    "host",
    "state",
    "ipAddresses",
    "ipAddress",
    "healthCheckResults",
    "alive",
    "networks",
    "mode",
    "container",
    "docker",
    "network",
    "taskId",
    "appId",
    "taskStatus",
    "instanceId",
    "runSpecId",
    "condition",
    "appDefinition",
    "plan",
    "steps",
    "actions",
    "app",
    "currentStep",
    "eventType",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            AGENT,
            "/a",
            "/a/b",
            "a.1",
            "TASK_RUNNING",
            "TASK_KILLING",
            "container",
            "USER",
            "Killing",
            "198.51.100.1",
            "::ffff:1.2.3.4",
            "anycast.ips",
            "192.0.2.1",
            "",
        ]
    ),
    st.text(max_size=12),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=6)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(payload=JSON, wrap=st.sampled_from(["apps", "app", "none"]))
def test_fuzz_payload_parsers_never_raise_anything_else(payload: object, wrap: str) -> None:
    wrapped = (
        {"apps": [payload]} if wrap == "apps" else {"app": payload} if wrap == "app" else payload
    )
    for parse in (parse_apps, parse_app):
        try:
            result = parse(wrapped, AGENT, 0.0)
        except PayloadError:
            continue
        instances = result.instances if isinstance(result, Listing) else list(result.instances)
        assert all(isinstance(i, Instance) for i in instances)
        LocalTasks(AGENT).listed(result if isinstance(result, Listing) else Listing((result,)))


@settings(max_examples=300, deadline=None)
@given(
    event=st.sampled_from(
        [
            "status_update_event",
            "instance_changed_event",
            "api_post_event",
            "deployment_info",
            "health_status_changed_event",
            "message",
            "other",
        ]
    ),
    data=JSON.map(json.dumps) | st.text(max_size=40),
)
def test_fuzz_event_parser_never_raises_anything_else(event: str, data: str) -> None:
    try:
        parsed = parse_event(event, data)
    except PayloadError:
        return
    if parsed is not None:
        LocalTasks(AGENT).on_event(parsed, 0.0)


# --- a fake Marathon on 127.0.0.1 ---------------------------------------------------------


@dataclass
class Request:
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]


def task(
    task_id: str, host: str, state: str, address: str, alive: bool | None = None
) -> dict[str, Any]:
    """A task as /v2/apps embeds it (shape of the recorded payload)."""
    app_id = "/" + task_id.split(".", 1)[0].replace("_", "/")
    out: dict[str, Any] = {
        "id": task_id,
        "appId": app_id,
        "host": host,
        "slaveId": f"S-{host}",
        "state": state,
        "stagedAt": "2024-05-02T09:12:45.101Z",
        "startedAt": None,
        "version": "2024-05-02T09:12:44.017Z",
        "ipAddresses": [{"ipAddress": address, "protocol": "IPv4"}],
        "ports": [53],
        "servicePorts": [10053],
    }
    if alive is not None:
        instance = task_id.removesuffix("._app.1")
        out["healthCheckResults"] = [
            {"alive": alive, "consecutiveFailures": 0 if alive else 1, "instanceId": instance}
        ]
    return out


def dns_app(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    app = copy.deepcopy(recorded("app_dns.json")["app"])
    app["tasks"] = tasks
    return app


@dataclass
class FakeMarathon:
    apps: dict[str, dict[str, Any]]
    timeline: list[tuple[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    streams: list[asyncio.StreamWriter] = field(default_factory=list)
    # Replies forced for the next requests of a path: (status, body) popped in order.
    faults: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    url: str = ""

    async def __aenter__(self) -> FakeMarathon:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop_streams()
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return None
        line, *header_lines = head.strip().split("\r\n")
        _, target, _ = line.split(" ")
        split = urlsplit(target)
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
        path = unquote(split.path)
        self.requests.append(Request(path, parse_qsl(split.query), headers))
        self.timeline.append(("request", path))
        if self.faults.get(path):
            status, body = self.faults[path].pop(0)
            return await self._reply(writer, status, body)
        if path == "/v2/events":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            )
            writer.write(
                b'event: event_stream_attached\ndata: {"remoteAddress":"127.0.0.1","eventType":"event_stream_attached"}\n\n'
            )
            self.streams.append(writer)
            return None
        if path == "/v2/apps":
            return await self._reply(
                writer, 200, json.dumps({"apps": list(self.apps.values())}).encode()
            )
        app = self.apps.get(path.removeprefix("/v2/apps"))
        if app is None:
            return await self._reply(
                writer, 404, b'{"message":"App \'%s\' does not exist"}' % path.encode()
            )
        return await self._reply(writer, 200, json.dumps({"app": app}).encode())

    async def _reply(self, writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        writer.write(
            b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (status, len(body), body)
        )
        await writer.drain()
        writer.close()

    def send(self, kind: str, data: dict[str, Any]) -> None:
        self.send_raw(f"event: {kind}\ndata: {json.dumps({**data, 'eventType': kind})}\n\n")
        self.timeline.append(("sent", kind))

    def send_raw(self, text: str) -> None:
        self.streams = [w for w in self.streams if not w.is_closing()]
        for writer in self.streams:
            writer.write(text.encode())

    def drop_streams(self) -> None:
        for writer in self.streams:
            writer.close()
        self.streams = []

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)


class Running:
    """The source running against a fake Marathon; what it emits is applied to a core World."""

    def __init__(self, server: FakeMarathon, **config: Any) -> None:
        self.server = server
        self.world = World()
        self.emitted: list[LifecycleEvent] = []
        values = {
            "enabled": True,
            "url": server.url,
            "agent": AGENT,
            "timeout_seconds": 2.0,
            **config,
        }
        self.source = MarathonSource(
            MarathonConfig(**values), backoff_initial=0.02, backoff_max=0.1
        )

    def emit(self, event: LifecycleEvent) -> None:
        self.emitted.append(event)
        self.server.timeline.append(("emit", event))
        self.world.apply(event)

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.source.run(self.emit, time.monotonic))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await asyncio.wait([self.task])

    def states(self) -> dict[str, InstanceState]:
        return {key[1]: i.state for key, i in self.world.instances.items()}

    def instance(self, task_id: str) -> Instance:
        return self.world.instances[("marathon", task_id)]

    def synced(self) -> bool:
        status = self.world.sources.get("marathon")
        return status is not None and status.synced and status.lost_since is None

    async def until(self, condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.task.done():
                self.task.result()
                raise AssertionError(f"source stopped before: {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {what}; states={self.states()}")
            await asyncio.sleep(0.005)


def aio(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 20))

    return run


# --- scenarios ------------------------------------------------------------------------------


@aio
async def test_deploy_of_three_instances_across_hosts_only_local_tasks_count() -> None:
    """Subscribe first, then list; 3 tasks staged on 2 hosts: only agent-1's 2 become instances."""
    async with FakeMarathon({DNS: dns_app([])}) as server, Running(server) as run:
        await run.until(run.synced, "first listing")
        assert [r.path for r in server.requests[:2]] == ["/v2/events", "/v2/apps"]
        events, listing = server.requests[0], server.requests[1]
        assert events.headers["accept"] == "text/event-stream"
        assert ("plan-format", "light") in events.query
        assert {v for k, v in events.query if k == "event_type"} >= {
            "status_update_event",
            "instance_changed_event",
            "instance_health_changed_event",
            "health_status_changed_event",
            "api_post_event",
            "deployment_info",
            "app_terminated_event",
        }
        assert listing.query == [("embed", "apps.tasks")]
        assert run.states() == {}

        # Marathon stages the three tasks (one on agent-2) and says so.
        staged = [
            task(T1, AGENT, "TASK_STAGING", "198.51.100.11"),
            task(T2, AGENT, "TASK_STAGING", "198.51.100.12"),
            task(T3, "agent-2.example.org", "TASK_STAGING", "198.51.100.21"),
        ]
        server.apps[DNS] = dns_app(staged)
        for t in staged:
            server.send(
                "status_update_event",
                {
                    "taskId": t["id"],
                    "taskStatus": "TASK_STAGING",
                    "appId": DNS,
                    "host": t["host"],
                    "slaveId": t["slaveId"],
                },
            )
        await run.until(lambda: run.states() == {T1: ST, T2: ST}, "two local tasks staging")
        assert any(
            r.path == "/v2/apps/anycast/dns" and r.query == [("embed", "app.tasks")]
            for r in server.requests
        )

        # They run and pass their health checks.
        running = [
            task(T1, AGENT, "TASK_RUNNING", "198.51.100.11", alive=True),
            task(T2, AGENT, "TASK_RUNNING", "198.51.100.12", alive=True),
            task(T3, "agent-2.example.org", "TASK_RUNNING", "198.51.100.21", alive=True),
        ]
        server.apps[DNS] = dns_app(running)
        for t in running:
            server.send(
                "status_update_event",
                {
                    "taskId": t["id"],
                    "taskStatus": "TASK_RUNNING",
                    "appId": DNS,
                    "host": t["host"],
                    "ipAddresses": t["ipAddresses"],
                },
            )
        await run.until(lambda: run.states() == {T1: S, T2: S}, "two local tasks serving")
        assert run.instance(T1).ips == (ip("198.51.100.11"), ip("192.0.2.53"), ip("2001:db8::53"))
        assert run.instance(T2).ips[0] == ip("198.51.100.12")
        assert all(e.instance.id != T3 for e in run.emitted if isinstance(e, InstanceChanged))
        assert all(
            i.id != T3 for e in run.emitted if isinstance(e, SourceListed) for i in e.instances
        )


@aio
async def test_task_killed_is_stopping_before_the_reread_then_gone() -> None:
    """TASK_KILLING / condition Killing: STOPPING is emitted at once, before the app is re-read;
    a re-read that still shows it running does not revive it; TASK_KILLED + re-read removes it."""
    apps = {
        DNS: dns_app(
            [
                task(T1, AGENT, "TASK_RUNNING", "198.51.100.11", True),
                task(T2, AGENT, "TASK_RUNNING", "198.51.100.12", True),
            ]
        )
    }
    async with FakeMarathon(apps) as server, Running(server) as run:
        await run.until(lambda: run.states() == {T1: S, T2: S}, "both serving")
        # Marathon's listing lags (events are unordered): it still says RUNNING.
        server.send(
            "status_update_event",
            {"taskId": T1, "taskStatus": "TASK_KILLING", "appId": DNS, "host": AGENT},
        )
        mark = len(server.timeline) - 1
        await run.until(
            lambda: server.count("/v2/apps/anycast/dns") >= 1, "re-read after TASK_KILLING"
        )
        after = server.timeline[mark:]
        stopping = [
            i
            for i, (k, v) in enumerate(after)
            if k == "emit" and isinstance(v, InstanceChanged) and v.instance.state is SP
        ]
        reread = [
            i for i, (k, v) in enumerate(after) if k == "request" and v == "/v2/apps/anycast/dns"
        ]
        assert stopping, after
        assert reread, after
        assert stopping[0] < reread[0], after

        instance2 = T2.removesuffix("._app.1")
        server.send(
            "instance_changed_event",
            {
                "instanceId": instance2,
                "condition": "Killing",
                "runSpecId": DNS,
                "host": AGENT,
                "agentId": "S3",
            },
        )
        await run.until(
            lambda: run.states() == {T1: SP, T2: SP}, "instance_changed Killing stops T2"
        )

        server.apps[DNS] = dns_app([])
        server.send(
            "status_update_event",
            {"taskId": T1, "taskStatus": "TASK_KILLED", "appId": DNS, "host": AGENT},
        )
        server.send(
            "status_update_event",
            {"taskId": T2, "taskStatus": "TASK_KILLED", "appId": DNS, "host": AGENT},
        )
        await run.until(lambda: run.states() == {}, "both removed after the re-read")
        removed = [e.id for e in run.emitted if isinstance(e, InstanceRemoved)]
        assert sorted(removed) == sorted([T1, T2])

        # The app is deleted: app_terminated_event, the re-read gets 404, nothing is left.
        server.apps[DNS] = dns_app([task(T3, AGENT, "TASK_RUNNING", "198.51.100.13", True)])
        server.send("api_post_event", {"uri": "/v2/apps/anycast/dns", "appDefinition": {"id": DNS}})
        await run.until(lambda: run.states() == {T3: S}, "a new task")
        del server.apps[DNS]
        server.send("app_terminated_event", {"appId": DNS})
        await run.until(lambda: run.states() == {}, "app deleted")


@aio
async def test_failing_health_check_is_unhealthy_and_passing_is_serving_again() -> None:
    apps = {DNS: dns_app([task(T1, AGENT, "TASK_RUNNING", "198.51.100.11", alive=None)])}
    async with FakeMarathon(apps) as server, Running(server) as run:
        await run.until(lambda: run.states() == {T1: ST}, "running, no health result yet: starting")
        instance1 = T1.removesuffix("._app.1")
        server.apps[DNS] = dns_app([task(T1, AGENT, "TASK_RUNNING", "198.51.100.11", alive=True)])
        server.send(
            "instance_health_changed_event",
            {"instanceId": instance1, "runSpecId": DNS, "healthy": True},
        )
        await run.until(lambda: run.states() == {T1: S}, "healthy: serving")
        server.apps[DNS] = dns_app([task(T1, AGENT, "TASK_RUNNING", "198.51.100.11", alive=False)])
        server.send(
            "instance_health_changed_event",
            {"instanceId": instance1, "runSpecId": DNS, "healthy": False},
        )
        await run.until(lambda: run.states() == {T1: U}, "failing: unhealthy")
        reads = server.count("/v2/apps/anycast/dns")
        # A health change of another host's instance does not make it re-read anything.
        server.send(
            "instance_health_changed_event",
            {"instanceId": "other_app.instance-1", "runSpecId": "/other/app", "healthy": False},
        )
        server.apps[DNS] = dns_app([task(T1, AGENT, "TASK_RUNNING", "198.51.100.11", alive=True)])
        server.send(
            "health_status_changed_event", {"instanceId": instance1, "appId": DNS, "alive": True}
        )
        await run.until(lambda: run.states() == {T1: S}, "passing again: serving")
        assert server.count("/v2/apps/anycast/dns") == reads + 1
        assert server.count("/v2/apps/other/app") == 0


@aio
async def test_label_edit_is_read_again_after_api_post_event() -> None:
    apps = {DNS: dns_app([task(T1, AGENT, "TASK_RUNNING", "198.51.100.11", True)])}
    async with FakeMarathon(apps) as server, Running(server) as run:
        await run.until(lambda: run.states() == {T1: S}, "serving")
        assert run.instance(T1).spec is not None
        assert ip("192.0.2.53") in run.instance(T1).ips
        since = run.instance(T1).since
        server.apps[DNS]["labels"] = {"anycast.ips": "192.0.2.54", "anycast.med": "50"}
        server.send(
            "api_post_event",
            {
                "clientIp": "10.0.0.5",
                "uri": "/v2/apps/anycast/dns",
                "appDefinition": {"id": DNS, "labels": server.apps[DNS]["labels"]},
            },
        )
        await run.until(lambda: ip("192.0.2.54") in run.instance(T1).ips, "new anycast IP")
        new = run.instance(T1)
        assert new.ips == (ip("198.51.100.11"), ip("192.0.2.54"))
        assert new.spec is not None
        assert new.spec.med == 50
        # Still serving since the same time: drain deadlines are not reset.
        assert new.since == since
        server.apps[DNS]["labels"] = {"anycast.ips": "192.0.2.54", "anycast.med": "fifty"}
        server.send("api_post_event", {"uri": "/v2/apps/anycast/dns", "appDefinition": {"id": DNS}})
        await run.until(lambda: run.instance(T1).error is not None, "a bad label edit")
        assert "anycast.med='fifty'" in (run.instance(T1).error or "")


@aio
async def test_stream_dropping_mid_event_is_lost_then_reconnected_and_relisted() -> None:
    apps = {
        DNS: dns_app(
            [
                task(T1, AGENT, "TASK_RUNNING", "198.51.100.11", True),
                task(T2, AGENT, "TASK_RUNNING", "198.51.100.12", True),
            ]
        )
    }
    async with FakeMarathon(apps) as server, Running(server) as run:
        await run.until(lambda: run.states() == {T1: S, T2: S}, "both serving")
        # While the stream breaks, T2 is killed and T3 starts: no complete event says so.
        server.apps[DNS] = dns_app(
            [
                task(T1, AGENT, "TASK_RUNNING", "198.51.100.11", True),
                task(T3, AGENT, "TASK_RUNNING", "198.51.100.13", True),
            ]
        )
        server.send_raw(
            'event: status_update_event\ndata: {"taskId":"anycast_dns.instance-81d0b6f5-0861-11ef-9a2d-0242ac110002._app.1","taskSta'
        )
        server.drop_streams()
        await run.until(lambda: any(isinstance(e, SourceLost) for e in run.emitted), "SourceLost")
        lost = next(e for e in run.emitted if isinstance(e, SourceLost))
        assert lost.reason == "event stream closed by Marathon"
        await run.until(
            lambda: run.synced() and run.states() == {T1: S, T3: S},
            "reconnected, relisted, converged",
        )
        assert server.count("/v2/events") == 2
        assert server.count("/v2/apps") == 2
        assert [
            e for e in run.emitted if isinstance(e, InstanceChanged) and e.instance.id == T2
        ] == []


@aio
async def test_500s_and_garbage_are_logged_and_the_last_state_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="announcer")
    apps = {DNS: dns_app([task(T1, AGENT, "TASK_RUNNING", "198.51.100.11", True)])}
    async with FakeMarathon(apps) as server:
        server.faults["/v2/apps"] = [
            (500, b'{"message":"internal error"}'),
            (200, b"<html>Bad gateway</html>"),
        ]
        async with Running(server, relist_interval_seconds=30.0) as run:
            await run.until(
                lambda: run.synced() and run.states() == {T1: S}, "listed on the third try"
            )
            reasons = [e.reason for e in run.emitted if isinstance(e, SourceLost)]
            assert reasons == [
                'GET /v2/apps: HTTP 500 \'{"message":"internal error"}\'',
                "GET /v2/apps: not JSON (JSONDecodeError): '<html>Bad gateway</html>'",
            ]
            assert "marathon_lost reason=" in caplog.text

            # A re-read answered with 500: logged, state kept, a re-list comes soon (0.2 s).
            server.faults["/v2/apps/anycast/dns"] = [(500, b"oops")]
            server.apps[DNS] = dns_app([task(T1, AGENT, "TASK_RUNNING", "198.51.100.11", False)])
            server.send(
                "status_update_event",
                {"taskId": T1, "taskStatus": "TASK_RUNNING", "appId": DNS, "host": AGENT},
            )
            await run.until(
                lambda: (
                    "marathon_app_reread_failed app=/anycast/dns reason=GET /v2/apps/anycast/dns: HTTP 500 'oops'"
                    in caplog.text
                ),
                "re-read failure logged",
            )
            assert run.states() == {T1: S}
            await run.until(lambda: run.states() == {T1: U}, "the early re-list repairs it")

            # One bad app in a listing: reported, its tasks kept; the other app is read.
            web = copy.deepcopy(recorded("apps_embed_tasks.json")["apps"][1])
            body = {"apps": [{**server.apps[DNS], "tasks": {"broken": True}}, web]}
            server.faults["/v2/apps"] = [(200, json.dumps(body).encode())]
            server.send("api_post_event", {"uri": "/v2/groups/anycast"})
            await run.until(lambda: WEB_TASK in run.states(), "the good app is read")
            assert run.states() == {T1: U, WEB_TASK: ST}
            assert (
                "marathon_app_skipped app=/anycast/dns reason=app /anycast/dns: 'tasks' is a dict of 1"
                in caplog.text
            )

            # Garbage on the stream: the frame is ignored, the stream stays up.
            server.send_raw("event: status_update_event\ndata: {not json}\n\n")
            server.send(
                "api_post_event", {"uri": "/v2/apps/anycast/dns", "appDefinition": {"id": DNS}}
            )
            await run.until(lambda: server.count("/v2/apps/anycast/dns") >= 2, "next event handled")
            assert "marathon_event_unreadable reason=not JSON" in caplog.text
            assert server.count("/v2/events") == 3


@aio
async def test_periodic_relist_repairs_what_no_event_said() -> None:
    apps = {DNS: dns_app([task(T1, AGENT, "TASK_RUNNING", "198.51.100.11", True)])}
    async with FakeMarathon(apps) as server, Running(server, relist_interval_seconds=0.2) as run:
        await run.until(lambda: run.states() == {T1: S}, "serving")
        server.apps[DNS] = dns_app([])
        await run.until(lambda: run.states() == {}, "gone after a re-list")
        assert server.count("/v2/events") == 1


@pytest.mark.parametrize(
    ("config", "header"),
    [
        ({"token": "s3cr3t-token"}, "token=s3cr3t-token"),
        (
            {"username": "svc", "password": "pa55word"},
            "Basic " + base64.b64encode(b"svc:pa55word").decode(),
        ),
    ],
)
@aio
async def test_auth_header_is_sent_and_secrets_never_logged(
    config: dict[str, str], header: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    apps = {DNS: dns_app([task(T1, AGENT, "TASK_RUNNING", "198.51.100.11", True)])}
    async with FakeMarathon(apps) as server:
        server.faults["/v2/events"] = [(401, b'{"message":"invalid authentication"}')]
        async with Running(server, **config) as run:
            await run.until(lambda: run.states() == {T1: S}, "listed")
            server.send(
                "status_update_event",
                {"taskId": T1, "taskStatus": "TASK_RUNNING", "appId": DNS, "host": AGENT},
            )
            await run.until(lambda: server.count("/v2/apps/anycast/dns") == 1, "re-read")
    assert [r.headers.get("authorization") for r in server.requests] == [header] * len(
        server.requests
    )
    assert "HTTP 401" in caplog.text
    for secret in ("s3cr3t-token", "pa55word", header):
        assert secret not in caplog.text
