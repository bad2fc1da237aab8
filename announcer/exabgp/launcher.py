"""Run ExaBGP with two upstream fixes backported in memory, on verified releases only.

    announcer exabgp [--stock] ARGS...            (cli.py wires this module's ``main``)
    python -m announcer.exabgp.launcher [--stock] ARGS...

runs ExaBGP's own entry point with ARGS, exactly as ``exabgp ARGS...`` would, after
replacing (in this process's memory only, never on disk) two functions of the release it
was verified against (docs/adr/0003-accelerated-exabgp-launcher.md):

* ``poll_while_queued`` (``Reactor._wait_for_io``): the reactor no longer sleeps in its poll
  (``reactor.speed`` x 10 ms) while the API queue still holds work. It still polls, so the
  peers, the API pipes and the timers get their turn exactly as before.
* ``resolve_self_shared`` (``_Configuration.inject_change``): a route from the API is
  stored in the adj-rib-out without ``Neighbor.remove_self``'s deep copy. A route with an
  explicit next-hop is stored as parsed; a ``next-hop self`` one gets a new NLRI object
  holding the neighbor's address and an attribute set with the resolved NEXT_HOP,
  built once per parsed line and neighbor and shared by the line's routes.
  Anything but plain unicast/multicast NLRI (labels, VPN, flow, VPLS...) goes through the
  stock ``remove_self``. Routes from the configuration file are untouched.

A fix applies only to a release listed in ``VERIFIED`` and only if the source of every
function it replaces or relies on hashes (sha256 of ``inspect.getsource``) to what was
verified, so a distribution-patched build with the same version runs stock. Any other
case runs stock, and one line on stderr says so and why. ``--stock`` as the first
argument, or ``ANNOUNCER_EXABGP_STOCK=1`` in the environment, runs stock on purpose.

Imports only the standard library and ExaBGP, and ExaBGP only once ``sys.argv`` is set:
ExaBGP reads ``sys.argv[0]`` at import time to find its etc/ folder.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

STOCK_ENV = "ANNOUNCER_EXABGP_STOCK"
STOCK_FLAG = "--stock"
MARK = "__announcer_fix__"  # set on every function this module installs
SHARED_LIMIT = 64  # resolved attribute sets kept for reuse (one per line and neighbor)


@dataclass(frozen=True, slots=True)
class Fix:
    """One backported change: the function it replaces and what it relies on, as verified.

    ``guards`` maps ``module:Qual.name`` to the sha256 of that function's source in the
    verified release; the first entry is the function ``install`` replaces."""

    name: str
    guards: tuple[tuple[str, str], ...]
    install: Callable[[], None]

    @property
    def target(self) -> str:
        return self.guards[0][0]


@dataclass(frozen=True, slots=True)
class Decision:
    """What runs: the fixes applied (none: stock) and why, for the one stderr line."""

    version: str
    fixes: tuple[str, ...]
    reason: str

    @property
    def stock(self) -> bool:
        return not self.fixes

    def line(self) -> str:
        mode = "stock" if self.stock else "accelerated"
        fixes = ",".join(self.fixes) or "none"
        return (
            f"{time.strftime('%Y-%m-%dT%H:%M:%S')} info exabgp_launcher mode={mode}"
            f" version={self.version} fixes={fixes} reason={self.reason!r}"
        )


# --------------------------------------------------------------------------- lookups


def resolve(target: str) -> Any:
    """``module:Qual.name`` -> the object (a class attribute is returned unbound)."""
    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def source_sha256(target: str) -> str | None:
    """sha256 of the target's source text, None when it has no readable source."""
    try:
        text = inspect.getsource(resolve(target))
    except (OSError, TypeError, AttributeError, ImportError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def installed(fix: Fix) -> bool:
    """Is the fix already in place (this module ran before in this process)?"""
    try:
        return getattr(resolve(fix.target), MARK, None) == fix.name
    except (AttributeError, ImportError):
        return False  # not there at all: the source check says why


def _replace(target: str, name: str, function: Callable[..., Any]) -> None:
    module_name, _, qualname = target.partition(":")
    owner_path, _, attribute = qualname.rpartition(".")
    owner = resolve(f"{module_name}:{owner_path}")
    setattr(function, MARK, name)
    function.__qualname__ = qualname
    setattr(owner, attribute, function)


# --------------------------------------------------------------------------- the fixes


def _install_poll_while_queued() -> None:
    """No sleep in the reactor's poll while the API queue has work (both releases)."""
    target = "exabgp.reactor.loop:Reactor._wait_for_io"
    original = resolve(target)

    def _wait_for_io(self: Any, sleeptime: int) -> Any:
        if sleeptime and not self.asynchronous.ready():
            sleeptime = 0
        return original(self, sleeptime)

    _replace(target, "poll_while_queued", _wait_for_io)


class SelfResolver:
    """``Neighbor.remove_self`` for API routes, without its deep copy (5.0.15).

    Gives what the stock function gives, field for field (the contract tests compare the
    UPDATEs on the wire and ``show adj-rib out``), but shares what nothing mutates once a
    route is in the adj-rib-out: the parsed route when its next-hop is explicit, the
    attribute objects, and one resolved attribute set per parsed line and neighbor."""

    def __init__(self) -> None:
        from exabgp.bgp.message.update.attribute import Attribute, NextHop
        from exabgp.bgp.message.update.attribute.attributes import Attributes
        from exabgp.bgp.message.update.nlri.inet import INET
        from exabgp.rib.change import Change

        self._next_hop_code = Attribute.CODE.NEXT_HOP
        self._next_hop, self._attributes = NextHop, Attributes
        self._inet, self._change = INET, Change
        self._shared: dict[tuple[int, int], tuple[Any, Any, Any]] = {}

    def resolve(self, neighbor: Any, change: Any) -> Any:
        nlri = change.nlri
        if type(nlri) is not self._inet:
            return neighbor.remove_self(change)
        if not nlri.nexthop.SELF:
            return change
        neighbor_self = neighbor.ip_self(nlri.afi)
        resolved = copy.copy(nlri)
        resolved.nexthop = neighbor_self
        attributes = change.attributes
        if self._next_hop_code in attributes:
            attributes = self._resolved_attributes(attributes, neighbor_self)
        return self._change(resolved, attributes)

    def _resolved_attributes(self, source: Any, neighbor_self: Any) -> Any:
        key = (id(source), id(neighbor_self))
        hit = self._shared.get(key)
        if hit is not None and hit[0] is source and hit[1] is neighbor_self:
            return hit[2]
        resolved = self._attributes()
        dict.update(resolved, source)  # same codes in the same order, same objects
        resolved.cacheable = source.cacheable
        resolved[self._next_hop_code] = self._next_hop(str(neighbor_self), neighbor_self.pack())
        if len(self._shared) >= SHARED_LIMIT:
            self._shared.clear()
        self._shared[key] = (source, neighbor_self, resolved)  # holds source: ids stay unique
        return resolved


def _install_resolve_self_shared() -> None:
    """``inject_change`` as in 5.0.15, with :class:`SelfResolver` for ``remove_self``."""
    from exabgp.logger import log

    resolver = SelfResolver()

    def inject_change(self: Any, peers: Any, change: Any) -> bool:
        result = False
        for neighbor_name in self.neighbors:
            if neighbor_name in peers:
                neighbor = self.neighbors[neighbor_name]
                if change.nlri.family().afi_safi() in neighbor.families():
                    neighbor.rib.outgoing.add_to_rib(resolver.resolve(neighbor, change))
                    result = True
                else:
                    log.error(
                        lambda change=change, neighbor_name=neighbor_name: (
                            f"the route family ({change.nlri.short()}) is not configured on"
                            f" neighbor {neighbor_name}"
                        ),
                        "configuration",
                    )
        return result

    _replace(
        "exabgp.configuration.configuration:_Configuration.inject_change",
        "resolve_self_shared",
        inject_change,
    )


# sha256 of inspect.getsource() of each function, in the release named
_POLL_5_0_15 = Fix(
    "poll_while_queued",
    (
        (
            "exabgp.reactor.loop:Reactor._wait_for_io",
            "abe9694fbe6f86868b188a247915e0165ad2df344e953270c6a7fec50ea63e15",
        ),
        (
            "exabgp.reactor.loop:Reactor.run",
            "2be669a4812a5c6d00309f7c19de90f9731ce222d345e307dbdecd2a892857c8",
        ),
        (
            "exabgp.reactor.asynchronous:ASYNC.ready",
            "dfc08b1bf055f377881a1b07e8b469365e83b42f4f381b1d437ae7f1025e4a1d",
        ),
    ),
    _install_poll_while_queued,
)
_RESOLVE_5_0_15 = Fix(
    "resolve_self_shared",
    (
        (
            "exabgp.configuration.configuration:_Configuration.inject_change",
            "061dae4651ca234dd6ed1a92f8bd035d991327087145c6893975836b994ad260",
        ),
        (
            "exabgp.bgp.neighbor:Neighbor.remove_self",
            "cbd04747e6f3e8345b2591aea898be36c58c4a3fa26c2aecef1909d05ef517a2",
        ),
        (
            "exabgp.bgp.neighbor:Neighbor.ip_self",
            "745f4d8d79e07f7a4e8a6eb127a755a064f3b044d09f125588a9988ca4db8eb9",
        ),
        (
            "exabgp.bgp.message.update.attribute.attributes:Attributes.__init__",
            "2c93b8d9870aead252c1f47a91745909a8f2ce487d5f38d2618e5d13594da476",
        ),
        (
            "exabgp.bgp.message.update.nlri.inet:INET.__init__",
            "6f96f6875df7ae0861dbfdd6a05a6db3a44737f3a7bfc744fbac293dbc20cb49",
        ),
        (
            "exabgp.rib.change:Change.__init__",
            "8fdbe07e1bc359f3421f81178fa774d78f227eb401c66c8d4c72f3a96da593c1",
        ),
    ),
    _install_resolve_self_shared,
)

_POLL_4_2_21 = Fix(
    "poll_while_queued",
    (
        (
            "exabgp.reactor.loop:Reactor._wait_for_io",
            "abe9694fbe6f86868b188a247915e0165ad2df344e953270c6a7fec50ea63e15",
        ),
        (
            "exabgp.reactor.loop:Reactor.run",
            "4d1632ca3dfd16da284300889bf608fe1078da79c3bef9c0430631ff55245870",
        ),
        (
            "exabgp.reactor.asynchronous:ASYNC.ready",
            "dfc08b1bf055f377881a1b07e8b469365e83b42f4f381b1d437ae7f1025e4a1d",
        ),
    ),
    _install_poll_while_queued,
)

VERIFIED: dict[str, tuple[Fix, ...]] = {
    "5.0.15": (_POLL_5_0_15, _RESOLVE_5_0_15),
    "4.2.21": (_POLL_4_2_21,),
}


# --------------------------------------------------------------------------- deciding


def decide(
    version: str,
    stock_reason: str | None,
    sha256: Callable[[str], str | None] = source_sha256,
    verified: dict[str, tuple[Fix, ...]] | None = None,
) -> tuple[tuple[Fix, ...], Decision]:
    """The fixes to install for this ExaBGP (none: stock), and the decision to log.

    Pure apart from ``sha256`` (which reads ExaBGP's sources) and ``installed``."""
    releases = VERIFIED if verified is None else verified
    if stock_reason is not None:
        return (), Decision(version, (), stock_reason)
    fixes = releases.get(version)
    if not fixes:
        known = ", ".join(sorted(releases)) or "none"
        reason = f"ExaBGP {version} is not a release the launcher was verified against ({known})"
        return (), Decision(version, (), reason)
    pending = []
    for fix in fixes:
        if installed(fix):
            continue
        for target, expected in fix.guards:
            found = sha256(target)
            if found != expected:
                reason = (
                    f"{target} of ExaBGP {version} is not the verified source"
                    f" (sha256 {found or 'unreadable'}, verified {expected}): a patched build"
                )
                return (), Decision(version, (), reason)
        pending.append(fix)
    names = tuple(fix.name for fix in fixes)
    return tuple(pending), Decision(version, names, "verified release, sources match")


def stock_reason(
    args: list[str], environ: dict[str, str] | os._Environ[str]
) -> tuple[str | None, list[str]]:
    """Why to run stock on purpose (None: don't), and ExaBGP's arguments."""
    if args[:1] == [STOCK_FLAG]:
        return f"{STOCK_FLAG} given", args[1:]
    if environ.get(STOCK_ENV, "") not in ("", "0"):
        return f"{STOCK_ENV}={environ[STOCK_ENV]}", args
    return None, args


def accelerate(reason: str | None = None, log: TextIO | None = None) -> Decision:
    """Install the fixes this ExaBGP was verified for (idempotent); one line on ``log``."""
    from exabgp.version import version

    fixes, decision = decide(str(version), reason)
    for fix in fixes:
        fix.install()
    if log is not None:
        log.write(decision.line() + "\n")
        log.flush()
    return decision


# --------------------------------------------------------------------------- running


def _exabgp_entry() -> Callable[[], Any]:
    """ExaBGP's console-script function: 4.x ``run_exabgp``, 5.x ``application.main``."""
    from exabgp.version import version

    if str(version).startswith("4."):
        from exabgp.application import run_exabgp

        return run_exabgp  # type: ignore[no-any-return]
    from exabgp.application.main import main as entry

    return entry  # type: ignore[no-any-return]


def _exit_code(exc: SystemExit) -> int:
    """What the interpreter would exit with for this SystemExit."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    sys.stderr.write(f"{exc.code}\n")
    return 1


def main(argv: list[str] | None = None) -> int:
    """``exabgp ARGS`` with the verified fixes; ``--stock`` first (or the env) runs stock."""
    reason, args = stock_reason(list(sys.argv[1:] if argv is None else argv), os.environ)
    script = Path(sys.executable).with_name("exabgp")
    sys.argv = [str(script) if script.exists() else "exabgp", *args]
    accelerate(reason, sys.stderr)
    entry = _exabgp_entry()
    try:
        code = entry()
    except SystemExit as exc:
        return _exit_code(exc)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
