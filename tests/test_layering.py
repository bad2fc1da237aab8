"""The architecture, checked: what each part may import (following imports transitively),
no import cycles, the pure parts reach no I/O module, no module grows past the limit.

Every ``import`` statement counts, wherever it is (module level, inside a function, under
TYPE_CHECKING): a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "announcer"
MAX_LINES = 450

# The parts of the tree, and which other parts each may import (itself always).
MAY_IMPORT: dict[str, set[str]] = {
    "model": set(),
    "spec": {"model"},
    "events": {"model", "spec"},
    "core": {"model", "spec", "events"},
    "config": {"model", "spec", "events", "core"},
    "exabgp.pure": {"model", "spec", "events", "core"},
    "exabgp": {"model", "spec", "events", "core", "config", "exabgp.pure"},
    "health": {"model", "spec", "events"},
    "sources": {"model", "spec", "events", "config"},
    "daemon": {"model", "spec", "events", "core", "config", "exabgp", "exabgp.pure",
               "health", "sources", "cni"},
    "cli": {"model", "spec", "events", "core", "config", "exabgp", "exabgp.pure", "health",
            "sources", "daemon", "cni"},
    "testing": {"model", "spec", "events", "core", "config", "exabgp", "exabgp.pure",
                "health", "sources", "daemon", "cni"},
    "cni": set(),
    "lab": {"cni"},
}  # fmt: skip
# Parts with no I/O at all, however deep the imports go: the decisions and the protocol.
PURE = ("model", "spec", "events", "core", "exabgp.pure", "health.hysteresis")
IO_MODULES = {
    "asyncio", "pyroute2", "docker", "httpx", "httpx_sse", "socket", "subprocess", "time",
    "threading", "os", "select", "signal", "watchdog", "pydantic", "yaml", "prometheus_client",
    "ssl", "http", "urllib", "shutil", "tempfile", "io", "pathlib", "fcntl", "random",
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def part(module: str) -> str:
    """The layer a module belongs to (``announcer.core.plan`` -> ``core``)."""
    rest = module.removeprefix("announcer").removeprefix(".")
    if rest in ("exabgp.commands", "exabgp.session"):
        return "exabgp.pure"
    if rest == "health.hysteresis":
        return "health.hysteresis"
    return rest.split(".", 1)[0] or "package"


@cache
def imports(module: str) -> tuple[set[str], set[str]]:
    """(announcer modules, other top-level modules) that ``module`` imports anywhere."""
    ours: set[str] = set()
    others: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] != "announcer":
                others.add(name.split(".")[0])
                continue
            target = name
            while target not in MODULES:  # `from announcer.x import y`: y a module or a name
                target = target.rsplit(".", 1)[0]
            if target != "announcer":
                ours.add(target)
    ours.discard(module)
    return ours, others


@cache
def closure(module: str) -> frozenset[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        for dependency in imports(current)[0]:
            if dependency not in seen:
                seen.add(dependency)
                todo.append(dependency)
    return frozenset(seen)


def allowed(source: str, target: str) -> bool:
    mine, theirs = part(source), part(target)
    if mine == theirs or theirs == "package":
        return True
    if mine == "health.hysteresis":
        mine = "health"
    if theirs == "health.hysteresis":
        theirs = "health"
    if mine == theirs:
        return True
    return theirs in MAY_IMPORT.get(mine, set())


def test_every_part_is_in_the_table() -> None:
    parts = {part(m) for m in MODULES} - {"package", "health.hysteresis"}
    assert parts <= MAY_IMPORT.keys(), parts - MAY_IMPORT.keys()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_table(module: str) -> None:
    wrong = sorted(t for t in closure(module) if not allowed(module, t))
    assert wrong == [], f"{module} ({part(module)}) reaches {wrong}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if part(m) in PURE))
def test_pure_parts_reach_no_io(module: str) -> None:
    reached = {module, *closure(module)}
    io = {
        f"{m}: {sorted(imports(m)[1] & IO_MODULES)}" for m in reached if imports(m)[1] & IO_MODULES
    }
    assert not io, f"{module} reaches I/O: {sorted(io)}"


def test_no_import_cycles() -> None:
    cycles = sorted(m for m in MODULES if m in closure(m))
    assert cycles == [], f"modules that import themselves through others: {cycles}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines (a module is one concept, <= {MAX_LINES})"


def test_the_io_list_names_real_modules() -> None:
    """A typo in IO_MODULES would silently check nothing."""
    stdlib = sys.stdlib_module_names
    third_party = {"pyroute2", "docker", "httpx", "httpx_sse", "watchdog", "pydantic", "yaml",
                   "prometheus_client"}  # fmt: skip
    assert IO_MODULES - third_party <= stdlib
