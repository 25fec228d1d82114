"""The batched evaluator: resumable prediction files, batched equals one-at-a-time, text-only items,
missing images, the headline table, and ``kit bench evaluate``."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
from fakes import random_tiny_qwen2vl

from kit.cli import main
from kit.errors import KitError
from kit.eval import benchmarks
from kit.eval.benchmarks import hallusionbench, mathvista
from kit.eval.evaluate import evaluate, evaluate_many, generate_batch, item_ids, metrics_table
from kit.llm import models
from kit.tiny.world import WorldConfig, build_world

TOKENS = 12  # enough for responses to differ between items, short enough to keep the file fast
LINE_FIELDS = {"id", "benchmark", "strategy", "model", "max_new_tokens", "prompt", "response", "extractor",
               "decoding", "prediction"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # hallusionbench_sets=5 gives one VS set, whose first questions have no figure.
    config = WorldConfig(train_pool=4, mathvista_testmini=10, mathvision_test=2, mathvision_testmini=2,
                         wemath_problems=2, hallusionbench_sets=5, mme_images_per_subtask=1, eaco_images=1,
                         vlfeedback_prompts=1, instructions=1)
    root = tmp_path_factory.mktemp("world") / "tiny"
    build_world(root, config, progress=False)
    return root


@pytest.fixture(scope="module")
def model_dir(world, tmp_path_factory):
    records = mathvista.load(world / "mathvista")
    texts = [mathvista.build_prompt(r) for r in records] + [f"The answer is {r['answer']}." for r in records]
    return random_tiny_qwen2vl(tmp_path_factory.mktemp("model") / "tiny", texts)


@pytest.fixture(scope="module")
def loaded(model_dir):
    return models.load(model_dir, device="cpu")


@pytest.fixture
def rows_generated(loaded, monkeypatch):
    """Counts the rows the model generates, and whether each call carried an image."""
    calls: list[tuple[int, bool]] = []
    original = loaded.model.generate

    def counting(*args, **kwargs):
        calls.append((int(kwargs["input_ids"].shape[0]), "pixel_values" in kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "generate", counting)
    return calls


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run(loaded, world, path=None, **options):
    settings = {"source": world / "mathvista", "limit": 8, "batch_size": 4, "max_new_tokens": TOKENS,
                "predictions_path": path, "progress": False}
    return evaluate(loaded, "mathvista", **{**settings, **options})


def test_writes_one_line_per_item_and_scores_them(loaded, world, tmp_path, rows_generated):
    path = tmp_path / "preds.jsonl"
    metrics = _run(loaded, world, path)
    lines = _lines(path)
    records = {r["pid"]: r for r in mathvista.load(world / "mathvista", limit=8)}
    assert len(lines) == 8 and {line["id"] for line in lines} == set(records)
    assert all(set(line) == LINE_FIELDS for line in lines)
    assert lines[0]["decoding"]["do_sample"] is False  # evaluation is greedy, and says so
    for line in lines:
        record = records[line["id"]]
        assert line["prompt"] == mathvista.build_prompt(record)
        assert line["prediction"] == mathvista.extract_rules(line["response"], record)
        assert (line["benchmark"], line["strategy"], line["model"]) == ("mathvista", "direct", str(loaded.source))
    assert metrics["total"] == 8 and metrics["n"] == 8 and metrics["generated"] == 8
    assert (metrics["benchmark"], metrics["strategy"], metrics["extractor"]) == ("mathvista", "direct", "rules")
    assert metrics["correct"] == sum(mathvista.is_correct(line["prediction"], records[line["id"]]) for line in lines)
    assert sum(rows for rows, _ in rows_generated) == 8
    assert [rows for rows, _ in rows_generated] == [4, 4]


def test_second_call_resumes_without_generating(loaded, world, tmp_path, rows_generated):
    path = tmp_path / "preds.jsonl"
    first = _run(loaded, world, path)
    content = path.read_bytes()
    rows_generated.clear()
    second = _run(loaded, world, path)
    assert rows_generated == []
    assert path.read_bytes() == content
    assert second["generated"] == 0
    assert {k: v for k, v in second.items() if k != "generated"} == {k: v for k, v in first.items()
                                                                        if k != "generated"}


def test_resume_after_a_kill_generates_only_the_rest(loaded, world, tmp_path, rows_generated):
    full = tmp_path / "full.jsonl"
    _run(loaded, world, full)
    reference = {line["id"]: line["response"] for line in _lines(full)}
    killed = tmp_path / "killed.jsonl"
    kept = full.read_text().splitlines()[2:5]
    killed.write_text("\n".join(kept) + "\n")
    rows_generated.clear()
    metrics = _run(loaded, world, killed)
    lines = _lines(killed)
    assert sum(rows for rows, _ in rows_generated) == 5 and metrics["generated"] == 5
    assert len(lines) == 8 and len({line["id"] for line in lines}) == 8
    assert lines[:3] == [json.loads(line) for line in kept]
    assert {line["id"]: line["response"] for line in lines} == reference


def test_resume_refuses_a_file_from_other_settings(loaded, world, tmp_path, rows_generated):
    path = tmp_path / "preds.jsonl"
    _run(loaded, world, path, limit=3)
    rows_generated.clear()
    with pytest.raises(KitError, match="max_new_tokens"):
        _run(loaded, world, path, max_new_tokens=TOKENS + 1)
    assert rows_generated == []


def test_batched_equals_one_at_a_time_and_pairs_responses_with_records(loaded, world, tmp_path):
    batched, single = tmp_path / "batched.jsonl", tmp_path / "single.jsonl"
    _run(loaded, world, batched, batch_size=8)
    _run(loaded, world, single, batch_size=1)
    batched_responses = {line["id"]: line["response"] for line in _lines(batched)}
    single_responses = {line["id"]: line["response"] for line in _lines(single)}
    assert len(set(batched_responses.values())) > 1  # otherwise the comparison below proves nothing
    assert batched_responses == single_responses
    # Sorting by length must not move a response to another record: regenerate two items on their own.
    records = mathvista.load(world / "mathvista", limit=8)
    for record in records[:2]:
        alone = generate_batch(loaded, [mathvista.build_prompt(record)], [record["image_path"]], [record["pid"]],
                               TOKENS)
        assert alone == [batched_responses[record["pid"]]]


def test_scores_records_in_their_loaded_order(loaded, world, monkeypatch):
    seen = []
    original = mathvista.score

    def capture(records, **options):
        seen.extend(records)
        return original(records, **options)

    monkeypatch.setattr(mathvista, "score", capture)
    _run(loaded, world, batch_size=3)
    assert [r["pid"] for r in seen] == [r["pid"] for r in mathvista.load(world / "mathvista", limit=8)]
    assert all("response" in r and "prediction" in r for r in seen)


def test_hallusionbench_generates_questions_without_a_figure_as_text(loaded, world, tmp_path, rows_generated):
    records = hallusionbench.load(world / "hallusionbench")
    no_image = [r for r in records if r["image_path"] is None]
    assert no_image and len(no_image) < len(records)
    path = tmp_path / "hb.jsonl"
    metrics = evaluate(loaded, "hallusionbench", source=world / "hallusionbench", batch_size=64, max_new_tokens=4,
                       predictions_path=path, progress=False)
    assert metrics["n"] == len(records) == metrics["questions"]
    assert {"aAcc", "fAcc", "qAcc"} <= set(metrics)
    assert sorted(rows_generated, key=lambda call: call[1]) == [(len(no_image), False),
                                                                (len(records) - len(no_image), True)]
    text_ids = {hallusionbench.record_id(r) for r in no_image}
    assert text_ids <= {line["id"] for line in _lines(path)}


def test_missing_image_names_the_record_and_the_path(loaded, world, tmp_path, monkeypatch, rows_generated):
    folder = tmp_path / "mathvista"
    shutil.copytree(world / "mathvista", folder)
    record = mathvista.load(folder)[4]
    missing = record["image_path"]
    (folder / record["image"]).unlink()
    with pytest.raises(KitError) as caught:
        evaluate(loaded, "mathvista", source=folder, max_new_tokens=TOKENS, progress=False)
    assert f"record {record['pid']}" in str(caught.value) and missing in str(caught.value)
    # An image that disappears after loading (or a loader that does not check) is caught before generating.
    original = mathvista.load
    monkeypatch.setattr(mathvista, "load", lambda *a, **k: original(*a, **{**k, "check_images": False}))
    path = tmp_path / "preds.jsonl"
    with pytest.raises(KitError) as caught:
        evaluate(loaded, "mathvista", source=folder, max_new_tokens=TOKENS, predictions_path=path, progress=False)
    assert f"record {record['pid']}" in str(caught.value) and missing in str(caught.value)
    assert rows_generated == [] and path.read_text() == ""


def test_llm_extractor_reextracts_stored_responses_without_generating(loaded, world, tmp_path, rows_generated):
    path = tmp_path / "preds.jsonl"
    _run(loaded, world, path)
    rows_generated.clear()
    prompts = []

    def llm(prompt: str) -> str:
        prompts.append(prompt)
        return "A"

    metrics = _run(loaded, world, path, extractor="llm", llm=llm)
    assert rows_generated == [] and metrics["extractor"] == "llm"
    records = mathvista.load(world / "mathvista", limit=8)
    asked = [r for r, line in zip(records, sorted(_lines(path), key=lambda line: int(line["id"])), strict=True)
             if mathvista.extract(line["response"], r) is None]
    assert len(prompts) == len(asked) > 0
    expected = sum(mathvista.is_correct(mathvista.extract(line["response"], r, llm=lambda _: "A"), r)
                   for r, line in zip(records, sorted(_lines(path), key=lambda line: int(line["id"])), strict=True))
    assert metrics["correct"] == expected
    with pytest.raises(KitError, match="llm"):
        _run(loaded, world, extractor="llm")


def test_evaluate_many_and_metrics_table(loaded, world, tmp_path):
    sources = {"mathvista": world / "mathvista", "mme": world / "mme"}
    results = evaluate_many(loaded, sources, limit=4, max_new_tokens=4, predictions_dir=tmp_path, progress=False)
    assert set(results) == {"mathvista", "mme"}
    assert results["mathvista"]["n"] == 4 and results["mme"]["n"] == 4
    mme_lines = _lines(tmp_path / "mme.jsonl")
    # MME names both questions about one image by the image: the second gets a suffix.
    records = benchmarks.get("mme").load(world / "mme", limit=4)
    assert [line["id"] for line in sorted(mme_lines, key=lambda line: line["id"])] == sorted(
        item_ids(benchmarks.get("mme"), records))
    assert len({line["id"] for line in mme_lines}) == 4
    table = metrics_table({"tiny": results})
    assert list(table.columns) == ["MathVista", "MME perception", "MME cognition"]
    assert table.loc["tiny", "MathVista"] == results["mathvista"]["accuracy"]
    assert table.loc["tiny", "MME perception"] == results["mme"]["perception"]


def test_metrics_table_picks_headlines_and_leaves_gaps():
    results = {
        "teacher": {"mathvista": {"accuracy": 61.5}, "wemath": {"strict": {"score": 20.0}, "loose": {"score": 30.0}},
                    "hallusionbench": {"aAcc": 70.0, "fAcc": 40.0, "qAcc": 35.0}},
        "student": {"math-v": {"benchmark": "mathv", "accuracy": 12.25}},
    }
    table = metrics_table(results)
    assert list(table.index) == ["teacher", "student"]
    assert list(table.columns) == ["MathVista", "MATH-V", "We-Math strict", "We-Math loose", "HallusionBench aAcc",
                                   "HallusionBench fAcc", "HallusionBench qAcc"]
    assert table.loc["teacher", "We-Math loose"] == 30.0 and table.loc["student", "MATH-V"] == 12.25
    assert math.isnan(table.loc["student", "MathVista"]) and math.isnan(table.loc["teacher", "MATH-V"])


def test_item_ids_keep_a_prefix_stable():
    records = [{"question_id": "count/1.png"}, {"question_id": "count/1.png"}, {"question_id": "count/2.png"}]
    mme = benchmarks.get("mme")
    assert item_ids(mme, records) == ["count/1.png", "count/1.png#2", "count/2.png"]
    assert item_ids(mme, records[:1]) == ["count/1.png"]


def test_rejects_bad_arguments(loaded, world):
    with pytest.raises(KitError, match="source"):
        evaluate(loaded, "mathvista")
    with pytest.raises(KitError, match="strategy"):
        evaluate(loaded, "mathvista", "telepathy", source=world / "mathvista")
    with pytest.raises(KitError, match="batch_size"):
        evaluate(loaded, "mathvista", source=world / "mathvista", batch_size=0)


def test_bench_evaluate_cli_prints_the_speedup(model_dir, world, capsys):
    code = main(["bench", "evaluate", "--model", str(model_dir), "--source", str(world / "mathvista"), "--n", "8",
                 "--batch-size", "4", "--max-new-tokens", "8", "--threads", "1"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert re.fullmatch(r"speedup: \d+\.\d\d", out[-1])
    assert "responses differing: 0/8" in out[-2]
    assert sum("items/s" in line for line in out) == 2


# ------------------------------------------------------------------------------------------ strategies
def test_single_pass_strategies_use_the_authors_prompts(loaded, world, tmp_path):
    from kit.llm.prompts import get

    record = mathvista.load(world / "mathvista", limit=1)[0]
    query = mathvista.build_prompt(record)
    for strategy, expected in (("cot", get("cas_cot").format(question=query)),
                               ("seat", get("seat_inference").format(question=query))):
        path = tmp_path / f"{strategy}.jsonl"
        metrics = _run(loaded, world, path, strategy=strategy, limit=2)
        assert metrics["strategy"] == strategy
        line = next(line for line in _lines(path) if line["id"] == record["pid"])
        assert line["prompt"] == expected and "turns" not in line


def test_cas_seat_reflects_on_every_item_as_a_second_turn(loaded, world, tmp_path, rows_generated):
    path = tmp_path / "cas.jsonl"
    metrics = _run(loaded, world, path, strategy="cas_seat")
    lines = _lines(path)
    assert len(lines) == 8 and metrics["generated"] == 8
    assert all(len(line["turns"]) == 2 and line["turns"][1].startswith("Please provide a detailed reflection")
               for line in lines)
    assert sum(rows for rows, _ in rows_generated) == 16  # two turns for each of the 8 items
    rows_generated.clear()
    assert _run(loaded, world, path, strategy="cas_seat")["generated"] == 0 and rows_generated == []


def test_oracle_reflects_only_on_items_already_wrong(loaded, world, tmp_path, monkeypatch, rows_generated):
    from kit.eval import strategies as infer

    records = mathvista.load(world / "mathvista", limit=8)
    right = {r["pid"] for r in records[:3]}
    monkeypatch.setattr(infer, "item_is_correct", lambda bench, record, prediction: record["pid"] in right)
    path = tmp_path / "oracle.jsonl"
    _run(loaded, world, path, strategy="cas_seat_oracle")
    lines = {line["id"]: line for line in _lines(path)}
    for pid, line in lines.items():
        if pid in right:
            assert line["turns"] == [line["response"]]  # kept its first answer, no second turn
        else:
            assert len(line["turns"]) == 2
    assert sum(rows for rows, _ in rows_generated) == 8 + 5


def test_evaluate_stage_caches_resumes_and_keys_on_the_strategy(model_dir, world, tmp_path, monkeypatch):
    from kit.eval import evaluate as evaluate_module
    from kit.eval.evaluate import evaluate_stage

    sources = {"mathvista": world / "mathvista"}
    options = {"limit": 4, "max_new_tokens": 4, "batch_size": 2, "progress": False}
    first = evaluate_stage(model_dir, sources, "direct", tmp_path, **options)
    (folder,) = tmp_path.glob("eval-*")
    assert first["mathvista"]["n"] == 4 and first["mathvista"]["generated"] == 4
    assert len(_lines(folder / "predictions" / "mathvista.jsonl")) == 4

    (folder / "metrics.json").unlink()  # killed after the predictions, before the metrics
    resumed = evaluate_stage(model_dir, sources, "direct", tmp_path, **options)
    assert resumed["mathvista"]["generated"] == 0 and resumed["mathvista"]["accuracy"] == first["mathvista"]["accuracy"]

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated again")

    monkeypatch.setattr(evaluate_module, "evaluate_many", no_evaluation)
    assert evaluate_stage(model_dir, sources, "direct", tmp_path, **options) == resumed
    with pytest.raises(AssertionError, match="evaluated again"):
        evaluate_stage(model_dir, sources, "cot", tmp_path, **options)
    with pytest.raises(AssertionError, match="evaluated again"):
        evaluate_stage(model_dir, sources, "direct", tmp_path, **{**options, "limit": 3})
    with pytest.raises(KitError, match="unknown strategy 'long'"):
        evaluate_stage(model_dir, sources, "long", tmp_path, **options)


def test_cas_seat_strategies_read_the_final_answer_they_ask_for(world):
    from kit.eval.benchmarks import wemath
    from kit.eval.evaluate import extract_prediction

    record = wemath.load(world / "wemath", limit=1)[0]
    response = "Step 1: Count the green shapes: 3.\nStep 2: Compare.\nThe answer is B"
    # We-Math's official rule reads only after "Answer": the reasoning's first letter is no answer.
    assert extract_prediction(wemath, response, record, "rules") is None
    assert extract_prediction(wemath, response, record, "rules", strategy="cot") == "B"
    assert extract_prediction(wemath, "Answer: C", record, "rules", strategy="cas_seat") == "C"  # no final line


def test_the_reading_model_is_recorded_and_a_change_of_it_reads_again(loaded, world, tmp_path, rows_generated):
    path = tmp_path / "preds.jsonl"
    asked: list[str] = []

    def judge(name):
        def chat(prompt: str) -> str:
            asked.append(name)
            return "A"
        return chat

    first = _run(loaded, world, path, extractor="llm", llm=judge("a"), llm_name="judge-a")
    assert first["extractor_model"] == "judge-a" and {line["extractor_model"] for line in _lines(path)} == {"judge-a"}
    calls = len(asked)
    assert calls > 0
    rows_generated.clear()
    again = _run(loaded, world, path, extractor="llm", llm=judge("a"), llm_name="judge-a")
    assert len(asked) == calls and again["correct"] == first["correct"]  # stored extractions are reused
    other = _run(loaded, world, path, extractor="llm", llm=judge("b"), llm_name="judge-b")
    assert asked.count("b") == calls and other["extractor_model"] == "judge-b"  # another reader reads again
    assert rows_generated == []
    rules = _run(loaded, world, path)
    assert "extractor_model" not in rules and rules["extractor"] == "rules"


def test_the_stage_key_follows_the_reader_but_not_the_default(model_dir, world, tmp_path, monkeypatch):
    from kit.eval import evaluate as evaluate_module
    from kit.eval.evaluate import evaluate_stage

    monkeypatch.setattr(evaluate_module, "evaluate_many", lambda *args, **kwargs: {"mathvista": {"n": 0}})
    sources = {"mathvista": world / "mathvista"}
    evaluate_stage(model_dir, sources, "direct", tmp_path, limit=2)
    evaluate_stage(model_dir, sources, "direct", tmp_path, limit=2, extractor="rules", llm_name="ignored")
    assert len(list(tmp_path.glob("eval-*"))) == 1  # rules, given or not, is the folder of runs before the option
    for name in ("judge-a", "judge-b"):
        evaluate_stage(model_dir, sources, "direct", tmp_path, limit=2, extractor="llm", llm=str, llm_name=name)
    assert len(list(tmp_path.glob("eval-*"))) == 3


def test_extraction_table_counts_how_each_benchmark_was_read():
    from kit.eval.evaluate import NO_LLM_STEP, extraction_table

    read = {"mathvista": {"benchmark": "mathvista", "extractor": "llm", "extractor_model": "Qwen/Qwen2.5-14B-Instruct"},
            "hallusionbench": {"benchmark": "hallusionbench", "extractor": "llm", "extractor_model": "gpt-4"},
            "mme": {"benchmark": "mme", "extractor": "llm", "extractor_model": "gpt-4"}}
    table = extraction_table({"base": read, "EACO": read, "old": {"mathvista": {"benchmark": "mathvista",
                                                                                "extractor": "rules"}}})
    assert table[["benchmark", "extractor", "LLM", "evaluations"]].values.tolist() == [
        ["MathVista", "llm", "Qwen/Qwen2.5-14B-Instruct", 2], ["MathVista", "rules", "-", 1],
        ["HallusionBench", "llm", "gpt-4", 2], ["MME", "llm", "gpt-4", 2]]
    assert "GPT-4 judge" in table.loc[2, "answers read by"] and table.loc[3, "answers read by"] == NO_LLM_STEP
    assert "documented deviation" in table.loc[1, "answers read by"]


def test_the_stage_key_records_an_openai_engine_but_never_its_servers(model_dir, world, tmp_path, monkeypatch):
    from kit.eval import evaluate as evaluate_module
    from kit.eval.evaluate import evaluate_stage
    from kit.llm.generate import EngineChoice

    engines = []
    monkeypatch.setattr(evaluate_module, "evaluate_many",
                        lambda *args, **kwargs: engines.append(kwargs.get("engine")) or {"mathvista": {"n": 0}})
    sources = {"mathvista": world / "mathvista"}
    evaluate_stage(model_dir, sources, "direct", tmp_path, limit=2)
    evaluate_stage(model_dir, sources, "direct", tmp_path / "b", limit=2, engine=EngineChoice())
    assert [p.name for p in tmp_path.glob("eval-*")] == [p.name for p in (tmp_path / "b").glob("eval-*")]
    for servers in (["http://h1:8000/v1"], ["http://h1:8000/v1", "http://h2:8000/v1"]):
        evaluate_stage(model_dir, sources, "direct", tmp_path, limit=2,
                       engine=EngineChoice("openai", {str(model_dir): servers}))
    folders = sorted(tmp_path.glob("eval-*"))
    assert len(folders) == 2  # transformers, and openai on one server or two alike
    assert {json.loads((f / "metrics.json").read_text())["params"].get("engine") for f in folders} == {None, "openai"}
    assert engines[-1].backend == "openai" and engines[0] is None


def test_the_tiny_runs_evaluation_folders_keep_their_hash(repo_dir, tmp_path, monkeypatch):
    """Each committed tiny-run evaluation folder is found again by the same call (transformers, no engine given,
    or EngineChoice()): the key did not change with the engine choice."""
    from kit.core import artifacts
    from kit.eval import evaluate as evaluate_module
    from kit.eval.evaluate import evaluate_stage
    from kit.llm.generate import EngineChoice

    folders = sorted((repo_dir / "results" / "runs").glob("tiny-*/*/eval-*"))[:4]
    if not folders:
        pytest.skip("no committed tiny run")
    monkeypatch.setattr(evaluate_module, "evaluate_many", lambda *args, **kwargs: {})
    for folder in folders:
        params = json.loads((folder / "PARAMS.json").read_text())
        hashes = {params["model_path"]: params["model"], **{f"/{name}": h for name, h in params["benchmarks"].items()}}
        monkeypatch.setattr(artifacts, "fingerprint", lambda source, hashes=hashes: hashes[str(source)])
        options = {key: value for key, value in params["options"].items()}
        for engine in (None, EngineChoice()):
            found = evaluate_stage(params["model_path"], {name: f"/{name}" for name in params["benchmarks"]},
                                   params["strategy"], tmp_path, engine=engine, **options)
            assert found == {} and (tmp_path / folder.name / "metrics.json").is_file()


def test_item_outcomes_read_first_and_final_answers_back_item_by_item(model_dir, world, tmp_path):
    from kit.eval.evaluate import ItemOutcome, evaluate_stage, item_outcomes, stage_folder

    sources = {"mathvista": world / "mathvista"}
    options = {"limit": 4, "max_new_tokens": 4, "batch_size": 2}
    with pytest.raises(KitError, match="has not finished"):
        item_outcomes(model_dir, sources, "cas_seat", tmp_path, **options)
    evaluate_stage(model_dir, sources, "cas_seat", tmp_path, progress=False, **options)
    records = {r["pid"]: r for r in mathvista.load(world / "mathvista", limit=4)}
    pids = list(records)
    # First answers right on items 0 and 1, final answers right on items 1 and 2: item 0 is broken by the
    # reflection, item 2 fixed, item 1 kept, item 3 wrong both times.
    first_right, final_right = set(pids[:2]), set(pids[1:3])
    path = stage_folder(model_dir, sources, "cas_seat", tmp_path, **options) / "predictions" / "mathvista.jsonl"
    lines = _lines(path)
    for line in lines:
        record = records[line["id"]]
        gold = record["answer"]
        # A wrong answer the rules cannot map back to the gold one: another option, or a number nobody asks for.
        wrong = next((c for c in record.get("choices") or [] if c != gold), "-12345")
        line["turns"][0] = f"The answer is {gold if line['id'] in first_right else wrong}."
        line["response"] = f"The answer is {gold if line['id'] in final_right else wrong}."
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    outcomes = item_outcomes(model_dir, sources, "cas_seat", tmp_path, **options)["mathvista"]
    assert outcomes == {pids[0]: ItemOutcome(True, False), pids[1]: ItemOutcome(True, True),
                        pids[2]: ItemOutcome(False, True), pids[3]: ItemOutcome(False, False)}

    path.write_text("".join(json.dumps(line) + "\n" for line in lines if line["id"] != pids[3]))
    with pytest.raises(KitError, match=f"no line for item {pids[3]}"):
        item_outcomes(model_dir, sources, "cas_seat", tmp_path, **options)
