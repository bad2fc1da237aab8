"""Scenarios with something taken away while traffic runs: graceful removal, server failure,
recovery (withdraw before stop and health failover are in gating.py). Figures come from the
client's packet log (loss, how long after the event packets were still lost, which flows
moved) and from polling the FIB of the router next to the event (when the path left it)."""

from __future__ import annotations

import json
import time
from typing import Any

from announcer.lab import rehash, stats
from announcer.lab.namespaces import LabError, poll
from announcer.lab.scenarios import (
    Lab,
    Service,
    Stream,
    converged,
    cut,
    fib_nexthops,
    hashing,
    link_between,
    server_ip,
    uncut,
)

BASELINE_S = 2.0  # traffic measured before the event (a measurement window)
FLOWS, RATE = 200, 20.0


def _gone_ms(lab: Lab, node: str, prefix: str, nexthop: str, t0: float, limit: float) -> int:
    poll(lambda: nexthop not in fib_nexthops(lab, node, prefix), limit,
         f"{node} drops next hop {nexthop}", interval=0.02)  # fmt: skip
    return round((time.monotonic() - t0) * 1000)


def save_timeline(lab: Lab, name: str, packets: list[stats.Packet], t0: float) -> str:
    """Keep a sample of flows (every 5th) relative to the event, for the plot."""
    sample = [[round(t - t0, 3), f, i] for t, f, i in packets if f % 5 == 0]
    path = lab.rundir / f"timeline-{name}.json"
    path.write_text(json.dumps({"event": name, "packets": sample}))
    return str(path)


def _movement(packets: list[stats.Packet], t0: float, end: float, removed: str) -> float:
    before = stats.window_mapping(packets, t0 - BASELINE_S, t0)
    after = stats.window_mapping(packets, end - 1.0, end)
    return stats.moved_fraction(before, after, {removed})


def graceful_removal(lab: Lab, svc: Service, instance: str) -> dict[str, Any]:
    server = svc.where[instance]
    leaf, nexthop = svc.leaf_of[server], server_ip(lab, server)
    stream = Stream(lab, svc, "graceful", FLOWS, RATE, BASELINE_S + 5)
    time.sleep(BASELINE_S)
    t0 = time.monotonic()
    lab.instances(server, "stop", instance)
    fib_ms = _gone_ms(lab, leaf, svc.ip, nexthop, t0, 10)
    packets = stream.result()
    end = max(t for t, _, _ in packets)
    loss = stats.outage(packets, t0)
    tail_lost = sum(1 for t, _, i in packets if i is None and t > end - 1.0)
    hand = rehash.compare(lambda argv, stdin: _run_in(lab, svc.client, argv, stdin))
    return {
        "pass": tail_lost == 0 and fib_ms < 5000,
        "instance": instance, "server": server,
        "leaf_fib_ms": fib_ms, "convergence_ms": loss["last_loss_ms"],
        "lost_packets": loss["lost_packets"], "sent_packets": loss["sent_packets"],
        "moved_surviving_fraction": round(_movement(packets, t0, end, instance), 4),
        "ideal_moved_surviving_fraction": 0.0,
        "by_hand_nexthop_groups": hand,
        "timeline": save_timeline(lab, "graceful_removal", packets, t0),
    }  # fmt: skip


def _run_in(lab: Lab, node: str, argv: list[str], stdin: str | None) -> str:
    return lab.exec(node, argv, check=False, timeout=60, input_text=stdin).stdout


def _failure(lab: Lab, svc: Service, instance: str, label: str, seconds: float
             ) -> dict[str, Any]:  # fmt: skip
    server = svc.where[instance]
    leaf, nexthop = svc.leaf_of[server], server_ip(lab, server)
    server_if, leaf_if = link_between(lab.topo, server, leaf)
    stream = Stream(lab, svc, label, FLOWS, RATE, BASELINE_S + seconds)
    time.sleep(BASELINE_S)
    t0 = time.monotonic()
    cut(lab, server, server_if)
    cut(lab, leaf, leaf_if)
    try:
        detection = _gone_ms(lab, leaf, svc.ip, nexthop, t0, seconds + 5)
    except LabError as exc:
        return {"pass": False, "error": str(exc), "server": server}
    packets = stream.result()
    end = max(t for t, _, _ in packets)
    loss = stats.outage(packets, t0)
    return {
        "server": server, "instance": instance, "detection_ms": detection,
        "lost_packets": loss["lost_packets"], "sent_packets": loss["sent_packets"],
        "last_loss_ms": loss["last_loss_ms"],
        "tail_lost": sum(1 for t, _, i in packets if i is None and t > end - 1.0),
        "moved_surviving_fraction": round(_movement(packets, t0, end, instance), 4),
        "timeline": save_timeline(lab, label, packets, t0),
    }  # fmt: skip


def server_failure(lab: Lab, svc: Service, bfd_instance: str, hold_instance: str
                   ) -> dict[str, Any]:  # fmt: skip
    """Cut a server's link silently: once with BFD (100 ms x 3), once with BFD off on its
    leaf so only the BGP hold timer (9 s) notices."""
    bfd = _failure(lab, svc, bfd_instance, "failure_bfd", 4)
    hold_leaf = svc.leaf_of[svc.where[hold_instance]]
    asn = lab.vtysh_json(hold_leaf, "show bgp ipv4 unicast summary json")["as"]
    lab.vtysh(hold_leaf, "configure terminal", f"router bgp {asn}", "no neighbor SERVERS bfd")
    try:
        hold = _failure(lab, svc, hold_instance, "failure_hold", 12)
    finally:
        lab.vtysh(hold_leaf, "configure terminal", f"router bgp {asn}",
                  "neighbor SERVERS bfd profile servers")  # fmt: skip
    ok = ("error" not in bfd and "error" not in hold and bfd["detection_ms"] < 1500
          and 2000 <= hold["detection_ms"] <= 12000 and bfd["tail_lost"] == 0
          and hold["tail_lost"] == 0)  # fmt: skip
    return {
        "pass": ok,
        "detection_ms": bfd.get("detection_ms"), "lost_packets": bfd.get("lost_packets"),
        "bfd": bfd, "hold_timer": hold,
        "bfd_timers": "100 ms x 3 (leaf <-> server, FRR bfdd on both)", "hold_time_s": 9,
    }  # fmt: skip


def recovery(lab: Lab, svc: Service, removed: str, cut_instances: list[str]) -> dict[str, Any]:
    t0 = time.monotonic()
    for inst in cut_instances:
        server = svc.where[inst]
        uncut(lab, server)
        uncut(lab, svc.leaf_of[server])
    lab.instances(svc.where[removed], "start", removed)
    try:
        poll(lambda: converged(lab, svc), 90, "re-convergence after recovery", interval=0.2)
    except LabError as exc:
        return {"pass": False, "error": str(exc)}
    recovered_ms = round((time.monotonic() - t0) * 1000)
    again = hashing(lab, svc, udp=600, tcp=600, name="recovery")
    return {
        "pass": again["pass"] and all(v > 0 for v in again["shares"].values()),
        "recovery_ms": recovered_ms, "shares": again["shares"],
        "max_deviation": again["max_deviation"], "flows": again["flows"],
        "sticky_fraction": again["sticky_fraction"],
    }  # fmt: skip
