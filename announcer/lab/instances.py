"""A lab server's "containers": namespaces wired by the routed CNI wiring, each running the
responder. Runs *inside the server's namespace* (the wiring treats its caller's namespace as
the host), in both backends::

    python -m announcer.lab.instances up /etc/lab/instances.yaml --netns-prefix lab-
    python -m announcer.lab.instances stop /etc/lab/instances.yaml inst1 ...

``stop`` removes the wiring first (host veth and host routes gone: the announcer withdraws),
then ends the responder and deletes the namespace: the order of a container being removed.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from announcer.cni.wiring import add_container, del_container


@dataclass(frozen=True)
class Instance:
    name: str
    ips: tuple[str, ...]
    extra_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstanceFile:
    port: int
    instances: tuple[Instance, ...]

    def get(self, name: str) -> Instance:
        for inst in self.instances:
            if inst.name == name:
                return inst
        raise SystemExit(f"no instance {name!r} (known: {[i.name for i in self.instances]})")


def parse_instances(text: str) -> InstanceFile:
    doc = yaml.safe_load(text) or {}
    items = doc.get("instances") or []
    instances = tuple(
        Instance(str(i["name"]), tuple(map(str, i["ips"])), tuple(map(str, i.get("extra_ips", []))))
        for i in items
    )
    return InstanceFile(int(doc.get("port", 7000)), instances)


def _ip(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)


def start(spec: InstanceFile, inst: Instance, prefix: str, logdir: Path, own_netns: bool) -> None:
    ns = prefix + inst.name
    if own_netns and _ip("netns", "add", ns).returncode != 0:
        raise SystemExit(f"cannot create namespace {ns}")
    _ip("-n", ns, "link", "set", "lo", "up")
    add_container(ns, inst.ips, inst.extra_ips, container_id=ns, network="lab")
    log = logdir / f"{inst.name}.log"
    logdir.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "announcer.lab.responder",
             "--name", inst.name, "--port", str(spec.port),
             *(f"--address={ip}" for ip in inst.ips + inst.extra_ips)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while b"ready" not in log.read_bytes():
        if time.monotonic() > deadline:
            raise SystemExit(f"responder {inst.name} did not become ready (see {log})")
        time.sleep(0.05)


def stop(inst: Instance, prefix: str, own_netns: bool) -> None:
    ns = prefix + inst.name
    del_container(ns, container_id=ns)
    pids = _ip("netns", "pids", ns).stdout.split()
    for pid in pids:
        subprocess.run(["kill", "-TERM", pid], check=False, capture_output=True)
    deadline = time.monotonic() + 5
    while _ip("netns", "pids", ns).stdout.split() and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in _ip("netns", "pids", ns).stdout.split():
        subprocess.run(["kill", f"-{int(signal.SIGKILL)}", pid], check=False, capture_output=True)
    if own_netns:
        _ip("netns", "del", ns)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["up", "down", "start", "stop"])
    parser.add_argument("file", type=Path)
    parser.add_argument("names", nargs="*")
    parser.add_argument("--netns-prefix", default="lab-")
    parser.add_argument("--logdir", type=Path, default=Path("/var/log/lab"))
    parser.add_argument(
        "--external-netns", action="store_true",
        help="the caller creates and deletes the namespaces (the netns backend does, from the "
        "root mount namespace, so that `ip netns pids` there sees them)",
    )
    args = parser.parse_args(argv)
    spec = parse_instances(args.file.read_text())
    chosen = [spec.get(n) for n in args.names] if args.names else list(spec.instances)
    for inst in chosen:
        if args.action in ("up", "start"):
            start(spec, inst, args.netns_prefix, args.logdir, not args.external_netns)
        else:
            stop(inst, args.netns_prefix, not args.external_netns)


if __name__ == "__main__":
    main()
