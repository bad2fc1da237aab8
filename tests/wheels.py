"""The project's wheel and a wheelhouse for installing it with no network (built once per
test session: tests/conftest.py's ``project_wheel``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.netlab import REPO

SOURCES = ("pyproject.toml", "README.md", "announcer")


def copy_source(dest: Path, extra: tuple[str, ...] = ()) -> Path:
    """What `pip install .` and the README need from a checkout, copied (a build leaves
    build/ and *.egg-info behind)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (*SOURCES, *extra):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, dest / name)
    return dest


def _pip(*args: str | Path) -> None:
    argv = [sys.executable, "-m", "pip", *(str(a) for a in args)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, f"{argv}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def build_wheel(workdir: Path) -> Path:
    """`pip wheel --no-deps -w dist .` (README "Install") on a copy of the source."""
    source = copy_source(workdir / "src")
    _pip("wheel", "-q", "--no-deps", "-w", workdir / "dist", source)
    (wheel,) = (workdir / "dist").glob("anycast_announcer-*.whl")
    return wheel


def build_requirements() -> list[str]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["build-system"]["requires"])


def wheelhouse(dest: Path, wheel: Path) -> Path:
    """The wheel, every runtime dependency and the build backend (for `pip install .`):
    `pip install --no-index --find-links dest` needs nothing else."""
    _pip("download", "-q", "-d", dest, wheel, *build_requirements())
    return dest
