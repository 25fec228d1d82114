"""POPE: the official yes/no parsing, the metrics on hand-made answers with known counts, the per-split
average, both on-disk layouts and the CLI's three ways of pairing answers with labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kit.cli import main
from kit.errors import KitError
from kit.eval.benchmarks import pope


def _labels(category: str, labels: list[str]) -> list[dict]:
    """Label lines as in the released coco_pope_<split>.json (two questions per image here)."""
    return [{"question_id": i + 1, "image": f"COCO_val2014_{i // 2:012d}.jpg", "image_id": i // 2,
             "text": f"Is there a thing{i} in the image?", "label": label, "category": category}
            for i, label in enumerate(labels)]


BALANCED = ["yes", "no"] * 4


def test_all_yes_on_a_balanced_split() -> None:
    result = pope.score([dict(r, prediction="yes") for r in _labels("random", BALANCED)])
    split = result["splits"]["random"]
    assert (split["accuracy"], split["yes_ratio"], split["precision"], split["recall"]) == (50.0, 100.0, 50.0, 100.0)
    assert split["f1"] == pytest.approx(200 / 3)
    assert (split["TP"], split["FP"], split["TN"], split["FN"]) == (4, 4, 0, 0)
    assert result["accuracy"] == 50.0 and result["averaged_over"] == ["random"]


def test_known_confusion_counts() -> None:
    labels = ["yes", "yes", "yes", "yes", "no", "no", "no", "no"]
    answers = ["Yes", "Yes, there is.", "yes", "No, there is not.", "Yes.", "No", "There is no dog.", "no"]
    result = pope.score([dict(r, response=a) for r, a in zip(_labels("popular", labels), answers, strict=True)])
    split = result["splits"]["popular"]
    assert (split["TP"], split["FN"], split["FP"], split["TN"]) == (3, 1, 1, 3)
    assert (split["accuracy"], split["precision"], split["recall"], split["f1"], split["yes_ratio"]) == (
        75.0, 75.0, 75.0, 75.0, 50.0)


def test_metrics_are_averaged_over_the_splits_present() -> None:
    right = [dict(r, prediction=r["label"]) for r in _labels("random", BALANCED)]
    all_yes = [dict(r, prediction="yes") for r in _labels("adversarial", BALANCED)]
    result = pope.score(right + all_yes)
    assert result["averaged_over"] == ["random", "adversarial"]
    assert result["accuracy"] == 75.0 and result["yes_ratio"] == 75.0
    assert result["f1"] == pytest.approx((100 + 200 / 3) / 2)
    assert result["questions"] == 16


def test_no_yes_answer_gives_zero_precision_instead_of_an_error() -> None:
    split = pope.score([dict(r, prediction="no") for r in _labels("random", BALANCED)])["splits"]["random"]
    assert (split["accuracy"], split["precision"], split["recall"], split["f1"], split["yes_ratio"]) == (
        50.0, 0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize(("text", "expected"), [
    ("Yes", "yes"), ("No", "no"), ("no", "no"), ("Yes, there is a dog.", "yes"),
    ("No, there is not.", "no"), ("There is not a dog in the image.", "no"),
    ("Yes. No.", "yes"),  # only the first sentence counts
    ("no, sorry", "no"),  # commas are deleted before splitting
    ("I cannot tell", "yes"),  # neither word: the official script says yes
    ("NO", "yes"), ("Nope", "yes"),  # case-sensitive words, as in evaluate.py
    ("\nNo", "yes"),  # split on single spaces only: "\nNo" is not the word "No"
    ("", "yes"),
])
def test_official_answer_parsing(text: str, expected: str) -> None:
    assert pope.extract(text) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_extract_never_raises(text: str) -> None:
    assert pope.extract(text) in ("yes", "no")


def test_bad_records_name_the_question() -> None:
    with pytest.raises(KitError, match=r"question random/1 has label 'maybe'"):
        pope.score([{"question_id": 1, "category": "random", "label": "maybe", "prediction": "yes"}])
    with pytest.raises(KitError, match=r"question random/1 appears twice"):
        pope.score([dict(r, prediction="yes") for r in _labels("random", ["yes"]) * 2])
    with pytest.raises(KitError, match="neither 'prediction' nor 'response'"):
        pope.score(_labels("random", ["yes"]))


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _official_layout(root: Path, nested: bool) -> Path:
    folder = root / "coco" if nested else root
    for category in pope.CATEGORIES:
        _write_jsonl(folder / f"coco_pope_{category}.json",
                     [{k: v for k, v in r.items() if k != "category"} for r in _labels(category, BALANCED)])
    for i in range(4):
        image = root / "val2014" / f"COCO_val2014_{i:012d}.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(image)
    return root


@pytest.mark.parametrize("nested", [True, False])
def test_load_the_official_layout(tmp_path: Path, nested: bool) -> None:
    root = _official_layout(tmp_path / "pope", nested)
    records = pope.load(root)
    assert len(records) == 24 and [r["category"] for r in records[::8]] == list(pope.CATEGORIES)
    assert records[0]["image_path"] == str((root / "val2014" / "COCO_val2014_000000000000.jpg").resolve())
    assert {"question_id", "image", "image_id", "text", "label", "category", "image_path"} == set(records[0])
    assert pope.build_prompt(records[0]) == "Is there a thing0 in the image?\nAnswer the question using a single word or phrase."
    assert [r["question_id"] for r in pope.load(root, "popular", limit=3)] == [1, 2, 3]
    assert pope.score([dict(r, prediction=r["label"]) for r in records])["accuracy"] == 100.0


def test_load_errors_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(KitError, match="holds none of coco_pope_random.json"):
        pope.load(tmp_path)
    _write_jsonl(tmp_path / "coco_pope_random.json", [{"question_id": 1, "image": "a.jpg", "text": "Q", "label": "y"}])
    with pytest.raises(KitError, match=r"coco_pope_random\.json, line 1: label 'y' is neither yes nor no"):
        pope.load(tmp_path, "random", check_images=False)
    _write_jsonl(tmp_path / "coco_pope_random.json", [{"question_id": 1, "image": "a.jpg", "label": "yes"}])
    with pytest.raises(KitError, match=r"coco_pope_random\.json: record at line 1 lacks the field\(s\) 'text'"):
        pope.load(tmp_path, "random")
    _write_jsonl(tmp_path / "coco_pope_random.json", [{"question_id": 1, "image": "a.jpg", "text": "Q", "label": "yes"}])
    with pytest.raises(KitError, match=r"image of record random/1 not found"):
        pope.load(tmp_path, "random")


def test_cli_pairs_official_answers_with_one_label_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _official_layout(tmp_path / "pope", nested=True)
    # POPE's own answer format: {"question", "answer"} in the label file's order
    answers = _write_jsonl(tmp_path / "answers.json", [{"question": "q", "answer": a} for a in ["yes"] * 8])
    assert main(["score", "pope", str(answers), "--labels", str(root / "coco" / "coco_pope_random.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["accuracy"], result["yes_ratio"], result["averaged_over"]) == (50.0, 100.0, ["random"])
    short = _write_jsonl(tmp_path / "short.json", [{"answer": "yes"}])
    assert main(["score", "pope", str(short), "--labels", str(root / "coco" / "coco_pope_random.json")]) == 2
    assert "1 answers for the 8 questions" in capsys.readouterr().err


def test_cli_splits_llava_answers_by_category(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _official_layout(tmp_path / "pope", nested=True)
    # LLaVA: llava_pope_test.jsonl numbers the questions across splits and names each one's category
    questions, answers = [], []
    for c, category in enumerate(pope.CATEGORIES):
        for i, label in enumerate(BALANCED):
            qid = c * 100 + i
            questions.append({"question_id": qid, "image": "x.jpg", "text": "q", "category": category})
            text = label.capitalize() if category != "adversarial" else "Yes"
            answers.append({"question_id": qid, "prompt": "q", "text": text, "answer_id": "a", "model_id": "m"})
    answer_file = _write_jsonl(tmp_path / "answers.jsonl", answers)
    question_file = _write_jsonl(tmp_path / "llava_pope_test.jsonl", questions)
    assert main(["score", "pope", str(answer_file), "--labels", str(root / "coco"), "--questions", str(question_file)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {c: s["accuracy"] for c, s in result["splits"].items()} == {"random": 100.0, "popular": 100.0,
                                                                        "adversarial": 50.0}
    assert result["accuracy"] == pytest.approx(250 / 3)
    assert main(["score", "pope", str(answer_file), "--labels", str(root / "coco")]) == 2
    assert "give --questions" in capsys.readouterr().err


def test_cli_scores_self_contained_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [{"question_id": i, "category": "random", "label": label, "text": "No"} for i, label in enumerate(BALANCED)]
    path = _write_jsonl(tmp_path / "answers.jsonl", lines)
    assert main(["score", "pope", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["random"]["TN"] == 4
    _write_jsonl(path, [{"question_id": 1, "text": "No"}])
    assert main(["score", "pope", str(path)]) == 2
    assert "lacks the field(s) 'label'" in capsys.readouterr().err
