#!/bin/sh
# `systemctl restart anycast-announcer-exabgp` on a containerlab server (restart-stack's
# --restart-command in rolling_upgrade): SIGTERM to ExaBGP, the announcer and its watchdog
# at once (KillMode=control-group), SIGKILL for what is left after 30 s (TimeoutStopSec),
# then start again. --plain: start it without graceful restart (lab-exabgp --plain).
set -eu
# ExaBGP (python -I .../announcer/exabgp/launcher.py CONF, or `announcer exabgp` before it
# execs that), its announcer and watchdog; not this script nor restart-stack, whose command
# lines name lab-restart-exabgp
pattern='announcer/exabgp/launcher[.]py|bin/announcer exabgp |announcer run -c|announcer[.]daemon[.]watchdog'
pkill -TERM -f "$pattern" || true
i=0
while pgrep -f "$pattern" >/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
pkill -KILL -f "$pattern" || true
setsid /usr/local/bin/lab-exabgp "$@" >>/var/log/lab/exabgp.out 2>&1 </dev/null &
