"""MME: the eval-tool score on hand-built result folders with known scores, the answer parser, both
benchmark layouts and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kit.cli import main
from kit.errors import KitError
from kit.eval.benchmarks import mme

RESULTS = {
    # 4 questions, 3 right; 1 of 2 images with both right: 75 + 50 = 125
    "existence": ["img1.jpg\tIs there a dog in this image? Please answer yes or no.\tYes\tYes",
                  "img1.jpg\tIs there a cat in this image? Please answer yes or no.\tNo\tNo",
                  "img2.jpg\tIs there a car in this image? Please answer yes or no.\tYes\tNo, there is not.",
                  "img2.jpg\tIs there a bus in this image? Please answer yes or no.\tNo\tno"],
    # 1 of 2 right ("i th" holds neither yes nor no: other); no image fully right: 50 + 0 = 50
    "count": ["c1.png\tAre there two apples? Please answer yes or no.\tYes\tYes.",
              "c1.png\tAre there three apples? Please answer yes or no.\tNo\tI think so"],
    # all right: 100 + 100 = 200
    "code_reasoning": ["k1.png\tWill the code print 3? Please answer yes or no.\tYes\tyes, it prints 3",
                       "k1.png\tWill the code print 4? Please answer yes or no.\tNo\tNope"],
}


def _write_results(folder: Path, results: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in results.items():
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_known_scores(tmp_path: Path) -> None:
    result = mme.score(mme.read_results(_write_results(tmp_path / "answers", RESULTS)))
    assert result["subtasks"]["existence"] == {"score": 125.0, "acc": 75.0, "acc_plus": 50.0, "questions": 4,
                                               "images": 2}
    assert result["subtasks"]["count"]["score"] == 50.0
    assert result["subtasks"]["code_reasoning"]["score"] == 200.0
    assert (result["perception"], result["cognition"]) == (175.0, 200.0)
    assert result["perception_subtasks"] == ["existence", "count"]
    assert result["cognition_subtasks"] == ["code_reasoning"]


def test_full_marks_are_2000_and_800(tmp_path: Path) -> None:
    results = {name: [f"{name}{i}.png\tQ{j}? Please answer yes or no.\t{gt}\t{gt}"
                      for i in range(3) for j, gt in enumerate(("Yes", "No"))] for name in mme.SUBTASKS}
    result = mme.score(mme.read_results(_write_results(tmp_path / "answers", results)))
    assert (result["perception"], result["cognition"]) == (2000.0, 800.0)
    assert len(result["perception_subtasks"]) == 10 and len(result["cognition_subtasks"]) == 4


def test_parse_pred_ans() -> None:
    assert mme.extract("Yes") == "yes"
    assert mme.extract("NO") == "no"
    assert mme.extract("No, it is not.") == "no"
    assert mme.extract("Yes, there is.") == "yes"
    assert mme.extract("Not sure") == "no"  # "no" within the first 4 characters (official quirk)
    assert mme.extract("There is a dog.") == "other"
    assert mme.extract("I say yes") == "other"  # "yes" only after the first 4 characters
    assert mme.extract("") == "other"


def test_cli_prints_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write_results(tmp_path / "answers", RESULTS)
    assert main(["score", "mme", str(folder)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["perception"], result["cognition"]) == (175.0, 200.0)
    assert sorted(result["subtasks"]) == ["code_reasoning", "count", "existence"]


@pytest.mark.parametrize(("lines", "message"), [
    (["img1.jpg\tIs there a dog?\tYes"], r"existence\.txt, line 1: expected 4 tab-separated fields"),
    (["img1.jpg\tIs there a dog?\tMaybe\tYes", "img1.jpg\tQ\tNo\tNo"], r"existence\.txt, line 1: ground truth 'Maybe'"),
    (["img1.jpg\tQ1\tYes\tYes"], r"existence\.txt: 1 result lines"),
    (["img1.jpg\tQ1\tYes\tYes", "img2.jpg\tQ2\tNo\tNo"], r"existence\.txt, lines 1 and 2: .* different images"),
])
def test_cli_names_the_malformed_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str],
                                      message: str) -> None:
    folder = _write_results(tmp_path / "answers", {"existence": lines})
    assert main(["score", "mme", str(folder)]) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, err), err


def test_unknown_result_file_is_an_error(tmp_path: Path) -> None:
    folder = _write_results(tmp_path / "answers", {"existence": RESULTS["existence"], "shapes": ["a\tb\tYes\tYes"]})
    with pytest.raises(KitError, match="shapes.txt, not named after an MME sub-task"):
        mme.read_results(folder)


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)


def test_load_both_benchmark_layouts(tmp_path: Path) -> None:
    # side by side (existence, like the real color/count/... folders)
    _image(tmp_path / "existence" / "000001.png")
    (tmp_path / "existence" / "000001.txt").write_text(
        "Is there a dog in this image? Please answer yes or no.\tYes\n"
        "Is there a cat in this image? Please answer yes or no.\tNo\n", encoding="utf-8")
    # images/ + questions_answers_YN/ (artwork, like the real artwork/celebrity/... folders)
    _image(tmp_path / "artwork" / "images" / "10002.jpg")
    (tmp_path / "artwork" / "questions_answers_YN").mkdir(parents=True)
    (tmp_path / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Is this artwork created by Tintoretto?\tYes\nIs this artwork created by Monet?\tNo", encoding="utf-8")
    records = mme.load(tmp_path)
    assert [(r["question_id"], r["answer"]) for r in records] == [
        ("existence/000001.png", "Yes"), ("existence/000001.png", "No"),
        ("artwork/10002.jpg", "Yes"), ("artwork/10002.jpg", "No")]
    assert records[2]["image_path"] == str((tmp_path / "artwork" / "images" / "10002.jpg").resolve())
    assert mme.build_prompt(records[0]) == "Is there a dog in this image? Please answer yes or no."
    assert mme.build_prompt(records[2]) == "Is this artwork created by Tintoretto? Please answer yes or no."
    for record, response in zip(records, ["Yes", "No", "Yes", "Yes"], strict=True):
        record["prediction"] = mme.extract(response, record)
    result = mme.score(records)
    assert result["subtasks"]["existence"]["score"] == 200.0
    assert result["subtasks"]["artwork"]["score"] == 50.0  # acc 50, acc+ 0
    assert (result["perception"], result["cognition"]) == (250.0, 0.0)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(KitError, match="holds none of the sub-task folders"):
        mme.load(tmp_path)
    (tmp_path / "count").mkdir()
    (tmp_path / "count" / "5.txt").write_text("How many?\tYes\n", encoding="utf-8")
    with pytest.raises(KitError, match=r"count/5\.txt: no image named 5"):
        mme.load(tmp_path)
    _image(tmp_path / "count" / "5.jpg")
    (tmp_path / "count" / "5.txt").write_text("How many? Yes\n", encoding="utf-8")
    with pytest.raises(KitError, match=r"5\.txt, line 1: expected 'question<TAB>Yes\|No'"):
        mme.load(tmp_path)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_extract_never_raises(text: str) -> None:
    assert mme.extract(text) in ("yes", "no", "other")
