"""A lab server's "containers": namespaces wired by the routed CNI wiring, each running the
responder. Runs *inside the server's namespace* (the wiring treats its caller's namespace as
the host), in both backends::

    python -m announcer.lab.instances up /etc/lab/instances.yaml --netns-prefix lab- \
        --drop-ins /etc/anycast-announcer/routes.d
    python -m announcer.lab.instances stop /etc/lab/instances.yaml inst1 ...

``start`` wires the namespace, starts the responder and, once it answers, writes the
instance's drop-in file (``<name>.yaml``: its addresses, its ``check`` - its own or the
file's - and its ``drop_in`` keys such as ``weight`` or ``unhealthy``), as an orchestrator
publishes a container that is ready. ``up`` starts the instances that are not
``autostart: false`` (those a scenario starts and stops by name). Several instances of one
server may share an extra (anycast) IP: the wiring routes it over their veths
(docs/routed.md, "Shared extra IPs"), under ``--lock-file`` (the plugin's ``lockFile``).
``stop`` removes the wiring first (host veth and host routes gone: the announcer
withdraws), then ends the responder, removes the drop-in and deletes the namespace: the
order of a container being removed. ``crash`` kills only the responder (namespace, wiring,
route and drop-in stay: the health check has to notice) and ``respawn`` starts it again.
``sicken`` / ``heal`` make a responder with a ``health_port`` close / reopen that port
(SIGUSR1 / SIGUSR2): its check fails while it still answers on its service port, as an
application whose health endpoint says unhealthy.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from announcer.cni.scheme import DEFAULT_LOCK_FILE, WiringConfig
from announcer.cni.wiring import add_container, del_container


class InstancesError(Exception):
    """An instances.yaml entry that cannot be used; the message names it and the key."""


_KEYS = {"name", "ips", "extra_ips", "autostart", "check", "drop_in", "health_port"}


@dataclass(frozen=True)
class Instance:
    name: str
    ips: tuple[str, ...]
    extra_ips: tuple[str, ...] = ()
    autostart: bool = True  # false: only a scenario starts it, by name
    check: str | None = None  # instead of the file's check
    drop_in: tuple[tuple[str, str], ...] = ()  # more drop-in keys (weight, unhealthy, ...)
    health_port: int | None = None  # the responder's health port (sicken / heal)


@dataclass(frozen=True)
class InstanceFile:
    port: int
    instances: tuple[Instance, ...]
    check: str | None = None  # health check written into every instance's drop-in

    @property
    def autostarted(self) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.autostart)

    def get(self, name: str) -> Instance:
        for inst in self.instances:
            if inst.name == name:
                return inst
        raise SystemExit(f"no instance {name!r} (known: {[i.name for i in self.instances]})")


def _instance(item: object) -> Instance:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InstancesError(f"instances: every entry needs a name, got {item!r}")
    name = item["name"]
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise InstancesError(f"instance {name}: unknown keys {unknown}")
    extra = item.get("drop_in") or {}
    if not isinstance(extra, dict) or {"ips", "check"} & set(extra):
        raise InstancesError(f"instance {name}: drop_in must be a mapping without ips/check, "
                         f"got {extra!r}")  # fmt: skip
    autostart = item.get("autostart", True)
    if not isinstance(autostart, bool):
        raise InstancesError(f"instance {name}: autostart {autostart!r} is not true or false")
    port = item.get("health_port")
    check = item.get("check")
    return Instance(name, tuple(map(str, item["ips"])), tuple(map(str, item.get("extra_ips", []))),
                    autostart, None if check is None else str(check),
                    tuple((str(k), str(v)) for k, v in extra.items()),
                    None if port is None else int(port))  # fmt: skip


def parse_instances(text: str) -> InstanceFile:
    """An instances.yaml; InstancesError naming the instance and key it cannot use."""
    doc = yaml.safe_load(text) or {}
    instances = tuple(_instance(i) for i in doc.get("instances") or [])
    check = doc.get("check")
    return InstanceFile(int(doc.get("port", 7000)), instances,
                        None if check is None else str(check))  # fmt: skip


def render_drop_in(spec: InstanceFile, inst: Instance) -> str:
    """The drop-in of a ready instance: every address it serves (its own first: the check
    probes the first), its check (else the file's) and its further drop-in keys."""
    lines = [f"# written by announcer.lab.instances for {inst.name}",
             f"ips: [{', '.join(inst.ips + inst.extra_ips)}]"]  # fmt: skip
    check = inst.check or spec.check
    if check:
        lines.append(f"check: '{check}'")
    lines += [f"{key}: '{value}'" for key, value in inst.drop_in]
    return "\n".join(lines) + "\n"


def write_drop_in(directory: Path, spec: InstanceFile, inst: Instance) -> None:
    """Atomically (the announcer reads only *.yaml, and a rename is one change)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{inst.name}.tmp"
    tmp.write_text(render_drop_in(spec, inst))
    os.replace(tmp, directory / f"{inst.name}.yaml")


def _ip(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)


def start(spec: InstanceFile, inst: Instance, prefix: str, logdir: Path, own_netns: bool,
          drop_ins: Path | None, wiring: WiringConfig) -> None:  # fmt: skip
    ns = prefix + inst.name
    if own_netns and _ip("netns", "add", ns).returncode != 0:
        raise SystemExit(f"cannot create namespace {ns}")
    _ip("-n", ns, "link", "set", "lo", "up")
    add_container(ns, inst.ips, inst.extra_ips, container_id=ns, network="lab", config=wiring)
    respawn(spec, inst, prefix, logdir)
    if drop_ins is not None:
        write_drop_in(drop_ins, spec, inst)


def respawn(spec: InstanceFile, inst: Instance, prefix: str, logdir: Path) -> None:
    """Start the responder in the instance's namespace; return once it listens."""
    ns = prefix + inst.name
    log = logdir / f"{inst.name}.log"
    logdir.mkdir(parents=True, exist_ok=True)
    offset = log.stat().st_size if log.exists() else 0  # an earlier run's "ready" is there
    health = [] if inst.health_port is None else ["--health-port", str(inst.health_port)]
    with log.open("ab") as out:
        subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "announcer.lab.responder",
             "--name", inst.name, "--port", str(spec.port), *health,
             *(f"--address={ip}" for ip in inst.ips + inst.extra_ips)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while b"ready" not in log.read_bytes()[offset:]:
        if time.monotonic() > deadline:
            raise SystemExit(f"responder {inst.name} did not become ready (see {log})")
        time.sleep(0.05)


def stop(inst: Instance, prefix: str, own_netns: bool, drop_ins: Path | None,
         wiring: WiringConfig) -> None:  # fmt: skip
    ns = prefix + inst.name
    del_container(ns, container_id=ns, config=wiring)
    crash(inst, prefix, signal.SIGTERM)
    if drop_ins is not None:
        (drop_ins / f"{inst.name}.yaml").unlink(missing_ok=True)
    if own_netns:
        _ip("netns", "del", ns)


def crash(inst: Instance, prefix: str, sig: signal.Signals = signal.SIGKILL) -> None:
    """End every process in the instance's namespace (sig, then SIGKILL after 5 s)."""
    ns = prefix + inst.name
    pids = _ip("netns", "pids", ns).stdout.split()
    for pid in pids:
        subprocess.run(["kill", f"-{int(sig)}", pid], check=False, capture_output=True)
    deadline = time.monotonic() + 5
    while _ip("netns", "pids", ns).stdout.split() and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in _ip("netns", "pids", ns).stdout.split():
        subprocess.run(["kill", f"-{int(signal.SIGKILL)}", pid], check=False, capture_output=True)


def signal_health(inst: Instance, prefix: str, healthy: bool) -> None:
    """Tell the instance's responder to reopen (healthy) or close its health port."""
    if inst.health_port is None:
        raise SystemExit(f"instance {inst.name} has no health_port to close or reopen")
    sig = signal.SIGUSR2 if healthy else signal.SIGUSR1
    pids = _ip("netns", "pids", prefix + inst.name).stdout.split()
    if not pids:
        raise SystemExit(f"instance {inst.name}: no process in its namespace")
    for pid in pids:
        subprocess.run(["kill", f"-{int(sig)}", pid], check=False, capture_output=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["up", "down", "start", "stop", "crash", "respawn",
                                           "sicken", "heal"])  # fmt: skip
    parser.add_argument("file", type=Path)
    parser.add_argument("names", nargs="*")
    parser.add_argument("--netns-prefix", default="lab-")
    parser.add_argument("--logdir", type=Path, default=Path("/var/log/lab"))
    parser.add_argument("--drop-ins", type=Path,
                        help="the announcer's drop-in directory (files.directory)")  # fmt: skip
    parser.add_argument("--lock-file", default=DEFAULT_LOCK_FILE,
                        help="the routed plugin's lockFile (routed.lock_file)")  # fmt: skip
    parser.add_argument(
        "--external-netns",
        action="store_true",
        help="the caller creates and deletes the namespaces (the netns backend does, from the "
        "root mount namespace, so that `ip netns pids` there sees them)",
    )
    args = parser.parse_args(argv)
    spec = parse_instances(args.file.read_text())
    every = spec.autostarted if args.action == "up" else spec.instances
    chosen = [spec.get(n) for n in args.names] if args.names else list(every)
    own = not args.external_netns
    wiring = WiringConfig(lock_file=args.lock_file)
    for inst in chosen:
        match args.action:
            case "up" | "start":
                start(spec, inst, args.netns_prefix, args.logdir, own, args.drop_ins, wiring)
            case "crash":
                crash(inst, args.netns_prefix)
            case "respawn":
                respawn(spec, inst, args.netns_prefix, args.logdir)
            case "sicken" | "heal":
                signal_health(inst, args.netns_prefix, args.action == "heal")
            case _:
                stop(inst, args.netns_prefix, own, args.drop_ins, wiring)


if __name__ == "__main__":
    main()
