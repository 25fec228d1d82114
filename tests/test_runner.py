"""``kit run`` against small notebooks executed for real by papermill."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml

from kit import cli
from kit.core import runner
from kit.core.profile import Profile, load_profile
from kit.errors import KitError

PARAMETERS = 'seed = 0\nmodels_teacher = ""\nworld_train_pool = 0\nprofile = ""\nrun_dir = ""\n'
WRITE_PARAMETERS = """
import json, pathlib
pathlib.Path(run_dir, "seen_by_00.json").write_text(json.dumps(
    {"seed": seed, "models_teacher": models_teacher, "world_train_pool": world_train_pool,
     "profile": profile, "run_dir": run_dir}))
"""
NEEDS_00 = """
import pathlib
seen = pathlib.Path(run_dir, "seen_by_00.json")
assert seen.exists(), "01 ran before 00"
pathlib.Path(run_dir, "01.txt").write_text("ran after 00")
"""


def write_notebook(path: Path, *cells: str, parameters: str = PARAMETERS) -> Path:
    notebook = nbformat.v4.new_notebook()
    parameters_cell = nbformat.v4.new_code_cell(parameters)
    parameters_cell.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters_cell]
    for source in cells:
        if source.startswith("# "):
            notebook.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            notebook.cells.append(nbformat.v4.new_code_cell(source))
    nbformat.write(notebook, path)
    return path


@dataclass
class Project:
    notebooks: Path
    results: Path
    profile_path: Path

    @property
    def profile(self) -> Profile:
        return load_profile(self.profile_path)

    @property
    def run_dir(self) -> Path:
        return self.results / "runs" / runner.default_run_id(self.profile)

    def run(self, **options) -> list[runner.StageOutcome]:
        return runner.run_notebooks(self.profile, self.notebooks, self.results, **options)

    def cli(self, *arguments: str) -> int:
        return cli.main(
            [
                "run",
                "--profile",
                str(self.profile_path),
                "--notebooks-dir",
                str(self.notebooks),
                "--results-dir",
                str(self.results),
                *arguments,
            ]
        )

    def stages(self) -> dict:
        return json.loads((self.run_dir / "stages.json").read_text())["notebooks"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    # Other work edits kit/ while tests run; a fixed code hash keeps "unchanged" meaning unchanged here.
    monkeypatch.setattr(runner, "kit_code_hash", lambda: "code-under-test")
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    profile_path = tmp_path / "test-profile.yaml"
    profile_path.write_text(
        yaml.safe_dump(
            {
                "name": "unit",
                "seed": 5,
                "offline": False,  # keeps apply_runtime from changing this process's environment
                "torch_threads": None,
                "models": {"teacher": "Qwen/Qwen2-VL-7B-Instruct"},
                "datasets": {"mathvista": "data/tiny/mathvista"},
                "world": {"train_pool": 12},
                "evaluation": {"batch_size": 2, "limit": None},
            }
        )
    )
    write_notebook(notebooks / "00_prepare.ipynb", "# Prepare", WRITE_PARAMETERS)
    write_notebook(notebooks / "01_use.ipynb", NEEDS_00)
    return Project(notebooks=notebooks, results=tmp_path / "results", profile_path=profile_path)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.ipynb"))}


def test_run_executes_in_order_with_profile_parameters_then_skips(project: Project, capsys) -> None:
    outcomes = project.run()
    assert [(outcome.notebook, outcome.status) for outcome in outcomes] == [
        ("00_prepare", "done"),
        ("01_use", "done"),
    ]
    run_dir = project.run_dir
    assert (run_dir / "01.txt").read_text() == "ran after 00"
    assert json.loads((run_dir / "seen_by_00.json").read_text()) == {
        "seed": 5,
        "models_teacher": "Qwen/Qwen2-VL-7B-Instruct",
        "world_train_pool": 12,
        "profile": str(project.profile_path.resolve()),
        "run_dir": str(run_dir),
    }
    executed = nbformat.read(run_dir / "00_prepare.ipynb", as_version=4)
    assert "injected-parameters" in executed.cells[1].metadata.tags
    stages = project.stages()
    assert {name: entry["status"] for name, entry in stages.items()} == {
        "00_prepare": "done",
        "01_use": "done",
    }
    assert all(len(entry["key"]) == 64 for entry in stages.values())
    assert not list(run_dir.glob(".*")), "temporary notebooks left in the run folder"
    first_output = capsys.readouterr().out
    assert "[1/2] 00_prepare ... done in" in first_output
    assert "[2/2] 01_use ... done in" in first_output

    before = snapshot(run_dir)
    again = project.run()
    assert [outcome.status for outcome in again] == ["skipped", "skipped"]
    assert snapshot(run_dir) == before
    assert "[2/2] 01_use ... skipped (up to date)" in capsys.readouterr().out

    plan = project.run(dry_run=True)
    assert [outcome.status for outcome in plan] == ["up to date", "up to date"]


def test_editing_a_notebook_reruns_only_that_notebook(project: Project) -> None:
    project.run()
    before = snapshot(project.run_dir)
    write_notebook(project.notebooks / "01_use.ipynb", NEEDS_00 + "\nprint('edited')\n")

    outcomes = project.run()
    assert [outcome.status for outcome in outcomes] == ["skipped", "done"]
    after = snapshot(project.run_dir)
    assert after["00_prepare.ipynb"] == before["00_prepare.ipynb"]
    assert after["01_use.ipynb"] != before["01_use.ipynb"]


def test_failure_names_notebook_cell_and_error_and_keeps_earlier_outputs(project: Project, capsys) -> None:
    (project.notebooks / "01_use.ipynb").unlink()
    assert project.cli() == 0
    earlier = snapshot(project.run_dir)
    write_notebook(
        project.notebooks / "02_broken.ipynb",
        "# A markdown cell counts as a cell too",
        "x = 1",
        "raise ValueError('boom: world_train_pool is too small')",
    )
    capsys.readouterr()

    assert project.cli() == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    failed = project.run_dir / "02_broken.failed.ipynb"
    assert error.startswith("kit run: error: notebook 02_broken.ipynb failed in cell 4 (execution count ")
    assert "ValueError: boom: world_train_pool is too small." in error
    assert str(failed) in error
    assert f"kit run --profile {project.profile_path.resolve()} --from 02" in error

    assert snapshot(project.run_dir)["00_prepare.ipynb"] == earlier["00_prepare.ipynb"]
    assert "02_broken.ipynb" not in snapshot(project.run_dir)
    traceback = json.dumps(nbformat.read(failed, as_version=4).cells, default=str)
    assert "ValueError" in traceback
    stages = project.stages()
    assert stages["00_prepare"]["status"] == "done"
    assert stages["02_broken"]["status"] == "failed"

    write_notebook(project.notebooks / "02_broken.ipynb", "x = 1")
    assert project.cli("--from", "02") == 0
    assert project.stages()["02_broken"]["status"] == "done"
    assert not failed.exists()
    assert snapshot(project.run_dir)["00_prepare.ipynb"] == earlier["00_prepare.ipynb"]


def test_unknown_notebook_numbers_list_the_available_ones(project: Project, capsys) -> None:
    assert project.cli("--only", "7") == 2
    assert "--only 7: no notebook numbered 07; available: 00, 01" in capsys.readouterr().err
    assert project.cli("--from", "x1") == 2
    assert "--from 'x1' is not a notebook number; available: 00, 01" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        project.cli("--only", "00", "--from", "01")
    assert not project.results.exists()


def test_only_and_from_select(project: Project) -> None:
    write_notebook(project.notebooks / "02_more.ipynb", "y = 2")
    listed = runner.discover_notebooks(project.notebooks)
    assert [notebook.stem for notebook in runner.select_notebooks(listed, only="1")] == ["01_use"]
    assert [notebook.stem for notebook in runner.select_notebooks(listed, from_="01")] == [
        "01_use",
        "02_more",
    ]
    with pytest.raises(KitError, match="either --only or --from"):
        runner.select_notebooks(listed, only="00", from_="01")


def test_dry_run_prints_the_plan_and_executes_nothing(project: Project, capsys) -> None:
    outcomes = project.run(dry_run=True)
    assert [outcome.status for outcome in outcomes] == ["would run", "would run"]
    assert not project.results.exists()
    printed = capsys.readouterr().out
    assert "[1/2] 00_prepare  would run" in printed
    assert "teacher  Qwen/Qwen2-VL-7B-Instruct  (hub)" in printed
    assert str(runner.REPO_DIR / "data/tiny/mathvista") in printed
    assert "train_pool  12" in printed
    assert "limit       null" in printed


def test_discover_ignores_other_files_and_refuses_duplicate_numbers(tmp_path: Path) -> None:
    for name in ("00_a.ipynb", "notes.ipynb", "1_short.ipynb", "03_c.ipynb"):
        write_notebook(tmp_path / name, "x = 1")
    assert [notebook.stem for notebook in runner.discover_notebooks(tmp_path)] == ["00_a", "03_c"]
    write_notebook(tmp_path / "03_d.ipynb", "x = 1")
    with pytest.raises(KitError, match="03_c.ipynb and 03_d.ipynb .* share number 03"):
        runner.discover_notebooks(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KitError, match="no notebooks named NN_name.ipynb"):
        runner.discover_notebooks(empty)


def test_notebook_source_hash_ignores_outputs(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "00_a.ipynb", "print(1)")
    clean = runner.notebook_source_hash(path)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[1].execution_count = 3
    notebook.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    nbformat.write(notebook, path)
    assert runner.notebook_source_hash(path) == clean
    notebook.cells[1].source = "print(2)"
    nbformat.write(notebook, path)
    assert runner.notebook_source_hash(path) != clean


def test_kit_code_hash_follows_sources_and_profiles(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "module.py").write_text("x = 1\n")
    (tmp_path / "profiles" / "tiny.yaml").write_text("seed: 0\n")
    first = runner.kit_code_hash(tmp_path)
    (tmp_path / "module.cpython-311.pyc").write_bytes(b"compiled")
    assert runner.kit_code_hash(tmp_path) == first
    (tmp_path / "profiles" / "tiny.yaml").write_text("seed: 1\n")
    second = runner.kit_code_hash(tmp_path)
    assert second != first
    (tmp_path / "module.py").write_text("x = 2\n")
    assert runner.kit_code_hash(tmp_path) != second


def test_an_unset_answer_reader_stops_the_run_before_its_first_notebook(project: Project) -> None:
    document = yaml.safe_load(project.profile_path.read_text())
    document["evaluation"].update(extractor="llm", judge_url=None, judge_model="Qwen/Qwen2.5-14B-Instruct")
    project.profile_path.write_text(yaml.safe_dump(document))
    write_notebook(project.notebooks / "02_evaluate.ipynb", "x = 1",
                   parameters=PARAMETERS + 'evaluation_extractor = "rules"\n')
    for options in ({"dry_run": True}, {}):
        with pytest.raises(KitError, match="evaluation.extractor is 'llm' but evaluation.judge_url is not set"):
            project.run(**options)
    assert not project.results.exists()  # 00 and 01 never ran
    # Once 02 has nothing left to do, nothing needs the reader: the other notebooks run without it.
    assert [o.status for o in project.run(only="00")] == ["done"]


def test_every_shipped_notebook_cell_has_its_own_id(repo_dir):
    """nbformat 4.5 cells carry ids; one without makes papermill rewrite the notebook on every run, so a
    finished stage would no longer be recognised as unchanged."""
    import json

    for path in sorted((repo_dir / "notebooks").glob("*.ipynb")):
        ids = [cell.get("id") for cell in json.loads(path.read_text())["cells"]]
        assert None not in ids and len(set(ids)) == len(ids), f"{path.name}: cell ids {ids}"
