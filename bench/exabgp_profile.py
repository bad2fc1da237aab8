"""Where ExaBGP's time goes on a burst, and what its idle loop costs (the ``exabgp`` section).

``profile``: ExaBGP 5 under cProfile, fed by a stand-in for the announcer that writes the
exact lines the announcer writes for a burst of N new /32s (``render_batches``: groups of up
to 200 prefixes per ``announce attributes ... nlri`` line) as soon as the session is up. The
report gives the seconds until FRR (the peer) holds all N, and the share of ExaBGP's CPU
spent (wall clock) in its per-route work: ``Neighbor.remove_self`` (a ``deepcopy`` of every route),
the per-route "route added" INFO log, the reactor's idle ``poll`` (10 ms at
``reactor.speed`` 1.0, after every 50 routes it processes), and the rest.
``idle``: ExaBGP's CPU with an established session and nothing to do, at ``reactor.speed``
1.0 (shipped) and 0.1 (the lever that halves burst times).

``python -m bench.exabgp_profile feed N`` is the stand-in (ExaBGP runs it as its process).
"""

from __future__ import annotations

import pstats
import sys
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from announcer.core.plan import Announce
from announcer.exabgp.commands import render_batches
from announcer.model import Announcement
from bench.setups import cpu_seconds
from tests.netlab import (
    DEFAULT_EXABGP,
    HOST_V4,
    PEER_V4,
    ExaBGPProcess,
    bgp_link,
    exabgp_neighbor,
    poll,
)

FIRST = int(IPv4Address("10.200.0.0"))
REPO_PATH = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}

# (label, file suffix, function name): cumulative time of these, as a share of the total
PARTS = [
    ("remove_self_deepcopy", "exabgp/bgp/neighbor.py", "remove_self"),
    ("per_route_log", "exabgp/logger/__init__.py", "logger"),
    ("idle_poll", "~", "<method 'poll' of 'select.poll' objects>"),
    ("rib_add", "exabgp/rib/outgoing.py", "add_to_rib"),
    ("update_messages", "exabgp/reactor/peer.py", "_main"),
]


def feed(count: int) -> None:
    """ExaBGP's process: on the first neighbor ``up``, write the burst; then read forever."""
    commands = [Announce(Announcement(IPv4Network((FIRST + i, 32)))) for i in range(count)]
    for raw in sys.stdin:
        if '"up"' in raw:
            sys.stdout.write("".join(f"{line}\n" for line, _ in render_batches(commands)))
            sys.stdout.flush()
            break
    for _ in sys.stdin:
        pass


def _conf(count: int) -> str:
    """ExaBGP's config: the stand-in feeding ``count`` routes, one neighbor (the FRR peer)."""
    return (
        f"process feed {{ run {sys.executable} -m bench.exabgp_profile feed {count}; "
        "encoder json; }\n" + exabgp_neighbor(PEER_V4, HOST_V4, "ipv4", ["feed"])
    )


def _wrapper(work: Path, profile: Path) -> str:
    """An executable that runs ExaBGP under cProfile (Python, not sh: dash drops the
    ``exabgp.*`` environment variables, whose names have dots)."""
    path = work / "exabgp-profiled"
    argv = [sys.executable, "-m", "cProfile", "-o", str(profile), DEFAULT_EXABGP]
    body = f"import os, sys\nos.execv({sys.executable!r}, {argv!r} + sys.argv[1:])\n"
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


def _accepted(link: Any) -> int:
    info = link.frr.neighbor(HOST_V4).get("addressFamilyInfo", {}).get("ipv4Unicast", {})
    return int(info.get("acceptedPrefixCounter", 0))


def profile(work: Path, count: int) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    prof = work / "exabgp.prof"
    conf = _conf(count)
    with bgp_link(work) as link:
        exabgp = _wrapper(work, prof)
        exa = ExaBGPProcess.start(link.host, work / "exabgp", conf, exabgp=exabgp, env=REPO_PATH)
        try:
            poll(lambda: link.frr.session_established(HOST_V4) or None, 60, "session up")
            started = time.monotonic()
            poll(lambda: _accepted(link) >= count or None, 300, f"{count} at FRR", interval=0.1)
            seconds = time.monotonic() - started
        finally:
            exa.stop()
        poll(lambda: prof.exists() or None, 30, "profile written")
    stats = pstats.Stats(str(prof))
    total = stats.total_tt  # type: ignore[attr-defined]
    shares: dict[str, float] = {}
    for label, suffix, name in PARTS:
        cumulative = sum(
            row[3]
            for (filename, _, func), row in stats.stats.items()  # type: ignore[attr-defined]
            if func == name and filename.endswith(suffix)
        )
        shares[label] = round(cumulative / total, 3)
    return {
        "routes": count,
        "seconds_to_peer_profiled": round(seconds, 2),
        "profiled_cpu_seconds": round(total, 2),
        "share_of_exabgp_wall_time": shares,
        "note": "cProfile roughly doubles ExaBGP's time; the shares are what matters",
    }


def idle(work: Path, seconds: float) -> dict[str, Any]:
    """ExaBGP's CPU % with a session up and nothing to do, per reactor.speed."""
    out: dict[str, Any] = {}
    for speed in ("1.0", "0.1"):
        sub = work / f"idle-{speed}"
        conf = _conf(0)
        with bgp_link(sub) as link:
            env = {"exabgp.reactor.speed": speed, **REPO_PATH}
            exa = ExaBGPProcess.start(link.host, sub / "exabgp", conf, env=env)
            try:
                poll(lambda: link.frr.session_established(HOST_V4) or None, 60, "session up")
                c0, t0 = cpu_seconds(exa.pid), time.monotonic()
                time.sleep(seconds)  # measuring an idle period, not waiting for an event
                used = cpu_seconds(exa.pid) - c0
                out[f"reactor_speed_{speed}_cpu_percent"] = round(
                    100 * used / (time.monotonic() - t0), 2
                )
            finally:
                exa.stop()
    return out


def run(work: Path, count: int, idle_seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {}
    result["burst_profile"] = profile(work / "profile", count)
    result["idle"] = idle(work, idle_seconds)
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "feed":
        feed(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m bench.exabgp_profile feed N")
