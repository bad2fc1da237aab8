"""The lab's scenarios as data: what runs, in which order, on which instances, and which
figures the terminal table shows. ``run_suite`` runs them against a lab.

Every scenario is a function ``(lab, fabric) -> report entry`` measuring every address family
of the fabric (family.py: IPv4 figures at the top level, ``ipv6`` beside them, ``pass`` only
when both passed). Adding one is an entry here and a function built from the pieces the
others use:

- a steady-state measurement per family: ``fabric.measure(lambda svc: ...)`` (hashing;
  ``weighted`` measures the shares of its own service, more instances of the anycast IP,
  with ``Fabric.each`` the same way);
- an event under traffic: ``Streams(lab, fabric, name, seconds)``, ``baseline()``, the event
  once, then per family ``gone_ms``/``watch_leaf`` and the stream's packets turned into
  ``loss_figures``/``movement``/``save_timeline`` (streams.py; ``rolling_upgrade`` in
  upgrade.py restarts every host in turn inside one long stream per pass);
- restore what was taken away and ``converge(lab, fabric, ...)`` before returning, so the
  next scenario starts from the full set.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from announcer.lab import drops
from announcer.lab.deprefer import deprefer
from announcer.lab.deprefer import schema_errors as deprefer_schema
from announcer.lab.failures import graceful_removal, recovery, server_failure
from announcer.lab.family import combine
from announcer.lab.gating import health_failover, withdraw_before_stop
from announcer.lab.namespaces import LabError
from announcer.lab.scenarios import Fabric, Lab, convergence, hashing
from announcer.lab.upgrade import REPORT_ORDER, rolling_upgrade
from announcer.lab.upgrade import schema_errors as upgrade_schema
from announcer.lab.weighted import schema_errors as weighted_schema
from announcer.lab.weighted import weighted


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Lab, Fabric], dict[str, Any]]
    # figures the terminal table shows for each family; "a.b" is key b of the dict at key a
    figures: tuple[str, ...]
    # what one family's result lacks, beyond family.schema_errors (report.report_errors)
    schema: Callable[[dict[str, Any]], list[str]] | None = None


SUITE: tuple[Scenario, ...] = (
    Scenario("convergence", convergence, ("convergence_ms", "paths_per_hop")),
    Scenario("hashing", lambda lab, fab: fab.measure(lambda svc: hashing(lab, svc)),
             ("flows", "shares", "max_deviation", "chi_square_p", "sticky_fraction")),
    Scenario("graceful_removal", lambda lab, fab: graceful_removal(lab, fab, fab.names[0]),
             ("leaf_fib_ms", "convergence_ms", "lost_packets", "moved_surviving_fraction")),
    Scenario("server_failure",
             lambda lab, fab: server_failure(lab, fab, fab.names[2], fab.names[1]),
             ("detection_ms", "lost_packets", "hold_timer.detection_ms")),
    Scenario("recovery",
             lambda lab, fab: recovery(lab, fab, fab.names[0], [fab.names[2], fab.names[1]]),
             ("recovery_ms", "shares", "max_deviation")),
    # with all four instances back; each restores what it took away
    Scenario("withdraw_before_stop",
             lambda lab, fab: withdraw_before_stop(lab, fab, fab.names[3], fab.names[2]),
             ("skipped", "lost_packets", "drain_to_fabric_stopped_ms", "drain_to_leaf_fib_ms",
              "graceful.community_ms", "graceful.leaf_fib_ms", "graceful.lost_packets")),
    Scenario("health_failover", lambda lab, fab: health_failover(lab, fab, fab.names[1]),
             ("detection_ms", "lost_packets", "shares_after", "rejoin_ms")),
    # weighted ECMP: more local instances on some hosts, shares per instance with weights on
    # and off, one local instance failing; then the last-resort announcement
    Scenario("weighted", weighted,
             ("flows", "max_deviation", "unweighted_max_deviation", "chi_square_p",
              "failover.convergence_ms", "failover.lost_packets",
              "failover.moved_surviving_fraction", "failover.max_deviation_after"),
             weighted_schema),
    Scenario("deprefer", deprefer,
             ("share_of_unhealthy_host", "answered_fraction_all_unhealthy", "deprefer_ms"),
             deprefer_schema),
    # every host of an instance restarted in turn, three ways, under 2,000 flows per family
    Scenario("rolling_upgrade", rolling_upgrade,
             tuple(f"variants.{v}.{k}" for v in REPORT_ORDER
                   for k in ("lost_packets", "moved_unneeded_fraction", "moved_fraction",
                             "total_s")), upgrade_schema),
)  # fmt: skip
BY_NAME = {s.name: s for s in SUITE}


def run_suite(lab: Lab, fabric: Fabric, suite: tuple[Scenario, ...] = SUITE
              ) -> tuple[dict[str, Any], dict[str, float]]:  # fmt: skip
    """Every scenario in order: the report entries, and how long each took (s). A scenario
    that raises LabError fails for every family with its message; the next one still runs."""
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    kernel: dict[str, Any] = {}  # drop counters that grew during each scenario, per node
    for scenario in suite:
        print(f"scenario {scenario.name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        before = drops.snapshot(lab, lab.topo.nodes)
        try:
            results[scenario.name] = scenario.run(lab, fabric)
        except LabError as exc:
            results[scenario.name] = combine(
                {f: {"pass": False, "error": str(exc)} for f in fabric.services}
            )
        kernel[scenario.name] = drops.growth(before, drops.snapshot(lab, lab.topo.nodes))
        (lab.rundir / "drops.json").write_text(json.dumps(kernel, indent=1))
        seconds[scenario.name] = round(time.monotonic() - started, 1)
        verdicts = results[scenario.name].get("pass_by_family", {})
        print(f"scenario {scenario.name}: {results[scenario.name].get('pass')} {verdicts} "
              f"({seconds[scenario.name]} s)", file=sys.stderr, flush=True)  # fmt: skip
    return results, seconds
