"""set_unhealthy as the shipped unit runs the announcer: its own user, CAP_NET_ADMIN only.

The plugin runs as root (a runtime runs it: tests/cni/conftest.py); the announcer's call
runs in a child process entered into the "host" namespace by nsenter and dropped by
setpriv to nobody with CAP_NET_ADMIN as its only (ambient) capability. The lock file
lives in a private stand-in for /run/lock: a root-owned directory of mode 1777 (sticky:
only a file's owner, or root, may replace or remove it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from announcer.cni import shared_routes
from announcer.cni.scheme import WiringConfig, host_ifname
from tests.cni.conftest import Runtime, netconf, our_routes, static_ipam
from tests.cni.test_health_verdicts import in_netns
from tests.netlab import python, sh

pytestmark = [pytest.mark.netns, pytest.mark.cni]

NewNs = Callable[[], str]
ANY4, ANY6 = "10.9.9.1", "fd00:9::1"
NOBODY = 65534
CAP_NET_ADMIN = 1 << 12
# setpriv from util-linux: the uid and gid of nobody, no supplementary groups, and
# CAP_NET_ADMIN kept across the change of uid as an ambient capability (as systemd's
# AmbientCapabilities= does): permitted and effective are then that one capability.
DROP = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
        "--inh-caps=+net_admin", "--ambient-caps=+net_admin", "--"]  # fmt: skip
CHILD = """
import json, os, sys
from announcer.cni import shared_routes
from announcer.cni.scheme import WiringConfig, WiringError
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
out = {"uid": os.geteuid(), "eff": int(status["CapEff"], 16), "prm": int(status["CapPrm"], 16)}
try:
    cfg = WiringConfig(lock_file=sys.argv[2])
    out["changed"] = sorted(map(str, shared_routes.set_unhealthy(json.loads(sys.argv[1]), cfg)))
except WiringError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


@pytest.fixture
def lock_dir() -> Iterator[Path]:
    """A stand-in for /run/lock: owned by root, mode 1777; removed with what is in it."""
    path = Path(tempfile.mkdtemp(prefix="aa-run-lock-"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _announcer(host: str, lock: Path, names: frozenset[str]) -> dict[str, Any]:
    """set_unhealthy(names) as nobody with CAP_NET_ADMIN in host: its uid, capabilities,
    and the IPs changed or the WiringError's message."""
    argv = ["nsenter", f"--net=/run/netns/{host}", *DROP, python(), "-c", CHILD,
            json.dumps(sorted(names)), str(lock)]  # fmt: skip
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    out: dict[str, Any] = json.loads(proc.stdout)
    assert (out["uid"], out["eff"], out["prm"]) == (NOBODY, CAP_NET_ADMIN, CAP_NET_ADMIN), out
    return out


def publish(host: str, lock: Path, *cids: str) -> set[str]:
    """The announcer's call for these containers' veths; the IPs whose group changed."""
    out = _announcer(host, lock, _veths(*cids))
    assert "error" not in out, out["error"]
    return set(out["changed"])


def refused(host: str, lock: Path, *cids: str) -> str:
    """The WiringError's message of the announcer's call for these containers' veths."""
    out = _announcer(host, lock, _veths(*cids))
    assert "error" in out, out
    return str(out["error"])


@pytest.fixture(scope="module", autouse=True)
def _nobody_imports_the_project() -> None:
    proc = subprocess.run([*DROP, python(), "-c", "import announcer.cni.shared_routes"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"nobody cannot run {python()} with the project: {proc.stderr[-300:]}")


def _veths(*cids: str) -> frozenset[str]:
    return frozenset(host_ifname(cid, "eth0") for cid in cids)


def _conf(lock: Path, primary: str) -> dict[str, Any]:
    return netconf(static_ipam(primary), lockFile=str(lock),
                   args={"cni": {"extraIPs": [ANY4, ANY6]}})  # fmt: skip


def _shared(host: str) -> tuple[frozenset[str], frozenset[str]]:
    return our_routes(host).get(ANY4, frozenset()), our_routes(host, 6).get(ANY6, frozenset())


def _add(runtime: Runtime, containers: NewNs, lock: Path, *cids: str) -> dict[str, str]:
    """Root's plugin ADDs of containers holding ANY4 and ANY6; their namespaces."""
    ns = {cid: containers() for cid in cids}
    for cid in cids:
        reply = runtime.add(_conf(lock, f"10.1.0.{ord(cid[0]) - 96}/24"), cid, ns[cid])
        assert reply.ok, reply
    return ns


def _recorded(lock: Path) -> dict[str, frozenset[str]]:
    doc = json.loads(Path(f"{lock}.holders.json").read_text())
    return {ip: frozenset(veths) for ip, veths in doc["holders"].items()}


def _owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_mode & 0o7777


def test_the_announcer_as_its_own_user_publishes_verdicts_root_applies_them(
    runtime: Runtime, containers: NewNs, lock_dir: Path
) -> None:
    host, lock = runtime.host, lock_dir / "routed.lock"
    holders, verdicts = Path(f"{lock}.holders.json"), Path(f"{lock}.unhealthy.json")
    ns = _add(runtime, containers, lock, "a", "b", "c")
    assert _owner(lock) == (0, 0o644)  # root's: the announcer opens it read-only
    assert _owner(holders) == (0, 0o644)
    record = holders.read_text()

    assert publish(host, lock, "b") == {ANY4, ANY6}
    assert _shared(host) == (_veths("a", "c"),) * 2
    assert _owner(verdicts) == (NOBODY, 0o644)  # its own, readable by all
    assert holders.read_text() == record  # b still a holder; root's file untouched
    assert publish(host, lock, "b") == set()  # the same set: nothing to do
    assert publish(host, lock, "b", "c") == {ANY4, ANY6}  # its own file replaced
    assert _shared(host) == (_veths("a"),) * 2

    # Root's plugin, a fresh process, applies the announcer's verdicts.
    ns["d"] = containers()
    assert runtime.add(_conf(lock, "10.1.0.4/24"), "d", ns["d"]).ok
    assert _shared(host) == (_veths("a", "d"),) * 2
    assert runtime.delete(_conf(lock, "10.1.0.1/24"), "a", ns["a"]).ok
    assert _shared(host) == (_veths("d"),) * 2
    assert _recorded(lock) == {ANY4: _veths("b", "c", "d"), ANY6: _veths("b", "c", "d")}
    in_netns(host, shared_routes.sweep, WiringConfig(lock_file=str(lock)))  # root's GC

    assert publish(host, lock) == {ANY4, ANY6}  # b and c come back from the record
    assert _shared(host) == (_veths("b", "c", "d"),) * 2
    assert sorted(p.name for p in lock_dir.iterdir()) == [
        "routed.lock", "routed.lock.holders.json", "routed.lock.unhealthy.json"]  # fmt: skip


def test_a_verdict_published_before_any_add_makes_the_lock_the_announcers(
    runtime: Runtime, containers: NewNs, lock_dir: Path
) -> None:
    """At boot the announcer may come first: the lock and the verdict file are then its
    own, and root's plugin still takes that lock (never O_CREAT on another's file: with
    fs.protected_regular a sticky directory refuses that, to root too)."""
    host, lock = runtime.host, lock_dir / "routed.lock"
    assert publish(host, lock, "b") == set()  # no shared route yet
    assert _owner(lock) == (NOBODY, 0o644)
    _add(runtime, containers, lock, "a", "b", "c")
    assert _shared(host) == (_veths("a", "c"),) * 2
    assert _recorded(lock) == {ANY4: _veths("a", "b", "c"), ANY6: _veths("a", "b", "c")}


def test_upgrade_without_a_holders_file_the_announcer_makes_it(
    runtime: Runtime, containers: NewNs, lock_dir: Path
) -> None:
    """No record (as a plugin before it left): the groups are the record, and the announcer
    may create the file in the sticky directory; root's next write replaces it."""
    host, lock = runtime.host, lock_dir / "routed.lock"
    holders = Path(f"{lock}.holders.json")
    ns = _add(runtime, containers, lock, "a", "b", "c")
    holders.unlink()
    assert publish(host, lock, "b") == {ANY4, ANY6}
    assert _shared(host) == (_veths("a", "c"),) * 2
    assert _owner(holders) == (NOBODY, 0o644)
    assert _recorded(lock) == {ANY4: _veths("a", "b", "c"), ANY6: _veths("a", "b", "c")}
    assert runtime.delete(_conf(lock, "10.1.0.1/24"), "a", ns["a"]).ok
    assert _owner(holders) == (0, 0o644)
    assert _recorded(lock) == {ANY4: _veths("b", "c"), ANY6: _veths("b", "c")}
    assert publish(host, lock) == {ANY4, ANY6}
    assert _shared(host) == (_veths("b", "c"),) * 2


def test_a_root_record_lacking_a_holder_is_refused_and_nothing_changes(
    runtime: Runtime, containers: NewNs, lock_dir: Path
) -> None:
    """Upgrade with a partial record (an old plugin joined a, b and c; the record is
    root's and lacks them): a holder taken out for health and missing from the record
    would never come back, so nothing changes until root's GC completes it."""
    host, lock = runtime.host, lock_dir / "routed.lock"
    holders = Path(f"{lock}.holders.json")
    _add(runtime, containers, lock, "a", "b", "c")
    doc = json.loads(holders.read_text())
    holders.write_text(json.dumps({"netns": doc["netns"], "holders": {}}))
    before = _shared(host)

    error = refused(host, lock, "b")
    assert str(holders) in error
    assert f"the record must gain {ANY4} " in error
    assert " and 2 more before any group changes; no group changed" in error
    assert refused(host, lock, "b") == error  # stable: the daemon logs each message once
    assert _shared(host) == before == (_veths("a", "b", "c"),) * 2
    assert json.loads(holders.read_text())["holders"] == {}

    # The verdict was published: root's GC completes the record and applies it.
    in_netns(host, shared_routes.sweep, WiringConfig(lock_file=str(lock)))
    assert _recorded(lock) == {ANY4: _veths("a", "b", "c"), ANY6: _veths("a", "b", "c")}
    assert _shared(host) == (_veths("a", "c"),) * 2
    assert publish(host, lock) == {ANY4, ANY6}
    assert _shared(host) == (_veths("a", "b", "c"),) * 2


def test_files_root_left_are_named_with_the_fix(
    runtime: Runtime, containers: NewNs, lock_dir: Path
) -> None:
    """A verdict file of root's (a test or an older run as root) cannot be replaced: the
    error names it and says to remove it. Temporary files root left never block. A lock
    file of root's mode 0600 (made so before) is named too; root's next lock fixes it."""
    host, lock = runtime.host, lock_dir / "routed.lock"
    verdicts = Path(f"{lock}.unhealthy.json")
    _add(runtime, containers, lock, "a", "b", "c")
    cfg = WiringConfig(lock_file=str(lock))
    in_netns(host, shared_routes.set_unhealthy, {"vethr0gone"}, cfg)  # holds nothing
    assert _owner(verdicts)[0] == 0

    error = refused(host, lock, "b")
    assert str(verdicts) in error
    assert f"remove it (rm {verdicts})" in error
    assert refused(host, lock, "b") == error  # stable: the daemon logs each message once
    assert _shared(host) == (_veths("a", "b", "c"),) * 2

    verdicts.unlink()
    for leftover in (f"{verdicts}.tmp", f"{verdicts}.x1y2z3.tmp"):
        Path(leftover).write_text("{")  # root's, 0644: never opened by the announcer
    assert publish(host, lock, "b") == {ANY4, ANY6}
    assert _owner(verdicts) == (NOBODY, 0o644)

    lock.chmod(0o600)
    error = refused(host, lock, "c")
    assert f"opening lock {lock}" in error
    assert f"chmod 0644 {lock}" in error
    assert _shared(host) == (_veths("a", "c"),) * 2
    in_netns(host, shared_routes.sweep, cfg)  # root's lock
    assert _owner(lock) == (0, 0o644)
    assert publish(host, lock, "c") == {ANY4, ANY6}
    assert _shared(host) == (_veths("a", "b"),) * 2


def test_stale_entries_stay_in_roots_record_when_the_announcer_may_not_prune_them(
    runtime: Runtime, containers: NewNs, lock_dir: Path
) -> None:
    """A record that only loses stale entries (veths gone) need not be saved: they count
    for nothing (a holder counts only while name and ifindex match a live link)."""
    host, lock = runtime.host, lock_dir / "routed.lock"
    holders = Path(f"{lock}.holders.json")
    ns = _add(runtime, containers, lock, "a", "b", "c")
    sh(None, "ip", "netns", "del", ns["a"])  # no DEL: a's veth goes with its namespace
    assert _shared(host) == (_veths("b", "c"),) * 2
    record = holders.read_text()

    assert publish(host, lock, "b") == {ANY4, ANY6}
    assert _shared(host) == (_veths("c"),) * 2
    assert holders.read_text() == record  # root's, a still in it
    assert publish(host, lock) == {ANY4, ANY6}
    assert _shared(host) == (_veths("b", "c"),) * 2
    in_netns(host, shared_routes.sweep, WiringConfig(lock_file=str(lock)))  # root's GC
    assert _recorded(lock) == {ANY4: _veths("b", "c"), ANY6: _veths("b", "c")}


def test_what_the_unit_must_grant_is_named(
    runtime: Runtime, containers: NewNs, lock_dir: Path
) -> None:
    """Without CAP_NET_ADMIN, with the lock's directory read-only (ProtectSystem=strict
    without ReadWritePaths=, here a read-only bind mount in a private mount namespace) or
    not writable for the announcer (upstream systemd's /run/lock, 0755 root): a
    WiringError saying what is missing, and no group changed."""
    host, lock = runtime.host, lock_dir / "routed.lock"
    _add(runtime, containers, lock, "a", "b", "c")
    lock_dir.chmod(0o755)
    assert f"uid {NOBODY}, may not write in {lock_dir})" in refused(host, lock, "b")
    lock_dir.chmod(0o1777)
    assert _shared(host) == (_veths("a", "b", "c"),) * 2
    names, net = json.dumps(sorted(_veths("b"))), f"--net=/run/netns/{host}"
    no_caps = [*DROP[:4], "--inh-caps=-all", "--"]
    read_only = ["unshare", "--mount", "--propagation=private", "sh", "-c",
                 'mount --bind -o ro "$0" "$0" && exec "$@"', str(lock_dir)]  # fmt: skip
    # Read-only first: the other writes the verdict file before netlink refuses it.
    for wrap, expected in ((read_only, "ReadWritePaths="), ([], "needs CAP_NET_ADMIN")):
        argv = [*wrap, "nsenter", net, *(no_caps if not wrap else DROP), python(), "-c",
                CHILD, names, str(lock)]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        assert expected in json.loads(proc.stdout).get("error", ""), proc.stdout
        assert _shared(host) == (_veths("a", "b", "c"),) * 2
