"""EACO's extra SFT data (the model's own descriptions before each question) and its tables (kit.eaco.tables): the main
table's rows, columns and gains beside the paper's, the Critic table, and the radar figure."""

from __future__ import annotations

import json
import math

import pytest
from fakes import ScriptedEngine
from PIL import Image

from kit.eaco.pipeline import describe_images, description_sft_set, load_instruction_rows
from kit.eaco.tables import PAPER_GAINS, critic_table, main_table, radar_figure
from kit.errors import KitError
from kit.llm.generate import Sampling


@pytest.fixture
def instruction_file(tmp_path):
    (tmp_path / "images").mkdir()
    rows = []
    for i in range(3):
        Image.new("RGB", (28, 28), (40 * i, 10, 10)).save(tmp_path / "images" / f"{i}.png")
        rows.append({"id": f"r{i}", "image": f"images/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nHow many shapes?"}, {"from": "gpt", "value": f"There are {i}."},
            {"from": "human", "value": "What colour?"}, {"from": "gpt", "value": "Red."}]})
    path = tmp_path / "llava_instruct.json"
    path.write_text(json.dumps(rows))
    return path


def test_instruction_rows_load_and_name_a_bad_row(instruction_file, tmp_path):
    rows = load_instruction_rows(instruction_file.parent)
    assert [r["id"] for r in rows] == ["r0", "r1", "r2"] and rows[0]["turns"][0] == "How many shapes?"
    raw = json.loads(instruction_file.read_text())
    raw[1]["conversations"] = raw[1]["conversations"][1:]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(KitError, match=r"bad.json row 2 \(r1\): conversations must alternate"):
        load_instruction_rows(bad)
    raw = json.loads(instruction_file.read_text())
    raw[2]["image"] = "images/gone.png"
    bad.write_text(json.dumps(raw))
    with pytest.raises(KitError, match=r"row 3 \(r2\): image .*gone.png not found"):
        load_instruction_rows(bad)


def test_descriptions_resume_and_prefix_the_first_question(instruction_file, tmp_path):
    rows = load_instruction_rows(instruction_file)
    engine = ScriptedEngine(lambda chat: f"A picture for {chat.id}.")
    sampling = Sampling(max_new_tokens=16, temperature=0.2)
    out = tmp_path / "descriptions.jsonl"
    first = describe_images(engine, rows[:2], out, ["Describe.", "Summarize."], sampling, seed=3)
    assert first == {"r0": "A picture for r0.", "r1": "A picture for r1."} and len(engine.calls) == 2
    again = describe_images(engine, rows, out, ["Describe.", "Summarize."], sampling, seed=3)
    assert len(engine.calls) == 3 and set(again) == {"r0", "r1", "r2"}  # only the missing row was generated
    with pytest.raises(KitError):
        describe_images(engine, rows, out, ["Describe.", "Summarize."], sampling, seed=4)  # other settings

    examples = description_sft_set(rows, again)
    user = examples[0]["messages"][0]["content"]
    assert user[0] == {"type": "image"}
    assert user[1]["text"] == "Image description:\nA picture for r0.\n\nHow many shapes?"
    assert examples[0]["messages"][2]["content"][0]["text"] == "What colour?"  # later questions unchanged
    assert examples[0]["train_turns"] == [0, 1]
    with pytest.raises(KitError, match="row r2 has no image description"):
        description_sft_set(rows, {"r0": "x", "r1": "y", "r2": " "})


def _metrics(a: float, f: float, q: float, perception: float, cognition: float, mathvista: float,
             chair: float) -> dict:
    return {"hallusionbench": {"benchmark": "hallusionbench", "aAcc": a, "fAcc": f, "qAcc": q},
            "mme": {"benchmark": "mme", "perception": perception, "cognition": cognition},
            "mathvista": {"benchmark": "mathvista", "accuracy": mathvista},
            "amber": {"benchmark": "amber", "amber_score": 50.0, "generative": {"CHAIR": chair},
                      "discriminative": {"F1": 60.0}}}


MAIN = {"base": _metrics(40, 10, 20, 800, 200, 30, 10.0), "EACO": _metrics(50, 15, 30, 900, 250, 33, 8.0),
        "DPO (critic)": _metrics(44, 10, 22, 820, 210, 30, 9.0), "STIC": _metrics(38, 8, 18, 790, 180, 29, 11.0)}


def test_main_table_rows_columns_gains_and_the_papers():
    table = main_table(MAIN)
    assert list(table.index) == ["base", "DPO (critic)", "EACO", "STIC"]
    assert list(table.columns[:6]) == ["HallusionBench aAcc", "HallusionBench fAcc", "HallusionBench qAcc", "MME-C",
                                        "MME-P", "MathVista"]
    assert {"AMBER score", "AMBER CHAIR", "AMBER F1"} <= set(table.columns)  # the radar benchmarks join
    assert table.loc["EACO", "HallusionBench aAcc gain %"] == 25.0 and table.loc["EACO", "MME-C gain %"] == 25.0
    assert table.loc["EACO", "AMBER CHAIR gain %"] == 20.0  # fewer hallucinated objects is a gain
    assert table.loc["STIC", "AMBER CHAIR gain %"] == -10.0
    assert math.isnan(table.loc["base", "average gain %"])
    # One headline gain per benchmark: HallusionBench aAcc +25, MME-P +12.5, MathVista +10, AMBER score 0.
    assert table.loc["EACO", "average gain %"] == round((25.0 + 12.5 + 10.0 + 0.0) / 4, 2) == 11.88
    assert table.loc["EACO", "HallusionBench gain % (paper)"] == PAPER_GAINS["HallusionBench"] == 65.6
    assert table.loc["EACO", "MME-C gain % (paper)"] == 21.8 and table.loc["EACO", "average gain % (paper)"] == 8.5
    assert table["MME-C gain % (paper)"].drop(index="EACO").isna().all()
    with pytest.raises(KitError, match="unknown row"):
        main_table({**MAIN, "SFT": MAIN["base"]})


def test_critic_table_and_radar_figure():
    quality = {"policy (untrained)": {"n": 10, "exact_accuracy": 0.1, "spearman": None, "pairwise_accuracy": 0.4,
                                      "pairs": 5, "unparseable": 3},
               "Critic": {"n": 10, "exact_accuracy": 0.5, "spearman": 0.7, "pairwise_accuracy": 0.8, "pairs": 5,
                          "unparseable": 0}}
    table = critic_table(quality)
    assert table["judge"].tolist() == ["policy (untrained)", "Critic"]
    assert table.loc[1, "pairwise preference accuracy %"] == 80.0
    with pytest.raises(KitError, match="Critic lacks spearman"):
        critic_table({"Critic": {k: v for k, v in quality["Critic"].items() if k != "spearman"}})
    figure = radar_figure(main_table(MAIN))
    axis = figure.axes[0]
    assert axis.name == "polar" and len(axis.get_lines()) == 4
    assert "HallusionBench aAcc" in [t.get_text() for t in axis.get_xticklabels()]


def test_the_constant_judge_is_right_as_often_as_its_score_is_common(small_world):
    from kit.eaco.critic import load_vlfeedback
    from kit.eaco.pipeline import constant_judge_quality

    rows = load_vlfeedback(small_world / "vlfeedback")
    quality = constant_judge_quality(rows[:5], rows[5:])
    assert quality["pairwise_accuracy"] == 0 and quality["n"] == 4 * len(rows[5:]) > 0
    assert 0 <= quality["exact_accuracy"] <= 1


def test_no_pairs_is_a_clear_error():
    from kit.eaco.pipeline import require_pairs

    counts = {"pairs": 0, "images": 8, "skipped": {"all_equal": 0, "too_few_parseable": 8}, "unparseable_scores": 40}
    with pytest.raises(KitError, match=r"no preference pair from 8 images .*unparseable scores: 40.*critic.epochs"):
        require_pairs({"counts": counts, "folder": "run/eaco/preference-x"})
    require_pairs({"counts": {**counts, "pairs": 1}, "folder": "x"})


def test_describe_main_and_training_table_come_from_their_inputs():
    from kit.eaco.tables import describe_main, training_table

    text = describe_main(main_table(MAIN), "tiny")
    assert "**EACO**: average gain" in text and "largest on HallusionBench fAcc (+50.00 %)" in text
    assert "**STIC**: average gain -2.40 %" in text and "smallest on HallusionBench fAcc (-20.00 %)" in text
    assert "mean of the 4 benchmarks' headline gains (HallusionBench aAcc, MME-P, MathVista, AMBER score;" in text
    dpo = {"pairs": 14, "steps": 2, "train_loss": 0.69, "rewards_chosen": [0.0, 0.1], "rewards_rejected": [0.0, -0.1],
           "reward_margin": [0.0, 0.2], "seconds": 1.0}
    table = training_table(dpo, {**dpo, "pairs": 300}, {"examples": 8, "steps": 1, "train_loss": 0.4, "seconds": 2.0})
    assert table["stage"].tolist() == ["DPO (critic pairs)", "DPO (STIC pairs)", "extra SFT (continues DPO critic)"]
    assert table["examples"].tolist() == [14, 300, 8] and table.loc[0, "margin (first, last)"] == [0.0, 0.2]
    assert "images with a pair %" not in table
    covered = training_table(dpo, {**dpo, "pairs": 300}, {"examples": 8, "steps": 1, "train_loss": 0.4, "seconds": 2.0},
                             {"images": 300, "pairs": 16})
    assert covered["images with a pair %"].tolist()[:2] == [pytest.approx(16 / 3), 100.0]


def test_the_average_takes_one_headline_number_per_benchmark():
    """EACO's "+8.5% ... across multiple benchmarks" is set beside a mean over benchmarks, not over the 13
    columns (3 HallusionBench, 2 MME, 2 POPE, 3 AMBER ...); the choice is a recorded deviation."""
    from kit.core.deviations import get
    from kit.eaco.tables import average_columns, average_sentence
    from kit.eval.evaluate import HEADLINE_METRIC, HEADLINES

    every = ["HallusionBench aAcc", "HallusionBench fAcc", "HallusionBench qAcc", "MME-C", "MME-P", "MathVista",
             "POPE accuracy", "POPE F1", "SEED-Bench image", "ScienceQA-IMG", "AMBER score", "AMBER CHAIR", "AMBER F1"]
    assert average_columns(every) == ["HallusionBench aAcc", "MME-P", "MathVista", "POPE F1", "SEED-Bench image",
                                      "ScienceQA-IMG", "AMBER score"]
    assert set(HEADLINE_METRIC) == set(HEADLINES)
    assert all(column in [label for label, _ in HEADLINES[name]] for name, column in HEADLINE_METRIC.items())
    table = main_table(MAIN)
    assert average_sentence(table).startswith("`average gain %` is the mean of the 4 benchmarks' headline gains")
    gains = table.loc["STIC", [f"{c} gain %" for c in average_columns(table.columns)]]
    assert table.loc["STIC", "average gain %"] == round(gains.mean(), 2)
    assert "HEADLINE_METRIC" in get("eaco-average-basis").kit


def test_policy_launch_commands_write_where_the_stages_read(tmp_path):
    """Each command's output is the adapter folder policy_stages used (under the seed it was given); a command
    whose folder is not that adapter's is refused rather than printed."""
    from kit.eaco.pipeline import policy_launch_commands
    from kit.training import dpo
    from kit.training import sft as train

    policy = tmp_path / "policy"  # a local folder: stage folders key it by its content
    policy.mkdir()
    (policy / "config.json").write_text("{}")
    policy = str(policy)
    files = {name: tmp_path / name for name in ("pairs.jsonl", "stic.jsonl", "described.jsonl")}
    for path in files.values():
        path.write_text(f'{{"id": "{path.stem}"}}\n')
    dpo_settings, extra_settings = dpo.DPOSettings(lora_r=4, seed=0), train.SFTSettings(lora_r=4, seed=0)
    dpo_critic = dpo.stage_folder(policy, files["pairs.jsonl"], tmp_path, dpo.DPOSettings(lora_r=4, seed=7))
    stages = {
        "preference": {"pairs": str(files["pairs.jsonl"]), "stic_pairs": str(files["stic.jsonl"])},
        "dpo_critic": {"adapter_dir": str(dpo_critic)},
        "dpo_stic": {"adapter_dir": str(dpo.stage_folder(policy, files["stic.jsonl"], tmp_path,
                                                         dpo.DPOSettings(lora_r=4, seed=7)))},
        "eaco": {"data": str(files["described.jsonl"]),
                 "adapter_dir": str(train.stage_folder(policy, files["described.jsonl"], tmp_path,
                                                       train.SFTSettings(lora_r=4, seed=7), adapter=dpo_critic))},
    }
    commands = policy_launch_commands(policy, stages, tmp_path, dpo_settings, extra_settings, seed=7, processes=3)
    assert list(commands) == ["DPO on the Critic's pairs", "DPO on STIC's pairs",
                              "the extra SFT, continuing the DPO adapter"]
    outputs = [command[command.index(module) + 3] for command, module in zip(commands.values(),
                                                                           ["kit.training.dpo", "kit.training.dpo", "kit.training.sft"], strict=True)]
    assert outputs == [stages[key]["adapter_dir"] for key in ("dpo_critic", "dpo_stic", "eaco")]
    assert all(command[command.index("--num_processes") + 1] == "3" for command in commands.values())
    with pytest.raises(KitError, match="DPO on the Critic's pairs: the launch command would train into"):
        policy_launch_commands(policy, stages, tmp_path, dpo_settings, extra_settings, seed=0)
