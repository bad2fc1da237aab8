"""Stock vs accelerated ExaBGP (announcer/exabgp/launcher.py, docs/adr/0003), ExaBGP alone.

    python -m bench.launcher [--quick] [--repeat N] [--versions 5.0.15,4.2.21] [--out FILE]

For each ExaBGP release x {stock, accelerated} x {defaults, shipped} (``shipped``:
``exabgp.log.level=WARNING`` and ``exabgp.api.chunk=1000``, what the project ships), one
ExaBGP in a host namespace talks to bench.bgp_sink (a passive BGP peer that only
timestamps UPDATEs) in a peer namespace, fed by bench.launcher_feed, which writes the lines
the announcer writes (``render_batches``: 200 prefixes a line, ``next-hop self``) with acks
on and at most ``WINDOW`` lines unacknowledged (the announcer's send window). Measured:

* burst: wall time from the first line written to the last of N /32s read by the peer,
  announce then withdraw (and the time of the last ack), ExaBGP CPU seconds;
* ExaBGP peak RSS (VmHWM) and RSS holding N routes;
* ``show adj-rib out`` (text) at 10k and at N routes: seconds to ``done``; the 10k lines
  are saved so chunk 1 and chunk 1000, stock and accelerated, can be compared exactly;
* idle CPU % of ExaBGP holding 100 routes over ``IDLE_SECONDS``;
* one-route latency: ``announce route P next-hop self`` written -> UPDATE read by the peer.

Stock is the ``exabgp`` console script itself; accelerated is
``python -m announcer.exabgp.launcher`` with the same interpreter. Writes JSON to
artifacts/bench/launcher.json (and the saved show output beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from bench.bgp_sink import BgpSink
from bench.feed_client import FeedClient
from bench.launcher_feed import FIRST_PREFIX as FIRST
from bench.launcher_feed import WINDOW
from bench.setups import cpu_seconds, pid_rss_hwm_mb
from tests.netlab import (
    HOST_IF,
    HOST_V4,
    PEER_ASN,
    PEER_IF,
    PEER_V4,
    REPO,
    ExaBGPProcess,
    exabgp_neighbor,
    netns,
    poll,
    sh,
    veth_pair,
)

LATENCY_FIRST = int(IPv4Address("10.30.0.0"))
IDLE_FIRST = int(IPv4Address("10.31.0.0"))
IDLE_SECONDS = 30.0
SHIPPED = {"exabgp.log.level": "WARNING", "exabgp.api.chunk": "1000"}
RELEASES = {"5.0.15": REPO / ".venv/bin", "4.2.21": REPO / ".venv-exabgp4/bin"}
OUT = REPO / "artifacts/bench/launcher.json"


# --------------------------------------------------------------------------- the driver


class Rig:
    """ExaBGP (stock or accelerated) + the stand-in in host, the sink in peer."""

    def __init__(
        self, host: str, peer: str, work: Path, exabgp: ExaBGPProcess, sink: BgpSink,
        feed: FeedClient,
    ) -> None:  # fmt: skip
        self.host, self.peer, self.work, self.exabgp, self.sink = host, peer, work, exabgp, sink
        self.feed = feed

    def command(self, line: str, timeout: float = 600) -> dict[str, Any]:
        return self.feed.command(line, timeout, interval=0.02)

    def wire(self, table: str, dsts: list[int], since: float, timeout: float = 600) -> float:
        """When the last of dsts reached the peer in table (announced/withdrawn)."""

        def all_seen() -> float | None:
            count, last = self.sink.seen(table, dsts, since)
            return last if count == len(dsts) else None

        return poll(all_seen, timeout, f"{len(dsts)} {table} at the peer", interval=0.02)


def _executable(work: Path, release: str, accelerated: bool) -> str:
    """The console script (stock) or a launcher wrapper with the release's interpreter."""
    bindir = RELEASES[release]
    if not accelerated:
        return str(bindir / "exabgp")
    from tests.exabgp.accelerated import launcher_executable

    return launcher_executable(work, str(bindir / "python"))


@contextmanager
def rig(work: Path, release: str, accelerated: bool, env: dict[str, str]) -> Iterator[Rig]:
    shutil.rmtree(work, ignore_errors=True)  # a fresh directory per run
    work.mkdir(parents=True)
    feed = FeedClient(work / "feed")
    feed.prepare()
    conf = feed.process_block() + exabgp_neighbor(PEER_V4, HOST_V4, "ipv4", ["feed"])
    with netns("xlhost") as host, netns("xlpeer") as peer:
        veth_pair(host, HOST_IF, peer, PEER_IF)
        sh(host, "ip", "addr", "add", f"{HOST_V4}/24", "dev", HOST_IF)
        sh(peer, "ip", "addr", "add", f"{PEER_V4}/24", "dev", PEER_IF)
        sink = BgpSink(peer, PEER_V4, PEER_ASN).start()
        full_env = {"PYTHONPATH": str(REPO), **env}
        exe = _executable(work, release, accelerated)
        exa = ExaBGPProcess.start(host, work / "exabgp", conf, full_env, exe)
        try:
            rig = Rig(host, peer, work, exa, sink, feed)
            poll(sink.established.is_set, 60, "BGP session at the sink")
            rig.command("up")
            poll(sink.end_of_rib.is_set, 30, "ExaBGP's End-of-RIB at the sink")
            yield rig
        finally:
            exa.stop()
            sink.stop()


def _burst(rig: Rig, kind: str, count: int) -> dict[str, Any]:
    dsts = [FIRST + i for i in range(count)]
    cpu0 = cpu_seconds(rig.exabgp.pid)
    rig.sink.take_record()
    result = rig.command(f"{kind} 0 {count}")
    table = "announced" if kind == "announce" else "withdrawn"
    last = rig.wire(table, dsts, result["t0"])
    return {
        "wire": rig.sink.take_record().summary(),
        "seconds_to_wire": round(last - result["t0"], 3),
        "seconds_to_last_ack": round(result["t_last_ack"] - result["t0"], 3),
        "exabgp_cpu_seconds": round(cpu_seconds(rig.exabgp.pid) - cpu0, 2),
        "acks_done": result["done"],
        "acks_error": result["error"],
        "lines": result["lines"],
    }


def _show(rig: Rig) -> dict[str, Any]:
    result = rig.command("show", timeout=900)
    return {"seconds": round(result["t_done"] - result["t0"], 3), "routes": result["routes"]}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _latency(rig: Rig, samples: int) -> dict[str, Any]:
    delays = []
    for i in range(samples):
        result = rig.command(f"one {LATENCY_FIRST + i}")
        written = result["t0"]
        delays.append(rig.wire("announced", [LATENCY_FIRST + i], written, 10) - written)
    delays.sort()
    return {
        "samples": samples,
        "median_ms": round(statistics.median(delays) * 1000, 3),
        "p90_ms": round(delays[int(0.9 * (samples - 1))] * 1000, 3),
    }


def _idle(rig: Rig, seconds: float) -> dict[str, Any]:
    result = rig.command(f"announce {IDLE_FIRST - FIRST} 100")
    rig.wire("announced", [IDLE_FIRST + i for i in range(100)], result["t0"])
    c0, t0 = cpu_seconds(rig.exabgp.pid), time.monotonic()
    time.sleep(seconds)  # measuring an idle period, not waiting for an event
    used = cpu_seconds(rig.exabgp.pid) - c0
    return {
        "routes": 100,
        "seconds": seconds,
        "cpu_percent": round(100 * used / (time.monotonic() - t0), 2),
    }


def run_case(
    work: Path, release: str, accelerated: bool, settings: str, count: int, idle_seconds: float
) -> dict[str, Any]:
    env = dict(SHIPPED) if settings == "shipped" else {}
    out: dict[str, Any] = {
        "release": release,
        "accelerated": accelerated,
        "settings": settings,
        "loadavg_before": os.getloadavg()[0],
    }
    with rig(work, release, accelerated, env) as r:
        out["announce_10k"] = _burst(r, "announce", 10_000)
        out["show_10k"] = _show(r)
        out["withdraw_10k"] = _burst(r, "withdraw", 10_000)
        out[f"announce_{count}"] = _burst(r, "announce", count)
        out[f"rss_mb_holding_{count}"] = _rss_mb(r.exabgp.pid)
        out[f"show_{count}"] = _show(r)
        out[f"withdraw_{count}"] = _burst(r, "withdraw", count)
        out["idle"] = _idle(r, idle_seconds)
        out["latency_one_route"] = _latency(r, 200)
        out["peak_rss_mb"] = round(pid_rss_hwm_mb(r.exabgp.pid), 1)
        out["sink_sessions"] = r.sink.sessions
        out["exabgp_log"] = str(r.exabgp.workdir / "exabgp.log")
    out["loadavg_after"] = os.getloadavg()[0]
    return out


def compare_shows(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Is the 10k ``show adj-rib out`` the same text for chunk 1/1000, stock/accelerated?"""
    found: dict[str, Any] = {}
    for release in sorted({c["release"] for c in cases}):
        mine = [c for c in cases if c["release"] == release]
        texts = {c["dir"]: (Path(c["dir"]) / "feed" / "show-1.txt").read_text() for c in mine}
        reference = texts[mine[0]["dir"]]  # the first stock run at defaults: chunk 1
        found[release] = {
            "identical_to_stock_chunk_1": all(text == reference for text in texts.values()),
            "lines": sorted({len(text.splitlines()) for text in texts.values()}),
            "runs": len(texts),
        }
    return found


def compare_wire(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Per release and burst: did every case send the same UPDATE bytes in the same order;
    whatever the UPDATE boundaries, the same routes and attributes in the same order; as a
    multiset?"""
    found: dict[str, Any] = {}
    for release in sorted({c["release"] for c in cases}):
        mine = [c for c in cases if c["release"] == release]
        bursts = [k for k in mine[0] if k.startswith(("announce_", "withdraw_"))]
        found[release] = {
            burst: {
                key: len({c[burst]["wire"][f"sha256_{key}"] for c in mine}) == 1
                for key in ("in_order", "routes_in_order", "routes")
            }
            for burst in bursts
        }
    return found


def summarize(cases: list[dict[str, Any]], count: int) -> dict[str, dict[str, float]]:
    """Per case the best of its runs (a shared machine only ever adds time)."""
    metrics = {
        "announce_s": lambda c: c[f"announce_{count}"]["seconds_to_wire"],
        "announce_cpu_s": lambda c: c[f"announce_{count}"]["exabgp_cpu_seconds"],
        "withdraw_s": lambda c: c[f"withdraw_{count}"]["seconds_to_wire"],
        "withdraw_cpu_s": lambda c: c[f"withdraw_{count}"]["exabgp_cpu_seconds"],
        "announce_10k_s": lambda c: c["announce_10k"]["seconds_to_wire"],
        "rss_mb_holding": lambda c: c[f"rss_mb_holding_{count}"],
        "peak_rss_mb": lambda c: c["peak_rss_mb"],
        "show_10k_s": lambda c: c["show_10k"]["seconds"],
        "show_s": lambda c: c[f"show_{count}"]["seconds"],
        "idle_cpu_percent": lambda c: c["idle"]["cpu_percent"],
        "latency_median_ms": lambda c: c["latency_one_route"]["median_ms"],
    }
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(c["name"] for c in cases):
        runs = [c for c in cases if c["name"] == name]
        out[name] = {key: min(get(c) for c in runs) for key, get in metrics.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.launcher",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="10k bursts, 5 s idle")
    parser.add_argument("--versions", default="5.0.15,4.2.21")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case (best kept)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like ^C: ExaBGP stopped, namespaces removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    count, idle_seconds = (10_000, 5.0) if args.quick else (100_000, IDLE_SECONDS)
    root = args.out.parent / "launcher"
    cases = []
    for release in args.versions.split(","):
        for settings in ("defaults", "shipped"):
            for accelerated in (False, True):
                name = f"{release}-{'accelerated' if accelerated else 'stock'}-{settings}"
                for run in range(1, args.repeat + 1):
                    print(f"bench.launcher: {name} run {run}", file=sys.stderr, flush=True)
                    work = root / f"{name}-{run}"
                    case = run_case(work, release, accelerated, settings, count, idle_seconds)
                    cases.append({"name": name, "run": run, "dir": str(work), **case})
                    print(json.dumps(case), file=sys.stderr, flush=True)
    report = {
        "routes": count,
        "window_lines": WINDOW,
        "summary": summarize(cases, count),
        "show_10k_compared": compare_shows(cases),
        "wire_identical_across_cases": compare_wire(cases),
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"bench.launcher: report in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
