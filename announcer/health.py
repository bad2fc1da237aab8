"""Health checks: the ``anycast.check`` grammar, rise/fall hysteresis, and the monitor.

A check runs from the host towards one instance (its address, through the routed path), so a
passing check proves the path anycast traffic takes. Results are observations: the monitor
emits :class:`HealthChanged` when a verdict changes and the core decides what to announce.

Layers, top to bottom: :func:`parse_check` (pure, strict, every error names the text);
:class:`Hysteresis` (pure rise/fall state machine); :class:`HealthMonitor` (one asyncio task
per target, no threads; the probes themselves live in :mod:`announcer.health_checks`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Literal, get_args

from announcer.labels import quote

log = logging.getLogger(__name__)

Kind = Literal["tcp", "http", "https", "udp", "exec"]
Key = tuple[str, str]
KINDS: tuple[str, ...] = get_args(Kind)

MAX_TEXT = 512
MAX_PATH = 256
MAX_PAYLOAD = 128  # bytes, for udp send= / expect= (a DNS query is ~30)
MAX_ARGS = 32
INTERVAL_RANGE = (0.1, 3600.0)
TIMEOUT_RANGE = (0.05, 60.0)
COUNT_RANGE = (1, 10)
DEFAULT_INTERVAL = 1.0
DEFAULT_TIMEOUT = 1.0
MAX_DETAIL = 200

_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_PORT = re.compile(r"[0-9]{1,5}")
# RFC 3986 path + query characters; no fragment, no space, nothing outside ASCII.
_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
_SECONDS = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,3})?")
_COUNT = re.compile(r"[0-9]{1,2}")
_STATUS = re.compile(r"[1-5][0-9]{2}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")
# exec arguments: no shell runs them, but keep them to characters that need no quoting anywhere.
_ARG = re.compile(r"[A-Za-z0-9_./:=,@%+\-]{1,128}")

_TIMING = ("interval", "timeout", "rise", "fall")
_OPTIONS: dict[str, tuple[str, ...]] = {
    "tcp": _TIMING,
    "http": (*_TIMING, "status"),
    "https": (*_TIMING, "status"),
    "udp": (*_TIMING, "send", "expect"),
    "exec": _TIMING,
}


class CheckError(ValueError):
    """A check declaration that cannot be used; the message quotes the offending text."""

    def __init__(self, message: str, why: str = "") -> None:
        super().__init__(message)
        self.why = why or message


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One health check, as declared; validated on construction (config builds these too)."""

    kind: Kind
    port: int | None = None
    path: str = "/"
    expect_status: int = 200
    send: bytes = b""
    expect: bytes = b""
    command: tuple[str, ...] = ()
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    rise: int = 2
    fall: int = 2

    def __post_init__(self) -> None:
        if why := _spec_problem(self):
            raise CheckError(f"check {render_check_unchecked(self)}: {why}", why)


def _spec_problem(spec: CheckSpec) -> str | None:
    """What is wrong with spec, or None; one message per field (pure)."""
    if spec.kind not in KINDS:
        return f"kind {quote(str(spec.kind))} is not one of {', '.join(KINDS)}"
    network = spec.kind != "exec"
    if network != (spec.port is not None):
        return "a port is required" if network else "exec takes no port"
    if spec.port is not None and not (isinstance(spec.port, int) and 1 <= spec.port <= 65535):
        return f"port {spec.port!r} is not 1..65535"
    http = spec.kind in ("http", "https")
    if not http and (spec.path != "/" or spec.expect_status != 200):
        return "path and status apply to http/https only"
    if len(spec.path) > MAX_PATH or not _PATH.fullmatch(spec.path):
        return f"path {quote(spec.path)} must start with / and use URL characters only"
    if not (isinstance(spec.expect_status, int) and 100 <= spec.expect_status <= 599):
        return f"status {spec.expect_status!r} is not 100..599"
    if spec.kind != "udp" and (spec.send or spec.expect):
        return "send and expect apply to udp only"
    if len(spec.send) > MAX_PAYLOAD or len(spec.expect) > MAX_PAYLOAD:
        return f"send/expect are at most {MAX_PAYLOAD} bytes"
    if (spec.kind == "exec") != bool(spec.command):
        return "exec needs a command" if spec.kind == "exec" else "command applies to exec only"
    if spec.command and not spec.command[0].startswith("/"):
        return f"command {quote(spec.command[0])} must be an absolute path"
    if len(spec.command) > MAX_ARGS or not all(_ARG.fullmatch(a) for a in spec.command):
        return f"command arguments must match {_ARG.pattern} (at most {MAX_ARGS})"
    return _timing_problem(spec.interval, spec.timeout, spec.rise, spec.fall)


def _timing_problem(interval: float, timeout: float, rise: int, fall: int) -> str | None:
    low, high = INTERVAL_RANGE
    if not low <= interval <= high:
        return f"interval {interval:g} is not {low:g}..{high:g} seconds"
    low, high = TIMEOUT_RANGE
    if not low <= timeout <= high:
        return f"timeout {timeout:g} is not {low:g}..{high:g} seconds"
    if timeout > interval:
        return f"timeout {timeout:g} is longer than interval {interval:g}"
    for name, count in (("rise", rise), ("fall", fall)):
        if not (isinstance(count, int) and COUNT_RANGE[0] <= count <= COUNT_RANGE[1]):
            return f"{name} {count!r} is not {COUNT_RANGE[0]}..{COUNT_RANGE[1]}"
    return None


# --------------------------------------------------------------------------- the grammar


def parse_check(text: str, *, allow_exec: bool) -> CheckSpec:
    """Parse the compact form, e.g. ``http:8080/healthz status=204 interval=0.5 fall=3``.

    ``kind:target`` first, then ``key=value`` options separated by spaces. exec is refused
    unless ``allow_exec`` (labels come from containers; only the operator's config may run
    commands). Raises :class:`CheckError` naming the text and the offending part.
    """
    if not isinstance(text, str):
        raise CheckError(f"check must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise CheckError(f"check {quote(text)}: {len(text)} characters, at most {MAX_TEXT}")
    if not _PRINTABLE.fullmatch(text):
        raise CheckError(f"check {quote(text)}: only printable ASCII and spaces are allowed")
    tokens = text.split()
    if not tokens:
        raise CheckError(f"check {quote(text)}: empty; expected kind:target, e.g. tcp:8080")
    kind, colon, target = tokens[0].partition(":")
    if kind not in KINDS or not colon:
        raise CheckError(f"check {quote(text)}: expected kind:target, kind one of {KINDS}")
    if kind == "exec" and not allow_exec:
        raise CheckError(f"check {quote(text)}: exec checks are allowed in the config only")
    rest = tokens[1:]
    fields: dict[str, object] = {}
    if kind == "exec":
        while rest and rest[-1].partition("=")[0] in _TIMING:
            rest.pop()
        argv = [target, *tokens[1 : 1 + len(rest)]]
        options = tokens[1 + len(rest) :]
        fields["command"] = tuple(_exec_args(text, argv))
    else:
        options = rest
        fields.update(_network_target(text, kind, target))
    fields.update(_options(text, kind, options))
    try:
        return CheckSpec(kind=kind, **fields)  # type: ignore[arg-type]
    except CheckError as exc:  # a combination of valid parts that does not fit
        raise CheckError(f"check {quote(text)}: {exc.why}", exc.why) from None


def _exec_args(text: str, argv: list[str]) -> list[str]:
    if not argv[0].startswith("/"):
        raise CheckError(f"check {quote(text)}: command {quote(argv[0])} must be absolute")
    if len(argv) > MAX_ARGS:
        raise CheckError(f"check {quote(text)}: {len(argv)} arguments, at most {MAX_ARGS}")
    for arg in argv:
        if not _ARG.fullmatch(arg):
            why = f"argument {quote(arg)} has characters outside [A-Za-z0-9_./:=,@%+-]"
            raise CheckError(f"check {quote(text)}: {why}")
    return argv


def _network_target(text: str, kind: str, target: str) -> dict[str, object]:
    """``PORT`` or, for http(s), ``PORT/path?query``."""
    port_text, slash, path = target.partition("/")
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise CheckError(f"check {quote(text)}: port {quote(port_text)} is not 1..65535")
    fields: dict[str, object] = {"port": int(port_text)}
    if slash:
        if kind not in ("http", "https"):
            raise CheckError(f"check {quote(text)}: a path applies to http/https only")
        path = "/" + path
        if len(path) > MAX_PATH or not _PATH.fullmatch(path):
            why = f"path {quote(path)} must be at most {MAX_PATH} URL characters"
            raise CheckError(f"check {quote(text)}: {why}")
        fields["path"] = path
    return fields


def _options(text: str, kind: str, options: list[str]) -> dict[str, object]:
    allowed = _OPTIONS[kind]
    seen: dict[str, str] = {}
    for option in options:
        key, eq, value = option.partition("=")
        if not eq or key not in allowed:
            why = f"option {quote(option)} is not one of {'=, '.join(allowed)}="
            raise CheckError(f"check {quote(text)}: {why}")
        if key in seen:
            raise CheckError(f"check {quote(text)}: option {key}= given twice")
        seen[key] = value
    fields: dict[str, object] = {}
    for key, value in seen.items():
        fields[_FIELD.get(key, key)] = _option_value(text, key, value)
    if "timeout" not in fields:  # the default timeout never exceeds a shorter interval
        interval = fields.get("interval", DEFAULT_INTERVAL)
        assert isinstance(interval, float)
        fields["timeout"] = min(DEFAULT_TIMEOUT, interval)
    return fields


_FIELD = {"status": "expect_status"}


def _option_value(text: str, key: str, value: str) -> object:
    def bad(why: str) -> CheckError:
        return CheckError(f"check {quote(text)}: {key}={quote(value)} {why}")

    if key in ("interval", "timeout"):
        if not _SECONDS.fullmatch(value):
            raise bad("is not seconds (digits, at most 3 decimals)")
        return float(value)
    if key in ("rise", "fall"):
        if not _COUNT.fullmatch(value):
            raise bad(f"is not a count {COUNT_RANGE[0]}..{COUNT_RANGE[1]}")
        return int(value)
    if key == "status":
        if not _STATUS.fullmatch(value):
            raise bad("is not an HTTP status 100..599")
        return int(value)
    if not _HEX.fullmatch(value) or len(value) > 2 * MAX_PAYLOAD:
        raise bad(f"is not hex bytes (pairs of 0-9a-f, at most {MAX_PAYLOAD} bytes)")
    return bytes.fromhex(value)


def render_check(spec: CheckSpec) -> str:
    """The canonical text of spec; ``parse_check(render_check(s), allow_exec=True) == s``."""
    return render_check_unchecked(spec)


def render_check_unchecked(spec: CheckSpec) -> str:
    """Like render_check, for a spec that may be invalid (error messages); always ASCII."""
    if spec.kind == "exec":
        head = "exec:" + " ".join(spec.command)
    else:
        head = f"{spec.kind}:{spec.port}"
        if spec.kind in ("http", "https"):
            head += ("" if spec.path == "/" else spec.path) + f" status={spec.expect_status}"
        elif spec.kind == "udp":
            head += f" send={spec.send.hex()}" * bool(spec.send)
            head += f" expect={spec.expect.hex()}" * bool(spec.expect)
    timing = f"interval={_seconds(spec.interval)} timeout={_seconds(spec.timeout)}"
    text = f"{head} {timing} rise={spec.rise} fall={spec.fall}"
    return quote(text, limit=MAX_TEXT)[1:-1] if not text.isascii() else text


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------- rise / fall


class Hysteresis:
    """Rise/fall over a stream of probe results; pure (no clock, no I/O).

    Undecided (None) at first; healthy after ``rise`` consecutive successes, unhealthy after
    ``fall`` consecutive failures, whichever comes first. ``observe`` says whether the verdict
    changed, which is exactly when the monitor emits.
    """

    __slots__ = ("_bad", "_good", "_verdict", "fall", "rise")

    def __init__(self, rise: int, fall: int, verdict: bool | None = None) -> None:
        self.rise = rise
        self.fall = fall
        self._verdict = verdict
        self._good = 0
        self._bad = 0

    @property
    def verdict(self) -> bool | None:
        return self._verdict

    @property
    def streak(self) -> int:
        """How many consecutive results agree with the last one."""
        return self._good or self._bad

    def observe(self, ok: bool) -> bool:
        """Feed one probe result; True when the verdict changed."""
        if ok:
            self._good, self._bad = self._good + 1, 0
            if self._verdict is not True and self._good >= self.rise:
                self._verdict = True
                return True
        else:
            self._good, self._bad = 0, self._bad + 1
            if self._verdict is not False and self._bad >= self.fall:
                self._verdict = False
                return True
        return False


# --------------------------------------------------------------------------- the monitor


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """What to probe for one instance; the address is probed from the host."""

    key: Key
    address: IPv4Address | IPv6Address
    spec: CheckSpec
    netns: str | None = None  # exec checks only: run the command inside this named netns


@dataclass(frozen=True, slots=True)
class HealthChanged:
    """An instance's health verdict changed (an observation for the core)."""

    key: Key
    healthy: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    detail: str  # what was probed and what happened; made safe before it is shown


Probe = Callable[[CheckTarget], Awaitable[ProbeResult]]


@dataclass(slots=True)
class ScheduleStats:
    """How far probe starts lag their schedule slots (the load signal for many checks)."""

    BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
    probes: int = 0
    skipped: int = 0  # slots dropped because the loop fell more than an interval behind
    late_total: float = 0.0
    late_max: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * 11)

    def record(self, late: float) -> None:
        self.probes += 1
        self.late_total += late
        self.late_max = max(self.late_max, late)
        ms = late * 1000
        self.histogram[next((i for i, b in enumerate(self.BUCKETS_MS) if ms <= b), 10)] += 1

    def percentile_ms(self, fraction: float) -> float:
        """Upper bound (bucket edge, ms) under which ``fraction`` of the probes started."""
        wanted, seen = fraction * self.probes, 0
        for bound, count in zip((*self.BUCKETS_MS, float("inf")), self.histogram, strict=True):
            seen += count
            if seen >= wanted:
                return float(bound)
        return float("inf")


def safe_detail(text: str) -> str:
    """Printable ASCII only (anything else escaped), at most MAX_DETAIL characters."""
    if not (text.isascii() and text.isprintable()):
        text = ascii(text)[1:-1]
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


class HealthMonitor:
    """Runs one check task per target and emits :class:`HealthChanged` on verdict changes.

    ``set_targets`` is level-triggered and idempotent: targets not given are stopped, new
    ones started, a changed one restarted (keeping its verdict, so editing a check does not
    by itself withdraw anything). Each task waits a random part of its interval first, so a
    restart does not probe every instance at once.
    """

    def __init__(
        self,
        emit: Callable[[HealthChanged], None],
        clock: Callable[[], float] = time.monotonic,
        *,
        probe: Probe | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if probe is None:
            from announcer.health_checks import run_probe

            probe = run_probe
        self._emit = emit
        self._clock = clock
        self._probe = probe
        self._rng = rng or random.Random()  # noqa: S311 - start-up jitter, not secrecy
        self._targets: dict[Key, CheckTarget] = {}
        self._machines: dict[Key, Hysteresis] = {}
        self._details: dict[Key, str] = {}
        self._running: dict[Key, tuple[CheckTarget, asyncio.Task[None]]] = {}
        self._started = False
        self.stats = ScheduleStats()

    def set_targets(self, targets: Iterable[CheckTarget]) -> None:
        wanted: dict[Key, CheckTarget] = {}
        for target in targets:
            if target.key in wanted and wanted[target.key] != target:
                log.warning("health_target_duplicate key=%s (the last one is checked)", target.key)
            wanted[target.key] = target
        for key in self._targets.keys() - wanted.keys():
            self._machines.pop(key, None)
            self._details.pop(key, None)
        for key, target in wanted.items():
            if self._targets.get(key) != target:
                old = self._machines.get(key)
                verdict = old.verdict if old is not None else None
                self._machines[key] = Hysteresis(target.spec.rise, target.spec.fall, verdict)
        self._targets = wanted
        if self._started:
            self._reconcile()

    def state(self) -> dict[Key, bool | None]:
        return {key: self._machines[key].verdict for key in self._targets}

    def details(self) -> dict[Key, str]:
        """The last probe's outcome per target (for ``plan`` and logs); safe to show."""
        return dict(self._details)

    async def run(self) -> None:
        self._started = True
        self._reconcile()
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            self._started = False
            tasks = [task for _, task in self._running.values()]
            self._running.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _reconcile(self) -> None:
        for key, (target, task) in list(self._running.items()):
            if self._targets.get(key) != target:
                task.cancel()
                del self._running[key]
        for key, target in self._targets.items():
            if key not in self._running:
                task = asyncio.create_task(self._check(target), name=f"health {key}")
                self._running[key] = (target, task)

    async def _check(self, target: CheckTarget) -> None:
        """Probe target every interval, on a fixed schedule, for as long as it is wanted."""
        interval = target.spec.interval
        await asyncio.sleep(self._rng.uniform(0, interval))
        due = self._clock()
        while True:
            late = self._clock() - due
            if late >= interval:  # the loop fell behind: drop the missed slots, keep the phase
                missed = int(late // interval)
                self.stats.skipped += missed
                due += missed * interval
                late -= missed * interval
            self.stats.record(late)
            result = await self._probe_safely(target)
            entry = self._running.get(target.key)
            if entry is None or entry[0] is not target:
                return  # replaced or removed while probing
            self._observe(target, result)
            due += interval
            await asyncio.sleep(max(0.0, due - self._clock()))

    async def _probe_safely(self, target: CheckTarget) -> ProbeResult:
        """The probe's result; a probe that overruns or raises is a failure, never an error."""
        try:
            async with asyncio.timeout(target.spec.timeout + 1.0):
                return await self._probe(target)
        except TimeoutError:
            return ProbeResult(False, f"{target.spec.kind} probe overran its timeout")
        except Exception as exc:
            log.exception("health_probe_crashed key=%s", target.key)
            return ProbeResult(False, f"{target.spec.kind} probe error {type(exc).__name__}")

    def _observe(self, target: CheckTarget, result: ProbeResult) -> None:
        machine = self._machines[target.key]
        changed = machine.observe(result.ok)
        threshold = machine.rise if result.ok else machine.fall
        detail = safe_detail(f"{result.detail} ({min(machine.streak, threshold)}/{threshold})")
        self._details[target.key] = detail
        if not changed:
            return
        assert machine.verdict is not None
        try:
            self._emit(HealthChanged(target.key, machine.verdict, detail))
        except Exception:
            log.exception("health_emit_failed key=%s", target.key)
