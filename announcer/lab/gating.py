"""Scenarios where the announcer itself takes an instance out of the ECMP set while the client's
streams run: ``withdraw_before_stop`` (an operator drain of the anycast prefixes of every
family over the control socket, the leaf loses the paths, only then the container is
removed; once in withdraw mode, once in graceful mode with 65535:0) and ``health_failover``
(the responder killed inside a running container: its drop-in's TCP check fails, the
announcer withdraws every prefix of the instance; started again, it rejoins after rise).

Times are measured against what the leaf shows (``vtysh`` BGP paths and the kernel FIB of
each family, polled every 20 ms, the families at once) and what the client saw (each
family's packet log): when its last packet answered by the instance was sent, which packets
were lost.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from announcer.lab import stats
from announcer.lab.family import combine
from announcer.lab.namespaces import LabError, poll
from announcer.lab.scenarios import (
    Fabric,
    Lab,
    Service,
    converge,
    fib_nexthops,
    hashing,
    locate,
)
from announcer.lab.streams import Streams, background, save_timeline, tail_lost

ANNOUNCER_CONF = "/etc/anycast-announcer/announcer.yaml"
GRACEFUL_SHUTDOWN = "65535:0"
# FRR shows well-known communities by name in JSON and text
COMMUNITY_NAMES = {"graceful-shutdown": GRACEFUL_SHUTDOWN, "gshut": GRACEFUL_SHUTDOWN}
AFTER_STOP_S = 1.5  # stream kept running after the stop: a measurement window
WATCH_LIMIT_S = 15.0


# --------------------------------------------------------------------------- observation


def leaf_paths(lab: Lab, leaf: str, svc: Service) -> dict[str, list[str]]:
    """The leaf's BGP paths for svc's prefix: peer address -> communities (as numbers)."""
    doc = lab.vtysh_json(leaf, f"show bgp {svc.family.afi} {svc.prefix} json") or {}
    paths: dict[str, list[str]] = {}
    for path in doc.get("paths", []):
        peer = str((path.get("peer") or {}).get("peerId", ""))
        words = str((path.get("community") or {}).get("string", "")).split()
        paths[peer] = [COMMUNITY_NAMES.get(w, w) for w in words]
    return paths


def watch_leaf(lab: Lab, leaf: str, svc: Service, nexthop: str, t0: float,
               limit: float = WATCH_LIMIT_S) -> dict[str, Any]:  # fmt: skip
    """Poll the leaf until nexthop's BGP path and FIB next hop are both gone; ms since t0 of
    the first time each was seen gone, and of 65535:0 on that path (graceful drains)."""
    seen: dict[str, Any] = {}

    def ms(stamp: float) -> int:
        return round((stamp - t0) * 1000)

    def step() -> dict[str, Any] | None:
        # stamped when a look returns: an upper bound (vtysh takes ~0.1 s, `ip route` less)
        paths = leaf_paths(lab, leaf, svc)
        stamp = time.monotonic()
        if GRACEFUL_SHUTDOWN in paths.get(nexthop, []) and "community_ms" not in seen:
            seen.update(community_ms=ms(stamp), communities_at_leaf=paths[nexthop])
        if nexthop not in paths:
            seen.setdefault("leaf_bgp_ms", ms(stamp))
        fib = fib_nexthops(lab, leaf, svc.ip)
        stamp = time.monotonic()
        if nexthop not in fib:
            seen.setdefault("leaf_fib_ms", ms(stamp))
        return seen if {"leaf_bgp_ms", "leaf_fib_ms"} <= seen.keys() else None

    poll(step, limit, f"{leaf} loses the path via {nexthop}", interval=0.02)
    return seen


def decision_reason(lab: Lab, server: str, svc: Service) -> str | None:
    """The reason of server's announcer for svc's prefix (`announcer status --json`)."""
    doc = json.loads(lab.announcer(server, "status", "--json").stdout)
    for row in doc.get("decisions", []):
        if row.get("prefix") == svc.prefix:
            return str(row.get("reason"))
    return None


def graceful_seconds(lab: Lab, server: str) -> float:
    source = lab.topo.nodes[server].bind_source(ANNOUNCER_CONF)
    doc = yaml.safe_load(source.read_text()) if source is not None else {}
    return float(((doc or {}).get("drain") or {}).get("graceful_seconds", 30))


def log_time(lab: Lab, server: str, needle: str, wall0: float) -> float | None:
    """Wall-clock time of the first line of server's announcer log at or after wall0 that
    contains needle (namespace backend; None where the log is not on this machine)."""
    log = lab.rundir / server / "exabgp.stdout"
    if not log.exists():
        return None
    for line in log.read_text(errors="replace").splitlines():
        if needle in line:
            try:
                when = datetime.fromisoformat(line.split()[0]).timestamp()
            except (ValueError, IndexError):
                continue
            if when >= wall0 - 0.002:  # the log has milliseconds
                return when
    return None


def first_loss(packets: list[stats.Packet], t0: float) -> float | None:
    """Send time of the first lost packet at or after t0: with 50 flows at 20/s on the
    instance, within a few ms of the moment it stopped answering."""
    lost = [t for t, _, i in packets if i is None and t >= t0]
    return min(lost) if lost else None


def _restore(lab: Lab, fabric: Fabric, label: str, t0: float) -> dict[str, int]:
    """ms from t0 until each family has converged again."""
    when = converge(lab, fabric, 60, f"after {label}")
    return {f: round((t - t0) * 1000) for f, t in when.items()}


# --------------------------------------------------------------------------- scenarios


def drain_then_stop(lab: Lab, fabric: Fabric, instance: str, mode: str
                    ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Drain the anycast prefixes (every family, one command) on the instance's server, wait
    until its leaf has neither the BGP path nor the FIB next hop of any family, then remove
    the container; the streams run throughout. Figures per family."""
    server, leaf, hops = locate(lab, fabric, instance)
    window = graceful_seconds(lab, server) if mode == "graceful" else 0.0
    label = f"drain_{mode}"
    converge(lab, fabric, 30, f"before {label}")
    streams = Streams(lab, fabric, label, window + 3.0 + AFTER_STOP_S)
    streams.baseline()
    prefixes = [svc.prefix for svc in fabric.services.values()]
    t0, wall0 = time.monotonic(), time.time()
    # in the background, so the leaf is watched while the command starts (~0.5-2 s of Python)
    drain = lab.spawn(server, lab.announcer_argv(server, "drain", *prefixes, "--mode", mode),
                      lab.rundir / server / f"{label}.out")  # fmt: skip
    try:
        seen = fabric.each(lambda svc: watch_leaf(lab, leaf, svc, hops[svc.family.name], t0,
                                                  window + WATCH_LIMIT_S))  # fmt: skip
        stopped = time.monotonic()
        lab.instances(server, "stop", instance)
    finally:
        if drain.wait(30) != 0:
            raise LabError(f"announcer drain on {server} failed (rc {drain.returncode})")
        lab.announcer(server, "undrain", *prefixes, check=False)
    received = log_time(lab, server, " drain prefixes=", wall0)
    ref = t0 if received is None else t0 + (received - wall0)  # the announcer got the drain

    def since(stamp: float | None) -> int | None:
        return None if stamp is None else round((stamp - ref) * 1000)

    def figures(svc: Service) -> dict[str, Any]:
        packets = streams.streams[svc.family.name].result()
        loss = stats.outage(packets, t0)
        answered = [t for t, _, i in packets if i == instance]
        return {
            "instance": instance, "server": server, "leaf": leaf, "mode": mode,
            "times_from": "the announcer receiving the drain (its log; else the command's start)",
            "command_to_received_ms": round((ref - t0) * 1000),
            "lost_packets": loss["lost_packets"], "sent_packets": loss["sent_packets"],
            "fabric_stopped_ms": since(max(answered) if answered else None),
            **{k: since(t0 + v / 1000) if k.endswith("_ms") else v
               for k, v in seen[svc.family.name].items()},
            "stopped_at_ms": since(stopped),
            "stream_after_stop_ms": round((max(t for t, _, _ in packets) - stopped) * 1000),
            "timeline": save_timeline(lab, f"withdraw_before_stop_{mode}", packets, ref,
                                      svc.family),
            **({"graceful_seconds": window} if mode == "graceful" else {}),
        }  # fmt: skip

    results = fabric.each(figures)
    t1 = time.monotonic()
    lab.instances(server, "start", instance)
    for f, ms in _restore(lab, fabric, f"restarting {instance}", t1).items():
        results[f]["restore_ms"] = ms
    return results


def withdraw_before_stop(lab: Lab, fabric: Fabric, instance: str, graceful_instance: str
                         ) -> dict[str, Any]:  # fmt: skip
    """Scenario 4: no packet lost when a drain precedes the stop (withdraw mode, and graceful
    mode: 65535:0 at the leaf first, which FRR turns into local-pref 0)."""
    withdraw = drain_then_stop(lab, fabric, instance, "withdraw")
    graceful = drain_then_stop(lab, fabric, graceful_instance, "graceful")

    def entry(w: dict[str, Any], g: dict[str, Any]) -> dict[str, Any]:
        measured = all(r["stream_after_stop_ms"] >= 1000 for r in (w, g))
        ok = (measured and w["lost_packets"] == 0 and g["lost_packets"] == 0
              and "community_ms" in g)  # fmt: skip
        return {
            "pass": ok,
            "lost_packets": w["lost_packets"], "sent_packets": w["sent_packets"],
            "drain_to_fabric_stopped_ms": w["fabric_stopped_ms"],
            "drain_to_leaf_fib_ms": w["leaf_fib_ms"],
            "withdraw": w, "graceful": g,
            **({} if measured else {"error": "the stream ended less than 1 s after a stop"}),
        }  # fmt: skip

    return combine({f: entry(withdraw[f], graceful[f]) for f in fabric.services})


@dataclass(frozen=True)
class Observed:
    """What one family showed: its packets, the leaf, the announcer, the flows after."""

    packets: list[stats.Packet]
    seen: dict[str, Any]  # watch_leaf
    reason: str | None
    after: dict[str, Any]  # hashing
    rejoin_ms: int
    converged_ms: int


@dataclass(frozen=True)
class Crash:
    """What health_failover did, the same for every family."""

    instance: str
    server: str
    leaf: str
    t0: float  # monotonic, when the kill command started
    wall0: float  # the same moment on the wall clock (the announcer's log)
    verdict: float | None  # wall clock of the announcer's health_changed ... healthy=False
    expected: dict[str, float]  # shares per-hop ECMP gives the survivors

    def figures(self, obs: Observed) -> dict[str, Any]:
        """One family's health_failover figures; times from its first lost packet."""
        killed = first_loss(obs.packets, self.t0) or self.t0
        loss = stats.outage(obs.packets, killed)
        deviation = stats.max_deviation_from(obs.after["shares"], self.expected)
        lost_tail = tail_lost(obs.packets)
        verdict = self.verdict

        def since_kill(ms_from_t0: int) -> int:
            return round((self.t0 + ms_from_t0 / 1000 - killed) * 1000)

        return {
            "pass": obs.after["shares"].get(self.instance) == 0 and deviation <= 0.07
            and obs.after["sticky_fraction"] == 1.0 and obs.after["answered_fraction"] >= 0.99
            and lost_tail == 0,
            "instance": self.instance, "server": self.server, "leaf": self.leaf,
            "check": "tcp:7000 interval=0.2 timeout=0.2 rise=2 fall=2",
            "times_from": "the first packet lost after the kill (ms)",
            "crash_command_ms": round((killed - self.t0) * 1000),
            "health_verdict_ms": None if verdict is None
            else round((verdict - self.wall0) * 1000) - round((killed - self.t0) * 1000),
            "detection_ms": since_kill(obs.seen["leaf_fib_ms"]),  # the leaf stopped forwarding
            "leaf_bgp_ms": since_kill(obs.seen["leaf_bgp_ms"]),
            "decision_reason": obs.reason,
            "lost_packets": loss["lost_packets"], "sent_packets": loss["sent_packets"],
            "outage_ms": loss["last_loss_ms"], "tail_lost": lost_tail,
            "shares_after": obs.after["shares"],
            "expected_shares": {k: round(v, 4) for k, v in self.expected.items()},
            "max_deviation_from_expected": round(deviation, 4), "flows_after": obs.after["flows"],
            "sticky_fraction": obs.after["sticky_fraction"],
            "rejoin_ms": obs.rejoin_ms, "rejoin_converged_ms": obs.converged_ms,
        }  # fmt: skip


def health_failover(lab: Lab, fabric: Fabric, instance: str) -> dict[str, Any]:
    """Kill the responder inside instance (container, routes and drop-in stay): its check
    fails, the announcer withdraws (every family), the leaf loses the paths; the others take
    its flows with the shares per-hop ECMP gives; the responder started again, it rejoins
    after rise."""
    server, leaf, hops = locate(lab, fabric, instance)
    converge(lab, fabric, 30, "before health_failover")
    streams = Streams(lab, fabric, "health", 4)
    streams.baseline()
    t0, wall0 = time.monotonic(), time.time()
    try:
        with background(lambda: lab.instances(server, "crash", instance)):
            seen = fabric.each(lambda svc: watch_leaf(lab, leaf, svc, hops[svc.family.name],
                                                      t0))  # fmt: skip
    except LabError:
        lab.instances(server, "respawn", instance)
        raise
    reasons = {f: decision_reason(lab, server, svc) for f, svc in fabric.services.items()}
    survivors = {n: fabric.primary.leaf_of[fabric.primary.where[n]]
                 for n in fabric.names if n != instance}  # fmt: skip
    crash = Crash(instance, server, leaf, t0, wall0,
                  log_time(lab, server, f"/{instance}.yaml healthy=False", wall0),
                  stats.ecmp_shares(survivors))  # fmt: skip
    packets = streams.result()
    after = fabric.each(lambda svc: hashing(lab, svc, udp=600, tcp=600, name="health_failover"))
    t1 = time.monotonic()
    lab.instances(server, "respawn", instance)

    def rejoin(svc: Service) -> int:
        poll(lambda: hops[svc.family.name] in fib_nexthops(lab, leaf, svc.ip), 30,
             f"{leaf} has {instance}'s path for {svc.prefix} again", interval=0.02)  # fmt: skip
        return round((time.monotonic() - t1) * 1000)

    rejoined = fabric.each(rejoin)
    converged = _restore(lab, fabric, f"{instance} rejoining", t1)
    return combine({f: crash.figures(Observed(packets[f], seen[f], reasons[f], after[f],
                                              rejoined[f], converged[f]))
                    | {"timeline": save_timeline(lab, "health_failover", packets[f], t0,
                                                 svc.family)}
                    for f, svc in fabric.services.items()})  # fmt: skip
