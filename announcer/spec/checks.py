"""Health check specs: the ``anycast.check`` grammar, and what to probe. Pure.

The label grammar (:mod:`announcer.spec.labels`), the core (which instances to check) and
the health monitor (:mod:`announcer.health`) share these values; nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Literal, get_args

from announcer.model import quote

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
FAST_DIVISOR = 5  # default fast interval: interval / 5 (ExaBGP healthcheck's 5 s / 1 s)
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

_TIMING = ("interval", "fast-interval", "timeout", "rise", "fall")
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
    fast_interval: float | None = None  # None: interval / 5, at least 0.1 s

    def __post_init__(self) -> None:
        if why := _spec_problem(self):
            raise CheckError(f"check {render_check_unchecked(self)}: {why}", why)

    @property
    def fast(self) -> float:
        """Seconds between probes while a verdict is settling (HAProxy's ``fastinter``,
        ExaBGP healthcheck's ``--fast-interval``): after a first failure of a healthy
        instance, a first success of an unhealthy one, and before the first verdict."""
        if self.fast_interval is not None:
            return self.fast_interval
        return max(INTERVAL_RANGE[0], round(self.interval / FAST_DIVISOR, 3))


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
    return _timing_problem(spec.interval, spec.timeout, spec.rise, spec.fall, spec.fast_interval)


def _timing_problem(
    interval: float, timeout: float, rise: int, fall: int, fast: float | None
) -> str | None:
    low, high = INTERVAL_RANGE
    if not low <= interval <= high:
        return f"interval {interval:g} is not {low:g}..{high:g} seconds"
    if fast is not None and not low <= fast <= interval:
        return f"fast-interval {fast:g} is not {low:g} s..interval ({interval:g} s)"
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


_FIELD = {"status": "expect_status", "fast-interval": "fast_interval"}


def _option_value(text: str, key: str, value: str) -> object:
    def bad(why: str) -> CheckError:
        return CheckError(f"check {quote(text)}: {key}={quote(value)} {why}")

    if key in ("interval", "fast-interval", "timeout"):
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
    if spec.fast_interval is not None:
        timing += f" fast-interval={_seconds(spec.fast_interval)}"
    text = f"{head} {timing} rise={spec.rise} fall={spec.fall}"
    return quote(text, limit=MAX_TEXT)[1:-1] if not text.isascii() else text


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """What to probe for one instance; the address is probed from the host."""

    key: Key
    address: IPv4Address | IPv6Address
    spec: CheckSpec
    netns: str | None = None  # exec checks only: run the command inside this named netns
