"""Health verdicts on a shared anycast IP: its group is its holders minus the unhealthy ones.

The announcer's call (shared_routes.set_unhealthy) runs in-process, in a thread that entered
the "host" namespace; the plugin runs as a runtime runs it (tests/cni/conftest.py), so every
ADD/DEL is a fresh process reading the verdict file. Which holders serve is read from the
kernel's own forwarding decision: `ip route get` of 64 UDP flows (hash policy L4) arriving
from a client container's veth, both families.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from announcer.cni import shared_routes
from announcer.cni.scheme import WiringConfig, host_ifname
from tests.cni.conftest import (
    LOCK_FILE,
    Reply,
    Runtime,
    netconf,
    nexthops,
    our_routes,
    route_monitor,
    static_ipam,
)
from tests.netlab import sh

pytestmark = [pytest.mark.netns, pytest.mark.cni]

NewNs = Callable[[], str]
T = TypeVar("T")
ANY4, ANY6 = "10.9.9.1", "fd00:9::1"
CLIENT4, CLIENT6 = "10.1.0.99", "fd00:1::99"
CFG = WiringConfig(lock_file=str(LOCK_FILE))
HOLDERS_FILE = Path(f"{LOCK_FILE}.holders.json")
VERDICT_FILE = Path(f"{LOCK_FILE}.unhealthy.json")
FLOWS = 64  # a member missing from 64 L4 flows over 3: p = 3 * (2/3)**64, about 2e-11
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _enter(ns: str) -> None:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns}")
    finally:
        os.close(fd)


def in_netns(ns: str, fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) in a new thread that entered ns (setns is per thread: this one stays)."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            _enter(ns)
            result.append(fn(*args))
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    if error:
        raise error[0]
    assert result, f"{fn.__name__} in {ns} did not finish"
    return result[0]


def set_unhealthy(host: str, *cids: str) -> set[str]:
    """The announcer's call, for these containers' veths; the IPs whose group changed."""
    return {str(ip) for ip in in_netns(host, shared_routes.set_unhealthy, _veths(*cids), CFG)}


def _conf(primary: str, *extra: str) -> dict[str, Any]:
    return netconf(static_ipam(primary), args={"cni": {"extraIPs": list(extra)}})


def _veths(*cids: str) -> set[str]:
    return {host_ifname(cid, "eth0") for cid in cids}


def _shared(host: str) -> tuple[frozenset[str], frozenset[str]]:
    """The devices of ANY4's and ANY6's routes (empty when there is no route)."""
    return our_routes(host).get(ANY4, frozenset()), our_routes(host, 6).get(ANY6, frozenset())


def _served(host: str) -> tuple[set[str], set[str]]:
    """The devices the kernel forwards the client's flows to ANY4 and ANY6 through."""
    found = []
    for dst, src in ((ANY4, CLIENT4), (ANY6, CLIENT6)):
        batch = "".join(f"route get {dst} from {src} iif {next(iter(_veths('client')))} "
                        f"ipproto udp sport {10000 + i} dport 53\n" for i in range(FLOWS))  # fmt: skip
        out = sh(host, "ip", "-o", "-batch", "-", input=batch).stdout
        found.append({m.group(1) for m in re.finditer(r"\bdev (\S+)", out)} - _veths("client"))
    return found[0], found[1]


def _recorded() -> dict[str, set[str]]:
    """The holders file: IP -> host veths."""
    doc = json.loads(HOLDERS_FILE.read_text())
    return {ip: set(veths) for ip, veths in doc["holders"].items()}


def _setup(
    runtime: Runtime, containers: NewNs, *cids: str
) -> tuple[dict[str, str], dict[str, Reply]]:
    """Containers cids holding ANY4 and ANY6, a client without them; hashing on L4. Their
    namespaces and ADD replies."""
    sh(runtime.host, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1",
       "net.ipv6.fib_multipath_hash_policy=1")  # fmt: skip
    sh(runtime.host, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_seed=17", check=False)
    ns = {cid: containers() for cid in (*cids, "client")}
    added = {cid: runtime.add(_conf(f"10.1.0.{i + 1}/24", ANY4, ANY6), cid, ns[cid])
             for i, cid in enumerate(cids)}  # fmt: skip
    assert all(r.ok for r in added.values()), added
    reply = runtime.add(netconf(static_ipam(f"{CLIENT4}/24", f"{CLIENT6}/64")), "client",
                        ns["client"])  # fmt: skip
    assert reply.ok, reply
    return ns, added


def test_unhealthy_holders_leave_the_group_and_every_one_serves_when_all_are(
    runtime: Runtime, containers: NewNs, tmp_path: Path
) -> None:
    host = runtime.host
    ns, added = _setup(runtime, containers, "a", "b", "c")
    abc = _veths("a", "b", "c")
    assert _shared(host) == (abc, abc)
    assert _served(host) == (abc, abc)
    with route_monitor(host, tmp_path / "monitor.log") as monitor:
        assert set_unhealthy(host, "b") == {ANY4, ANY6}
        assert _shared(host) == (_veths("a", "c"),) * 2
        assert _served(host) == (_veths("a", "c"),) * 2
        assert json.loads(VERDICT_FILE.read_text())["unhealthy"] == sorted(_veths("b"))
        assert _recorded() == {ANY4: abc, ANY6: abc}  # b is still a holder
        assert set_unhealthy(host, "b") == set()  # the same set again: nothing to do
        # b out for health is no CHECK failure.
        checked = dict(_conf("10.1.0.2/24", ANY4, ANY6), prevResult=added["b"].doc)
        assert runtime.call("CHECK", checked, "b", ns["b"]).ok

        assert set_unhealthy(host, "a", "b", "c") == {ANY4, ANY6}  # all sick: all serve
        assert _shared(host) == (abc, abc)
        assert _served(host) == (abc, abc)
        assert set_unhealthy(host) == set()  # all healthy: the same members
        assert _shared(host) == (abc, abc)
        assert set_unhealthy(host, "c") == {ANY4, ANY6}
        assert _served(host) == (_veths("a", "b"),) * 2
        assert set_unhealthy(host) == {ANY4, ANY6}
        assert _served(host) == (abc, abc)
        assert monitor.deleted(ANY4) == []
        assert monitor.deleted(ANY6) == []


def test_plugin_add_and_del_apply_the_verdicts(runtime: Runtime, containers: NewNs) -> None:
    """Every ADD/DEL is a fresh process: it honours the verdict file the announcer left."""
    host = runtime.host
    ns, _ = _setup(runtime, containers, "a", "b", "c")
    assert set_unhealthy(host, "b") == {ANY4, ANY6}

    ns["d"] = containers()
    assert runtime.add(_conf("10.1.0.4/24", ANY4, ANY6), "d", ns["d"]).ok
    assert _shared(host) == (_veths("a", "c", "d"),) * 2
    assert _served(host) == (_veths("a", "c", "d"),) * 2
    assert runtime.delete(_conf("10.1.0.1/24", ANY4, ANY6), "a", ns["a"]).ok
    assert _shared(host) == (_veths("c", "d"),) * 2
    assert _recorded() == {ANY4: _veths("b", "c", "d"), ANY6: _veths("b", "c", "d")}

    assert runtime.delete(_conf("10.1.0.2/24", ANY4, ANY6), "b", ns["b"]).ok
    assert _recorded() == {ANY4: _veths("c", "d"), ANY6: _veths("c", "d")}
    assert _shared(host) == (_veths("c", "d"),) * 2
    assert {nh.get("dev") for nh in nexthops(host)} == {None, *_veths("c", "d")}
    # The verdicts are the announcer's: a DEL leaves them (a name that holds nothing is
    # ignored).
    assert json.loads(VERDICT_FILE.read_text())["unhealthy"] == sorted(_veths("b"))

    # The last holder standing serves though unhealthy: c leaving hands the route to d.
    assert set_unhealthy(host, "d") == {ANY4, ANY6}
    assert _shared(host) == (_veths("c"),) * 2
    assert runtime.delete(_conf("10.1.0.3/24", ANY4, ANY6), "c", ns["c"]).ok
    assert _shared(host) == (_veths("d"),) * 2
    assert _served(host) == (_veths("d"),) * 2


def test_upgrade_gc_and_carrier(runtime: Runtime, containers: NewNs) -> None:
    """Without a holders file the groups are the record; GC (sweep) prunes veths that are
    gone and puts back a holder whose interface came back up."""
    host = runtime.host
    ns, _ = _setup(runtime, containers, "a", "b", "c")
    HOLDERS_FILE.unlink()  # as left by a plugin before the record existed
    assert set_unhealthy(host, "b") == {ANY4, ANY6}
    assert _shared(host) == (_veths("a", "c"),) * 2
    assert _recorded() == {ANY4: _veths("a", "b", "c"), ANY6: _veths("a", "b", "c")}
    assert set_unhealthy(host) == {ANY4, ANY6}
    assert _shared(host) == (_veths("a", "b", "c"),) * 2

    # c's interface goes down: the kernel drops its nexthop (and never puts it back).
    sh(ns["c"], "ip", "link", "set", "eth0", "down")
    assert _shared(host) == (_veths("a", "b"),) * 2
    assert in_netns(host, shared_routes.sweep, CFG) == []
    assert _shared(host) == (_veths("a", "b"),) * 2  # no carrier: not usable
    sh(ns["c"], "ip", "link", "set", "eth0", "up")
    in_netns(host, shared_routes.sweep, CFG)
    assert _shared(host) == (_veths("a", "b", "c"),) * 2
    # a's netns goes without a DEL: its veth with it; GC drops it from the record.
    sh(None, "ip", "netns", "del", ns["a"])
    assert _shared(host) == (_veths("b", "c"),) * 2
    in_netns(host, shared_routes.sweep, CFG)
    assert _recorded() == {ANY4: _veths("b", "c"), ANY6: _veths("b", "c")}


def test_a_state_file_of_another_namespace_is_ignored(runtime: Runtime, containers: NewNs) -> None:
    host = runtime.host
    _setup(runtime, containers, "a", "b")
    assert set_unhealthy(host, "b") == {ANY4, ANY6}
    doc = json.loads(VERDICT_FILE.read_text())
    VERDICT_FILE.write_text(json.dumps(dict(doc, netns="another-boot/cookie:1")))
    # Read as no verdicts: b serves again at the next change (here: the announcer's,
    # republishing what it had).
    assert set_unhealthy(host) == {ANY4, ANY6}
    assert _shared(host) == (_veths("a", "b"),) * 2


def test_bad_names_are_refused(runtime: Runtime) -> None:
    for bad in (["vethr 1"], ["x" * 16], [""]):
        with pytest.raises(shared_routes.WiringError, match=re.escape(repr(bad[0]))):
            in_netns(runtime.host, shared_routes.set_unhealthy, bad, CFG)


def _parallel(calls: list[Callable[[], Any]]) -> list[Any]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result(120) for f in [pool.submit(c) for c in calls]]


def _publishing(host: str, names: list[str], rng: random.Random) -> Callable[[], list[set[str]]]:
    """Start publishing random verdicts one after another (as the announcer's loop does);
    the returned stop() ends that and gives the sets published, in order."""
    published: list[set[str]] = []
    done = threading.Event()

    def publish() -> None:
        while not done.is_set() or not published:
            verdict = set(rng.sample(names, rng.randint(0, len(names))))
            set_unhealthy(host, *verdict)
            published.append(verdict)
            done.wait(0.05)  # pacing (a health check's verdicts change this often at most)

    thread = threading.Thread(target=publish)
    thread.start()

    def stop() -> list[set[str]]:
        done.set()
        thread.join(120)
        return published

    return stop


@pytest.mark.slow
def test_verdicts_in_parallel_with_add_and_del_stay_exact(
    runtime: Runtime, containers: NewNs, tmp_path: Path
) -> None:
    """Rounds of plugins DELeting and ADDing while the announcer publishes verdicts all
    along: after every round each group is exactly the live holders minus the last
    verdict's (all live ones if that leaves none), the record exactly the live holders, and
    no route was deleted while a holder was left."""
    host, n, rounds = runtime.host, 8, 5
    rng = random.Random(int(os.environ.get("SHARED_SEED", "23")))
    ns = {f"h{i}": containers() for i in range(n)}
    conf = {cid: _conf(f"10.7.0.{i + 1}/24", ANY4, ANY6) for i, cid in enumerate(ns)}
    with route_monitor(host, tmp_path / "monitor.log") as monitor:
        stop = _publishing(host, sorted(ns), random.Random(rng.random()))
        replies = _parallel([lambda c=c: runtime.add(conf[c], c, ns[c]) for c in ns])
        published = stop()
        assert all(r.ok for r in replies), [r for r in replies if not r.ok]
        live, counts = set(ns), [len(published)]
        for _ in range(rounds):
            expected = _veths(*(live - published[-1])) or _veths(*live)
            assert _shared(host) == (expected, expected), (sorted(live), published[-1])
            assert _recorded() == {ANY4: _veths(*live), ANY6: _veths(*live)}
            k = rng.randint(1, len(live) - 1) if len(live) > 1 else 0  # one holder stays
            going = set(rng.sample(sorted(live), k))
            coming = set(ns) - live
            calls = [lambda c=c: runtime.delete(conf[c], c, ns[c]) for c in going]
            calls += [lambda c=c: runtime.add(conf[c], c, ns[c]) for c in coming]
            stop = _publishing(host, sorted(ns), random.Random(rng.random()))
            replies = _parallel(calls)
            published = stop()
            counts.append(len(published))
            assert all(r.ok for r in replies), [r for r in replies if not r.ok]
            live = (live - going) | coming
        expected = _veths(*(live - published[-1])) or _veths(*live)
        assert _shared(host) == (expected, expected), (sorted(live), published[-1])
        assert monitor.deleted(ANY4) == []
        assert monitor.deleted(ANY6) == []
    assert min(counts) > 1, counts  # verdicts were published while plugins ran
