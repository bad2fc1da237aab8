"""lab-report.json, the terminal summary and the PNG figures (matplotlib, Agg backend).

Each scenario's entry holds the IPv4 figures at its top level and the IPv6 ones under
``ipv6`` (family.py); the table has a row per family, the figures a panel (shares) or a
column (timelines) per family.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from announcer.lab.family import FAMILIES, family_results, schema_errors
from announcer.lab.suite import BY_NAME, SUITE

SCENARIOS = tuple(s.name for s in SUITE)


SHIPPED_ENV = Path(__file__).resolve().parents[2] / "exabgp" / "exabgp.env"
# the launcher's one stderr line at every start (announcer/exabgp/launcher.py)
_LAUNCHER = re.compile(r"exabgp_launcher mode=(\S+) version=(\S+) fixes=(\S+) reason=(.*)$")


def versions() -> dict[str, str]:
    """FRR, ExaBGP (started as the servers start it: `announcer exabgp --env ...`, whose
    launcher says which mode it runs in), kernel, Python."""

    def first_line(argv: list[str], stderr: bool = False) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        except OSError:
            return "unknown"
        lines = (out.stderr if stderr else out.stdout or out.stderr).strip().splitlines()
        return lines[0] if lines else "unknown"

    exabgp = [str(Path(sys.executable).parent / "announcer"), "exabgp", "--env",
              str(SHIPPED_ENV), "version"]  # fmt: skip
    launcher = _LAUNCHER.search(first_line(exabgp, stderr=True))
    return {
        "frr": first_line(["/usr/lib/frr/zebra", "--version"]),
        "exabgp": first_line(exabgp),
        "exabgp_launcher": " ".join(launcher.group(0).split()[1:4]) if launcher else "unknown",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def launcher_runs(outputs: dict[str, str]) -> list[dict[str, Any]]:
    """What the servers' ExaBGP launchers said at each start (server -> its unit's output):
    one entry per distinct mode, version, fixes and reason, with the starts and servers."""
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for server, text in sorted(outputs.items()):
        for line in text.splitlines():
            m = _LAUNCHER.search(line)
            if m is None:
                continue
            key = (m[1], m[2], m[3], m[4].strip("'\""))
            run = found.setdefault(key, {"mode": key[0], "version": key[1], "fixes": key[2],
                                         "reason": key[3], "starts": 0, "servers": []})  # fmt: skip
            run["starts"] += 1
            if server not in run["servers"]:
                run["servers"].append(server)
    return list(found.values())


def verdict(scenarios: dict[str, Any]) -> bool:
    """True when no scenario failed (skipped ones, pass null, do not fail the run)."""
    return all(s.get("pass") is not False for s in scenarios.values())


def _figure(result: dict[str, Any], key: str) -> Any:
    """result[key], where "a.b" is key b of the dict at key a; None if absent."""
    value: Any = result
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def summary_rows(scenarios: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(scenario, family, mark, figures): a row per family, the name on the first only."""
    rows = []
    for name in SCENARIOS:
        per = family_results(scenarios.get(name, {}))
        for k, (family, result) in enumerate(per.items()):
            mark = {True: "PASS", False: "FAIL", None: "SKIP"}.get(result.get("pass"), "?")
            parts = [f"{key}={value}" for key in BY_NAME[name].figures
                     if (value := _figure(result, key)) is not None]  # fmt: skip
            if "error" in result:
                parts.append(f"error={result['error'][:80]}")
            rows.append((name if k == 0 else "", family, mark, " ".join(parts)))
    return rows


def render_table(scenarios: dict[str, Any]) -> str:
    rows = summary_rows(scenarios)
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{n:<{width}}  {fam:<4}  {m:<4}  {f}".rstrip() for n, fam, m, f in rows)


def report_errors(doc: dict[str, Any]) -> list[str]:
    """What a lab-report.json lacks: every scenario, each with a verdict and the same figures
    for every family (family.schema_errors), the run's versions, and what the servers'
    ExaBGP launcher said (the mode ExaBGP ran in)."""
    errors = [f"no {key}" for key in ("scenarios", "versions", "pass") if key not in doc]
    runs = doc.get("exabgp_launcher")
    if not runs or not all(isinstance(r, dict) and r.get("mode") for r in runs):
        errors.append(f"exabgp_launcher: no launcher line from the servers' ExaBGP ({runs!r})")
    scenarios = doc.get("scenarios") or {}
    for name in SCENARIOS:
        if name not in scenarios:
            errors.append(f"scenarios.{name}: missing")
            continue
        errors += [f"scenarios.{name}: {e}" for e in schema_errors(scenarios[name])]
        check = BY_NAME[name].schema
        if check is not None:
            for family, result in family_results(scenarios[name]).items():
                errors += [f"scenarios.{name} ({family}): {e}" for e in check(result)]
    return errors


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# rows of shares.png: a title and its series (label, scenario, key path of the shares)
SHARE_ROWS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    ("anycast flows per instance (ECMP, L4 hash)",
     (("hashing", "hashing", "shares"), ("recovery", "recovery", "shares"))),
    ("weighted ECMP, instances per host",
     (("weights on", "weighted", "shares"), ("weights off", "weighted", "unweighted_shares"),
      ("one failed, weights on", "weighted", "failover.shares_after"))),
    ("deprefer: a service's instances unhealthy",
     (("all healthy", "deprefer", "healthy.shares"),
      ("one host unhealthy", "deprefer", "one_host_unhealthy.shares"),
      ("all unhealthy", "deprefer", "all_unhealthy.shares"))),
)  # fmt: skip


def plot_shares(scenarios: dict[str, Any], path: Path) -> None:
    """A row per measurement (SHARE_ROWS), a panel per family: shares per instance, the
    even share dashed."""
    plt = _pyplot()
    per = {name: family_results(entry) for name, entry in scenarios.items()}
    rows = [
        (title, series)
        for title, series in SHARE_ROWS
        if any(_figure(r, key) for _, n, key in series for r in per.get(n, {}).values())
    ]
    families = [f.name for f in FAMILIES if any(f.name in r for r in per.values())]
    rows = rows or list(SHARE_ROWS[:1])  # an empty panel rather than no file
    families = families or [FAMILIES[0].name]
    fig, axes = plt.subplots(len(rows), len(families), figsize=(6 * len(families),
                             4 * len(rows)), squeeze=False)  # fmt: skip
    for row, (title, series) in enumerate(rows):
        for ax, family in zip(axes[row], families, strict=True):
            results = [(per.get(n) or {}).get(family) or {} for _, n, _ in series]
            shares = [(label, _figure(r, key) or {})
                      for (label, _, key), r in zip(series, results, strict=True)]  # fmt: skip
            hosts = next((r["instances_per_host"] for r in results if "instances_per_host" in r),
                         None)  # fmt: skip
            counts = f" {'/'.join(map(str, hosts.values()))}" if hosts else ""
            _bars(ax, shares, f"{family}: {title}{counts}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(ax: Any, series: list[tuple[str, dict[str, float]]], title: str) -> None:
    names = sorted({k for _, share in series for k in share})
    width = 0.8 / max(1, len(series))
    for i, (label, share) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [share.get(n, 0) for n in names], width, label=label)
    if names:
        ax.axhline(1 / len(names), color="black", linestyle="--", linewidth=1, label="even")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("share of flows")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def plot_timelines(columns: dict[str, list[Path]], path: Path) -> None:
    """A row per event, a column per family: which instance answered each flow's packets."""
    plt = _pyplot()
    docs = {f: [json.loads(tl.read_text()) for tl in tls] for f, tls in columns.items()}
    rows = max(len(d) for d in docs.values())
    fig, axes = plt.subplots(rows, len(docs), figsize=(9 * len(docs), 3.2 * rows),
                             squeeze=False)  # fmt: skip
    every = sorted({i for ds in docs.values() for d in ds for _, _, i in d["packets"] if i})
    colour = {n: f"C{k}" for k, n in enumerate(every)}  # one colour per instance, all plots
    for col, (family, ds) in enumerate(docs.items()):
        for row in range(rows):
            if row < len(ds):
                _plot_timeline(axes[row][col], ds[row], family, colour)
            else:
                axes[row][col].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_timeline(ax: Any, doc: dict[str, Any], family: str, colour: dict[str, str]) -> None:
    names = sorted({i for _, _, i in doc["packets"] if i})
    for name in names:
        pts = [(t, f) for t, f, i in doc["packets"] if i == name]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=2, c=colour[name], label=name)
    lost = [(t, f) for t, f, i in doc["packets"] if i is None]
    ax.scatter([p[0] for p in lost], [p[1] for p in lost], s=6, c="black", marker="x",
               label="lost")  # fmt: skip
    ax.axvline(0, color="red", linewidth=1)
    ax.set_title(f"{doc['event']} ({family}): answering instance per flow (event at t=0)")
    ax.set_xlabel("seconds since the event")
    ax.set_ylabel("flow")
    ax.legend(loc="upper left", fontsize=7, markerscale=4, ncol=len(names) + 1)


def write_report(results: dict[str, Any], outdir: Path) -> Path:
    scenarios = results["scenarios"]
    doc = {**results, "pass": verdict(scenarios), "versions": results.get("versions") or versions()}
    report = outdir / "lab-report.json"
    report.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    plot_shares(scenarios, outdir / "shares.png")
    columns = timelines(scenarios)
    if any(columns.values()):
        plot_timelines({f: tls for f, tls in columns.items() if tls},
                       outdir / "failover-timeline.png")  # fmt: skip
    return report


def timelines(scenarios: dict[str, Any]) -> dict[str, list[Path]]:
    """Per family, the timeline files of the scenarios' events that exist, in suite order."""
    found: dict[str, list[Path]] = {f.name: [] for f in FAMILIES}
    for name in SCENARIOS:
        for family, result in family_results(scenarios.get(name, {})).items():
            holders = [result, *(v for v in result.values() if isinstance(v, dict))]
            holders += [v for h in holders[1:] for v in h.values() if isinstance(v, dict)]
            paths = [Path(str(h["timeline"])) for h in holders if "timeline" in h]
            found.setdefault(family, []).extend(p for p in paths if p.exists())
    return found
