"""HallusionBench: official counts, aAcc/fAcc/qAcc on judgements whose outcome is known by construction,
the "unclear" rule, both judges and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kit.cli import main
from kit.errors import KitError
from kit.eval.benchmarks import hallusionbench as hb


@pytest.fixture(scope="module")
def fixtures(shared_dir: Path) -> Path:
    path = shared_dir / "fixtures" / "hallusionbench"
    if not path.is_dir():
        pytest.skip(f"HallusionBench fixtures {path} are absent")
    return path


@pytest.fixture(scope="module")
def questions(fixtures: Path) -> list[dict]:
    return json.loads((fixtures / "HallusionBench.json").read_text(encoding="utf-8"))


def test_official_counts(fixtures: Path, questions: list[dict]) -> None:
    assert len(hb.load(fixtures, check_images=False)) == len(questions) == 1129
    assert len(hb.load(fixtures, "image", check_images=False)) == 951
    no_image = hb.load(fixtures, "non_image", check_images=False)
    assert len(no_image) == 178 and all(r["image_path"] is None for r in no_image)
    result = hb.score([dict(q, correct=1) for q in questions])
    assert (result["questions"], result["figures"], result["pairs"]) == (1129, 346, 455)
    assert (result["aAcc"], result["fAcc"], result["qAcc"]) == (100.0, 100.0, 100.0)
    assert result["by_category"] == {"VD": {"aAcc": 100.0, "questions": 591}, "VS": {"aAcc": 100.0, "questions": 538}}


def test_all_wrong_scores_zero(questions: list[dict]) -> None:
    result = hb.score([dict(q, correct=0) for q in questions])
    assert (result["aAcc"], result["fAcc"], result["qAcc"]) == (0.0, 0.0, 0.0)


def test_unclear_counts_only_for_the_questions_without_a_figure(questions: list[dict]) -> None:
    result = hb.score([dict(q, gpt4v_output_gpt_check="2") for q in questions])
    # the 178 visual-supplement questions without a figure count as correct, nothing else does
    assert result["correct_questions"] == 178
    assert result["aAcc"] == round(100 * 178 / 1129, 4) == 15.7662
    assert (result["fAcc"], result["qAcc"]) == (0.0, 0.0)  # figure-less questions are not figures
    assert result["easy_qAcc"] == round(100 * 178 / 455, 4)


def test_unclear_rule_on_single_questions() -> None:
    base = {"subcategory": "chart", "set_id": "0", "question_id": "0", "gt_answer": "1"}
    vs_no_figure = dict(base, category="VS", visual_input="0", figure_id="0")
    vs_figure = dict(base, category="VS", visual_input="1", figure_id="1")
    vd_original = dict(base, category="VD", visual_input="1", figure_id="0")
    assert hb.assign_correctness("2", vs_no_figure, "x") == 1
    assert hb.assign_correctness("2", vs_figure, "x") == 0
    assert hb.assign_correctness("2", vd_original, "x") == 0
    assert hb.assign_correctness(1, vd_original, "x") == 1
    with pytest.raises(KitError, match="judgement '3'"):
        hb.assign_correctness("3", vd_original, "x")


def test_rule_judge_on_model_predictions(questions: list[dict]) -> None:
    always_yes = hb.score([dict(q, model_prediction="Yes, it is.") for q in questions])
    assert always_yes["judge"] == "rules"
    assert always_yes["correct_questions"] == sum(q["gt_answer"] == "1" for q in questions) == 484
    assert always_yes["aAcc"] == 42.8698
    # figures / question pairs whose ground truths are all "yes": 25 of 346 and 18 of 455
    assert (always_yes["correct_figures"], always_yes["correct_pairs"]) == (25, 18)
    perfect = hb.score([dict(q, model_prediction="Yes" if q["gt_answer"] == "1" else "No.") for q in questions])
    assert (perfect["aAcc"], perfect["fAcc"], perfect["qAcc"]) == (100.0, 100.0, 100.0)
    unsure = hb.score([dict(q, model_prediction="I cannot tell.") for q in questions])
    assert unsure["correct_questions"] == 178


def test_chat_judge_uses_the_official_prompt(questions: list[dict]) -> None:
    prompts: list[str] = []

    def chat(prompt: str) -> str:
        prompts.append(prompt)
        return "Correct" if len(prompts) % 2 else "The prediction is incorrect."

    sample = [dict(q, response="It is.") for q in questions[200:210]]
    result = hb.score(sample, chat=chat)
    assert result["judge"] == "chat" and result["correct_questions"] == 5
    assert prompts[0].startswith("Imagine you are an intelligent teacher. Thoroughly read the question")
    assert prompts[0].endswith(f"Question:{sample[0]['question']}\nReference answer: "
                               f"{sample[0]['gt_answer_details']}\nPrediction answer:It is.\nOutput:")
    assert hb.chat_judgement("incorrect") == "0"
    assert hb.chat_judgement("CORRECT.") == "1"
    assert hb.chat_judgement("I am not sure") == "2"


def test_yes_no_extraction() -> None:
    assert hb.extract("Yes, the bar is taller.") == "yes"
    assert hb.extract("No.") == "no"
    assert hb.extract("Yes and no.") is None
    assert hb.extract("Not really") is None
    assert hb.extract("The answer: no") == "no"


def test_build_prompt(questions: list[dict]) -> None:
    assert hb.build_prompt(questions[0]) == questions[0]["question"] + "\nPlease answer yes or no."


def test_cli_scores_and_names_the_malformed_question(questions: list[dict], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "HallusionBench_result.json"
    path.write_text(json.dumps([dict(q, correct=1) for q in questions]), encoding="utf-8")
    assert main(["score", "hallusionbench", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["aAcc"], result["fAcc"], result["qAcc"]) == (100.0, 100.0, 100.0)
    broken = [dict(q, correct=1) for q in questions]
    broken[3]["correct"] = 5
    path.write_text(json.dumps(broken), encoding="utf-8")
    assert main(["score", "hallusionbench", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"question {hb.record_id(questions[3])} has correct=5" in err and str(path) in err
    path.write_text(json.dumps(questions[:2]), encoding="utf-8")  # neither correct nor model_prediction
    assert main(["score", "hallusionbench", str(path)]) == 2
    assert f"question {hb.record_id(questions[0])} has none of 'correct'" in capsys.readouterr().err


def test_load_resolves_images_in_either_root(questions: list[dict], tmp_path: Path) -> None:
    with_image = [q for q in questions if q["filename"]]
    other = next(q for q in with_image if q["filename"] != with_image[0]["filename"])
    sample = [with_image[0], other, next(q for q in questions if not q["filename"])]
    (tmp_path / "HallusionBench.json").write_text(json.dumps(sample), encoding="utf-8")
    with pytest.raises(KitError, match=f"image of record {hb.record_id(sample[0])} not found"):
        hb.load(tmp_path)
    first = tmp_path / sample[0]["filename"]
    second = tmp_path / "hallusion_bench" / sample[1]["filename"]
    for path in (first, second):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(path)
    records = hb.load(tmp_path)
    assert [r["image_path"] for r in records] == [str(first.resolve()), str(second.resolve()), None]


def test_duplicate_questions_are_rejected(questions: list[dict]) -> None:
    with pytest.raises(KitError, match="appears twice"):
        hb.score([dict(questions[0], correct=1), dict(questions[0], correct=0)])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_extract_never_raises(text: str) -> None:
    assert hb.extract(text) in ("yes", "no", None)
