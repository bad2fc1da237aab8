"""announcer.cni stands alone: no import of the daemon, no import cycle (not even for typing)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "announcer" / "cni"
MODULES = sorted(PACKAGE.glob("*.py"))
ALLOWED_OUTSIDE = {"announcer.model"}  # frozen value types, if ever needed
PURE = {"scheme", "netconf", "libnetwork", "anycast_ips", "mesos"}
IO_MODULES = {"pyroute2", "socket", "subprocess", "threading", "fcntl", "asyncio", "time"}


def _imports(path: Path) -> set[str]:
    """Every module path imported anywhere in the file (TYPE_CHECKING blocks included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "announcer.cni":
                names |= {f"announcer.cni.{alias.name}" for alias in node.names}
    return names


def _graph() -> dict[str, set[str]]:
    return {
        p.stem: {
            n.removeprefix("announcer.cni.") for n in _imports(p) if n.startswith("announcer.cni.")
        }
        for p in MODULES
    }


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_nothing_of_the_daemon(path: Path) -> None:
    outside = {
        n
        for n in _imports(path)
        if n.startswith("announcer")
        and not n.startswith("announcer.cni")
        and n not in ALLOWED_OUTSIDE
    }
    assert outside == set()


def test_no_import_cycle() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(module: str, stack: tuple[str, ...]) -> None:
        assert module not in stack, f"import cycle: {' -> '.join((*stack, module))}"
        if module in done:
            return
        for dep in graph.get(module, set()):
            visit(dep, (*stack, module))
        done.add(module)

    for module in graph:
        visit(module, ())


@pytest.mark.parametrize("path", [p for p in MODULES if p.stem in PURE], ids=lambda p: p.name)
def test_pure_modules_do_no_io(path: Path) -> None:
    assert {n.split(".")[0] for n in _imports(path)} & IO_MODULES == set()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_modules_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 450
