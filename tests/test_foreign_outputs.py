"""``kit score --from lmms-eval|vlmevalkit``: small files in each toolkit's layout, scored with the official
rules, against numbers worked out by hand here."""

from __future__ import annotations

import csv
import json
import types
from pathlib import Path

import pytest

from kit.cli import main
from kit.errors import KitError
from kit.eval import benchmarks
from kit.eval.benchmarks import foreign


def lmms_file(path: Path, samples: list[tuple[dict, str]], extra: list[dict] | None = None) -> Path:
    """An lmms-eval ``--log_samples`` JSONL: one line per doc, as evaluator.py writes it."""
    with open(path, "w", encoding="utf-8") as handle:
        for doc_id, (doc, response) in enumerate(samples):
            line = {"doc_id": doc_id, "doc": doc, "target": doc.get("answer"), "arguments": [],
                    "resps": [[response]], "filtered_resps": [response], "doc_hash": "x"}
            line.update((extra or [{}] * len(samples))[doc_id])
            handle.write(json.dumps(line) + "\n")
    return path


def tsv_file(path: Path, rows: list[dict]) -> Path:
    """A VLMEvalKit prediction .tsv: tab-separated, every cell quoted (smp/file.py dump_tsv)."""
    header = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_ALL)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if row.get(h) is None else row[h] for h in header])
    return path


def score(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["score", *argv]) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------------------------------------ MathVista
METADATA = {"language": "english", "source": "s", "category": "math-targeted-vqa", "task": "figure question answering",
            "context": "synthetic scene", "grade": "elementary school", "skills": ["arithmetic reasoning"]}


def mathvista_doc(pid: str, answer: str, answer_type: str = "integer", choices: list[str] | None = None) -> dict:
    return {"pid": pid, "question": "q", "image": f"images/{pid}.jpg", "choices": choices, "unit": None,
            "precision": None, "answer": answer, "question_type": "multi_choice" if choices else "free_form",
            "answer_type": "text" if choices else answer_type, "metadata": METADATA, "query": "q"}


def test_mathvista_lmms_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = [(mathvista_doc("1", "3"), "3"),                                   # integer shortcut: right
               (mathvista_doc("2", "blue", choices=["red", "blue"]), "blue"),     # the choice text: right
               (mathvista_doc("3", "5"), "Counting them, the answer is 5."),     # the logged extraction: right
               (mathvista_doc("4", "7"), "6")]                                    # wrong
    logged = {"llm_as_judge_eval": {"extraction": "5", "true_false": True}}
    path = lmms_file(tmp_path / "samples_mathvista_testmini.jsonl", samples, [{}, {}, logged, {}])
    result = score(capsys, "mathvista", str(path))   # detected by content
    assert (result["accuracy"], result["correct"], result["total"]) == (75.0, 3, 4)
    assert result["format"] == "lmms-eval" and result["file"] == str(path) and result["int_rule"] == "current"
    assert result["rules"]["extraction"] == {"logged_llm_extraction": 1, "rule_shortcuts": 3}


def test_mathvista_vlmevalkit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def row(index: int, answer: str, prediction: str, **fields: object) -> dict:
        base = {"index": index, "question": "q", "answer": answer, "question_type": "free_form",
                "answer_type": "integer", "choices": "[]", "precision": None, "task": "figure question answering",
                "skills": "['arithmetic reasoning']", "prediction": prediction}
        return {**base, **fields}

    rows = [row(1, "blue", "blue", question_type="multi_choice", answer_type="text", choices="['red', 'blue']",
                answer_option="B"),                                               # right
            row(2, "4", "4"),                                                     # right
            row(3, "1.5", "1.5", answer_type="float", precision=1.0),             # right
            row(4, "red", "B", question_type="multi_choice", answer_type="text", choices="['red', 'blue']",
                answer_option="A")]                                               # no rule answers "B": wrong
    path = tsv_file(tmp_path / "model_MathVista_MINI.tsv", rows)
    result = score(capsys, "mathvista", str(path), "--from", "vlmevalkit")
    assert (result["accuracy"], result["format"]) == (75.0, "vlmevalkit")
    assert result["task"]["figure question answering"]["total"] == 4
    assert result["rules"]["extraction"] == {"logged_llm_extraction": 0, "rule_shortcuts": 4}


# ------------------------------------------------------------------------------------------- HallusionBench
HB_ANSWERS = {(0, 0): ("1", "Yes, it is."), (0, 1): ("0", "No."), (1, 0): ("0", "no"), (1, 1): ("1", "No, never.")}


def test_hallusionbench_lmms_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = [({"category": "VD", "subcategory": "figure", "visual_input": "1", "set_id": "0", "figure_id": str(f),
                 "sample_note": "n", "question_id": str(q), "question": "Is it?", "gt_answer_details": "d",
                 "gt_answer": gt, "filename": f"./VD/figure/0_{f}.png"}, response)
               for (f, q), (gt, response) in HB_ANSWERS.items()]
    result = score(capsys, "hallusionbench", str(lmms_file(tmp_path / "hb.jsonl", samples)))
    # 3 of 4 questions right; figure 0 all right, figure 1 not (1/2); question 0 right on both figures (1/2)
    assert (result["aAcc"], result["fAcc"], result["qAcc"]) == (75.0, 50.0, 50.0)
    assert (result["judge"], result["format"]) == ("rules", "lmms-eval")


def test_hallusionbench_vlmevalkit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"index": f"VD_figure_0_0_{f}_{q}", "question": "Is it?", "answer": "Yes" if gt == "1" else "No",
             "category": "VD", "l2-category": "figure", "prediction": response}
            for (f, q), (gt, response) in HB_ANSWERS.items()]
    result = score(capsys, "hallusionbench", str(tsv_file(tmp_path / "m_HallusionBench.tsv", rows)))
    assert (result["aAcc"], result["fAcc"], result["qAcc"], result["format"]) == (75.0, 50.0, 50.0, "vlmevalkit")


# ----------------------------------------------------------------------------------------------------- POPE
def test_pope_lmms_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    answers = [("yes", "Yes"), ("yes", "No"), ("no", "No"), ("no", "No, there is not.")]
    samples = [({"question_id": str(i), "question": "Is there a dog in the image?", "answer": label,
                 "image_source": "x", "category": "random"}, response) for i, (label, response) in enumerate(answers)]
    result = score(capsys, "pope", str(lmms_file(tmp_path / "pope.jsonl", samples)))
    # TP 1, FN 1, TN 2, FP 0
    assert result["accuracy"] == 75.0 and result["precision"] == 100.0 and result["recall"] == 50.0
    assert result["f1"] == pytest.approx(200 / 3) and result["averaged_over"] == ["random"]


def test_pope_vlmevalkit_counts_a_row_in_each_of_its_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"index": 1, "question": "q", "answer": "Yes", "category": "random,popular", "prediction": "Yes"},
            {"index": 2, "question": "q", "answer": "No", "category": "random", "prediction": "Yes"}]
    result = score(capsys, "pope", str(tsv_file(tmp_path / "m_POPE.tsv", rows)))
    # random: 1 of 2 right (50), popular: 1 of 1 (100); the mean over the splits is 75
    assert result["splits"]["random"]["accuracy"] == 50.0 and result["splits"]["popular"]["accuracy"] == 100.0
    assert result["accuracy"] == 75.0 and result["format"] == "vlmevalkit"


# ------------------------------------------------------------------------------------------------------ MME
MME_ANSWERS = [("1.png", "Yes", "Yes"), ("1.png", "No", "No"), ("2.png", "Yes", "Yes"), ("2.png", "No", "Yes")]


def test_mme_lmms_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = [({"question_id": f"existence/{image}", "question": "q", "answer": answer, "category": "existence"},
                response) for image, answer, response in MME_ANSWERS]
    result = score(capsys, "mme", str(lmms_file(tmp_path / "mme.jsonl", samples)))
    # acc 3/4 = 75, acc+ 1/2 = 50: 125
    assert result["subtasks"]["existence"]["score"] == 125.0 and result["perception"] == 125.0
    assert result["format"] == "lmms-eval"


def test_mme_vlmevalkit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"index": i, "question": "q", "answer": answer, "category": "existence",
             "image_path": f"existence/{image}", "prediction": response}
            for i, (image, answer, response) in enumerate(MME_ANSWERS)]
    result = score(capsys, "mme", str(tsv_file(tmp_path / "m_MME.tsv", rows)))
    assert (result["perception"], result["format"]) == (125.0, "vlmevalkit")


# ------------------------------------------------------------------------------------- SEED-Bench, ScienceQA
def test_seed_lmms_eval_keeps_the_image_questions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def doc(i: int, answer: str, data_type: str = "image") -> dict:
        return {"answer": answer, "choice_a": "cat", "choice_b": "dog", "choice_c": "cow", "choice_d": "hen",
                "data_id": f"{i}.jpg", "data_type": data_type, "question": "Which?", "question_id": str(i),
                "question_type_id": 1}

    samples = [(doc(1, "A"), "A"), (doc(2, "B"), "(B) dog"), (doc(3, "C"), "cow"), (doc(4, "D"), "A"),
               (doc(5, "A", "video"), "B")]
    result = score(capsys, "seed", str(lmms_file(tmp_path / "seed.jsonl", samples)))
    assert (result["accuracy"], result["questions"]) == (75.0, 4)


def test_scienceqa_vlmevalkit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"index": i, "question": "Which?", "hint": "", "A": "x", "B": "y", "C": "z", "answer": answer,
             "prediction": prediction}
            for i, (answer, prediction) in enumerate([("A", "A"), ("B", "B. y"), ("C", "The answer is C."),
                                                       ("A", "B")])]
    result = score(capsys, "scienceqa", str(tsv_file(tmp_path / "m_ScienceQA_TEST.tsv", rows)))
    assert (result["accuracy"], result["questions"], result["format"]) == (75.0, 4, "vlmevalkit")


def test_wemath_vlmevalkit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"index": i, "ID": "7", "key": key, "answer": "A", "prediction": f"<Answer>: {letter}"}
            for i, (key, letter) in enumerate([("2steps_1", "A"), ("2steps_2", "A"), ("2steps_multi", "B")])]
    result = score(capsys, "wemath", str(tsv_file(tmp_path / "m_WeMath.tsv", rows)))
    # both steps right, the composite wrong: inadequate generalisation; score (1 - 0.5) / 1
    assert result["strict"]["counts"]["IG"] == 1 and result["strict"]["score"] == 50.0


# ------------------------------------------------------------------------------ detection and refusals
def test_detection_by_content(tmp_path: Path) -> None:
    lmms = lmms_file(tmp_path / "a.jsonl", [({"question_id": "1", "answer": "yes"}, "yes")])
    table = tsv_file(tmp_path / "m_POPE.tsv", [{"index": 1, "answer": "Yes", "prediction": "Yes"}])
    official = tmp_path / "answers.jsonl"
    official.write_text(json.dumps({"question_id": 1, "text": "yes", "label": "yes"}) + "\n", encoding="utf-8")
    listed = tmp_path / "m_POPE.json"
    listed.write_text(json.dumps([{"index": 1, "answer": "Yes", "prediction": "Yes"}]), encoding="utf-8")
    assert foreign.detect(lmms) == "lmms-eval"
    assert foreign.detect(table) == "vlmevalkit"
    assert foreign.detect(listed) == "vlmevalkit"
    assert foreign.detect(official) == "official"
    assert foreign.detect(tmp_path) == "official"   # MME's official results are a folder


def test_an_uncovered_pair_is_refused_in_one_sentence(tmp_path: Path) -> None:
    bench = types.ModuleType("kit.eval.benchmarks.private")
    bench.NAME, bench.TITLE = "private", "PrivateBench"
    path = lmms_file(tmp_path / "samples.jsonl", [({"question_id": "1"}, "yes")])
    with pytest.raises(KitError, match=r"^PrivateBench is not covered by lmms-eval .* lmms-eval format\.$"):
        foreign.read(bench, path)
    for name in benchmarks.names():   # every benchmark of the kit is covered by both tools
        assert all(foreign.covered(benchmarks.get(name), fmt) for fmt in foreign.FORMATS), name


def test_a_file_of_another_benchmark_names_the_missing_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pope_samples = lmms_file(tmp_path / "pope.jsonl", [({"question_id": "1", "answer": "yes"}, "yes")])
    assert main(["score", "mme", str(pope_samples)]) == 2
    assert "category" in capsys.readouterr().err


def test_xlsx_without_openpyxl_says_to_export_tsv(tmp_path: Path) -> None:
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        path = tmp_path / "m_POPE.xlsx"
        path.write_bytes(b"PK\x03\x04")
        assert foreign.detect(path) == "vlmevalkit"
        with pytest.raises(KitError, match=r"\.tsv.*openpyxl"):
            foreign.read(benchmarks.get("pope"), path)
    else:
        pytest.skip("openpyxl is installed")


def test_official_files_need_their_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "outputs.jsonl"
    path.write_text(json.dumps({"id": "1", "response": "A"}) + "\n", encoding="utf-8")
    assert main(["score", "mathv", str(path)]) == 2
    assert "--gt" in capsys.readouterr().err
