"""The core and the command renderer import no I/O module (STYLE.md: pure core, thin edges)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent / "announcer"
PURE = [*sorted((ROOT / "core").glob("*.py")), ROOT / "exabgp" / "commands.py", ROOT / "model.py", ROOT / "events.py"]
IO_MODULES = {"asyncio", "pyroute2", "docker", "httpx", "socket", "subprocess", "time", "threading", "os", "select", "signal", "watchdog", "pydantic"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_no_io(path: Path) -> None:
    assert not imported(path) & IO_MODULES
