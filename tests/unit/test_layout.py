"""The layout's arrows (docs/architecture.md): each layer imports only the layers below it.

``asyncio/`` and ``sync/`` never import each other; ``core/`` and ``wire/`` import neither
shell nor anything built on them; ``cache/`` imports no client module. Type-only imports
count too. And every module of one shell has its twin of the same name in the other
(``asyncio/_protocol.py``, the transport's protocol, is the one without a sync twin).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import smartcache

PACKAGE = Path(smartcache.__file__).parent

#: package area -> what it must never import (module prefixes)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": (
        "smartcache.sync",
        "smartcache.asyncio",
        "smartcache.wire",
        "smartcache.cache",
        "smartcache._",
    ),
    "wire": ("smartcache.sync", "smartcache.asyncio", "smartcache.cache", "smartcache._"),
    "asyncio": ("smartcache.sync", "smartcache.client", "smartcache.cache"),
    "sync": ("smartcache.asyncio", "smartcache.cache"),
}
ONLY_ASYNC = {"_protocol.py"}


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


CASES = [(area, path) for area in FORBIDDEN for path in sorted((PACKAGE / area).rglob("*.py"))]


@pytest.mark.parametrize(
    ("area", "path"), CASES, ids=[f"{a}/{p.relative_to(PACKAGE / a)}" for a, p in CASES]
)
def test_imports_point_down(area: str, path: Path) -> None:
    for line, name in _imports(path):
        if not name.startswith("smartcache"):
            continue
        bad = [prefix for prefix in FORBIDDEN[area] if name.startswith(prefix)]
        assert not bad, f"{path.relative_to(PACKAGE)}:{line} imports {name} ({area} must not)"


def test_the_shells_are_twins_module_for_module() -> None:
    sync = {p.name for p in (PACKAGE / "sync").glob("*.py")}
    asyncio = {p.name for p in (PACKAGE / "asyncio").glob("*.py")}
    assert sync == asyncio - ONLY_ASYNC


def _graph() -> dict[str, set[str]]:
    """Module -> the smartcache modules it imports (type-only imports included)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for _, target in _imports(path):
            for candidate in (target, target.rsplit(".", 1)[0]):
                if candidate in modules and candidate != name:
                    edges.add(candidate)
        # a package importing its own submodules (re-exports) is not a circle
        graph[name] = {t for t in edges if not t.startswith(name + ".")}
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    return graph


def test_no_import_circles() -> None:
    """No two modules import each other, directly or through others, type-only imports
    included: a module that needs its owner takes it through a Protocol."""
    graph = _graph()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        assert node not in visiting, f"import circle: {' -> '.join([*visiting, node])}"
        visiting.append(node)
        for target in sorted(graph[node]):
            visit(target)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
