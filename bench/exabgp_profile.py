"""Where ExaBGP's time goes on a burst, and what its idle loop costs (the ``exabgp`` section).

``profile``: ExaBGP 5 under cProfile, stock and through the launcher (accelerated,
docs/adr/0003), both with the shipped settings (exabgp/exabgp.env), fed by a stand-in for
the announcer that writes the exact lines the announcer writes for a burst of N new /32s
(``render_batches``: groups of up to 200 prefixes per ``announce attributes ... nlri``
line) as soon as the session is up. The report gives the seconds until FRR (the peer)
holds all N, the share of ExaBGP's profiled time in named parts (``Neighbor.remove_self``'s
deep copy, the launcher's shared resolver, the per-route log, the reactor's idle ``poll``,
the RIB, building UPDATEs) and the functions with the most time of their own.
``idle``: ExaBGP's CPU with an established session and nothing to do, at ``reactor.speed``
1.0 (shipped) and 0.1 (the lever the launcher makes unnecessary).

``python -m bench.exabgp_profile feed N`` is the stand-in (ExaBGP runs it as its process).
"""

from __future__ import annotations

import pstats
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from announcer.core.plan import Announce
from announcer.exabgp.commands import render_batches
from announcer.model import Advert, Prefix
from bench.setups import cpu_seconds
from tests.netlab import (
    DEFAULT_EXABGP,
    HOST_V4,
    LAUNCHER,
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
    ("launcher_resolve_self_shared", "announcer/exabgp/launcher.py", "resolve"),
    ("per_route_log", "exabgp/logger/__init__.py", "logger"),
    ("idle_poll", "~", "<method 'poll' of 'select.poll' objects>"),
    ("rib_add", "exabgp/rib/outgoing.py", "add_to_rib"),
    ("update_messages", "exabgp/reactor/peer.py", "_main"),
]


def feed(count: int) -> None:
    """ExaBGP's process: on the first neighbor ``up``, write the burst; then read forever."""
    commands = [Announce(Prefix.make(4, FIRST + i, 32), Advert()) for i in range(count)]
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


def _wrapper(work: Path, profile: Path, accelerated: bool) -> str:
    """An executable that runs ExaBGP under cProfile, stock (its console script) or through
    the launcher (Python, not sh: dash drops the ``exabgp.*`` environment variables, whose
    names have dots)."""
    path = work / "exabgp-profiled"
    entry = str(LAUNCHER) if accelerated else DEFAULT_EXABGP
    argv = [sys.executable, "-m", "cProfile", "-o", str(profile), entry]
    body = f"import os, sys\nos.execv({sys.executable!r}, {argv!r} + sys.argv[1:])\n"
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


def _accepted(link: Any) -> int:
    info = link.frr.neighbor(HOST_V4).get("addressFamilyInfo", {}).get("ipv4Unicast", {})
    return int(info.get("acceptedPrefixCounter", 0))


def profile(work: Path, count: int, accelerated: bool) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    prof = work / "exabgp.prof"
    conf = _conf(count)
    with bgp_link(work) as link:
        exabgp = _wrapper(work, prof, accelerated)
        exa = ExaBGPProcess.start(link.host, work / "exabgp", conf, exabgp=exabgp, env=REPO_PATH)
        try:
            poll(lambda: link.frr.session_established(HOST_V4) or None, 60, "session up")
            started = time.monotonic()
            poll(lambda: _accepted(link) >= count or None, 300, f"{count} at FRR", interval=0.1)
            seconds = time.monotonic() - started
        finally:
            exa.stop()
        poll(lambda: prof.exists() or None, 30, "profile written")
    return {
        "routes": count,
        "seconds_to_peer_profiled": round(seconds, 2),
        **shares(pstats.Stats(str(prof))),
        "note": "cProfile roughly doubles ExaBGP's time; the shares are what matters",
    }


def shares(stats: pstats.Stats) -> dict[str, Any]:
    """Named parts (cumulative) and the 12 functions with the most own time, as shares."""
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = stats.stats.items()  # type: ignore[attr-defined]
    named: dict[str, float] = {}
    for label, suffix, name in PARTS:
        cumulative = sum(
            row[3] for (path, _, func), row in rows if func == name and path.endswith(suffix)
        )
        named[label] = round(cumulative / total, 3)
    own = sorted(rows, key=lambda item: item[1][2], reverse=True)[:12]
    return {
        "profiled_cpu_seconds": round(total, 2),
        "share_of_exabgp_wall_time": named,
        "top_own_time": [
            {"function": f"{_short(filename)}:{func}", "share": round(row[2] / total, 3)}
            for (filename, _, func), row in own
        ],
    }


def _short(filename: str) -> str:
    """exabgp/... or announcer/... of a path, else its last two parts."""
    for root in ("exabgp/", "announcer/"):
        if root in filename:
            return root + filename.rsplit(root, 1)[1]
    return "/".join(filename.split("/")[-2:])


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
    result["burst_profile"] = profile(work / "profile-stock", count, accelerated=False)
    result["burst_profile_accelerated"] = profile(work / "profile-accelerated", count, True)
    result["idle"] = idle(work, idle_seconds)
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "feed":
        feed(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m bench.exabgp_profile feed N")
