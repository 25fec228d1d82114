"""The package's layering, read from the source (function-level imports included): shared code (core, llm,
training, eval) imports neither paper, no paper imports the tiny world or the other paper, only the command
line, the report and the tools import the tiny world, and no module imports itself back through others. (The
report, ``kit/report.py``, reads both papers' tables and sits at the top beside the command line.)"""

from __future__ import annotations

import ast
from pathlib import Path

from kit import PACKAGE_DIR

SHARED = ("core", "llm", "training", "eval")
PAPERS = ("casseat", "eaco")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the kit modules it imports (``from kit.x import name`` counts as kit.x.name when that is a
    module, else as kit.x)."""
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    found.add(target if target in modules else node.module)
        graph[name] = {target for target in found if target in modules and target != name}
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] not in ("cli", "errors")) else parts[-1]


GRAPH = _imports(_modules())


def _violations(importer_packages: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{module} imports {target}" for module, targets in GRAPH.items() for target in targets
                  if _package(module) in importer_packages and _package(target) in forbidden)


def test_shared_code_imports_neither_paper_nor_the_tiny_world():
    assert _violations(SHARED, (*PAPERS, "tiny", "tools")) == []


def test_the_papers_import_neither_each_other_nor_the_tiny_world():
    assert _violations(("casseat",), ("eaco", "tiny", "tools")) == []
    assert _violations(("eaco",), ("casseat", "tiny", "tools")) == []


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert cycles == []


def test_the_checks_see_the_imports():
    # The graph is not empty by accident: known edges are found, function-level ones included.
    assert "kit.core.artifacts" in GRAPH["kit.core.profile"]
    assert "kit.llm.generate" in GRAPH["kit.eval.evaluate"]
    assert _package("kit.tiny.world.families") == "tiny" and _package("kit.cli") == "cli"
