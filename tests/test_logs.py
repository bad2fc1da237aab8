"""Structured logs: key=value and JSON renderings, field parsing, rate-limited repeats."""

from __future__ import annotations

import io
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from announcer.daemon.logs import (
    JsonFormatter,
    KeyValueFormatter,
    RateLimitedHandler,
    RepeatLimiter,
    parse_message,
    setup_logging,
)
from announcer.testing import FakeClock
from tests.integration.fake_exabgp import ANNOUNCER
from tests.netlab import netns, sh


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("route_announced prefix=10.200.0.1/32 reason=host_route",
         {"event": "route_announced", "prefix": "10.200.0.1/32", "reason": "host_route"}),
        ("routes_changed announced=12 withdrawn=0 total_announced=100",
         {"event": "routes_changed", "announced": 12, "withdrawn": 0, "total_announced": 100}),
        ("exabgp_command_failed command='announce route 10.0.0.1/32 next-hop self' retry_in=2s",
         {"event": "exabgp_command_failed", "command": "announce route 10.0.0.1/32 next-hop self", "retry_in": "2s"}),
        ("source_lost source=marathon reason='connect: refused \\'x\\''",
         {"event": "source_lost", "source": "marathon", "reason": "connect: refused 'x'"}),
        ("exabgp_not_acknowledging in_flight=3 stalled_seconds=61.5 action=exit_for_resync",
         {"event": "exabgp_not_acknowledging", "in_flight": 3, "stalled_seconds": 61.5, "action": "exit_for_resync"}),
        ("health_changed key=docker:web-1 healthy=True detail=ok",
         {"event": "health_changed", "key": "docker:web-1", "healthy": True, "detail": "ok"}),
        ("health_target_duplicate key=a (the last one is checked)",
         {"event": "health_target_duplicate", "key": "a", "text": "(the last one is checked)"}),
        ("neighbor_state peer=10.99.0.1 state=up reason=''",
         {"event": "neighbor_state", "peer": "10.99.0.1", "state": "up", "reason": ""}),
        ("odd level=5 ts=now", {"event": "odd", "field_level": 5, "field_ts": "now"}),
        ("Not an event name: free text", {"event": "message", "text": "Not an event name: free text"}),
    ],
)  # fmt: skip
def test_messages_parse_into_typed_fields(message: str, expected: dict[str, object]) -> None:
    assert parse_message(message) == expected


def record(message: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("announcer", level, __file__, 1, message, args or None, None)


def test_json_lines_carry_ts_level_event_and_fields() -> None:
    line = JsonFormatter().format(
        record("route_withdrawn prefix=%s reason=%s", "10.1.1.1/32", "drained")
    )
    document = json.loads(line)
    assert document["level"] == "info"
    assert document["event"] == "route_withdrawn"
    assert document["prefix"] == "10.1.1.1/32"
    assert document["reason"] == "drained"
    assert document["ts"].endswith("Z")
    assert "\n" not in line


def test_json_keeps_tracebacks_in_one_line() -> None:
    error = ValueError("boom")
    rec = logging.LogRecord(
        "announcer.x",
        logging.ERROR,
        __file__,
        1,
        "source_failed source=files",
        None,
        (ValueError, error, None),
    )
    line = JsonFormatter().format(rec)
    document = json.loads(line)
    assert "ValueError: boom" in document["exc"]
    assert document["logger"] == "announcer.x"
    assert "\n" not in line


def test_key_value_lines_for_humans() -> None:
    line = KeyValueFormatter().format(record("route_announced prefix=%s", "10.1.1.1/32"))
    assert line.endswith(" info route_announced prefix=10.1.1.1/32")


def test_repeats_beyond_the_limit_are_summarised_when_the_window_closes() -> None:
    limiter = RepeatLimiter(limit=3, window=10.0)
    admitted = [
        limiter.admit(logging.WARNING, "netlink_overrun action=resync", 100.0 + i)[0]
        for i in range(8)
    ]
    assert admitted == [True, True, True, False, False, False, False, False]
    assert limiter.admit(logging.WARNING, "other_event", 105.0) == (True, [])
    ok, summaries = limiter.admit(logging.WARNING, "netlink_overrun action=resync", 110.0)
    assert ok  # a new window
    assert [(s.message, s.suppressed) for s in summaries] == [("netlink_overrun action=resync", 5)]
    assert summaries[0].render() == (
        "log_repeated repeated=netlink_overrun suppressed=5 window_seconds=10 "
        "line='netlink_overrun action=resync'"
    )


def test_different_fields_are_different_messages() -> None:
    limiter = RepeatLimiter(limit=1, window=10.0)
    assert limiter.admit(logging.INFO, "route_announced prefix=10.0.0.1/32", 0.0)[0]
    assert limiter.admit(logging.INFO, "route_announced prefix=10.0.0.2/32", 0.0)[0]
    assert not limiter.admit(logging.INFO, "route_announced prefix=10.0.0.1/32", 1.0)[0]


def test_memory_is_bounded_and_evicted_windows_still_summarise() -> None:
    limiter = RepeatLimiter(limit=1, window=1000.0, max_tracked=2)
    limiter.admit(logging.INFO, "a_event", 0.0)
    limiter.admit(logging.INFO, "a_event", 0.0)  # suppressed
    limiter.admit(logging.INFO, "b_event", 0.0)
    _, summaries = limiter.admit(logging.INFO, "c_event", 0.0)  # evicts a_event
    assert [(s.message, s.suppressed) for s in summaries] == [("a_event", 1)]
    assert len(limiter._windows) == 2


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, FakeClock, RateLimitedHandler]]:
    stream, clock = io.StringIO(), FakeClock(1000.0)
    handler = RateLimitedHandler(stream, RepeatLimiter(limit=2, window=60.0), clock)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("announcer.test_logs")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream, clock, handler
    logger.removeHandler(handler)
    logger.propagate = True


def test_the_handler_drops_repeats_and_writes_one_summary(
    captured: tuple[io.StringIO, FakeClock, RateLimitedHandler],
) -> None:
    stream, clock, _handler = captured
    logger = logging.getLogger("announcer.test_logs")
    for _ in range(50):
        logger.error(
            "exabgp_command_failed command=%r retry_in=%.0fs", "withdraw route 10.0.0.1/32", 1
        )
    clock.now += 61
    logger.info("route_announced prefix=10.0.0.9/32 reason=host_route")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "exabgp_command_failed",
        "exabgp_command_failed",
        "log_repeated",
        "route_announced",
    ]
    summary = lines[2]
    assert summary["level"] == "error"
    assert summary["suppressed"] == 48
    assert summary["window_seconds"] == 60
    assert summary["repeated"] == "exabgp_command_failed"
    assert "withdraw route 10.0.0.1/32" in summary["line"]


def test_closing_flushes_pending_summaries(
    captured: tuple[io.StringIO, FakeClock, RateLimitedHandler],
) -> None:
    stream, _clock, handler = captured
    logger = logging.getLogger("announcer.test_logs")
    for _ in range(5):
        logger.warning("control_refused uid=65534")
    handler.flush_repeats()
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["control_refused", "control_refused", "log_repeated"]


def test_setup_logging_writes_to_the_given_stream_only() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        setup_logging("info", "json", stream=stream)
        logging.getLogger("announcer").info("announcer_started kernel_routes=%d", 3)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert json.loads(stream.getvalue())["kernel_routes"] == 3


@pytest.mark.netns
def test_announcer_run_logs_json_lines_on_stderr_only(tmp_path: Path) -> None:
    """A real `announcer run --log-format json` whose ExaBGP never answers: every stderr
    line is one JSON object; stdout carries only the ExaBGP protocol."""
    config = tmp_path / "announcer.yaml"
    config.write_text(
        "exabgp:\n  startup_timeout_seconds: 0.5\n  watchdog_seconds: 0\n"
        f"control:\n  socket: {tmp_path}/ctl.sock\n  state_directory: {tmp_path}/state\n"
        f"drain:\n  maintenance_file: {tmp_path}/maintenance\n"
    )
    with netns("logs") as ns:
        proc = sh(
            ns,
            ANNOUNCER,
            "run",
            "-c",
            str(config),
            "--log-format",
            "json",
            check=False,
            input="",
            timeout=30,
        )
    assert proc.stdout.strip() == "version"  # the protocol, nothing else
    documents = [json.loads(line) for line in proc.stderr.splitlines()]
    assert documents, proc.stderr
    assert all({"ts", "level", "event"} <= d.keys() for d in documents)
    events = {d["event"] for d in documents}
    assert events & {"startup_failed", "announcer_stopping"}, events


def test_unknown_log_format_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [ANNOUNCER, "check", "-c", str(tmp_path / "x.yaml"), "--log-format", "xml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "--log-format" in proc.stderr


def test_logger_names_are_literal_and_unchanged() -> None:
    """JSON logs print the logger; dashboards filter on it. Names are string literals (so
    moving a module changes nothing) from this set."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "announcer"
    names: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "getLogger"
                and node.args
            ):
                argument = node.args[0]
                assert isinstance(argument, ast.Constant), (
                    f"{path}: getLogger({ast.unparse(argument)})"
                )
                names.add(argument.value)
    assert names == {
        "announcer", "announcer.control", "announcer.drains", "announcer.health",
        "announcer.metrics", "announcer.exabgp.channel", "announcer.sources.docker",
        "announcer.sources.files", "announcer.sources.kernel", "announcer.sources.marathon",
        "announcer.cni", "announcer.docker_driver",
    }  # fmt: skip
