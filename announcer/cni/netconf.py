"""The CNI side, pure: network config, runtime environment, results and errors (spec 1.0/1.1).

No I/O here: plugin.py reads stdin and the environment, runs IPAM and the wiring, and
writes what these functions render.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from announcer.cni.mesos import ARGS_KEY as MESOS_ARGS_KEY
from announcer.cni.mesos import MesosArgsError, extra_ips_from_mesos
from announcer.cni.scheme import (
    HOST_GATEWAY_V4,
    HOST_GATEWAY_V6,
    IPAddress,
    WiringConfig,
    WiringError,
    parse_ip,
)

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = "1.1.0"

# Error codes of the spec (1-99) and ours (100+).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
CONTAINER_UNKNOWN = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
ADDRESS_IN_USE = 100
WIRING_FAILED = 101
IPAM_FAILED = 102

# Keys every CNI plugin may meet in its config (spec, conventions, runtimes' additions).
_CNI_KEYS = {"cniVersion", "name", "type", "ipam", "dns", "args", "runtimeConfig",
             "prevResult", "capabilities", "ipMasq", "cniVersions",
             "cni.dev/valid-attachments"}  # fmt: skip
# Ours, with their JSON type.
_OWN_KEYS: dict[str, type] = {"hostVethPrefix": str, "mtu": int, "table": int,
                              "routeProtocol": int, "lockFile": str,
                              "libcniCacheDir": str}  # fmt: skip
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_PLUGIN_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
EXTRA_IPS_KEY = "extraIPs"  # args.cni.extraIPs and runtimeConfig.extraIPs
EXTRA_IPS_ARG = "EXTRA_IPS"  # CNI_ARGS "EXTRA_IPS=10.9.9.9,10.9.9.10"


class CNIError(Exception):
    """An error as the spec reports it: code, msg, details."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


@dataclass(frozen=True)
class NetConf:
    """The validated network configuration given on stdin."""

    cni_version: str
    name: str
    ipam_type: str
    wiring: WiringConfig
    extra_ips: tuple[IPAddress, ...]
    prev_result: Mapping[str, Any] | None
    dns: Mapping[str, Any] | None
    valid_attachments: tuple[tuple[str, str], ...] = field(default=())
    ipam: Mapping[str, Any] = field(default_factory=dict)  # the whole ipam object
    libcni_cache_dir: str | None = None  # GC: the runtime's libcni cache to reclaim in


@dataclass(frozen=True)
class Environment:
    """The CNI_* variables of one call."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: Mapping[str, str]
    path: tuple[str, ...]


def _need(cond: bool, key: str, value: object, why: str, code: int = INVALID_CONFIG) -> None:
    if not cond:
        raise CNIError(code, f"{key}: {value!r} {why}", f"{key}={json.dumps(value, default=str)}")


def parse_version(raw: bytes) -> str:
    """Only cniVersion, for VERSION (whose stdin carries nothing else)."""
    try:
        doc = json.loads(raw or b"{}")
    except ValueError as e:
        raise CNIError(DECODE_FAILURE, f"network config is not JSON: {e}") from e
    version = doc.get("cniVersion", LATEST_VERSION) if isinstance(doc, dict) else LATEST_VERSION
    return str(version)


def parse_netconf(raw: bytes, command: str = "ADD") -> NetConf:
    """Validate the whole config strictly; errors name the key and value."""
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise CNIError(DECODE_FAILURE, f"network config is not JSON: {e}") from e
    _need(isinstance(doc, dict), "config", doc, "is not a JSON object")
    for key, value in doc.items():
        _need(key in _CNI_KEYS or key in _OWN_KEYS, key, value,
              "is not a key this plugin knows", UNSUPPORTED_FIELD)  # fmt: skip
    version = doc.get("cniVersion")
    _need(version in SUPPORTED_VERSIONS, "cniVersion", version,
          f"is not supported (supported: {', '.join(SUPPORTED_VERSIONS)})",
          INCOMPATIBLE_VERSION)  # fmt: skip
    name = doc.get("name")
    _need(isinstance(name, str) and bool(_NAME_RE.match(name)), "name", name,
          "must be a network name (letters, digits, '_', '.', '-')")  # fmt: skip
    ipam = doc.get("ipam")
    _need(isinstance(ipam, dict) and isinstance(ipam.get("type"), str), "ipam", ipam,
          "must be an object with a 'type' (this plugin delegates IPAM)")  # fmt: skip
    ipam_type = ipam["type"]
    _need(bool(_PLUGIN_RE.match(ipam_type)), "ipam.type", ipam_type, "is not a plugin name")
    prev = doc.get("prevResult")
    _need(prev is None or isinstance(prev, dict), "prevResult", prev, "must be an object")
    dns = doc.get("dns")
    _need(dns is None or isinstance(dns, dict), "dns", dns, "must be an object")
    cache = doc.get("libcniCacheDir")
    absolute = isinstance(cache, str) and cache.startswith("/")
    _need(cache is None or absolute, "libcniCacheDir", cache, "must be an absolute path")
    return NetConf(
        cni_version=version,
        name=name,
        ipam_type=ipam_type,
        wiring=_wiring_config(doc),
        extra_ips=_extra_ips_from_config(doc),
        prev_result=prev,
        dns=dns,
        valid_attachments=_valid_attachments(doc) if command == "GC" else (),
        ipam=ipam,
        libcni_cache_dir=cache,
    )


def _wiring_config(doc: Mapping[str, Any]) -> WiringConfig:
    for key, kind in _OWN_KEYS.items():
        value = doc.get(key)
        ok = value is None or (isinstance(value, kind) and not isinstance(value, bool))
        _need(ok, key, value, f"must be a JSON {'string' if kind is str else 'integer'}")
    given = {
        "host_veth_prefix": doc.get("hostVethPrefix"),
        "mtu": doc.get("mtu"),
        "table": doc.get("table"),
        "route_protocol": doc.get("routeProtocol"),
        "lock_file": doc.get("lockFile"),
    }
    try:
        return WiringConfig(**{k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        raise CNIError(INVALID_CONFIG, str(e)) from e


def _ip_list(where: str, value: object) -> tuple[IPAddress, ...]:
    _need(isinstance(value, list) and all(isinstance(v, str) for v in value), where, value,
          "must be a list of IP address strings")  # fmt: skip
    assert isinstance(value, list)
    try:
        return tuple(parse_ip(v) for v in value)
    except WiringError as e:
        raise CNIError(INVALID_CONFIG, f"{where}: {e}", f"{where}={json.dumps(value)}") from e


def _extra_ips_from_config(doc: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    found: tuple[IPAddress, ...] = ()
    args = doc.get("args", {})
    _need(isinstance(args, dict), "args", args, "must be an object")
    cni_args = args.get("cni", {})
    _need(isinstance(cni_args, dict), "args.cni", cni_args, "must be an object")
    if EXTRA_IPS_KEY in cni_args:
        found += _ip_list(f"args.cni.{EXTRA_IPS_KEY}", cni_args[EXTRA_IPS_KEY])
    runtime = doc.get("runtimeConfig", {})
    _need(isinstance(runtime, dict), "runtimeConfig", runtime, "must be an object")
    if EXTRA_IPS_KEY in runtime:
        found += _ip_list(f"runtimeConfig.{EXTRA_IPS_KEY}", runtime[EXTRA_IPS_KEY])
    try:
        found += extra_ips_from_mesos(args)
    except MesosArgsError as e:  # the message quotes the value, escaped and shortened
        raise CNIError(INVALID_CONFIG, str(e), f"args.{MESOS_ARGS_KEY}") from None
    return found


def _valid_attachments(doc: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    key = "cni.dev/valid-attachments"
    value = doc.get(key, [])
    _need(isinstance(value, list), key, value, "must be a list")
    out = []
    for item in value:
        ok = isinstance(item, dict) and isinstance(item.get("containerID"), str)
        _need(ok and isinstance(item.get("ifname"), str), key, item,
              "entries need containerID and ifname")  # fmt: skip
        out.append((item["containerID"], item["ifname"]))
    return tuple(out)


_NEEDS = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}


def parse_environment(env: Mapping[str, str]) -> Environment:
    command = env.get("CNI_COMMAND", "")
    if command not in _NEEDS:
        raise CNIError(INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not one of "
                       f"{', '.join(_NEEDS)}")  # fmt: skip
    missing = [k for k in _NEEDS[command] if not env.get(k)]
    if missing:
        raise CNIError(INVALID_ENVIRONMENT, f"{command} needs {', '.join(missing)} (missing)")
    return Environment(
        command=command,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        args=parse_cni_args(env.get("CNI_ARGS", "")),
        path=tuple(p for p in env.get("CNI_PATH", "").split(":") if p),
    )


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS: "K1=V1;K2=V2"."""
    out = {}
    for pair in filter(None, text.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CNIError(INVALID_ENVIRONMENT, f"CNI_ARGS entry {pair!r} is not KEY=VALUE")
        out[key] = value
    return out


def extra_ips(conf: NetConf, env: Environment) -> tuple[IPAddress, ...]:
    """Extra/anycast IPs: args.cni.extraIPs + runtimeConfig.extraIPs + CNI_ARGS EXTRA_IPS."""
    from_env: tuple[IPAddress, ...] = ()
    if env.args.get(EXTRA_IPS_ARG):
        items = [s for s in env.args[EXTRA_IPS_ARG].split(",") if s]
        try:
            from_env = tuple(parse_ip(s) for s in items)
        except WiringError as e:
            raise CNIError(INVALID_ENVIRONMENT, f"CNI_ARGS {EXTRA_IPS_ARG}: {e}") from e
    return conf.extra_ips + from_env


def ipam_ips(result: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    """The addresses an IPAM (or a previous) result hands out, prefix lengths dropped."""
    ips = result.get("ips")
    if not isinstance(ips, list) or not ips:
        raise CNIError(IPAM_FAILED, "IPAM returned no IP addresses", json.dumps(result))
    out = []
    for entry in ips:
        address = entry.get("address") if isinstance(entry, dict) else None
        if not isinstance(address, str):
            raise CNIError(IPAM_FAILED, f"IPAM result entry {entry!r} has no address")
        try:
            out.append(ipaddress.ip_interface(address).ip)
        except ValueError:
            raise CNIError(IPAM_FAILED, f"IPAM result address {address!r} is not an IP") from None
    return tuple(out)


def render_result(
    version: str,
    interfaces: Sequence[Mapping[str, str]],
    ips: Sequence[IPAddress],
    dns: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The ADD result: every IP as a host prefix on the container interface (index 1)."""
    result: dict[str, Any] = {
        "cniVersion": version,
        "interfaces": [dict(i) for i in interfaces],
        "ips": [_render_ip(version, ip) for ip in ips],
        "routes": [],
        "dns": dict(dns or {}),
    }
    if any(ip.version == 4 for ip in ips):
        result["routes"].append({"dst": "0.0.0.0/0", "gw": str(HOST_GATEWAY_V4)})
    if any(ip.version == 6 for ip in ips):
        result["routes"].append({"dst": "::/0", "gw": str(HOST_GATEWAY_V6)})
    return result


def _render_ip(version: str, ip: IPAddress) -> dict[str, Any]:
    gateway = HOST_GATEWAY_V4 if ip.version == 4 else HOST_GATEWAY_V6
    entry: dict[str, Any] = {
        "address": f"{ip}/{ip.max_prefixlen}",
        "gateway": str(gateway),
        "interface": 1,
    }
    if version.startswith("0."):
        entry["version"] = str(ip.version)
    return entry


def render_error(version: str, error: CNIError) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": version, "code": error.code, "msg": error.msg}
    if error.details:
        out["details"] = error.details
    return out


def render_version(version: str) -> dict[str, Any]:
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}
