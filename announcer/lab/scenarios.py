"""The lab's scenarios: each returns a dict with a ``pass`` verdict and its figures.

They drive a running lab through the ``Lab`` protocol (both backends implement it) and
synchronise by polling observable state - sessions, FIB next hops, the client's output - with
deadlines. The few fixed waits are measurement windows (traffic running before a failure),
never synchronisation.

The anycast service exists once per address family (a ``Service`` each, together a
``Fabric``); observation takes the family from the service or from the address, and
``Fabric.measure`` runs a per-family measurement for every family at once and combines the
figures (family.py). This module holds the service model, observation and the first two
scenarios (convergence, hashing); suite.py lists every scenario in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from announcer.lab import stats
from announcer.lab.family import FAMILIES, IPV4, Family, combine, family_of
from announcer.lab.instances import InstanceFile, parse_instances
from announcer.lab.namespaces import LabError, poll
from announcer.lab.topology import Topology

INSTANCES = "/etc/lab/instances.yaml"
CUT_TABLE = "aalabcut"
T = TypeVar("T")


class Lab(Protocol):
    topo: Topology
    rundir: Path

    def exec(self, node: str, argv: list[str], *, check: bool = True, timeout: float = 30,
             input_text: str | None = None) -> subprocess.CompletedProcess[str]: ...  # fmt: skip
    def spawn(self, node: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]: ...
    def vtysh_json(self, node: str, command: str) -> Any: ...
    def vtysh(self, node: str, *commands: str) -> str: ...
    def instances(self, server: str, action: str, *names: str) -> None: ...
    def announcer(self, server: str, *args: str,
                  check: bool = True) -> subprocess.CompletedProcess[str]: ...  # fmt: skip
    def announcer_argv(self, server: str, *args: str) -> list[str]: ...
    def start_bgp(self, server: str) -> None: ...
    def stop_bgp(self, server: str) -> None: ...
    def restart_command(self, server: str, graceful: bool = True) -> str: ...
    def edit_announcer_config(self, server: str, edit: Callable[[str], str]) -> None: ...
    def exabgp_output(self, server: str) -> str: ...


@dataclass(frozen=True)
class Service:
    """The anycast service of one address family as the topology defines it."""

    ip: str
    port: int
    where: dict[str, str]  # instance -> server
    leaf_of: dict[str, str]  # server -> leaf
    client: str
    routers: list[str]
    family: Family = IPV4

    @property
    def names(self) -> list[str]:
        return sorted(self.where)

    @property
    def prefix(self) -> str:
        return self.family.host(self.ip)


@dataclass(frozen=True)
class Fabric:
    """The service in every family the topology serves (IPv4 first), and when `up` began."""

    services: dict[str, Service]
    started: float = field(default_factory=time.monotonic)

    @property
    def primary(self) -> Service:
        return next(iter(self.services.values()))

    @property
    def names(self) -> list[str]:
        return self.primary.names

    def each(self, fn: Callable[[Service], T]) -> dict[str, T]:
        """fn for every family at once (threads: each mostly waits for subprocesses and
        polls); an exception of any family is raised once all have finished."""
        with ThreadPoolExecutor(len(self.services)) as pool:
            futures = {name: pool.submit(fn, svc) for name, svc in self.services.items()}
            return {name: future.result() for name, future in futures.items()}

    def measure(self, fn: Callable[[Service], dict[str, Any]]) -> dict[str, Any]:
        """fn's figures for every family at once, combined into one report entry; a
        LabError becomes that family's failed result while the others are still measured."""
        return combine(self.each(lambda svc: guarded(fn, svc)))


def guarded(fn: Callable[[Service], dict[str, Any]], svc: Service) -> dict[str, Any]:
    try:
        return fn(svc)
    except LabError as exc:
        return {"pass": False, "error": str(exc)}


def anycast_placement(topo: Topology, *, every: bool = False
                      ) -> tuple[int, dict[str, dict[str, str]]]:  # fmt: skip
    """The instances' port, and anycast IP -> {instance: server} (an anycast IP is an
    instance's extra IP) of the instances that start with the lab; ``every``: also those a
    scenario starts (``autostart: false``)."""
    found: dict[str, dict[str, str]] = {}
    port = 7000
    for node in topo.nodes.values():
        spec_path = node.bind_source(INSTANCES)
        if spec_path is None:
            continue
        spec: InstanceFile = parse_instances(spec_path.read_text())
        port = spec.port
        for inst in spec.instances if every else spec.autostarted:
            for ip in inst.extra_ips:
                found.setdefault(ip, {})[inst.name] = node.name
    return port, found


def find_services(topo: Topology, anycast: Collection[str] | None = None, *,
                  every: bool = False) -> dict[str, Service]:  # fmt: skip
    """Per family, the anycast IP served by the most instances that start with the lab (or
    the one of ``anycast``; ``every``: counting the instances scenarios start too)."""
    port, found = anycast_placement(topo, every=every)
    client = topo.by_role("client")[0].name
    routers = [n.name for n in topo.nodes.values() if n.role in ("spine", "leaf")]
    services = {}
    for family in FAMILIES:
        mine = {ip: where for ip, where in found.items()
                if family_of(ip) == family and (anycast is None or ip in anycast)}  # fmt: skip
        if mine:
            ip, where = max(mine.items(), key=lambda kv: len(kv[1]))
            leaf_of = {s: o.node for s in set(where.values()) for _, o in topo.links_of(s)}
            services[family.name] = Service(ip, port, where, leaf_of, client, routers, family)
    if not services:
        raise LabError(f"topology {topo.name}: no instance has an anycast IP (extra_ips)"
                       + ("" if anycast is None else f" of {sorted(anycast)}"))  # fmt: skip
    return services


def find_service(topo: Topology) -> Service:
    """The first family's service (IPv4 in this lab)."""
    return next(iter(find_services(topo).values()))


# --------------------------------------------------------------------------- observation


def fib_nexthops(lab: Lab, node: str, ip: str) -> list[str]:
    """The kernel's next hops (gateways, else devices) of ip's host route on node."""
    family = family_of(ip)
    argv = ["ip", "-j", family.ip_flag, "route", "show", family.host(ip)]
    routes = json.loads(lab.exec(node, argv, check=False).stdout or "[]")
    if not routes:
        return []
    route = routes[0]
    hops = route.get("nexthops") or [route]
    return sorted(str(h.get("gateway", h.get("dev"))) for h in hops)


def expected_paths(svc: Service, topo: Topology) -> dict[str, int]:
    """Next hops each router should have for the anycast IP, hop by hop."""
    leaves = {n.name for n in topo.by_role("leaf")}
    spines = [n.name for n in topo.by_role("spine")]
    per_leaf = {leaf: sum(1 for s in set(svc.where.values()) if svc.leaf_of[s] == leaf)
                for leaf in leaves}  # fmt: skip
    serving = sum(1 for c in per_leaf.values() if c)
    want = {leaf: (count or len(spines)) for leaf, count in per_leaf.items()}
    want.update(dict.fromkeys(spines, serving))
    return want


def sessions(lab: Lab, svc: Service) -> dict[str, int]:
    """Established / configured BGP sessions of svc's family over every router."""
    up = total = 0
    for router in svc.routers:
        summary = lab.vtysh_json(router, f"show bgp {svc.family.afi} summary json")
        peers = summary.get("peers", {})
        total += len(peers)
        up += sum(1 for p in peers.values() if p.get("state") == "Established")
    return {"established": up, "configured": total}


def server_ip(lab: Lab, server: str, family: Family = IPV4) -> str:
    """server's global address of family on its uplink: the next hop its leaf installs."""
    argv = ["ip", "-j", family.ip_flag, "addr", "show", "dev", "eth1", "scope", "global"]
    return str(json.loads(lab.exec(server, argv).stdout)[0]["addr_info"][0]["local"])


def locate(lab: Lab, fabric: Fabric, instance: str) -> tuple[str, str, dict[str, str]]:
    """instance's server, its leaf, and the server's address per family: the next hops the
    leaf has for the anycast IPs through that server."""
    server = fabric.primary.where[instance]
    hops = {f: server_ip(lab, server, svc.family) for f, svc in fabric.services.items()}
    return server, fabric.primary.leaf_of[server], hops


def link_between(topo: Topology, a: str, b: str) -> tuple[str, str]:
    for mine, other in topo.links_of(a):
        if other.node == b:
            return mine.interface, other.interface
    raise LabError(f"no link between {a} and {b}")


def cut(lab: Lab, node: str, ifname: str) -> None:
    """A silent failure: drop everything node receives on ifname (nft, in its namespace;
    an inet table: both families)."""
    rules = (f"table inet {CUT_TABLE} {{\n chain pre {{\n"
             f"  type filter hook prerouting priority -300;\n"
             f'  iifname "{ifname}" drop;\n }}\n}}')  # fmt: skip
    lab.exec(node, ["nft", "-f", "-"], input_text=rules + "\n")


def uncut(lab: Lab, node: str) -> None:
    lab.exec(node, ["nft", "delete", "table", "inet", CUT_TABLE], check=False)


def run_client(lab: Lab, svc: Service, args: list[str], name: str) -> dict[str, Any]:
    log = lab.rundir / "client" / f"{name}{svc.family.suffix}.json"
    argv = [sys.executable, "-m", "announcer.lab.traffic", *args,
            "--target", svc.ip, "--port", str(svc.port)]  # fmt: skip
    out = lab.exec(svc.client, argv, timeout=180).stdout
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(out)
    doc: dict[str, Any] = json.loads(out)
    return doc


def converged(lab: Lab, svc: Service) -> dict[str, Any] | None:
    """Every router has the expected next hops for svc and every session of its family is
    up; None while not."""
    want = expected_paths(svc, lab.topo)
    have = {node: len(fib_nexthops(lab, node, svc.ip)) for node in want}
    if have != want:
        return None
    s = sessions(lab, svc)
    if s["established"] != s["configured"]:
        return None
    return {"paths": have, "sessions": s}


def converge(lab: Lab, fabric: Fabric, timeout: float, what: str, *, partial: bool = False
             ) -> dict[str, float]:  # fmt: skip
    """Poll until every family has converged; when each did first (monotonic). At the
    deadline: LabError naming the families that did not, or (partial) those that did."""
    seen: dict[str, float] = {}

    def check(svc: Service) -> float | None:
        """When svc's check returned converged (families checked at once: one family's
        stamp does not include the other's check)."""
        if svc.family.name in seen or not converged(lab, svc):
            return None
        return time.monotonic()

    def step() -> bool:
        for name, stamp in fabric.each(check).items():
            if stamp is not None:
                seen.setdefault(name, stamp)
        return len(seen) == len(fabric.services)

    try:
        poll(step, timeout, f"hop-by-hop convergence {what}", interval=0.2)
    except LabError as exc:
        if not partial:
            missing = [name for name in fabric.services if name not in seen]
            raise LabError(f"{exc} (not converged: {', '.join(missing)})") from None
    return seen


# --------------------------------------------------------------------------- scenarios


def ensure_announced(lab: Lab, fabric: Fabric, timeout: float) -> list[str]:
    """Servers of which an anycast route (any family) never reached their leaf: ExaBGP
    restarted (a workaround for a lost announcement, reported as such)."""
    restarted = []
    for inst, server in sorted(fabric.primary.where.items()):
        leaf = fabric.primary.leaf_of[server]
        hops = {svc.ip: server_ip(lab, server, svc.family) for svc in fabric.services.values()}
        try:
            poll(lambda leaf=leaf, hops=hops: all(h in fib_nexthops(lab, leaf, ip)  # type: ignore[misc]
                                                   for ip, h in hops.items()), timeout,
                 f"{leaf} has {inst}'s paths via {', '.join(hops.values())}")  # fmt: skip
        except LabError:
            lab.stop_bgp(server)
            lab.start_bgp(server)
            restarted.append(server)
    return restarted


def convergence(lab: Lab, fabric: Fabric) -> dict[str, Any]:
    restarted = ensure_announced(lab, fabric, 15)
    when = converge(lab, fabric, 60, "after up", partial=True)
    client_leaf = next(other.node for _, other in lab.topo.links_of(fabric.primary.client))

    def figures(svc: Service) -> dict[str, Any]:
        if svc.family.name not in when:
            want = expected_paths(svc, lab.topo)
            have = {node: fib_nexthops(lab, node, svc.ip) for node in want}
            raise LabError(f"{svc.prefix} not converged after 60 s: want {want} next hops, "
                           f"have {have}, sessions {sessions(lab, svc)}")  # fmt: skip
        state = converged(lab, svc) or {}
        return {
            "pass": bool(state),
            "convergence_ms": round((when[svc.family.name] - fabric.started) * 1000),
            "anycast": svc.ip,
            "paths_per_hop": state.get("paths"),
            "sessions": state.get("sessions"),
            "client_leaf_fib": fib_nexthops(lab, client_leaf, svc.ip),
            "exabgp_restarted": restarted,
        }

    return fabric.measure(figures)


def hashing(lab: Lab, svc: Service, udp: int = 1200, tcp: int = 1200, packets: int = 3,
            name: str = "hashing") -> dict[str, Any]:  # fmt: skip
    doc = run_client(lab, svc, ["flows", "--udp", str(udp), "--tcp", str(tcp),
                                "--packets", str(packets)], name)  # fmt: skip
    answers = [f["answers"] for f in doc["flows"]]
    chosen = [stats.flow_instance(a) for a in answers]
    share = stats.shares(chosen, svc.names)
    counts = [sum(1 for c in chosen if c == n) for n in svc.names]
    chi2, p_value = stats.chi_square(counts)
    answered = sum(1 for c in chosen if c is not None) / max(1, len(chosen))
    by_proto = {proto: stats.shares([stats.flow_instance(f["answers"]) for f in doc["flows"]
                                     if f["proto"] == proto], svc.names)
                for proto in ("udp", "tcp")}  # fmt: skip
    deviation = stats.max_deviation(share)
    sticky = stats.sticky_fraction(answers)
    return {
        "pass": sticky == 1.0 and answered >= 0.99 and deviation <= 0.07,
        "flows": len(answers), "packets_per_flow": packets, "answered_fraction": round(answered, 4),
        "shares": {k: round(v, 4) for k, v in share.items()},
        "shares_by_protocol": {
            p: {k: round(v, 4) for k, v in s.items()} for p, s in by_proto.items()
        },
        "sticky_fraction": sticky, "max_deviation": round(deviation, 4),
        "chi_square": round(chi2, 3), "chi_square_p": round(p_value, 4),
    }  # fmt: skip
