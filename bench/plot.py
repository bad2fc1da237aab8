"""The latency CDFs per tool (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.stats import cdf

PANELS = (
    ("announce_wire_ms", "announce: host kernel -> UPDATE on the wire"),
    ("withdraw_wire_ms", "withdraw: host kernel -> UPDATE on the wire"),
    ("announce_fib_ms", "announce: host kernel -> leaf FIB"),
    ("withdraw_fib_ms", "withdraw: host kernel -> leaf FIB"),
)


def plot_cdfs(tools: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (key, title) in zip(axes.flat, PANELS, strict=True):
        for name, report in tools.items():
            values = report.get("raw", {}).get(key) or []
            if not values:
                continue
            xs, ys = cdf(values)
            ax.step(xs, ys, where="post", label=f"{name} (n={len(xs)})")
        ax.set_xscale("log")
        ax.set_xlabel("milliseconds (log)")
        ax.set_ylabel("fraction of trials")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("anycast-announcer vs FRR vs BIRD: one /32 at a time (CDF)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
