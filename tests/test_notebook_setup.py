"""kit.core.notebook.setup: the run folder a notebook works in, and quiet output under papermill."""

from __future__ import annotations

import logging

import pytest

from kit import REPO_DIR
from kit.core import notebook
from kit.core.progress import progress_bars


@pytest.fixture(autouse=True)
def _no_notebook_handler():
    def drop():
        kit_logger = logging.getLogger("kit")
        kit_logger.handlers[:] = [h for h in kit_logger.handlers if not getattr(h, "_kit_notebook", False)]

    drop()
    yield
    drop()


def test_an_interactive_notebook_works_in_the_profiles_interactive_run(monkeypatch):
    monkeypatch.delenv(notebook.PAPERMILL_ENV, raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    nb = notebook.setup("tiny")
    assert nb.profile.name == "tiny"
    assert nb.run == REPO_DIR / "results" / "runs" / "tiny-interactive"
    assert nb.results == REPO_DIR / "results"
    assert progress_bars(True) and not progress_bars(False)  # JupyterLab keeps its bars


def test_under_papermill_the_bars_go_and_each_stage_prints_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(notebook.PAPERMILL_ENV, "1")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    nb = notebook.setup("paper", run_dir=str(tmp_path / "run"))
    assert nb.profile.name == "paper" and nb.run == tmp_path / "run"
    assert not progress_bars(True)
    from kit.core.artifacts import cached_stage

    cached_stage(tmp_path, "demo", {"a": 1}, lambda folder: (folder / "x").write_text("x"))
    cached_stage(tmp_path, "demo", {"a": 1}, lambda folder: None)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("demo:")]
    assert len(lines) == 2 and "built" in lines[0] and "skipped" in lines[1]


def test_setup_seeds_the_global_generators_so_figures_repeat(monkeypatch):
    import random

    import numpy as np

    monkeypatch.delenv(notebook.PAPERMILL_ENV, raising=False)
    draws = []
    for _ in range(2):
        notebook.setup("tiny")
        draws.append((random.random(), float(np.random.uniform())))
    assert draws[0] == draws[1]
