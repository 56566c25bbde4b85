"""The entry layers import one way: bot.py (command line) -> console -> app (composition root) -> cogs.

Read from the source (every `import`, at module level or inside a function, except those under
`if TYPE_CHECKING:`), so a circle is caught even where a lazy import would hide it at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


MODULES = {module_name(p): p for p in [ROOT / "bot.py", ROOT / "app.py", ROOT / "console.py",
                                       *sorted((ROOT / "cogs").glob("*.py"))] if p.name != "__init__.py"}


def runtime_imports(path: Path) -> set[str]:
    """The modules among MODULES that `path` imports when it runs (not only for type checking)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found & set(MODULES)


GRAPH = {name: runtime_imports(path) for name, path in MODULES.items()}


def cycles() -> list[list[str]]:
    found: list[list[str]] = []

    def walk(name: str, path: list[str]) -> None:
        for target in sorted(GRAPH[name]):
            if target in path:
                found.append([*path[path.index(target):], target])
            else:
                walk(target, [*path, target])

    for start in GRAPH:
        walk(start, [start])
    return found


def test_no_import_cycle() -> None:
    assert cycles() == []


def test_the_layers_import_one_way() -> None:
    assert GRAPH["bot"] >= {"app", "console"}
    assert "app" in GRAPH["console"]
    assert GRAPH["app"].isdisjoint({"bot", "console"})
    for name in MODULES:
        if name.startswith("cogs."):
            assert GRAPH[name].isdisjoint({"bot", "app", "console"}), name
