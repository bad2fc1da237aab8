"""Health verdicts to the host's own multipath: the daemon's side (announcer.daemon.verdicts).
One publication at a time with the latest set, failures logged once and retried, never a
call on a host without shared IPs; and the whole daemon in one process (fakes of
announcer.testing) publishing a failing local instance of a shared anycast IP."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Collection
from ipaddress import ip_address
from pathlib import Path

import pytest

from announcer.daemon.app import Announcer
from announcer.daemon.verdicts import STARTUP_GRACE_SECONDS, Verdicts
from announcer.events import (
    IFF_LOWER_UP,
    IFF_UP,
    Instance,
    InstanceState,
    KernelLink,
    KernelRoute,
    RouteAdded,
)
from announcer.health.probes import ProbeResult
from announcer.model import Prefix
from announcer.spec.checks import CheckTarget, parse_check
from announcer.spec.labels import ServiceSpec
from announcer.testing import FakeKernel, FakeSource, RecordingExaBGP, wait_until
from tests.daemon.test_app import Running, config

UP = IFF_UP | IFF_LOWER_UP


class Recorder:
    """A publish function: records each set; ``gate`` (if set) holds calls until released;
    ``failures`` raise first."""

    def __init__(self, failures: int = 0, gate: threading.Event | None = None) -> None:
        self.calls: list[frozenset[str]] = []
        self.failures = failures
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, names: Collection[str]) -> object:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        self.calls.append(frozenset(names))
        if self.failures:
            self.failures -= 1
            raise OSError(f"opening lock /run/lock/x.lock: Permission denied ({self.failures})")
        return []


async def settle(verdicts: Verdicts) -> None:
    for _ in range(200):
        await asyncio.sleep(0)  # lets the task and its thread hop finish
        if verdicts._task is None:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the publication did not finish")


def test_only_changes_are_published_and_the_latest_set_wins() -> None:
    async def scenario() -> Recorder:
        gate = threading.Event()
        recorder = Recorder(gate=gate)
        verdicts = Verdicts(recorder)
        verdicts.update(frozenset({"vethr1"}))
        while not recorder.entered.is_set():  # the first publication is in its thread
            await asyncio.sleep(0.001)
        verdicts.update(frozenset({"vethr1", "vethr2"}))  # while the first is in flight
        verdicts.update(frozenset({"vethr2"}))
        gate.set()
        await settle(verdicts)
        await settle(verdicts)
        verdicts.update(frozenset({"vethr2"}))  # unchanged: no call
        await settle(verdicts)
        assert verdicts.published == {"vethr2"}
        return recorder

    assert asyncio.run(scenario()).calls == [{"vethr1"}, {"vethr2"}]


def test_a_failure_is_logged_once_retried_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> Recorder:
        recorder = Recorder(failures=2)
        verdicts = Verdicts(recorder, retry_seconds=0.01)
        verdicts.update(frozenset({"vethr1"}))
        for _ in range(500):
            await asyncio.sleep(0.005)
            if verdicts.published is not None:
                break
        assert verdicts.published == {"vethr1"}
        assert verdicts.report()["error"] is None
        return recorder

    with caplog.at_level(logging.INFO, logger="announcer"):
        recorder = asyncio.run(scenario())
    assert recorder.calls == [{"vethr1"}] * 3
    failed = [r.getMessage() for r in caplog.records if "shared_verdicts_failed" in r.message]
    assert len(failed) == 2  # the two messages differ (the counter in them)
    assert "Permission denied" in failed[0]
    assert "unhealthy=vethr1" in failed[0]
    assert any("shared_verdicts_recovered" in r.message for r in caplog.records)


def test_no_call_without_shared_routes_or_when_off() -> None:
    assert not Verdicts(Recorder()).wanted(set())
    assert Verdicts(Recorder()).wanted({3})
    assert not Verdicts(None).wanted({3})
    verdicts = Verdicts(Recorder(), started=100.0)
    assert verdicts.grace_ends(100.0 + STARTUP_GRACE_SECONDS - 1) == 100.0 + STARTUP_GRACE_SECONDS
    assert verdicts.grace_ends(100.0 + STARTUP_GRACE_SECONDS) is None


ANYCAST = "10.200.0.1"


def instance(n: int) -> Instance:
    spec = ServiceSpec(
        ips=(ip_address(f"10.100.0.{n}"), ip_address(ANYCAST)),
        check=parse_check("tcp:80 interval=0.1 timeout=0.1 rise=1 fall=1", allow_exec=False),
    )
    return Instance("files", f"i{n}", f"web-{n}", InstanceState.SERVING, 0.0, spec.ips, spec)


def test_the_daemon_publishes_a_failing_local_instance_of_a_shared_ip(tmp_path: Path) -> None:
    """Two local instances of one anycast IP (a multipath host route over their veths), the
    second fails its check: the daemon publishes its veth; healthy again: the empty set.
    The clock is started past the start-up grace, so pending checks count too."""
    links = [KernelLink(n, f"vethr{n}", UP) for n in (1, 2)]
    routes = [KernelRoute(Prefix(f"10.100.0.{n}/32"), 254, 180, oif=n) for n in (1, 2)]
    routes.append(KernelRoute(Prefix(f"{ANYCAST}/32"), 254, 180, nexthops=((1, None), (2, None))))
    healthy = {"10.100.0.1": True, "10.100.0.2": False}

    async def probe(target: CheckTarget) -> ProbeResult:
        return ProbeResult(healthy[str(target.address)], "test")

    exabgp, recorder = RecordingExaBGP(), Recorder()
    announcer = Announcer(
        config(tmp_path),
        exabgp.channel(),
        kernel=FakeKernel(routes, links).port(),
        sources=[FakeSource("files", [instance(1), instance(2)])],
        probe=probe,
    )
    announcer.verdicts = Verdicts(recorder, started=-STARTUP_GRACE_SECONDS)
    app = Running(announcer)
    app.thread.start()
    try:
        wait_until(lambda: {"vethr2"} in recorder.calls, what="vethr2 published unhealthy")
        healthy["10.100.0.2"] = True
        wait_until(lambda: recorder.calls[-1] == frozenset(), what="the empty set published")
        # the call is recorded before it returns; `published` follows once it has
        report = lambda: app.call(announcer.status)["stats"]["shared_verdicts"]  # type: ignore[index]  # noqa: E731
        wait_until(lambda: report()["published"] == [], what="published shows the empty set")
    finally:
        exabgp.close()
        app.thread.join(10)


def test_a_parked_member_stays_parked_while_the_kernel_follows_the_plugin(tmp_path: Path) -> None:
    """The plugin's rule played out in the fake kernel: every publication re-makes the
    shared route's group (holders minus the published ones) and the kernel reports the
    route again, without the parked device. Found in the lab: the daemon then named nobody,
    which put the device back, which named it again (~20 publications in 0.1 s, ending on
    the empty set with the instance still failing). Now one publication, and it stays."""
    links = [KernelLink(n, f"vethr{n}", UP) for n in (1, 2, 3)]
    own = [KernelRoute(Prefix(f"10.100.0.{n}/32"), 254, 180, oif=n) for n in (1, 2, 3)]

    def shared(members: tuple[int, ...]) -> KernelRoute:
        return KernelRoute(
            Prefix(f"{ANYCAST}/32"), 254, 180, nexthops=tuple((n, None) for n in members)
        )

    kernel = FakeKernel([*own, shared((1, 2, 3))], links)
    healthy = {"10.100.0.1": True, "10.100.0.2": False, "10.100.0.3": True}

    async def probe(target: CheckTarget) -> ProbeResult:
        return ProbeResult(healthy[str(target.address)], "test")

    exabgp, recorder = RecordingExaBGP(), Recorder()
    announcer = Announcer(
        config(tmp_path),
        exabgp.channel(),
        kernel=kernel.port(),
        sources=[FakeSource("files", [instance(n) for n in (1, 2, 3)])],
        probe=probe,
    )
    app = Running(announcer)

    def plugin(names: Collection[str]) -> object:  # runs in the daemon's worker thread
        recorder(names)
        members = tuple(n for n in (1, 2, 3) if f"vethr{n}" not in names) or (1, 2, 3)
        app.loop.call_soon_threadsafe(kernel.push, RouteAdded(shared(members)))
        return []

    announcer.verdicts = Verdicts(plugin, started=-STARTUP_GRACE_SECONDS)
    app.thread.start()
    try:
        # (pending checks count too: the first publications may name vethr1 and vethr3)
        wait_until(lambda: recorder.calls and recorder.calls[-1] == {"vethr2"}, what="vethr2")
        first = len(recorder.calls)
        # the kernel's answer (the group without vethr2) in the world, and decided upon
        wait_until(lambda: app.call(announcer.world.shared_devices) == {1, 3}, what="answer")
        app.call(announcer.reconcile)
        assert recorder.calls[first:] == []
        assert app.call(announcer.verdicts.report)["unhealthy"] == ["vethr2"]  # type: ignore[index]
        healthy["10.100.0.2"] = True
        wait_until(lambda: recorder.calls[-1] == frozenset(), what="vethr2 back in")
        assert recorder.calls[first:] == [frozenset()]
    finally:
        exabgp.close()
        app.thread.join(10)
