"""The documented commands, run as written, reach an announced route (issue 17).

The shell blocks of README.md ("60-second quickstart", "Install (Debian 12, from the
wheel)") and docs/exabgp.md ("Debian's ExaBGP 4.2.21") are taken from the Markdown, not
retyped, and run on a throwaway view of this machine (tests/literal.py: a private mount
namespace with overlays over /etc, /opt, /usr, /var and /root, inside test network
namespaces). A "container" route as the routed plugin makes it (a /32 and a /128 on a
vethr* host end, proto 180; docs/routed.md) must reach the leaf's (FRR's) RIB.

What differs from a user's run, and nothing else:

* the edits the docs ask for ("set policy.allow", "edit neighbor addresses first",
  ``$EDITOR ...``) are the substitutions below, made by ``$EDITOR``, after checking that
  the doc line names them (the quickstart says them in comments, so an ``"$EDITOR" FILE``
  line goes where the comment is); the test's leaf is 10.98.0.1/fd00:98::1, not the
  shipped 10.99.0.1, so the edits matter;
* ``systemctl`` is tests/unitrun.py (no systemd PID 1 here): ``enable --now``/``restart``
  run the unit's ExecStartPre and ExecStart with its Environment= lines and drop-ins, as
  its User= with its capabilities (setpriv), without its sandboxing;
  ``systemd-sysusers`` and ``apt-get`` run for real (inside the overlays);
* pip installs from a local wheelhouse and apt from Debian's .debs put in apt's archive
  cache (``make debian-exabgp``): the namespaces have no route out;
* a block's last ``announcer status`` runs once the route is in the leaf's RIB (right
  after ``systemctl enable --now`` the daemon may not be up yet, for a user too), and a
  block that ends with ExaBGP in the foreground runs in the background.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import wheels
from tests.literal import Host, Script, insert_at, shell_block
from tests.netlab import REPO, FrrPeer, netns, poll, sh, veth_pair

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.frr]

README = REPO / "README.md"
EXABGP_DOC = REPO / "docs" / "exabgp.md"
QUICKSTART = "## 60-second quickstart"
INSTALL = "## Install (Debian 12, from the wheel)"
DEBIAN_UNIT = "### Under the announcer's unit"
DEBIAN_BY_HAND = "### By hand"
DEBIAN_SERVICE = "### Under Debian's exabgp.service"
DEBS = REPO / ".cache" / "debian-exabgp"

LEAF_V4, HOST_V4, LEAF_V6, HOST_V6 = "10.98.0.1", "10.98.0.2", "fd00:98::1", "fd00:98::2"
HOST_ASN, LEAF_ASN = 65001, 65000
CONTAINER_V4, CONTAINER_V6 = "10.200.0.1/32", "fd00:200::1/128"
HOST_VETH = "vethrxd0"  # announcer.yaml's kernel.interfaces: "vethr*"
ROUTE_TIMEOUT = 60
VERSION_5 = "exabgp_connected version='exabgp 5.0.15'"
VERSION_4 = "exabgp_connected version='exabgp 4.2.21'"

ETC = "/etc/anycast-announcer"
ANNOUNCER_YAML = f"{ETC}/announcer.yaml"
# What the docs ask a user to change, keyed by the words their line must say.
YAML_EDITS = {
    "policy.allow": ('allow: ["10.0.0.0/8"]', 'allow: ["10.200.0.0/16", "fd00:200::/64"]'),
    "exabgp.neighbors": ('neighbors: [10.99.0.1, "fd00:99::1"]',
                         f'neighbors: [{LEAF_V4}, "{LEAF_V6}"]'),
}  # fmt: skip
DIALECT_EDIT = {"exabgp.dialect": ("dialect: 5", "dialect: 4")}
CONF_EDITS = (("10.99.0.", "10.98.0."), ("fd00:99::", "fd00:98::"))  # neighbor, local-address


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def wheelhouse(project_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wheels.wheelhouse(tmp_path_factory.mktemp("wheelhouse"), project_wheel)


@pytest.fixture(scope="session")
def debian_debs() -> Path:
    """Debian's exabgp .debs (`make debian-exabgp`); skipped only when apt is unreachable."""
    proc = subprocess.run(["make", "-s", "debian-exabgp"], cwd=REPO, capture_output=True,
                          text=True, check=False, timeout=300)  # fmt: skip
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 and ("Failed to fetch" in out or "Temporary failure" in out):
        pytest.skip(f"apt is unreachable: {out.strip()[-300:]}")
    assert proc.returncode == 0, out
    assert sorted(DEBS.glob("exabgp_4.2.*.deb")), out
    return DEBS


@contextlib.contextmanager
def fabric(workdir: Path) -> Iterator[tuple[str, FrrPeer]]:
    """host <-> leaf (FRR, AS 65000) and a "container" behind a vethr* host end."""
    with netns("host") as host, netns("leaf") as leaf, netns("ctr") as ctr:
        veth_pair(host, "eth-leaf", leaf, "eth-host")
        for ns, dev, v4, v6 in ((host, "eth-leaf", HOST_V4, HOST_V6),
                                (leaf, "eth-host", LEAF_V4, LEAF_V6)):  # fmt: skip
            sh(ns, "ip", "addr", "add", f"{v4}/24", "dev", dev)
            sh(ns, "ip", "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad")
        veth_pair(host, HOST_VETH, ctr, "eth0")
        sh(ctr, "ip", "addr", "add", CONTAINER_V4, "dev", "eth0")
        sh(ctr, "ip", "-6", "addr", "add", CONTAINER_V6, "dev", "eth0", "nodad")
        for family, prefix in (("-4", CONTAINER_V4), ("-6", CONTAINER_V6)):
            sh(host, "ip", family, "route", "add", prefix, "dev", HOST_VETH, "proto", "180")
        frr = FrrPeer.start(
            leaf, workdir / "frr", LEAF_ASN, LEAF_V4, [(HOST_V4, HOST_ASN), (HOST_V6, HOST_ASN)]
        )
        try:
            yield host, frr
        finally:
            frr.stop()


@contextlib.contextmanager
def host_on_fabric(tmp_path: Path, wheelhouse: Path) -> Iterator[tuple[Host, FrrPeer]]:
    with fabric(tmp_path) as (ns, frr), Host.started(ns, tmp_path / "host", wheelhouse) as host:
        yield host, frr


# --------------------------------------------------------------------------- helpers


def asks(lines: list[str], where: str, *words: str) -> None:
    """The doc line containing ``where`` names every one of ``words``: the test makes the
    edits the docs ask for, no more, no fewer."""
    (line,) = [line for line in lines if where in line]
    for word in words:
        assert word in line, f"the docs no longer ask for {word}: {line!r}"


def said(lines: list[str], where: str, edits: dict[str, tuple[str, str]]) -> list[tuple[str, str]]:
    asks(lines, where, *edits)
    return list(edits.values())


def fresh(paths: dict[str, dict[str, Any]], prefix: str) -> bool:
    """``prefix`` is in the RIB and not stale: announced over the session that is up now
    (graceful restart keeps a stopped ExaBGP's routes as stale until then)."""
    path = paths.get(prefix)
    return path is not None and not path.get("stale", False)


def routes_reached(frr: FrrPeer, after: int, script: Script | None = None,
                   log: Path | None = None) -> None:  # fmt: skip
    """Both container routes in the leaf's RIB, announced over a session established after
    ``after`` sessions, next hop this host (next-hop self)."""

    def reached() -> bool:
        if script is not None and not script.running():
            raise AssertionError(f"the block ended (rc={script.proc.returncode})")
        if frr.connections_established(HOST_V4) <= after:
            return False
        return fresh(frr.bgp_prefixes("ipv4"), CONTAINER_V4) and fresh(
            frr.bgp_prefixes("ipv6"), CONTAINER_V6
        )

    try:
        poll(reached, ROUTE_TIMEOUT, f"{CONTAINER_V4} and {CONTAINER_V6} in the leaf's RIB")
    except AssertionError as exc:
        extra = script.output() if script is not None else ""
        if log is not None and log.exists():
            extra += log.read_text(errors="replace")
        raise AssertionError(f"{exc}\n{extra[-6000:]}") from None
    v4 = frr.bgp_prefixes("ipv4")[CONTAINER_V4]
    assert v4["nexthops"][0]["ip"] == HOST_V4, v4


def logged(read: Callable[[], str], line: str) -> None:
    """``line`` in the output ``read`` returns, soon (ExaBGP may relay its helper's stderr)."""
    poll(lambda: line in read(), 10, f"{line!r} logged")


def assert_status(out: str) -> None:
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if "/" in line[:40]}
    assert rows.get(CONTAINER_V4) == "yes", out
    assert rows.get(CONTAINER_V6) == "yes", out


def unit_log(host: Host, unit: str) -> str:
    path = host.workdir / "units" / f"{unit}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def install(host: Host, frr: FrrPeer, project_wheel: Path) -> Path:
    """README "Install" as written, in a folder holding what it says to copy to the host;
    returns that folder once the route is announced and `announcer status` shows it."""
    copy = host.workdir.parent / "copy"
    for name in ("exabgp", "packaging"):
        shutil.copytree(REPO / name, copy / name)
    shutil.copy(project_wheel, copy)
    lines = shell_block(README, INSTALL)
    assert lines[-1].startswith("announcer status"), "the block ends with `announcer status`"
    host.edit(ANNOUNCER_YAML, *said(lines, f"$EDITOR {ANNOUNCER_YAML}", YAML_EDITS))
    conf = f"{ETC}/exabgp5.conf"
    asks(lines, f"$EDITOR {conf}", "neighbor", "local-address")
    host.edit(conf, *CONF_EDITS)
    host.run(lines[:-1], copy, "install")
    routes_reached(frr, 0, log=host.workdir / "units" / "anycast-announcer-exabgp.log")
    assert_status(host.run(lines[-1:], copy, "install-status"))
    return copy


# --------------------------------------------------------------------------- the tests


def test_the_quickstart_as_written_announces_a_container_route(
    tmp_path: Path, wheelhouse: Path
) -> None:
    checkout = wheels.copy_source(tmp_path / "checkout", ("exabgp", "packaging"))
    lines = shell_block(README, QUICKSTART)
    yaml_line = "install -D exabgp/announcer.yaml"
    lines = insert_at(lines, yaml_line, f'"$EDITOR" {ANNOUNCER_YAML}')
    conf = "exabgp/exabgp5.conf"
    lines = insert_at(lines, "edit neighbor addresses", f'"$EDITOR" {conf}', before=True)
    with host_on_fabric(tmp_path, wheelhouse) as (host, frr):
        host.edit(ANNOUNCER_YAML, *said(lines, yaml_line, YAML_EDITS))
        host.edit(str(checkout / conf), *CONF_EDITS)
        script = host.start(lines, checkout, "quickstart")
        try:
            routes_reached(frr, 0, script)
        finally:
            script.stop()
        assert sorted(host.edited()) == sorted([ANNOUNCER_YAML, str(checkout / conf)])


@dataclass
class Installed:
    host: Host
    frr: FrrPeer
    copy: Path  # what README "Install" says to copy to the host, the blocks' folder


@pytest.fixture(scope="module")
def installed(
    tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path, project_wheel: Path
) -> Iterator[Installed]:
    """A host after README "Install", shared by the tests below (the Debian one goes on
    from there): the install runs once per module, not once per test."""
    tmp_path = tmp_path_factory.mktemp("installed")
    with host_on_fabric(tmp_path, wheelhouse) as (host, frr):
        yield Installed(host, frr, install(host, frr, project_wheel))


def test_the_install_as_written_announces_a_container_route(installed: Installed) -> None:
    """(The route and `announcer status` are checked by the fixture.)"""
    logged(lambda: unit_log(installed.host, "anycast-announcer-exabgp"), VERSION_5)
    assert installed.host.edited()[:2] == [ANNOUNCER_YAML, f"{ETC}/exabgp5.conf"]


def test_debians_exabgp_as_written_announces_a_container_route(
    installed: Installed, debian_debs: Path
) -> None:
    """After README "Install", each way of docs/exabgp.md "Debian's ExaBGP 4.2.21" in turn,
    each reaching the route over a new session."""
    host, frr, copy = installed.host, installed.frr, installed.copy
    host.run([f"cp {debian_debs}/*.deb /var/cache/apt/archives/"], copy, "seed-apt-cache")

    lines = shell_block(EXABGP_DOC, DEBIAN_UNIT)
    conf = f"{ETC}/exabgp4.conf"
    asks(lines, f"$EDITOR {conf}", "neighbor", "local-address")
    host.edit(conf, *CONF_EDITS)
    host.edit(ANNOUNCER_YAML, *said(lines, f"$EDITOR {ANNOUNCER_YAML}", DIALECT_EDIT))
    sessions = frr.connections_established(HOST_V4)
    host.run(lines[:-1], copy, "debian-unit")
    log = host.workdir / "units" / "anycast-announcer-exabgp.log"
    routes_reached(frr, sessions, log=log)
    logged(lambda: unit_log(host, "anycast-announcer-exabgp").split(VERSION_5)[-1], VERSION_4)
    assert_status(host.run(lines[-1:], copy, "debian-unit-status"))

    lines = shell_block(EXABGP_DOC, DEBIAN_BY_HAND)
    sessions = frr.connections_established(HOST_V4)
    script = host.start(lines, copy, "debian-by-hand")
    try:
        routes_reached(frr, sessions, script)
    finally:
        script.stop()
    logged(script.output, VERSION_4)
    logged(script.output, "control_socket_failed")  # as the docs say

    lines = shell_block(EXABGP_DOC, DEBIAN_SERVICE)
    sessions = frr.connections_established(HOST_V4)
    host.run(lines[:-1], copy, "debian-service")
    log = host.workdir / "units" / "exabgp.log"
    routes_reached(frr, sessions, log=log)
    logged(lambda: unit_log(host, "exabgp"), VERSION_4)
    logged(lambda: unit_log(host, "exabgp"), "control_socket_fallback")  # as the docs say
    assert_status(host.run(lines[-1:], copy, "debian-service-status"))
