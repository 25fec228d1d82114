"""MATH-Vision: re-extracting and rescoring the released outputs reproduces the released result files
exactly; loader, prompt, extraction and equivalence follow the official rules."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kit.cli import main
from kit.errors import KitError
from kit.eval.benchmarks import _common, mathv

# released output -> correct answers out of the 3040 test problems (from its *_result.json)
RELEASED = {"Random-Chance": 218, "LLaVA-v1.5-7B": 259, "Gemini-Pro-CoT": 436, "Qwen-VL-Max": 474}


@pytest.fixture(scope="module")
def fixtures(shared_dir: Path) -> Path:
    path = shared_dir / "fixtures" / "mathv"
    if not path.is_dir():
        pytest.skip(f"MATH-V fixtures {path} are absent")
    return path


@pytest.fixture(scope="module")
def gt(fixtures: Path) -> dict[str, dict]:
    return {p["id"]: p for p in _common.read_jsonl(fixtures / "test.jsonl")}


def _parse(value: str) -> tuple[int, int, float]:
    """'474/3040=15.59%' -> (474, 3040, 15.59)."""
    counts, percent = value.split("=")
    correct, total = counts.split("/")
    return int(correct), int(total), float(percent.rstrip("%"))


@pytest.mark.parametrize("model", list(RELEASED))
def test_released_results_are_reproduced_exactly(fixtures: Path, gt: dict, model: str) -> None:
    outputs = _common.read_jsonl(fixtures / "outputs" / f"{model}.jsonl")
    released = json.loads((fixtures / "outputs" / f"{model}_result.json").read_text(encoding="utf-8"))
    result = mathv.score([{"id": o["id"], "response": o["response"]} for o in outputs], gt=gt)
    assert (result["correct"], result["total"]) == (RELEASED[model], 3040)
    assert (result["correct"], result["total"], result["accuracy"]) == _parse(released["-all"])
    assert result["official"] == released
    for level, tally in result["by_level"].items():
        assert (tally["correct"], tally["total"], tally["accuracy"]) == _parse(released[f"-level{level}"])
    assert len(result["by_level"]) == 5
    for subject, tally in result["by_subject"].items():
        assert (tally["correct"], tally["total"], tally["accuracy"]) == _parse(released[subject])
    assert len(result["by_subject"]) == 16


@pytest.mark.parametrize("model", list(RELEASED))
def test_extraction_matches_the_released_model_answers(fixtures: Path, model: str) -> None:
    for output in _common.read_jsonl(fixtures / "outputs" / f"{model}.jsonl"):
        assert mathv.extract(output["response"]) == output["model_answer"], output["id"]


def test_cli_prints_the_released_result(fixtures: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = fixtures / "outputs" / "Qwen-VL-Max.jsonl"
    assert main(["score", "mathv", str(path), "--gt", str(fixtures / "test.jsonl")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["correct"], result["total"], result["accuracy"]) == (474, 3040, 15.59)
    assert result["by_level"]["1"] == {"accuracy": 16.88, "correct": 40, "total": 237}


def test_cli_names_the_malformed_item(fixtures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps({"id": "1", "response": "60"}) + "\n" + json.dumps({"id": "2"}) + "\n", encoding="utf-8")
    assert main(["score", "mathv", str(path), "--gt", str(fixtures / "test.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "record 2 lacks the field(s) 'response'" in err and str(path) in err
    path.write_text(json.dumps({"id": "99999", "response": "1"}) + "\n", encoding="utf-8")
    assert main(["score", "mathv", str(path), "--gt", str(fixtures / "test.jsonl")]) == 2
    assert "record 99999 has no problem with that id" in capsys.readouterr().err
    path.write_text('{"id": "1", "response": "60"}\n{"id": \n', encoding="utf-8")
    assert main(["score", "mathv", str(path), "--gt", str(fixtures / "test.jsonl")]) == 2
    assert "line 2: not valid JSON" in capsys.readouterr().err


def test_load_the_official_files(fixtures: Path) -> None:
    test = mathv.load(fixtures, "test", check_images=False)
    testmini = mathv.load(fixtures, "testmini", check_images=False)
    assert (len(test), len(testmini)) == (3040, 304)
    assert test[0]["image_path"] == str((fixtures / "images" / "1.jpg").resolve())
    with pytest.raises(KitError, match="unknown split"):
        mathv.load(fixtures, "train")


def test_load_local_folder_checks_images_and_fields(tmp_path: Path) -> None:
    problems = [{"id": "1", "question": "How many?\n<image1>", "options": [], "answer": "3", "solution": None,
                 "level": 1, "subject": "counting", "image": "images/1.png"},
                {"id": "2", "question": "Which?\n<image1>", "options": ["A", "B", "C", "D", "E"], "answer": "B",
                 "solution": None, "level": 2, "subject": "logic", "image": "images/2.png"}]
    (tmp_path / "testmini.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems), encoding="utf-8")
    with pytest.raises(KitError, match="image of record 1 not found"):
        mathv.load(tmp_path, "testmini")
    (tmp_path / "images").mkdir()
    for p in problems:
        Image.new("RGB", (4, 4)).save(tmp_path / p["image"])
    records = mathv.load(tmp_path, "testmini")
    assert [r["image_path"] for r in records] == [str((tmp_path / p["image"]).resolve()) for p in problems]
    problems[1]["answer"] = "Z"
    (tmp_path / "testmini.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems), encoding="utf-8")
    with pytest.raises(KitError, match="record 2 has answer 'Z'"):
        mathv.load(tmp_path, "testmini")
    del problems[0]["subject"]
    (tmp_path / "testmini.jsonl").write_text(json.dumps(problems[0]) + "\n", encoding="utf-8")
    with pytest.raises(KitError, match=r"testmini\.jsonl: record 1 lacks the field\(s\) 'subject'"):
        mathv.load(tmp_path, "testmini")


def test_build_prompt() -> None:
    record = {"question": "Which?\n<image1>", "options": ["A", "B", "C", "D", "E"]}
    assert mathv.build_prompt(record) == mathv.PROMPT_PREFIX + "Which?\n<image1>\n"
    record = {"question": "Which?", "options": ["1", "2", "3", "4", "5"]}
    assert mathv.build_prompt(record).endswith("Which?\n(A) 1\n(B) 2\n(C) 3\n(D) 4\n(E) 5\n")
    assert "\\boxed{}" in mathv.build_prompt(record)


def test_extract_rules() -> None:
    assert mathv.extract("Let me think. The answer is 12.") == "12"
    assert mathv.extract("So we get \\boxed{\\frac{3}{4}}.") == "\\frac{3}{4}"
    assert mathv.extract("first \\boxed{1} then \\boxed{2}") == "2"
    assert mathv.extract("Looking at the options, it is (B).") == "b"
    assert mathv.extract("C\nbecause the circle is larger") == "c"
    assert mathv.extract("x = 5 cm") == "5cm"


def test_is_equal_and_option_text() -> None:
    assert mathv.is_equal("\\frac{1}{2}", "0.5")
    assert mathv.is_equal("b", "B")
    assert mathv.is_equal("(1,2)", "(1.0,2.0)")
    assert mathv.is_equal("2\\sqrt{3}", "3.464")
    assert not mathv.is_equal("2", "3")
    assert not mathv.is_equal("", "1")
    record = {"answer": "B", "options": ["3", "4", "5", "6", "7"]}
    assert mathv.is_correct("4", record) and mathv.is_correct("b", record) and not mathv.is_correct("5", record)


def test_is_equal_refuses_giant_powers_quickly() -> None:
    start = time.perf_counter()
    assert not mathv.is_equal("9^{9^{9}}", "1")
    assert time.perf_counter() - start < 5


def test_score_of_evaluator_records() -> None:
    records = [{"id": "1", "options": [], "answer": "3", "level": 1, "subject": "counting", "prediction": "3"},
               {"id": "2", "options": ["A", "B", "C", "D", "E"], "answer": "B", "level": 2, "subject": "logic",
                "response": "The answer is (C)."},
               {"id": "3", "options": [], "answer": "\\frac{1}{2}", "level": 2, "subject": "logic",
                "response": "We get \\boxed{0.5}"}]
    result = mathv.score(records)
    assert (result["correct"], result["total"], result["accuracy"]) == (2, 3, 66.67)
    assert result["by_level"] == {"1": {"accuracy": 100.0, "correct": 1, "total": 1},
                                  "2": {"accuracy": 50.0, "correct": 1, "total": 2}}
    assert result["by_subject_level"]["logic_level2"] == {"accuracy": 50.0, "correct": 1, "total": 2}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_extract_never_raises(text: str) -> None:
    assert isinstance(mathv.extract(text), str)
    assert isinstance(mathv.find_math_answer(text), str)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=20), st.sampled_from(["3", "\\frac{1}{2}", "(1,2)", "a", "2\\sqrt{3}", "[-1,\\infty)"]))
def test_is_equal_never_raises(text: str, gt_answer: str) -> None:
    assert mathv.is_equal(text, gt_answer) in (True, False)
