"""Health checks: rise/fall hysteresis (:mod:`.hysteresis`, pure), the monitor that runs
one asyncio task per target (:mod:`.monitor`), and the probes (:mod:`.probes`)."""
