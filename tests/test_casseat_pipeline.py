"""kit.casseat.pipeline: one profile in, the stages of notebooks 01-05 out. The expensive stage functions are
replaced by recorders, so these tests check what each stage is asked for, not the stages themselves."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml

from kit.casseat import pipeline
from kit.casseat.selection import LabelledFilters
from kit.casseat.synthesis import SynthesisConfig
from kit.core.profile import PROFILES_DIR, load_profile, resolve_path
from kit.errors import KitError
from kit.llm.generate import EngineChoice

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def profile_with(tmp_path: Path, name: str = "tiny", **changes):
    """A copy of a shipped profile with ``section.key=value`` changes (``finetune__learning_rate=...``)."""
    document = yaml.safe_load((PROFILES_DIR / f"{name}.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        document[section][key] = value
    path = tmp_path / f"{name}-changed.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_profile(path)


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """Training sets and train_stage / evaluate_stage replaced by recorders, and the side-by-side runner by one
    that records the stages it is given (the stage functions then run in process); returns the calls."""
    import kit.core.parallel
    import kit.eval.evaluate
    import kit.training.sft

    calls = {"train": [], "eval": [], "stages": []}

    def fake_sets(profile, run):
        names = ["seat", "cas_seat", *(f"cas_seat_n{n}" for n in profile.get("trainsets.quantities")),
                 *(f"cas_seat_mix{round(f * 100)}" for f in profile.get("trainsets.mixing_cot_fractions"))]
        for name in names:
            (tmp_path / f"{name}.jsonl").write_text("{}\n")
        return {name: tmp_path / f"{name}.jsonl" for name in names}

    def folder(*args, **kwargs):
        return tmp_path / "stage" / str(abs(hash(repr((args, sorted(kwargs.items()))))))

    def fake_train(model, data, run_dir, settings, **kwargs):
        calls["train"].append((model, Path(data).stem, run_dir, settings))
        return {"adapter_dir": f"{run_dir}/adapter-{Path(data).stem}-{settings.seed}-{settings.learning_rate}",
                "examples": 7}

    def fake_eval(model, benchmarks, strategy, run_dir, **options):
        calls["eval"].append((model, dict(benchmarks), strategy, run_dir, options))
        return {name: {"accuracy": 1.0} for name in benchmarks}

    monkeypatch.setattr(pipeline, "training_sets", fake_sets)
    monkeypatch.setattr(kit.training.sft, "train_stage", fake_train)
    monkeypatch.setattr(kit.eval.evaluate, "evaluate_stage", fake_eval)
    monkeypatch.setattr(kit.training.sft, "stage_folder", folder)
    monkeypatch.setattr(kit.eval.evaluate, "stage_folder", folder)
    monkeypatch.setattr(kit.core.parallel, "run_stages",
                        lambda profile, stages, what="": calls["stages"].append((what, list(stages))))
    return calls


def test_the_tiny_synthesis_config_is_the_one_notebook_01_built():
    profile = load_profile("tiny")
    # Notebook 01's parameters cell and its SynthesisConfig(...) call before the pipeline.
    built = SynthesisConfig(
        teacher=str(resolve_path("data/models/tiny-qwen2vl-teacher")), source=str(resolve_path("data/tiny/mathv360k")),
        items=1500, batch_size=64, samples=1, max_new_tokens=256, temperature=0.0, top_p=1.0, seed=0,
        prompts=("seat_synthesis", "cas_cot", "cas_reflection"), engine_choice=EngineChoice("transformers", [], None, None))
    assert pipeline.synthesis_config(profile) == built
    assert pipeline.filters(profile) == LabelledFilters(min_blocks=1, min_chars=20, max_chars=2000, judge=False)


def test_the_paper_profile_gives_the_papers_values():
    profile = load_profile("paper")
    config = pipeline.synthesis_config(profile)
    synthesis = profile.get("synthesis")
    assert config.teacher == str(resolve_path(profile.get("models.teacher")))
    assert (config.items, config.samples, config.max_new_tokens, config.temperature, config.batch_size) == (
        synthesis["items"], synthesis["samples"], synthesis["max_new_tokens"], synthesis["temperature"],
        synthesis["batch_size"])
    assert config.seed == profile.get("seed")
    settings = pipeline.recipe(profile)
    finetune = profile.get("finetune")
    assert (settings.lora_r, settings.lora_alpha, settings.learning_rate, settings.epochs) == (
        finetune["lora_r"], finetune["lora_alpha"], finetune["learning_rate"], finetune["epochs"])
    assert pipeline.filters(profile).max_chars == profile.get("selection.max_chars")
    assert pipeline.strategies(profile)["Cas-SEAT"] == profile.get("casseat_eval.strategy_cas_seat")
    assert list(pipeline.benchmarks(profile)) == profile.get("casseat_eval.benchmarks")


def test_notebook_05_evaluates_the_students_notebook_04_trains(recorded, tmp_path):
    profile = load_profile("tiny")
    students = pipeline.students(profile, tmp_path / "run")  # notebook 04
    trained = {(name, settings.seed) for _, name, _, settings in recorded["train"]}
    assert {name for name, _ in trained} == set(students.training_sets)
    assert {("seat", s) for s in profile.get("spread.seeds")} <= trained
    assert all(run_dir == tmp_path / "run" / "casseat" for _, _, run_dir, _ in recorded["train"])
    # Every adapter went to the side-by-side runner first, the spread seeds under their own names.
    (what, stages), = recorded["stages"]
    assert what == "training students"
    assert len({stage.done for stage in stages}) == len(trained)
    assert {stage.label for stage in stages} >= {"adapter seat", "adapter cas_seat (seed 2)"}

    evaluation = pipeline.evaluation(profile, tmp_path / "run", check=False)  # notebook 05
    assert evaluation.students.adapters() == students.adapters()
    main = evaluation.main()
    assert list(main) == list(pipeline.MAIN_ROWS)
    by_strategy = {strategy: model for model, _, strategy, _, _ in recorded["eval"]}
    assert by_strategy["seat"] == students.trained["seat"]["adapter_dir"]
    assert by_strategy["cas_seat"] == students.trained["cas_seat"]["adapter_dir"]
    what, stages = recorded["stages"][-1]  # the main table's evaluations, side by side
    assert what == "evaluating" and len(stages) == len(pipeline.MAIN_ROWS)
    evaluation.main(seed=2)
    assert recorded["eval"][-1][0] == students.seeds[("cas_seat", 2)]["adapter_dir"]
    model, benchmarks, _, _, options = recorded["eval"][0]
    assert model == str(resolve_path(profile.get("models.teacher")))
    assert benchmarks == {"mathvista": str(resolve_path("data/tiny/mathvista")),
                          "mathv": str(resolve_path("data/tiny/mathvision")), "wemath": str(resolve_path("data/tiny/wemath"))}
    assert options["max_new_tokens"] == 256 and options["extractor"] == "rules"


def test_a_learning_rate_in_the_profile_changes_the_students_of_both_notebooks(recorded, tmp_path):
    before = pipeline.students(load_profile("tiny"), tmp_path)
    changed = profile_with(tmp_path, finetune__learning_rate=0.0005)
    after = pipeline.students(changed, tmp_path)
    assert after.settings.learning_rate == 0.0005
    assert set(after.adapters().values()).isdisjoint(before.adapters().values())
    assert pipeline.evaluation(changed, tmp_path, check=False).models["cas_seat"] == after.adapters()["cas_seat"]


def test_the_selection_judge_reaches_the_training_sets(monkeypatch, tmp_path):
    import kit.casseat.trainsets

    seen = {}
    monkeypatch.setattr(pipeline, "synthesis", lambda profile, run, progress=True: {"folder": str(tmp_path / "s")})
    monkeypatch.setattr(kit.casseat.trainsets, "build_trainsets",
                        lambda folder, root, filters, **kwargs: seen.update(filters=filters, **kwargs) or {})
    pipeline.trainsets(load_profile("tiny"), tmp_path)
    assert seen["judge"] is None and not seen["filters"].judge
    pipeline.trainsets(profile_with(tmp_path, selection__judge=True), tmp_path)
    assert callable(seen["judge"]) and seen["filters"].judge
    assert seen["quantities"] == [100, 200, 400] and seen["seed"] == 0


def test_an_unknown_benchmark_names_the_profile_key(tmp_path):
    with pytest.raises(KitError, match="casseat_eval.benchmarks"):
        pipeline.benchmarks(profile_with(tmp_path, casseat_eval__benchmarks=["mathvista", "mme"]))


@pytest.mark.parametrize("name", ["00_tiny_world", "01_synthesis", "02_selection", "03_cascaded_prompting",
                                  "04_finetune_unsloth", "05_evaluate", "09_report"])
def test_the_casseat_notebooks_take_only_the_profile_and_their_folders(name):
    from kit.core.profile import declared_parameters

    assert declared_parameters(NOTEBOOKS / f"{name}.ipynb") == ["profile", "run_dir", "results_dir"]
    cells = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells
    code = [cell.source for cell in cells if cell.cell_type == "code"]
    assert "nb = setup(profile, run_dir, results_dir)" in code[1]


def test_notebook_05_is_checked_for_its_answer_reader_before_a_run():
    from kit.core.runner import reads_answers

    assert reads_answers(NOTEBOOKS / "05_evaluate.ipynb", {"profile": "tiny"})
    assert not reads_answers(NOTEBOOKS / "04_finetune_unsloth.ipynb", {"profile": "tiny"})


def test_reflections_and_comparisons_pair_the_right_evaluations(monkeypatch):
    from kit.casseat import pipeline as casseat

    evaluation = object.__new__(casseat.Evaluation)
    evaluation.strategies = {"teacher": "cas_seat", "base": "cot", "SEAT": "seat", "Cas-SEAT": "cas_seat"}
    monkeypatch.setattr(casseat.Evaluation, "outcomes", lambda self, model, strategy: (model, strategy))
    assert evaluation.reflections() == {"teacher": ("teacher", "cas_seat"), "base": ("base", "cas_seat"),
                                        "SEAT": ("seat", "cas_seat"), "Cas-SEAT": ("cas_seat", "cas_seat")}
    pairs = evaluation.comparisons([0, 1])
    seed1 = casseat.Students.seed_name("cas_seat", 1)
    assert pairs[("Cas-SEAT", "base", 1)] == ((seed1, "cas_seat"), ("base", "cot"))
    assert pairs[("Cas-SEAT", "SEAT", 1)] == ((seed1, "cas_seat"), (casseat.Students.seed_name("seat", 1), "seat"))
    assert len(pairs) == 6
