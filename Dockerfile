# anycast-announcer with ExaBGP, for hosts that run their daemons as containers.
#
#   make image                          # no registry needed: a Debian base made here (docs/image.md)
#   docker build -t anycast-announcer . # or from python:3.11-slim-bookworm and PyPI
#   docker run -d --name anycast-announcer --network host --cap-add NET_ADMIN \
#     -v /etc/anycast-announcer:/etc/anycast-announcer:ro \
#     -v /run/anycast-announcer:/run/anycast-announcer \
#     -v /var/lib/anycast-announcer:/var/lib/anycast-announcer \
#     anycast-announcer
#
# --network host: the announcer reads the *host's* routing table (netlink) and ExaBGP
# peers from the host's addresses; a bridged container would see neither.
# --cap-add NET_ADMIN: the 64 MiB netlink receive buffer (SO_RCVBUFFORCE); nothing else.
# Add -v /run/docker.sock:/run/docker.sock:ro with docker.enabled.
# `docker exec anycast-announcer announcer status -c /etc/anycast-announcer/announcer.yaml`
# talks to the control socket (root in the container is uid 0, as the socket requires).
#
# BASE: any Debian 12 image with python3 (make image passes the one it imported); one
# without Python's venv module (debian:bookworm-slim) gets DEBIAN_PACKAGES from its mirror.
ARG BASE=python:3.11-slim-bookworm
ARG DEBIAN_PACKAGES="python3 python3-venv"

FROM ${BASE} AS build
ARG DEBIAN_PACKAGES
RUN python3 -c 'import ensurepip' 2>/dev/null || { apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $DEBIAN_PACKAGES \
 && rm -rf /var/lib/apt/lists/*; }
# Wheels in packaging/wheelhouse (make image downloads them there) are all pip may use: the
# build then needs no network. An empty wheelhouse means PyPI.
COPY packaging/wheelhouse /wheelhouse
COPY pyproject.toml README.md /src/
COPY announcer /src/announcer
RUN if ls /wheelhouse/*.whl >/dev/null 2>&1; then offline=--no-index; else offline=; fi \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check $offline \
      --find-links /wheelhouse /src

FROM ${BASE}
ARG DEBIAN_PACKAGES
RUN python3 -c 'import ensurepip' 2>/dev/null || { apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $DEBIAN_PACKAGES \
 && rm -rf /var/lib/apt/lists/*; }
COPY --from=build /opt/venv /opt/venv
# The configs and the docs name /usr/local/bin/announcer and /usr/local/bin/exabgp.
RUN ln -s /opt/venv/bin/announcer /opt/venv/bin/announcer-routed \
      /opt/venv/bin/announcer-docker-routed /opt/venv/bin/exabgp /usr/local/bin/
# The shipped configuration as defaults; mount /etc/anycast-announcer to replace it
# (set policy.allow, exabgp.neighbors and the neighbor addresses first).
COPY exabgp/announcer.yaml exabgp/exabgp5.conf exabgp/exabgp4.conf exabgp/exabgp.env /etc/anycast-announcer/
RUN announcer check -c /etc/anycast-announcer/announcer.yaml
# ExaBGP's settings (exabgp/exabgp.env) in their underscore form. ExaBGP runs as root
# here and would drop the announcer to "nobody" (losing NET_ADMIN): keep it root, the
# container's capabilities are the limit.
ENV exabgp_api_ack=true \
    exabgp_api_respawn=true \
    exabgp_api_terminate=true \
    exabgp_api_cli=false \
    exabgp_daemon_daemonize=false \
    exabgp_daemon_user=root \
    exabgp_log_destination=stdout \
    exabgp_log_level=WARNING \
    exabgp_api_chunk=1000
STOPSIGNAL SIGTERM
# ExaBGP through the launcher (docs/adr/0003); `--stock` as the first argument turns it off.
ENTRYPOINT ["announcer", "exabgp"]
CMD ["/etc/anycast-announcer/exabgp5.conf"]
