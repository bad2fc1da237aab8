"""Scenarios where the announcer itself takes an instance out of the ECMP set while the client's
stream runs: ``withdraw_before_stop`` (an operator drain over the control socket, the leaf
loses the path, only then the container is removed; once in withdraw mode, once in graceful
mode with 65535:0) and ``health_failover`` (the responder killed inside a running container:
its drop-in's TCP check fails, the announcer withdraws; started again, it rejoins after rise).

Times are measured against what the leaf shows (``vtysh`` BGP paths and the kernel FIB, polled
every 20 ms) and what the client saw (the packet log): when its last packet answered by the
instance was sent, which packets were lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import yaml

from announcer.lab import stats
from announcer.lab.failures import BASELINE_S, FLOWS, RATE, save_timeline
from announcer.lab.namespaces import LabError, poll
from announcer.lab.scenarios import (
    Lab,
    Service,
    Stream,
    converged,
    fib_nexthops,
    hashing,
    server_ip,
)

ANNOUNCER_CONF = "/etc/anycast-announcer/announcer.yaml"
GRACEFUL_SHUTDOWN = "65535:0"
# FRR shows well-known communities by name in JSON and text
COMMUNITY_NAMES = {"graceful-shutdown": GRACEFUL_SHUTDOWN, "gshut": GRACEFUL_SHUTDOWN}
AFTER_STOP_S = 1.5  # stream kept running after the stop: a measurement window
WATCH_LIMIT_S = 15.0


# --------------------------------------------------------------------------- observation


def leaf_paths(lab: Lab, leaf: str, prefix: str) -> dict[str, list[str]]:
    """The leaf's BGP paths for prefix: peer address -> communities (as numbers)."""
    doc = lab.vtysh_json(leaf, f"show bgp ipv4 unicast {prefix}/32 json") or {}
    paths: dict[str, list[str]] = {}
    for path in doc.get("paths", []):
        peer = str((path.get("peer") or {}).get("peerId", ""))
        words = str((path.get("community") or {}).get("string", "")).split()
        paths[peer] = [COMMUNITY_NAMES.get(w, w) for w in words]
    return paths


def watch_leaf(lab: Lab, leaf: str, prefix: str, nexthop: str, t0: float,
               limit: float = WATCH_LIMIT_S) -> dict[str, Any]:  # fmt: skip
    """Poll the leaf until nexthop's BGP path and FIB next hop are both gone; ms since t0 of
    the first time each was seen gone, and of 65535:0 on that path (graceful drains)."""
    seen: dict[str, Any] = {}

    def ms(stamp: float) -> int:
        return round((stamp - t0) * 1000)

    def step() -> dict[str, Any] | None:
        # stamped when a look returns: an upper bound (vtysh takes ~0.1 s, `ip route` less)
        paths = leaf_paths(lab, leaf, prefix)
        stamp = time.monotonic()
        if GRACEFUL_SHUTDOWN in paths.get(nexthop, []) and "community_ms" not in seen:
            seen.update(community_ms=ms(stamp), communities_at_leaf=paths[nexthop])
        if nexthop not in paths:
            seen.setdefault("leaf_bgp_ms", ms(stamp))
        fib = fib_nexthops(lab, leaf, prefix)
        stamp = time.monotonic()
        if nexthop not in fib:
            seen.setdefault("leaf_fib_ms", ms(stamp))
        return seen if {"leaf_bgp_ms", "leaf_fib_ms"} <= seen.keys() else None

    poll(step, limit, f"{leaf} loses the path via {nexthop}", interval=0.02)
    return seen


def decision_reason(lab: Lab, server: str, prefix: str) -> str | None:
    """The reason of server's announcer for prefix (`announcer status --json`)."""
    doc = json.loads(lab.announcer(server, "status", "--json").stdout)
    for row in doc.get("decisions", []):
        if row.get("prefix") == f"{prefix}/32":
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


def _settled(lab: Lab, svc: Service, label: str) -> None:
    """Every instance in the ECMP set before an event is measured against it."""
    poll(lambda: converged(lab, svc), 30, f"all paths present before {label}", interval=0.2)


def _restore(lab: Lab, svc: Service, what: Callable[[], None], label: str) -> int:
    t0 = time.monotonic()
    what()
    poll(lambda: converged(lab, svc), 60, f"re-convergence after {label}", interval=0.2)
    return round((time.monotonic() - t0) * 1000)


# --------------------------------------------------------------------------- scenarios


def drain_then_stop(lab: Lab, svc: Service, instance: str, mode: str) -> dict[str, Any]:
    """Drain the anycast prefix on the instance's server, wait until its leaf has neither the
    BGP path nor the FIB next hop, then remove the container; the stream runs throughout."""
    server = svc.where[instance]
    leaf, nexthop = svc.leaf_of[server], server_ip(lab, server)
    window = graceful_seconds(lab, server) if mode == "graceful" else 0.0
    label = f"drain_{mode}"
    _settled(lab, svc, label)
    stream = Stream(lab, svc, label, FLOWS, RATE, BASELINE_S + window + 3.0 + AFTER_STOP_S)
    time.sleep(BASELINE_S)
    t0, wall0 = time.monotonic(), time.time()
    # in the background, so the leaf is watched while the command starts (~0.5-2 s of Python)
    drain = lab.spawn(server, lab.announcer_argv(server, "drain", f"{svc.ip}/32", "--mode", mode),
                      lab.rundir / server / f"{label}.out")  # fmt: skip
    try:
        seen = watch_leaf(lab, leaf, svc.ip, nexthop, t0, window + WATCH_LIMIT_S)
        stopped = time.monotonic()
        lab.instances(server, "stop", instance)
    finally:
        if drain.wait(30) != 0:
            raise LabError(f"announcer drain on {server} failed (rc {drain.returncode})")
        lab.announcer(server, "undrain", f"{svc.ip}/32", check=False)
    packets = stream.result()
    end = max(t for t, _, _ in packets)
    loss = stats.outage(packets, t0)
    received = log_time(lab, server, f"drain prefixes={svc.ip}/32", wall0)
    ref = t0 if received is None else t0 + (received - wall0)  # the announcer got the drain

    def since(stamp: float | None) -> int | None:
        return None if stamp is None else round((stamp - ref) * 1000)

    answered = [t for t, _, i in packets if i == instance]
    result = {
        "instance": instance, "server": server, "leaf": leaf, "mode": mode,
        "times_from": "the announcer receiving the drain (its log; else the command's start)",
        "command_to_received_ms": round((ref - t0) * 1000),
        "lost_packets": loss["lost_packets"], "sent_packets": loss["sent_packets"],
        "fabric_stopped_ms": since(max(answered) if answered else None),
        **{k: since(t0 + v / 1000) if k.endswith("_ms") else v for k, v in seen.items()},
        "stopped_at_ms": since(stopped),
        "stream_after_stop_ms": round((end - stopped) * 1000),
        "timeline": save_timeline(lab, f"withdraw_before_stop_{mode}", packets, ref),
    }  # fmt: skip
    if mode == "graceful":
        result["graceful_seconds"] = window
    result["restore_ms"] = _restore(lab, svc, lambda: lab.instances(server, "start", instance),
                                    f"restarting {instance}")  # fmt: skip
    return result


def withdraw_before_stop(lab: Lab, svc: Service, instance: str, graceful_instance: str
                         ) -> dict[str, Any]:  # fmt: skip
    """Scenario 4: no packet lost when a drain precedes the stop (withdraw mode, and graceful
    mode: 65535:0 at the leaf first, which FRR turns into local-pref 0)."""
    withdraw = drain_then_stop(lab, svc, instance, "withdraw")
    graceful = drain_then_stop(lab, svc, graceful_instance, "graceful")
    measured = all(r["stream_after_stop_ms"] >= 1000 for r in (withdraw, graceful))
    ok = (measured and withdraw["lost_packets"] == 0 and graceful["lost_packets"] == 0
          and "community_ms" in graceful)  # fmt: skip
    return {
        "pass": ok,
        "lost_packets": withdraw["lost_packets"], "sent_packets": withdraw["sent_packets"],
        "drain_to_fabric_stopped_ms": withdraw["fabric_stopped_ms"],
        "drain_to_leaf_fib_ms": withdraw["leaf_fib_ms"],
        "withdraw": withdraw, "graceful": graceful,
        **({} if measured else {"error": "the stream ended less than 1 s after a stop"}),
    }  # fmt: skip


def health_failover(lab: Lab, svc: Service, instance: str) -> dict[str, Any]:
    """Kill the responder inside instance (container, route and drop-in stay): its check
    fails, the announcer withdraws, the leaf loses the path; the others take its flows with
    the shares per-hop ECMP gives; the responder started again, it rejoins after rise."""
    server = svc.where[instance]
    leaf, nexthop = svc.leaf_of[server], server_ip(lab, server)
    _settled(lab, svc, "health_failover")
    stream = Stream(lab, svc, "health", FLOWS, RATE, BASELINE_S + 4)
    time.sleep(BASELINE_S)
    t0, wall0 = time.monotonic(), time.time()
    lab.instances(server, "crash", instance)
    try:
        seen = watch_leaf(lab, leaf, svc.ip, nexthop, t0)
    except LabError as exc:
        lab.instances(server, "respawn", instance)
        return {"pass": False, "error": str(exc), "instance": instance}
    reason = decision_reason(lab, server, svc.ip)
    packets = stream.result()
    end = max(t for t, _, _ in packets)
    killed = first_loss(packets, t0) or t0
    loss = stats.outage(packets, killed)
    verdict = log_time(lab, server, f"/{instance}.yaml healthy=False", wall0)

    def since_kill(ms_from_t0: int) -> int:
        return round((t0 + ms_from_t0 / 1000 - killed) * 1000)
    survivors = {n: svc.leaf_of[svc.where[n]] for n in svc.names if n != instance}
    expected = stats.ecmp_shares(survivors)
    after = hashing(lab, svc, udp=600, tcp=600, name="health_failover")
    deviation = stats.max_deviation_from(after["shares"], expected)
    t1 = time.monotonic()
    lab.instances(server, "respawn", instance)
    poll(lambda: nexthop in fib_nexthops(lab, leaf, svc.ip), 30,
         f"{leaf} has {instance}'s path again", interval=0.02)  # fmt: skip
    rejoin_ms = round((time.monotonic() - t1) * 1000)
    converged_ms = _restore(lab, svc, lambda: None, f"{instance} rejoining")
    tail_lost = sum(1 for t, _, i in packets if i is None and t > end - 1.0)
    left = after["shares"].get(instance) == 0
    return {
        "pass": left and deviation <= 0.07 and after["sticky_fraction"] == 1.0
        and after["answered_fraction"] >= 0.99 and tail_lost == 0,
        "instance": instance, "server": server, "leaf": leaf,
        "check": "tcp:7000 interval=0.2 timeout=0.2 rise=2 fall=2",
        "times_from": "the first packet lost after the kill (ms)",
        "crash_command_ms": round((killed - t0) * 1000),
        "health_verdict_ms": None if verdict is None
        else round((verdict - wall0) * 1000) - round((killed - t0) * 1000),
        "detection_ms": since_kill(seen["leaf_fib_ms"]),  # the leaf stopped forwarding to it
        "leaf_bgp_ms": since_kill(seen["leaf_bgp_ms"]),
        "decision_reason": reason,
        "lost_packets": loss["lost_packets"], "sent_packets": loss["sent_packets"],
        "outage_ms": loss["last_loss_ms"], "tail_lost": tail_lost,
        "shares_after": after["shares"], "expected_shares": {k: round(v, 4) for k, v in
                                                             expected.items()},
        "max_deviation_from_expected": round(deviation, 4), "flows_after": after["flows"],
        "sticky_fraction": after["sticky_fraction"],
        "rejoin_ms": rejoin_ms, "rejoin_converged_ms": rejoin_ms + converged_ms,
        "timeline": save_timeline(lab, "health_failover", packets, t0),
    }  # fmt: skip
