"""Stock vs accelerated ExaBGP (announcer/exabgp/launcher.py, docs/adr/0003), ExaBGP alone.

    python -m bench.launcher [--quick] [--versions 5.0.15,4.2.21] [--out FILE]
    python -m bench.launcher feed DIR        (the stand-in API process ExaBGP runs)

For each ExaBGP release x {stock, accelerated} x {defaults, shipped} (``shipped``:
``exabgp.log.level=WARNING`` and ``exabgp.api.chunk=1000``, what the project ships), one
ExaBGP in a host namespace talks to bench.bgp_sink (a passive BGP peer that only
timestamps UPDATEs) in a peer namespace, fed by the stand-in below, which writes the lines
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
import queue
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from bench.bgp_sink import BgpSink
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

FIRST = int(IPv4Address("10.16.0.0"))  # burst prefixes: FIRST + i
LATENCY_FIRST = int(IPv4Address("10.30.0.0"))
IDLE_FIRST = int(IPv4Address("10.31.0.0"))
WINDOW = 64
IDLE_SECONDS = 30.0
SHIPPED = {"exabgp.log.level": "WARNING", "exabgp.api.chunk": "1000"}
RELEASES = {"5.0.15": REPO / ".venv/bin", "4.2.21": REPO / ".venv-exabgp4/bin"}
OUT = REPO / "artifacts/bench/launcher.json"


# --------------------------------------------------------------------------- the stand-in


def _lines(kind: str, first: int, count: int) -> list[str]:
    from announcer.core.plan import Announce, Withdraw
    from announcer.exabgp.commands import render_batches
    from announcer.model import Announcement

    nets = [IPv4Network((FIRST + first + i, 32)) for i in range(count)]
    commands = [Announce(Announcement(n)) if kind == "announce" else Withdraw(n) for n in nets]
    return [line for line, _ in render_batches(commands)]  # type: ignore[arg-type]


def _read_exabgp(inbox: queue.Queue[tuple[str, str, float]]) -> None:
    for raw in sys.stdin:
        line, now = raw.rstrip("\n"), time.monotonic()
        if line in ("done", "error"):
            inbox.put(("ack", line, now))
        elif line.startswith("{"):
            if '"state"' in line and '"up"' in line:
                inbox.put(("up", line, now))
        else:
            inbox.put(("text", line, now))
    os._exit(0)


def _write(line: str) -> float:
    now = time.monotonic()
    os.write(1, f"{line}\n".encode())
    return now


def _send(lines: list[str], inbox: queue.Queue[tuple[str, str, float]]) -> dict[str, Any]:
    """Write lines with at most WINDOW unacknowledged; wait for every ack."""
    acks: list[str] = []
    started, last_ack, outstanding = time.monotonic(), 0.0, 0
    for line in [*lines, None]:
        while outstanding and (line is None or outstanding >= WINDOW):
            kind, text, when = inbox.get()
            if kind == "ack":
                acks.append(text)
                outstanding, last_ack = outstanding - 1, when
        if line is not None:
            _write(line)
            outstanding += 1
    return {
        "t0": started,
        "t_last_ack": last_ack,
        "done": acks.count("done"),
        "error": acks.count("error"),
        "lines": len(lines),
    }


def _feed_show(inbox: queue.Queue[tuple[str, str, float]], path: Path) -> dict[str, Any]:
    started, shown = _write("show adj-rib out"), []
    while True:
        kind, text, when = inbox.get()
        if kind == "text":
            shown.append(text)
        elif kind == "ack":
            break
    path.write_text("".join(f"{line}\n" for line in shown))
    return {"t0": started, "t_done": when, "ack": text, "routes": len(shown)}


def feed(workdir: Path) -> None:
    """ExaBGP's API process: commands from DIR/ctl.fifo, one JSON result line each."""
    inbox: queue.Queue[tuple[str, str, float]] = queue.Queue()
    threading.Thread(target=_read_exabgp, args=(inbox,), daemon=True).start()
    fd, pending, shows = os.open(workdir / "ctl.fifo", os.O_RDWR), b"", 0
    while True:
        pending += os.read(fd, 4096)
        while b"\n" in pending:
            raw, pending = pending.split(b"\n", 1)
            words = raw.decode().split()
            result: dict[str, Any] = {"command": words}
            if words[0] == "up":
                while inbox.get()[0] != "up":
                    pass
            elif words[0] in ("announce", "withdraw"):
                result |= _send(_lines(words[0], int(words[1]), int(words[2])), inbox)
            elif words[0] == "one":
                net = IPv4Network((int(words[1]), 32))
                result |= _send([f"announce route {net} next-hop self"], inbox)
            elif words[0] == "show":
                shows += 1
                result |= _feed_show(inbox, workdir / f"show-{shows}.txt")
            with (workdir / "results.jsonl").open("a") as out:
                out.write(json.dumps(result) + "\n")


# --------------------------------------------------------------------------- the driver


class Rig:
    """ExaBGP (stock or accelerated) + the stand-in in host, the sink in peer."""

    def __init__(self, host: str, peer: str, work: Path, exabgp: ExaBGPProcess, sink: BgpSink):
        self.host, self.peer, self.work, self.exabgp, self.sink = host, peer, work, exabgp, sink
        self.feed_dir, self.done = work / "feed", 0

    def command(self, line: str, timeout: float = 600) -> dict[str, Any]:
        with (self.feed_dir / "ctl.fifo").open("w") as fifo:
            fifo.write(line + "\n")
        results = self.feed_dir / "results.jsonl"

        def answered() -> dict[str, Any] | None:
            if not results.exists():
                return None
            lines = results.read_text().splitlines()
            return json.loads(lines[self.done]) if len(lines) > self.done else None

        found = poll(answered, timeout, f"the stand-in's answer to {line!r}", interval=0.02)
        self.done += 1
        return found

    def wire(self, table: str, dsts: list[int], since: float, timeout: float = 600) -> float:
        """When the last of dsts reached the peer in table (announced/withdrawn)."""

        def all_seen() -> float | None:
            count, last = self.sink.seen(table, dsts, since)
            return last if count == len(dsts) else None

        return poll(all_seen, timeout, f"{len(dsts)} {table} at the peer", interval=0.02)


def _conf(feed_dir: Path) -> str:
    run = f"{sys.executable} -m bench.launcher feed {feed_dir}"
    return f"process feed {{\n    run {run};\n    encoder json;\n}}\n" + exabgp_neighbor(
        PEER_V4, HOST_V4, "ipv4", ["feed"]
    )


def _executable(work: Path, release: str, accelerated: bool) -> str:
    """The console script (stock) or a launcher wrapper with the release's interpreter."""
    bindir = RELEASES[release]
    if not accelerated:
        return str(bindir / "exabgp")
    from tests.exabgp.accelerated import launcher_executable

    return launcher_executable(work, str(bindir / "python"))


@contextmanager
def rig(work: Path, release: str, accelerated: bool, env: dict[str, str]) -> Iterator[Rig]:
    work.mkdir(parents=True, exist_ok=True)
    feed_dir = work / "feed"
    feed_dir.mkdir(exist_ok=True)
    os.mkfifo(feed_dir / "ctl.fifo")
    with netns("xlhost") as host, netns("xlpeer") as peer:
        veth_pair(host, HOST_IF, peer, PEER_IF)
        sh(host, "ip", "addr", "add", f"{HOST_V4}/24", "dev", HOST_IF)
        sh(peer, "ip", "addr", "add", f"{PEER_V4}/24", "dev", PEER_IF)
        sink = BgpSink(peer, PEER_V4, PEER_ASN).start()
        full_env = {"PYTHONPATH": str(REPO), **env}
        exe = _executable(work, release, accelerated)
        exa = ExaBGPProcess.start(host, work / "exabgp", _conf(feed_dir), full_env, exe)
        try:
            rig = Rig(host, peer, work, exa, sink)
            poll(sink.established.is_set, 60, "BGP session at the sink")
            rig.command("up")
            yield rig
        finally:
            exa.stop()
            sink.stop()


def _burst(rig: Rig, kind: str, count: int) -> dict[str, Any]:
    dsts = [FIRST + i for i in range(count)]
    cpu0 = cpu_seconds(rig.exabgp.pid)
    rig.sink.take_digest()
    result = rig.command(f"{kind} 0 {count}")
    table = "announced" if kind == "announce" else "withdrawn"
    last = rig.wire(table, dsts, result["t0"])
    digest, updates = rig.sink.take_digest()
    return {
        "updates": updates,
        "updates_sha256": digest,
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


def compare_shows(root: Path, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Is the 10k ``show adj-rib out`` the same text for chunk 1/1000, stock/accelerated?"""
    found: dict[str, Any] = {}
    for release in {c["release"] for c in cases}:
        texts = {
            f"{'accelerated' if c['accelerated'] else 'stock'}/{c['settings']}": (
                root / c["name"] / "feed" / "show-1.txt"
            ).read_text()
            for c in cases
            if c["release"] == release
        }
        reference = texts.get("stock/defaults")
        found[release] = {
            name: {
                "identical_to_stock_chunk_1": text == reference,
                "same_set": sorted(text.splitlines()) == sorted((reference or "").splitlines()),
                "lines": len(text.splitlines()),
            }
            for name, text in texts.items()
        }
    return found


def compare_wire(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Per release and burst: did every case send the same UPDATE bytes, in the same order?"""
    found: dict[str, Any] = {}
    for release in sorted({c["release"] for c in cases}):
        mine = [c for c in cases if c["release"] == release]
        bursts = [k for k in mine[0] if k.startswith(("announce_", "withdraw_"))]
        found[release] = {
            burst: len({c[burst]["updates_sha256"] for c in mine}) == 1 for burst in bursts
        }
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.launcher",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="10k bursts, 5 s idle")
    parser.add_argument("--versions", default="5.0.15,4.2.21")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    count, idle_seconds = (10_000, 5.0) if args.quick else (100_000, IDLE_SECONDS)
    root = args.out.parent / "launcher"
    cases = []
    for release in args.versions.split(","):
        for settings in ("defaults", "shipped"):
            for accelerated in (False, True):
                name = f"{release}-{'accelerated' if accelerated else 'stock'}-{settings}"
                print(f"bench.launcher: {name}", file=sys.stderr, flush=True)
                case = run_case(root / name, release, accelerated, settings, count, idle_seconds)
                cases.append({"name": name, **case})
                print(json.dumps(case), file=sys.stderr, flush=True)
    report = {
        "routes": count,
        "window_lines": WINDOW,
        "cases": cases,
        "show_10k_compared": compare_shows(root, cases),
        "wire_identical_across_cases": compare_wire(cases),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"bench.launcher: report in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "feed":
        feed(Path(sys.argv[2]))
    else:
        sys.exit(main())
