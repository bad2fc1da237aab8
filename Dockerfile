# anycast-announcer with ExaBGP, for hosts that run their daemons as containers.
#
#   docker build -t anycast-announcer .
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

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY announcer ./announcer
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# The shipped configuration as defaults; mount /etc/anycast-announcer to replace it
# (set policy.allow and the neighbor addresses first).
COPY exabgp/announcer.yaml exabgp/exabgp5.conf exabgp/exabgp4.conf exabgp/exabgp.env /etc/anycast-announcer/
# The configs name /usr/local/bin/announcer: pip installs it there in this image.
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
    exabgp_log_destination=stdout
STOPSIGNAL SIGTERM
ENTRYPOINT ["exabgp"]
CMD ["/etc/anycast-announcer/exabgp5.conf"]
