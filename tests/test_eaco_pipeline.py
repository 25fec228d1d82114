"""kit.eaco.pipeline: one profile in, the stages of notebooks 06-08 out. The expensive stage functions are
replaced by recorders, so these tests check what each stage is asked for (and that notebook 08 evaluates
exactly the adapters notebook 07 trained), not the stages themselves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nbformat
import pytest
import yaml

from kit.core.artifacts import content_hash
from kit.core.profile import PROFILES_DIR, load_profile
from kit.eaco import pipeline

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def profile_with(tmp_path: Path, name: str = "tiny", **changes):
    """A copy of a shipped profile with ``section.key=value`` changes (``dpo__beta=...``)."""
    document = yaml.safe_load((PROFILES_DIR / f"{name}.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        document[section][key] = value
    path = tmp_path / f"{name}-changed.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_profile(path)


def _key(*parts) -> str:
    return content_hash([repr(part) for part in parts])[:12]


@pytest.fixture
def recorded(monkeypatch):
    """critic_stage, the preference steps, dpo_stage and extra_sft_stage replaced by recorders whose results
    are named by their arguments; returns the calls."""
    import kit.training.dpo

    calls = {"critic": [], "preference": [], "dpo": [], "extra": []}

    def fake_critic(critic_base, vlfeedback, run_dir, settings, **options):
        calls["critic"].append((critic_base, vlfeedback, run_dir, settings, options))
        return {"critic": {"adapter_dir": f"critic-{_key(critic_base, vlfeedback, run_dir, settings, options)}"},
                "heldout": [], "train": [], "data": "critic-data", "train_rows": 0}

    class FakeSteps:
        def __init__(self, policy, critic, images_dir, instructions, run_dir, config, *, seed, engine, progress):
            self.args = (policy, critic, images_dir, instructions, run_dir, config, seed, engine)
            self.folder = f"preference-{_key(*self.args)}"

        def sample_answers(self):
            return {}

        stic_pairs = score_answers = sample_answers

        def build_pairs(self):
            calls["preference"].append(self.args)
            return {"folder": self.folder, "counts": {"pairs": 3}, "pairs": f"{self.folder}/pairs.jsonl",
                    "stic_pairs": f"{self.folder}/stic_pairs.jsonl"}

        run = build_pairs

    def fake_dpo(model, data, run_dir, settings=None, *, progress=True, log=print):
        calls["dpo"].append((model, data, run_dir, settings))
        return {"adapter_dir": f"dpo-{_key(model, data, run_dir, settings.recipe())}"}

    def fake_extra(policy, dpo_adapter, instructions, run_dir, settings, **options):
        options.pop("progress")
        calls["extra"].append((policy, dpo_adapter, instructions, run_dir, settings, options))
        return {"adapter_dir": f"adapter-{_key(policy, dpo_adapter, instructions, run_dir, settings.recipe(), options)}",
                "continued_adapter": dpo_adapter}

    monkeypatch.setattr(pipeline, "critic_stage", fake_critic)
    monkeypatch.setattr(pipeline, "PreferenceSteps", FakeSteps)
    monkeypatch.setattr(kit.training.dpo, "dpo_stage", fake_dpo)
    monkeypatch.setattr(pipeline, "extra_sft_stage", fake_extra)
    return calls


def notebook_07(profile, run) -> dict[int, dict]:
    """What notebook 07 calls: the main seed one stage at a time, then every seed bundled."""
    plan = pipeline.plan(profile, run)
    critic_adapter = plan.critic_adapter()
    steps = plan.preference_steps(plan.seed, critic_adapter)
    steps.sample_answers()
    steps.stic_pairs()
    steps.score_answers()
    preference = steps.build_pairs()
    dpo_critic = plan.train_dpo(preference["pairs"], plan.seed)
    dpo_stic = plan.train_dpo(preference["stic_pairs"], plan.seed)
    eaco = plan.train_extra_sft(dpo_critic["adapter_dir"], plan.seed)
    by_seed = plan.all_seeds(critic_adapter)
    assert by_seed[plan.seed] == {"preference": preference, "dpo_critic": dpo_critic, "dpo_stic": dpo_stic,
                                  "eaco": eaco}
    return by_seed


def notebook_08(profile, run) -> dict[int, dict]:
    return pipeline.plan(profile, run).all_seeds()


def test_notebook_08_evaluates_exactly_notebook_07s_adapters(recorded, tmp_path):
    profile = load_profile("tiny")
    trained = notebook_07(profile, tmp_path)
    calls_07 = {name: list(calls) for name, calls in recorded.items()}
    evaluated = notebook_08(profile, tmp_path)
    assert evaluated == trained and list(evaluated) == [0, 1, 2]
    adapters = {(s, key, stages[key]["adapter_dir"]) for s, stages in evaluated.items()
                for key in ("dpo_critic", "dpo_stic", "eaco")}
    assert len(adapters) == 9  # one per seed and stage
    # Notebook 08 asked for the same stages with the same arguments as notebook 07's bundled calls.
    for name, calls in recorded.items():
        asked_by_08 = calls[len(calls_07[name]):]
        assert asked_by_08 and asked_by_08 == calls_07[name][-len(asked_by_08):], name
    # The Critic every notebook uses is one: notebook 06's settings.
    assert len({repr(call) for call in recorded["critic"]}) == 1


def test_the_tiny_settings_are_notebook_07s_old_ones(recorded, tmp_path):
    """The values notebook 07's parameter cell spelled out, now read from the profile (the extra SFT takes the
    DPO adapter's LoRA shape and the preference temperature and batch; the Critic no dropout or warm-up)."""
    from kit.training.dpo import DPOSettings
    from kit.training.sft import SFTSettings

    plan = pipeline.plan(load_profile("tiny"), tmp_path)
    assert plan.critic_settings == SFTSettings(lora_r=64, lora_alpha=128, learning_rate=0.003, epochs=3, batch_size=16,
                                               gradient_accumulation=1, seed=0)
    assert plan.dpo_settings == DPOSettings(lora_r=64, lora_alpha=128, learning_rate=0.0005, epochs=1, batch_size=8,
                                            gradient_accumulation=1, beta=0.1, loss="draft",
                                            sft_weight=0.0009765625, warmup=0.03, seed=0)
    assert plan.extra_settings == SFTSettings(lora_r=64, lora_alpha=128, learning_rate=0.001, epochs=1, batch_size=16,
                                              gradient_accumulation=1, warmup=0.03, seed=0)
    assert plan.preference == pipeline.PreferenceConfig(images=None, samples=5, temperature=0.2, max_new_tokens=64,
                                                        critic_max_new_tokens=256, batch_size=64)
    assert plan.extra_sft == pipeline.ExtraSFTConfig(rows=None, temperature=0.2, max_new_tokens=64, batch_size=64)
    assert plan.root == tmp_path / "eaco" and plan.seeds == [0, 1, 2]


def test_the_paper_profile_gives_the_papers_values(recorded, tmp_path):
    plan = pipeline.plan(load_profile("paper"), tmp_path)
    assert plan.policy == "llava-hf/llava-v1.6-mistral-7b-hf" and plan.engine.backend == "openai"
    assert plan.instructions is None  # COCO: STIC's description lists
    by_seed = plan.all_seeds("critic-adapter")
    assert list(by_seed) == [0]
    (policy, critic, _, _, _, preference, seed, engine), = recorded["preference"]
    assert (critic, seed, engine) == ("critic-adapter", 0, plan.engine)
    assert preference == pipeline.PreferenceConfig(images=5000, samples=5, temperature=0.2, max_new_tokens=1024,
                                                   critic_max_new_tokens=512, batch_size=16)
    dpo, stic = (call[3] for call in recorded["dpo"])
    assert dpo == stic  # the Critic's pairs and STIC's under one recipe
    assert (dpo.lora_r, dpo.lora_alpha, dpo.learning_rate, dpo.batch_size, dpo.gradient_accumulation, dpo.beta,
            dpo.loss, dpo.sft_weight, dpo.warmup) == (128, 256, 1e-7, 1, 8, 0.1, "draft", 1 / 1024, 0.03)
    (_, dpo_adapter, _, _, extra, options), = recorded["extra"]
    assert dpo_adapter == by_seed[0]["dpo_critic"]["adapter_dir"]
    assert (extra.lora_r, extra.lora_alpha, extra.learning_rate, extra.batch_size, extra.gradient_accumulation,
            extra.warmup, extra.epochs) == (128, 256, 2e-5, 4, 8, 0.03, 1)
    assert options == {"rows": 5000, "temperature": 0.2, "max_new_tokens": 1024, "batch_size": 16, "seed": 0,
                       "engine": plan.engine, "description_prompts": options["description_prompts"]}
    critic = plan.critic_settings
    assert (critic.lora_r, critic.lora_alpha, critic.learning_rate, critic.batch_size, critic.gradient_accumulation,
            critic.epochs) == (16, 16, 2e-4, 2, 4, 1)
    assert plan.critic == pipeline.CriticConfig(variant="additive", aggregate="mean", heldout=0.02, rows=None,
                                                max_new_tokens=512, generation_batch_size=16)


def test_changing_dpo_beta_changes_the_adapter_both_notebooks_use(recorded, tmp_path):
    before = notebook_08(load_profile("tiny"), tmp_path)
    changed = profile_with(tmp_path, dpo__beta=0.2)
    trained, evaluated = notebook_07(changed, tmp_path), notebook_08(changed, tmp_path)
    assert trained == evaluated
    for seed in (0, 1, 2):
        for key in ("dpo_critic", "dpo_stic", "eaco"):  # the extra SFT continues the DPO adapter, so it moves too
            assert evaluated[seed][key]["adapter_dir"] != before[seed][key]["adapter_dir"], (seed, key)
        assert evaluated[seed]["preference"] == before[seed]["preference"]  # the pairs do not depend on beta
    assert {call[3].beta for call in recorded["dpo"]} == {0.1, 0.2}


def test_each_seed_replaces_the_training_seeds(recorded, tmp_path):
    pipeline.plan(load_profile("tiny"), tmp_path).all_seeds("critic")
    assert [call[3].seed for call in recorded["dpo"]] == [0, 0, 1, 1, 2, 2]
    assert [call[4].seed for call in recorded["extra"]] == [0, 1, 2]
    assert [call[6] for call in recorded["preference"]] == [0, 1, 2]


def test_an_unknown_benchmark_is_a_value_error_naming_the_choices(tmp_path):
    profile = load_profile("tiny")
    benchmarks = pipeline.eval_benchmarks(profile)
    assert list(benchmarks) == profile.get("eaco_eval.benchmarks")
    assert benchmarks["pope"].endswith("data/tiny/pope")
    with pytest.raises(ValueError, match=r"eaco_eval_benchmarks: unknown \['nope'\]; choose from"):
        pipeline.eval_benchmarks(profile_with(tmp_path, eaco_eval__benchmarks=["mme", "nope"]))


def test_every_option_says_what_it_is_for():
    for config in (pipeline.CriticConfig, pipeline.PreferenceConfig, pipeline.ExtraSFTConfig):
        for field in dataclasses.fields(config):
            assert field.metadata.get("help"), f"{config.__name__}.{field.name}"
        assert dataclasses.fields(config) and config.__dataclass_params__.frozen


@pytest.mark.parametrize("name", ["06_eaco_critic", "07_eaco_preference_dpo", "08_eaco_evaluate"])
def test_the_eaco_notebooks_take_only_the_profile_and_their_folders(name):
    from kit.core.profile import declared_parameters

    assert declared_parameters(NOTEBOOKS / f"{name}.ipynb") == ["profile", "run_dir", "results_dir"]
    cells = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells
    code = [cell.source for cell in cells if cell.cell_type == "code"]
    assert "nb = setup(profile, run_dir, results_dir)" in code[1]
    assert "pipeline.plan(nb.profile, run)" in "\n".join(code)
    assert "Settings(" not in "\n".join(code)  # no recipe restated in a notebook
    assert all(not cell.get("outputs") for cell in cells if cell.cell_type == "code")


def test_notebook_08_is_checked_for_its_answer_reader_before_a_run():
    from kit.core.runner import reads_answers

    assert reads_answers(NOTEBOOKS / "08_eaco_evaluate.ipynb", {"profile": "tiny"})


# ------------------------------------------------------------------------------------------ the steps, run
def scripted_engines(monkeypatch):
    """engine_for replaced: the policy answers with its chat id, the Critic scores each sample by its index."""
    from fakes import ScriptedEngine

    import kit.llm.generate

    made = []

    def fake_engine_for(choice, model, *, adapter=None, batch_size=16):
        if "critic" in str(model):
            engine = ScriptedEngine(lambda chat: f"Add 1 point. score: {1 + int(chat.id.rsplit('|', 1)[1]) % 3}")
        else:
            engine = ScriptedEngine(lambda chat: f"An answer for {chat.id}.")
        made.append(model)
        return engine

    monkeypatch.setattr(kit.llm.generate, "engine_for", fake_engine_for)
    return made


def test_the_steps_one_at_a_time_are_the_bundled_stage(small_world, tmp_path, monkeypatch):
    made = scripted_engines(monkeypatch)
    policy, critic = tmp_path / "policy", tmp_path / "critic"
    for folder in (policy, critic):
        folder.mkdir()
        (folder / "config.json").write_text(f'{{"name": "{folder.name}"}}')
    config = pipeline.PreferenceConfig(samples=3, max_new_tokens=8, critic_max_new_tokens=8)
    steps = pipeline.PreferenceSteps(policy, critic, small_world / "eaco_images", None, tmp_path / "steps", config,
                                     seed=1, engine=None, progress=False)
    sampled = steps.sample_answers()
    stic = steps.stic_pairs()
    scored = steps.score_answers()
    assert not steps.done
    record = steps.build_pairs()
    assert steps.done and sampled["total"] == 3 * sampled["images"] and len(stic) == sampled["images"]
    assert scored["total"] == sampled["total"] and record["counts"]["pairs"] == sampled["images"]
    bundled = pipeline.preference_stage(policy, critic, small_world / "eaco_images", None, tmp_path / "bundled",
                                        samples=3, max_new_tokens=8, critic_max_new_tokens=8, seed=1, progress=False)
    assert Path(bundled["folder"]).name == steps.folder.name
    for name in ("samples.jsonl", "stic_generations.jsonl", "stic_pairs.jsonl", "scores.jsonl", "pairs.jsonl"):
        # Equal but for the run folder (the corrupted images' paths are in it).
        ours = (steps.folder / name).read_text().replace(str(steps.folder.resolve()), "RUN")
        theirs = (Path(bundled["folder"]) / name).read_text().replace(str(Path(bundled["folder"]).resolve()), "RUN")
        assert ours == theirs, name
    assert {k: v for k, v in bundled["counts"].items() if k != "path"} == \
        {k: v for k, v in record["counts"].items() if k != "path"}
    # A finished folder: every step reads what is there and loads no model.
    made.clear()
    again = pipeline.PreferenceSteps(policy, critic, small_world / "eaco_images", None, tmp_path / "steps", config,
                                     seed=1, engine=None, progress=False)
    assert again.sample_answers()["total"] == sampled["total"] and again.stic_pairs() == stic
    assert again.score_answers()["scores"] == scored["scores"] and again.build_pairs() == record
    assert made == []


def test_judge_quality_writes_its_quality_last_and_reuses_it(small_world, tmp_path, monkeypatch):
    from kit.eaco.critic import load_vlfeedback

    made = scripted_engines(monkeypatch)
    rows = load_vlfeedback(small_world / "vlfeedback")
    judge = tmp_path / "critic"
    judge.mkdir()
    (judge / "config.json").write_text("{}")
    first = pipeline.judge_quality(judge, rows[:3], tmp_path, max_new_tokens=8, progress=False)
    (folder,) = tmp_path.glob("judged-*")
    assert sorted(p.name for p in folder.iterdir()) == ["quality.json", "scores.jsonl"] and first["n"] > 0
    assert pipeline.judge_quality(judge, rows[:3], tmp_path, max_new_tokens=8, progress=False) == first
    assert len(made) == 1


def test_notebook_08_s_evaluations_take_the_profile_s_eaco_eval_settings(monkeypatch, tmp_path):
    import kit.eval.evaluate

    asked = []

    def fake_stages(profile, runs, what="evaluating"):
        asked.append((profile, dict(runs)))
        return {label: {"mme": {"label": label}} for label in runs}

    class Extraction:
        def options(self):
            return {"extractor": "rules"}

    monkeypatch.setattr(kit.eval.evaluate, "evaluate_stages", fake_stages)
    profile = profile_with(tmp_path, eaco_eval__limit=7)
    plan = pipeline.plan(profile, tmp_path)
    evaluations = pipeline.EACOEvaluation(profile, plan, Extraction())
    metrics = evaluations.measure({"base": plan.policy, "EACO": "adapter-eaco"})
    assert metrics == {"base": {"mme": {"label": "base"}}, "EACO": {"mme": {"label": "EACO"}}}
    (given_profile, runs), = asked
    assert given_profile is profile  # its stage_workers decide how many run side by side
    section = profile.get("eaco_eval")
    assert runs["EACO"] == {"model": "adapter-eaco", "benchmarks": pipeline.eval_benchmarks(profile),
                            "strategy": "direct", "run_dir": plan.root, "limit": 7,
                            "batch_size": section["batch_size"], "max_new_tokens": section["max_new_tokens"],
                            "engine": plan.engine, "extractor": "rules"}
    assert runs["base"]["model"] == plan.policy
    # Every evaluation is kept by model path, for the eaco_extraction table.
    assert evaluations.measured == {plan.policy: metrics["base"], "adapter-eaco": metrics["EACO"]}


def test_judge_many_runs_each_judgement_as_a_stage_and_reads_them_back(tmp_path, monkeypatch):
    from kit.core import parallel
    from kit.core.artifacts import stage_dir

    plan = pipeline.plan(load_profile("tiny"), tmp_path)
    rows = ["row-a", "row-b"]
    monkeypatch.setattr(pipeline, "judged_params", lambda model, rows, **options: {"model": model, "rows": rows})
    sent: list = []
    monkeypatch.setattr(parallel, "run_stages", lambda profile, stages, what: sent.extend(stages) or 0)
    monkeypatch.setattr(pipeline, "judge_quality", lambda model, rows, run_dir, **options: {"model": model, "n": len(rows)})
    quality = plan.judge_many({"Critic": ("critic", rows), "Critic, blank image": ("critic", rows[:1])})
    assert quality == {"Critic": {"model": "critic", "n": 2}, "Critic, blank image": {"model": "critic", "n": 1}}
    assert [s.done for s in sent] == [stage_dir(plan.root, "judged", {"model": "critic", "rows": r}) / "quality.json"
                                      for r in (rows, rows[:1])]
    assert all(s.args[2] == plan.root and s.kwargs["max_new_tokens"] == plan.critic.max_new_tokens for s in sent)
