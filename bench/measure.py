"""The figures: latency trials, bursts, churn, startup and resync, on a running Lab + Tool.

Every loop is bounded in count and time; every wait has a deadline. A figure that could
not be measured is recorded as ``{"skipped"/"failed": reason}``, never as a number.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from bench.nl import dump_host_routes, wait_until
from bench.setups import AnnouncerTool, Lab, Tool, cpu_seconds, pid_rss_hwm_mb, reset_peak
from bench.stats import summarize
from tests.netlab import sh


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def block(index: int, count: int) -> list[IPv4Address]:
    """``count`` distinct /32s of block ``index`` (128 blocks of 131,072 addresses in 10/8):
    no prefix is reused across figures, so the announcer's flap damping never applies."""
    assert 0 <= index < 128
    assert count < 1 << 17
    base = int(IPv4Address("10.0.0.0")) + (index << 17)
    return [IPv4Address(base + 1 + i) for i in range(count)]


@dataclass
class LatencyTrials:
    announce_wire: list[float] = field(default_factory=list)
    announce_fib: list[float] = field(default_factory=list)
    withdraw_wire: list[float] = field(default_factory=list)
    withdraw_fib: list[float] = field(default_factory=list)
    lost: int = 0
    # (prefix, added at, deleted at) of every trial
    prefixes: list[tuple[IPv4Address, float, float]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "announce_wire_ms": summarize(self.announce_wire),
            "announce_fib_ms": summarize(self.announce_fib),
            "withdraw_wire_ms": summarize(self.withdraw_wire),
            "withdraw_fib_ms": summarize(self.withdraw_fib),
            "lost_trials": self.lost,
            "loadavg_1m": loadavg(),
        }


def latency(lab: Lab, prefixes: list[IPv4Address], gap: float = 0.02) -> LatencyTrials:
    """One prefix at a time: add, wait until on the wire and in the leaf FIB, delete, wait."""
    out = LatencyTrials()
    for prefix in prefixes:
        dst = int(prefix)
        t_add = lab.writer.add(prefix)
        fib_ok = wait_until(lambda d=dst, t=t_add: lab.fib.added.get(d, 0) >= t, 5, 0.001)
        wire = lab.wire.first_after("announced", dst, t_add)
        if not fib_ok or wire is None:
            out.lost += 1
        else:
            out.announce_fib.append((lab.fib.added[dst] - t_add) * 1000)
            out.announce_wire.append((wire - t_add) * 1000)
        time.sleep(gap)
        t_del = lab.writer.delete(prefix)
        fib_ok = wait_until(lambda d=dst, t=t_del: lab.fib.deleted.get(d, 0) >= t, 5, 0.001)
        wire = lab.wire.first_after("withdrawn", dst, t_del)
        if not fib_ok or wire is None:
            out.lost += 1
        else:
            out.withdraw_fib.append((lab.fib.deleted[dst] - t_del) * 1000)
            out.withdraw_wire.append((wire - t_del) * 1000)
        out.prefixes.append((prefix, t_add, t_del))
        time.sleep(gap)
    return out


def _batch(lab: Lab, verb: str, prefixes: list[IPv4Address]) -> float:
    path = lab.workdir / f"{verb}.batch"
    path.write_text("".join(f"route {verb} {p}/32 dev vethr1\n" for p in prefixes))
    t0 = time.monotonic()
    sh(lab.host, "ip", "-batch", str(path), timeout=300)
    return t0


def _peak(tool: Tool) -> dict[str, float]:
    return {
        role: round(sum(pid_rss_hwm_mb(p) for p in pids), 1)
        for role, pids in tool.processes().items()
    }


def _cpu(tool: Tool) -> dict[str, float]:
    return {role: sum(cpu_seconds(p) for p in pids) for role, pids in tool.processes().items()}


def _spent(before: dict[str, float], tool: Tool) -> dict[str, float]:
    after = _cpu(tool)
    return {role: round(after[role] - before.get(role, 0.0), 2) for role in after}


Change = Callable[[list[IPv4Address]], float]  # applies a change, returns its start time


def burst(lab: Lab, tool: Tool, prefixes: list[IPv4Address], timeout: float,
          add: Change | None = None, delete: Change | None = None) -> dict[str, Any]:  # fmt: skip
    """All added at once (ip -batch, or ``add``) -> all at the leaf; all deleted -> all gone.
    CPU seconds per role of the tool for each half (announce: t0 until the last route is
    in the leaf FIB)."""
    wanted = {int(p) for p in prefixes}
    for pids in tool.processes().values():
        for pid in pids:
            reset_peak(pid)
    result: dict[str, Any] = {"routes": len(prefixes), "loadavg_1m_before": loadavg()}
    cpu0 = _cpu(tool)
    t0 = (add or (lambda p: _batch(lab, "add", p)))(prefixes)
    result["kernel_add_seconds"] = round(time.monotonic() - t0, 3)
    ok = wait_until(lambda: lab.fib.count(wanted) == len(wanted), timeout, 0.02)
    if not ok:  # the monitor may have overrun: ask the kernel
        ok = wanted <= dump_host_routes(lab.leaf)
    if not ok:
        result["failed"] = f"not all announced within {timeout:g}s"
        return result
    result["cpu_seconds_announce"] = _spent(cpu0, tool)
    last_fib = max(lab.fib.added[d] for d in wanted)
    seen, last_wire = lab.wire.last_of("announced", wanted, t0)
    result["announce_fib_seconds"] = round(last_fib - t0, 3)
    result["announce_wire_seconds"] = round(last_wire - t0, 3) if last_wire else None
    result["wire_announced_seen"] = seen
    result["peak_rss_mb"] = _peak(tool)
    result["peak_rss_mb_total"] = round(sum(result["peak_rss_mb"].values()), 1)
    cpu1 = _cpu(tool)
    t1 = (delete or (lambda p: _batch(lab, "del", p)))(prefixes)
    ok = wait_until(lambda: lab.fib.count(wanted) == 0, timeout, 0.02)
    if not ok:
        ok = not (wanted & dump_host_routes(lab.leaf))
    if not ok:
        result["failed"] = f"not all withdrawn within {timeout:g}s"
        return result
    result["cpu_seconds_withdraw"] = _spent(cpu1, tool)
    last_fib = max(lab.fib.deleted[d] for d in wanted)
    seen, last_wire = lab.wire.last_of("withdrawn", wanted, t1)
    result["withdraw_fib_seconds"] = round(last_fib - t1, 3)
    result["withdraw_wire_seconds"] = round(last_wire - t1, 3) if last_wire else None
    result["wire_withdrawn_seen"] = seen
    result["loadavg_1m_after"] = loadavg()
    return result


def churn(
    lab: Lab,
    tool: Tool,
    prefixes: list[IPv4Address],
    rate: int,
    seconds: float,
    live: int = 500,
    check_leaf: bool = True,
) -> tuple[list[tuple[str, str, float]], dict[str, Any]]:
    """``rate`` changes/s: each step adds a new prefix and deletes the one added ``live``
    steps earlier (every prefix flaps once: no damping). Leaf == host checked at the end
    (unless ``check_leaf`` is false: no BGP session)."""
    pids = [p for ps in tool.processes().values() for p in ps]
    roles = tool.processes()
    cpu0 = {role: sum(cpu_seconds(p) for p in ps) for role, ps in roles.items()}
    steps = min(len(prefixes), int(rate * seconds / 2))
    interval = 2.0 / rate
    start = time.monotonic()
    sent = 0
    changes: list[tuple[str, str, float]] = []  # (prefix, verb, sent at) for the probe
    for i in range(steps):
        due = start + i * interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        changes.append((str(prefixes[i]), "announce", lab.writer.add(prefixes[i])))
        sent += 1
        if i >= live:
            gone = prefixes[i - live]
            changes.append((str(gone), "withdraw", lab.writer.delete(gone)))
            sent += 1
        if now - start > seconds * 2:  # bounded even on a starved machine
            break
    wall = time.monotonic() - start
    cpu1 = {role: sum(cpu_seconds(p) for p in ps) for role, ps in roles.items()}
    host = {int(p) for p in prefixes} & dump_host_routes(lab.host)
    equal = check_leaf and wait_until(
        lambda: ({int(p) for p in prefixes} & dump_host_routes(lab.leaf)) == host, 60, 0.2
    )
    del pids
    return changes, {
        "changes": sent,
        "seconds": round(wall, 2),
        "achieved_rate": round(sent / wall, 1),
        "cpu_percent": {r: round(100 * (cpu1[r] - cpu0[r]) / wall, 1) for r in roles},
        "leaf_equals_host": equal if check_leaf else None,
        "host_routes_at_end": len(host),
        "loadavg_1m": loadavg(),
    }


def startup(lab: Lab, tool: Tool, prefixes: list[IPv4Address], timeout: float) -> dict[str, Any]:
    """Routes already in the kernel; the tool starts -> the full table at the leaf."""
    wanted = {int(p) for p in prefixes}
    _batch(lab, "add", prefixes)
    opens_before = len(lab.wire.opens)
    tool.start()
    t0 = tool.started_at
    ok = wait_until(lambda: lab.fib.count(wanted) == len(wanted), timeout, 0.02)
    result: dict[str, Any] = {"routes": len(prefixes), "loadavg_1m": loadavg()}
    if not ok:
        result["failed"] = f"not all announced within {timeout:g}s"
        return result
    last = max(lab.fib.added[d] for d in wanted)
    _, last_wire = lab.wire.last_of("announced", wanted, t0)
    result["start_to_leaf_fib_seconds"] = round(last - t0, 3)
    result["start_to_wire_seconds"] = round(last_wire - t0, 3) if last_wire else None
    opens = lab.wire.opens[opens_before:]
    if opens:
        result["start_to_open_seconds"] = round(opens[0] - t0, 3)
        if last_wire:
            result["open_to_wire_seconds"] = round(last_wire - opens[0], 3)
    return result


def resync(
    lab: Lab, tool: AnnouncerTool, keep: list[IPv4Address], fresh: IPv4Address, timeout: float
) -> dict[str, Any]:
    """kill -9 of the announcer; meanwhile one route is deleted and one added. Time from
    the kill until the respawned announcer made the leaf match (both changes on the wire),
    and whether any other route left the leaf."""
    gone = keep[0]
    others = {int(p) for p in keep[1:]}
    deletions_before = {d: lab.fib.deleted.get(d, 0.0) for d in others}
    killed_at = time.monotonic()
    old = tool.kill9()
    lab.writer.delete(gone)
    lab.writer.add(fresh)
    ok = wait_until(
        lambda: (
            lab.wire.first_after("withdrawn", int(gone), killed_at) is not None
            and lab.wire.first_after("announced", int(fresh), killed_at) is not None
        ),
        timeout,
        0.005,
    )
    if not ok:
        return {"failed": f"not resynced within {timeout:g}s"}
    done = max(
        lab.wire.first_after("withdrawn", int(gone), killed_at) or 0.0,
        lab.wire.first_after("announced", int(fresh), killed_at) or 0.0,
    )
    blips = sum(1 for d in others if lab.fib.deleted.get(d, 0.0) != deletions_before[d])
    new = [p for p in tool.announcer_pids() if p != old]
    return {
        "routes": len(keep),
        "kill_to_resynced_wire_seconds": round(done - killed_at, 3),
        "respawned": bool(new),
        "other_routes_that_left_the_leaf": blips,
        "loadavg_1m": loadavg(),
    }


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def run_quiet(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
