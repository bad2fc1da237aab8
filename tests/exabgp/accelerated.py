"""Run ExaBGP through announcer/exabgp/launcher.py where tests expect an ``exabgp`` binary.

``ExaBGPProcess.start`` runs ``[exabgp, conf]``; :func:`launcher_executable` writes a small
Python executable that becomes ``python -m announcer.exabgp.launcher [--stock] conf`` with
the given interpreter (a venv's, so the ExaBGP release is that venv's) and this checkout on
PYTHONPATH. Python rather than sh: dash drops the ``exabgp.*`` environment variables,
whose names have dots. A ``python`` beside it runs the same interpreter, for the helpers
that tests/exabgp/scripted.py starts with the interpreter next to the ExaBGP it is given.
"""

from __future__ import annotations

from pathlib import Path

from tests.netlab import REPO


def _executable(path: Path, python: str, argv: list[str]) -> str:
    body = (
        "import os, sys\n"
        f"path = [{str(REPO)!r}, *filter(None, os.environ.get('PYTHONPATH', '').split(':'))]\n"
        "os.environ['PYTHONPATH'] = ':'.join(path)\n"
        f"os.execv({python!r}, {argv!r} + sys.argv[1:])\n"
    )
    path.write_text(f"#!{python}\n{body}")
    path.chmod(0o755)
    return str(path)


def launcher_executable(workdir: Path, python: str, stock: bool = False) -> str:
    """workdir/launcher-bin/exabgp (the launcher) and workdir/launcher-bin/python."""
    bindir = workdir / "launcher-bin"
    bindir.mkdir(parents=True, exist_ok=True)
    _executable(bindir / "python", python, [python])
    argv = [python, "-m", "announcer.exabgp.launcher", *(["--stock"] if stock else [])]
    return _executable(bindir / "exabgp", python, argv)


def stock_executable(workdir: Path, bindir: Path) -> str:
    """workdir/stock-bin/exabgp: the venv's own console script (and its python), linked
    from outside the venv so tests/netlab.py's ExaBGPProcess runs it as given instead of
    through the launcher, as it runs every venv's ExaBGP."""
    linkdir = workdir / "stock-bin"
    linkdir.mkdir(parents=True, exist_ok=True)
    for name in ("exabgp", "python"):
        link = linkdir / name
        if not link.exists():
            link.symlink_to(bindir / name)
    return str(linkdir / "exabgp")
