"""SEED-Bench: option-letter extraction (VLMEvalKit's can_infer), accuracy overall and per dimension on
hand-made answers, the official layout and the CLI for eval.py's and LLaVA's answer files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kit.cli import main
from kit.errors import KitError
from kit.eval.benchmarks import seed

QUESTION = {"answer": "B", "choice_a": "One", "choice_b": "Two", "choice_c": "Three", "choice_d": "Four",
            "data_id": "1454426_2591111986", "data_type": "image", "question": "How many towels are in the image?",
            "question_id": "101669", "question_type_id": 5}


@pytest.mark.parametrize(("response", "letter"), [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B)", "B"), ("Answer: B", "B"), ("The answer is B.", "B"),
    ("B. Two", "B"), ("**B**", "B"),
    ("Two", "B"), ("There are two towels.", "B"),  # the text of exactly one option
    ("b", None),  # letters are matched as written
    ("A or B", None),  # two letters stand alone: no answer
    ("There are three or four.", None),  # two option texts
    ("Sorry, I can't help with images of people yet.", None),  # VLMEvalKit's refusal 'Z'
    ("", None),
])
def test_option_letter_extraction(response: str, letter: str | None) -> None:
    assert seed.extract(response, QUESTION) == letter


def test_a_lone_a_counts_as_a_letter_as_in_vlmevalkit() -> None:
    # "A" standing alone is read as option A even when it is an article (VLMEvalKit only warns, when VERBOSE)
    assert seed.extract("A towel", QUESTION) == "A"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_extract_never_raises(text: str) -> None:
    assert seed.extract(text, QUESTION) in (None, "A", "B", "C", "D")
    assert seed.extract(text, None) in (None, "A", "B", "C", "D")


def _questions() -> list[dict]:
    """Six questions: dimension 5 (three), dimension 1 (two), dimension 9 (one)."""
    rows = []
    for i, (type_id, answer) in enumerate([(5, "A"), (5, "B"), (5, "C"), (1, "D"), (1, "A"), (9, "B")]):
        rows.append({**QUESTION, "question_id": str(i), "question_type_id": type_id, "answer": answer,
                     "data_id": f"img{i}.jpg"})
    return rows


def test_accuracy_overall_and_per_dimension() -> None:
    responses = ["A", "(B)", "D", "Answer: D", "C", None]  # right, right, wrong, right, wrong, no answer
    records = [dict(q) if r is None else dict(q, response=r) for q, r in zip(_questions(), responses, strict=True)]
    result = seed.score(records)
    assert (result["accuracy"], result["correct"], result["questions"], result["unanswered"]) == (50.0, 3, 6, 1)
    assert result["dimensions"]["Instances Counting"] == {"question_type_id": 5, "accuracy": pytest.approx(200 / 3),
                                                          "questions": 3}
    assert result["dimensions"]["Scene Understanding"]["accuracy"] == 50.0
    assert result["dimensions"]["Text Understanding"]["accuracy"] == 0.0
    assert list(result["dimensions"]) == ["Scene Understanding", "Instances Counting", "Text Understanding"]
    assert result["data_types"] == {"image": {"accuracy": 50.0, "questions": 6}}


def test_score_errors_name_the_question() -> None:
    with pytest.raises(KitError, match=r"question 0 appears twice"):
        seed.score([dict(q, prediction="A") for q in _questions()[:1]] * 2)
    with pytest.raises(KitError, match=r"record 7 lacks the field\(s\) 'question_type_id'"):
        seed.score([{"question_id": "7", "answer": "A"}])


def _official_folder(root: Path) -> Path:
    questions = _questions() + [{**QUESTION, "question_id": "v1738", "data_type": "video", "data_id": "94328.webm",
                                 "question_type_id": 10}]
    root.mkdir(parents=True, exist_ok=True)
    types = {name: type_id for type_id, name in seed.DIMENSIONS.items()}
    (root / "SEED-Bench.json").write_text(json.dumps({"questions": questions, "question_type": types}),
                                          encoding="utf-8")
    for i in range(6):
        image = root / "SEED-Bench-image" / f"img{i}.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(image)
    return root


def test_load_keeps_the_image_questions(tmp_path: Path) -> None:
    root = _official_folder(tmp_path / "seed")
    records = seed.load(root)
    assert [r["question_id"] for r in records] == ["0", "1", "2", "3", "4", "5"]
    assert records[0]["dimension"] == "Instances Counting"
    assert records[0]["image_path"] == str((root / "SEED-Bench-image" / "img0.jpg").resolve())
    assert seed.build_prompt(records[0]) == ("How many towels are in the image?\nA. One\nB. Two\nC. Three\nD. Four\n"
                                             "Answer with the option's letter from the given choices directly.")


def test_load_errors_name_the_file_and_question(tmp_path: Path) -> None:
    root = _official_folder(tmp_path / "seed")
    (root / "SEED-Bench-image" / "img3.jpg").unlink()
    with pytest.raises(KitError, match=r"image 'img3.jpg' of question 3 not found"):
        seed.load(root)
    data = json.loads((root / "SEED-Bench.json").read_text())
    data["questions"][0]["answer"] = "E"
    (root / "SEED-Bench.json").write_text(json.dumps(data))
    with pytest.raises(KitError, match=r"SEED-Bench\.json: question 0 has answer 'E'"):
        seed.load(root, check_images=False)


def test_hub_video_rows_are_left_out_before_their_frames_are_decoded(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """lmms-lab/SEED-Bench's layout: ``image`` a sequence of images (a video question's several frames)."""
    import io

    import datasets

    def jpeg() -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4), "red").save(buffer, format="JPEG")
        return buffer.getvalue()

    video = {**QUESTION, "question_id": "v1", "data_id": "v.mp4", "data_type": "video", "question_type_id": 10}
    rows = [QUESTION, video]
    features = datasets.Features({**{k: datasets.Value("int64" if k == "question_type_id" else "string")
                                     for k in QUESTION}, "image": datasets.Sequence(datasets.Image())})
    # The video row's frames are not images at all: decoding them would fail, so the load proves they are not.
    frames = [[{"bytes": jpeg(), "path": "a.jpg"}], [{"bytes": b"not an image", "path": f"f{i}.jpg"} for i in range(3)]]
    dataset = datasets.Dataset.from_dict({**{k: [r[k] for r in rows] for k in QUESTION}, "image": frames},
                                         features=features)
    with pytest.raises(Exception):  # noqa: B017,PT011 - PIL's own error type: only that decoding the row fails
        dataset[1]["image"]
    monkeypatch.setattr(datasets, "load_dataset", lambda source, split, **kwargs: dataset)
    (record,) = seed.load(seed.HUB_ID, cache_dir=tmp_path)
    assert record["question_id"] == "101669" and Path(record["image_path"]).is_file()
    only_video = dataset.select([1])
    monkeypatch.setattr(datasets, "load_dataset", lambda source, split, **kwargs: only_video)
    with pytest.raises(KitError, match="no image questions"):
        seed.load(seed.HUB_ID, cache_dir=tmp_path)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cli_scores_eval_py_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"q_id": str(i), "prediction": p, "gt": g, "q_type_id": t}
            for i, (p, g, t) in enumerate([("A", "A", 1), ("B", "C", 1), ("D", "D", 2), ("A", "A", 2)])]
    path = _write_jsonl(tmp_path / "results.json", rows)
    assert main(["score", "seed", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == 75.0
    assert {k: v["accuracy"] for k, v in result["dimensions"].items()} == {"Scene Understanding": 50.0,
                                                                           "Instance Identity": 100.0}


def test_cli_scores_llava_answers_with_unanswered_questions_wrong(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = _official_folder(tmp_path / "seed")
    answers = [{"question_id": i, "prompt": "q", "text": t} for i, t in enumerate(["A", "B", "C", "D", "A"])]
    path = _write_jsonl(tmp_path / "answers.jsonl", answers)
    assert main(["score", "seed", str(path), "--questions", str(root / "SEED-Bench.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    # all five answered image questions right, the sixth unanswered; the video question is not scored
    assert (result["correct"], result["questions"], result["unanswered"]) == (5, 6, 1)
    assert main(["score", "seed", str(path), "--questions", str(root / "SEED-Bench.json"), "--data-type", "all"]) == 0
    assert json.loads(capsys.readouterr().out)["questions"] == 7
    assert main(["score", "seed", str(path)]) == 2
    assert "need --questions" in capsys.readouterr().err
