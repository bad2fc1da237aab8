"""Shared fixtures; tests marked netns/frr/exabgp skip with a reason when their part is missing."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import netlab


@functools.cache
def _netns_missing() -> str | None:
    """Why namespace tests cannot run here, or None. Probes by creating one."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "iproute2 `ip` is not installed"
    try:
        with netlab.netns("probe"):
            pass
    except (netlab.CommandError, OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns` is unavailable: {exc}"
    return None


def _frr_missing() -> str | None:
    for binary in ("zebra", "bgpd"):
        if not (netlab.FRR_DIR / binary).exists():
            return f"FRR is not installed ({netlab.FRR_DIR / binary} missing; apt-get install frr)"
    if shutil.which("vtysh") is None:
        return "FRR's vtysh is not installed"
    return None


def _docker_missing() -> str | None:
    from tests import dockerd

    return _netns_missing() or dockerd.missing()


def _containerd_missing() -> str | None:
    from tests import containerd

    return _netns_missing() or containerd.missing()


def _exabgp_missing() -> str | None:
    if not Path(netlab.DEFAULT_EXABGP).exists():
        return f"pinned ExaBGP not found at {netlab.DEFAULT_EXABGP} (run `make venv`)"
    return None


_MISSING: dict[str, Callable[[], str | None]] = {
    "netns": _netns_missing,
    "frr": _frr_missing,
    "exabgp": _exabgp_missing,
    "docker": _docker_missing,
    "containerd": _containerd_missing,
}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, missing in _MISSING.items():
        if item.get_closest_marker(marker) is not None and (reason := missing()):
            pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _stale_namespaces_removed() -> None:
    """Once per session: remove namespaces a crashed earlier run of ours left behind."""
    if os.geteuid() == 0 and shutil.which("ip") is not None:
        removed = netlab.cleanup_stale_namespaces()
        if removed:
            print(f"removed stale test namespaces: {removed}")


# The machine's own places for the product and the runtimes: no test may create them (they
# run in namespaces, private mounts and temporary directories). Checked once per session.
MACHINE_PATHS = (
    "/run/anycast-announcer", "/var/lib/anycast-announcer", "/etc/anycast-announcer",
    "/opt/anycast-announcer", "/run/lock/announcer-routed.lock", "/etc/cni/net.d",
    "/etc/exabgp", "/run/exabgp",
)  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def _machine_left_alone() -> Iterator[None]:
    before = {path for path in MACHINE_PATHS if os.path.lexists(path)}
    yield
    created = sorted(p for p in MACHINE_PATHS if os.path.lexists(p) and p not in before)
    assert not created, f"tests created {created} on the machine itself (remove them)"


@pytest.fixture(scope="module")
def bgp_link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[netlab.BgpLink]:
    """host/peer namespaces joined by a veth, FRR (AS 65000) in peer; shared by a module."""
    for missing in (_netns_missing, _frr_missing):
        if reason := missing():
            pytest.skip(reason)
    with netlab.bgp_link(tmp_path_factory.mktemp("bgp_link")) as link:
        yield link


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps -w dist .` on a copy of the source, once per session."""
    from tests import wheels

    return wheels.build_wheel(tmp_path_factory.mktemp("wheel"))
