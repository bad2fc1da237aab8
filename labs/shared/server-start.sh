#!/bin/sh
# Container entry point of a lab server under containerlab (the netns backend does the same
# steps itself): a standalone bfdd, the containers of /etc/lab/instances.yaml (each ready one
# writes its drop-in with a health check), then ExaBGP.
# The client node has no instances file and only idles.
set -eu
mkdir -p /var/log/lab
if [ ! -f /etc/lab/instances.yaml ]; then exec sleep infinity; fi
# BFD as packaging/systemd/anycast-announcer-bfdd.service runs it (the netns backend reads
# the unit itself): bfdd standalone, its config generated from announcer.yaml's bfd:
mkdir -p /run/anycast-announcer-bfdd && chmod 0750 /run/anycast-announcer-bfdd
chown frr:frr /run/anycast-announcer-bfdd
announcer bfd-config -c /etc/anycast-announcer/announcer.yaml -o /run/anycast-announcer-bfdd/bfdd.conf
/usr/lib/frr/bfdd -f /run/anycast-announcer-bfdd/bfdd.conf -z /run/anycast-announcer-bfdd/no-zebra \
  -P 0 --vty_socket /run/anycast-announcer-bfdd --bfdctl /run/anycast-announcer-bfdd/bfdd.sock \
  -i /run/anycast-announcer-bfdd/bfdd.pid -u frr -g frr --log stdout >>/var/log/lab/bfdd.log 2>&1 &
# containerlab attaches eth1 after the container started; the exec addresses it
while ! ip -4 addr show dev eth1 2>/dev/null | grep -q inet; do sleep 0.2; done
while ! ip -6 addr show dev eth1 scope global 2>/dev/null | grep -q inet6; do sleep 0.2; done
python3 -m announcer.lab.instances up /etc/lab/instances.yaml --logdir /var/log/lab \
  --drop-ins /etc/anycast-announcer/routes.d
/usr/local/bin/lab-exabgp >>/var/log/lab/exabgp.out 2>&1 &
exec sleep infinity
