"""Who holds each shared extra IP, which holders are unhealthy, and who serves it.

Once a holder can be out of its IP's nexthop group for health, the group is no longer the
record of who holds the IP (docs/adr/0004, "Decision on the open question"). Two small
JSON files next to the lock file keep what the group cannot:

- ``<lock_file>.holders.json``: IP -> host veth -> that veth's ifindex, written by ADD,
  DEL, GC and set_unhealthy (``"holders": {"10.9.9.1": {"vethrA": 12, "vethrB": 13}}``).
  The ifindex tells a holder from a later veth of the same name (names are hashes of
  container id and ifname, and may come back); an entry whose name and index no longer
  match a link is stale.
- ``<lock_file>.unhealthy.json``: the announcer's verdicts, the full set of host veths
  whose instance is unhealthy (``"unhealthy": ["vethrB"]``); the last set written wins.
  Only the announcer writes it (set_unhealthy); names that hold nothing are ignored.

Both also name the network namespace (and boot) they describe, ``"netns"``: a file of
another namespace sharing the lock file (tests, nested hosts) or of an earlier boot is
ignored and overwritten. Both are replaced atomically (a temporary file of a fresh random
name renamed over), only under the lock, mode 0644; reads need no lock. A missing file is
empty: the holders then fall back on the groups' members (the upgrade path), and no
instance is unhealthy.

Who may write which (the announcer runs as its own user with CAP_NET_ADMIN, the plugin as
root; /run/lock is sticky, so only a file's owner or root may replace it): the announcer
makes and replaces its own verdict file, and a holders file only where it may (none yet,
or its own); root replaces either. StateFileDenied says which file and whose it is.

``serving`` is the one rule every writer applies (``wanted`` feeds it from the kernel's
state): a shared route goes through its usable holders minus the unhealthy ones, or
through all usable holders when every one is unhealthy (the route keeps serving; the
announcer withdraws or deprefers it in BGP).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import logging
import os
import socket
import struct
import tempfile
from collections.abc import Callable, Collection, Mapping, Set
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TypeVar

from announcer.cni.host_routes import Routed
from announcer.cni.rtnl import Link, Rtnl
from announcer.cni.scheme import IFNAME_RE, IPAddress, WiringConfig, WiringError

log = logging.getLogger("announcer.cni")
T = TypeVar("T")
SO_NETNS_COOKIE = 71  # linux/asm-generic/socket.h
TMP_SUFFIX = ".tmp"

Holders = dict[IPAddress, dict[str, int]]  # ip -> host veth name -> its ifindex


def serving(holders: Mapping[int, str], usable: Set[int], unhealthy: Set[str]) -> set[int]:
    """The ifindexes a shared route should go through: its usable holders (ifindex ->
    name) but the unhealthy ones; all usable holders if every one of them is unhealthy."""
    candidates = {index for index in holders if index in usable}
    healthy = {index for index in candidates if holders[index] not in unhealthy}
    return healthy or candidates


@dataclass(frozen=True)
class Context:
    """Besides routes and nexthops, what a group's members are computed from."""

    links: dict[int, Link]
    record: Holders | None  # None: no record yet (the groups are the only one)
    unhealthy: frozenset[str]


def member_oifs(state: Routed) -> set[int]:
    found = (state.nexthops.get(i) for i in state.members)
    return {nh.oif for nh in found if nh is not None and nh.oif is not None}


def holders_of(state: Routed, ctx: Context) -> dict[int, str]:
    """ifindex -> name of every live holder of state.ip: recorded (name and index still
    match a link), or in its group now (which a missing record falls back on)."""
    found = {}
    for name, index in (ctx.record or {}).get(state.ip, {}).items():
        link = ctx.links.get(index)
        if link is not None and link.name == name:
            found[index] = name
    for index in member_oifs(state):
        if index in ctx.links:
            found[index] = ctx.links[index].name
    return found


def wanted(holders: dict[int, str], ctx: Context) -> set[int]:
    """The ifindexes a shared route of these holders should go through: serving, where a
    holder is usable if its veth has carrier (a device nexthop needs it, and the kernel
    drops one whose veth loses it)."""
    usable = {i for i in holders if i in ctx.links and ctx.links[i].carrier}
    return serving(holders, usable, ctx.unhealthy)


# --- pure: the files' contents ------------------------------------------------------------


def _document(text: str, key: str) -> tuple[str, object]:
    """(netns, the value of key) of one of the files; ValueError naming what is wrong."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("netns"), str) or key not in doc:
        raise ValueError(f"not an object with netns and {key}: {text[:80]!r}")
    return doc["netns"], doc[key]


def parse_holders(text: str) -> tuple[str, Holders]:
    """(netns, holders) of the holders file; ValueError naming what is wrong."""
    netns, doc = _document(text, "holders")
    if not isinstance(doc, dict):
        raise ValueError(f"holders are not an object: {doc!r}")  # noqa: TRY004 - as json's
    found: Holders = {}
    for ip, veths in doc.items():
        if not isinstance(veths, dict) or not all(
            isinstance(name, str) and type(index) is int for name, index in veths.items()
        ):
            raise ValueError(f"holders of {ip!r} are not {{name: ifindex}}: {veths!r}")
        found[ipaddress.ip_address(ip)] = dict(veths)
    return netns, found


def render_holders(netns: str, holders: Holders) -> str:
    doc = {str(ip): dict(sorted(veths.items())) for ip, veths in holders.items() if veths}
    return json.dumps({"netns": netns, "holders": dict(sorted(doc.items()))}, indent=1) + "\n"


def parse_unhealthy(text: str) -> tuple[str, frozenset[str]]:
    """(netns, unhealthy host veths) of the verdict file; ValueError naming what is wrong."""
    netns, doc = _document(text, "unhealthy")
    if not isinstance(doc, list) or not all(isinstance(name, str) for name in doc):
        raise ValueError(f"unhealthy is not a list of interface names: {doc!r}")
    return netns, frozenset(doc)


def render_unhealthy(netns: str, names: Collection[str]) -> str:
    return json.dumps({"netns": netns, "unhealthy": sorted(names)}) + "\n"


def validate_names(names: Collection[str]) -> frozenset[str]:
    """names as a set; WiringError naming the first that is no interface name."""
    for name in names:
        if not isinstance(name, str) or not IFNAME_RE.match(name):
            raise WiringError(f"unhealthy interface {name!r} is not an interface name")
    return frozenset(names)


# --- I/O ------------------------------------------------------------------------------------


def holders_path(cfg: WiringConfig) -> Path:
    return Path(cfg.lock_file + ".holders.json")


def unhealthy_path(cfg: WiringConfig) -> Path:
    return Path(cfg.lock_file + ".unhealthy.json")


def _owner(path: Path) -> str:
    """Who owns path and who we are, for an error about it."""
    try:
        st = path.stat()
    except OSError:
        return f"this process runs as uid {os.geteuid()}"
    mode = st.st_mode & 0o7777
    return f"owned by uid {st.st_uid}, mode {mode:04o}; this process runs as uid {os.geteuid()}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except PermissionError as e:
        raise WiringError(f"reading {path}: {e} ({_owner(path)}): make it readable "
                          f"(chmod 0644 {path}; every writer makes it so)") from e  # fmt: skip
    except OSError as e:
        raise WiringError(f"reading {path}: {e}") from e


@cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def netns_id() -> str:
    """The calling thread's network namespace, unique across boots: the boot id and the
    namespace's cookie (never reused; kernel >= 5.14), else its inode (reused only once
    the namespace is gone)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
            ns = f"cookie:{struct.unpack('=Q', raw)[0]}"
        except OSError:
            ns = f"inode:{os.stat('/proc/thread-self/ns/net').st_ino}"
    return f"{_boot_id()}/{ns}"


def _load(path: Path, parse: Callable[[str], tuple[str, T]]) -> T | None:
    """What path holds for this network namespace; None if nothing (no file, a file of
    another namespace or boot, an unreadable one: logged)."""
    text = _read(path)
    if text is None:
        return None
    try:
        netns, found = parse(text)
    except ValueError as e:
        log.error("state_file_unreadable path=%s error=%s", path, e)
        return None
    if netns != netns_id():
        log.info("state_file_ignored path=%s netns=%s: not this one's", path, netns)
        return None
    return found


def load_holders(cfg: WiringConfig) -> Holders | None:
    """The recorded holders; None if there is no record (of this namespace)."""
    return _load(holders_path(cfg), parse_holders)


def load_unhealthy(cfg: WiringConfig) -> frozenset[str]:
    """The host veths last published unhealthy (none if there is no file)."""
    return _load(unhealthy_path(cfg), parse_unhealthy) or frozenset()


class StateFileDenied(WiringError):
    """A state file this process may not write: owner is the uid of the file in the way
    (another user's, in a sticky directory such as /run/lock: only its owner or root may
    replace it), or None if this process may not write in the directory at all."""

    def __init__(self, message: str, owner: int | None) -> None:
        super().__init__(message)
        self.owner = owner


def _denied(path: Path, e: OSError, *, replacing: bool) -> StateFileDenied:
    euid = os.geteuid()
    if replacing:
        with contextlib.suppress(OSError):
            owner = path.stat().st_uid
            if owner != euid:
                return StateFileDenied(
                    f"writing {path}: {e.strerror} (it is uid {owner}'s, this process runs as uid "
                    f"{euid}: in a sticky directory only its owner or root may replace it)",
                    owner,
                )
    return StateFileDenied(
        f"writing {path}: {e.strerror} (this process, uid {euid}, may not write in {path.parent})",
        None,
    )


def _remove_leftovers(path: Path) -> None:
    """Delete temporary files of path that a writer killed halfway left (the caller holds
    the lock, so no other write is under way); those of another user stay if we may not."""
    prefix = path.name + "."
    with contextlib.suppress(OSError):
        for name in os.listdir(path.parent):
            if name.startswith(prefix) and name.endswith(TMP_SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(path.parent / name)


def _write(path: Path, text: str) -> None:
    """Replace path atomically with text, mode 0644 whatever the umask (the announcer, not
    root, reads what root writes). The caller holds the lock. The temporary file has a
    fresh random name, made with O_EXCL: a leftover (of a writer killed halfway, of
    another user) is never opened, so it can neither block nor be written through. Errors
    leave that name out: the same failure gives the same message (the daemon logs a
    failure once per distinct message)."""
    _remove_leftovers(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=TMP_SUFFIX)
        with os.fdopen(fd, "w") as f:
            os.fchmod(fd, 0o644)
            f.write(text)
            f.flush()
            os.fsync(fd)
        os.replace(tmp, path)
        tmp = None
    except PermissionError as e:
        raise _denied(path, e, replacing=tmp is not None) from e
    except OSError as e:
        hint = ""
        if e.errno == errno.EROFS:  # systemd's ProtectSystem=strict, without an exception
            hint = f" (a read-only mount: under systemd, ReadWritePaths={path.parent})"
        raise WiringError(f"writing {path}: {e.strerror or e}{hint}") from e
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def save_holders(cfg: WiringConfig, holders: Holders) -> None:
    """Replace the record (StateFileDenied if this process may not: see _reconcile)."""
    _write(holders_path(cfg), render_holders(netns_id(), holders))


def save_unhealthy(cfg: WiringConfig, names: Collection[str]) -> None:
    path = unhealthy_path(cfg)
    try:
        _write(path, render_unhealthy(netns_id(), names))
    except StateFileDenied as e:
        if e.owner is None:
            raise
        raise StateFileDenied(
            f"{e}; only the announcer writes {path.name}, this one was left by another user "
            f"(a test or an older run as root): remove it (rm {path})",
            e.owner,
        ) from e


def read_context(rtnl: Rtnl, cfg: WiringConfig) -> Context:
    return Context(rtnl.links(), load_holders(cfg), load_unhealthy(cfg))
