"""announcer-routed: the CNI plugin (spec 1.0, GC/STATUS of 1.1) for the routed wiring.

A runtime runs it with the network config on stdin and CNI_* in the environment, inside
the host's network namespace. IPAM is delegated: the plugin named in ``ipam.type`` is run
from CNI_PATH with the same stdin and environment. stdout carries exactly one JSON
document (result or error); logs go to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from announcer.cni import attachments, netconf, reclaim, wiring
from announcer.cni.netconf import CNIError, Environment, NetConf
from announcer.cni.scheme import AddressInUse, NetnsNotFound, WiringError

log = logging.getLogger("announcer.cni")
IPAM_TIMEOUT_SECONDS = 120


def find_plugin(name: str, path: tuple[str, ...]) -> Path:
    for directory in path:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(
        netconf.NOT_AVAILABLE if not path else netconf.IPAM_FAILED,
        f"IPAM plugin {name!r} not found in CNI_PATH",
        f"CNI_PATH={':'.join(path)}",
    )


def run_ipam(
    conf: NetConf,
    env: Environment,
    raw: bytes,
    command: str,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run the IPAM plugin for command with our stdin and environment (CNI_* overrides
    replaced); its result or CNIError."""
    binary = find_plugin(conf.ipam_type, env.path)
    child_env = dict(os.environ, CNI_COMMAND=command, **(overrides or {}))
    try:
        proc = subprocess.run(
            [str(binary)], input=raw, env=child_env, capture_output=True,
            timeout=IPAM_TIMEOUT_SECONDS, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CNIError(netconf.IPAM_FAILED, f"running IPAM plugin {binary}: {e}") from e
    if proc.stderr:
        log.info("ipam_stderr plugin=%s text=%s", binary, proc.stderr.decode(errors="replace"))
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        doc = {"msg": proc.stdout.decode(errors="replace")}
    if proc.returncode != 0:
        code = doc.get("code")
        code = code if isinstance(code, int) else netconf.IPAM_FAILED
        raise CNIError(code, f"IPAM plugin {conf.ipam_type} {command} failed: {doc.get('msg')}",
                       str(doc.get("details", "")))  # fmt: skip
    if not isinstance(doc, dict):
        raise CNIError(netconf.IPAM_FAILED, f"IPAM plugin {conf.ipam_type} returned {doc!r}")
    return doc


def _wiring_error(e: WiringError) -> CNIError:
    if isinstance(e, AddressInUse):
        return CNIError(netconf.ADDRESS_IN_USE, str(e), f"ip={e.ip} device={e.device}")
    if isinstance(e, NetnsNotFound):
        return CNIError(netconf.CONTAINER_UNKNOWN, str(e))
    return CNIError(netconf.WIRING_FAILED, str(e))


def cmd_add(conf: NetConf, env: Environment, raw: bytes) -> dict[str, Any]:
    extra = netconf.extra_ips(conf, env)  # validated before IPAM allocates anything
    allocated = run_ipam(conf, env, raw, "ADD")
    try:
        made = wiring.add_container(
            env.netns, netconf.ipam_ips(allocated), extra, ifname=env.ifname,
            container_id=env.container_id, config=conf.wiring, network=conf.name,
        )  # fmt: skip
    except BaseException as e:
        _release(conf, env, raw)
        if isinstance(e, WiringError):
            raise _wiring_error(e) from e
        raise
    interfaces = [
        {"name": made.host_ifname, "mac": made.host_mac},
        {"name": made.ifname, "mac": made.mac, "sandbox": env.netns},
    ]
    dns = allocated.get("dns") or conf.dns
    return netconf.render_result(conf.cni_version, interfaces, made.all_ips, dns)


def _release(conf: NetConf, env: Environment, raw: bytes) -> None:
    """Give the IPAM allocation back after a failed ADD; its own failure is only logged."""
    try:
        run_ipam(conf, env, raw, "DEL")
    except CNIError as e:
        log.warning("ipam_release_failed container=%s msg=%s", env.container_id, e.msg)


def cmd_del(conf: NetConf, env: Environment, raw: bytes) -> None:
    try:
        removed = wiring.del_container(
            env.netns or None, ifname=env.ifname, container_id=env.container_id,
            config=conf.wiring,
        )  # fmt: skip
    except WiringError as e:
        raise _wiring_error(e) from e
    log.info("container_deleted container=%s removed=%s", env.container_id, removed)
    run_ipam(conf, env, raw, "DEL")


def cmd_check(conf: NetConf, env: Environment, raw: bytes) -> None:
    if conf.prev_result is None:
        raise CNIError(netconf.INVALID_CONFIG, "CHECK needs prevResult in the network config")
    run_ipam(conf, env, raw, "CHECK")
    extra = netconf.extra_ips(conf, env)
    primary = [ip for ip in netconf.ipam_ips(conf.prev_result) if ip not in extra]
    try:
        problems = wiring.check_container(
            env.netns, primary, extra, ifname=env.ifname, container_id=env.container_id,
            config=conf.wiring,
        )  # fmt: skip
    except WiringError as e:
        raise _wiring_error(e) from e
    if problems:
        raise CNIError(netconf.WIRING_FAILED, f"container {env.container_id} is not wired as "
                       f"expected: {problems[0]}", "; ".join(problems))  # fmt: skip


def ipam_versions(conf: NetConf, env: Environment) -> list[str]:
    """The CNI versions the IPAM plugin supports (VERSION), [] if it does not say."""
    doc = run_ipam(conf, env, json.dumps({"cniVersion": conf.cni_version}).encode(), "VERSION")
    found = doc.get("supportedVersions")
    return [str(v) for v in found] if isinstance(found, list) else []


def cmd_status(conf: NetConf, env: Environment, raw: bytes) -> None:
    try:
        find_plugin(conf.ipam_type, env.path)
    except CNIError as e:
        raise CNIError(netconf.NOT_AVAILABLE, e.msg, e.details) from e
    if "1.1.0" in ipam_versions(conf, env):
        run_ipam(conf, env, raw, "STATUS")


def cmd_gc(conf: NetConf, env: Environment, raw: bytes) -> None:
    """Remove what belongs to attachments the runtime no longer knows: veths (out of their
    shared routes), unused nexthops, IPAM leases (reclaim.py), the libcni cache if named."""
    valid = {(cid, ifname) for cid, ifname in conf.valid_attachments}
    removed = attachments.collect_garbage(conf.name, valid, conf.wiring)
    log.info("gc_done network=%s removed=%s", conf.name, ",".join(removed) or "-")
    versions = ipam_versions(conf, env)
    if "1.1.0" in versions:
        run_ipam(conf, env, raw, "GC")
    elif conf.ipam_type == "host-local":
        _release_stale_leases(conf, env, raw, valid, versions)
    else:
        log.warning("ipam_gc_unsupported plugin=%s versions=%s: its leases stay",
                    conf.ipam_type, ",".join(versions) or "-")  # fmt: skip
    if conf.libcni_cache_dir:
        cached = reclaim.remove_cached_results(Path(conf.libcni_cache_dir), conf.name, valid)
        log.info("gc_cache_reclaimed network=%s removed=%s", conf.name, ",".join(cached) or "-")


def _release_stale_leases(
    conf: NetConf, env: Environment, raw: bytes, valid: set[tuple[str, str]], versions: list[str]
) -> None:
    """host-local without GC: have it release each lease of a gone attachment (DEL)."""
    usable = [v for v in netconf.SUPPORTED_VERSIONS if v in versions and v != "1.1.0"]
    doc = {k: v for k, v in json.loads(raw).items() if k != "cni.dev/valid-attachments"}
    stdin = json.dumps(dict(doc, cniVersion=usable[-1] if usable else "1.0.0")).encode()
    lease_dir = reclaim.host_local_dir(conf.ipam, conf.name)
    for ip, cid, ifname in reclaim.stale_leases(lease_dir, valid):
        run_ipam(conf, env, stdin, "DEL",
                 {"CNI_CONTAINERID": cid, "CNI_IFNAME": ifname, "CNI_NETNS": ""})  # fmt: skip
        log.info("lease_released network=%s ip=%s container=%s ifname=%s", conf.name, ip, cid,
                 ifname)  # fmt: skip


def handle(raw: bytes, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """One plugin call: the JSON to print (None for nothing), or CNIError."""
    env = netconf.parse_environment(environ)
    if env.command == "VERSION":
        version = netconf.parse_version(raw)
        if version not in netconf.SUPPORTED_VERSIONS:
            version = netconf.LATEST_VERSION
        return netconf.render_version(version)
    conf = netconf.parse_netconf(raw, env.command)
    if env.command in ("GC", "STATUS") and conf.cni_version != "1.1.0":
        raise CNIError(netconf.INCOMPATIBLE_VERSION,
                       f"{env.command} needs cniVersion 1.1.0, not {conf.cni_version}")  # fmt: skip
    if env.command == "ADD":
        return cmd_add(conf, env, raw)
    {"DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status, "GC": cmd_gc}[env.command](
        conf, env, raw
    )
    return None


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="announcer-routed %(levelname)s %(message)s")  # fmt: skip
    raw = sys.stdin.buffer.read()
    try:
        out = handle(raw, os.environ)
    except CNIError as e:
        version = _version_or_latest(raw)
        log.error("cni_error code=%d msg=%s", e.code, e.msg)
        sys.stdout.write(json.dumps(netconf.render_error(version, e)) + "\n")
        sys.exit(1)
    except Exception as e:  # a bug or an unexpected OS error: still the spec's JSON
        log.exception("cni_unexpected_error")
        error = CNIError(netconf.IO_FAILURE, f"{type(e).__name__}: {e}")
        sys.stdout.write(json.dumps(netconf.render_error(_version_or_latest(raw), error)) + "\n")
        sys.exit(1)
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")


def _version_or_latest(raw: bytes) -> str:
    try:
        version = netconf.parse_version(raw)
    except CNIError:
        return netconf.LATEST_VERSION
    return version if version in netconf.SUPPORTED_VERSIONS else netconf.LATEST_VERSION
