"""Scenario ``weighted`` (issue 16 item 5): per-instance shares with weighted ECMP.

The anycast IP gets more local instances on some hosts (the instances files' ``autostart:
false`` entries: inst2b on server4, inst3b and inst3c on server5), which the routed wiring
routes over a nexthop group per host (docs/routed.md). Then, both families at once:

1. weights on, on every server (``weights.enabled`` edited in the running announcers'
   config; they apply it without a restart): once every hop's kernel weights are what FRR
   makes of the instance counts (weights.py), 3,000 flows per family measure the shares
   per instance against 1/N;
2. weights off (the contrast): the same flows, per host even, per instance skewed;
3. weights on again, and one local instance fails its check (its responder killed) under a
   stream of 1,000 flows: its host's group drops it (the announcer's health verdicts), its
   host's weight and its leaf's sum go down, every hop re-weights; figures from the first
   lost packet, the packets lost, the surviving flows that moved, the shares after.

Everything it changed is put back (the instance respawned, weights off, the extra
instances stopped) before it returns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from announcer.lab import stats
from announcer.lab.family import combine
from announcer.lab.instances import parse_instances
from announcer.lab.namespaces import LabError, poll
from announcer.lab.scenarios import (
    INSTANCES,
    Fabric,
    Lab,
    Service,
    converge,
    find_services,
    hashing,
)
from announcer.lab.streams import Streams, background, movement, save_timeline, tail_lost
from announcer.lab.upgrade import route_monitors
from announcer.lab.weights import (
    Hops,
    expected_shares,
    hop_weights,
    hops_match,
    instances_per_host,
    max_deviation_from_even,
    per_host,
)

FLOWS = (1500, 1500)  # UDP, TCP flows per family and measurement: 3,000
AFTER_FLOWS = (600, 600)  # the shares after the failover
STREAM_FLOWS, STREAM_RATE, STREAM_SLOTS = 1000, 4.0, 20  # per family: 4,000 packets/s
STREAM_S = 5.0  # after the baseline: the failover and a settled last second
WAIT_S = 30.0
GOAL = 0.05  # per-instance shares within 5 points of even (the "done when")
SKEWED = 0.07  # the unweighted contrast is skewed at least this much (expected ~0.107)


def weights_text(text: str, enabled: bool) -> str:
    """The announcer config ``text`` with ``weights.enabled`` set (pure)."""
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, dict):
        raise LabError(f"the announcer config is not a mapping: {text[:80]!r}")
    weights = doc.setdefault("weights", {})
    weights["enabled"] = enabled
    return yaml.safe_dump(doc, sort_keys=False)


def announcer_servers(lab: Lab) -> list[str]:
    return sorted(n.name for n in lab.topo.by_role("server"))


def set_weights(lab: Lab, enabled: bool) -> None:
    """weights.enabled on every server, as an operator's edit of announcer.yaml."""
    for server in announcer_servers(lab):
        lab.edit_announcer_config(server, lambda text: weights_text(text, enabled))


def fib_weights(lab: Lab, node: str, ip: str, family_flag: str) -> dict[str, int]:
    """node's kernel next hops for ip: the node behind each (its link's other end, else the
    device) -> weight (1 for a single path)."""
    argv = ["ip", "-j", family_flag, "route", "show", ip]
    routes = json.loads(lab.exec(node, argv, check=False).stdout or "[]")
    if not routes:
        return {}
    behind = {mine.interface: other.node for mine, other in lab.topo.links_of(node)}
    hops = routes[0].get("nexthops") or [routes[0]]
    return {behind.get(str(h.get("dev")), str(h.get("dev"))): int(h.get("weight", 1)) for h in hops}


def fabric_weights(lab: Lab, svc: Service, routers: list[str]) -> Hops:
    return {r: fib_weights(lab, r, svc.ip, svc.family.ip_flag) for r in routers}


def wait_weights(lab: Lab, fabric: Fabric, want: Callable[[Service], Hops], what: str,
                 timeout: float = WAIT_S) -> dict[str, float]:  # fmt: skip
    """Poll until every family's routers have the weights ``want`` gives; when (monotonic)."""

    def one(svc: Service) -> float:
        wanted = want(svc)
        poll(lambda: hops_match(fabric_weights(lab, svc, list(wanted)), wanted), timeout,
             f"{what} ({svc.prefix}): weights {wanted}", interval=0.1)  # fmt: skip
        return time.monotonic()

    return fabric.each(one)


@dataclass(frozen=True)
class Setup:
    """The weighted service: every instance of the anycast IP, and the ones added here."""

    fabric: Fabric
    extras: dict[str, list[str]]  # server -> instances started by this scenario
    spines: list[str]

    def hops(self, svc: Service, weighted: bool = True, without: str | None = None) -> Hops:
        where = {i: s for i, s in svc.where.items() if i != without}
        return hop_weights(where, svc.leaf_of, self.spines, weighted)


def setup(lab: Lab, fabric: Fabric) -> Setup:
    ips = {svc.ip for svc in fabric.services.values()}
    services = find_services(lab.topo, ips, every=True)
    extras: dict[str, list[str]] = {}
    for node in lab.topo.nodes.values():
        spec = node.bind_source(INSTANCES)
        for inst in parse_instances(spec.read_text()).instances if spec else ():
            if not inst.autostart and set(inst.extra_ips) & {s.ip for s in services.values()}:
                extras.setdefault(node.name, []).append(inst.name)
    if not extras:
        raise LabError("no instance of the anycast IP with autostart: false to add")
    spines = sorted(n.name for n in lab.topo.by_role("spine"))
    return Setup(Fabric(services, fabric.started), extras, spines)


def checks_passed(lab: Lab, server: str, names: list[str]) -> bool:
    """server's announcer has seen each of names pass its check: the decision for its own
    address is not waiting for or failing a check (announced, or held back by flap damping
    after earlier runs), and no local instance is published unhealthy."""
    spec = lab.topo.nodes[server].bind_source(INSTANCES)
    own = {inst.ips[0] for inst in parse_instances(spec.read_text()).instances
           if inst.name in names} if spec else set()  # fmt: skip
    proc = lab.exec(server, lab.announcer_argv(server, "status", "--json"), check=False)
    doc = json.loads(proc.stdout) if proc.returncode == 0 else {}
    reasons = {str(r.get("prefix", "")).split("/")[0]: r.get("reason")
               for r in doc.get("decisions", [])}  # fmt: skip
    verdicts = ((doc.get("stats") or {}).get("shared_verdicts") or {}).get("unhealthy")
    waiting = ("check_pending", "check_failing", "no_kernel_route", None)
    return verdicts == [] and all(reasons.get(ip) not in waiting for ip in own)


def measure(lab: Lab, wfab: Fabric, name: str, flows: tuple[int, int]) -> dict[str, Any]:
    return wfab.each(lambda svc: hashing(lab, svc, udp=flows[0], tcp=flows[1], name=name))


# --------------------------------------------------------------------------- the failover


def route_devices(lab: Lab, node: str, ip: str, family_flag: str) -> list[str]:
    """The devices of node's route to ip (a host's shared route: its group's veths)."""
    routes = json.loads(lab.exec(node, ["ip", "-j", family_flag, "route", "show", ip],
                                 check=False).stdout or "[]")  # fmt: skip
    hops = (routes[0].get("nexthops") or [routes[0]]) if routes else []
    return [str(h.get("dev")) for h in hops]


def own_address(lab: Lab, server: str, instance: str, svc: Service) -> str:
    spec = lab.topo.nodes[server].bind_source(INSTANCES)
    ips = parse_instances(spec.read_text()).get(instance).ips if spec else ()
    found = [ip for ip in ips if (":" in ip) == (svc.family.version == 6)]
    if not found:
        raise LabError(f"{instance} on {server} has no {svc.family.name} address")
    return found[0]


def watch_failover(lab: Lab, s: Setup, svc: Service, victim: str, t0: float) -> dict[str, int]:
    """Poll (20 ms) until the victim's host routes the anycast IP without it, its leaf has
    the new weights and so do the spines; ms since t0 of the first look that saw each."""
    server = svc.where[victim]
    leaf, flag = svc.leaf_of[server], svc.family.ip_flag
    veth = route_devices(lab, server, own_address(lab, server, victim, svc), flag)[0]
    after = s.hops(svc, without=victim)
    seen: dict[str, int] = {}

    def mark(key: str, done: bool) -> None:
        if done and key not in seen:
            seen[key] = round((time.monotonic() - t0) * 1000)

    def step() -> bool:
        mark("host_group_ms", veth not in route_devices(lab, server, svc.ip, flag))
        mark("leaf_weights_ms", fib_weights(lab, leaf, svc.ip, flag) == after[leaf])
        spines = {sp: after[sp] for sp in s.spines}
        mark("spine_weights_ms", hops_match(fabric_weights(lab, svc, s.spines), spines))
        return len(seen) == 3

    poll(step, 15, f"{svc.prefix} re-weighted without {victim}", interval=0.02)
    return seen


def failover_figures(victim: str, packets: list[stats.Packet], t0: float, seen: dict[str, int],
                     after: dict[str, Any], rejoin_ms: int) -> dict[str, Any]:  # fmt: skip
    """One family's failover figures, times from the first packet lost after the kill."""
    lost = [t for t, _, i in packets if i is None and t >= t0]
    killed = min(lost) if lost else t0
    loss = stats.outage(packets, killed)
    shift = round((killed - t0) * 1000)
    times = {k: v - shift for k, v in seen.items()}
    survivors = {k: v for k, v in after["shares"].items() if k != victim}
    deviation = max_deviation_from_even(survivors)
    tail = tail_lost(packets)
    return {
        "pass": after["shares"].get(victim) == 0 and deviation <= GOAL and tail == 0
        and after["sticky_fraction"] == 1.0 and after["answered_fraction"] >= 0.99,
        "instance": victim, "times_from": "the first packet lost after the kill (ms)",
        **times, "convergence_ms": max(times.values()),
        "lost_packets": loss["lost_packets"], "sent_packets": loss["sent_packets"],
        "outage_ms": loss["last_loss_ms"], "tail_lost": tail,
        "moved_surviving_fraction": movement(packets, t0, victim),
        "shares_after": after["shares"], "max_deviation_after": round(deviation, 4),
        "flows_after": after["flows"], "rejoin_ms": rejoin_ms,
    }  # fmt: skip


def failover(lab: Lab, s: Setup, victim: str) -> dict[str, dict[str, Any]]:
    """Kill victim's responder under a stream per family; per family its figures."""
    server = s.fabric.primary.where[victim]
    # every FIB change meanwhile, on the routers and the host (<run>/<node>/route-monitor.log)
    monitors = route_monitors(lab, [*s.fabric.primary.routers, server])
    streams = Streams(lab, s.fabric, "weighted_failover", STREAM_S, STREAM_FLOWS, STREAM_RATE,
                      STREAM_SLOTS)  # fmt: skip
    streams.baseline()
    t0 = time.monotonic()
    try:
        with background(lambda: lab.instances(server, "crash", victim)):
            seen = s.fabric.each(lambda svc: watch_failover(lab, s, svc, victim, t0))
        packets = streams.result()
        after = measure(lab, s.fabric, "weighted_after", AFTER_FLOWS)
    finally:
        for monitor in monitors:
            monitor.terminate()
            monitor.wait(10)
        t1 = time.monotonic()
        lab.instances(server, "respawn", victim)
    back = wait_weights(lab, s.fabric, s.hops, f"{victim} back")
    return {f: failover_figures(victim, packets[f], t0, seen[f], after[f],
                                round((back[f] - t1) * 1000))
            | {"timeline": save_timeline(lab, "weighted_failover", packets[f], t0, svc.family)}
            for f, svc in s.fabric.services.items()}  # fmt: skip


# --------------------------------------------------------------------------- the scenario


def entry(s: Setup, svc: Service, on: dict[str, Any], off: dict[str, Any], seen: Hops,
          fail: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One family's report entry: the shares with weights on and off, the failover."""
    where = svc.where
    host_off = per_host(off["shares"], where)
    host_dev = max_deviation_from_even(host_off)
    measured = all(m["sticky_fraction"] == 1.0 and m["answered_fraction"] >= 0.99
                   for m in (on, off))  # fmt: skip
    expected = expected_shares(where, svc.leaf_of, s.hops(svc), s.spines[0])
    return {
        "pass": measured and on["max_deviation"] <= GOAL and off["max_deviation"] >= SKEWED
        and host_dev <= GOAL and fail["pass"],
        "anycast": svc.ip, "flows": on["flows"], "instances_per_host": instances_per_host(where),
        "shares": on["shares"], "max_deviation": on["max_deviation"],
        "chi_square_p": on["chi_square_p"], "sticky_fraction": on["sticky_fraction"],
        "expected_shares": {k: round(v, 4) for k, v in expected.items()},
        "shares_per_host": {k: round(v, 4) for k, v in per_host(on["shares"], where).items()},
        "fib_weights": seen,
        "unweighted_flows": off["flows"], "unweighted_shares": off["shares"],
        "unweighted_max_deviation": off["max_deviation"],
        "unweighted_chi_square_p": off["chi_square_p"],
        "unweighted_shares_per_host": {k: round(v, 4) for k, v in host_off.items()},
        "unweighted_max_deviation_per_host": round(host_dev, 4),
        "goal": f"per instance within {GOAL:.0%} of 1/N with weights; without, per host "
                f"within {GOAL:.0%} of even and per instance at least {SKEWED:.0%} off",
        "failover": {k: v for k, v in fail.items() if k != "timeline"},
        "timeline": fail["timeline"],
    }  # fmt: skip


def start_extras(lab: Lab, s: Setup) -> None:
    for server, names in sorted(s.extras.items()):
        lab.instances(server, "start", *names)
    for server, names in sorted(s.extras.items()):
        poll(lambda server=server, names=names: checks_passed(lab, server, names),  # type: ignore[misc]
             WAIT_S, f"{server}'s announcer: {', '.join(names)} passed their checks")  # fmt: skip


def restore(lab: Lab, s: Setup, fabric: Fabric) -> None:
    """Weights off, the extra instances stopped, the base service converged."""
    set_weights(lab, False)
    for server, names in sorted(s.extras.items()):
        lab.instances(server, "stop", *names)
    converge(lab, fabric, 60, "after weighted")


def weighted(lab: Lab, fabric: Fabric) -> dict[str, Any]:
    s = setup(lab, fabric)
    busiest = max(sorted(s.extras), key=lambda server: len(s.extras[server]))
    victim = s.extras[busiest][0]  # a local instance of the host with the most
    converge(lab, fabric, 30, "before weighted")
    try:
        start_extras(lab, s)
        set_weights(lab, True)
        wait_weights(lab, s.fabric, s.hops, "weights on")
        client_leaf = [o.node for _, o in lab.topo.links_of(s.fabric.primary.client)]
        seen = s.fabric.each(
            lambda svc: fabric_weights(lab, svc, [*client_leaf, *sorted(s.hops(svc))])
        )
        on = measure(lab, s.fabric, "weighted", FLOWS)
        set_weights(lab, False)
        wait_weights(lab, s.fabric, lambda svc: s.hops(svc, weighted=False), "weights off")
        off = measure(lab, s.fabric, "unweighted", FLOWS)
        set_weights(lab, True)
        wait_weights(lab, s.fabric, s.hops, "weights on again")
        fail = failover(lab, s, victim)
    finally:
        restore(lab, s, fabric)
    return combine({f: entry(s, svc, on[f], off[f], seen[f], fail[f])
                    for f, svc in s.fabric.services.items()})  # fmt: skip


REPORT_KEYS = ("flows", "instances_per_host", "shares", "max_deviation", "chi_square_p",
               "unweighted_shares", "unweighted_max_deviation", "failover")  # fmt: skip
FAILOVER_KEYS = ("convergence_ms", "lost_packets", "moved_surviving_fraction", "shares_after",
                 "max_deviation_after")  # fmt: skip


def schema_errors(result: dict[str, Any]) -> list[str]:
    """What one family's weighted result lacks (issue 16 item 5's keys)."""
    if "error" in result:
        return []
    errors = [f"no {key}" for key in REPORT_KEYS if key not in result]
    fail = result.get("failover")
    if isinstance(fail, dict):
        errors += [f"failover: no {key}" for key in FAILOVER_KEYS if key not in fail]
    shares, hosts = result.get("shares") or {}, result.get("instances_per_host") or {}
    if shares and hosts and len(shares) != sum(hosts.values()):
        errors.append(f"shares has {len(shares)} instances, instances_per_host {hosts}")
    if hosts and len(set(hosts.values())) < 2:
        errors.append(f"instances_per_host {hosts}: the counts must differ")
    return errors
