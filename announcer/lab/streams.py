"""Traffic around an event, per family: the building blocks of every event scenario.

An event scenario (graceful removal, server failure, withdraw before stop, health failover;
later a rolling upgrade) has one shape: start a UDP stream per family from the client
(``Streams``), let it run for the baseline window, note t0, start the event once in the
background (``background``: it concerns every family - a container removed, a link cut, a
drain of both prefixes, a responder killed - and its command can take a second of Python
start-up), watch what the fabric does per family meanwhile (``Fabric.each``: the watchers
of the families poll at once, from t0), then read each family's packet log and turn it into
figures (``loss_figures``, ``movement``, ``save_timeline``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from announcer.lab import stats
from announcer.lab.family import Family
from announcer.lab.namespaces import poll
from announcer.lab.scenarios import Fabric, Lab, Service, fib_nexthops

BASELINE_S = 2.0  # traffic measured before the event (a measurement window)
FLOWS, RATE = 200, 20.0  # per family: 4,000 packets/s each


class Stream:
    """A background UDP stream from the client; `result()` waits for it and parses it.
    ``slots`` spreads the flows' packets over each period (traffic.py); a ``stoppable``
    stream ends at ``stop()`` (a file in the client), at the latest after ``seconds``."""

    def __init__(self, lab: Lab, svc: Service, name: str, flows: int, rate: float,
                 seconds: float, slots: int = 1, stoppable: bool = False) -> None:  # fmt: skip
        self.lab, self.client = lab, svc.client
        self.path = lab.rundir / "client" / f"{name}{svc.family.suffix}.json"
        self.path.unlink(missing_ok=True)  # `test` again on a kept lab: not the last log
        # a path inside the client (under containerlab the run directory is made there)
        self.stop_file = str(self.path.with_suffix(".stop"))
        argv = [sys.executable, "-m", "announcer.lab.traffic", "stream", "--target", svc.ip,
                "--port", str(svc.port), "--udp", str(flows), "--rate", str(rate),
                "--duration", str(seconds), "--slots", str(slots),
                *(["--stop-file", self.stop_file] if stoppable else [])]  # fmt: skip
        lab.exec(self.client, ["rm", "-f", self.stop_file])
        self.proc = lab.spawn(svc.client, argv, self.path)

    def started(self) -> bool:
        return self.path.exists() and b"started" in self.path.read_bytes()

    def stop(self) -> None:
        where = str(Path(self.stop_file).parent)
        self.lab.exec(self.client, ["sh", "-c", f'mkdir -p "{where}" && touch "{self.stop_file}"'])

    def result(self) -> list[stats.Packet]:
        self.proc.wait(180)
        self.lab.exec(self.client, ["rm", "-f", self.stop_file])
        text = self.path.read_text()
        doc = json.loads(text[text.index("{") :])
        return [(float(t), int(f), i) for t, f, i in doc["packets"]]


class Streams:
    """One stream per family of fabric, started together: ``baseline()`` runs the window
    before the event, ``result()`` gives each family's packets."""

    def __init__(self, lab: Lab, fabric: Fabric, name: str, seconds: float,
                 flows: int = FLOWS, rate: float = RATE, slots: int = 1,
                 stoppable: bool = False) -> None:  # fmt: skip
        self.streams = {f: Stream(lab, svc, name, flows, rate, BASELINE_S + seconds, slots,
                                  stoppable)
                        for f, svc in fabric.services.items()}  # fmt: skip
        poll(lambda: all(s.started() for s in self.streams.values()), 20,
             f"traffic streams {name} started")  # fmt: skip

    def baseline(self) -> None:
        time.sleep(BASELINE_S)

    def stop(self) -> None:
        for stream in self.streams.values():
            stream.stop()

    def result(self) -> dict[str, list[stats.Packet]]:
        return {f: s.result() for f, s in self.streams.items()}


@contextmanager
def background(event: Callable[[], object]) -> Iterator[None]:
    """Run event in a thread while the block watches; its error is raised after the block
    (and after the block's own error, which wins)."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(event)
        yield
        future.result()


def gone_ms(lab: Lab, node: str, svc: Service, nexthop: str, t0: float, limit: float) -> int:
    """ms from t0 until node's FIB for svc's anycast IP no longer has nexthop."""
    poll(lambda: nexthop not in fib_nexthops(lab, node, svc.ip), limit,
         f"{node} drops next hop {nexthop} for {svc.prefix}", interval=0.02)  # fmt: skip
    return round((time.monotonic() - t0) * 1000)


def save_timeline(lab: Lab, name: str, packets: list[stats.Packet], t0: float,
                  family: Family, every: int = 5) -> str:  # fmt: skip
    """Keep a sample of flows (every 5th) relative to the event, for the plot."""
    sample = [[round(t - t0, 3), f, i] for t, f, i in packets if f % every == 0]
    path: Path = lab.rundir / f"timeline-{name}{family.suffix}.json"
    path.write_text(json.dumps({"event": name, "family": family.name, "packets": sample}))
    return str(path)


def movement(packets: list[stats.Packet], t0: float, removed: str) -> float:
    """Fraction of the surviving instances' flows that changed instance: the baseline
    window before t0 against the last second of the stream."""
    end = max(t for t, _, _ in packets)
    before = stats.window_mapping(packets, t0 - BASELINE_S, t0)
    after = stats.window_mapping(packets, end - 1.0, end)
    return round(stats.moved_fraction(before, after, {removed}), 4)


def tail_lost(packets: list[stats.Packet]) -> int:
    """Packets lost in the stream's last second (the fabric has not recovered)."""
    end = max(t for t, _, _ in packets)
    return sum(1 for t, _, i in packets if i is None and t > end - 1.0)


def loss_figures(packets: list[stats.Packet], trigger: float) -> dict[str, Any]:
    loss = stats.outage(packets, trigger)
    return {"lost_packets": loss["lost_packets"], "sent_packets": loss["sent_packets"],
            "last_loss_ms": loss["last_loss_ms"]}  # fmt: skip
