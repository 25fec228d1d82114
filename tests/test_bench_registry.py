"""The benchmark registry, the common interface of its modules, and loading from the hub (with a stand-in
``datasets`` module: the machine running the tests has no network)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from kit.core.paths import is_hub_id
from kit.errors import KitError
from kit.eval import benchmarks


def test_registry_names_and_aliases() -> None:
    assert benchmarks.names() == ["mathvista", "mathv", "wemath", "hallusionbench", "mme", "pope", "seed", "scienceqa",
                                  "amber"]
    assert benchmarks.get("MathVista").NAME == "mathvista"
    assert benchmarks.get("SEED-Bench").NAME == "seed" and benchmarks.get("SQA-IMG").NAME == "scienceqa"
    assert benchmarks.get("MATH-Vision").NAME == "mathv"
    assert benchmarks.get("we-math").NAME == "wemath"
    with pytest.raises(KitError, match="unknown benchmark 'mmmu'"):
        benchmarks.get("mmmu")


@pytest.mark.parametrize("name", benchmarks.names())
def test_every_module_has_the_interface(name: str) -> None:
    bench = benchmarks.get(name)
    for attribute in ("load", "build_prompt", "extract", "score", "record_id"):
        assert callable(getattr(bench, attribute)), attribute
    assert bench.DEFAULT_SPLIT in bench.SPLITS
    assert is_hub_id(bench.HUB_ID)


def test_is_hub_id(tmp_path: Path) -> None:
    assert is_hub_id("AI4Math/MathVista")
    assert not is_hub_id("data/tiny/mathvista/testmini")
    assert not is_hub_id("./MathVista")
    assert not is_hub_id(str(tmp_path))
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert not is_hub_id(f"{tmp_path}/owner/name")


def _fake_datasets(monkeypatch: pytest.MonkeyPatch, splits: dict[tuple[str, str], list[dict]]) -> list[tuple]:
    calls: list[tuple] = []

    def load_dataset(source: str, split: str) -> list[dict]:
        calls.append((source, split))
        if (source, split) not in splits:
            raise FileNotFoundError(f"Dataset {source} has no split {split}")
        return splits[(source, split)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def _picture() -> Image.Image:
    return Image.new("RGB", (6, 6), "red")


def test_mathvista_from_the_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    row = {"pid": "7", "question": "How many?", "image": "images/7.jpg", "decoded_image": _picture(), "choices": None,
           "unit": None, "precision": None, "answer": "3", "question_type": "free_form", "answer_type": "integer",
           "metadata": {"language": "english", "source": "x", "category": "general-vqa", "task": "t", "context": "c",
                        "grade": "g", "skills": ["arithmetic reasoning"]}, "query": "Hint: ...\nQuestion: How many?"}
    calls = _fake_datasets(monkeypatch, {("AI4Math/MathVista", "testmini"): [row]})
    (record,) = benchmarks.get("mathvista").load("AI4Math/MathVista", "testmini", cache_dir=tmp_path)
    assert calls == [("AI4Math/MathVista", "testmini")]
    assert "decoded_image" not in record and record["query"] == row["query"]
    assert Path(record["image_path"]).is_file() and Path(record["image_path"]).is_relative_to(tmp_path)
    assert Image.open(record["image_path"]).size == (6, 6)


def test_other_hubs_map_their_columns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_datasets(monkeypatch, {
        ("MathLLMs/MathVision", "testmini"): [{"id": "1", "question": "Q\n<image1>", "options": [], "image": "images/1.jpg",
                                               "decoded_image": _picture(), "answer": "4", "solution": None, "level": 1,
                                               "subject": "counting"}],
        ("We-Math/We-Math", "testmini"): [{"ID": "2steps_1", "split": "testmini", "knowledge concept": "k",
                                           "question": "Q", "option": "A. 1;B. 2", "answer": "A", "image_path": _picture(),
                                           "key": "2steps_multi", "question number": 1}],
        ("lmms-lab/HallusionBench", "image"): [{"category": "VD", "subcategory": "figure", "visual_input": "1",
                                                "set_id": "0", "figure_id": "0", "sample_note": "", "question_id": "0",
                                                "question": "Is it?", "gt_answer_details": "It is.", "gt_answer": "1",
                                                "filename": "./VD/figure/0_0.png", "image": _picture()}],
        ("lmms-lab/HallusionBench", "non_image"): [{"category": "VS", "subcategory": "chart", "visual_input": "0",
                                                    "set_id": "0", "figure_id": "0", "sample_note": "",
                                                    "question_id": "0", "question": "Was it?",
                                                    "gt_answer_details": "No.", "gt_answer": "0", "filename": None,
                                                    "image": None}],
        ("lmms-lab/MME", "test"): [{"question_id": "code_reasoning/0020.png", "image": _picture(),
                                    "question": "Will it print 1? Please answer yes or no.", "answer": "Yes",
                                    "category": "code_reasoning"}],
    })
    (mathv_record,) = benchmarks.get("mathv").load("MathLLMs/MathVision", "testmini", cache_dir=tmp_path)
    assert Path(mathv_record["image_path"]).is_file()
    (wemath_record,) = benchmarks.get("wemath").load("We-Math/We-Math", cache_dir=tmp_path)
    assert Path(wemath_record["image_path"]).is_file() and wemath_record["image"] is None
    hallusion = benchmarks.get("hallusionbench").load("lmms-lab/HallusionBench", cache_dir=tmp_path)
    assert [Path(r["image_path"]).is_file() if r["image_path"] else None for r in hallusion] == [True, None]
    (mme_record,) = benchmarks.get("mme").load("lmms-lab/MME", cache_dir=tmp_path)
    assert mme_record["image"] == "0020.png" and Path(mme_record["image_path"]).is_file()
    assert benchmarks.get("mme").score([dict(mme_record, prediction="yes")])["cognition"] == 200.0


def test_hub_failures_are_kit_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_datasets(monkeypatch, {})
    with pytest.raises(KitError, match=r"could not load hub dataset 'AI4Math/MathVista' split 'test'"):
        benchmarks.get("mathvista").load("AI4Math/MathVista", "test")


def test_hub_rows_missing_a_field_name_the_row(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_datasets(monkeypatch, {("MathLLMs/MathVision", "test"): [{"id": "12", "question": "Q", "options": []}]})
    with pytest.raises(KitError, match=r"MathLLMs/MathVision\[test\]: record 12 lacks the field\(s\) 'answer'"):
        benchmarks.get("mathv").load("MathLLMs/MathVision", "test", cache_dir=tmp_path)


def test_eaco_benchmark_hubs_map_their_columns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_datasets(monkeypatch, {
        ("lmms-lab/POPE", "test"): [
            {"id": "0", "question_id": "1", "question": "Is there a snowboard in the image?", "answer": "yes",
             "image_source": "COCO_val2014_000000310196", "image": _picture(), "category": "adversarial"},
            {"id": "1", "question_id": "1", "question": "Is there a car in the image?", "answer": "no",
             "image_source": "COCO_val2014_000000310196", "image": _picture(), "category": "random"}],
        ("lmms-lab/SEED-Bench", "test"): [
            {"answer": "A", "choice_a": "One", "choice_b": "Two", "choice_c": "Three", "choice_d": "Four",
             "data_id": "1454426_2591111986", "data_type": "image", "question": "How many towels?",
             "question_id": "101669", "question_type_id": 5, "image": [_picture()]},
            {"answer": "B", "choice_a": "a", "choice_b": "b", "choice_c": "c", "choice_d": "d", "data_id": "v.webm",
             "data_type": "video", "question": "What happens?", "question_id": "v1738", "question_type_id": 10,
             "image": []}],
        ("derek-thomas/ScienceQA", "test"): [
            {"image": _picture(), "question": "Which is a mammal?", "choices": ["cat", "trout"], "answer": 0,
             "hint": "", "task": "closed choice", "grade": "grade3", "subject": "natural science", "topic": "biology",
             "category": "Classify", "skill": "s", "lecture": "", "solution": ""},
            {"image": None, "question": "Which word comes first?", "choices": ["b", "a"], "answer": 1, "hint": "",
             "task": "closed choice", "grade": "grade2", "subject": "language science", "topic": "t",
             "category": "c", "skill": "s", "lecture": "", "solution": ""}],
    })
    records = benchmarks.get("pope").load("lmms-lab/POPE", cache_dir=tmp_path)
    assert [r["category"] for r in records] == ["adversarial", "random"]
    assert records[0]["text"] == "Is there a snowboard in the image?" and Path(records[0]["image_path"]).is_file()
    assert [r["label"] for r in benchmarks.get("pope").load("lmms-lab/POPE", "random", cache_dir=tmp_path)] == ["no"]
    (seed_record,) = benchmarks.get("seed").load("lmms-lab/SEED-Bench", cache_dir=tmp_path)
    assert seed_record["dimension"] == "Instances Counting" and Path(seed_record["image_path"]).is_file()
    (sqa_record,) = benchmarks.get("scienceqa").load("derek-thomas/ScienceQA", cache_dir=tmp_path)
    assert sqa_record["pid"] == "test-0" and Path(sqa_record["image_path"]).is_file()
    with pytest.raises(KitError, match="no Hugging Face copy"):
        benchmarks.get("amber").load(benchmarks.get("amber").HUB_ID)


def test_every_benchmark_has_headline_numbers_a_table_can_pick() -> None:
    from kit.eval.evaluate import HEADLINES, metrics_table

    assert list(HEADLINES) == benchmarks.names()
    pope = benchmarks.get("pope").score([{"question_id": i, "category": c, "label": label, "prediction": "yes"}
                                         for c in ("random", "popular") for i, label in enumerate(["yes", "no"])])
    seed = benchmarks.get("seed").score([{"question_id": "1", "question_type_id": 1, "answer": "A", "prediction": "A"},
                                         {"question_id": "2", "question_type_id": 2, "answer": "B", "prediction": "C"}])
    sqa = benchmarks.get("scienceqa").score([{"pid": "1", "choices": ["a", "b"], "answer": 1, "image": "image.png",
                                              "prediction": "B"}])
    amber = {"benchmark": "amber", "amber_score": 80.5, "generative": {"CHAIR": 9.0}, "discriminative": {"F1": 70.0}}
    table = metrics_table({"model": {"pope": pope, "seed": seed, "scienceqa": sqa, "amber": amber}})
    assert list(table.columns) == ["POPE accuracy", "POPE F1", "SEED-Bench image", "ScienceQA-IMG", "AMBER score",
                                   "AMBER CHAIR", "AMBER F1"]
    assert table.loc["model"].tolist() == pytest.approx([50.0, 200 / 3, 50.0, 100.0, 80.5, 9.0, 70.0])


@pytest.mark.parametrize("name", benchmarks.names())
def test_every_module_declares_its_headline_metrics(name: str) -> None:
    from kit.eval.evaluate import HEADLINE_METRIC, HEADLINES, TITLES

    bench = benchmarks.get(name)
    for member in benchmarks.INTERFACE:
        assert hasattr(bench, member), member
    assert bench.HEADLINES and all(isinstance(metric, benchmarks.Metric) for metric in bench.HEADLINES)
    assert bench.HEADLINE_METRIC in [metric.label for metric in bench.HEADLINES]
    assert all(metric.label.startswith(bench.TITLE) for metric in bench.HEADLINES)
    assert HEADLINES[name] == [(metric.label, metric.keys) for metric in bench.HEADLINES]
    assert (HEADLINE_METRIC[name], TITLES[name]) == (bench.HEADLINE_METRIC, bench.TITLE)


def test_lower_is_better_comes_from_the_modules() -> None:
    from kit.eaco import tables
    from kit.eval.evaluate import LOWER_IS_BETTER

    assert LOWER_IS_BETTER == ("AMBER CHAIR",) == tables.LOWER_IS_BETTER


def test_a_module_without_the_interface_is_refused() -> None:
    import types

    from kit.eval.evaluate import _benchmark

    partial = types.ModuleType("partial")
    partial.NAME = "partial"
    with pytest.raises(KitError, match="lacks .*HEADLINES"):
        _benchmark(partial)


def test_kit_score_options_are_the_keywords_of_read_outputs() -> None:
    """``kit score <name>`` passes each of its options to ``read_outputs`` by name: the two must agree."""
    import argparse
    import inspect

    from kit.eval.benchmarks import cli

    def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    top = argparse.ArgumentParser()
    cli.register(top.add_subparsers())
    per_benchmark = commands(commands(top)["score"])
    assert list(per_benchmark) == benchmarks.names()
    for name, parser in per_benchmark.items():
        read_outputs = benchmarks.get(name).read_outputs
        keywords = {p.name for p in inspect.signature(read_outputs).parameters.values() if p.kind is p.KEYWORD_ONLY}
        assert {a.dest for a in parser._actions} - {"help", "path", "source_format"} == keywords, name


def test_read_outputs_returns_what_score_needs(tmp_path: Path) -> None:
    path = tmp_path / "HallusionBench.json"
    path.write_text("[]", encoding="utf-8")
    outputs = benchmarks.get("hallusionbench").read_outputs(path)
    assert outputs == benchmarks.Outputs([], str(path))
    assert (outputs.kind, outputs.options) == ("file", {})
    with pytest.raises(KitError, match="not a folder"):
        benchmarks.get("mme").read_outputs(tmp_path / "missing")
