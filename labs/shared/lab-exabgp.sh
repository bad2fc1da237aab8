#!/bin/sh
# ExaBGP + the announcer as the product starts them (`announcer exabgp --env FILE CONF`: the
# launcher with the shipped exabgp/exabgp.env), the lab's additions (/etc/lab/exabgp.env)
# in the environment, where they win over the --env file (also used to restart it).
# The announcer reads the run's copy of its config, /var/lib/lab/announcer.yaml, written at
# every start: the weighted and deprefer scenarios edit it (weights on/off) while it runs,
# as the namespace backend edits its own copy (the bound file stays untouched).
# --plain: without graceful restart and manual End-of-RIB, the announcer without
# exabgp.manual_eor (rolling_upgrade's contrast; the netns backend: announcer.lab.hoststack).
set -eu
mkdir -p /var/lib/lab
cp /etc/anycast-announcer/announcer.yaml /var/lib/lab/announcer.yaml
sed -e 's#/etc/anycast-announcer/announcer.yaml#/var/lib/lab/announcer.yaml#' \
  /etc/anycast-announcer/exabgp.conf >/var/lib/lab/exabgp.conf
conf=/var/lib/lab/exabgp.conf
if [ "${1:-}" = "--plain" ]; then
  sed -e 's/^\( *manual_eor:\) true/\1 false/' /var/lib/lab/announcer.yaml \
    >/var/lib/lab/announcer-plain.yaml
  sed -e '/manual-eor true;/d' -e '/^ *capability {/,/^ *}/d' \
    -e 's#/var/lib/lab/announcer.yaml#/var/lib/lab/announcer-plain.yaml#' \
    "$conf" >/var/lib/lab/exabgp-plain.conf
  conf=/var/lib/lab/exabgp-plain.conf
fi
exec env $(grep -v '^#' /etc/lab/exabgp.env | xargs) \
  exabgp.log.destination=/var/log/lab/exabgp.log \
  announcer exabgp --env /etc/anycast-announcer/exabgp.env "$conf"
