"""``announcer exabgp [--env FILE] [--python PYTHON] [--stock] ARGS...``: start ExaBGP as
the shipped units do, in one command.

* ``--env FILE``: ``key=value`` lines (``#`` comments), e.g. exabgp/exabgp.env, put in the
  environment unless already set there, so a variable given by the caller (a unit's
  ``Environment=``, ``env exabgp.log.level=INFO ...``) wins, as it does over ExaBGP's own
  INI file. ExaBGP 4.2 and 5.0 both read ``exabgp.*`` variables.
* ``--python PYTHON``: the interpreter whose ExaBGP runs (default: this one's, the pinned
  5.0.15); e.g. ``/usr/bin/python3`` for Debian's 4.2.21.
* the rest goes to the launcher (docs/adr/0003-accelerated-exabgp-launcher.md): ``--stock``
  first, then ExaBGP's own arguments, untouched.

It execs ``PYTHON -I .../announcer/exabgp/launcher.py ARGS``: the ExaBGP process holds
only ExaBGP and the standard-library launcher (none of the announcer's imports), and
``-I`` keeps the launcher's directory and PYTHON* variables out of its module path.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from announcer.exabgp import launcher

USAGE = (
    "usage: announcer exabgp [--env FILE] [--python PYTHON] [--stock] ARGS...\n"
    "Run ExaBGP (ARGS as for `exabgp`, e.g. /etc/anycast-announcer/exabgp5.conf) with the\n"
    "speed fixes backported in memory on the ExaBGP releases they were verified against\n"
    "(--stock or ANNOUNCER_EXABGP_STOCK=1: without). --env FILE: key=value settings\n"
    "(exabgp/exabgp.env) unless already in the environment. --python: the interpreter whose\n"
    "ExaBGP runs (default: this one's). docs/exabgp.md, docs/adr/0003.\n"
)
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
EX_USAGE, EX_UNAVAILABLE, EX_CONFIG = 64, 69, 78


class EnvFileError(Exception):
    """A line of an env file that is not ``key=value``; the message names it."""


def parse_env(text: str, source: str = "<env>") -> dict[str, str]:
    """``key=value`` lines; blank lines and ``#`` comments skipped; a value is taken as
    written (no quotes, no expansion: systemd's EnvironmentFile= reads these lines alike)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not _KEY.match(key.strip()):
            raise EnvFileError(f"{source}:{number}: not key=value: {raw!r}")
        values[key.strip()] = value.strip()
    return values


def apply_env(values: Mapping[str, str], environ: MutableMapping[str, str]) -> list[str]:
    """Set each value unless the environment has it; the keys the environment kept."""
    kept = [key for key in values if key in environ]
    for key, value in values.items():
        environ.setdefault(key, value)
    return kept


def argv_for(python: str, args: list[str]) -> list[str]:
    return [python, "-I", str(Path(launcher.__file__).resolve()), *args]


def start(argv: list[str]) -> int:
    """Exec ExaBGP through the launcher; returns only on a usage or env file error."""
    args = list(argv)
    env_file, python = None, sys.executable
    while args and args[0] in ("--env", "--python", "-h", "--help"):
        option = args.pop(0)
        if option in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        if not args:
            sys.stderr.write(f"announcer exabgp: {option} needs a value\n{USAGE}")
            return EX_USAGE
        value = args.pop(0)
        if option == "--env":
            env_file = value
        else:
            python = value
    if not args or args == [launcher.STOCK_FLAG]:
        sys.stderr.write(f"announcer exabgp: ExaBGP's arguments are missing\n{USAGE}")
        return EX_USAGE
    if env_file is not None:
        try:
            values = parse_env(Path(env_file).read_text(encoding="utf-8"), env_file)
        except (OSError, UnicodeError, EnvFileError) as exc:
            sys.stderr.write(f"announcer exabgp: {exc}\n")
            return EX_CONFIG
        apply_env(values, os.environ)
    command = argv_for(python, args)
    try:
        os.execv(python, command)  # noqa: S606 (ExaBGP replaces this process)
    except OSError as exc:
        sys.stderr.write(f"announcer exabgp: cannot run {python}: {exc.strerror}\n")
        return EX_UNAVAILABLE
    raise AssertionError("unreachable")  # pragma: no cover
