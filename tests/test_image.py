"""The product image builds where no registry can be reached (issue 17).

`make image` runs against a dockerd in a namespace with no route out, so the build itself
has no network: its base is Debian made here with debootstrap (cached under build/image/,
made on the first run: about a minute) and pip installs from packaging/wheelhouse alone.
The image's commands then run in containers with --network none: `announcer check` of the
shipped config, the three commands' help, ExaBGP's version, and the default command
(ExaBGP starting the announcer). The dockerd and everything it holds go at the end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dockerd import Dockerd, dockerd
from tests.netlab import netns, poll, sh

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
TAG = "aa-product:test"
CONFIG = "/etc/anycast-announcer/announcer.yaml"
BUILD_TIMEOUT = 900  # a cold cache runs debootstrap and downloads every wheel


def pinned(package: str) -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (version,) = [d.split("==")[1] for d in project["dependencies"] if d.startswith(f"{package}==")]
    return version


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    with netns("image") as ns, dockerd(ns, tmp_path_factory.mktemp("image") / "docker") as d:
        routes = sh(ns, "ip", "-4", "route").stdout + sh(ns, "ip", "-6", "route").stdout
        outward = [r for r in routes.splitlines() if " dev lo " not in r]
        assert outward == [], f"the build must have no route out of {ns}"
        yield d


@pytest.fixture(scope="module")
def image(engine: Dockerd) -> str:
    env = {**os.environ, "DOCKER_HOST": engine.host}
    argv = ["make", "--no-print-directory", "image", f"IMAGE={TAG}", f"PYTHON={sys.executable}"]
    proc = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    assert proc.returncode == 0, f"make image failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    built = rf"^image: {re.escape(TAG)} built on anycast-announcer-base:debian-bookworm-\w+, "
    assert re.search(built, proc.stdout, re.MULTILINE), proc.stdout[-2000:]
    return TAG


def run(
    engine: Dockerd, image: str, entrypoint: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return engine.cli("run", "--rm", "--network", "none", "--entrypoint", entrypoint, image, *args)


def test_announcer_check_accepts_the_shipped_config(engine: Dockerd, image: str) -> None:
    checked = run(engine, image, "announcer", "check", "-c", CONFIG)
    assert checked.stderr == f"{CONFIG}: ok\n"
    shipped = run(engine, image, "cat", CONFIG).stdout
    assert shipped == (REPO / "exabgp" / "announcer.yaml").read_text()


def test_the_commands_run(engine: Dockerd, image: str) -> None:
    # the image's announcer is this checkout's: the same help, wrapped at the same width
    here = subprocess.run(
        [Path(sys.executable).parent / "announcer", "--help"],
        env={**os.environ, "COLUMNS": "100"}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    usage = engine.cli("run", "--rm", "--network", "none", "-e", "COLUMNS=100",
                       "--entrypoint", "announcer", image, "--help").stdout  # fmt: skip
    assert usage.startswith("usage: announcer ")
    assert usage == here
    assert "--state-dir" in run(engine, image, "announcer-docker-routed", "--help").stdout
    cni_version = """echo '{"cniVersion": "1.0.0"}' | CNI_COMMAND=VERSION announcer-routed"""
    cni = run(engine, image, "sh", "-c", cni_version)
    assert "1.0.0" in cni.stdout
    exabgp = run(engine, image, "exabgp", "version").stdout
    assert f"ExaBGP : {pinned('exabgp')}\n" in exabgp
    assert re.search(r"^Python : 3\.11\.", exabgp, re.MULTILINE), exabgp
    assert "From   : /opt/venv/lib/python3.11/site-packages/exabgp" in exabgp


def test_the_default_command_starts_exabgp_and_the_announcer(engine: Dockerd, image: str) -> None:
    name = "aa-product-run"
    engine.cli("run", "-d", "--name", name, "--network", "none", image)

    def logs() -> str:
        proc = engine.cli("logs", name)
        return proc.stdout + proc.stderr

    try:
        poll(lambda: "announcer_started" in logs(), 60, f"announcer_started in the logs of {name}")
        engine.cli("stop", name)
        assert "announcer_stopping reason=exabgp_shutdown" in logs()
        assert engine.cli("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    finally:
        engine.cli("rm", "-f", name, check=False)
