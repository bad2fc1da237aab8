"""Which hooks the daemon reports through: the real metrics only when someone can read them."""

from __future__ import annotations

from announcer.config import MetricsConfig
from announcer.daemon.hooks import Hooks


def hooks_for(config: MetricsConfig) -> Hooks:
    """Metrics when they can be read (``metrics.listen``), else hooks that do nothing (and
    prometheus_client is never imported)."""
    if config.listen is None:
        return Hooks()
    from announcer.daemon.metrics import Metrics

    return Metrics(config)
