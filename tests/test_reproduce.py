"""End to end: `kit run --profile tiny` executes the real notebooks with papermill and records real
measurements; a second run skips what is up to date."""

import json

import pandas as pd
import pytest

from kit import REPO_DIR
from kit.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    code = main(["run", "--profile", "tiny", "--only", "00", "--results-dir", str(results), "--run-id", "e2e"])
    return code, results


def test_notebook_00_runs_and_records_teacher_above_student(tiny_run):
    code, results = tiny_run
    assert code == 0
    executed = results / "runs" / "e2e" / "00_tiny_world.ipynb"
    assert executed.is_file()
    stages = json.loads((results / "runs" / "e2e" / "stages.json").read_text())
    assert stages["notebooks"]["00_tiny_world"]["status"] == "done"
    table = pd.read_csv(results / "tables" / "tiny_world_models.csv")
    by_role = dict(zip(table["role"], table["MathVista (tiny) accuracy"], strict=True))
    assert by_role["teacher"] > by_role["student"]
    manifest = json.loads((REPO_DIR / "data" / "models" / "MANIFEST.json").read_text())["models"]
    # The notebook measures now what the build measured then: the same numbers.
    assert by_role["teacher"] == manifest["tiny-qwen2vl-teacher"]["report"]["accuracy"]["mathvista_testmini"]
    assert by_role["student"] == manifest["tiny-qwen2vl-student"]["report"]["accuracy"]["mathvista_testmini"]
    assert (results / "figures" / "tiny_world_gallery.png").stat().st_size > 10_000


def test_second_run_skips_the_finished_notebook(tiny_run, capsys):
    code, results = tiny_run
    assert code == 0
    before = (results / "runs" / "e2e" / "00_tiny_world.ipynb").read_bytes()
    assert main(["run", "--profile", "tiny", "--only", "00", "--results-dir", str(results), "--run-id", "e2e"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (results / "runs" / "e2e" / "00_tiny_world.ipynb").read_bytes() == before
