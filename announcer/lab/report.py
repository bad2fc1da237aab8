"""lab-report.json, the terminal summary and the PNG figures (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

SCENARIOS = ("convergence", "hashing", "graceful_removal", "withdraw_before_stop",
             "server_failure", "recovery", "health_failover")  # fmt: skip


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        except OSError:
            return "unknown"
        lines = (out.stdout or out.stderr).strip().splitlines()
        return lines[0] if lines else "unknown"

    exabgp = str(Path(sys.executable).parent / "exabgp")
    return {
        "frr": first_line(["/usr/lib/frr/zebra", "--version"]),
        "exabgp": first_line([exabgp, "version"]),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def verdict(scenarios: dict[str, Any]) -> bool:
    """True when no scenario failed (skipped ones, pass null, do not fail the run)."""
    return all(s.get("pass") is not False for s in scenarios.values())


def summary_rows(scenarios: dict[str, Any]) -> list[tuple[str, str, str]]:
    def figures(name: str, s: dict[str, Any]) -> str:
        keys = {
            "convergence": ["convergence_ms", "paths_per_hop"],
            "hashing": ["flows", "shares", "max_deviation", "chi_square_p", "sticky_fraction"],
            "graceful_removal": ["leaf_fib_ms", "convergence_ms", "lost_packets",
                                 "moved_surviving_fraction"],
            "server_failure": ["detection_ms", "lost_packets"],
            "recovery": ["recovery_ms", "shares", "max_deviation"],
            "withdraw_before_stop": ["skipped", "lost_packets", "drain_to_fabric_stopped_ms",
                                     "drain_to_leaf_fib_ms"],
            "health_failover": ["detection_ms", "lost_packets", "shares_after", "rejoin_ms"],
        }.get(name, [])
        parts = [f"{k}={s[k]}" for k in keys if k in s]
        if name == "server_failure" and "hold_timer" in s:
            parts.append(f"hold_detection_ms={s['hold_timer'].get('detection_ms')}")
        if name == "withdraw_before_stop" and "graceful" in s:
            g = s["graceful"]
            parts.append(f"graceful: community_ms={g.get('community_ms')} "
                         f"leaf_fib_ms={g.get('leaf_fib_ms')} "
                         f"lost={g.get('lost_packets')}")  # fmt: skip
        if "error" in s:
            parts.append(f"error={s['error'][:80]}")
        return " ".join(parts)

    rows = []
    for name in SCENARIOS:
        s = scenarios.get(name, {})
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}.get(s.get("pass"), "?")
        rows.append((name, mark, figures(name, s)))
    return rows


def render_table(scenarios: dict[str, Any]) -> str:
    rows = summary_rows(scenarios)
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{n:<{width}}  {m:<4}  {f}" for n, m, f in rows)


def plot_shares(scenarios: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    series = [(n, scenarios.get(n, {}).get("shares") or {}) for n in ("hashing", "recovery")]
    names = sorted({k for _, s in series for k in s})
    width = 0.38
    for i, (label, share) in enumerate(series):
        xs = [j + (i - 0.5) * width for j in range(len(names))]
        ax.bar(xs, [share.get(n, 0) for n in names], width, label=label)
    if names:
        ax.axhline(1 / len(names), color="black", linestyle="--", linewidth=1, label="even")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("share of flows")
    ax.set_title("Anycast flows per instance (ECMP, L4 hash)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_timelines(timelines: list[Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(timelines), 1, figsize=(9, 3.2 * len(timelines)), squeeze=False)
    docs = [json.loads(tl.read_text()) for tl in timelines]
    every = sorted({i for doc in docs for _, _, i in doc["packets"] if i})
    colour = {n: f"C{k}" for k, n in enumerate(every)}  # one colour per instance, all plots
    for ax, doc in zip(axes[:, 0], docs, strict=True):
        names = sorted({i for _, _, i in doc["packets"] if i})
        for name in names:
            pts = [(t, f) for t, f, i in doc["packets"] if i == name]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=2, c=colour[name], label=name)
        lost = [(t, f) for t, f, i in doc["packets"] if i is None]
        ax.scatter([p[0] for p in lost], [p[1] for p in lost], s=6, c="black", marker="x",
                   label="lost")  # fmt: skip
        ax.axvline(0, color="red", linewidth=1)
        ax.set_title(f"{doc['event']}: answering instance per flow (event at t=0)")
        ax.set_xlabel("seconds since the event")
        ax.set_ylabel("flow")
        ax.legend(loc="upper left", fontsize=7, markerscale=4, ncol=len(names) + 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], outdir: Path) -> Path:
    scenarios = results["scenarios"]
    doc = {**results, "pass": verdict(scenarios), "versions": results.get("versions") or versions()}
    report = outdir / "lab-report.json"
    report.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    plot_shares(scenarios, outdir / "shares.png")
    timelines = [Path(str(s["timeline"])) for s in _timeline_holders(scenarios)]
    if timelines:
        plot_timelines([t for t in timelines if t.exists()], outdir / "failover-timeline.png")
    return report


def _timeline_holders(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for s in scenarios.values():
        if "timeline" in s:
            found.append(s)
        found += [v for v in s.values() if isinstance(v, dict) and "timeline" in v]
    return found
