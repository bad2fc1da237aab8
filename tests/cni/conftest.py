"""Fixtures for the CNI plugin: a "host" namespace, "container" namespaces, a runtime stand-in.

The plugin always treats its own namespace as the host, so it is run under
``ip netns exec HOST`` exactly as a runtime on that host would run it: config on stdin,
CNI_* in the environment. Nothing here touches the root namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.netlab import REPO, RouteMonitor, netns, sh

CNI_DIR = Path("/usr/lib/cni")
PLUGIN = REPO / ".venv" / "bin" / "announcer-routed"
# The flock around shared routes: never the machine's /run/lock one.
LOCK_FILE = Path(tempfile.gettempdir()) / f"aa-routed-tests-{os.getpid()}.lock"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if not (CNI_DIR / "static").exists() or not (CNI_DIR / "host-local").exists():
        return "needs Debian's containernetworking-plugins (static, host-local in /usr/lib/cni)"
    if not PLUGIN.exists():
        return f"{PLUGIN} is missing: run .venv/bin/pip install -e '.[dev]'"
    if shutil.which("ping") is None:
        return "needs ping (iputils-ping)"
    return None


@pytest.fixture(scope="session")
def cni_ready() -> None:
    reason = _missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _lock_file_removed() -> Iterator[None]:
    """The plugins' lock file of this session goes at its end, whichever tests made it,
    with the state files next to it (<lock>.holders.json, <lock>.unhealthy.json)."""
    yield
    for path in LOCK_FILE.parent.glob(f"{LOCK_FILE.name}*"):
        path.unlink(missing_ok=True)


@dataclass
class Reply:
    rc: int
    doc: Any
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass
class Runtime:
    """Runs the plugin in ``host`` as a CNI runtime would."""

    host: str
    cni_path: str = str(CNI_DIR)

    def call(
        self,
        command: str,
        conf: dict[str, Any] | None,
        container_id: str = "",
        netns: str = "",
        ifname: str = "eth0",
        args: str = "",
    ) -> Reply:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": f"/run/netns/{netns}" if netns and "/" not in netns else netns,
            "CNI_IFNAME": ifname,
            "CNI_ARGS": args,
            "CNI_PATH": self.cni_path,
        }
        proc = subprocess.run(
            ["ip", "netns", "exec", self.host, str(PLUGIN)],
            input=json.dumps(conf or {}),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        doc = json.loads(proc.stdout) if proc.stdout.strip() else None
        return Reply(proc.returncode, doc, proc.stderr)

    def add(self, conf: dict[str, Any], cid: str, ns: str, args: str = "") -> Reply:
        return self.call("ADD", conf, cid, ns, args=args)

    def delete(self, conf: dict[str, Any], cid: str, ns: str = "", args: str = "") -> Reply:
        return self.call("DEL", conf, cid, ns, args=args)


@pytest.fixture
def host(cni_ready: None) -> Iterator[str]:
    """The "host": forwarding on for IPv6 (IPv4 forwarding is per veth, set by the plugin)."""
    with netns("cnih") as name:
        sh(name, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        yield name


@pytest.fixture
def runtime(host: str) -> Runtime:
    return Runtime(host)


@pytest.fixture
def containers() -> Iterator[Callable[[], str]]:
    """A factory of empty "container" namespaces, all removed at the end."""
    with ExitStack() as stack:
        yield lambda: stack.enter_context(netns("cnic"))


def netconf(ipam: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "routed", "type": "announcer-routed",
            "ipam": ipam, "lockFile": str(LOCK_FILE), **extra}  # fmt: skip


def static_ipam(*addresses: str) -> dict[str, Any]:
    return {"type": "static", "addresses": [{"address": a} for a in addresses]}


def host_local_ipam(data_dir: Path, *subnets: str) -> dict[str, Any]:
    return {"type": "host-local", "dataDir": str(data_dir),
            "ranges": [[{"subnet": s}] for s in subnets]}  # fmt: skip


def ip_json(ns: str, *argv: str) -> Any:
    return json.loads(sh(ns, "ip", "-j", *argv).stdout or "[]")


def links(ns: str) -> dict[str, Any]:
    return {link["ifname"]: link for link in ip_json(ns, "-d", "link", "show")}


def routes(ns: str, family: int = 4, table: str = "main") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ip_json(ns, f"-{family}", "route", "show", "table", table)
    return found


def sysctl(ns: str, key: str) -> str:
    return sh(ns, "sysctl", "-n", key).stdout.strip()


def route_devs(route: dict[str, Any]) -> frozenset[str]:
    """The devices of one `ip -j route` entry, in either shape (dev, or nexthops)."""
    if "nexthops" in route:
        return frozenset(str(nh["dev"]) for nh in route["nexthops"])
    return frozenset({str(route["dev"])}) if "dev" in route else frozenset()


def our_routes(ns: str, family: int = 4, table: str = "main") -> dict[str, frozenset[str]]:
    """dst -> devices of every route with protocol 180 (plain or shared)."""
    return {
        r["dst"]: route_devs(r) for r in routes(ns, family, table) if r.get("protocol") == "180"
    }


def nexthops(ns: str) -> list[dict[str, Any]]:
    """`ip -j nexthop` of the namespace: every nexthop object."""
    found: list[dict[str, Any]] = ip_json(ns, "nexthop", "show")
    return found


def route_monitor(ns: str, path: Path) -> contextlib.AbstractContextManager[RouteMonitor]:
    """netlab's RouteMonitor, started and proved listening (see RouteMonitor.running)."""
    return RouteMonitor.running(ns, path)
