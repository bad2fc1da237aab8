"""The whole daemon in one process, on the fakes of announcer.testing: no namespace, no
ExaBGP. Scenarios: start-up order, announce/withdraw, the sync gate, the hold and status."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import ip_address
from pathlib import Path

import pytest

from announcer.config import Config
from announcer.daemon.app import Announcer
from announcer.events import (
    IFF_LOWER_UP,
    IFF_UP,
    Instance,
    InstanceState,
    KernelLink,
    KernelRoute,
    RouteAdded,
    RouteRemoved,
    SourceListed,
    SourceLost,
)
from announcer.model import Prefix
from announcer.sources.lifecycle import LifecycleSource
from announcer.testing import FakeKernel, FakeSource, RecordingExaBGP, wait_until

UP = IFF_UP | IFF_LOWER_UP
VETH = KernelLink(2, "vethr1", UP)


def route(text: str) -> KernelRoute:
    return KernelRoute(Prefix(text), 254, 180, oif=2)


def config(tmp_path: Path, **sections: object) -> Config:
    document: dict[str, object] = {
        "policy": {"allow": ["10.0.0.0/8"]},
        "exabgp": {"watchdog_seconds": 0, "verify_interval_seconds": 0},
        "control": {"socket": str(tmp_path / "c.sock"), "state_directory": str(tmp_path)},
        "drain": {"maintenance_file": str(tmp_path / "maintenance")},
    }
    document.update(sections)
    return Config.model_validate(document)


class Running:
    """An Announcer on its own loop in a thread; ``call`` runs a function in that loop."""

    def __init__(self, announcer: Announcer) -> None:
        self.announcer = announcer
        self.loop = asyncio.new_event_loop()
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.code = self.loop.run_until_complete(self.announcer.run(signals=False))

    def call(self, fn: Callable[[], object]) -> object:
        done = threading.Event()
        box: list[object] = []

        def run() -> None:
            box.append(fn())
            done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(5), "the loop did not run the call"
        return box[0]


@contextmanager
def running(
    tmp_path: Path,
    kernel: FakeKernel,
    exabgp: RecordingExaBGP,
    sources: list[LifecycleSource] | None = None,
    sections: dict[str, object] | None = None,
) -> Iterator[Running]:
    announcer = Announcer(
        config(tmp_path, **(sections or {})),
        exabgp.channel(),
        kernel=kernel.port(),
        sources=sources or [],
    )
    app = Running(announcer)
    app.thread.start()
    try:
        yield app
    finally:
        exabgp.close()  # EOF: the announcer exits
        app.thread.join(10)
        assert not app.thread.is_alive(), "the announcer did not exit on EOF"


def test_start_up_asks_version_then_the_rib_then_announces(tmp_path: Path) -> None:
    kernel = FakeKernel([route("10.0.0.1/32")], [VETH])
    exabgp = RecordingExaBGP()
    with running(tmp_path, kernel, exabgp) as app:
        exabgp.wait_for("announce route 10.0.0.1/32 next-hop self")
        assert exabgp.lines[:2] == ["version", "show adj-rib out"]
        app.call(lambda: kernel.push(RouteAdded(route("10.0.0.2/32"))))
        exabgp.wait_for("announce route 10.0.0.2/32 next-hop self")
        app.call(lambda: kernel.push(RouteRemoved(route("10.0.0.1/32"))))
        exabgp.wait_for("withdraw route 10.0.0.1/32")
    assert app.code == 0


def test_a_respawn_withdraws_only_what_is_no_longer_valid(tmp_path: Path) -> None:
    kernel = FakeKernel([route("10.0.0.1/32")], [VETH])
    rib = [
        "10.99.0.1 ipv4 unicast 10.0.0.1/32 next-hop 10.99.0.2",
        "10.99.0.1 ipv4 unicast 10.0.0.9/32 next-hop 10.99.0.2",
    ]
    exabgp = RecordingExaBGP(rib=rib)
    with running(tmp_path, kernel, exabgp):
        exabgp.wait_for("neighbor 10.99.0.1 withdraw route 10.0.0.9/32")
        exabgp.wait_for("announce route 10.0.0.1/32 next-hop self")  # identical: no UPDATE
        assert not any("withdraw route 10.0.0.1/32" in line for line in exabgp.commands())


def test_nothing_is_sent_until_every_source_listed(tmp_path: Path) -> None:
    kernel = FakeKernel([route("10.0.0.1/32")], [VETH])
    exabgp = RecordingExaBGP(rib=["10.99.0.1 ipv4 unicast 10.0.0.9/32 next-hop 10.99.0.2"])
    source = FakeSource("files", list_at_start=False)
    with running(tmp_path, kernel, exabgp, [source]) as app:
        wait_until(lambda: len(exabgp.lines) >= 2, what="version and the RIB read")
        assert app.call(lambda: app.announcer.reconciler.gate(
            app.announcer.world, app.announcer.table, app.announcer.clock()
        ).waiting) == ("files",)  # fmt: skip
        assert exabgp.commands() == []
        app.call(lambda: source.push(SourceListed("files", ())))
        exabgp.wait_for("neighbor 10.99.0.1 withdraw route 10.0.0.9/32")
        exabgp.wait_for("announce route 10.0.0.1/32 next-hop self")


def test_a_held_mass_withdraw_shows_in_status(tmp_path: Path) -> None:
    prefixes = [f"10.0.0.{i}/32" for i in range(1, 13)]
    kernel = FakeKernel([route(p) for p in prefixes], [VETH])
    exabgp = RecordingExaBGP()
    web = Instance("files", "web", "web", InstanceState.SERVING, ips=(ip_address("10.0.0.1"),))
    source = FakeSource("files", [web])
    with running(tmp_path, kernel, exabgp, [source]) as app:
        exabgp.wait_for(f"announce attributes next-hop self nlri {' '.join(prefixes)}")
        app.call(lambda: source.push(SourceLost("files", app.announcer.clock(), "gone")))
        app.call(lambda: kernel.push(*(RouteRemoved(route(p)) for p in prefixes[1:])))
        status = wait_until(
            lambda: [
                row
                for row in app.call(app.announcer.status)["decisions"]  # type: ignore[index]
                if row["reason"] == "withdraw_held"
            ],
            what="held withdraws in status",
        )
        assert {row["prefix"] for row in status} == set(prefixes[1:])
        assert all(row["announced"] for row in status)
        assert not any(line.startswith("withdraw") for line in exabgp.commands())


UP = (
    '{ "type": "state", "neighbor": { "address": { "local": "10.99.0.2", "peer": "10.99.0.1" }, '
    '"state": "up" } }'
)


def test_end_of_rib_goes_after_the_routes_and_only_once_the_sources_listed(tmp_path: Path) -> None:
    """exabgp.manual_eor (graceful restart): the peer keeps a restarted host's routes as
    stale until our End-of-RIB, which must follow every route that is still valid."""
    kernel = FakeKernel([route("10.0.0.1/32")], [VETH])
    exabgp = RecordingExaBGP()
    source = FakeSource("files", list_at_start=False)
    settings = {"exabgp": {"watchdog_seconds": 0, "verify_interval_seconds": 0, "manual_eor": True}}
    with running(tmp_path, kernel, exabgp, [source], settings) as app:
        wait_until(lambda: len(exabgp.lines) >= 2, what="version and the RIB read")
        exabgp.tell(UP)
        wait_until(lambda: app.call(lambda: app.announcer.sink.eor_pending), what="the up noticed")
        assert exabgp.commands() == []  # a source has not listed: no route, no End-of-RIB
        app.call(lambda: source.push(SourceListed("files", ())))
        exabgp.wait_for("neighbor 10.99.0.1 announce eor ipv6 unicast")
        commands = exabgp.commands()
        assert commands.index("announce route 10.0.0.1/32 next-hop self") < commands.index(
            "neighbor 10.99.0.1 announce eor ipv4 unicast"
        )
        exabgp.tell(UP)  # a session flap while ExaBGP stays up: End-of-RIB again
        wait_until(
            lambda: exabgp.commands().count("neighbor 10.99.0.1 announce eor ipv4 unicast") == 2
        )


def _checked(ip: str) -> Instance:
    from announcer.spec.checks import parse_check
    from announcer.spec.labels import ServiceSpec

    spec = ServiceSpec(ips=(ip_address(ip),), check=parse_check("tcp:80", allow_exec=False))
    return Instance("files", "web", "web", InstanceState.SERVING, 0.0, spec.ips, spec)


@pytest.mark.parametrize("hold", [10.0, 0.0])
def test_end_of_rib_waits_for_first_health_checks_within_the_hold(
    tmp_path: Path, hold: float
) -> None:
    """After a graceful restart every route of a checked instance is check_pending for its
    first probes: an End-of-RIB then would make the peer flush the stale route and take the
    host out of rotation until the check passes (measured in the lab: 0.2-0.35 s). So it
    waits for the checks, at most exabgp.eor_max_hold_seconds after the start."""
    from announcer.health.probes import ProbeResult
    from announcer.spec.checks import CheckTarget

    answered = threading.Event()

    async def probe(target: CheckTarget) -> ProbeResult:
        while not answered.is_set():
            await asyncio.sleep(0.01)
        return ProbeResult(True, "test")

    kernel = FakeKernel([route("10.0.0.1/32")], [VETH])
    exabgp = RecordingExaBGP()
    source = FakeSource("files", [_checked("10.0.0.1")])
    settings = {"exabgp": {"watchdog_seconds": 0, "verify_interval_seconds": 0,
                           "manual_eor": True, "eor_max_hold_seconds": hold}}  # fmt: skip
    announcer = Announcer(
        config(tmp_path, **settings), exabgp.channel(), kernel=kernel.port(),
        sources=[source], probe=probe,
    )  # fmt: skip
    app = Running(announcer)
    app.thread.start()
    try:
        wait_until(lambda: len(exabgp.lines) >= 2, what="version and the RIB read")
        exabgp.tell(UP)
        if hold:
            wait_until(lambda: app.call(lambda: announcer.sink.eor_pending), what="the up")
            wait_until(lambda: app.call(lambda: announcer._reconciles), what="a reconcile")
            assert not any("eor" in c for c in exabgp.commands())  # the check is pending
            answered.set()
            exabgp.wait_for("neighbor 10.99.0.1 announce eor ipv4 unicast")
            commands = exabgp.commands()
            announce = commands.index("announce route 10.0.0.1/32 next-hop self")
            assert announce < commands.index("neighbor 10.99.0.1 announce eor ipv4 unicast")
        else:  # no hold: End-of-RIB without the route, whose check never answers
            exabgp.wait_for("neighbor 10.99.0.1 announce eor ipv4 unicast")
            assert not any(c.startswith("announce route") for c in exabgp.commands())
    finally:
        answered.set()
        exabgp.close()
        app.thread.join(10)


def test_a_line_exabgp_never_answers_ends_the_announcer_even_under_steady_churn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ExaBGP 4.2.21 answers nothing to a line whose parsing raises: every later reply then
    looks one line late and the stall clock never runs out while changes keep coming. A
    query barrier (written only once everything before it is answered) stops the replies,
    and the announcer exits for a resync (tests/integration/test_exabgp4_silence.py shows
    the respawn against the real 4.2.21)."""
    caplog.set_level("INFO", logger="announcer")
    kernel = FakeKernel([], [VETH])
    exabgp = RecordingExaBGP(ignore=lambda line: "10.0.0.99/32" in line)
    settings = {"exabgp": {"watchdog_seconds": 0, "verify_interval_seconds": 0,
                           "ack_timeout_seconds": 1.0}}  # fmt: skip
    with running(tmp_path, kernel, exabgp, sections=settings) as app:
        wait_until(lambda: "show adj-rib out" in exabgp.lines, what="the start-up")
        app.call(lambda: kernel.push(RouteAdded(route("10.0.0.99/32"))))
        exabgp.wait_for("announce route 10.0.0.99/32 next-hop self")
        n = 0
        while app.thread.is_alive() and n < 100:  # a change every 0.1 s, for up to 10 s
            n += 1
            app.call(lambda n=n: kernel.push(RouteAdded(route(f"10.0.1.{n}/32"))))
            app.thread.join(0.1)  # a pace for the churn, not a synchronisation
        assert not app.thread.is_alive(), "the announcer kept waiting for a lost reply"
    assert app.code == 1
    assert "exabgp_barrier" in caplog.text  # queued, never written: one reply is missing
    assert "exabgp_not_acknowledging" in caplog.text
