"""ScienceQA-IMG: LLaVA's answer parsing and FAILED handling, accuracy with the subject / context / grade
breakdowns on hand-made problems, the official layout and the CLI over LLaVA's answer file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kit.cli import main
from kit.errors import KitError
from kit.eval.benchmarks import scienceqa as sqa


@pytest.mark.parametrize(("response", "parsed"), [
    ("A", "A"), ("  C  ", "C"), ("B\n", "B"),  # the newline becomes ". ", so "B. " starts the text
    ("C. sample B", "C"), ("The answer is D.", "D"), ("Because of X. The answer is B", "B"),
    ("The answer is B. The answer is C.", "B"),  # the first match counts
    ("The answer is (B).", "FAILED"), ("answer: B", "FAILED"), ("F", "FAILED"), ("b", "FAILED"), ("", "FAILED"),
])
def test_llava_answer_parsing(response: str, parsed: str) -> None:
    assert sqa.extract(response) == parsed


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_extract_never_raises(text: str) -> None:
    assert sqa.extract(text) in sqa.OPTIONS + ("FAILED",)


def test_a_letter_beyond_the_choices_is_wrong() -> None:
    assert sqa.pred_idx("C", ["x", "y"]) == -1 and sqa.pred_idx("B", ["x", "y"]) == 1
    assert sqa.pred_idx("FAILED", ["x", "y", "z"]) == -1


def _problem(pid: str, answer: int, subject: str, grade: str, hint: str = "", image: str | None = "image.png",
             n_choices: int = 3) -> dict:
    return {"pid": pid, "question": f"Question {pid}?", "choices": [f"c{i}" for i in range(n_choices)],
            "answer": answer, "hint": hint, "image": image, "task": "closed choice", "grade": grade,
            "subject": subject, "topic": "t", "category": "c", "skill": "s", "lecture": "", "solution": "",
            "split": "test"}


PROBLEMS = [
    _problem("1", 0, "natural science", "grade2"),                       # A right
    _problem("2", 1, "natural science", "grade8", hint="Read this."),    # answers A: wrong
    _problem("3", 2, "social science", "grade5"),                        # "The answer is C." right
    _problem("4", 1, "language science", "grade10", hint="A passage."),  # FAILED: wrong
    _problem("5", 0, "language science", "grade3", image=None),          # text-only, right
]
RESPONSES = ["A", "A", "The answer is C.", "I think it is the second one", "A"]


def test_accuracy_and_breakdowns_over_the_image_problems() -> None:
    result = sqa.score([dict(p, response=r) for p, r in zip(PROBLEMS, RESPONSES, strict=True)])
    assert (result["accuracy"], result["correct"], result["questions"]) == (50.0, 2, 4)
    assert (result["all_accuracy"], result["all_questions"], result["failed"]) == (60.0, 5, 1)
    assert {k: v["accuracy"] for k, v in result["subjects"].items()} == {"NAT": 50.0, "SOC": 100.0, "LAN": 0.0}
    assert {k: v["questions"] for k, v in result["grades"].items()} == {"G1-6": 2, "G7-12": 2}
    assert {k: v["accuracy"] for k, v in result["grades"].items()} == {"G1-6": 100.0, "G7-12": 0.0}
    assert {k: v["accuracy"] for k, v in result["contexts"].items()} == {"TXT": 0.0, "IMG": 50.0}


def test_score_errors_name_the_problem() -> None:
    with pytest.raises(KitError, match=r"problem 1 appears twice"):
        sqa.score([dict(PROBLEMS[0], prediction="A")] * 2)
    with pytest.raises(KitError, match=r"record 9 lacks the field\(s\) 'answer'"):
        sqa.score([{"pid": "9", "choices": ["a", "b"]}])


def test_prompt_is_llava_cqm_a_with_the_letter_instruction() -> None:
    assert sqa.build_prompt(PROBLEMS[1]) == ("Context: Read this.\nQuestion: Question 2?\nOptions: (A) c0 (B) c1 (C) c2\n"
                                             "Answer with the option's letter from the given choices directly.")
    assert sqa.build_prompt(PROBLEMS[0]).startswith("Context: N/A\nQuestion: Question 1?")


def _official_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    problems = {p["pid"]: {k: v for k, v in p.items() if k != "pid"} for p in PROBLEMS}
    (root / "problems.json").write_text(json.dumps(problems), encoding="utf-8")
    splits = {"train": [], "val": [], "test": list(problems), "minival": [], "minitest": []}
    (root / "pid_splits.json").write_text(json.dumps(splits), encoding="utf-8")
    for pid, problem in problems.items():
        if problem["image"]:
            image = root / "images" / "test" / pid / problem["image"]
            image.parent.mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(image)
    return root


def test_load_keeps_the_problems_with_an_image(tmp_path: Path) -> None:
    root = _official_folder(tmp_path / "scienceqa")
    records = sqa.load(root)
    assert [r["pid"] for r in records] == ["1", "2", "3", "4"]
    assert records[0]["image_path"] == str((root / "images" / "test" / "1" / "image.png").resolve())
    assert sqa.load(root, "val") == []


def test_load_errors_name_the_file_and_problem(tmp_path: Path) -> None:
    root = _official_folder(tmp_path / "scienceqa")
    (root / "images" / "test" / "2" / "image.png").unlink()
    with pytest.raises(KitError, match=r"image of record 2 not found"):
        sqa.load(root)
    problems = json.loads((root / "problems.json").read_text())
    problems["3"]["answer"] = 7
    (root / "problems.json").write_text(json.dumps(problems))
    with pytest.raises(KitError, match=r"problems\.json: problem 3 has answer 7"):
        sqa.load(root, check_images=False)
    with pytest.raises(KitError, match="unknown split"):
        sqa.load(root, "dev")


def test_hub_splits_are_mapped_and_the_mini_splits_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    asked: list[str] = []
    row = {"image": Image.new("RGB", (4, 4)), "question": "Which is a mammal?", "choices": ["cat", "trout"],
           "answer": 0, "hint": "", "task": "closed choice", "grade": "grade3", "subject": "natural science",
           "topic": "biology", "category": "Classify", "skill": "s", "lecture": "", "solution": ""}

    def load_dataset(source: str, split: str) -> list[dict]:
        if split not in ("train", "validation", "test"):  # derek-thomas/ScienceQA's only splits
            raise ValueError(f"Unknown split {split!r}")
        asked.append(split)
        return [row]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    (record,) = sqa.load(sqa.HUB_ID, "val", cache_dir=tmp_path)
    assert asked == ["validation"] and record["pid"] == "validation-0"
    for split in ("minival", "minitest"):
        with pytest.raises(KitError, match=rf"split '{split}' is not in the hub copy .*pid_splits.json"):
            sqa.load(sqa.HUB_ID, split)
    assert asked == ["validation"]


def test_cli_scores_llava_answers_and_fails_the_missing_ones(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = _official_folder(tmp_path / "scienceqa")
    lines = [{"question_id": p["pid"], "prompt": ("<image>\n" if p["image"] else "") + p["question"], "text": r}
             for p, r in zip(PROBLEMS, RESPONSES, strict=True) if p["pid"] != "3"]  # problem 3 unanswered
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    assert main(["score", "scienceqa", str(path), "--base-dir", str(root)]) == 0
    result = json.loads(capsys.readouterr().out)
    # LLaVA: the missing problem is FAILED and, with the prompt 'Unknown', not an image problem
    assert (result["accuracy"], result["questions"]) == (pytest.approx(100 / 3), 3)
    assert (result["all_accuracy"], result["all_questions"], result["failed"]) == (40.0, 5, 2)
