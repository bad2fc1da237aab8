#!/bin/sh
# ExaBGP + the announcer with the lab's environment file (also used to restart it).
exec env $(grep -v '^#' /etc/anycast-announcer/exabgp.env | xargs) \
  exabgp.log.destination=/var/log/lab/exabgp.log \
  exabgp /etc/anycast-announcer/exabgp.conf
