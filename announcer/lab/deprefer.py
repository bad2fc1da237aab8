"""Scenario ``deprefer`` (issue 16 item 5): ``anycast.unhealthy: deprefer`` keeps an unhealthy
service announced as a last resort instead of withdrawing it.

The service has its own anycast IP (10.200.0.2, fd00:200::2) on instances the scenario
starts (``autostart: false`` in the instances files, with ``drop_in: {unhealthy:
deprefer}``), one per host on server3 (alone behind leaf2), server5 and server6 (both
behind leaf3). Their check probes a health port the scenario closes (instances ``sicken``)
while the service port still answers: an application whose health endpoint says
unhealthy. With weights on (as on every server here; a depreferred prefix carries weight 1),
both families at once:

1. all healthy: flows reach every instance;
2. every instance of the service on one host unhealthy: that host's announcer re-announces
   the prefix with its AS prepended 3 more times; the leaf and the spines prefer the others
   (shorter AS paths), so no flow reaches it, while its leaf keeps the path as a last resort;
3. every instance everywhere unhealthy: all are depreferred alike and flows are still
   answered (withdraw, the default, would leave no route at all).

Everything is put back (healthy, stopped, weights off) before it returns.
"""

from __future__ import annotations

import time
from typing import Any

from announcer.lab.family import combine
from announcer.lab.gating import decision_reason
from announcer.lab.instances import parse_instances
from announcer.lab.namespaces import LabError, poll
from announcer.lab.scenarios import (
    INSTANCES,
    Fabric,
    Lab,
    Service,
    converge,
    fib_nexthops,
    find_services,
    hashing,
    server_ip,
)
from announcer.lab.weighted import fib_weights, set_weights, wait_weights
from announcer.lab.weights import hop_weights

FLOWS = (600, 600)  # UDP, TCP flows per family and measurement
WAIT_S = 30.0


def deprefer_instances(lab: Lab) -> dict[str, list[str]]:
    """server -> its instances declared ``unhealthy: deprefer`` (started by this scenario)."""
    found: dict[str, list[str]] = {}
    for node in lab.topo.nodes.values():
        spec = node.bind_source(INSTANCES)
        for inst in parse_instances(spec.read_text()).instances if spec else ():
            if ("unhealthy", "deprefer") in inst.drop_in and inst.extra_ips:
                found.setdefault(node.name, []).append(inst.name)
    if not found:
        raise LabError("no instance with drop_in unhealthy: deprefer in the instances files")
    return found


def services(lab: Lab, names: dict[str, list[str]]) -> Fabric:
    spec = lab.topo.nodes[sorted(names)[0]].bind_source(INSTANCES)
    first = parse_instances(spec.read_text()).get(sorted(names.values())[0][0]) if spec else None
    return Fabric(find_services(lab.topo, set(first.extra_ips) if first else None, every=True))


def alone_first(svc: Service) -> list[str]:
    """The servers, those alone behind their leaf first (their deprefer must win at the
    spines, not only at the leaf)."""
    servers = sorted(set(svc.where.values()))
    peers = {s: sum(1 for o in servers if svc.leaf_of[o] == svc.leaf_of[s]) for s in servers}
    return sorted(servers, key=lambda s: (peers[s], s))


def leaf_as_path(lab: Lab, svc: Service, server: str) -> str | None:
    """The AS path of the leaf's BGP path from server (None: the leaf has none)."""
    leaf = svc.leaf_of[server]
    peer = server_ip(lab, server, svc.family)
    doc = lab.vtysh_json(leaf, f"show bgp {svc.family.afi} {svc.prefix} json") or {}
    for path in doc.get("paths", []):
        if str((path.get("peer") or {}).get("peerId", "")) == peer:
            return str((path.get("aspath") or {}).get("string", ""))
    return None


def avoided(lab: Lab, svc: Service, server: str, healthy: set[str]) -> bool:
    """No router forwards svc's flows to server: its leaf has no next hop to it and, when no
    healthy server of the service shares that leaf, no spine has a next hop to the leaf."""
    leaf = svc.leaf_of[server]
    if server_ip(lab, server, svc.family) in fib_nexthops(lab, leaf, svc.ip):
        return False
    if any(svc.leaf_of[s] == leaf for s in healthy):
        return True
    spines = [n.name for n in lab.topo.by_role("spine")]
    return all(leaf not in fib_weights(lab, sp, svc.ip, svc.family.ip_flag) for sp in spines)


def avoided_at(lab: Lab, svc: Service, server: str, healthy: set[str]) -> float:
    """When (monotonic) a poll first found server avoided (``avoided``)."""
    poll(lambda: avoided(lab, svc, server, healthy), WAIT_S,
         f"{svc.prefix}: no router forwards to {server}", interval=0.05)  # fmt: skip
    return time.monotonic()


def settled(lab: Lab, dfab: Fabric, what: str) -> None:
    """Every path of the service in place, hop by hop, with the weights of one unit per
    host (a depreferred host announces weight 1 too): measuring while weights still change
    would split flows."""
    try:
        converge(lab, dfab, WAIT_S, what)
    except LabError as exc:
        damped = sorted({s for svc in dfab.services.values() for s in set(svc.where.values())
                         if decision_reason(lab, s, svc) == "damped"})  # fmt: skip
        if damped:  # each run withdraws the prefix twice (the start and the stop)
            raise LabError(
                f"{exc}; {dfab.primary.prefix} is flap-damped on {', '.join(damped)} "
                "(an earlier run of this scenario minutes ago): wait ~5 min or "
                "bring the lab up again"
            ) from None
        raise
    spines = sorted(n.name for n in lab.topo.by_role("spine"))
    wait_weights(lab, dfab, lambda svc: hop_weights(svc.where, svc.leaf_of, spines), what)


def observed(lab: Lab, dfab: Fabric, name: str) -> dict[str, dict[str, Any]]:
    return dfab.each(lambda svc: hashing(lab, svc, udp=FLOWS[0], tcp=FLOWS[1], name=name))


def summary(found: dict[str, Any]) -> dict[str, Any]:
    keys = ("flows", "answered_fraction", "sticky_fraction", "shares")
    return {k: found[k] for k in keys}


def sicken(lab: Lab, names: dict[str, list[str]], servers: list[str], healthy: bool) -> None:
    for server in servers:
        lab.instances(server, "heal" if healthy else "sicken", *names[server])


Reasons = dict[str, dict[str, str | None]]  # state -> server -> the announcer's reason


def entry(svc: Service, host: str, states: dict[str, dict[str, Any]], deprefer_ms: int,
          reasons: Reasons, kept: str | None) -> dict[str, Any]:  # fmt: skip
    """One family's report entry."""
    on_host = [i for i, s in svc.where.items() if s == host]
    one, every = states["one_host_unhealthy"], states["all_unhealthy"]
    reached = sum(one["shares"][i] for i in on_host)
    answered = all(s["answered_fraction"] >= 0.99 and s["sticky_fraction"] == 1.0
                   for s in states.values())  # fmt: skip
    return {
        "pass": answered and reached == 0 and kept is not None
        and all(v > 0 for v in states["healthy"]["shares"].values())
        and all(v > 0 for v in every["shares"].values()),
        "anycast": svc.ip, "unhealthy_host": host, "instances": dict(sorted(svc.where.items())),
        "flows": one["flows"],
        "share_of_unhealthy_host": round(reached, 4),
        "answered_fraction_all_unhealthy": every["answered_fraction"],
        "deprefer_ms": deprefer_ms, "times_from": "the command making the host unhealthy",
        "leaf_keeps_path_as_path": kept,
        "decision_reasons": reasons,
        **{name: summary(found) for name, found in states.items()},
    }  # fmt: skip


def deprefer(lab: Lab, fabric: Fabric) -> dict[str, Any]:
    names = deprefer_instances(lab)
    dfab = services(lab, names)
    servers = alone_first(dfab.primary)
    host, others = servers[0], servers[1:]
    reasons: dict[str, Reasons] = {f: {} for f in dfab.services}

    def reason(state: str, server: str) -> None:
        for f, svc in dfab.services.items():
            reasons[f].setdefault(state, {})[server] = decision_reason(lab, server, svc)

    try:
        set_weights(lab, True)
        for server in servers:
            lab.instances(server, "start", *names[server])
        settled(lab, dfab, "the deprefer service up")
        states = {f: {"healthy": r} for f, r in observed(lab, dfab, "deprefer_healthy").items()}
        t0 = time.monotonic()
        sicken(lab, names, [host], healthy=False)
        gone = dfab.each(lambda svc: avoided_at(lab, svc, host, set(others)))
        reason("one_host_unhealthy", host)
        kept = {f: leaf_as_path(lab, svc, host) for f, svc in dfab.services.items()}
        for f, r in observed(lab, dfab, "deprefer_one_host").items():
            states[f]["one_host_unhealthy"] = r
        sicken(lab, names, others, healthy=False)
        settled(lab, dfab, "every instance depreferred")
        for server in servers:
            reason("all_unhealthy", server)
        for f, r in observed(lab, dfab, "deprefer_all").items():
            states[f]["all_unhealthy"] = r
    finally:
        sicken(lab, names, servers, healthy=True)
        for server in servers:
            lab.instances(server, "stop", *names[server])
        set_weights(lab, False)
        converge(lab, fabric, 60, "after deprefer")
    return combine({f: entry(svc, host, states[f], round((gone[f] - t0) * 1000), reasons[f],
                             kept[f]) for f, svc in dfab.services.items()})  # fmt: skip


REPORT_KEYS = ("flows", "unhealthy_host", "share_of_unhealthy_host",
               "answered_fraction_all_unhealthy", "healthy", "one_host_unhealthy",
               "all_unhealthy")  # fmt: skip


def schema_errors(result: dict[str, Any]) -> list[str]:
    """What one family's deprefer result lacks."""
    if "error" in result:
        return []
    return [f"no {key}" for key in REPORT_KEYS if key not in result]
