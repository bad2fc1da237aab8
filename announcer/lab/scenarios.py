"""The lab's scenarios: each returns a dict with a ``pass`` verdict and its figures.

They drive a running lab through the ``Lab`` protocol (both backends implement it) and
synchronise by polling observable state - sessions, FIB next hops, the client's output - with
deadlines. The few fixed waits are measurement windows (traffic running before a failure),
never synchronisation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from announcer.lab import stats
from announcer.lab.instances import InstanceFile, parse_instances
from announcer.lab.namespaces import LabError, poll
from announcer.lab.topology import Topology

INSTANCES = "/etc/lab/instances.yaml"
CUT_TABLE = "aalabcut"


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


@dataclass(frozen=True)
class Service:
    """The anycast service as the topology defines it."""

    ip: str
    port: int
    where: dict[str, str]  # instance -> server
    leaf_of: dict[str, str]  # server -> leaf
    client: str
    routers: list[str]

    @property
    def names(self) -> list[str]:
        return sorted(self.where)


def find_service(topo: Topology) -> Service:
    found: dict[str, dict[str, str]] = {}
    port = 7000
    for node in topo.nodes.values():
        spec_path = node.bind_source(INSTANCES)
        if spec_path is None:
            continue
        spec: InstanceFile = parse_instances(spec_path.read_text())
        port = spec.port
        for inst in spec.instances:
            for ip in inst.extra_ips:
                found.setdefault(ip, {})[inst.name] = node.name
    ip, where = max(found.items(), key=lambda kv: len(kv[1]))
    leaf_of = {s: other.node for s in set(where.values()) for _, other in topo.links_of(s)}
    client = topo.by_role("client")[0].name
    routers = [n.name for n in topo.nodes.values() if n.role in ("spine", "leaf")]
    return Service(ip, port, where, leaf_of, client, routers)


# --------------------------------------------------------------------------- observation


def fib_nexthops(lab: Lab, node: str, prefix: str) -> list[str]:
    out = lab.exec(node, ["ip", "-j", "route", "show", f"{prefix}/32"], check=False).stdout
    routes = json.loads(out or "[]")
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
    """Established / configured BGP sessions over every router."""
    up = total = 0
    for router in svc.routers:
        peers = lab.vtysh_json(router, "show bgp ipv4 unicast summary json").get("peers", {})
        total += len(peers)
        up += sum(1 for p in peers.values() if p.get("state") == "Established")
    return {"established": up, "configured": total}


def run_client(lab: Lab, svc: Service, args: list[str], name: str) -> dict[str, Any]:
    log = lab.rundir / "client" / f"{name}.json"
    argv = [sys.executable, "-m", "announcer.lab.traffic", *args,
            "--target", svc.ip, "--port", str(svc.port)]  # fmt: skip
    out = lab.exec(svc.client, argv, timeout=180).stdout
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(out)
    doc: dict[str, Any] = json.loads(out)
    return doc


class Stream:
    """A background UDP stream from the client; `result()` waits for it and parses it."""

    def __init__(self, lab: Lab, svc: Service, name: str, flows: int, rate: float,
                 seconds: float) -> None:  # fmt: skip
        self.path = lab.rundir / "client" / f"{name}.json"
        self.path.unlink(missing_ok=True)  # `test` again on a kept lab: not the last log
        argv = [sys.executable, "-m", "announcer.lab.traffic", "stream", "--target", svc.ip,
                "--port", str(svc.port), "--udp", str(flows), "--rate", str(rate),
                "--duration", str(seconds)]  # fmt: skip
        self.proc = lab.spawn(svc.client, argv, self.path)
        poll(lambda: self.path.exists() and b"started" in self.path.read_bytes(), 20,
             f"traffic stream {name} started")  # fmt: skip

    def result(self) -> list[stats.Packet]:
        self.proc.wait(120)
        text = self.path.read_text()
        doc = json.loads(text[text.index("{"):])
        return [(float(t), int(f), i) for t, f, i in doc["packets"]]


def cut(lab: Lab, node: str, ifname: str) -> None:
    """A silent failure: drop everything node receives on ifname (nft, in its namespace)."""
    rules = (f"table inet {CUT_TABLE} {{\n chain pre {{\n"
             f"  type filter hook prerouting priority -300;\n"
             f'  iifname "{ifname}" drop;\n }}\n}}')  # fmt: skip
    lab.exec(node, ["nft", "-f", "-"], input_text=rules + "\n")


def uncut(lab: Lab, node: str) -> None:
    lab.exec(node, ["nft", "delete", "table", "inet", CUT_TABLE], check=False)


def link_between(topo: Topology, a: str, b: str) -> tuple[str, str]:
    for mine, other in topo.links_of(a):
        if other.node == b:
            return mine.interface, other.interface
    raise LabError(f"no link between {a} and {b}")


def server_ip(lab: Lab, server: str) -> str:
    out = lab.exec(server, ["ip", "-j", "-4", "addr", "show", "dev", "eth1"]).stdout
    return str(json.loads(out)[0]["addr_info"][0]["local"])


# --------------------------------------------------------------------------- scenarios


def converged(lab: Lab, svc: Service) -> dict[str, Any] | None:
    want = expected_paths(svc, lab.topo)
    have = {node: len(fib_nexthops(lab, node, svc.ip)) for node in want}
    if have != want:
        return None
    s = sessions(lab, svc)
    if s["established"] != s["configured"]:
        return None
    return {"paths": have, "sessions": s}


def ensure_announced(lab: Lab, svc: Service, timeout: float) -> list[str]:
    """Servers whose anycast route never reached their leaf: ExaBGP restarted (a workaround
    for a lost announcement, reported as such)."""
    restarted = []
    for inst, server in sorted(svc.where.items()):
        leaf = svc.leaf_of[server]
        ip = server_ip(lab, server)
        try:
            poll(lambda leaf=leaf, ip=ip: ip in fib_nexthops(lab, leaf, svc.ip), timeout,  # type: ignore[misc]
                 f"{leaf} has {inst}'s path via {ip}")  # fmt: skip
        except LabError:
            lab.stop_bgp(server)
            lab.start_bgp(server)
            restarted.append(server)
    return restarted


def convergence(lab: Lab, svc: Service, started: float) -> dict[str, Any]:
    restarted = ensure_announced(lab, svc, 15)
    try:
        state = poll(lambda: converged(lab, svc), 60, "hop-by-hop convergence", interval=0.2)
    except LabError as exc:
        return {"pass": False, "error": str(exc), "exabgp_restarted": restarted}
    client_leaf = next(other.node for _, other in lab.topo.links_of(svc.client))
    return {
        "pass": True,
        "convergence_ms": round((time.monotonic() - started) * 1000),
        "anycast": svc.ip,
        "paths_per_hop": state["paths"],
        "sessions": state["sessions"],
        "client_leaf_fib": fib_nexthops(lab, client_leaf, svc.ip),
        "exabgp_restarted": restarted,
    }


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
