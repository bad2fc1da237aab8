"""Per-stage breakdown of the announcer path from bench/probe.py's records (pure).

kernel add ──► netlink read ──► line queued ──► pipe write ──► ExaBGP reply / UPDATE on
the wire ──► leaf FIB. Each trial's stages are matched by prefix (netlink, queued line) and
by order (the n-th reply answers the n-th written line).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.stats import summarize


@dataclass
class ProbeLog:
    netlink: list[tuple[float, str]] = field(default_factory=list)  # (t, "+a.b.c.d,...")
    queued: list[tuple[float, str]] = field(default_factory=list)  # (t, line)
    written_at: list[float] = field(default_factory=list)  # per queued line index
    acked_at: list[float] = field(default_factory=list)  # per line index
    reconciles: list[tuple[float, float]] = field(default_factory=list)
    gc_pauses: list[tuple[float, int, float]] = field(default_factory=list)  # (t, gen, s)


def parse_probe(lines: Iterable[str]) -> ProbeLog:
    log = ProbeLog()
    started: float | None = None
    for raw in lines:
        tag, _, rest = raw.rstrip("\n").partition(" ")
        stamp, _, data = rest.partition(" ")
        try:
            when = float(stamp)
        except ValueError:
            continue
        if tag == "nl":
            log.netlink.append((when, data))
        elif tag == "q":
            log.queued.append((when, data))
        elif tag == "w":
            log.written_at.extend([when] * int(data or 0))
        elif tag == "a":
            log.acked_at.extend([when] * int(data or 0))
        elif tag == "gc":
            generation, _, seconds = data.partition(" ")
            log.gc_pauses.append((when, int(generation), float(seconds)))
        elif tag == "rs":
            started = when
        elif tag == "re" and started is not None:
            log.reconciles.append((started, when))
            started = None
    return log


class Index:
    """Lookups over a ProbeLog: netlink sightings per "+a.b.c.d" token, queued lines per
    prefix (both in time order)."""

    def __init__(self, log: ProbeLog) -> None:
        self.log = log
        self.netlink: dict[str, list[float]] = {}
        for when, data in log.netlink:
            for token in data.split(","):
                self.netlink.setdefault(token, []).append(when)
        self.queued: dict[str, list[int]] = {}
        for index, (_, line) in enumerate(log.queued):
            for word in line.split():
                if word[:1].isdigit() and "/" in word:
                    self.queued.setdefault(word, []).append(index)

    def first_netlink(self, token: str, after: float) -> float | None:
        times = self.netlink.get(token, [])
        at = bisect.bisect_left(times, after)
        return times[at] if at < len(times) else None

    def queued_index(self, prefix: str, after: float) -> int | None:
        for index in self.queued.get(prefix, []):
            if self.log.queued[index][0] >= after:
                return index
        return None


@dataclass
class Trial:
    prefix: str
    verb: str  # "announce" or "withdraw"
    t0: float  # kernel change sent
    wire: float | None
    fib: float | None


def stage_times(index_: Index, trial: Trial) -> dict[str, float] | None:
    """Milliseconds spent in each stage of one trial (None if the announcer's records are
    missing; the wire and FIB stages only when the trial saw them)."""
    log = index_.log
    sign = "+" if trial.verb == "announce" else "-"
    t_nl = index_.first_netlink(sign + trial.prefix, trial.t0)
    index = index_.queued_index(f"{trial.prefix}/32", trial.t0)
    if t_nl is None or index is None or index >= len(log.written_at):
        return None
    t_q = log.queued[index][0]
    t_w = log.written_at[index]
    stages = {
        "kernel_to_netlink_read": t_nl - trial.t0,
        "netlink_read_to_line_queued": t_q - t_nl,
        "queued_to_pipe_write": t_w - t_q,
        "kernel_to_pipe_write": t_w - trial.t0,  # the announcer's whole share
    }
    if trial.wire is not None:
        stages["pipe_write_to_wire"] = trial.wire - t_w
        stages["total_to_wire"] = trial.wire - trial.t0
        if trial.fib is not None:
            stages["wire_to_leaf_fib"] = trial.fib - trial.wire
    if index < len(log.acked_at):
        stages["pipe_write_to_exabgp_reply"] = log.acked_at[index] - t_w
    return {k: v * 1000 for k, v in stages.items()}


def breakdown(log: ProbeLog, trials: list[Trial]) -> dict[str, Any]:
    """Median / p99 per stage over the trials, per verb."""
    index_ = Index(log)
    result: dict[str, Any] = {}
    for verb in ("announce", "withdraw"):
        per_stage: dict[str, list[float]] = {}
        matched = 0
        for trial in trials:
            if trial.verb != verb:
                continue
            stages = stage_times(index_, trial)
            if stages is None:
                continue
            matched += 1
            for name, value in stages.items():
                per_stage.setdefault(name, []).append(value)
        result[verb] = {"trials": matched, **{k: summarize(v) for k, v in per_stage.items()}}
    durations = [(end - start) * 1000 for start, end in log.reconciles]
    result["reconcile_ms"] = summarize(durations)
    return result


def event_to_command(log: ProbeLog, changes: list[tuple[str, str, float]]) -> dict[str, Any]:
    """Churn: for each kernel change (prefix, verb, sent at), the time from the netlink read
    to its line being queued (inside the process), from the kernel change to the queue,
    and from the kernel change to the line written to ExaBGP's pipe (the announcer's
    share: "event -> line")."""
    index_ = Index(log)
    inside: list[float] = []
    outside: list[float] = []
    written: list[float] = []
    for prefix, verb, t0 in changes:
        sign = "+" if verb == "announce" else "-"
        t_nl = index_.first_netlink(sign + prefix, t0)
        at = index_.queued_index(f"{prefix}/32", t0)
        if t_nl is None or at is None:
            continue
        t_q = log.queued[at][0]
        inside.append((t_q - t_nl) * 1000)
        outside.append((t_q - t0) * 1000)
        if at < len(log.written_at):
            written.append((log.written_at[at] - t0) * 1000)
    return {
        "changes": len(changes),
        "matched": len(inside),
        "netlink_read_to_command_ms": summarize(inside),
        "kernel_change_to_command_ms": summarize(outside),
        "kernel_change_to_line_written_ms": summarize(written),
    }


def pace(log: ProbeLog, since: float, until: float) -> dict[str, Any]:
    """Where a burst's time went: when the announcer queued its lines, when they reached the
    pipe, when ExaBGP answered them (seconds after ``since``), and the reconciles."""

    def span(times: list[float]) -> dict[str, Any]:
        inside = [t - since for t in times if since <= t <= until]
        if not inside:
            return {"n": 0}
        return {"n": len(inside), "first_s": round(min(inside), 3), "last_s": round(max(inside), 3)}

    reconciles = [(s, e) for s, e in log.reconciles if since <= s <= until]
    return {
        "lines_queued": span([t for t, _ in log.queued]),
        "lines_written": span(log.written_at),
        "exabgp_replies": span(log.acked_at),
        "reconciles": len(reconciles),
        "reconcile_seconds_total": round(sum(e - s for s, e in reconciles), 3),
    }
