"""The Docker remote network driver against a real dockerd, both inside one test namespace.

The namespace is the "host": dockerd runs there (tests/dockerd.py), the driver runs there
(``ip netns exec``) serving a uniquely named socket in /run/docker/plugins, and containers
get their veths and host routes there. Nothing has a route out of it.
"""

from __future__ import annotations

import http.client
import json
import secrets
import signal
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from announcer.cni import shared_routes
from announcer.cni.attachments import render_alias
from announcer.cni.libnetwork import host_veth
from announcer.cni.scheme import WiringConfig, host_ifname
from tests import dockerd as dockerd_harness
from tests.cni.conftest import (
    LOCK_FILE,
    Runtime,
    ip_json,
    links,
    netconf,
    our_routes,
    route_monitor,
    static_ipam,
)
from tests.cni.test_health_verdicts import in_netns
from tests.dockerd import Dockerd, dockerd
from tests.netlab import REPO, netns, poll, sh

pytestmark = [pytest.mark.netns, pytest.mark.docker, pytest.mark.slow]

DRIVER = REPO / ".venv" / "bin" / "announcer-docker-routed"
PLUGIN_DIR = Path("/run/docker/plugins")
SUBNET = "10.30.0.0/24"


class _Conn(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self._path))


@dataclass
class Driver:
    """announcer-docker-routed in the namespace, on a socket named for this run."""

    ns: str
    docker_host: str
    workdir: Path
    name: str = field(default_factory=lambda: f"aa-routed-{secrets.token_hex(4)}")
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def socket(self) -> Path:
        return PLUGIN_DIR / f"{self.name}.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / "driver.log"

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        # nsenter, not `ip netns exec`: that gives the driver a mount namespace of its own,
        # which never sees the bind mount dockerd later puts on a SandboxKey path.
        argv = ["nsenter", f"--net=/run/netns/{self.ns}", str(DRIVER), "--socket", str(self.socket),
                "--state-dir", str(self.workdir / "state"), "--docker-host", self.docker_host,
                "--resync-interval", "3600", "--lock-file", str(LOCK_FILE), "-v"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        poll(self._answers, 20, f"driver {self.name} answering ({self.log_path})")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"driver exited {self.proc.returncode}:\n{self.log()}")
        try:
            return self.post("Plugin.Activate")[0] == 200
        except OSError:
            return False

    def post(self, method: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        conn = _Conn(self.socket)
        try:
            data = raw if raw is not None else json.dumps(body or {}).encode()
            conn.request("POST", f"/{method}", body=data,
                         headers={"Content-Type": "application/vnd.docker.plugins.v1.2+json"})  # fmt: skip
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Host:
    ns: str
    docker: Dockerd
    driver: Driver
    network: str
    network_id: str

    def endpoint_id(self, container: str, network: str = "") -> str:
        nets = json.loads(self.docker.cli("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                                          container).stdout)  # fmt: skip
        return str(nets[network or self.network]["EndpointID"])

    def veth(self, container: str, network: str = "") -> str:
        return host_veth(self.endpoint_id(container, network), WiringConfig())

    def host_routes(self, family: int = 4) -> dict[str, str]:
        """dst -> devs ("a,b", sorted) of the host routes with our protocol (180)."""
        return {dst: ",".join(sorted(devs)) for dst, devs in our_routes(self.ns, family).items()}

    def wait_routes(self, expected: dict[str, str], family: int = 4) -> None:
        """Extra IPs are routed once the container end is up, just after `docker run`."""
        poll(lambda: self.host_routes(family) == expected, 20,
             f"host routes {expected} (now {self.host_routes(family)})")  # fmt: skip

    def run(self, name: str, network_arg: str) -> str:
        self.docker.cli("run", "-d", "--name", name, "--network", network_arg,
                        self.docker.image, "sleep", "600")  # fmt: skip
        return name


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    reason = dockerd_harness.missing()
    if reason:
        pytest.skip(reason)
    if not DRIVER.exists():
        pytest.skip(f"{DRIVER} is missing: run .venv/bin/pip install -e '.[dev,lab]'")
    workdir = tmp_path_factory.mktemp("docker_driver")
    with netns("dock") as ns, dockerd(ns, workdir / "docker") as docker:
        driver = Driver(ns, docker.host, workdir)
        driver.start()
        try:
            network = f"routed-{secrets.token_hex(3)}"
            netid = docker.cli("network", "create", "-d", driver.name, "--subnet", SUBNET,
                               network).stdout.strip()  # fmt: skip
            yield Host(ns, docker, driver, network, netid)
        finally:
            docker.cli("rm", "-f", *docker.cli("ps", "-aq").stdout.split(), check=False)
            driver.stop()
            driver.socket.unlink(missing_ok=True)


def test_protocol_answers(host: Host) -> None:
    d = host.driver
    assert d.post("Plugin.Activate") == (200, {"Implements": ["NetworkDriver"]})
    assert d.post("NetworkDriver.GetCapabilities") == (
        200, {"Scope": "local", "ConnectivityScope": "local"})  # fmt: skip
    for method in ("DiscoverNew", "DiscoverDelete", "ProgramExternalConnectivity",
                   "RevokeExternalConnectivity"):  # fmt: skip
        assert d.post(f"NetworkDriver.{method}", {"NetworkID": "n", "EndpointID": "e"}) == (200, {})
    status, reply = d.post("NetworkDriver.AllocateNetwork", {"NetworkID": "n"})
    assert status == 200
    assert "local scope" in reply["Err"]
    assert d.post("NetworkDriver.NoSuchThing")[0] == 404
    assert d.post("NetworkDriver.CreateNetwork", raw=b"{nope")[0] == 400
    status, reply = d.post("NetworkDriver.CreateEndpoint", {
        "NetworkID": "n", "EndpointID": "e", "Interface": {"Address": "10.30.1.1/24"},
        "Options": {"anycast.ip": "10.9.9.1"}})  # fmt: skip
    assert "anycast.ip" in reply["Err"]

    # What `docker network create -o` sends is refused by name, as the CLI shows it.
    refused = host.docker.cli("network", "create", "-d", d.name, "-o", "mtu=9000",
                              "--subnet", "10.31.0.0/24", "bad-opts", check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "unknown network option(s) mtu" in refused.stderr


def test_run_wires_routes_and_containers_reach_each_other(host: Host) -> None:
    docker = host.docker
    c1 = host.run("c1", f"name={host.network},ip=10.30.0.5")
    c2 = host.run("c2", f"name={host.network},ip=10.30.0.6,driver-opt=anycast.ips=10.9.9.9")
    v1, v2 = host.veth(c1), host.veth(c2)

    host.wait_routes({"10.30.0.5": v1, "10.30.0.6": v2, "10.9.9.9": v2})
    hl = links(host.ns)
    assert hl[v1]["operstate"] == "UP"
    addrs = ip_json(host.ns, "-4", "addr", "show", "dev", v1)[0]["addr_info"]
    assert [(a["local"], a["prefixlen"], a["scope"]) for a in addrs] == [
        ("169.254.1.1", 32, "link")
    ]
    assert sh(host.ns, "sysctl", "-n", f"net.ipv4.conf.{v1}.proxy_arp").stdout.strip() == "1"

    # The container end: moved in and renamed by libnetwork, our MAC, routed via 169.254.1.1.
    croutes = docker.cli("exec", c1, "ip", "route").stdout
    assert "default via 169.254.1.1 dev eth0" in croutes
    assert "169.254.1.1 dev eth0 scope link" in croutes
    assert "02:42:0a:1e:00:05" in docker.cli("exec", c1, "ip", "link", "show", "eth0").stdout
    poll(lambda: "inet 10.9.9.9/32" in docker.cli("exec", c2, "ip", "addr", "show", "lo").stdout,
         10, "anycast IP on c2's lo")  # fmt: skip

    # Through the host: to c2's primary and to its anycast IP (on c2's lo).
    docker.cli("exec", c1, "ping", "-c1", "-W2", "10.30.0.6")
    docker.cli("exec", c1, "ping", "-c1", "-W2", "10.9.9.9")
    docker.cli("exec", c2, "ping", "-c1", "-W2", "10.30.0.5")

    # An extra IP is shared: c3's veth joins 10.9.9.9's route, and leaves it at `docker rm`.
    c3 = host.run("c3", f"name={host.network},ip=10.30.0.7,"
                  "driver-opt=anycast.ips=10.9.9.9;10.30.0.200")  # fmt: skip
    v3 = host.veth(c3)
    host.wait_routes({"10.30.0.5": v1, "10.30.0.6": v2, "10.30.0.7": v3,
                      "10.9.9.9": ",".join(sorted((v2, v3))), "10.30.0.200": v3})  # fmt: skip
    poll(lambda: "inet 10.9.9.9/32" in docker.cli("exec", c3, "ip", "addr", "show", "lo").stdout,
         10, "anycast IP on c3's lo")  # fmt: skip
    docker.cli("exec", c1, "ping", "-c1", "-W2", "10.9.9.9")

    # Refused, naming the IP and who has it, nothing leaking: an extra IP that is someone's
    # primary, a primary IP that is someone's extra.
    before = set(links(host.ns))
    for name, net, ip, owner in (("c4", "ip=10.30.0.8,driver-opt=anycast.ips=10.30.0.5",
                                  "10.30.0.5", v1),
                                 ("c5", "ip=10.30.0.200", "10.30.0.200", v3)):  # fmt: skip
        dup = docker.cli("run", "-d", "--name", name, "--network", f"name={host.network},{net}",
                         docker.image, "sleep", "600", check=False)  # fmt: skip
        assert dup.returncode != 0
        assert f"address {ip} is already routed on this host via {owner}" in dup.stderr
        assert set(links(host.ns)) == before
        docker.cli("rm", "-f", name)

    # docker rm -f: the veth and every host route through it go; a shared one stays for c3.
    docker.cli("rm", "-f", c2)
    assert host.host_routes() == {"10.30.0.5": v1, "10.30.0.7": v3, "10.9.9.9": v3,
                                  "10.30.0.200": v3}  # fmt: skip
    assert v2 not in links(host.ns)
    docker.cli("rm", "-f", c1, c3)
    assert host.host_routes() == {}


def _orphan(ns: str, name: str, network_id: str, endpoint_id: str, ip: str) -> None:
    """A veth as a driver would have left it for an endpoint Docker no longer has."""
    alias = render_alias(f"docker:{network_id}", endpoint_id, "eth")
    sh(ns, "ip", "link", "add", name, "type", "veth", "peer", "name", f"p{name}"[:15])
    sh(ns, "ip", "link", "set", name, "alias", alias, "up")
    sh(ns, "ip", "route", "add", f"{ip}/32", "dev", name, "proto", "180")


def test_restart_adopts_running_endpoints_and_removes_orphans(host: Host, tmp_path: Path) -> None:
    docker, driver = host.docker, host.driver
    c1 = host.run("r1", f"name={host.network},ip=10.30.0.8,driver-opt=anycast.ips=10.9.9.8")
    v1, ep1 = host.veth(c1), host.endpoint_id(c1)
    # One orphan of a network Docker never had, one of a deleted endpoint of a live network,
    # and a veth of someone else's (no alias of ours) that must be left alone.
    _orphan(host.ns, "vethrorphan1", "f" * 64, "e" * 64, "10.30.9.1")
    _orphan(host.ns, "vethrorphan2", host.network_id, "d" * 64, "10.30.9.2")
    sh(host.ns, "ip", "link", "add", "vethrforeign", "type", "veth", "peer", "name", "pforeign")

    with route_monitor(host.ns, tmp_path / "monitor.log") as monitor:
        resyncs = driver.log().count("resync_done")
        driver.stop(signal.SIGKILL)  # a crash: nothing gets to clean up
        driver.start()
        poll(lambda: not {"vethrorphan1", "vethrorphan2"} & set(links(host.ns)), 20,
             "orphan veths removed")  # fmt: skip
        poll(lambda: driver.log().count("resync_done") > resyncs, 20, "first resync")
        assert monitor.deleted("10.30.0.8") == []
        assert monitor.deleted("10.9.9.8") == []
    host.wait_routes({"10.30.0.8": v1, "10.9.9.8": v1})
    assert "vethrforeign" in links(host.ns)
    _status, info = driver.post("NetworkDriver.EndpointOperInfo",
                               {"NetworkID": host.network_id, "EndpointID": ep1})  # fmt: skip
    assert info == {"Value": {"hostInterface": v1, "extraIPs": "10.9.9.8"}}
    docker.cli("exec", c1, "ping", "-c1", "-W2", "169.254.1.1")

    # The adopted endpoint is removed as usual, extras off lo at Leave, veth at DeleteEndpoint.
    docker.cli("rm", "-f", c1)
    assert host.host_routes() == {}
    assert v1 not in links(host.ns)
    sh(host.ns, "ip", "link", "del", "vethrforeign")


def test_connect_with_driver_opt_and_disconnect(host: Host) -> None:
    """`docker network connect --driver-opt`: extras arrive, and leave again on disconnect."""
    docker = host.docker
    other = f"{host.network}-b"
    docker.cli("network", "create", "-d", host.driver.name, "--subnet", "10.32.0.0/24", other)
    docker.cli("run", "-d", "--name", "k1", "--network", other, "--ip", "10.32.0.5",
               docker.image, "sleep", "600")  # fmt: skip
    first = host.host_routes()
    docker.cli("network", "connect", "--ip", "10.30.0.9", "--driver-opt",
               "anycast.ips=10.9.9.10;10.9.9.11", host.network, "k1")  # fmt: skip
    veth = host.veth("k1")
    host.wait_routes({**first, "10.30.0.9": veth, "10.9.9.10": veth, "10.9.9.11": veth})
    poll(lambda: "10.9.9.11/32" in docker.cli("exec", "k1", "ip", "addr", "show", "lo").stdout,
         10, "anycast IPs on k1's lo")  # fmt: skip

    docker.cli("network", "disconnect", host.network, "k1")
    assert host.host_routes() == first
    assert veth not in links(host.ns)
    lo = docker.cli("exec", "k1", "ip", "addr", "show", "lo").stdout
    assert "10.9.9.10" not in lo
    assert "10.9.9.11" not in lo
    docker.cli("rm", "-f", "k1")
    docker.cli("network", "rm", other)
    assert host.host_routes() == {}


def test_harness_restarts_dockerd(tmp_path: Path) -> None:
    """tests/dockerd.py: restart keeps the image; everything it started goes at the end."""
    reason = dockerd_harness.missing()
    if reason:
        pytest.skip(reason)
    with netns("dockh") as ns:
        with dockerd(ns, tmp_path / "d") as docker:
            first = docker.pid
            docker.restart()
            assert docker.pid != first
            assert (
                docker.image in docker.cli("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
            )
        assert not (tmp_path / "d").exists()
        assert sh(None, "ip", "netns", "pids", ns).stdout.split() == []


def test_nothing_deleted_while_dockerd_cannot_be_asked(host: Host, tmp_path: Path) -> None:
    """A driver that cannot reach dockerd keeps every veth, orphan or not, and says why."""
    _orphan(host.ns, "vethrorphan3", "f" * 64, "c" * 64, "10.30.9.3")
    blind = Driver(host.ns, f"unix://{tmp_path}/no-dockerd.sock", tmp_path)
    blind.start()
    try:
        poll(lambda: blind.log().count("resync_deferred") >= 2, 10, "two deferred resyncs")
        assert "vethrorphan3" in links(host.ns)
        assert host.host_routes()["10.30.9.3"] == "vethrorphan3"
    finally:
        blind.stop()
        blind.socket.unlink(missing_ok=True)
        sh(host.ns, "ip", "link", "del", "vethrorphan3")


def test_shared_anycast_ip_in_parallel_and_with_cni_containers(host: Host, cni_ready: None) -> None:
    """Docker containers started and removed at once, and a CNI container of the same host,
    share one anycast IP: its route's nexthops are exactly their veths (one lock file)."""
    docker, names = host.docker, [f"p{i}" for i in range(4)]
    net = f"name={host.network},driver-opt=anycast.ips=10.9.9.20"
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda n: host.run(n, net), names))
    veths = {n: host.veth(n) for n in names}
    with netns("cnic") as ctr:
        conf = netconf(static_ipam("10.33.0.5/24"), args={"cni": {"extraIPs": ["10.9.9.20"]}})
        assert Runtime(host.ns).add(conf, "cni-1", ctr).ok
        cni_veth = host_ifname("cni-1", "eth0")
        host.wait_routes({**{ip: v for ip, v in host.host_routes().items() if ip != "10.9.9.20"},
                          "10.9.9.20": ",".join(sorted([*veths.values(), cni_veth]))})  # fmt: skip
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda n: docker.cli("rm", "-f", n), names[:2]))
        assert host.host_routes()["10.9.9.20"] == ",".join(
            sorted([veths["p2"], veths["p3"], cni_veth])
        )
        docker.cli("rm", "-f", *names[2:])
        assert host.host_routes()["10.9.9.20"] == cni_veth
        assert Runtime(host.ns).delete(conf, "cni-1", ctr).ok
    assert "10.9.9.20" not in host.host_routes()


def test_resync_puts_a_dropped_member_back(host: Host) -> None:
    """The kernel drops a veth's nexthop for good when the veth loses carrier; the driver's
    resync (here: at its restart) routes the extra IP through it again."""
    c1 = host.run("d1", f"name={host.network},driver-opt=anycast.ips=10.9.9.21")
    c2 = host.run("d2", f"name={host.network},driver-opt=anycast.ips=10.9.9.21")
    v1, v2 = host.veth(c1), host.veth(c2)
    both = ",".join(sorted((v1, v2)))
    poll(lambda: host.host_routes().get("10.9.9.21") == both, 20, "both in 10.9.9.21's route")
    pid = host.docker.cli("inspect", "-f", "{{.State.Pid}}", c1).stdout.strip()
    for state in ("down", "up"):  # from outside: the container has no CAP_NET_ADMIN
        sh(None, "nsenter", f"--net=/proc/{pid}/ns/net", "ip", "link", "set", "eth0", state)
    poll(lambda: host.host_routes().get("10.9.9.21") == v2, 10, "the kernel dropping d1")
    host.driver.stop()
    host.driver.start()
    poll(lambda: host.host_routes().get("10.9.9.21") == both, 20, "d1 back after the resync")
    assert "shared_route_repaired" in host.driver.log()
    host.docker.cli("rm", "-f", c1, c2)


def test_a_member_out_for_health_stays_out_at_resync(host: Host) -> None:
    """The announcer's verdict takes d1 out of 10.9.9.22's group: the driver's resync (at
    its restart) sees a holder out on purpose, not a dropped one, and leaves it out."""
    c1 = host.run("h1", f"name={host.network},driver-opt=anycast.ips=10.9.9.22")
    c2 = host.run("h2", f"name={host.network},driver-opt=anycast.ips=10.9.9.22")
    v1, v2 = host.veth(c1), host.veth(c2)
    both = ",".join(sorted((v1, v2)))
    poll(lambda: host.host_routes().get("10.9.9.22") == both, 20, "both in 10.9.9.22's route")
    cfg = WiringConfig(lock_file=str(LOCK_FILE))
    assert in_netns(host.ns, shared_routes.set_unhealthy, {v1}, cfg)
    assert host.host_routes()["10.9.9.22"] == v2
    before = len(host.driver.log())  # one driver log for the module's tests
    host.driver.stop()
    host.driver.start()
    poll(lambda: "resync_done" in host.driver.log()[before:], 20, "the restart's resync")
    assert host.host_routes()["10.9.9.22"] == v2
    assert "shared_route_repaired" not in host.driver.log()[before:]
    assert in_netns(host.ns, shared_routes.set_unhealthy, set(), cfg)
    assert host.host_routes()["10.9.9.22"] == both
    host.docker.cli("rm", "-f", c1, c2)


def test_ipv6_network_ip6_and_v6_anycast(host: Host) -> None:
    """A dual-stack network (--ipv6): --ip6 primaries routed as /128, v6 anycast IPs on lo
    and shared, the container's default route via fe80::1, reachable across the host."""
    docker, name = host.docker, f"{host.network}-v6"
    sh(host.ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")  # docs/routed.md: the host's
    docker.cli("network", "create", "-d", host.driver.name, "--ipv6", "--subnet", "10.34.0.0/24",
               "--subnet", "fd00:34::/64", name)  # fmt: skip
    try:
        c1 = host.run("v1", f"name={name},ip=10.34.0.5,ip6=fd00:34::5")
        anycast = "driver-opt=anycast.ips=fd00:9::34;10.9.9.34"
        c2 = host.run("v2", f"name={name},ip=10.34.0.6,ip6=fd00:34::6,{anycast}")
        c3 = host.run("v3", f"name={name},ip=10.34.0.7,ip6=fd00:34::7,{anycast}")
        v1, v2, v3 = (host.veth(c, name) for c in (c1, c2, c3))
        shared = ",".join(sorted((v2, v3)))
        host.wait_routes({"fd00:34::5": v1, "fd00:34::6": v2, "fd00:34::7": v3,
                          "fd00:9::34": shared}, family=6)  # fmt: skip
        host.wait_routes({"10.34.0.5": v1, "10.34.0.6": v2, "10.34.0.7": v3, "10.9.9.34": shared})
        host_addrs = ip_json(host.ns, "-6", "addr", "show", "dev", v1)[0]["addr_info"]
        assert ("fe80::1", 64) in {(a["local"], a["prefixlen"]) for a in host_addrs}

        assert "default via fe80::1 dev eth0" in docker.cli("exec", c1, "ip", "-6", "route").stdout
        assert "inet6 fd00:34::5/64" in docker.cli("exec", c1, "ip", "addr", "show", "eth0").stdout
        # v6 extras on eth0 (neighbour discovery answers only there), v4 ones on lo.
        poll(lambda: "inet6 fd00:9::34/128" in docker.cli("exec", c2, "ip", "addr", "show", "eth0").stdout,
             10, "v6 anycast IP on v2's eth0")  # fmt: skip
        assert "inet 10.9.9.34/32" in docker.cli("exec", c2, "ip", "addr", "show", "lo").stdout
        # libnetwork's fd00:34::/64 on-link route is gone: a neighbour is reached via fe80::1.
        poll(lambda: "fd00:34::/64" not in docker.cli("exec", c1, "ip", "-6", "route").stdout,
             10, "the pool's on-link route dropped")  # fmt: skip
        for dst in ("fd00:34::6", "fd00:9::34", "10.9.9.34"):
            poll(lambda d=dst: docker.cli("exec", c1, "ping", "-c1", "-W1", d,
                                          check=False).returncode == 0, 15, f"ping {dst} from v1")  # fmt: skip

        docker.cli("rm", "-f", c2)
        assert host.host_routes(6) == {"fd00:34::5": v1, "fd00:34::7": v3, "fd00:9::34": v3}
        docker.cli("exec", c1, "ping", "-c1", "-W2", "fd00:9::34")  # v3 alone serves it now
        docker.cli("rm", "-f", c1, c3)
        assert host.host_routes(6) == {}
    finally:
        docker.cli("rm", "-f", "v1", "v2", "v3", check=False)
        docker.cli("network", "rm", name, check=False)
