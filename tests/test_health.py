"""Health checks, the pure parts: the check grammar, rise/fall hysteresis, and the monitor's
scheduling and emitting driven by a scripted probe (no network)."""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from collections.abc import Callable
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.events import HealthObserved
from announcer.health.hysteresis import Hysteresis
from announcer.health.monitor import HealthMonitor, ScheduleStats, safe_detail
from announcer.health.probes import ProbeResult
from announcer.spec.checks import (
    MAX_DETAIL,
    CheckError,
    CheckSpec,
    CheckTarget,
    parse_check,
    render_check,
)

# --------------------------------------------------------------------------- grammar

GOOD = [
    ("tcp:8080", CheckSpec("tcp", port=8080)),
    ("http:8080/healthz", CheckSpec("http", port=8080, path="/healthz")),
    ("http:80", CheckSpec("http", port=80)),
    (
        "https:8443/ready?x=1 status=204",
        CheckSpec("https", port=8443, path="/ready?x=1", expect_status=204),
    ),
    (
        "udp:53 send=00ff expect=ABcd",
        CheckSpec("udp", port=53, send=b"\x00\xff", expect=b"\xab\xcd"),
    ),
    ("udp:9", CheckSpec("udp", port=9)),
    (
        "exec:/usr/local/bin/check-dns --fast",
        CheckSpec("exec", command=("/usr/local/bin/check-dns", "--fast")),
    ),
    (
        "exec:/bin/check a=b interval=2 rise=3",  # options are the trailing timing keys only
        CheckSpec("exec", command=("/bin/check", "a=b"), interval=2.0, rise=3),
    ),
    (
        "tcp:1 interval=1 timeout=0.5 rise=2 fall=2",
        CheckSpec("tcp", port=1, timeout=0.5),
    ),
    ("tcp:65535 interval=0.2", CheckSpec("tcp", port=65535, interval=0.2, timeout=0.2)),
    ("  tcp:22   fall=1  ", CheckSpec("tcp", port=22, fall=1)),
    (
        "tcp:22 interval=3600 timeout=60 rise=10",
        CheckSpec("tcp", port=22, interval=3600, timeout=60, rise=10),
    ),
    ("tcp:22 interval=0.1 timeout=0.05", CheckSpec("tcp", port=22, interval=0.1, timeout=0.05)),
    ("http:80/a%20b;c=d:e@f/", CheckSpec("http", port=80, path="/a%20b;c=d:e@f/")),
    ("tcp:80 fast-interval=0.5", CheckSpec("tcp", port=80, fast_interval=0.5)),
    (
        "exec:/bin/check a interval=2 fast-interval=0.1",
        CheckSpec("exec", command=("/bin/check", "a"), interval=2.0, fast_interval=0.1),
    ),
]


@pytest.mark.parametrize(("text", "spec"), GOOD, ids=[t for t, _ in GOOD])
def test_good_checks_parse(text: str, spec: CheckSpec) -> None:
    assert parse_check(text, allow_exec=True) == spec
    assert parse_check(render_check(spec), allow_exec=True) == spec


HOSTILE = [
    ("", "empty"),
    ("   ", "empty"),
    ("tcp", "expected kind:target"),
    ("tcp 80", "expected kind:target"),
    ("TCP:80", "expected kind:target"),
    ("icmp:0", "expected kind:target"),
    ("tcp:", "port"),
    ("tcp:0", "port"),
    ("tcp:65536", "port"),
    ("tcp:080800", "port"),
    ("tcp:+80", "port"),
    ("tcp:80;reboot", "port"),
    ("tcp:80\nannounce route 1.2.3.4/32 next-hop self", "printable ASCII"),
    ("tcp:80\r", "printable ASCII"),
    ("tcp:80\tinterval=1", "printable ASCII"),
    ("tcp:\uff18\uff10", "printable ASCII"),  # fullwidth digits
    ("tcp:80 interval=\u0661", "printable ASCII"),  # arabic-indic one
    ("tcp\u200b:80", "printable ASCII"),  # zero-width space
    ("tcp:80/healthz", "path applies to http"),
    ("http:80/a#frag", "path"),
    ('http:80/a"b', "path"),
    ("http:80/" + "a" * 300, "path"),
    ("http:80 status=99", "status"),
    ("http:80 status=600", "status"),
    ("http:80 status=2OO", "status"),
    ("tcp:80 status=200", "option"),
    ("tcp:80 send=00", "option"),
    ("udp:53 send=0", "hex"),
    ("udp:53 send=zz", "hex"),
    ("udp:53 send=" + "00" * 129, "hex"),
    ("tcp:80 interval", "option"),
    ("tcp:80 =1", "option"),
    ("tcp:80 color=red", "option"),
    ("tcp:80 rise=2 rise=3", "twice"),
    ("tcp:80 interval=0.05", "interval"),
    ("tcp:80 interval=3601", "interval"),
    ("tcp:80 interval=1e3", "seconds"),
    ("tcp:80 interval=inf", "seconds"),
    ("tcp:80 interval=nan", "seconds"),
    ("tcp:80 interval=-1", "seconds"),
    ("tcp:80 interval=0.0001", "seconds"),
    ("tcp:80 interval=1_0", "seconds"),
    ("tcp:80 timeout=0.01", "timeout"),
    ("tcp:80 timeout=2", "longer than interval"),
    ("tcp:80 interval=0.5 timeout=0.6", "longer than interval"),
    ("tcp:80 interval=3600 timeout=61", "timeout"),
    ("tcp:80 rise=0", "rise"),
    ("tcp:80 fall=11", "fall"),
    ("tcp:80 fall=-1", "count"),
    ("tcp:80 rise=2.0", "count"),
    ("tcp:" + "1" * 600, "characters, at most"),
    ("exec:bin/check", "absolute"),
    ("exec:", "absolute"),
    ("exec:/bin/sh -c 'reboot'", "argument"),
    ("exec:/bin/check;reboot", "argument"),
    ("exec:/bin/check $(reboot)", "argument"),
    ("exec:/bin/check `id`", "argument"),
    ("exec:/bin/check a|b", "argument"),
    ("exec:/bin/check " + "x " * 40, "arguments, at most"),
]


@pytest.mark.parametrize(("text", "why"), HOSTILE, ids=[repr(t[:40]) for t, _ in HOSTILE])
def test_hostile_checks_are_refused_naming_the_text(text: str, why: str) -> None:
    with pytest.raises(CheckError) as caught:
        parse_check(text, allow_exec=True)
    message = str(caught.value)
    assert why in message
    assert message.startswith("check ")
    assert message.isascii()
    assert message.isprintable()  # one safe log line
    assert ascii(text[:20])[1:-1] in message  # names the offending text


@pytest.mark.parametrize("text", ["exec:/usr/local/bin/check", "exec:/bin/true interval=5"])
def test_exec_is_refused_unless_allowed(text: str) -> None:
    with pytest.raises(CheckError, match="config only"):
        parse_check(text, allow_exec=False)
    assert parse_check(text, allow_exec=True).kind == "exec"


def test_non_strings_are_refused() -> None:
    with pytest.raises(CheckError, match="must be a string"):
        parse_check(b"tcp:80", allow_exec=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"kind": "tcp"}, "port is required"),
        ({"kind": "exec", "port": 1, "command": ("/bin/true",)}, "no port"),
        ({"kind": "exec"}, "needs a command"),
        ({"kind": "tcp", "port": 1, "command": ("/bin/true",)}, "exec only"),
        ({"kind": "tcp", "port": 1, "path": "/x"}, "http/https only"),
        ({"kind": "http", "port": 1, "path": "x"}, "must start with /"),
        ({"kind": "http", "port": 1, "path": "/\r\nX: y"}, "URL characters"),
        ({"kind": "http", "port": 1, "expect_status": 700}, "status"),
        ({"kind": "tcp", "port": 1, "send": b"x"}, "udp only"),
        ({"kind": "udp", "port": 1, "send": b"x" * 129}, "at most"),
        ({"kind": "tcp", "port": 1, "interval": 0.5}, "longer than interval"),
        ({"kind": "tcp", "port": 1, "rise": 0}, "rise"),
        ({"kind": "ping", "port": 1}, "kind"),
        ({"kind": "exec", "command": ("/bin/x y",)}, "arguments"),
    ],
)
def test_specs_built_from_config_are_validated_too(fields: dict[str, object], why: str) -> None:
    with pytest.raises(CheckError, match=why) as caught:
        CheckSpec(**fields)  # type: ignore[arg-type]
    assert str(caught.value).isascii()


@given(st.text(max_size=600))
@settings(max_examples=300)
def test_any_text_is_a_spec_or_a_check_error(text: str) -> None:
    for allow_exec in (False, True):
        try:
            spec = parse_check(text, allow_exec=allow_exec)
        except CheckError as exc:
            message = str(exc)
        else:
            assert parse_check(render_check(spec), allow_exec=True) == spec
            continue
        assert message.isascii()
        assert message.isprintable()


_TOKENS = st.sampled_from(
    [
        "tcp:80",
        "http:8080/x?y=1",
        "https:443",
        "udp:53",
        "exec:/bin/true",
        "exec:rel",
        "interval=0.5",
        "interval=2",
        "timeout=0.2",
        "timeout=5",
        "fast-interval=0.1",
        "fast-interval=1.5",
        "rise=1",
        "rise=10",
        "fall=3",
        "fall=0",
        "status=204",
        "send=00ff",
        "expect=61",
        "send=0",
        "--flag",
        "a=b",
        ";",
        "/x",
    ]
)


@given(st.lists(_TOKENS, min_size=1, max_size=8).map(" ".join))
@settings(max_examples=500)
def test_grammar_like_text_is_a_spec_or_a_check_error(text: str) -> None:
    try:
        spec = parse_check(text, allow_exec=True)
    except CheckError as exc:
        message = str(exc)
    else:
        assert spec.timeout <= spec.interval
        assert 0.1 <= spec.fast <= spec.interval
        assert parse_check(render_check(spec), allow_exec=True) == spec
        return
    assert ascii(text[:20])[1:-1] in message


# --------------------------------------------------------------------------- hysteresis


def verdicts(rise: int, fall: int, results: str) -> str:
    """Feed results ('+' ok, '-' failed); the verdict after each: '?' undecided, 'U', 'D'."""
    machine = Hysteresis(rise, fall)
    shown = {None: "?", True: "U", False: "D"}
    out = []
    for ch in results:
        before = machine.verdict
        changed = machine.observe(ch == "+")
        assert changed == (machine.verdict != before)
        out.append(shown[machine.verdict])
    return "".join(out)


@pytest.mark.parametrize(
    ("rise", "fall", "results", "expected"),
    [
        (2, 2, "++", "?U"),
        (2, 2, "--", "?D"),
        (2, 2, "+-+-+-", "??????"),  # flapping never decides
        (2, 2, "++-+-+", "?UUUUU"),  # single failures never take it down
        (2, 2, "++--", "?UUD"),
        (2, 2, "++--+-++", "?UUDDDDU"),
        (3, 1, "+++-", "??UD"),
        (3, 1, "++-+++", "??DDDU"),
        (1, 3, "-+", "?U"),
        (1, 3, "+---", "UUUD"),
        (1, 1, "+-+-", "UDUD"),
        (10, 10, "+" * 9 + "-" * 9 + "+" * 10, "?" * 27 + "U"),
    ],
)
def test_rise_and_fall_boundaries(rise: int, fall: int, results: str, expected: str) -> None:
    assert verdicts(rise, fall, results) == expected


@pytest.mark.parametrize(
    ("interval", "fast"), [(1.0, 0.2), (5.0, 1.0), (0.3, 0.1), (0.1, 0.1), (3600.0, 720.0)]
)
def test_the_default_fast_interval_is_a_fifth_of_the_interval(interval: float, fast: float) -> None:
    spec = CheckSpec("tcp", port=80, interval=interval, timeout=0.05)
    assert spec.fast == fast
    assert CheckSpec("tcp", port=80, fast_interval=0.7).fast == 0.7


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("tcp:80 fast-interval=2", "fast-interval 2 is not 0.1 s..interval (1 s)"),
        ("tcp:80 fast-interval=0.05", "fast-interval 0.05 is not 0.1 s..interval (1 s)"),
        ("tcp:80 fast-interval=fast", "fast-interval='fast' is not seconds"),
    ],
)
def test_bad_fast_intervals_are_refused_naming_the_value(text: str, why: str) -> None:
    with pytest.raises(CheckError, match=re.escape(why)):
        parse_check(text, allow_exec=False)


@pytest.mark.parametrize(
    ("verdict", "results", "settling"),
    [
        (None, "", [True]),
        (None, "+", [True, True]),  # one success of rise 2: still undecided
        (None, "++", [True, True, False]),
        (True, "-", [False, True]),  # healthy, one failure: a fall may be coming
        (True, "-+", [False, True, False]),
        (True, "--", [False, True, False]),  # fell: settled again
        (False, "+", [False, True]),
        (False, "+-", [False, True, False]),
    ],
)
def test_settling_while_a_verdict_may_change(
    verdict: bool | None, results: str, settling: list[bool]
) -> None:
    machine = Hysteresis(2, 2, verdict)
    seen = [machine.settling]
    for r in results:
        machine.observe(r == "+")
        seen.append(machine.settling)
    assert seen == settling


def test_a_carried_verdict_needs_fall_failures_to_change() -> None:
    machine = Hysteresis(2, 3, verdict=True)
    assert [machine.observe(False) for _ in range(3)] == [False, False, True]
    assert machine.verdict is False


@given(st.integers(1, 10), st.integers(1, 10), st.lists(st.booleans(), max_size=60))
def test_hysteresis_matches_a_reference_model(rise: int, fall: int, results: list[bool]) -> None:
    """Reference: the verdict is the result of the latest streak that reached its threshold."""
    machine = Hysteresis(rise, fall)
    for i, ok in enumerate(results):
        machine.observe(ok)
        expected: bool | None = None
        for end in range(1, i + 2):
            tail = results[:end]
            run = next((j for j, r in enumerate(reversed(tail)) if r != tail[-1]), len(tail))
            if run >= (rise if tail[-1] else fall):
                expected = tail[-1]
        assert machine.verdict is expected


# --------------------------------------------------------------------------- detail & stats


def test_details_are_escaped_and_short() -> None:
    assert safe_detail("tcp 10.0.0.1:80 connected (2/2)") == "tcp 10.0.0.1:80 connected (2/2)"
    hostile = safe_detail("http answered 'x\r\nwithdraw route 1.2.3.4/32' \u202e" + "y" * 500)
    assert hostile.isascii()
    assert hostile.isprintable()
    assert len(hostile) <= MAX_DETAIL


def test_schedule_stats_percentiles() -> None:
    stats = ScheduleStats()
    for late in [0.0005] * 90 + [0.015] * 9 + [2.0]:
        stats.record(late)
    assert stats.probes == 100
    assert stats.percentile_ms(0.5) == 1
    assert stats.percentile_ms(0.99) == 20
    assert stats.percentile_ms(1.0) == float("inf")
    assert stats.late_max == 2.0


# --------------------------------------------------------------------------- monitor


class ScriptedProbe:
    """Answers each target's probes from a script; records when each probe started."""

    def __init__(self) -> None:
        self.healthy: dict[tuple[str, str], bool] = {}
        self.calls: dict[tuple[str, str], int] = {}
        self.raise_for: set[tuple[str, str]] = set()

    async def __call__(self, target: CheckTarget) -> ProbeResult:
        self.calls[target.key] = self.calls.get(target.key, 0) + 1
        if target.key in self.raise_for:
            raise RuntimeError("probe bug")
        ok = self.healthy.get(target.key, False)
        return ProbeResult(ok, f"scripted {'ok' if ok else 'down'}\n")


def target(name: str, *, interval: float = 0.1, rise: int = 2, fall: int = 2) -> CheckTarget:
    spec = CheckSpec(
        "tcp", port=80, interval=interval, timeout=min(interval, 0.05), rise=rise, fall=fall
    )
    return CheckTarget(("test", name), ip_address("127.0.0.1"), spec)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for condition, checking on every loop turn, up to a deadline."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.fixture
def scripted() -> tuple[ScriptedProbe, list[HealthObserved], HealthMonitor]:
    probe = ScriptedProbe()
    events: list[HealthObserved] = []
    return probe, events, HealthMonitor(events.append, probe=probe, rng=random.Random(7))


def run_with(monitor: HealthMonitor, scenario: Callable[[], object]) -> None:
    async def main() -> None:
        runner = asyncio.create_task(monitor.run())
        try:
            await scenario()  # type: ignore[misc]
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(asyncio.wait_for(main(), 20))


def test_monitor_emits_only_on_verdict_changes(
    scripted: tuple[ScriptedProbe, list[HealthObserved], HealthMonitor],
) -> None:
    probe, events, monitor = scripted
    a, b = target("a"), target("b", fall=1)
    probe.healthy[a.key] = True
    monitor.set_targets([a, b])  # before run(): started when it runs
    assert monitor.state() == {a.key: None, b.key: None}

    async def scenario() -> None:
        await until(lambda: len(events) == 2)
        assert monitor.state() == {a.key: True, b.key: False}
        calls = dict(probe.calls)
        await until(lambda: all(probe.calls[k] >= calls[k] + 3 for k in calls))
        assert len(events) == 2  # steady verdicts emit nothing
        probe.healthy[a.key] = False
        await until(lambda: len(events) == 3)

    run_with(monitor, scenario)
    assert all(e.at > 0 for e in events)  # the monitor's clock: slow start counts from it
    untimed = [replace(e, at=0.0) for e in events]
    assert sorted(untimed[:2], key=lambda e: e.key) == [
        HealthObserved(a.key, True, "scripted ok\\n (2/2)"),
        HealthObserved(b.key, False, "scripted down\\n (1/1)"),
    ]
    assert untimed[2] == HealthObserved(a.key, False, "scripted down\\n (2/2)")


def test_set_targets_starts_stops_and_restarts(
    scripted: tuple[ScriptedProbe, list[HealthObserved], HealthMonitor],
) -> None:
    probe, events, monitor = scripted
    a, b = target("a"), target("b")
    probe.healthy[a.key] = probe.healthy[b.key] = True

    async def scenario() -> None:
        monitor.set_targets([a])
        await until(lambda: monitor.state() == {a.key: True})
        monitor.set_targets([a])  # idempotent: no restart, no new event
        monitor.set_targets([a, b])
        await until(lambda: monitor.state() == {a.key: True, b.key: True})
        monitor.set_targets([b])
        assert monitor.state() == {b.key: True}
        stopped_at = probe.calls[a.key]
        # a changed spec restarts the target but keeps its verdict until fall failures
        probe.healthy[b.key] = False
        slower = CheckTarget(
            b.key, b.address, CheckSpec("tcp", port=81, interval=0.1, timeout=0.05, fall=3)
        )
        monitor.set_targets([slower])
        assert monitor.state() == {b.key: True}
        await until(lambda: monitor.state() == {b.key: False})
        assert probe.calls[a.key] == stopped_at  # a's task is gone
        assert events[-1].detail.endswith("(3/3)")

    run_with(monitor, scenario)
    assert [(e.key[1], e.healthy) for e in events] == [("a", True), ("b", True), ("b", False)]


def test_a_crashing_probe_or_emit_is_a_failure_not_a_dead_monitor(
    scripted: tuple[ScriptedProbe, list[HealthObserved], HealthMonitor],
) -> None:
    probe, _, _ = scripted
    a, b = target("a", fall=1), target("b", rise=1)
    probe.raise_for.add(a.key)
    probe.healthy[b.key] = True
    seen: list[HealthObserved] = []

    def emit(event: HealthObserved) -> None:
        seen.append(event)
        raise RuntimeError("runtime bug")

    monitor = HealthMonitor(emit, probe=probe)
    monitor.set_targets([a, b])

    async def scenario() -> None:
        await until(lambda: monitor.state() == {a.key: False, b.key: True})
        calls = probe.calls[a.key]
        await until(lambda: probe.calls[a.key] > calls + 2)  # still probing

    run_with(monitor, scenario)
    assert {(e.key[1], e.healthy) for e in seen} == {("a", False), ("b", True)}
    assert "probe error RuntimeError" in monitor.details()[a.key]


def test_run_cancels_every_check_task_on_exit(
    scripted: tuple[ScriptedProbe, list[HealthObserved], HealthMonitor],
) -> None:
    probe, _, monitor = scripted
    monitor.set_targets([target(str(i)) for i in range(20)])

    async def main() -> None:
        runner = asyncio.create_task(monitor.run())
        await until(lambda: len(probe.calls) == 20)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []

    asyncio.run(main())


def test_first_probes_are_spread_over_the_interval() -> None:
    starts: list[float] = []
    loop_time: list[Callable[[], float]] = []

    async def probe(t: CheckTarget) -> ProbeResult:
        starts.append(loop_time[0]())
        return ProbeResult(True, "ok")

    monitor = HealthMonitor(lambda e: None, probe=probe, rng=random.Random(1))
    monitor.set_targets([target(str(i), interval=1.0) for i in range(50)])

    async def main() -> None:
        loop_time.append(asyncio.get_running_loop().time)
        t0 = loop_time[0]()
        runner = asyncio.create_task(monitor.run())
        await until(lambda: len(starts) >= 50)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        first = sorted(s - t0 for s in starts[:50])
        assert first[-1] - first[0] > 0.5  # not a thundering herd
        assert first[-1] < 1.2

    asyncio.run(main())


def test_every_example_in_docs_health_md_parses() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "health.md").read_text()
    block = doc.split("Examples:\n\n```\n", 1)[1].split("```", 1)[0]
    examples = block.strip().splitlines()
    assert len(examples) >= 5
    for text in examples:
        assert parse_check(text, allow_exec=True).interval >= 0.1


class _NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def test_settling_verdicts_are_probed_at_the_fast_interval() -> None:
    """interval 1 s, fast 0.1 s: while a verdict may change the next probe comes 0.1 s
    later, otherwise 1 s (the upper bound leaves 0.4 s for a loaded machine)."""
    starts: list[tuple[float, bool]] = []
    healthy = [True]
    loop_time: list[Callable[[], float]] = []

    async def probe(t: CheckTarget) -> ProbeResult:
        starts.append((loop_time[0](), healthy[0]))
        return ProbeResult(healthy[0], "scripted")

    events: list[HealthObserved] = []
    monitor = HealthMonitor(events.append, probe=probe, rng=_NoJitter())
    spec = CheckSpec("tcp", port=80, interval=1.0, timeout=0.05, fast_interval=0.1)
    monitor.set_targets([CheckTarget(("test", "a"), ip_address("127.0.0.1"), spec)])

    async def main() -> None:
        loop_time.append(asyncio.get_running_loop().time)
        runner = asyncio.create_task(monitor.run())
        await until(lambda: len(events) == 1)  # rise 2: up after probes 1 and 2
        await until(lambda: len(starts) == 3)  # steady: probe 3 a full interval later
        healthy[0] = False
        await until(lambda: len(events) == 2)  # fall 2: probes 4 and 5
        await until(lambda: len(starts) == 6)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(asyncio.wait_for(main(), 20))
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(starts)]
    fast, steady = [gaps[0], gaps[3]], [gaps[1], gaps[2], gaps[4]]
    # probes keep a fixed schedule, so one gap may be a little under its slot length
    assert all(0.09 <= g < 0.5 for g in fast), gaps
    assert all(g >= 0.95 for g in steady), gaps
    assert [e.healthy for e in events] == [True, False]
