"""ExaBGP alone, the floor: what the announcer could reach if its own cost were zero.

The same lab as every tool (host + FRR leaf, wire capture, leaf FIB monitor), and in the
host namespace ExaBGP 5.0.15 started as the product starts it (the launcher, accelerated,
the shipped settings) whose API process is bench.launcher_feed: a stand-in that writes the
announcer's own lines (``render_batches``: 200 prefixes a line, ``next-hop self``; one
route: ``announce route P/32 next-hop self`` / ``withdraw route P/32``) with acks on and at
most 64 lines unacknowledged (the announcer's send window). Nothing reads the kernel:
``t0`` is the stand-in's first write to ExaBGP's pipe, so every figure is ExaBGP + the
leaf, from the moment the announcer would have written its line.

bench.launcher measures the same stand-in against a passive BGP sink (no FRR leaf) to
compare stock and accelerated ExaBGP releases in isolation; here the leaf is FRR so the
floor compares with the other tools figure by figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from bench.feed_client import FeedClient
from bench.launcher_feed import FIRST_PREFIX
from bench.measure import LatencyTrials, burst, loadavg
from bench.nl import wait_until
from bench.setups import REPO, Lab, Tool, launcher_mode
from tests.netlab import HOST_V4, PEER_V4, ExaBGPProcess, exabgp_neighbor

NAME = "exabgp-alone"


@dataclass
class FloorTool(Tool):
    """ExaBGP (accelerated unless ``env`` says otherwise) fed by bench.launcher_feed."""

    env: dict[str, str] | None = None
    exabgp: ExaBGPProcess | None = None
    feed: FeedClient = field(init=False)

    def __post_init__(self) -> None:
        self.feed = FeedClient(self.workdir / "feed")

    def start(self) -> None:
        self.feed.prepare()
        conf = self.feed.process_block() + exabgp_neighbor(PEER_V4, HOST_V4, "ipv4", ["feed"])
        self.started_at = time.monotonic()
        env = {"PYTHONPATH": str(REPO), **(self.env or {})}
        self.exabgp = ExaBGPProcess.start(self.ns, self.workdir / "exabgp", conf, env=env)

    def command(self, line: str, timeout: float = 600) -> dict[str, Any]:
        """One command to the stand-in; its JSON answer (see bench.launcher_feed)."""
        return self.feed.command(line, timeout)

    def send(self, verb: str, prefixes: list[IPv4Address]) -> float:
        """A burst as the announcer writes it (contiguous prefixes); t0 = first write."""
        first = int(prefixes[0]) - FIRST_PREFIX
        if first < 0 or int(prefixes[-1]) != int(prefixes[0]) + len(prefixes) - 1:
            raise ValueError(f"not contiguous from {IPv4Address(FIRST_PREFIX)}: {prefixes[0]}")
        result = self.command(f"{verb} {first} {len(prefixes)}")
        if result["error"]:
            raise RuntimeError(f"ExaBGP refused {result['error']} of {result['lines']} lines")
        return float(result["t0"])

    def processes(self) -> dict[str, list[int]]:
        """ExaBGP only: the stand-in plays the announcer, whose cost the floor leaves out."""
        assert self.exabgp is not None
        return {"exabgp": [self.exabgp.pid]}

    def mode(self) -> str:
        assert self.exabgp is not None
        return launcher_mode(self.exabgp.workdir / "exabgp.stdout")

    def stop(self) -> None:
        if self.exabgp is not None:
            self.exabgp.stop()


def up(lab_: Lab, tool: FloorTool) -> None:
    """Session established and the stand-in told so (it waits for ExaBGP's ``up``)."""
    lab_.wait_session(60)
    tool.command("up", 60)


def latency(lab_: Lab, tool: FloorTool, prefixes: list[IPv4Address]) -> LatencyTrials:
    """One /32 at a time: line written -> UPDATE on the wire and in the leaf FIB."""
    out = LatencyTrials()
    for prefix in prefixes:
        dst = int(prefix)
        for verb, table, times in (("one", "announced", lab_.fib.added),
                                   ("wone", "withdrawn", lab_.fib.deleted)):  # fmt: skip
            t0 = float(tool.command(f"{verb} {dst}", 10)["t0"])
            fib_ok = wait_until(lambda d=dst, t=t0, m=times: m.get(d, 0) >= t, 5, 0.001)
            wire = lab_.wire.first_after(table, dst, t0)
            if not fib_ok or wire is None:
                out.lost += 1
            elif verb == "one":
                out.announce_fib.append((times[dst] - t0) * 1000)
                out.announce_wire.append((wire - t0) * 1000)
            else:
                out.withdraw_fib.append((times[dst] - t0) * 1000)
                out.withdraw_wire.append((wire - t0) * 1000)
            time.sleep(0.02)  # the same gap as the other tools' trials
    return out


def floor_burst(lab_: Lab, tool: FloorTool, prefixes: list[IPv4Address],
                timeout: float) -> dict[str, Any]:  # fmt: skip
    result = burst(lab_, tool, prefixes, timeout,
                   add=lambda p: tool.send("announce", p),
                   delete=lambda p: tool.send("withdraw", p))  # fmt: skip
    result.pop("kernel_add_seconds", None)  # here: until the stand-in's last ack
    return result


def measure_all(lab_: Lab, tool: FloorTool, warmup: list[IPv4Address],
                trials: list[IPv4Address], bursts: dict[int, list[IPv4Address]]
                ) -> dict[str, Any]:  # fmt: skip
    """The figures of run_tool for the floor: latency (as the other tools, from the line
    written), bursts (from the first line written)."""
    report: dict[str, Any] = {"exabgp_mode": tool.mode(), "loadavg_1m": loadavg()}
    latency(lab_, tool, warmup)
    result = latency(lab_, tool, trials)
    report["latency"] = result.report()
    report["raw"] = {
        "announce_wire_ms": [round(v, 4) for v in result.announce_wire],
        "announce_fib_ms": [round(v, 4) for v in result.announce_fib],
        "withdraw_wire_ms": [round(v, 4) for v in result.withdraw_wire],
        "withdraw_fib_ms": [round(v, 4) for v in result.withdraw_fib],
    }
    report["burst"] = {}
    for size, prefixes in bursts.items():
        timeout = 400 if size >= 100_000 else 120
        try:
            report["burst"][str(size)] = floor_burst(lab_, tool, prefixes, timeout)
        except Exception as exc:  # one figure failing must not lose the others
            report["burst"][str(size)] = {"failed": f"{type(exc).__name__}: {exc}"}
    return report
