"""A netlink read reconciles in its own loop turn (no call_soon hop), unless the last
reconcile was slow: then it is scheduled and coalesces with what arrives meanwhile."""

from __future__ import annotations

from pathlib import Path

from announcer.daemon.app import COALESCE_FROM_SECONDS, Announcer
from announcer.events import RouteAdded
from announcer.testing import FakeKernel, RecordingExaBGP, wait_until
from tests.daemon.test_app import VETH, route, running


def _read(announcer: Announcer, kernel: FakeKernel, prefix: str, last: float) -> tuple[int, bool]:
    """On the loop's thread: a change read from the kernel after a reconcile that took
    ``last`` seconds; (lines in flight, reconcile pending) before the loop runs anything
    else."""
    announcer._last_reconcile_seconds = last
    kernel.queued.append(RouteAdded(route(prefix)))
    announcer.kernel._on_readable()
    return announcer.channel.in_flight, announcer._reconcile_handle is not None


def test_a_kernel_change_is_sent_within_the_read_that_saw_it(tmp_path: Path) -> None:
    kernel = FakeKernel([route("10.0.0.1/32")], [VETH])
    exabgp = RecordingExaBGP()
    with running(tmp_path, kernel, exabgp) as app:
        exabgp.wait_for("announce route 10.0.0.1/32 next-hop self")
        wait_until(lambda: app.call(app.announcer.settled), what="the first line answered")
        seen = app.call(lambda: _read(app.announcer, kernel, "10.0.0.2/32", 0.0))
        assert seen == (1, False)
        exabgp.wait_for("announce route 10.0.0.2/32 next-hop self")


def test_after_a_slow_reconcile_a_kernel_change_is_scheduled(tmp_path: Path) -> None:
    kernel = FakeKernel([route("10.0.0.1/32")], [VETH])
    exabgp = RecordingExaBGP()
    with running(tmp_path, kernel, exabgp) as app:
        exabgp.wait_for("announce route 10.0.0.1/32 next-hop self")
        wait_until(lambda: app.call(app.announcer.settled), what="the first line answered")
        slow = COALESCE_FROM_SECONDS * 2
        seen = app.call(lambda: _read(app.announcer, kernel, "10.0.0.2/32", slow))
        assert seen == (0, True)
        exabgp.wait_for("announce route 10.0.0.2/32 next-hop self")
