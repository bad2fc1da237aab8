"""Configuration: YAML parsed once into frozen pydantic models.

Validation is pure (no probing of interfaces or sockets). Unknown keys are rejected and
every error names the file, the key and the offending value.
:mod:`announcer.daemon.convert` turns the models into the core's plain objects, so
``announcer/core`` never sees pydantic (and this module knows nothing of the core).
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from announcer.model import Attributes, Community, LargeCommunity, Prefix
from announcer.spec.labels import LabelError, parse_community_text, parse_large_community_text

# iproute2's /etc/iproute2/rt_protos and rt_tables names, so configs can say "boot" or "main".
ROUTE_PROTOCOLS: dict[str, int] = {
    "unspec": 0, "redirect": 1, "kernel": 2, "boot": 3, "static": 4, "gated": 8, "ra": 9,
    "mrt": 10, "zebra": 11, "bird": 12, "dnrouted": 13, "xorp": 14, "ntk": 15, "dhcp": 16,
    "keepalived": 18, "babel": 42, "openr": 99, "bgp": 186, "isis": 187, "ospf": 188,
    "rip": 189, "eigrp": 192,
}  # fmt: skip
ROUTE_TABLES: dict[str, int] = {"default": 253, "main": 254, "local": 255}

_GLOB_CHARS = re.compile(r"[A-Za-z0-9_.\-*?\[\]!@+]{1,64}")
EX_CONFIG = 78  # sysexits.h: configuration error


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names file, key and value."""


def _check_glob(value: str) -> str:
    if not _GLOB_CHARS.fullmatch(value):
        raise ValueError(
            f"interface glob {value!r} may only hold letters, digits, '_.-@+' and the "
            "wildcards '*?[]!' (1 to 64 characters)"
        )
    depth = 0
    for char in value:
        if char == "[":
            if depth:
                raise ValueError(f"interface glob {value!r} nests '['")
            depth = 1
        elif char == "]" and depth:
            depth = 0
    if depth:
        raise ValueError(f"interface glob {value!r} has an unclosed '['")
    return value


def parse_community(text: str) -> Community:
    """``ASN:VALUE`` or a well-known name; the label grammar's rule (announcer/labels.py)."""
    try:
        return parse_community_text("communities", text, text)
    except LabelError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None


def parse_large_community(text: str) -> LargeCommunity:
    try:
        return parse_large_community_text("large_communities", text, text)
    except LabelError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None


def _name_or_number(value: object, names: dict[str, int], what: str, high: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value in names:
        return names[value]
    elif isinstance(value, str) and value.isdigit():
        number = int(value)
    else:
        known = ", ".join(sorted(names))
        raise ValueError(f"{what} {value!r} is not a number or one of: {known}")
    if not 0 <= number <= high:
        raise ValueError(f"{what} {value!r} is out of range 0..{high}")
    return number


Glob = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ExaBGPConfig(_Strict):
    dialect: Literal[4, 5] = 5
    next_hop: Literal["self"] | IPv4Address | IPv6Address = "self"
    neighbors: tuple[IPv4Address | IPv6Address, ...] = ()
    local_as: int | None = Field(None, ge=1, le=0xFFFFFFFF)  # needed for as-path prepends
    ack_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    startup_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    watchdog_seconds: float = Field(30.0, ge=0, le=3600)  # 0: no self-watchdog
    verify_interval_seconds: float = Field(60.0, ge=0, le=86400)  # 0: never
    # ExaBGP runs no route command while it prints its adj-rib-out (~0.3 ms per route in
    # 5.0.15: 3 s at 10k routes, 67 s at 100k), so the periodic check skips big tables.
    verify_max_routes: int = Field(10_000, ge=0, le=10_000_000)
    # ExaBGP's "manual-eor true" with graceful-restart: the announcer sends End-of-RIB to
    # each neighbor once its routes are re-announced after a (re)start or session up.
    manual_eor: bool = False
    # With manual_eor: End-of-RIB also waits for instances whose first health check has not
    # decided yet, at most this long after the start (keep it under graceful-restart's time).
    eor_max_hold_seconds: float = Field(10.0, ge=0, le=3600)


class KernelConfig(_Strict):
    tables: tuple[int, ...] = (254,)
    interfaces: tuple[Glob, ...] = ("vethr*",)
    protocols: tuple[int, ...] = ()
    address_interfaces: tuple[Glob, ...] = ()
    resync_interval_seconds: float = Field(60.0, gt=0, le=86400)
    netlink_rcvbuf_bytes: int = Field(64 * 1024 * 1024, ge=65536, le=1 << 30)

    @field_validator("tables", mode="before")
    @classmethod
    def _tables(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        return tuple(_name_or_number(v, ROUTE_TABLES, "table", 0xFFFFFFFF) for v in value)

    @field_validator("protocols", mode="before")
    @classmethod
    def _protocols(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        return tuple(_name_or_number(v, ROUTE_PROTOCOLS, "route protocol", 255) for v in value)

    @field_validator("interfaces", "address_interfaces")
    @classmethod
    def _globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_glob(v) for v in value)


class AttributesConfig(_Strict):
    med: int | None = Field(None, ge=0, le=0xFFFFFFFF)
    local_preference: int | None = Field(None, ge=0, le=0xFFFFFFFF)
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()

    @field_validator("communities")
    @classmethod
    def _communities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            parse_community(text)
        return value

    @field_validator("large_communities")
    @classmethod
    def _large(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            parse_large_community(text)
        return value

    def to_attributes(self) -> Attributes:
        return Attributes(
            med=self.med,
            local_preference=self.local_preference,
            communities=tuple(parse_community(c) for c in self.communities),
            large_communities=tuple(parse_large_community(c) for c in self.large_communities),
        )


class PolicyConfig(_Strict):
    allow: tuple[str, ...] = ()
    max_routes: int = Field(10000, ge=0, le=10_000_000)
    attributes: AttributesConfig = AttributesConfig()

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            try:
                Prefix(text)
            except ValueError as exc:
                raise ValueError(f"allow entry {text!r} is not a CIDR prefix: {exc}") from None
        return value

    def networks(self) -> tuple[Prefix, ...]:
        return tuple(Prefix(text) for text in self.allow)


class LifecycleConfig(_Strict):
    stale_after_seconds: float = Field(300.0, ge=0, le=86400)
    require_instance: bool = False
    sync_timeout_seconds: float = Field(30.0, gt=0, le=3600)


class DockerConfig(_Strict):
    enabled: bool = False
    url: str = Field("unix:///run/docker.sock", pattern=r"^(unix|tcp|https?)://\S+$")
    relist_interval_seconds: float = Field(60.0, gt=0, le=86400)
    timeout_seconds: float = Field(10.0, gt=0, le=600)


class MarathonConfig(_Strict):
    enabled: bool = False
    url: str = Field("http://marathon.mesos:8080", pattern=r"^https?://\S+$")
    agent: str = Field("", max_length=255)  # this host as Marathon's tasks name it
    username: str | None = None
    password: str | None = Field(None, repr=False)
    token: str | None = Field(None, repr=False)
    ca_file: str | None = None
    verify_tls: bool = True
    relist_interval_seconds: float = Field(60.0, gt=0, le=86400)
    timeout_seconds: float = Field(10.0, gt=0, le=600)
    label_selector: str | None = Field(None, pattern=r"^[\x21-\x7e][\x20-\x7e]{0,255}$")


class FilesConfig(_Strict):
    enabled: bool = False
    directory: str = "/etc/anycast-announcer/routes.d"


class DampingConfig(_Strict):
    enabled: bool = True
    penalty: float = Field(1000.0, gt=0)
    suppress: float = Field(2500.0, gt=0)
    reuse: float = Field(750.0, gt=0)
    half_life_seconds: float = Field(60.0, gt=0, le=86400)
    max_suppress_seconds: float = Field(600.0, gt=0, le=86400)


class DrainConfig(_Strict):
    mode: Literal["withdraw", "graceful"] = "withdraw"
    graceful_seconds: float = Field(30.0, ge=0, le=3600)
    maintenance_file: str = "/etc/anycast-announcer/maintenance"
    on_sigterm: bool = False
    sigterm_wait_seconds: float = Field(5.0, ge=0, le=600)


class ControlConfig(_Strict):
    socket: str = "/run/anycast-announcer/control.sock"
    state_directory: str = "/var/lib/anycast-announcer"


class GuardConfig(_Strict):
    max_withdraw_fraction: float = Field(0.5, gt=0, le=1)
    min_withdraws: int = Field(10, ge=1)


class MetricsConfig(_Strict):
    # host:port of the Prometheus endpoint ("127.0.0.1:9109", "[::1]:9109"); null: off.
    listen: str | None = Field(None, pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$")

    @field_validator("listen")
    @classmethod
    def _port(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= int(value.rsplit(":", 1)[1]) <= 65535:
            raise ValueError(f"metrics.listen {value!r}: the port must be 1..65535")
        return value


class WeightsConfig(_Strict):
    enabled: bool = False
    # bytes/s of one unit of anycast.weight; FRR 8.4 keeps bytes/s in 32 bits (the summed
    # value is capped at 4294967295), so keep units small: 125000 = 1 Mbit/s.
    unit_bytes_per_second: int = Field(125_000, ge=1, le=100_000_000)
    asn: int | None = Field(None, ge=1, le=0xFFFF)  # default: exabgp.local_as if 2-byte, else 23456
    transitive: bool = True  # type 0x00: a leaf passes it on over eBGP (docs/weighted.md)
    min_interval_seconds: float = Field(5.0, ge=0, le=3600)
    slow_start_steps: int = Field(4, ge=1, le=100)
    deprefer_as_path_prepend: int = Field(3, ge=1, le=10)  # anycast.unhealthy=deprefer


class RoutedConfig(_Strict):
    # The routed CNI plugin's and Docker driver's shared anycast IPs (docs/routed.md): the
    # announcer tells them which local instances do not serve, so the host's own multipath
    # leaves them out while another serves. Must match the plugin's netconf; unset: its
    # defaults (lockFile /run/lock/announcer-routed.lock, table main, routeProtocol 180).
    health_verdicts: bool = True
    lock_file: str | None = None
    table: int | None = Field(None, ge=1, le=0xFFFFFFFF)
    route_protocol: int | None = Field(None, ge=5, le=255)

    @field_validator("lock_file")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or "\0" in value):
            raise ValueError("must be an absolute path")
        return value

    @field_validator("table")
    @classmethod
    def _not_reserved(cls, value: int | None) -> int | None:
        if value in (253, 255):
            raise ValueError("253 (default) and 255 (local) are not for routes of containers")
        return value


class BfdPeerConfig(_Strict):
    address: IPv4Address | IPv6Address
    local_address: IPv4Address | IPv6Address | None = None
    interface: str | None = None  # refused: see below

    @field_validator("interface")
    @classmethod
    def _no_interface(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "not supported: the host's bfdd runs without zebra (the bfdd unit), which "
                "is what resolves interfaces, and leaves such a peer down; give local_address"
            )
        return value


class BfdConfig(_Strict):
    # Read by `announcer bfd-config` (the bfdd unit), not by the daemon: docs/operations.md.
    peers: tuple[BfdPeerConfig, ...] = ()  # empty: one peer per exabgp.neighbors entry
    receive_interval_ms: int = Field(300, ge=10, le=60000)
    transmit_interval_ms: int = Field(300, ge=10, le=60000)
    detect_multiplier: int = Field(3, ge=2, le=255)


class Config(_Strict):
    exabgp: ExaBGPConfig = ExaBGPConfig()
    kernel: KernelConfig = KernelConfig()
    policy: PolicyConfig = PolicyConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    docker: DockerConfig = DockerConfig()
    marathon: MarathonConfig = MarathonConfig()
    files: FilesConfig = FilesConfig()
    damping: DampingConfig = DampingConfig()
    drain: DrainConfig = DrainConfig()
    control: ControlConfig = ControlConfig()
    guard: GuardConfig = GuardConfig()
    metrics: MetricsConfig = MetricsConfig()
    weights: WeightsConfig = WeightsConfig()
    routed: RoutedConfig = RoutedConfig()
    bfd: BfdConfig = BfdConfig()


def _describe(error: Any, document: Any) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    value = error.get("input", "<missing>")
    if error["type"] == "extra_forbidden":
        return f"{loc}: unknown key (value {value!r})"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message} (got {value!r})"


def parse_config(document: Any, source: str = "<config>") -> Config:
    """Validate a parsed YAML document; raise :class:`ConfigError` naming every problem."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {document!r}")
    try:
        return Config.model_validate(document)
    except ValidationError as exc:
        lines = [f"{source}: {_describe(err, document)}" for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(document, str(path))


# Sections whose change needs a restart; the rest (policy, exabgp, lifecycle, drain, guard)
# apply live.
RESTART_SECTIONS = (
    "kernel", "docker", "marathon", "files", "control", "damping", "metrics", "routed",
)  # fmt: skip


def reloaded(running: Config, edited: Config) -> tuple[Config, list[str]]:
    """The configuration to run after an edit: the edit, except sections that need a
    restart, which keep their running values (and are named)."""
    restart = [k for k in RESTART_SECTIONS if getattr(edited, k) != getattr(running, k)]
    if restart:
        edited = edited.model_copy(update={k: getattr(running, k) for k in restart})
    return edited, restart


__all__ = [
    "EX_CONFIG",
    "Config",
    "ConfigError",
    "load_config",
    "parse_community",
    "parse_config",
    "parse_large_community",
    "reloaded",
]
