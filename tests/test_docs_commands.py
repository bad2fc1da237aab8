"""Every `announcer`, `announcer-routed`, `announcer-docker-routed` and `make` command in
the fenced shell blocks of README.md and docs/, and the start commands in the headers of
exabgp/*.conf and exabgp.env, parses as written (issue 17).

How a line is read: backslash continuations are joined, a leading ``$ `` prompt dropped,
the line split like a shell does (comments, quotes, ``&&``, ``||``, ``;``, ``|``, ``$(..)``)
into simple commands, and leading ``VAR=value`` assignments, ``sudo`` and ``env`` skipped.
A command is ours when its program's file name is one of the four (``/usr/local/bin/
announcer`` and ``.venv/bin/announcer`` too). Then:

* ``announcer SUB ...``: the CLI's own argparse parser accepts the arguments (it reads no
  file); ``announcer exabgp ...`` goes through ``announcer.exabgp.start`` with exec stubbed
  (its ``--env`` file read from exabgp/exabgp.env, the one the docs name);
* ``announcer-docker-routed ...``: the driver's parser accepts them;
* ``announcer-routed``: a CNI plugin, driven by CNI_* variables, takes no arguments;
* ``make T``: T is a target of the Makefile (``VAR=value`` arguments allowed).

A placeholder is not a command to run: a line with ``<name>``, ``...`` or ``…`` (outside
its comment) is skipped, and so are blocks in other languages (yaml, json, ini, python).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from announcer.cli import _parser
from announcer.cni.docker_driver import _parse_args as docker_driver_args
from announcer.exabgp import start as exabgp_start
from tests.literal import fenced_blocks

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SHELL_BLOCKS = {"", "sh", "bash", "shell", "console"}
OURS = {"announcer", "announcer-routed", "announcer-docker-routed", "make"}
OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", "$", "`"}
PLACEHOLDER = re.compile(r"<[\w.-]+>|\.\.\.|…")
SHIPPED_ENV = REPO / "exabgp" / "exabgp.env"


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    line: str
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {self.line}"


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(offset of the first physical line, the line with continuations joined)."""
    start, pending = 0, ""
    for number, raw in enumerate(text.splitlines()):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        yield start, (pending + raw).strip().removeprefix("$ ")
        pending = ""


def simple_commands(line: str) -> list[list[str]]:
    """The line's simple commands as argv lists (shell comments dropped)."""
    lexer = shlex.shlex(line.replace("$(", " $ ("), posix=True, punctuation_chars="|&;()`")
    lexer.wordchars += "$=/.-~:,*%+@[]{}<>!^"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in OPERATORS or token in ("((", "))"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def program(argv: list[str]) -> list[str]:
    """argv without leading assignments, ``sudo`` and ``env``."""
    while argv and (re.match(r"^\w+=", argv[0]) or argv[0] in ("sudo", "env")):
        argv = argv[1:]
    return argv


def documented_commands() -> list[Command]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for lang, block in fenced_blocks(text):
            if lang not in SHELL_BLOCKS:
                continue
            first = text[: text.index(block)].count("\n") + 1
            for offset, line in logical_lines(block):
                code = line.split(" #", 1)[0]
                words = code.split()
                if not words or PLACEHOLDER.search(code):
                    continue
                try:
                    commands = simple_commands(line)
                except ValueError:  # a diagram or prose line with a stray quote
                    assert Path(words[0]).name not in OURS, f"{path.name}: cannot split {line!r}"
                    continue
                for argv in map(program, commands):
                    if argv and Path(argv[0]).name in OURS:
                        where = f"{path.relative_to(REPO)}:{first + offset}"
                        found.append(Command(where, line, tuple(argv)))
    return found


def header_commands() -> list[Command]:
    """The start commands in the comments of exabgp/*.conf and exabgp/exabgp.env."""
    found = []
    for path in sorted((REPO / "exabgp").glob("exabgp*")):
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            match = re.match(r"^#\s+(?:Start:\s+)?(announcer .*)$", raw)
            if match:
                argv = tuple(shlex.split(match.group(1)))
                found.append(Command(f"{path.relative_to(REPO)}:{number}", raw, argv))
    return found


COMMANDS = documented_commands() + header_commands()


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    targets: set[str] = set()
    for match in re.finditer(r"^([\w. $()/-]+?)\s*:(?!=)", text, re.MULTILINE):
        targets.update(match.group(1).split())
    return targets


class _Exec(Exception):
    """Raised where os.execv would replace the process."""


def check_exabgp(args: list[str]) -> str | None:
    """What ``announcer exabgp ARGS`` says is wrong with ARGS, or None when it would exec."""
    args = [str(SHIPPED_ENV) if i and args[i - 1] == "--env" else a for i, a in enumerate(args)]
    err = io.StringIO()
    with (
        mock.patch("os.execv", side_effect=_Exec),
        mock.patch.dict(os.environ),
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        try:
            code = exabgp_start.start(args)
        except _Exec:
            return None
    return None if code == 0 else f"exit {code}: {err.getvalue().strip()}"


def check_argparse(parse: Callable[[list[str]], object], args: list[str]) -> str | None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parse(args)
        except SystemExit as exc:
            return None if exc.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


def problem(command: Command) -> str | None:
    name, args = Path(command.argv[0]).name, list(command.argv[1:])
    if name == "make":
        missing = {a for a in args if "=" not in a and not a.startswith("-")}
        missing -= makefile_targets()
        return f"no Makefile target {sorted(missing)}" if missing else None
    if name == "announcer-routed":
        return f"a CNI plugin takes no arguments: {args}" if args else None
    if name == "announcer-docker-routed":
        return check_argparse(docker_driver_args, args)
    if args[:1] == ["exabgp"]:
        return check_exabgp(args[1:])
    return check_argparse(_parser().parse_args, args)


def test_the_docs_have_commands_of_each_kind() -> None:
    """The reader finds what it is meant to (a broken reader would pass everything)."""
    names = {Path(c.argv[0]).name for c in COMMANDS}
    assert names == OURS, names
    subs = {c.argv[1] for c in COMMANDS if c.argv[0] == "announcer"}
    assert {"check", "plan", "status", "exabgp"} <= subs, subs
    headers = {c.where.split(":")[0] for c in header_commands()}
    assert headers == {"exabgp/exabgp4.conf", "exabgp/exabgp5.conf", "exabgp/exabgp.env"}


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_a_documented_command_parses(command: Command) -> None:
    assert problem(command) is None, f"{command}\n  {problem(command)}"


@pytest.mark.parametrize(
    ("line", "wrong"),
    [
        ("announcer status --all", "unrecognized"),
        ("announcer stats -c x.yaml", "invalid choice"),
        ("announcer drain -c x.yaml --mode fast", "invalid choice"),
        ("announcer exabgp --env", "needs a value"),
        ("announcer exabgp --env exabgp.env", "arguments are missing"),
        ("announcer-docker-routed --no-such-option", "unrecognized"),
        ("make no-such-target", "no Makefile target"),
        ("announcer-routed ADD", "no arguments"),
    ],
)
def test_a_wrong_command_is_caught(line: str, wrong: str) -> None:
    (argv,) = map(program, simple_commands(line))
    found = problem(Command("test", line, tuple(argv)))
    assert found is not None, line
    assert wrong in found, found


def test_the_reader_splits_like_a_shell() -> None:
    line = 'A=1 sudo announcer check -c "a b.yaml" && make test  # announcer plan'
    assert list(map(program, simple_commands(line))) == [
        ["announcer", "check", "-c", "a b.yaml"],
        ["make", "test"],
    ]
    assert simple_commands("kill -TERM $(pgrep -f 'announcer run')") == [
        ["kill", "-TERM"], ["pgrep", "-f", "announcer run"],
    ]  # fmt: skip


def test_exabgp4_confs_start_command_is_the_one_docs_exabgp_md_runs() -> None:
    """tests/test_readme_literal.py runs docs/exabgp.md's command: the header's is the same."""
    (header,) = [c.argv for c in header_commands() if c.where.startswith("exabgp/exabgp4")]
    documented = {c.argv for c in COMMANDS if c.where.startswith("docs/exabgp.md")}
    assert header in documented, header
