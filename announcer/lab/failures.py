"""Scenarios with something taken away while traffic runs: graceful removal, server failure,
recovery (withdraw before stop and health failover are in gating.py). Each event happens once
and concerns every family (a container with an IPv4 and an IPv6 address removed, a link cut);
figures come per family from that family's stream (loss, how long after the event packets
were still lost, which flows moved) and from polling the FIB of the router next to the event
(when that family's path left it), the families watched at once."""

from __future__ import annotations

import time
from typing import Any

from announcer.lab import rehash, stats
from announcer.lab.family import combine
from announcer.lab.scenarios import (
    Fabric,
    Lab,
    Service,
    converge,
    cut,
    guarded,
    hashing,
    link_between,
    locate,
    uncut,
)
from announcer.lab.streams import (
    Streams,
    background,
    gone_ms,
    loss_figures,
    movement,
    save_timeline,
    tail_lost,
)

BFD_GROUP = "SERVERS"  # the leaves' peer group of servers; + the family's FRR suffix


def graceful_removal(lab: Lab, fabric: Fabric, instance: str) -> dict[str, Any]:
    server, leaf, hops = locate(lab, fabric, instance)
    streams = Streams(lab, fabric, "graceful", 5)
    streams.baseline()
    t0 = time.monotonic()

    def figures(svc: Service) -> dict[str, Any]:
        fib_ms = gone_ms(lab, leaf, svc, hops[svc.family.name], t0, 10)
        packets = streams.streams[svc.family.name].result()
        loss = stats.outage(packets, t0)
        by_hand = rehash.compare(lambda argv, stdin: _run_in(lab, svc.client, argv, stdin),
                                 svc.family)  # fmt: skip
        return {
            "pass": tail_lost(packets) == 0 and fib_ms < 5000,
            "instance": instance, "server": server,
            "leaf_fib_ms": fib_ms, "convergence_ms": loss["last_loss_ms"],
            "lost_packets": loss["lost_packets"], "sent_packets": loss["sent_packets"],
            "moved_surviving_fraction": movement(packets, t0, instance),
            "ideal_moved_surviving_fraction": 0.0,
            "by_hand_nexthop_groups": by_hand,
            "timeline": save_timeline(lab, "graceful_removal", packets, t0, svc.family),
        }  # fmt: skip

    with background(lambda: lab.instances(server, "stop", instance)):
        return fabric.measure(figures)


def _run_in(lab: Lab, node: str, argv: list[str], stdin: str | None) -> str:
    return lab.exec(node, argv, check=False, timeout=60, input_text=stdin).stdout


def _failure(lab: Lab, fabric: Fabric, instance: str, label: str, seconds: float
             ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Cut instance's server link (both ends, both families); per family: when its leaf's
    FIB lost the server, and what the stream lost."""
    server, leaf, hops = locate(lab, fabric, instance)
    server_if, leaf_if = link_between(lab.topo, server, leaf)
    streams = Streams(lab, fabric, label, seconds)
    streams.baseline()
    t0 = time.monotonic()

    def figures(svc: Service) -> dict[str, Any]:
        detection = gone_ms(lab, leaf, svc, hops[svc.family.name], t0, seconds + 5)
        packets = streams.streams[svc.family.name].result()
        return {
            "server": server, "instance": instance, "detection_ms": detection,
            **loss_figures(packets, t0), "tail_lost": tail_lost(packets),
            "moved_surviving_fraction": movement(packets, t0, instance),
            "timeline": save_timeline(lab, label, packets, t0, svc.family),
        }  # fmt: skip

    def both_ends() -> None:
        cut(lab, server, server_if)
        cut(lab, leaf, leaf_if)

    with background(both_ends):
        return fabric.each(lambda svc: guarded(figures, svc))


def _leaf_bfd(lab: Lab, fabric: Fabric, leaf: str, on: bool) -> None:
    """BFD on (the lab's profile) or off for the leaf's server sessions of every family."""
    asn = lab.vtysh_json(leaf, "show bgp ipv4 unicast summary json")["as"]
    lines = [f"neighbor {BFD_GROUP}{svc.family.frr_suffix} bfd profile servers" if on
             else f"no neighbor {BFD_GROUP}{svc.family.frr_suffix} bfd"
             for svc in fabric.services.values()]  # fmt: skip
    lab.vtysh(leaf, "configure terminal", f"router bgp {asn}", *lines)


def server_failure(lab: Lab, fabric: Fabric, bfd_instance: str, hold_instance: str
                   ) -> dict[str, Any]:  # fmt: skip
    """Cut a server's link silently: once with BFD (100 ms x 3), once with BFD off on its
    leaf so only the BGP hold timer (9 s) notices. Both families' sessions share the link."""
    bfd = _failure(lab, fabric, bfd_instance, "failure_bfd", 4)
    hold_leaf = fabric.primary.leaf_of[fabric.primary.where[hold_instance]]
    _leaf_bfd(lab, fabric, hold_leaf, on=False)
    try:
        hold = _failure(lab, fabric, hold_instance, "failure_hold", 12)
    finally:
        _leaf_bfd(lab, fabric, hold_leaf, on=True)

    def verdict(b: dict[str, Any], h: dict[str, Any]) -> bool:
        return ("error" not in b and "error" not in h and b["detection_ms"] < 1500
                and 2000 <= h["detection_ms"] <= 12000 and b["tail_lost"] == 0
                and h["tail_lost"] == 0)  # fmt: skip

    return combine({f: {
        "pass": verdict(bfd[f], hold[f]),
        "detection_ms": bfd[f].get("detection_ms"), "lost_packets": bfd[f].get("lost_packets"),
        "bfd": bfd[f], "hold_timer": hold[f],
        "bfd_timers": "100 ms x 3 (leaf <-> server, FRR bfdd on both)", "hold_time_s": 9,
    } for f in fabric.services})  # fmt: skip


def recovery(lab: Lab, fabric: Fabric, removed: str, cut_instances: list[str]
             ) -> dict[str, Any]:  # fmt: skip
    t0 = time.monotonic()
    for inst in cut_instances:
        server = fabric.primary.where[inst]
        uncut(lab, server)
        uncut(lab, fabric.primary.leaf_of[server])
    lab.instances(fabric.primary.where[removed], "start", removed)
    when = converge(lab, fabric, 90, "after recovery")

    def figures(svc: Service) -> dict[str, Any]:
        again = hashing(lab, svc, udp=600, tcp=600, name="recovery")
        return {
            "pass": again["pass"] and all(v > 0 for v in again["shares"].values()),
            "recovery_ms": round((when[svc.family.name] - t0) * 1000),
            "shares": again["shares"], "max_deviation": again["max_deviation"],
            "flows": again["flows"], "sticky_fraction": again["sticky_fraction"],
        }  # fmt: skip

    return fabric.measure(figures)
