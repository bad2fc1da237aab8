"""The daemon: the loop and its timers and signals (:mod:`.app`), composed of the control
socket, drains, operator requests, feeds, metrics, logs and the self-watchdog."""
