#!/bin/sh
# ExaBGP + the announcer with the lab's environment file (also used to restart it).
# --plain: without graceful restart and manual End-of-RIB, the announcer without
# exabgp.manual_eor (rolling_upgrade's contrast; the netns backend: announcer.lab.hoststack).
set -eu
conf=/etc/anycast-announcer/exabgp.conf
if [ "${1:-}" = "--plain" ]; then
  mkdir -p /var/lib/lab
  sed -e 's/^\( *manual_eor:\) true/\1 false/' /etc/anycast-announcer/announcer.yaml \
    >/var/lib/lab/announcer-plain.yaml
  sed -e '/manual-eor true;/d' -e '/^ *capability {/,/^ *}/d' \
    -e 's#/etc/anycast-announcer/announcer.yaml#/var/lib/lab/announcer-plain.yaml#' \
    "$conf" >/var/lib/lab/exabgp-plain.conf
  conf=/var/lib/lab/exabgp-plain.conf
fi
exec env $(grep -v '^#' /etc/anycast-announcer/exabgp.env | xargs) \
  exabgp.log.destination=/var/log/lab/exabgp.log \
  exabgp "$conf"
