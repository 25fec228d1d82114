"""Every ``kit`` name a notebook imports exists, so a moved function fails here in seconds rather than in
``kit run`` after the notebooks before it."""

from __future__ import annotations

import ast
import importlib
import json

import pytest

from kit import REPO_DIR

NOTEBOOKS = sorted((REPO_DIR / "notebooks").glob("*.ipynb"))


def _kit_imports(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    for number, cell in enumerate(cells, start=1):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kit":
                for alias in node.names:
                    yield number, node.module, alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "kit":
                        yield number, alias.name, None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_kit_name_a_notebook_imports_exists(path):
    missing = []
    for cell, module_name, name in _kit_imports(path):
        module = importlib.import_module(module_name)
        if name is not None and not hasattr(module, name):
            try:
                importlib.import_module(f"{module_name}.{name}")
            except ModuleNotFoundError:
                missing.append(f"cell {cell}: from {module_name} import {name}")
    assert missing == []


def test_no_notebook_uses_a_name_it_never_defined():
    # pyflakes' undefined-name check over every cell in order (ruff reads notebooks), as a kernel would run them.
    import subprocess
    import sys

    ruff = [sys.executable, "-m", "ruff"]  # ruff is a dev dependency of the kit's environment
    result = subprocess.run([*ruff, "check", "--isolated", "--no-force-exclude", "--select", "F821",
                             *map(str, NOTEBOOKS)], capture_output=True, text=True, cwd=REPO_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
