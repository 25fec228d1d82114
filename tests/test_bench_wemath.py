"""We-Math: the official counts, the answer rule, and the four-dimensional metric on predictions whose
outcome is known by construction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kit.cli import main
from kit.errors import KitError
from kit.eval.benchmarks import wemath


@pytest.fixture(scope="module")
def fixtures(shared_dir: Path) -> Path:
    path = shared_dir / "fixtures" / "wemath"
    if not path.is_dir():
        pytest.skip(f"We-Math fixtures {path} are absent")
    return path


@pytest.fixture(scope="module")
def rows(fixtures: Path) -> list[dict]:
    return json.loads((fixtures / "testmini.json").read_text(encoding="utf-8"))


def _wrong(answer: str) -> str:
    return "A" if answer != "A" else "B"


def _respond(rows: list[dict], right) -> list[dict]:
    """Rows with an official-format response, right where ``right(row)`` is true."""
    return [dict(r, response=f"<Thought process>: ... <Answer>: <<{r['answer'] if right(r) else _wrong(r['answer'])}>>")
            for r in rows]


def test_official_counts(fixtures: Path, rows: list[dict]) -> None:
    records = wemath.load(fixtures, "testmini", check_images=False)
    assert len(records) == len(rows) == 1740
    assert records[0]["image"] == "2steps/image/1-1.png"
    assert records[0]["image_path"] == str((fixtures / "2steps" / "image" / "1-1.png").resolve())
    result = wemath.score(_respond(rows, lambda r: True))
    assert (result["rows"], result["problems"]) == (1740, 525)
    assert (result["two_step_problems"], result["three_step_problems"]) == (360, 165)


def test_all_correct_scores_100(rows: list[dict]) -> None:
    result = wemath.score(_respond(rows, lambda r: True))
    for mode in ("strict", "loose"):
        assert result[mode] == {"IK": 0.0, "IG": 0.0, "CM": 100.0, "RM": 0.0, "rm_rate": 0.0, "score": 100.0,
                                "counts": {"IK": 0, "IG": 0, "CM": 525, "RM": 0}}
    assert (result["S1"], result["S2"], result["S3"]) == (100.0, 100.0, 100.0)


def test_all_unanswered_is_insufficient_knowledge(rows: list[dict]) -> None:
    result = wemath.score([dict(r, response="I cannot tell.") for r in rows])
    for mode in ("strict", "loose"):
        assert result[mode]["IK"] == 100.0 and result[mode]["score"] == 0.0
        assert result[mode]["rm_rate"] is None  # CM + RM = 0
    assert (result["S1"], result["S2"], result["S3"]) == (0.0, 0.0, 0.0)


def test_inadequate_generalization_and_rote_memorization(rows: list[dict]) -> None:
    # two-step problems: both steps right, composite wrong (IG); three-step: steps wrong, composite right (RM)
    def right(r: dict) -> bool:
        return r["key"].endswith("multi") == r["key"].startswith("3steps")

    result = wemath.score(_respond(rows, right))
    for mode in ("strict", "loose"):
        assert result[mode]["counts"] == {"IK": 0, "IG": 360, "CM": 0, "RM": 165}
        assert (result[mode]["IG"], result[mode]["RM"], result[mode]["rm_rate"]) == (68.57, 31.43, 100.0)
        assert result[mode]["score"] == 34.29  # (525 - 0.5 * 360 - 165) / 525
    assert (result["S1"], result["S2"], result["S3"]) == (59.26, 0.0, 100.0)  # 720 of 1215 one-step rows


def test_strict_and_loose_differ_on_partly_known_steps(rows: list[dict]) -> None:
    # two-step problems: step 1 right, step 2 wrong, composite right (loose CM, strict RM); three-step all right
    result = wemath.score(_respond(rows, lambda r: r["key"] != "2steps_2"))
    assert result["loose"]["counts"] == {"IK": 0, "IG": 0, "CM": 525, "RM": 0}
    assert result["strict"]["counts"] == {"IK": 0, "IG": 0, "CM": 165, "RM": 360}
    assert (result["loose"]["score"], result["strict"]["score"]) == (100.0, 31.43)
    assert result["strict"]["rm_rate"] == 68.57


def test_each_class_on_a_hand_built_set() -> None:
    def problem(pid: str, step1: bool, step2: bool, multi: bool) -> list[dict]:
        return [{"ID": pid, "key": key, "answer": "A", "prediction": "A" if ok else "B"}
                for key, ok in (("2steps_1", step1), ("2steps_2", step2), ("2steps_multi", multi))]

    records = (problem("ik", True, False, False) + problem("ig", True, True, False)
               + problem("cm", True, True, True) + problem("rm", False, False, True))
    result = wemath.score(records)
    assert result["problems"] == 4
    assert result["strict"]["counts"] == result["loose"]["counts"] == {"IK": 1, "IG": 1, "CM": 1, "RM": 1}
    assert result["strict"]["score"] == 37.5  # (4 - 0.5 - 1 - 1) / 4 == (CM + 0.5 IG) / 4
    assert result["strict"]["rm_rate"] == 50.0
    assert (result["S1"], result["S2"], result["S3"]) == (62.5, 50.0, None)


def test_answer_rule() -> None:
    assert wemath.extract("<Thought process>: add them <Answer>: <<C>>") == "C"
    assert wemath.extract("Answer: D.") == "D"
    assert wemath.extract("The Answer is C.") is None  # first character after 'Answer' is 'i'
    assert wemath.extract("Answer: b") is None  # case-sensitive
    assert wemath.extract("Answer: Z") is None
    assert wemath.extract("no marker, just H") is None  # 'n' is not an option letter
    assert wemath.extract("H") == "H"


def test_build_prompt(rows: list[dict]) -> None:
    prompt = wemath.build_prompt(rows[0])
    assert prompt.startswith("Now, we require you to solve a multiple-choice math question.")
    assert f"Question: {rows[0]['question']}\nOption: {rows[0]['option']}\n" in prompt
    assert prompt.endswith("<Thought process>: <<your thought process>> <Answer>: <<your option>>")


def test_cli_scores_and_names_the_malformed_row(rows: list[dict], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "responses.json"
    path.write_text(json.dumps(_respond(rows, lambda r: True)), encoding="utf-8")
    assert main(["score", "wemath", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["strict"]["score"] == 100.0 and result["S1"] == 100.0
    broken = _respond(rows, lambda r: True)
    del broken[5]["response"]
    path.write_text(json.dumps(broken), encoding="utf-8")
    assert main(["score", "wemath", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"record {broken[5]['ID']}/{broken[5]['key']} lacks the field(s) 'response'" in err and str(path) in err


def test_load_local_folder_and_errors(tmp_path: Path) -> None:
    row = {"ID": "2steps_1", "split": "testmini", "knowledge concept": "Area", "question": "Q?", "option": "A. 1;B. 2",
           "answer": "A", "image_path": "2steps/image/1-1.png", "key": "2steps_1", "question number": 1}
    (tmp_path / "testmini.json").write_text(json.dumps([row]), encoding="utf-8")
    with pytest.raises(KitError, match="image of record 2steps_1/2steps_1 not found"):
        wemath.load(tmp_path)
    (tmp_path / "2steps" / "image").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "2steps" / "image" / "1-1.png")
    (record,) = wemath.load(tmp_path)
    assert record["image_path"] == str((tmp_path / "2steps/image/1-1.png").resolve())
    (tmp_path / "testmini.json").write_text(json.dumps([dict(row, key="4steps_1")]), encoding="utf-8")
    with pytest.raises(KitError, match="has key '4steps_1'"):
        wemath.load(tmp_path)
    del row["option"]
    (tmp_path / "testmini.json").write_text(json.dumps([row]), encoding="utf-8")
    with pytest.raises(KitError, match=r"record 2steps_1/2steps_1 lacks the field\(s\) 'option'"):
        wemath.load(tmp_path)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_extract_never_raises(text: str) -> None:
    value = wemath.extract(text)
    assert value is None or value in "ABCDEFGH"


def test_is_correct_is_the_rows_joker():
    from kit.eval.benchmarks import wemath

    record = {"answer": "B"}
    assert wemath.is_correct("B", record) and not wemath.is_correct("C", record) and not wemath.is_correct(None, record)
