"""MathVista: rescoring the released outputs reproduces the released scores exactly; loader, prompt,
extraction and normalisation follow the official rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kit.cli import main
from kit.errors import KitError
from kit.eval.benchmarks import _common, mathvista

# model -> (integer rule of its released score file, released correct count out of 1000)
RELEASED = {
    "gpt4": ("legacy", 261),
    "bard": ("legacy", 348),
    "llavar": ("current", 252),
    "idefics_9b_instruct": ("legacy", 198),
    "random_guess": ("legacy", 179),
}


@pytest.fixture(scope="module")
def fixtures(shared_dir: Path) -> Path:
    path = shared_dir / "fixtures" / "mathvista"
    if not path.is_dir():
        pytest.skip(f"MathVista fixtures {path} are absent")
    return path


def _released(fixtures: Path, model: str) -> tuple[dict, dict]:
    results = fixtures / "results"
    return (json.loads((results / f"output_{model}.json").read_text(encoding="utf-8")),
            json.loads((results / f"scores_{model}.json").read_text(encoding="utf-8")))


@pytest.mark.parametrize("model", sorted(RELEASED))
def test_released_scores_are_reproduced_exactly(fixtures: Path, model: str) -> None:
    output, released = _released(fixtures, model)
    int_rule, correct = RELEASED[model]
    result = mathvista.score(output, int_rule=int_rule)
    assert (result["correct"], result["total"]) == (correct, 1000)
    assert (released["average"]["correct"], released["average"]["total"]) == (correct, 1000)
    assert result["accuracy"] == float(released["average"]["accuracy"])
    for key in mathvista.BREAKDOWN_KEYS:
        mine = {value: (d["correct"], d["total"], d["accuracy"]) for value, d in result[key].items()}
        theirs = {value: (d["correct"], d["total"], float(d["accuracy"])) for value, d in released[key].items()}
        assert mine == theirs, key


def test_released_true_false_matches_per_problem(fixtures: Path) -> None:
    output, _ = _released(fixtures, "bard")
    for pid, record in output.items():
        prediction = mathvista.normalize_extracted_answer(record["extraction"], record["choices"],
                                                          record["question_type"], record["answer_type"],
                                                          record["precision"], "legacy")
        assert prediction == record["prediction"], pid
        assert mathvista.safe_equal(prediction, record["answer"]) == record["true_false"], pid


@pytest.mark.parametrize(("model", "other_rule", "other_correct"), [("llavar", "legacy", 250),
                                                                     ("idefics_9b_instruct", "current", 200)])
def test_the_integer_rule_matters(fixtures: Path, model: str, other_rule: str, other_correct: int) -> None:
    output, released = _released(fixtures, model)
    assert mathvista.score(output, int_rule=other_rule)["correct"] == other_correct
    assert other_correct != released["average"]["correct"]


def test_cli_prints_the_released_score(fixtures: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = fixtures / "results" / "output_gpt4.json"
    assert main(["score", "mathvista", str(path), "--int-rule", "legacy"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["correct"], result["total"], result["accuracy"]) == (261, 1000, 26.1)
    assert result["question_type"]["multi_choice"] == {"accuracy": 46.67, "correct": 252, "total": 540}


def test_cli_names_the_malformed_record(fixtures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output, _ = _released(fixtures, "gpt4")
    del output["17"]["answer"]
    path = tmp_path / "output.json"
    path.write_text(json.dumps(output), encoding="utf-8")
    assert main(["score", "mathvista", str(path)]) == 2
    err = capsys.readouterr().err
    assert "record 17" in err and str(path) in err and "'answer'" in err


def test_cli_rejects_broken_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "output.json"
    path.write_text('{"1": {', encoding="utf-8")
    assert main(["score", "mathvista", str(path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_build_prompt_reproduces_the_released_queries(fixtures: Path) -> None:
    output, _ = _released(fixtures, "gpt4")
    rebuilt = {pid: mathvista.build_prompt({k: v for k, v in p.items() if k != "query"}) for pid, p in output.items()}
    same = [pid for pid, p in output.items() if rebuilt[pid] == p["query"]]
    assert len(same) == 985  # the other 15 had their choices reordered after the queries were made
    assert mathvista.build_prompt(output["1"]) == output["1"]["query"]


def test_build_prompt_formats_unit_and_choices() -> None:
    record = {"question": "How long?", "unit": "cm", "choices": ["1", "2"], "question_type": "multi_choice",
              "answer_type": "text", "precision": None}
    assert mathvista.build_prompt(record) == (f"{mathvista.HINT_MULTI_CHOICE}\nQuestion: How long? (Unit: cm)\n"
                                              "Choices:\n(A) 1\n(B) 2")
    record = {"question": "Q?", "unit": None, "choices": None, "question_type": "free_form", "answer_type": "float",
              "precision": 2.0}
    assert mathvista.build_prompt(record) == f"{mathvista.HINT_FLOAT_2}\nQuestion: Q?"


MC = {"pid": "1", "question": "Which?", "choices": ["red", "blue", "green"], "question_type": "multi_choice",
      "answer_type": "text", "precision": None, "unit": None, "answer": "blue"}
INT = {"pid": "2", "question": "How many?", "choices": None, "question_type": "free_form", "answer_type": "integer",
       "precision": None, "unit": None, "answer": "3"}
FLOAT = {"pid": "3", "question": "How much?", "choices": None, "question_type": "free_form", "answer_type": "float",
         "precision": 1, "unit": None, "answer": "1.5"}
LIST = {"pid": "4", "question": "Which years?", "choices": None, "question_type": "free_form", "answer_type": "list",
        "precision": None, "unit": None, "answer": "[2007, 2008]"}


def test_extract_rules() -> None:
    assert mathvista.extract("", MC) == ""
    assert mathvista.extract("blue", MC) == "blue"
    assert mathvista.extract(" 3 ", INT) == "3"
    assert mathvista.extract("1.50", FLOAT) == "1.5"
    assert mathvista.extract("The answer is 3.", INT) is None  # needs the LLM extractor
    assert mathvista.extract('The answer is "3".', INT, quick_extract=True) == "3"


def test_extract_calls_the_llm_with_the_official_prompt() -> None:
    prompts: list[str] = []

    def llm(prompt: str) -> str:
        prompts.append(prompt)
        return "B"

    assert mathvista.extract("I think it is the second one.", MC, llm=llm) == "B"
    (prompt,) = prompts
    assert prompt.startswith("Please read the following example. Then extract the answer from the model response")
    assert "Question: What fraction of the shape is blue?\nChoices:\n(A) 3/11\n(B) 8/11" in prompt
    assert prompt.endswith(f"{mathvista.build_prompt(MC)}\n\nI think it is the second one.\n\nExtracted answer: ")
    assert prompt.count("Extracted answer:") == 6


def test_a_failing_llm_gives_an_empty_extraction() -> None:
    def llm(prompt: str) -> str:
        raise TimeoutError("no answer")

    assert mathvista.extract("something", INT, llm=llm) == ""


def test_normalize_extracted_answer() -> None:
    choices = MC["choices"]
    assert mathvista.normalize_extracted_answer("B", choices, "multi_choice", "text", None) == "blue"
    assert mathvista.normalize_extracted_answer("(c) green", choices, "multi_choice", "text", None) == "green"
    assert mathvista.normalize_extracted_answer("bleu", choices, "multi_choice", "text", None) == "blue"
    assert mathvista.normalize_extracted_answer("", choices, "multi_choice", "text", None) == "red"  # first nearest
    assert mathvista.normalize_extracted_answer("2.0", None, "free_form", "integer", None, "current") == "2"
    assert mathvista.normalize_extracted_answer("2.0", None, "free_form", "integer", None, "legacy") is None
    assert mathvista.normalize_extracted_answer("3.14159", None, "free_form", "float", 2) == "3.14"
    assert mathvista.normalize_extracted_answer("x", None, "free_form", "float", 2) is None
    assert mathvista.normalize_extracted_answer([2007, 2008], None, "free_form", "list", None) == "[2007, 2008]"
    with pytest.raises(KitError, match="int_rule"):
        mathvista.normalize_extracted_answer("2", None, "free_form", "integer", None, "newest")


def test_levenshtein() -> None:
    assert _common.levenshtein("kitten", "sitting") == 3
    assert _common.levenshtein("flaw", "lawn") == 2
    assert _common.levenshtein("", "abc") == 3
    assert _common.levenshtein("über", "uber") == 1


@given(st.text(max_size=30), st.text(max_size=30))
def test_levenshtein_properties(a: str, b: str) -> None:
    d = _common.levenshtein(a, b)
    assert d == _common.levenshtein(b, a)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))
    assert (d == 0) == (a == b)


def _metadata() -> dict:
    return {"language": "english", "source": "tiny", "category": "math-targeted-vqa", "task": "figure question answering",
            "context": "synthetic scene", "grade": "elementary school", "skills": ["arithmetic reasoning"]}


def test_score_of_evaluator_records() -> None:
    records = [dict(MC, metadata=_metadata(), response="blue"),                  # rule: exact choice
               dict(INT, metadata=_metadata(), prediction="3"),                  # extract() output
               dict(FLOAT, metadata=_metadata(), response="It is about 1.5."),   # no answer without an LLM
               dict(LIST, metadata=_metadata(), prediction=None)]                # no answer
    result = mathvista.score(records)
    assert (result["correct"], result["total"], result["accuracy"]) == (2, 4, 50.0)
    assert result["answer_type"]["integer"] == {"accuracy": 100.0, "correct": 1, "total": 1}
    assert result["skills"] == {"arithmetic reasoning": {"accuracy": 50.0, "correct": 2, "total": 4}}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.sampled_from([MC, INT, FLOAT, LIST]))
def test_extract_never_raises(text: str, record: dict) -> None:
    value = mathvista.extract(text, record)
    assert value is None or isinstance(value, str)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=40), st.integers(), st.floats(), st.none()), st.sampled_from([MC, INT, FLOAT, LIST]),
       st.sampled_from(mathvista.INT_RULES))
def test_normalize_never_raises(extraction: object, record: dict, int_rule: str) -> None:
    value = mathvista.normalize_extracted_answer(extraction, record["choices"], record["question_type"],
                                                 record["answer_type"], record["precision"], int_rule)
    assert value is None or isinstance(value, str)
    if record["question_type"] == "multi_choice":
        assert value in record["choices"]


def _write_root(tmp_path: Path, fixtures: Path, pids: list[str], with_images: bool = True) -> Path:
    data = json.loads((fixtures / "testmini.json").read_text(encoding="utf-8"))
    subset = {}
    for pid in pids:
        problem = dict(data[pid], image=f"images/{pid}.png")
        subset[pid] = problem
        if with_images:
            (tmp_path / "images").mkdir(exist_ok=True)
            Image.new("RGB", (4, 4), "white").save(tmp_path / "images" / f"{pid}.png")
    (tmp_path / "testmini.json").write_text(json.dumps(subset), encoding="utf-8")
    return tmp_path


def test_load_local_folder(fixtures: Path, tmp_path: Path) -> None:
    root = _write_root(tmp_path, fixtures, ["1", "2", "5"])
    records = mathvista.load(root, "testmini")
    assert [r["pid"] for r in records] == ["1", "2", "5"]
    assert records[0]["image_path"] == str((root / "images" / "1.png").resolve())
    assert set(mathvista.PROBLEM_FIELDS) <= set(records[0])
    assert len(mathvista.load(root, limit=2)) == 2


def test_load_the_official_testmini(fixtures: Path) -> None:
    records = mathvista.load(fixtures, "testmini", check_images=False)
    assert len(records) == 1000
    assert sum(r["question_type"] == "multi_choice" for r in records) == 540


def test_load_errors_name_the_file_and_record(fixtures: Path, tmp_path: Path) -> None:
    with pytest.raises(KitError, match="file not found"):
        mathvista.load(tmp_path)
    root = _write_root(tmp_path, fixtures, ["1", "2"], with_images=False)
    with pytest.raises(KitError, match=r"image of record 1 not found"):
        mathvista.load(root)
    data = json.loads((root / "testmini.json").read_text(encoding="utf-8"))
    del data["2"]["question_type"]
    (root / "testmini.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(KitError, match=r"testmini\.json: record 2 lacks the field\(s\) 'question_type'"):
        mathvista.load(root, check_images=False)
    with pytest.raises(KitError, match="neither an existing folder nor a hub id"):
        mathvista.load(tmp_path / "missing" / "folder")


def test_rules_only_extraction_reads_the_final_answer_line():
    record = {"question_type": "free_form", "answer_type": "integer", "choices": None, "precision": None,
              "answer": "3"}
    response = "Step 1: Count the red shapes: 3.\nThe answer is 3."
    assert mathvista.extract(response, record) is None  # the official rules alone cannot read it
    assert mathvista.extract_rules(response, record) == "3"
    assert mathvista.is_correct(mathvista.extract_rules(response, record), record)
    assert not mathvista.is_correct(mathvista.extract_rules("The answer is 4.", record), record)
    assert mathvista.extract_rules("no final line here", record) is None
    choice = {"question_type": "multi_choice", "answer_type": "text", "choices": ["red", "blue"],
              "precision": None, "answer": "blue"}
    assert mathvista.is_correct(mathvista.extract_rules("Step 1: ... The answer is B.", choice), choice)
    assert mathvista.is_correct(mathvista.extract_rules('The answer is "blue".', choice), choice)
