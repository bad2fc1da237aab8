"""announcer-docker-routed: a Docker (libnetwork) remote network driver for the routed wiring.

dockerd finds the driver by its socket, ``/run/docker/plugins/NAME.sock`` (NAME is the
driver name given to ``docker network create -d``), and POSTs JSON to it. Per endpoint:

- CreateEndpoint: Docker's IPAM has chosen the addresses (``Interface.Address``,
  ``AddressIPv6``); extra (anycast) IPs come from the endpoint driver option
  ``anycast.ips``. A primary IP must be free on this host, an extra one free or shared
  (``AddressInUse`` otherwise); nothing is made yet.
- Join: the veth pair is made in the host namespace (wiring.make_host_side: host end with
  169.254.1.1/32 and fe80::1/64, proxy_arp, forwarding, the primary host routes);
  libnetwork moves the peer into the container and renames it eth*; the reply's static
  routes give the container ``169.254.1.1 dev ethN scope link``, ``default via
  169.254.1.1`` and ``default via fe80::1``. Once libnetwork has configured it
  (docker_sandbox.settle): extra IPs on the container (libnetwork configures only the
  primary ones), the IPv6 pool's on-link route dropped, the extra IPs' shared routes
  joined (a nexthop needs the veth's carrier).
- Leave takes the extra IPs off the container; DeleteEndpoint takes the veth out of the
  shared routes and deletes it (with it the peer and every primary route).

Restarts: the endpoints are kept in a state file, and every host veth names its endpoint in
its alias. At start (and every --resync-interval) the driver asks dockerd which endpoints
exist: veths of endpoints Docker still has are adopted untouched (their routes stay),
veths of endpoints Docker no longer has are deleted. While dockerd cannot be asked,
nothing is deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from announcer.cni import attachments, docker_sandbox, host_routes, scheme, shared_routes, wiring
from announcer.cni.driver_state import (
    DEFAULT_DOCKER_HOST,
    DockerUnavailable,
    DockerView,
    StateFile,
)
from announcer.cni.libnetwork import (
    ALIAS_NET_PREFIX,
    CONTAINER_IF_PREFIX,
    MIME,
    DriverError,
    Endpoint,
    host_veth,
    parse_extra_ips,
    parse_interface,
    parse_network_options,
    peer_veth,
    render_join,
)
from announcer.cni.scheme import IPAddress, WiringConfig, WiringError

log = logging.getLogger("announcer.docker_driver")

DEFAULT_SOCKET = Path("/run/docker/plugins/announcer-routed.sock")
DEFAULT_STATE_DIR = Path("/var/lib/anycast-announcer/docker-driver")
EX_USAGE, EX_CONFIG = 64, 78  # sysexits.h, as cli.py


@dataclass
class RoutedDriver:
    """The protocol's methods; each takes the request JSON and returns the reply JSON."""

    state: StateFile
    config: WiringConfig = field(default_factory=WiringConfig)
    docker: DockerView | None = None
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    created_here: set[str] = field(default_factory=set)  # never orphans, whatever Docker says
    lock: threading.RLock = field(default_factory=threading.RLock)
    extra_ips_timeout: float = 60.0

    def __post_init__(self) -> None:
        self.endpoints.update(self.state.load())

    def call(self, method: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, reply) for one request; errors are {"Err": message}."""
        handler = self._methods().get(method)
        if handler is None:
            return 404, {"Err": f"{method} is not implemented by this driver"}
        try:
            with self.lock:
                return 200, handler(body)
        except DriverError as e:
            log.warning("request_refused method=%s err=%s", method, e)
            return 200, {"Err": str(e)}
        except (KeyError, TypeError, ValueError) as e:
            return 400, {"Err": f"{method}: malformed request ({type(e).__name__}: {e})"}
        except Exception as e:  # netlink/OS failure or a bug: dockerd still gets a reply
            log.exception("request_failed method=%s", method)
            return 500, {"Err": f"{method}: {type(e).__name__}: {e}"}

    def _methods(self) -> dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]]:
        return {
            "Plugin.Activate": lambda _: {"Implements": ["NetworkDriver"]},
            "NetworkDriver.GetCapabilities": lambda _: {"Scope": "local",
                                                        "ConnectivityScope": "local"},
            "NetworkDriver.CreateNetwork": self.create_network,
            "NetworkDriver.DeleteNetwork": lambda _: {},
            "NetworkDriver.CreateEndpoint": self.create_endpoint,
            "NetworkDriver.EndpointOperInfo": self.endpoint_oper_info,
            "NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "NetworkDriver.Join": self.join,
            "NetworkDriver.Leave": self.leave,
            "NetworkDriver.DiscoverNew": lambda _: {},
            "NetworkDriver.DiscoverDelete": lambda _: {},
            "NetworkDriver.ProgramExternalConnectivity": lambda _: {},  # no NAT, no ports
            "NetworkDriver.RevokeExternalConnectivity": lambda _: {},
            "NetworkDriver.AllocateNetwork": self.not_global,
            "NetworkDriver.FreeNetwork": self.not_global,
        }  # fmt: skip

    def not_global(self, body: Mapping[str, Any]) -> dict[str, Any]:
        raise DriverError("this driver has local scope: AllocateNetwork/FreeNetwork "
                          "(swarm networks) are not supported")  # fmt: skip

    def create_network(self, body: Mapping[str, Any]) -> dict[str, Any]:
        parse_network_options(body)
        log.info("network_created network=%s", body["NetworkID"])
        return {}

    def create_endpoint(self, body: Mapping[str, Any]) -> dict[str, Any]:
        ep_id, net_id = str(body["EndpointID"]), str(body["NetworkID"])
        try:
            primary, extra = scheme.validate_ips(
                parse_interface(body), parse_extra_ips(body.get("Options") or {})
            )
            self._ensure_unused(ep_id, primary, extra)
        except WiringError as e:
            raise DriverError(str(e)) from None
        endpoint = Endpoint(net_id, ep_id, tuple(map(str, primary)), tuple(map(str, extra)))
        self.endpoints[ep_id] = endpoint
        self.created_here.add(ep_id)
        self.state.save(self.endpoints)
        log.info("endpoint_created endpoint=%s ips=%s extra_ips=%s", ep_id[:12],
                 ",".join(endpoint.ips), ",".join(endpoint.extra_ips) or "-")  # fmt: skip
        return {"Interface": {"MacAddress": scheme.container_mac(primary + extra)}}

    def _ensure_unused(
        self, ep_id: str, primary: tuple[IPAddress, ...], extra: tuple[IPAddress, ...]
    ) -> None:
        """AddressInUse if another endpoint of ours has one of our primary IPs, or has one
        of our extra IPs as its primary, or the host routes an IP unshareably."""
        for other in self.endpoints.values():
            if other.endpoint_id == ep_id:
                continue  # dockerd retrying a CreateEndpoint
            theirs = {scheme.parse_ip(t) for t in other.ips}
            shared = {scheme.parse_ip(t) for t in other.extra_ips}
            for ip in primary + extra:
                if ip in theirs or (ip in primary and ip in shared):
                    owner = host_veth(other.endpoint_id, self.config)
                    raise scheme.AddressInUse(ip, owner, self.config.table)
        host_routes.ensure_addresses_free(primary, self.config, extra=extra)

    def endpoint_oper_info(self, body: Mapping[str, Any]) -> dict[str, Any]:
        endpoint = self.endpoints.get(str(body["EndpointID"]))
        if endpoint is None:
            return {"Value": {}}
        return {"Value": {"hostInterface": host_veth(endpoint.endpoint_id, self.config),
                          "extraIPs": ",".join(endpoint.extra_ips)}}  # fmt: skip

    def join(self, body: Mapping[str, Any]) -> dict[str, Any]:
        ep_id, sandbox = str(body["EndpointID"]), str(body.get("SandboxKey") or "")
        endpoint = self.endpoints.get(ep_id)
        if endpoint is None:
            raise DriverError(f"Join: endpoint {ep_id} is unknown to this driver")
        host = host_veth(ep_id, self.config)
        alias = attachments.render_alias(ALIAS_NET_PREFIX + endpoint.network_id, ep_id,
                                         CONTAINER_IF_PREFIX)  # fmt: skip
        try:
            made = wiring.make_host_side(
                host, peer_veth(ep_id), endpoint.ips, endpoint.extra_ips,
                config=self.config, alias=alias,
            )  # fmt: skip
        except WiringError as e:
            raise DriverError(f"Join {ep_id[:12]}: {e}") from None
        if endpoint.extra_ips or any(":" in ip for ip in endpoint.ips):
            args = (ep_id, sandbox, made.mac, endpoint, self.extra_ips_timeout,
                    partial(self._share_when_up, ep_id))  # fmt: skip
            threading.Thread(target=docker_sandbox.settle, args=args, daemon=True).start()
        first = not any(e.sandbox == sandbox for e in self.endpoints.values() if sandbox)
        self.endpoints[ep_id] = replace(endpoint, sandbox=sandbox)
        self.state.save(self.endpoints)
        log.info("endpoint_joined endpoint=%s host_veth=%s gateway=%s", ep_id[:12], host, first)
        return render_join(endpoint, gateway=first)

    def leave(self, body: Mapping[str, Any]) -> dict[str, Any]:
        ep_id = str(body["EndpointID"])
        endpoint = self.endpoints.get(ep_id)
        if endpoint is not None and endpoint.sandbox:
            try:
                docker_sandbox.set_addresses("del", endpoint.sandbox, endpoint)
            except (NetlinkError, OSError) as e:  # the container is going away anyway
                log.warning("leave_cleanup_failed endpoint=%s error=%s", ep_id[:12], e)
            self.endpoints[ep_id] = replace(endpoint, sandbox="")
            self.state.save(self.endpoints)
        return {}

    def delete_endpoint(self, body: Mapping[str, Any]) -> dict[str, Any]:
        ep_id = str(body["EndpointID"])
        removed = self._delete_veth(host_veth(ep_id, self.config))
        self.endpoints.pop(ep_id, None)
        self.created_here.discard(ep_id)
        self.state.save(self.endpoints)
        log.info("endpoint_deleted endpoint=%s veth_removed=%s", ep_id[:12], removed)
        return {}

    def reconcile(self) -> list[str]:
        """Adopt the veths of endpoints Docker still has, delete the others; return those.

        Raises DockerUnavailable (and deletes nothing) when dockerd cannot be asked.
        """
        if self.docker is None:
            raise DockerUnavailable("no --docker-host to ask")
        before = _docker_veths(self.config)
        view = self.docker.endpoints(net for net, _ in before.values())
        removed = []
        with self.lock:
            for host, (net, ep_id) in _docker_veths(self.config).items():
                if ep_id in self.created_here or ep_id in view.get(net, {ep_id}):
                    continue  # ours now, or not seen by the query: next time
                if before.get(host) == (net, ep_id) and self._delete_veth(host):
                    removed.append(host)
                    self.endpoints.pop(ep_id, None)
                    log.info("orphan_removed host_veth=%s endpoint=%s", host, ep_id[:12])
            self._forget_gone(view)
            self.state.save(self.endpoints)
            self._repair_shared()
        return removed

    def _share_when_up(self, ep_id: str) -> None:
        """Route the endpoint's extra IPs through its veth once that has carrier (a
        nexthop needs it): libnetwork brings the container end up after Join."""
        host = host_veth(ep_id, self.config)
        deadline = time.monotonic() + self.extra_ips_timeout
        while time.monotonic() < deadline:
            with self.lock:
                endpoint = self.endpoints.get(ep_id)
                if endpoint is None or not endpoint.extra_ips:
                    return  # deleted meanwhile, or nothing to share
                if wiring.has_carrier(host):
                    try:
                        wiring.share_extra_ips(host, endpoint.extra_ips, self.config)
                    except WiringError as e:
                        log.error("extra_ips_not_routed endpoint=%s error=%s", ep_id[:12], e)
                        return
                    log.info("extra_ips_routed endpoint=%s host_veth=%s ips=%s", ep_id[:12],
                             host, ",".join(endpoint.extra_ips))  # fmt: skip
                    return
            time.sleep(0.05)  # polling the veth: nothing tells us when libnetwork is done
        log.error("extra_ips_not_routed endpoint=%s: %s never got carrier", ep_id[:12], host)

    def _repair_shared(self) -> None:
        """Put joined endpoints with carrier back into shared routes the kernel took them
        out of (it drops a nexthop whose veth lost carrier, and never re-adds it)."""
        for ep_id, endpoint in self.endpoints.items():
            host = host_veth(ep_id, self.config)
            if not endpoint.extra_ips or not endpoint.sandbox or not wiring.has_carrier(host):
                continue
            extra = [scheme.parse_ip(ip) for ip in endpoint.extra_ips]
            missing = shared_routes.unserved(extra, host, self.config)  # not out for health
            if missing:
                try:
                    wiring.share_extra_ips(host, missing, self.config)
                    log.info("shared_route_repaired endpoint=%s ips=%s", ep_id[:12],
                             ",".join(map(str, missing)))  # fmt: skip
                except WiringError as e:
                    log.error("shared_route_not_repaired endpoint=%s error=%s", ep_id[:12], e)

    def _delete_veth(self, host: str) -> bool:
        with IPRoute() as ipr:
            return attachments.delete_attachment(ipr, host, self.config)

    def _forget_gone(self, view: Mapping[str, set[str]]) -> None:
        """Drop state entries whose veth is gone and that Docker no longer reports."""
        live = {ep for _, ep in _docker_veths(self.config).values()}
        known = set().union(*view.values()) if view else set()
        for ep_id in list(self.endpoints):
            if ep_id not in live and ep_id not in known and ep_id not in self.created_here:
                del self.endpoints[ep_id]


def _docker_veths(config: WiringConfig) -> dict[str, tuple[str, str]]:
    """host veth -> (network id, endpoint id) for every veth of this driver here."""
    return {
        host: (net.removeprefix(ALIAS_NET_PREFIX), ep_id)
        for host, (net, ep_id, _) in attachments.list_attachments(config).items()
        if net.startswith(ALIAS_NET_PREFIX)
    }


class _Handler(BaseHTTPRequestHandler):
    server: _PluginServer

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        method = self.path.lstrip("/")
        try:
            body: Any = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            body = f"undecodable request: {e}"
        if isinstance(body, dict):
            status, reply = self.server.driver.call(method, body)
        else:
            problem = body if isinstance(body, str) else "request is not a JSON object"
            status, reply = 400, {"Err": f"{method}: {problem}"}
        out = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", MIME)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http " + format, *args)


class _PluginServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, driver: RoutedDriver) -> None:
        self.driver = driver
        super().__init__(str(path), _Handler)


def _claim_socket(path: Path) -> None:
    """Remove a stale socket left by a dead instance; refuse if one is still serving it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise DriverError(f"{path} is served by another running instance")


def _resync_loop(driver: RoutedDriver, interval: float, stop: threading.Event) -> None:
    """Reconcile now and every interval; retry every second while dockerd can't be asked."""
    while not stop.is_set():
        try:
            removed = driver.reconcile()
        except (DockerUnavailable, NetlinkError, OSError, ValueError) as e:
            log.warning("resync_deferred reason=%s", e)
            stop.wait(1.0)
            continue
        log.info("resync_done adopted=%d removed=%s", len(driver.endpoints),
                 ",".join(removed) or "-")  # fmt: skip
        stop.wait(interval)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="announcer-docker-routed", description=__doc__.split("\n")[0])
    p.add_argument(
        "--socket",
        type=Path,
        default=DEFAULT_SOCKET,
        help="unix socket to serve; its name (without .sock) is the driver name",
    )
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    p.add_argument(
        "--docker-host",
        default=DEFAULT_DOCKER_HOST,
        help="dockerd's API socket (unix://...), asked which endpoints exist",
    )
    p.add_argument("--resync-interval", type=float, default=300.0, help="seconds")
    p.add_argument("--host-veth-prefix", default="vethr")
    p.add_argument("--mtu", type=int, default=1500)
    p.add_argument("--table", type=int, default=scheme.MAIN_TABLE)
    p.add_argument("--route-protocol", type=int, default=scheme.DEFAULT_ROUTE_PROTOCOL)
    p.add_argument(
        "--lock-file",
        default=scheme.DEFAULT_LOCK_FILE,
        help="flock shared with the CNI plugin around shared (anycast) routes",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Console script entry point; like cli.py it may exit with a sysexits code."""
    args = _parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="announcer-docker-routed %(levelname)s %(message)s")  # fmt: skip
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        config = WiringConfig(args.host_veth_prefix, args.mtu, args.table, args.route_protocol,
                              args.lock_file)  # fmt: skip
    except ValueError as e:
        log.error("config_invalid error=%s", e)
        sys.exit(EX_CONFIG)  # an entry point may exit: there is no caller to return to
    name = args.socket.name.removesuffix(".sock")
    driver = RoutedDriver(StateFile(args.state_dir / f"{name}.json"), config,
                          DockerView(args.docker_host))  # fmt: skip
    try:
        _claim_socket(args.socket)
        server = _PluginServer(args.socket, driver)
    except (DriverError, OSError) as e:
        log.error("socket_unavailable path=%s error=%s", args.socket, e)
        sys.exit(EX_USAGE)  # as above
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    threading.Thread(target=_resync_loop, args=(driver, args.resync_interval, stop),
                     daemon=True).start()  # fmt: skip
    log.info("driver_started name=%s socket=%s endpoints=%d", name, args.socket,
             len(driver.endpoints))  # fmt: skip
    try:
        server.serve_forever()
    finally:
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            args.socket.unlink()
        log.info("driver_stopped name=%s", name)
