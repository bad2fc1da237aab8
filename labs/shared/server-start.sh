#!/bin/sh
# Container entry point of a lab server under containerlab (the netns backend does the same
# steps itself): FRR's bfdd, the containers of /etc/lab/instances.yaml (each ready one
# writes its drop-in with a health check), then ExaBGP.
# The client node has no instances file and only idles.
set -eu
mkdir -p /var/log/lab
if [ ! -f /etc/lab/instances.yaml ]; then exec sleep infinity; fi
/usr/lib/frr/frrinit.sh start || true
# containerlab attaches eth1 after the container started; the exec addresses it
while ! ip -4 addr show dev eth1 2>/dev/null | grep -q inet; do sleep 0.2; done
while ! ip -6 addr show dev eth1 scope global 2>/dev/null | grep -q inet6; do sleep 0.2; done
python3 -m announcer.lab.instances up /etc/lab/instances.yaml --logdir /var/log/lab \
  --drop-ins /etc/anycast-announcer/routes.d
/usr/local/bin/lab-exabgp >>/var/log/lab/exabgp.out 2>&1 &
exec sleep infinity
