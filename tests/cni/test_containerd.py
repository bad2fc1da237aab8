"""The CNI plugin under a real runtime: Debian's containerd 1.6 and `ctr run --cni`.

containerd runs in the test's network namespace (the "host") and a private mount namespace
whose /etc/cni/net.d, /opt/cni/bin and /var/lib/cni are the test's directories
(tests/containerd.py); `ctr`, and through it the plugin and IPAM, run there too. The image
is assembled here, nothing is pulled. Container ids reach CNI as "aa-<id>".
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from announcer.cni.scheme import host_ifname
from tests import containerd as containerd_harness
from tests.cni.conftest import LOCK_FILE, PLUGIN, Reply, links, our_routes
from tests.containerd import DEBIAN_CNI_DIR, NAMESPACE, Containerd, containerd
from tests.netlab import REPO, netns, poll, sh

pytestmark = [pytest.mark.netns, pytest.mark.cni, pytest.mark.containerd, pytest.mark.slow]

ANY4, ANY6 = "10.9.9.40", "fd00:9::40"
CTR_CNI_PATH = "/opt/cni/bin:/usr/lib/cni"  # what Debian's ctr 1.6.20 passes (patched)
DOCS = REPO / "docs" / "routed.md"


def conflist() -> dict[str, Any]:
    """docs/routed.md's conflist (v4 + v6 host-local), with the test's lock and extra IPs."""
    text = DOCS.read_text()
    doc: dict[str, Any] = json.loads(text.split("`/etc/cni/net.d/10-routed.conflist`:\n\n```json\n")[1]
                                     .split("```")[0])  # fmt: skip
    doc["plugins"][0] |= {"lockFile": str(LOCK_FILE),
                          "args": {"cni": {"extraIPs": [ANY4, ANY6]}}}  # fmt: skip
    return doc


@dataclass
class Host:
    ns: str
    ctrd: Containerd

    def veth(self, cid: str) -> str:
        return host_ifname(f"{NAMESPACE}-{cid}", "eth0")

    def task_pid(self, cid: str) -> int | None:
        for line in self.ctrd.ctr("tasks", "ls").stdout.splitlines()[1:]:
            task, pid, status = line.split()
            if task == cid and status == "RUNNING":
                return int(pid)
        return None

    def in_task(self, cid: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """argv in the task's network namespace, run from the host's tools."""
        return sh(None, "nsenter", f"--net=/proc/{self.task_pid(cid)}/ns/net", *argv)

    def leases(self) -> dict[str, str]:
        """host-local's leases of the network: ip -> container id."""
        d = self.ctrd.var_lib_cni / "networks" / "routed"
        found = d.iterdir() if d.is_dir() else iter(())
        return {
            p.name: p.read_text().split()[0] for p in found if p.name[0].isdigit() or ":" in p.name
        }

    def cached(self) -> set[str]:
        d = self.ctrd.var_lib_cni / "results"
        return {p.name for p in d.iterdir()} if d.is_dir() else set()

    def debian_ipam(self, present: bool) -> None:
        """host-local in /usr/lib/cni as ctr sees it (Debian's place), or not."""
        target = self.ctrd.usr_lib_cni / "host-local"
        target.unlink(missing_ok=True)
        if present:
            shutil.copy2(DEBIAN_CNI_DIR / "host-local", target)

    def plugin(self, command: str, conf: dict[str, Any], **env: str) -> Reply:
        """The plugin run by hand in containerd's namespaces, with ctr's CNI_PATH."""
        proc = subprocess.run(
            ["nsenter", f"--mount=/proc/{self.ctrd.pid}/ns/mnt", f"--net=/run/netns/{self.ns}",
             "/opt/cni/bin/announcer-routed"],
            input=json.dumps(conf), capture_output=True, text=True, timeout=60, check=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command,
                 "CNI_PATH": CTR_CNI_PATH, "CNI_IFNAME": "eth0", **env},
        )  # fmt: skip
        return Reply(proc.returncode, json.loads(proc.stdout or "null"), proc.stderr)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    reason = containerd_harness.missing()
    if reason:
        pytest.skip(reason)
    if not PLUGIN.exists():
        pytest.skip(f"{PLUGIN} is missing: run .venv/bin/pip install -e '.[dev]'")
    workdir = tmp_path_factory.mktemp("containerd")
    with netns("ctrd") as ns, containerd(ns, workdir / "c") as ctrd:
        (ctrd.net_d / "10-routed.conflist").write_text(json.dumps(conflist(), indent=1))
        (ctrd.bin / "announcer-routed").symlink_to(PLUGIN)
        yield Host(ns, ctrd)


def test_without_the_ipam_plugin_in_cni_path_add_fails_with_code_102(host: Host) -> None:
    """Debian's ctr passes CNI_PATH=/opt/cni/bin:/usr/lib/cni (upstream: /opt/cni/bin only);
    with host-local in neither, ADD fails (code 102) and ctr leaves the task behind."""
    host.debian_ipam(False)
    try:
        run = host.ctrd.ctr("run", "-d", "--null-io", "--cni", host.ctrd.image, "noipam",
                            "sleep", "600", check=False)  # fmt: skip
        assert run.returncode == 1
        assert run.stderr == (  # docs/routed.md quotes it
            "ctr: plugin type=\"announcer-routed\" failed (add): IPAM plugin 'host-local' "
            f"not found in CNI_PATH; CNI_PATH={CTR_CNI_PATH}\n"
        )
        assert run.stderr.strip() in DOCS.read_text()
        assert host.veth("noipam") not in links(host.ns)
        assert "noipam" in host.ctrd.ctr("tasks", "ls", "-q").stdout.split()  # CREATED, left
        # ctr shows no code; the same ADD by hand does.
        with netns("cnic") as c:
            reply = host.plugin("ADD", conflist()["plugins"][0] | {"cniVersion": "1.0.0",
                                "name": "routed"}, CNI_CONTAINERID="x", CNI_NETNS=f"/run/netns/{c}")  # fmt: skip
        assert (reply.rc, reply.doc["code"]) == (1, 102), reply
        assert reply.doc["details"] == f"CNI_PATH={CTR_CNI_PATH}"
    finally:
        host.ctrd.remove_everything()
        host.debian_ipam(True)


def test_ctr_run_wires_v4_v6_and_its_del_cleans_up(host: Host, tmp_path: Path) -> None:
    ctr = host.ctrd.ctr_background("run", "--rm", "--null-io", "--cni", host.ctrd.image, "web",
                                   "sleep", "600", log=tmp_path / "ctr.log")  # fmt: skip
    try:
        poll(lambda: host.task_pid("web") and host.veth("web") in links(host.ns), 30,
             "web running and wired")  # fmt: skip
        veth = host.veth("web")
        leases = host.leases()
        v4 = next(ip for ip, cid in leases.items() if "." in ip and cid == f"{NAMESPACE}-web")
        v6 = next(ip for ip, cid in leases.items() if ":" in ip and cid == f"{NAMESPACE}-web")
        assert our_routes(host.ns) == {v4: {veth}, ANY4: {veth}}
        assert our_routes(host.ns, 6) == {v6: {veth}, ANY6: {veth}}

        addrs = json.loads(host.in_task("web", "ip", "-j", "addr", "show", "eth0").stdout)
        got = {
            (a["local"], a["prefixlen"]) for a in addrs[0]["addr_info"] if a["scope"] == "global"
        }
        assert got == {(v4, 32), (ANY4, 32), (v6, 128), (ANY6, 128)}
        assert "default via 169.254.1.1 dev eth0" in host.in_task("web", "ip", "route").stdout
        assert "default via fe80::1 dev eth0" in host.in_task("web", "ip", "-6", "route").stdout
        for dst in (v4, v6, ANY4, ANY6):
            poll(lambda d=dst: sh(host.ns, "ping", "-c1", "-W1", d, check=False).returncode == 0,
                 10, f"ping {dst} from the host")  # fmt: skip
        host.ctrd.ctr(
            "tasks", "exec", "--exec-id", "p1", "web", "ping", "-c1", "-W2", "169.254.1.1"
        )
        assert f"routed-{NAMESPACE}-web-eth0" in host.cached()

        # The task ends: `ctr run` (not detached) calls DEL, then deletes task and container.
        host.ctrd.ctr("tasks", "kill", "-s", "SIGKILL", "web")
        assert ctr.wait(30) is not None
        assert veth not in links(host.ns)
        assert our_routes(host.ns) == {}
        assert our_routes(host.ns, 6) == {}
        assert host.leases() == {}
        assert host.cached() == set()
        assert host.ctrd.ctr("containers", "ls", "-q").stdout.split() == []
    finally:
        if ctr.poll() is None:
            ctr.kill()
        host.ctrd.remove_everything()


def _gc_snippet() -> str:
    """docs/routed.md's GC command for ctr hosts, as a user copies it."""
    block = re.search(r"<!-- tested: gc-ctr -->\n```sh\n(.*?)```", DOCS.read_text(), re.S)
    assert block is not None, "docs/routed.md lost its tested GC snippet"
    return block.group(1)


def test_ctr_run_detached_never_dels_and_gc_reclaims(host: Host) -> None:
    """`ctr run -d` never calls DEL: the netns takes veth and routes along, host-local's
    lease and libcni's cache stay, until the GC of docs/routed.md."""
    for cid in ("d1", "d2"):
        host.ctrd.ctr("run", "-d", "--null-io", "--cni", host.ctrd.image, cid, "sleep", "600")
    v1, v2 = host.veth("d1"), host.veth("d2")
    assert our_routes(host.ns)[ANY4] == {v1, v2}
    assert set(host.leases().values()) == {f"{NAMESPACE}-d1", f"{NAMESPACE}-d2"}

    host.ctrd.ctr("tasks", "kill", "-s", "SIGKILL", "d1")
    poll(lambda: host.task_pid("d1") is None, 20, "d1 stopped")
    host.ctrd.ctr("tasks", "delete", "d1")
    host.ctrd.ctr("containers", "delete", "d1")
    poll(lambda: v1 not in links(host.ns), 10, "d1's veth gone with its netns")
    assert our_routes(host.ns)[ANY4] == {v2}  # the kernel took d1 out of the group
    # The leak: nothing called DEL.
    assert f"{NAMESPACE}-d1" in host.leases().values()
    assert f"routed-{NAMESPACE}-d1-eth0" in host.cached()

    gc = subprocess.run(
        ["nsenter", f"--mount=/proc/{host.ctrd.pid}/ns/mnt", f"--net=/run/netns/{host.ns}",
         "sh", "-euc", _gc_snippet()],
        env={"PATH": f"{PLUGIN.parent}:/usr/sbin:/usr/bin:/sbin:/bin",
             "CONTAINERD_ADDRESS": str(host.ctrd.socket), "CONTAINERD_NAMESPACE": NAMESPACE},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert gc.returncode == 0, gc
    assert "lease_released" in gc.stderr, gc.stderr
    assert set(host.leases().values()) == {f"{NAMESPACE}-d2"}
    assert host.cached() == {f"routed-{NAMESPACE}-d2-eth0"}
    assert our_routes(host.ns)[ANY4] == {v2}
    assert host.task_pid("d2") is not None
    host.ctrd.remove_everything()
