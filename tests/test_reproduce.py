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
    code = main(["run", "--profile", "tiny", "--results-dir", str(results), "--run-id", "e2e"])
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
    assert main(["run", "--profile", "tiny", "--results-dir", str(results), "--run-id", "e2e"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (results / "runs" / "e2e" / "00_tiny_world.ipynb").read_bytes() == before


def _synthesis_folder(results):
    folders = list((results / "runs" / "e2e" / "casseat").glob("synthesis-*"))
    assert len(folders) == 1
    return folders[0]


def test_notebook_01_records_what_the_synthesis_file_holds(tiny_run):
    from kit.synthesis import read_records, summarize

    code, results = tiny_run
    assert code == 0
    folder = _synthesis_folder(results)
    records = read_records(folder / "records.jsonl")
    items = json.loads((folder / "items.json").read_text())
    assert len(records) == 3 * len(items) > 0
    table = pd.read_csv(results / "tables" / "casseat_synthesis.csv").set_index("prompt")
    recomputed = summarize(records)["prompts"]
    for prompt, numbers in recomputed.items():
        assert table.loc[prompt, "well formed %"] == numbers["well_formed"]
        assert table.loc[prompt, "answer = gold %"] == numbers["answer_correct"]
    # The tiny teacher writes the SEAT format and its self-evaluation blocks (it was pre-trained to).
    assert table.loc["seat_synthesis", "well formed %"] >= 50
    assert table.loc["seat_synthesis", "self-evaluation blocks per answer"] >= 0.5


def test_notebook_02_writes_the_sets_selection_kept(tiny_run):
    from kit.trainsets import read_set

    code, results = tiny_run
    assert code == 0
    table = pd.read_csv(results / "tables" / "casseat_selection.csv")
    kept_seat = table[(table.prompt_id == "seat_synthesis")].iloc[-1]["kept"]
    folder = next((results / "runs" / "e2e" / "casseat").glob("trainsets-*"))
    assert len(read_set(folder / "seat.jsonl")) == kept_seat > 0
    assert (results / "figures" / "casseat_selection.png").stat().st_size > 5_000
    for n in (100, 200, 400):
        assert len(read_set(folder / f"cas_seat_n{n}.jsonl")) == n


def test_notebook_03_measures_the_long_prompt_longer(tiny_run):
    code, results = tiny_run
    assert code == 0
    table = pd.read_csv(results / "tables" / "casseat_prompting.csv")
    for _, group in table.groupby("model"):
        by_way = group.set_index("way")
        assert by_way.loc["SEAT (one long prompt)", "prompt_tokens"] > by_way.loc["Cas-SEAT (cascaded prompts)",
                                                                                 "prompt_tokens"]
    assert set(table["items"]) == {100}
