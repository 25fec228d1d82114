"""``kit run`` against small notebooks executed for real by papermill."""

from __future__ import annotations

import json
import os
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
                # data/tiny is the tiny world notebook 00 builds: never hand-supplied data, built or not
                "world": {"root": "data/tiny", "train_pool": 12},
                "evaluation": {"batch_size": 2, "limit": None},
            }
        )
    )
    write_notebook(notebooks / "00_prepare.ipynb", "# Prepare", WRITE_PARAMETERS)
    write_notebook(notebooks / "01_use.ipynb", NEEDS_00)
    return Project(notebooks=notebooks, results=tmp_path / "results", profile_path=profile_path)


def executed(project: Project) -> list[str]:
    """What a run left besides the params files: executed notebooks, stages.json, anything else."""
    if not project.results.exists():
        return []
    return sorted(path.relative_to(project.results).as_posix() for path in project.results.rglob("*")
                  if path.is_file() and path.parent.name != runner.PARAMS_DIR)


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
    assert executed(project) == []
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
    assert executed(project) == []  # 00 and 01 never ran
    # Once 02 has nothing left to do, nothing needs the reader: the other notebooks run without it.
    assert [o.status for o in project.run(only="00")] == ["done"]


def test_every_shipped_notebook_cell_has_its_own_id(repo_dir):
    """nbformat 4.5 cells carry ids; one without makes papermill rewrite the notebook on every run, so a
    finished stage would no longer be recognised as unchanged."""
    import json

    for path in sorted((repo_dir / "notebooks").glob("*.ipynb")):
        ids = [cell.get("id") for cell in json.loads(path.read_text())["cells"]]
        assert None not in ids and len(set(ids)) == len(ids), f"{path.name}: cell ids {ids}"


# ------------------------------------------------------------------------ params files and papermill commands
def test_each_notebook_s_parameters_are_kept_in_the_run_folder(project: Project) -> None:
    project.run()
    run_dir = project.run_dir
    seen = json.loads((run_dir / "seen_by_00.json").read_text())
    kept = yaml.safe_load((run_dir / "params" / "00_prepare.yaml").read_text())
    assert kept == seen  # exactly what papermill injected
    assert yaml.safe_load((run_dir / "params" / "01_use.yaml").read_text()) == kept
    assert not list((run_dir / "params").glob(".*")), "temporary files left beside the params"


ENVIRONMENT_SEEN = """
import json, os, pathlib
names = ["KIT_PAPERMILL", "TQDM_DISABLE", "HF_HUB_OFFLINE", "OMP_NUM_THREADS", "KIT_HUB_REVISIONS"]
pathlib.Path(run_dir, "by_papermill.json").write_text(json.dumps(
    {"parameters": {"seed": seed, "models_teacher": models_teacher, "world_train_pool": world_train_pool,
                    "profile": profile, "run_dir": run_dir},
     "environment": {name: os.environ.get(name) for name in names}, "cwd": os.getcwd()}))
"""


def test_the_dry_run_prints_a_papermill_command_that_runs_as_printed(project: Project, tmp_path: Path) -> None:
    """The printed command, run by a shell from another folder with none of the kit's variables set, executes
    the notebook with the parameters, working directory and environment that kit run gives it."""
    import os
    import subprocess
    import sys

    document = yaml.safe_load(project.profile_path.read_text())
    # A dry run changes nothing in this process, so the runtime settings can be the tiny profile's.
    document.update(offline=True, torch_threads=1, revisions={"Org/Model": "0123abc"})
    project.profile_path.write_text(yaml.safe_dump(document))
    write_notebook(project.notebooks / "00_prepare.ipynb", ENVIRONMENT_SEEN)
    before = dict(os.environ)

    outcomes = project.run(dry_run=True, only="00")
    assert dict(os.environ) == before
    command = outcomes[0].command
    params = project.run_dir / "params" / "00_prepare.yaml"
    assert command == (
        "env KIT_PAPERMILL=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "
        "KIT_HUB_REVISIONS='{\"Org/Model\": \"0123abc\"}' OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "
        f"papermill {project.notebooks / '00_prepare.ipynb'} {project.run_dir / '00_prepare.ipynb'} -f {params} "
        f"-k python3 -l python --cwd {runner.REPO_DIR}"
    )
    assert executed(project) == []
    expected_parameters = yaml.safe_load(params.read_text())

    environment = {name: value for name, value in os.environ.items()
                   if name not in ("KIT_PAPERMILL", "TQDM_DISABLE", "HF_HUB_OFFLINE", "OMP_NUM_THREADS",
                                   "KIT_HUB_REVISIONS")}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(["bash", "-c", command], cwd=elsewhere, env=environment, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads((project.run_dir / "by_papermill.json").read_text())
    assert seen["parameters"] == expected_parameters == {
        "seed": 5, "models_teacher": "Qwen/Qwen2-VL-7B-Instruct", "world_train_pool": 12,
        "profile": str(project.profile_path.resolve()), "run_dir": str(project.run_dir)}
    assert seen["environment"] == {"KIT_PAPERMILL": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
                                   "OMP_NUM_THREADS": "1", "KIT_HUB_REVISIONS": '{"Org/Model": "0123abc"}'}
    assert Path(seen["cwd"]).resolve() == runner.REPO_DIR.resolve()
    assert (project.run_dir / "00_prepare.ipynb").is_file()


def test_a_profile_without_pins_removes_an_earlier_profile_s_pins_in_the_command(project: Project) -> None:
    command = project.run(dry_run=True)[0].command
    assert command.startswith("env -u KIT_HUB_REVISIONS KIT_PAPERMILL=1 TQDM_DISABLE=1 papermill ")


# ------------------------------------------------------------------------------------- hand-supplied data
def test_missing_hand_supplied_data_is_listed_exactly(tmp_path: Path) -> None:
    from kit.core.profile import missing_data

    amber = tmp_path / "amber"
    for name in ("annotations.json", "relation.json", "safe_words.txt", "query/query_all.json"):
        (amber / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (amber / "data" / name).write_text("[]")
    (tmp_path / "instructions").mkdir()
    document = yaml.safe_load((runner.PACKAGE_DIR / "profiles" / "paper.yaml").read_text())
    document["world"]["root"] = str(tmp_path / "world")  # not built: the tiny world is never listed
    document["datasets"].update(eaco_images=str(tmp_path / "coco" / "train2014"),
                                instructions=str(tmp_path / "instructions"), amber=str(amber),
                                mathvista=str(tmp_path / "world" / "mathvista"),
                                scienceqa=str(tmp_path / "scienceqa"))
    path = tmp_path / "paper-copy.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))

    assert [entry.line() for entry in missing_data(load_profile(path))] == [
        f"datasets.eaco_images: {tmp_path}/coco/train2014 does not exist (see docs/paper-data.md#coco-train2014)",
        f"datasets.instructions: {tmp_path}/instructions has no *.json; coco/train2017/*.jpg; "
        "textvqa/train_images/*.jpg; vg/VG_100K/*.jpg; vg/VG_100K_2/*.jpg "
        "(see docs/paper-data.md#stic-instruction-set)",
        f"datasets.scienceqa: {tmp_path}/scienceqa does not exist (see docs/paper-data.md#other-local-datasets)",
        f"datasets.amber: {tmp_path}/amber has no image/AMBER_* or images/AMBER_* or AMBER_* "
        "(see docs/paper-data.md#amber)",
    ]
    (amber / "image").mkdir()
    (amber / "image" / "AMBER_1.jpg").write_bytes(b"jpeg")
    (tmp_path / "scienceqa").mkdir()
    assert [entry.key for entry in missing_data(load_profile(path))] == ["datasets.eaco_images",
                                                                         "datasets.instructions"]


def test_the_shipped_profiles_hand_supplied_data(tmp_path: Path) -> None:
    """The paper profile's local datasets are exactly the documented ones; the tiny profile has none, even in
    a fresh clone where notebook 00 has not built data/tiny yet."""
    from kit.core.profile import HAND_SUPPLIED_DATA, hand_supplied_data, missing_data

    assert list(hand_supplied_data(load_profile("paper"))) == list(HAND_SUPPLIED_DATA)
    assert hand_supplied_data(load_profile("tiny")) == {}
    fresh = tmp_path / "fresh-clone" / "data" / "tiny"
    text = (runner.PACKAGE_DIR / "profiles" / "tiny.yaml").read_text().replace("data/tiny", str(fresh))
    path = tmp_path / "tiny-copy.yaml"
    path.write_text(text)
    assert load_profile(path).get("datasets.amber") == str(fresh / "amber")
    assert missing_data(load_profile(path)) == []


def test_every_data_section_the_kit_names_is_in_the_doc(repo_dir: Path) -> None:
    import re

    from kit.core.profile import DATA_DOC, HAND_SUPPLIED_DATA, OTHER_LOCAL_DATA_SECTION

    headings = [line.lstrip("#").strip() for line in (repo_dir / DATA_DOC).read_text().splitlines()
                if line.startswith("## ")]
    anchors = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-") for heading in headings}
    for section in [*(entry.section for entry in HAND_SUPPLIED_DATA.values()), OTHER_LOCAL_DATA_SECTION]:
        assert section in anchors, f"{DATA_DOC} has no section #{section}"


def test_missing_data_is_listed_by_the_dry_run_and_stops_the_run(project: Project, tmp_path: Path,
                                                                  capsys) -> None:
    document = yaml.safe_load(project.profile_path.read_text())
    document["datasets"].update(amber=str(tmp_path / "no-amber"))
    project.profile_path.write_text(yaml.safe_dump(document))
    write_notebook(project.notebooks / "08_evaluate.ipynb", "x = 1")
    line = f"datasets.amber: {tmp_path}/no-amber does not exist (see docs/paper-data.md#amber)"

    project.run(dry_run=True)
    assert f"  MISSING {line}; read by notebook 08\n" in capsys.readouterr().out
    for options in ({}, {"from_": "01"}):
        with pytest.raises(KitError) as raised:
            project.run(**options)
        assert f"\n  {line}\n" in str(raised.value)
        assert executed(project) == []
    # A run that executes no notebook reading AMBER does not need it.
    assert [outcome.status for outcome in project.run(only="00")] == ["done"]
    assert project.cli() == 2
    assert line in capsys.readouterr().err


LANE_CELL = """
import json, os, pathlib, time
from kit.core.profile import load_profile, torch_threads
from kit.core.threads import follow_thread_share
started = time.time()
time.sleep({seconds})
pathlib.Path(run_dir, "{name}.json").write_text(json.dumps(
    {{"start": started, "end": time.time(), "threads": torch_threads(load_profile(profile)),
      "followed": follow_thread_share(), "papermill": os.environ.get("KIT_PAPERMILL")}}))
"""


def lanes_project(project: Project, lanes: int, failing: str | None = None) -> Project:
    """00 alone, then 01 in lane a beside 02 and 03 in lane b, then 04 alone. 02 is long, so 03 starts after
    lane a has finished. Each notebook records when it ran and the torch threads kit gives its kernel."""
    for path in project.notebooks.glob("*.ipynb"):
        path.unlink()
    for number, lane, seconds in (("00", None, 0), ("01", "a", 1), ("02", "b", 8), ("03", "b", 1), ("04", None, 0)):
        cell = "raise ValueError('lane b broke')" if number == failing else LANE_CELL.format(name=number,
                                                                                             seconds=seconds)
        path = write_notebook(project.notebooks / f"{number}_nb.ipynb", cell)
        if lane:
            notebook = nbformat.read(path, as_version=4)
            notebook.metadata["kit"] = {"lane": lane}
            nbformat.write(notebook, path)
    profile = yaml.safe_load(project.profile_path.read_text())
    profile.update(torch_threads=2, notebook_lanes=lanes)
    project.profile_path.write_text(yaml.safe_dump(profile))
    return project


@pytest.fixture
def restored_threads(monkeypatch: pytest.MonkeyPatch):
    import torch

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def ran(project: Project, number: str) -> dict:
    return json.loads((project.run_dir / f"{number}.json").read_text())


def test_lanes_run_side_by_side_with_their_share_of_threads(project: Project, restored_threads,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    lanes_project(project, lanes=2)
    environment_before = dict(os.environ)
    assert runner.lane_blocks(runner.discover_notebooks(project.notebooks)) == [[[1]], [[2], [3, 4]], [[5]]]
    outcomes = project.run()
    assert [outcome.notebook for outcome in outcomes] == ["00_nb", "01_nb", "02_nb", "03_nb", "04_nb"]
    alone, beside, after = ran(project, "01"), ran(project, "02"), ran(project, "03")
    assert alone["start"] < beside["end"] and beside["start"] < alone["end"]  # lanes a and b overlapped
    assert after["start"] >= beside["end"]  # a lane keeps its order
    assert after["start"] >= alone["end"], "the test needs 03 to start once lane a has finished"
    assert ran(project, "04")["start"] >= max(after["end"], alone["end"])  # a lane-less notebook waits for all
    # Beside another lane a kernel gets one of the two threads; one that starts alone gets both.
    assert [ran(project, n)["threads"] for n in ("00", "01", "02", "03", "04")] == [2, 1, 1, 2, 2]
    # A kernel follows its share as it changes: 02 started beside lane a and ends alone, so it ends with both;
    # notebooks outside a side-by-side block have no share to follow.
    assert [ran(project, n)["followed"] for n in ("00", "01", "02", "03", "04")] == [None, 1, 2, 2, None]
    assert {ran(project, n)["papermill"] for n in ("00", "01", "02", "03", "04")} == {"1"}
    assert all(entry["status"] == "done" for entry in project.stages().values())
    environment_before.update(OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")  # apply_runtime's, as before lanes
    assert dict(os.environ) == environment_before  # each kernel got its own environment; this process's is as it was

    def no_threads(*args, **kwargs):
        raise AssertionError("an up-to-date block started lane threads")

    monkeypatch.setattr(runner, "ThreadPoolExecutor", no_threads)
    assert all(outcome.status == "skipped" for outcome in project.run())


def test_one_lane_at_a_time_keeps_number_order(project: Project, restored_threads) -> None:
    lanes_project(project, lanes=1)
    project.run()
    assert ran(project, "02")["start"] >= ran(project, "01")["end"]
    assert ran(project, "03")["start"] >= ran(project, "02")["end"]
    assert {ran(project, n)["threads"] for n in ("01", "02", "03")} == {2}


def test_a_failing_lane_lets_the_other_finish_and_names_its_notebook(project: Project, restored_threads) -> None:
    lanes_project(project, lanes=2, failing="02")
    with pytest.raises(KitError, match=r"02_nb\.ipynb failed in cell 2.*ValueError: lane b broke.*--from 02"):
        project.run()
    stages = project.stages()
    assert stages["02_nb"]["status"] == "failed" and stages["01_nb"]["status"] == "done"
    assert "03_nb" not in stages and "04_nb" not in stages  # the failed lane stops; nothing after the block runs


def test_a_lane_must_be_a_name(project: Project) -> None:
    path = project.notebooks / "01_use.ipynb"
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["kit"] = {"lane": 5}
    nbformat.write(notebook, path)
    with pytest.raises(KitError, match="01_use.ipynb: metadata kit.lane must be a name, not 5"):
        project.run()
    notebook.metadata["kit"] = "eaco"
    nbformat.write(notebook, path)
    with pytest.raises(KitError, match="01_use.ipynb: metadata kit must be a mapping like .*, not 'eaco'"):
        project.run()


def test_the_shipped_notebooks_lanes(repo_dir: Path) -> None:
    # Cas-SEAT (01-05) and EACO (06-08) read nothing of each other's; the tour and the report stand alone.
    notebooks = runner.discover_notebooks(repo_dir / "notebooks")
    assert {notebook.number: notebook.lane for notebook in notebooks} == {
        "00": None, "01": "casseat", "02": "casseat", "03": "casseat", "04": "casseat", "05": "casseat",
        "06": "eaco", "07": "eaco", "08": "eaco", "09": None}
    assert runner.lane_blocks(notebooks) == [[[1]], [[2, 3, 4, 5, 6], [7, 8, 9]], [[10]]]
