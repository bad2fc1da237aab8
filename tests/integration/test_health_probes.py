"""Health probes against real services, over a routed /32 and /128, in namespaces we create.

Two namespaces: "host" (where the monitor runs, as the announcer would) and "ctr" (a routed
container: its address is a /32 on its veth, the host has a host route to it). Services run
in ctr; the monitor runs in host as a subprocess (this file, ``python -m ... monitor``) and
reports every HealthObserved as a JSON line. Nothing is probed outside these namespaces.

Timings are measured and printed (run with ``-s``), never asserted: the machine is shared.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import resource
import selectors
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import IO, Any

import pytest

from announcer.events import HealthObserved
from announcer.health.monitor import HealthMonitor, ScheduleStats
from announcer.health.probes import run_probe
from announcer.spec.checks import CheckSpec, CheckTarget, parse_check
from tests.netlab import REPO, netns, netns_argv, poll, session_pids, sh, veth_pair

pytestmark = [pytest.mark.netns]

MODULE = "tests.integration.test_health_probes"
CTR_V4 = "10.77.0.5"
CTR_V6 = "fd00:77::5"
GATEWAY_V4 = "169.254.1.1"  # the host end of the routed veth, as in the routed CNI wiring


# --------------------------------------------------------------------------- the lab


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[str, str]]:
    """(host, ctr): ctr reachable from host only through the /32 and /128 host routes."""
    with netns("hchost") as host, netns("hcctr") as ctr:
        veth_pair(host, "vethc", ctr, "eth0")
        sh(ctr, "ip", "addr", "add", f"{CTR_V4}/32", "dev", "eth0")
        sh(ctr, "ip", "-6", "addr", "add", f"{CTR_V6}/128", "dev", "eth0", "nodad")
        sh(ctr, "ip", "route", "add", f"{GATEWAY_V4}/32", "dev", "eth0")
        sh(ctr, "ip", "route", "add", "default", "via", GATEWAY_V4, "dev", "eth0")
        sh(host, "ip", "addr", "add", f"{GATEWAY_V4}/32", "dev", "vethc")
        sh(host, "ip", "route", "add", f"{CTR_V4}/32", "dev", "vethc")
        sh(host, "ip", "-6", "addr", "add", "fd00:77::1/128", "dev", "vethc", "nodad")
        sh(host, "ip", "-6", "route", "add", f"{CTR_V6}/128", "dev", "vethc")
        sh(ctr, "ip", "-6", "route", "add", "fd00:77::1/128", "dev", "eth0")
        sh(ctr, "ip", "-6", "route", "add", "default", "via", "fd00:77::1", "dev", "eth0")
        yield host, ctr


class Server:
    """A service in ctr (this module's ``serve-*`` commands); ready once it printed 'ready'."""

    def __init__(self, ns: str, *args: str) -> None:
        argv = netns_argv(ns, (sys.executable, "-m", MODULE, *args))
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"server {args} did not start: {line!r}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


class Monitor:
    """The HealthMonitor in the host namespace; its events are collected as they come."""

    def __init__(self, ns: str) -> None:
        argv = netns_argv(ns, (sys.executable, "-m", MODULE, "monitor"))
        self.proc = subprocess.Popen(
            argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.events: list[dict[str, Any]] = []
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            message = json.loads(line)
            if "key" in message:
                self.events.append(message)
            self.lines.put(message)

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def check(self, checks: dict[str, tuple[str, str] | tuple[str, str, str]]) -> None:
        """Set the targets: name -> (address, check text[, netns])."""
        targets = [
            {"key": name, "address": a, "check": c, "netns": n[0] if n else None}
            for name, (a, c, *n) in checks.items()
        ]
        self.send(op="targets", targets=targets)

    def verdict(
        self, name: str, healthy: bool, after: int = 0, timeout: float = 15
    ) -> dict[str, Any]:
        """Wait for the first event for name, at or after events[after], with that verdict."""

        def found() -> dict[str, Any] | None:
            return next(
                (e for e in self.events[after:] if e["key"] == name and e["healthy"] is healthy),
                None,
            )

        return poll(found, timeout, f"{name} healthy={healthy}")

    def stop(self) -> dict[str, Any]:
        self.send(op="stop")
        self.proc.wait(10)
        final: dict[str, Any] = {}
        while not self.lines.empty():
            final = self.lines.get()
        return final


@pytest.fixture
def monitor(lab: tuple[str, str]) -> Iterator[Monitor]:
    running = Monitor(lab[0])
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(5)


# --------------------------------------------------------------------------- tests


def test_tcp_up_down_up_v4_defaults_and_v6_fast(lab: tuple[str, str], monitor: Monitor) -> None:
    _, ctr = lab
    v4 = Server(ctr, "serve-tcp", CTR_V4, "8080", "1")
    v6 = Server(ctr, "serve-tcp", CTR_V6, "8080", "1")
    start = time.monotonic()
    monitor.check({"v4": (CTR_V4, "tcp:8080"), "v6": (CTR_V6, "tcp:8080 interval=0.2")})
    up4, up6 = monitor.verdict("v4", True), monitor.verdict("v6", True)
    assert up4["detail"] == f"tcp {CTR_V4}:8080 connected (2/2)"
    assert up6["detail"] == f"tcp [{CTR_V6}]:8080 connected (2/2)"
    first_up = {"v4": up4["t"] - start, "v6": up6["t"] - start}

    mark = len(monitor.events)
    stopped = time.monotonic()
    v4.stop()
    v6.stop()
    down4, down6 = monitor.verdict("v4", False, mark), monitor.verdict("v6", False, mark)
    assert down4["detail"] == f"tcp {CTR_V4}:8080 connect refused (2/2)"
    assert down6["detail"] == f"tcp [{CTR_V6}]:8080 connect refused (2/2)"

    mark = len(monitor.events)
    restarted = time.monotonic()
    Server(ctr, "serve-tcp", CTR_V4, "8080", "1")
    Server(ctr, "serve-tcp", CTR_V6, "8080", "1")
    again4, again6 = monitor.verdict("v4", True, mark), monitor.verdict("v6", True, mark)
    print(
        "\nTCP (interval/rise/fall) first-up, stop->withdraw, restart->announce: "
        f"v4 (1s/2/2) {first_up['v4']:.2f}s {down4['t'] - stopped:.2f}s {again4['t'] - restarted:.2f}s; "
        f"v6 (0.2s/2/2) {first_up['v6']:.2f}s {down6['t'] - stopped:.2f}s {again6['t'] - restarted:.2f}s"
    )
    assert [e["healthy"] for e in monitor.events if e["key"] == "v4"] == [True, False, True]


def test_http_status_and_https(lab: tuple[str, str], monitor: Monitor, tmp_path: Path) -> None:
    _, ctr = lab
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    sh(
        None,
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    )
    Server(ctr, "serve-http", CTR_V4, "8081", "200")
    Server(ctr, "serve-http", CTR_V4, "8082", "503")
    Server(ctr, "serve-http", CTR_V6, "8443", "204", str(cert), str(key))
    Server(ctr, "serve-tcp", CTR_V4, "8083", "1")  # accepts and closes: not HTTP
    fast = "interval=0.2 fall=1 rise=1"
    monitor.check(
        {
            "ok": (CTR_V4, f"http:8081/healthz?deep=1 {fast}"),
            "503": (CTR_V4, f"http:8082/healthz {fast}"),
            "503-wanted": (CTR_V4, f"http:8082/ status=503 {fast}"),
            "https": (CTR_V6, f"https:8443/ready status=204 {fast}"),
            "not-http": (CTR_V4, f"http:8083 {fast}"),
            "https-plain": (CTR_V4, f"https:8081 {fast}"),
        }
    )
    assert (
        monitor.verdict("ok", True)["detail"]
        == f"http {CTR_V4}:8081/healthz?deep=1 status 200 (1/1)"
    )
    assert (
        monitor.verdict("503", False)["detail"]
        == f"http {CTR_V4}:8082/healthz status 503, want 200 (1/1)"
    )
    monitor.verdict("503-wanted", True)
    assert (
        monitor.verdict("https", True)["detail"] == f"https [{CTR_V6}]:8443/ready status 204 (1/1)"
    )
    # the server closes without reading: we see either the close or its reset
    not_http = monitor.verdict("not-http", False)["detail"]
    assert "not an HTTP status line" in not_http or "connection reset" in not_http
    monitor.verdict("https-plain", False)  # a TLS hello to a plain HTTP server fails


def test_udp_send_expect(lab: tuple[str, str], monitor: Monitor) -> None:
    _, ctr = lab
    Server(ctr, "serve-udp", CTR_V4, "5353")
    Server(ctr, "serve-udp", CTR_V6, "5353")
    fast = "interval=0.2 fall=1 rise=1"
    ping = b"ping".hex()
    monitor.check(
        {
            "echo": (CTR_V4, f"udp:5353 send={ping} expect={b'pong:ping'.hex()} {fast}"),
            "echo6": (CTR_V6, f"udp:5353 send={ping} expect={b'pong'.hex()} {fast}"),
            "any-reply": (CTR_V4, f"udp:5353 {fast}"),
            "wrong": (CTR_V4, f"udp:5353 send={ping} expect={b'nope'.hex()} {fast}"),
            "closed": (CTR_V4, f"udp:5354 send={ping} {fast}"),
        }
    )
    assert monitor.verdict("echo", True)["detail"] == f"udp {CTR_V4}:5353 reply of 9 bytes (1/1)"
    monitor.verdict("echo6", True)
    monitor.verdict("any-reply", True)
    assert "lacks the expected bytes" in monitor.verdict("wrong", False)["detail"]
    assert "connect refused" in monitor.verdict("closed", False)["detail"]  # ICMP port unreachable


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_exec_runs_in_the_named_netns(
    lab: tuple[str, str], monitor: Monitor, tmp_path: Path
) -> None:
    _, ctr = lab
    has_address = _script(
        tmp_path / "has-address.sh",
        f'ip -o addr show | grep -q "inet {CTR_V4}/" && [ "$ANYCAST_CHECK_ADDRESS" = {CTR_V4} ]\n',
    )
    fast = "interval=0.3 fall=1 rise=1"
    monitor.check(
        {
            "inside": (CTR_V4, f"exec:{has_address} {fast}", ctr),
            "outside": (CTR_V4, f"exec:{has_address} {fast}"),
        }
    )
    assert (
        monitor.verdict("inside", True)["detail"]
        == f"exec {has_address} in netns '{ctr}' exit 0 (1/1)"
    )
    assert monitor.verdict("outside", False)["detail"] == f"exec {has_address} exit 1 (1/1)"


@pytest.mark.parametrize("in_netns", [False, True], ids=["host", "netns"])
def test_a_hung_exec_check_is_killed_with_its_process_group(
    lab: tuple[str, str], tmp_path: Path, in_netns: bool
) -> None:
    """A check that hangs (and forks a child that would outlive it) dies whole at the timeout."""
    pids = tmp_path / "pids"
    hang = _script(tmp_path / "hang.sh", f"sleep 300 &\necho $$ $! > {pids}\nsleep 300\n")
    spec = CheckSpec("exec", command=(hang,), interval=1.0, timeout=0.5)
    target = CheckTarget(
        ("t", "hang"), ip_address(CTR_V4), spec, netns=lab[1] if in_netns else None
    )

    started = time.monotonic()
    result = asyncio.run(run_probe(target))
    took = time.monotonic() - started
    leader, child = (int(p) for p in pids.read_text().split())
    gone = (
        poll(lambda: not session_pids(leader), 5, f"process group {leader} gone")
        and time.monotonic() - started
    )
    assert not result.ok
    assert result.detail.endswith("timed out after 0.5s")
    assert (
        not os.path.exists(f"/proc/{child}")
        or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    )
    print(
        f"\nexec hang ({'netns' if in_netns else 'host'}): probe returned after {took:.3f}s (timeout 0.5s); group {leader} (child {child}) gone at {gone:.3f}s"
    )


def test_an_exec_check_leaves_nothing_behind_when_it_exits(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    quick = _script(tmp_path / "quick.sh", f"sleep 300 &\necho $$ $! > {pids}\nexit 0\n")
    spec = CheckSpec("exec", command=(quick,), interval=2.0, timeout=2.0)
    result = asyncio.run(run_probe(CheckTarget(("t", "q"), ip_address("127.0.0.1"), spec)))
    assert result.ok, result.detail
    leader, _ = (int(p) for p in pids.read_text().split())
    poll(lambda: not session_pids(leader), 5, f"process group {leader} gone")


def test_300_tcp_targets_at_200ms(lab: tuple[str, str], monitor: Monitor) -> None:
    _, ctr = lab
    count, first = 300, 20000
    Server(ctr, "serve-tcp", CTR_V4, str(first), str(count))
    monitor.check(
        {f"t{i}": (CTR_V4, f"tcp:{first + i} interval=0.2 timeout=0.2") for i in range(count)}
    )
    poll(
        lambda: len({e["key"] for e in monitor.events}) == count or None, 20, "every target decided"
    )
    monitor.send(op="mark")
    window = 5.0
    deadline = time.monotonic() + window
    poll(
        lambda: time.monotonic() >= deadline, window + 1, "the measuring window"
    )  # load runs meanwhile
    final = monitor.stop()
    assert all(e["healthy"] for e in monitor.events)
    stats = final["stats"]
    print(
        f"\n300 TCP targets @0.2s for {final['wall']:.1f}s: monitor CPU {100 * final['cpu'] / final['wall']:.0f}% of one core; "
        f"{stats['probes']} probes ({stats['probes'] / final['wall']:.0f}/s), lateness p50<={stats['p50_ms']:g}ms "
        f"p99<={stats['p99_ms']:g}ms max {1000 * stats['late_max']:.1f}ms, skipped slots {stats['skipped']}"
    )


# --------------------------------------------------------------------------- subprocess side


def _serve_tcp(address: str, first: int, count: int) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    selector = selectors.DefaultSelector()
    for port in range(first, first + count):
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen(512)
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            try:
                conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            conn.close()


async def _serve_http(
    address: str, port: int, status: int, cert: str | None, key: str | None
) -> None:
    import ssl

    tls = None
    if cert and key:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                f"HTTP/1.1 {status} Test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode()
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, address, port, ssl=tls, reuse_address=True)
    print("ready", flush=True)
    await server.serve_forever()


def _serve_udp(address: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    print("ready", flush=True)
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(b"pong:" + data, peer)


async def _monitor() -> None:
    """Read commands (JSON lines) on stdin, print HealthObserved events as JSON lines."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def emit(event: HealthObserved) -> None:
        line = {
            "key": event.key[1],
            "healthy": event.healthy,
            "detail": event.detail,
            "t": time.monotonic(),
        }
        print(json.dumps(line), flush=True)

    monitor = HealthMonitor(emit)
    runner = asyncio.create_task(monitor.run())
    mark = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    async for raw in reader:
        command = json.loads(raw)
        if command["op"] == "targets":
            monitor.set_targets(
                CheckTarget(
                    ("test", t["key"]),
                    ip_address(t["address"]),
                    parse_check(t["check"], allow_exec=True),
                    t["netns"],
                )
                for t in command["targets"]
            )
        elif command["op"] == "mark":
            mark = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
            monitor.stats = ScheduleStats()
        else:
            break
    wall = time.monotonic() - mark[0]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - mark[1].ru_utime - mark[1].ru_stime
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    stats = monitor.stats
    summary = {
        "probes": stats.probes,
        "skipped": stats.skipped,
        "late_max": stats.late_max,
        "p50_ms": stats.percentile_ms(0.5),
        "p99_ms": stats.percentile_ms(0.99),
    }
    print(json.dumps({"stats": summary, "cpu": cpu, "wall": wall}), flush=True)


def main(argv: list[str]) -> None:
    match argv:
        case ["serve-tcp", address, first, count]:
            _serve_tcp(address, int(first), int(count))
        case ["serve-http", address, port, status]:
            asyncio.run(_serve_http(address, int(port), int(status), None, None))
        case ["serve-http", address, port, status, cert, key]:
            asyncio.run(_serve_http(address, int(port), int(status), cert, key))
        case ["serve-udp", address, port]:
            _serve_udp(address, int(port))
        case ["monitor"]:
            asyncio.run(_monitor())
        case _:
            raise SystemExit(
                f"usage: python -m {MODULE} serve-tcp|serve-http|serve-udp|monitor ..."
            )


if __name__ == "__main__":
    main(sys.argv[1:])
