"""The I/O-free core imports no socket, ssl, asyncio, threading, and never sleeps."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import smartcache.core

FORBIDDEN = {"socket", "ssl", "asyncio", "threading", "selectors", "subprocess"}
CORE = Path(smartcache.core.__file__).parent
FILES = sorted(CORE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_core_module_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            if isinstance(node, ast.Attribute) and node.attr == "sleep":
                pytest.fail(f"{path.name}:{node.lineno} calls sleep()")
            continue
        bad = FORBIDDEN.intersection(names)
        assert not bad, f"{path.name}:{node.lineno} imports {bad}"
        if isinstance(node, ast.ImportFrom) and node.module == "time":
            assert all(a.name != "sleep" for a in node.names), f"{path.name} imports sleep"


def test_there_is_a_core_to_check() -> None:
    assert any(p.name == "slots.py" for p in FILES)
