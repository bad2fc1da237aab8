"""Scenario ``rolling_upgrade`` (issue 18): every host of an anycast instance restarts its
ExaBGP and announcer in turn, under continuous traffic (2,000 UDP flows per family, 2
packets/s each, spread over the period), three ways:

- ``drain``: ``announcer restart-stack --mode drain`` (drain gracefully, restart, undrain);
- ``graceful_restart``: ``announcer restart-stack --mode graceful`` (BGP graceful restart:
  the leaf keeps the routes as stale until the new announcer's End-of-RIB);
- ``plain``: the restart command alone, ExaBGP without graceful restart: what hosts had
  before issue 18 (the contrast; not gated).

restart-stack runs in the server with the lab's ``systemctl restart`` as its
``--restart-command`` (``Lab.restart_command``; hoststack.py). After each host the lab waits
until that host's new announcer serves everything (``announcer status``: new pid, sessions
up, no check pending, all announced) and the fabric has every path back hop by hop; only
then the next host goes. The client's packets give the figures (rolling.py); the host's
leaf FIB is watched meanwhile (``leaf_fib_out_ms``: how long it lacked the host's path).

Run order: plain first (its sessions must start without graceful restart: the hosts are
restarted so, untimed, before it), then drain (whose restarts bring graceful restart back),
then graceful restart. The report lists the variants as the issue names them.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from announcer.lab import drops
from announcer.lab.family import combine, family_of
from announcer.lab.gating import log_time
from announcer.lab.instances import parse_instances
from announcer.lab.namespaces import LabError, poll
from announcer.lab.rolling import Step, absent_ms, covered, rolling_figures
from announcer.lab.scenarios import (
    INSTANCES,
    Fabric,
    Lab,
    Service,
    converge,
    fib_nexthops,
    locate,
)
from announcer.lab.stats import Packet
from announcer.lab.streams import BASELINE_S, Streams, save_timeline

FLOWS, RATE, SLOTS = 2000, 2.0, 100  # per family: 4,000 packets/s, a group every 5 ms
MAX_PASS_S = 140.0  # a pass's stream ends at stop(), at the latest after this
TAIL_S = 1.5  # the stream runs on after the last host: a measurement window
WAIT_S = 60.0  # restart-stack --timeout (each of its waits), and the lab's own waits
SAMPLE_EVERY = 20  # flows kept in the timeline plot


@dataclass(frozen=True)
class Variant:
    name: str  # the report's key
    mode: str | None  # restart-stack --mode; None: the restart command alone
    graceful_restart: bool  # ExaBGP with graceful-restart + manual-eor (else: plain configs)

    @property
    def excuse_own(self) -> bool:
        """Whether the procedure takes each host out of rotation (graceful restart does not)."""
        return self.mode != "graceful"


PLAIN = Variant("plain", None, False)
VARIANTS = (PLAIN, Variant("drain", "drain", True), Variant("graceful_restart", "graceful", True))
REPORT_ORDER = ("drain", "graceful_restart", "plain")
GATED = ("drain", "graceful_restart")
# every variant's figures in the report (issue 18), per family
VARIANT_KEYS = ("lost_packets", "moved_unneeded_fraction", "out_of_rotation_ms", "total_s")


class FibWatch:
    """Polls a leaf's FIB in a thread, per family: whether it has the server's next hop for
    the anycast IP (``anycast``) and any route to the instance's own address (``own``: a
    single-homed /32 or /128; without it traffic to that address has nowhere to go)."""

    def __init__(self, lab: Lab, leaf: str, services: dict[str, Service], hops: dict[str, str],
                 own: dict[str, str]) -> None:  # fmt: skip
        self.lab, self.leaf, self.services, self.hops, self.own = lab, leaf, services, hops, own
        self.samples: dict[tuple[str, str], list[tuple[float, bool]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FibWatch:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self._stop.set()
        self._thread.join(30)

    def _look(self, family: str, svc: Service) -> None:
        anycast = self.hops[family] in fib_nexthops(self.lab, self.leaf, svc.ip)
        self.samples.setdefault((family, "anycast"), []).append((time.monotonic(), anycast))
        own = bool(fib_nexthops(self.lab, self.leaf, self.own[family]))
        self.samples.setdefault((family, "own"), []).append((time.monotonic(), own))

    def _run(self) -> None:
        while not self._stop.is_set():
            for family, svc in self.services.items():
                try:
                    self._look(family, svc)
                except LabError:
                    continue
            self._stop.wait(0.05)

    def out_ms(self, what: str) -> dict[str, int]:
        """Per family: how long the leaf lacked it (ms)."""
        return {f: absent_ms(self.samples.get((f, what), [])) for f in self.services}


def own_addresses(lab: Lab, fabric: Fabric, server: str, instance: str) -> dict[str, str]:
    """The instance's own address per family (instances.yaml: its ips, not the anycast)."""
    spec = lab.topo.nodes[server].bind_source(INSTANCES)
    if spec is None:
        raise LabError(f"{server} binds no {INSTANCES}")
    ips = next(i.ips for i in parse_instances(spec.read_text()).instances if i.name == instance)
    found = {svc.family.name: next((ip for ip in ips if family_of(ip) == svc.family), None)
             for svc in fabric.services.values()}  # fmt: skip
    missing = [f for f, ip in found.items() if ip is None]
    if missing:
        raise LabError(f"{instance} on {server} has no address of {', '.join(missing)}")
    return {f: str(ip) for f, ip in found.items()}


def log_evidence(lab: Lab, server: str, wall0: float) -> dict[str, Any]:
    """From server's log after wall0: when the new announcer started (ms after wall0), and
    ms after that when it first sent End-of-RIB and first announced a route (None: no such
    line; without manual End-of-RIB there is none)."""
    started = log_time(lab, server, " announcer_started ", wall0)
    if started is None:
        return {"new_announcer_started_ms": None, "end_of_rib_after_start_ms": None,
                "announced_after_start_ms": None}  # fmt: skip

    def after(needle: str) -> int | None:
        when = log_time(lab, server, needle, started)
        return None if when is None else round((when - started) * 1000)

    return {"new_announcer_started_ms": round((started - wall0) * 1000),
            "end_of_rib_after_start_ms": after(" end_of_rib_sent "),
            "announced_after_start_ms": after(" route_announced ")}  # fmt: skip


def announcer_status(lab: Lab, server: str) -> dict[str, Any]:
    """server's `announcer status --json`; {} while it does not answer (restarting)."""
    proc = lab.exec(server, lab.announcer_argv(server, "status", "--json"), check=False)
    try:
        doc: dict[str, Any] = json.loads(proc.stdout) if proc.returncode == 0 else {}
    except ValueError:
        return {}
    return doc


def serving(status: dict[str, Any], old_pid: object) -> bool:
    """A new announcer with its sessions up, no check pending, everything it decided to
    announce announced and acknowledged."""
    stats = status.get("stats") or {}
    neighbors = stats.get("neighbors") or {}
    rows = status.get("decisions") or []
    return (stats.get("pid") not in (None, old_pid) and bool(neighbors)
            and all(state == "up" for state in neighbors.values())
            and not any(r.get("reason") == "check_pending" for r in rows)
            and all(r.get("announced") for r in rows if r.get("announce"))
            and not stats.get("in_flight"))  # fmt: skip


def restart_stack_timeline(stdout: str) -> dict[str, float]:
    """The steps of `restart-stack --json` (its last line; the restart command's own output
    may come before it)."""
    lines = stdout.strip().splitlines()
    try:
        timeline: dict[str, float] = json.loads(lines[-1])["timeline"]
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        raise LabError(f"restart-stack printed no JSON timeline: {stdout!r}") from exc
    return timeline


def restart(lab: Lab, server: str, variant: Variant) -> dict[str, Any]:
    """Restart server's stack the variant's way and wait until it serves everything again;
    restart-stack's steps (s since its start), or the command's."""
    command = lab.restart_command(server, variant.graceful_restart)
    old = (announcer_status(lab, server).get("stats") or {}).get("pid")
    started = time.monotonic()
    detail: dict[str, Any] = {"command": command}
    if variant.mode is None:
        lab.exec(server, shlex.split(command), timeout=WAIT_S)
    else:
        argv = lab.announcer_argv(server, "restart-stack", "--mode", variant.mode,
                                  "--restart-command", command, "--timeout", str(WAIT_S),
                                  "--json")  # fmt: skip
        proc = lab.exec(server, argv, check=False, timeout=6 * WAIT_S)
        if proc.returncode != 0:
            status = json.dumps(announcer_status(lab, server))[:1500]
            raise LabError(f"restart-stack --mode {variant.mode} on {server} failed (rc "
                           f"{proc.returncode}): {proc.stdout}{proc.stderr.strip()[-800:]}; "
                           f"status: {status}")  # fmt: skip
        detail["restart_stack"] = restart_stack_timeline(proc.stdout)
    detail["command_s"] = round(time.monotonic() - started, 2)
    poll(lambda: serving(announcer_status(lab, server), old), WAIT_S,
         f"{server}'s new announcer serving everything", interval=0.2)  # fmt: skip
    detail["serving_s"] = round(time.monotonic() - started, 2)
    return detail


def step(lab: Lab, fabric: Fabric, variant: Variant, server: str) -> tuple[Step, dict[str, Any]]:
    """One host: restarted, then every path back hop by hop; its leaf watched meanwhile."""
    instance = next(i for i, s in sorted(fabric.primary.where.items()) if s == server)
    _, leaf, hops = locate(lab, fabric, instance)
    own = own_addresses(lab, fabric, server, instance)
    start, wall0 = time.monotonic(), time.time()
    with FibWatch(lab, leaf, fabric.services, hops, own) as watch:
        detail = restart(lab, server, variant)
        converge(lab, fabric, WAIT_S, f"after restarting {server} ({variant.name})")
    end = time.monotonic()
    detail.update(instance=instance, leaf=leaf, converged_s=round(end - start, 2),
                  **log_evidence(lab, server, wall0), leaf_fib_out_ms=watch.out_ms("anycast"),
                  own_route_out_ms=watch.out_ms("own"))  # fmt: skip
    return Step(server, instance, start, end), detail


def run_pass(lab: Lab, fabric: Fabric, variant: Variant, order: list[str]
             ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every host of order in turn under one stream per family; figures per family."""
    converge(lab, fabric, WAIT_S, f"before the {variant.name} pass")
    counters = drops.snapshot(lab, lab.topo.nodes)
    streams = Streams(lab, fabric, f"upgrade_{variant.name}", MAX_PASS_S, FLOWS, RATE, SLOTS,
                      stoppable=True)  # fmt: skip
    steps: list[Step] = []
    details: dict[str, dict[str, Any]] = {}
    try:
        streams.baseline()
        for server in order:
            done, details[server] = step(lab, fabric, variant, server)
            steps.append(done)
        time.sleep(TAIL_S)  # a measurement window, not synchronisation
    finally:
        streams.stop()
        packets = streams.result()
    grown = drops.growth(counters, drops.snapshot(lab, lab.topo.nodes))
    return {f: figures(lab, variant, packets[f], steps, details, svc)
            | {"kernel_drops": drops.of_family(grown, svc.family.version)}
            for f, svc in fabric.services.items()}  # fmt: skip


def figures(lab: Lab, variant: Variant, packets: list[Packet], steps: list[Step],
            details: dict[str, dict[str, Any]], svc: Service) -> dict[str, Any]:  # fmt: skip
    if not covered(packets, steps):
        raise LabError(f"the {variant.name} stream did not cover the pass (it ends after "
                       f"{MAX_PASS_S:g} s)")  # fmt: skip
    found = rolling_figures(packets, steps, BASELINE_S, variant.excuse_own)
    family = svc.family.name
    per_family = ("leaf_fib_out_ms", "own_route_out_ms")
    return {
        **found,
        **{key: {s: d[key][family] for s, d in details.items()} for key in per_family},
        "mode": variant.mode or "restart command alone",
        "graceful_restart": variant.graceful_restart,
        "steps": {s: {k: v for k, v in d.items() if k not in per_family}
                  for s, d in details.items()},
        "timeline": save_timeline(lab, f"rolling_upgrade_{variant.name}", packets,
                                  steps[0].start, svc.family, SAMPLE_EVERY),
    }  # fmt: skip


def restart_all(lab: Lab, fabric: Fabric, order: list[str], graceful: bool) -> None:
    """Untimed set-up: restart every host's stack (graceful restart on or off), no traffic."""
    setup = Variant("setup", None, graceful)
    for server in order:
        restart(lab, server, setup)
    converge(lab, fabric, WAIT_S, "after the set-up restarts")


def route_monitors(lab: Lab, routers: list[str]) -> list[subprocess.Popen[bytes]]:
    """`ip -timestamp monitor route` on every router (<run>/<router>/route-monitor.log):
    every FIB change of the scenario, to match a lost packet with the hop that dropped it."""
    return [lab.spawn(r, ["ip", "-timestamp", "monitor", "route"],
                      lab.rundir / r / "route-monitor.log") for r in routers]  # fmt: skip


def rolling_upgrade(lab: Lab, fabric: Fabric) -> dict[str, Any]:
    order = sorted(set(fabric.primary.where.values()))
    passes: dict[str, dict[str, dict[str, Any]]] = {}
    converge(lab, fabric, WAIT_S, "before rolling_upgrade")
    monitors = route_monitors(lab, fabric.primary.routers)
    try:
        for variant in VARIANTS:
            try:
                if variant is PLAIN:
                    restart_all(lab, fabric, order, graceful=False)
                passes[variant.name] = run_pass(lab, fabric, variant, order)
            except LabError as exc:
                passes[variant.name] = {f: {"error": str(exc)} for f in fabric.services}
                if variant is PLAIN:  # whatever state the hosts are in: graceful restart back
                    restart_all(lab, fabric, order, graceful=True)
    finally:
        for monitor in monitors:
            monitor.terminate()
            monitor.wait(10)
    return combine({f: entry({v: passes[v][f] for v in REPORT_ORDER}, order)
                    for f in fabric.services})  # fmt: skip


def entry(variants: dict[str, dict[str, Any]], order: list[str]) -> dict[str, Any]:
    """One family's report entry: pass when every gated variant ran and lost no packet;
    ``targets_met`` also asks for no unneeded move; ``findings`` say what missed."""
    ok = all("error" not in variants[v] and variants[v]["lost_packets"] == 0 for v in GATED)
    return {
        "pass": ok, "hosts": order, "flows_per_family": FLOWS, "packets_per_second_per_flow": RATE,
        "gated": list(GATED),
        "targets_met": {v: target_met(variants[v]) for v in GATED},
        "findings": findings(variants),
        "variants": variants,
    }  # fmt: skip


def target_met(variant: dict[str, Any]) -> bool:
    """The issue's targets: no packet lost and no flow moved while its instance stayed up."""
    return ("error" not in variant and variant["lost_packets"] == 0
            and variant["moved_unneeded_fraction"] == 0)  # fmt: skip


def findings(variants: dict[str, dict[str, Any]]) -> list[str]:
    """What the figures show against the targets, with the evidence (pure)."""
    found = [f"{name}: {v['error']}" for name, v in variants.items() if "error" in v]
    for name in GATED:
        v = variants[name]
        if "error" in v:
            continue
        if v["lost_packets"]:
            found.append(f"{name}: {v['lost_packets']} packets lost "
                         f"(per host: {v['lost_by_server']})")  # fmt: skip
        if v["moved_unneeded_fraction"]:
            share = f"{v['moved_unneeded_fraction']:.1%}"
            found.append(f"{name}: {share} of the flows were answered by another instance "
                         "while theirs was meant to stay in rotation")  # fmt: skip
    graceful = variants.get("graceful_restart", {})
    for server, st in sorted((graceful.get("steps") or {}).items()):
        eor, announced = st.get("end_of_rib_after_start_ms"), st.get("announced_after_start_ms")
        if eor is not None and (announced is None or eor < announced):
            found.append(
                f"graceful_restart {server}: the new announcer sent End-of-RIB {eor} ms after it "
                f"started, before it announced anything again ({announced} ms), so the leaf "
                f"dropped the routes it kept as stale: no path via {server} for "
                f"{graceful['leaf_fib_out_ms'][server]} ms, no route at all to the instance's "
                f"own address for {graceful['own_route_out_ms'][server]} ms")  # fmt: skip
    drain = variants.get("drain", {})
    if any((drain.get("own_route_out_ms") or {}).values()):
        found.append(f"drain: the instances' own (single-homed) addresses had no route at their "
                     f"leaf for {drain['own_route_out_ms']} ms: a drain keeps traffic whole only "
                     "where another path exists")  # fmt: skip
    return found


def schema_errors(result: dict[str, Any]) -> list[str]:
    """What one family's rolling_upgrade result lacks: every variant with VARIANT_KEYS (or
    its error), out_of_rotation_ms for every host."""
    if "error" in result:
        return []
    variants = result.get("variants")
    if not isinstance(variants, dict):
        return ["no variants"]
    errors = []
    for name in REPORT_ORDER:
        variant = variants.get(name)
        if not isinstance(variant, dict):
            errors.append(f"variants.{name}: missing")
            continue
        if "error" in variant:
            continue
        errors += [f"variants.{name}: no {key}" for key in VARIANT_KEYS if key not in variant]
        hosts = set((variant.get("out_of_rotation_ms") or {}).keys())
        if hosts != set(result.get("hosts") or []):
            errors.append(f"variants.{name}.out_of_rotation_ms: hosts {sorted(hosts)}, "
                          f"expected {result.get('hosts')}")  # fmt: skip
    return errors
