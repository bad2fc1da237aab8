"""200k route changes in one burst through a 1 MiB netlink buffer (forces ENOBUFS):
the announced set ends exactly equal to the kernel's, with the test playing ExaBGP."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.fake_exabgp import FakeExaBGP, final_state
from tests.integration.test_exabgp_frr import record
from tests.netlab import netns, poll, sh

pytestmark = [pytest.mark.netns, pytest.mark.faults, pytest.mark.slow]


def test_200k_changes_overrun_netlink_and_end_exact(tmp_path: Path) -> None:
    count = 100_000
    prefixes = [f"10.{1 + i // 65536}.{(i // 256) % 256}.{i % 256}/32" for i in range(count)]
    config = tmp_path / "announcer.yaml"
    config.write_text(
        "kernel:\n  interfaces: ['vethr*']\n  netlink_rcvbuf_bytes: 1048576\n  resync_interval_seconds: 3600\n"
        "policy:\n  allow: ['10.0.0.0/8']\n  max_routes: 200000\n"
        "exabgp:\n  watchdog_seconds: 0\n"
    )
    with netns("ovr") as ns:
        sh(ns, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        sh(ns, "ip", "link", "set", "vethr1", "up")
        sh(ns, "ip", "link", "set", "ctr1", "up")
        exa = FakeExaBGP(ns, config)
        try:
            exa.no_command_within(1.0)
            batch = tmp_path / "add.batch"
            batch.write_text("".join(f"route add {p} dev vethr1\n" for p in prefixes))
            t0 = time.monotonic()
            sh(ns, "ip", "-batch", str(batch), timeout=120)
            poll(lambda: len(final_state(exa.seen)) == count, 300, "100k announced", interval=0.5)
            announced = time.monotonic() - t0
            assert final_state(exa.seen) == set(prefixes)
            batch.write_text("".join(f"route del {p} dev vethr1\n" for p in prefixes))
            t1 = time.monotonic()
            sh(ns, "ip", "-batch", str(batch), timeout=120)
            poll(lambda: not final_state(exa.seen), 300, "100k withdrawn", interval=0.5)
            withdrawn = time.monotonic() - t1
        finally:
            exa.close(timeout=30)
    log = exa.stderr()
    assert "netlink_overrun" in log, "no overrun: the test proved nothing"
    record(
        "fault_overrun_200k",
        {
            "announce_100k_seconds": round(announced, 1),
            "withdraw_100k_seconds": round(withdrawn, 1),
            "overruns_logged": log.count("netlink_overrun"),
        },
    )
