"""The ``anycast.*`` label grammar, shared by Docker labels, Marathon labels and drop-in files.

Strictly parsed into typed values; nothing of a label's text ever reaches an ExaBGP line.
Every error names the label and quotes the offending value (shortened and escaped, so a
hostile value cannot forge log lines either). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv6Address, ip_address

from announcer.model import Community, IPAddress, LargeCommunity, quote
from announcer.spec.checks import CheckError, CheckSpec, parse_check

PREFIX = "anycast."
IPS = "anycast.ips"
COMMUNITIES = "anycast.communities"
LARGE_COMMUNITIES = "anycast.large-communities"
MED = "anycast.med"
LOCAL_PREF = "anycast.local-pref"
AS_PATH_PREPEND = "anycast.as-path-prepend"
NEIGHBORS = "anycast.neighbors"
DRAIN_SECONDS = "anycast.drain-seconds"
CHECK = "anycast.check"
WEIGHT = "anycast.weight"
SLOW_START = "anycast.slow-start-seconds"
UNHEALTHY = "anycast.unhealthy"
KNOWN = frozenset(
    (IPS, COMMUNITIES, LARGE_COMMUNITIES, MED, LOCAL_PREF, AS_PATH_PREPEND, NEIGHBORS)
) | {DRAIN_SECONDS, CHECK, WEIGHT, SLOW_START, UNHEALTHY}

MAX_VALUE_LENGTH = 4096
MAX_IPS = 64
MAX_COMMUNITIES = 32
MAX_PREPEND = 10
MAX_DRAIN_SECONDS = 3600
MAX_WEIGHT = 1000  # units of weights.unit (a sum of many instances stays well in 32 bits)
MAX_SLOW_START_SECONDS = 3600
UNHEALTHY_MODES = ("withdraw", "deprefer")

# ASCII only: a unicode look-alike digit or colon never parses as one.
_LIST_ITEM = re.compile(r"[0-9A-Za-z_.:\-]{1,64}")
_UINT = re.compile(r"[0-9]{1,10}")
_COMMUNITY = re.compile(r"([0-9]{1,5}):([0-9]{1,5})")
_LARGE = re.compile(r"([0-9]{1,10}):([0-9]{1,10}):([0-9]{1,10})")
WELL_KNOWN_COMMUNITIES: dict[str, Community] = {
    "GRACEFUL_SHUTDOWN": Community(65535, 0),
    "ACCEPT_OWN": Community(65535, 1),
    "BLACKHOLE": Community(65535, 666),
    "NO_EXPORT": Community(65535, 65281),
    "NO_ADVERTISE": Community(65535, 65282),
    "NO_EXPORT_SUBCONFED": Community(65535, 65283),
    "NOPEER": Community(65535, 65284),
}


class LabelError(ValueError):
    """A label that cannot be used; the message names the label and the value."""


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What an instance's labels declare about how it is announced."""

    ips: tuple[IPAddress, ...] = ()
    med: int | None = None
    local_preference: int | None = None
    communities: tuple[Community, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()
    as_path_prepend: int = 0
    neighbors: frozenset[IPAddress] = field(default_factory=frozenset)
    drain_seconds: float = 0.0
    check: CheckSpec | None = None  # health check of this instance (docs/health.md)
    weight: int = 1  # this instance's share, in units (docs/weighted.md)
    slow_start_seconds: float = 0.0  # after joining, the weight ramps up over this long
    unhealthy: str = "withdraw"  # or "deprefer": stay announced, last resort (docs/weighted.md)


def _fail(label: str, value: str, why: str) -> LabelError:
    return LabelError(f"label {label}={quote(value)}: {why}")


def _items(label: str, value: str, limit: int) -> list[str]:
    items = [item.strip() for item in value.split(",")]
    if not value.strip() or any(not item for item in items):
        raise _fail(label, value, "expected a comma-separated list with no empty items")
    if len(items) > limit:
        raise _fail(label, value, f"{len(items)} items, at most {limit} allowed")
    for item in items:
        if not _LIST_ITEM.fullmatch(item):
            raise _fail(label, value, f"item {quote(item)} has characters outside [0-9A-Za-z_.:-]")
    return items


def parse_address(label: str, value: str, text: str) -> IPAddress:
    try:
        address = ip_address(text)
    except ValueError:
        raise _fail(label, value, f"{quote(text)} is not an IPv4 or IPv6 address") from None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        raise _fail(label, value, f"{text} is an IPv4-mapped IPv6 address; write the IPv4 one")
    return address


def _uint(label: str, value: str, high: int, low: int = 0) -> int:
    text = value.strip()
    if not _UINT.fullmatch(text) or not low <= int(text) <= high:
        raise _fail(label, value, f"expected an integer {low}..{high}")
    return int(text)


def parse_community_text(label: str, value: str, text: str) -> Community:
    named = WELL_KNOWN_COMMUNITIES.get(text.upper().replace("-", "_"))
    if named is not None:
        return named
    match = _COMMUNITY.fullmatch(text)
    if match is None or int(match[1]) > 0xFFFF or int(match[2]) > 0xFFFF:
        raise _fail(label, value, f"community {quote(text)} is not 0-65535:0-65535 or a known name")
    return Community(int(match[1]), int(match[2]))


def parse_large_community_text(label: str, value: str, text: str) -> LargeCommunity:
    match = _LARGE.fullmatch(text)
    if match is None or any(int(part) > 0xFFFFFFFF for part in match.groups()):
        raise _fail(label, value, f"large community {quote(text)} is not A:B:C of 0..4294967295")
    return LargeCommunity(int(match[1]), int(match[2]), int(match[3]))


def parse_labels(labels: Mapping[str, str], *, allow_exec: bool = False) -> ServiceSpec | None:
    """The spec declared by ``anycast.*`` labels; None when there are none.

    Raises :class:`LabelError` for an unknown ``anycast.*`` key or a bad value. Exec
    health checks are refused unless ``allow_exec`` (labels come from containers, which
    must not make the announcer run commands; drop-in files are the operator's).
    """
    ours = {k: v for k, v in labels.items() if k.startswith(PREFIX)}
    if not ours:
        return None
    for key, value in sorted(ours.items()):
        if key not in KNOWN:
            raise LabelError(f"label {quote(key)} is not one of: {', '.join(sorted(KNOWN))}")
        if not isinstance(value, str):
            raise LabelError(f"label {key} must be a string, got {type(value).__name__}")
        if len(value) > MAX_VALUE_LENGTH:
            raise _fail(key, value, f"{len(value)} characters, at most {MAX_VALUE_LENGTH}")
    kwargs: dict[str, object] = {}
    if IPS in ours:
        value = ours[IPS]
        addresses = [parse_address(IPS, value, t) for t in _items(IPS, value, MAX_IPS)]
        kwargs["ips"] = tuple(dict.fromkeys(addresses))
    if COMMUNITIES in ours:
        value = ours[COMMUNITIES]
        items = _items(COMMUNITIES, value, MAX_COMMUNITIES)
        kwargs["communities"] = tuple(parse_community_text(COMMUNITIES, value, t) for t in items)
    if LARGE_COMMUNITIES in ours:
        value = ours[LARGE_COMMUNITIES]
        items = _items(LARGE_COMMUNITIES, value, MAX_COMMUNITIES)
        kwargs["large_communities"] = tuple(
            parse_large_community_text(LARGE_COMMUNITIES, value, t) for t in items
        )
    if MED in ours:
        kwargs["med"] = _uint(MED, ours[MED], 0xFFFFFFFF)
    if LOCAL_PREF in ours:
        kwargs["local_preference"] = _uint(LOCAL_PREF, ours[LOCAL_PREF], 0xFFFFFFFF)
    if AS_PATH_PREPEND in ours:
        kwargs["as_path_prepend"] = _uint(AS_PATH_PREPEND, ours[AS_PATH_PREPEND], MAX_PREPEND)
    if NEIGHBORS in ours:
        value = ours[NEIGHBORS]
        items = _items(NEIGHBORS, value, MAX_IPS)
        kwargs["neighbors"] = frozenset(parse_address(NEIGHBORS, value, t) for t in items)
    if DRAIN_SECONDS in ours:
        drain = _uint(DRAIN_SECONDS, ours[DRAIN_SECONDS], MAX_DRAIN_SECONDS)
        kwargs["drain_seconds"] = float(drain)
    if WEIGHT in ours:
        kwargs["weight"] = _uint(WEIGHT, ours[WEIGHT], MAX_WEIGHT, low=1)
    if SLOW_START in ours:
        kwargs["slow_start_seconds"] = float(
            _uint(SLOW_START, ours[SLOW_START], MAX_SLOW_START_SECONDS)
        )
    if UNHEALTHY in ours:
        mode = ours[UNHEALTHY].strip()
        if mode not in UNHEALTHY_MODES:
            raise _fail(UNHEALTHY, ours[UNHEALTHY], f"expected one of {', '.join(UNHEALTHY_MODES)}")
        kwargs["unhealthy"] = mode
    if CHECK in ours:
        try:
            kwargs["check"] = parse_check(ours[CHECK], allow_exec=allow_exec)
        except CheckError as exc:
            raise _fail(CHECK, ours[CHECK], exc.why or str(exc)) from None
    return ServiceSpec(**kwargs)  # type: ignore[arg-type]
