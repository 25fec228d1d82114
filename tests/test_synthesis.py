"""Teacher synthesis: reading MathV360K, answer checking, records, and resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fakes import ScriptedEngine, default_script, row, write_source

from kit.casseat.mathv360k import SourceItem, answers_match, load_source, parse_choices
from kit.casseat.synthesis import read_records, summarize, synthesize
from kit.errors import KitError
from kit.llm.generate import Sampling

RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture
def source(tmp_path):
    rows = [
        row("a", "images/1.png", "How many red circles are there?", "3"),
        row("b", "images/1.png", "Is bar B the tallest bar?\nChoices:\n(A) Yes\n(B) No", "No"),
        row("c", "images/2.png", "What is the ratio? Round to one decimal place.", "0.5"),
        row("d", "images/2.png", "What colour is the square?", "red"),
    ]
    return write_source(tmp_path / "mathv360k", rows, {"images/1.png": RED, "images/2.png": BLUE})


def test_load_source_reads_questions_answers_choices_and_types(source):
    items = load_source(source)
    assert [i.id for i in items] == ["a", "b", "c", "d"]
    assert items[0].question == "How many red circles are there?" and items[0].answer_type == "integer"
    assert items[1].choices == ["Yes", "No"] and items[1].answer_kind == "multi_choice"
    assert items[2].answer_type == "float" and items[2].precision == 1
    assert items[3].answer_kind == "short_text"
    assert Path(items[0].image).is_file()
    assert load_source(source, limit=2)[-1].id == "b"


def test_choices_on_one_line_are_parsed():
    assert parse_choices("Which is larger?\nChoices: (A) 3 (B) 5 (C) 7") == ["3", "5", "7"]
    assert parse_choices("No options here") is None


@pytest.mark.parametrize(("bad", "message"), [
    ({"image": "x.png", "conversations": []}, "row 2: no 'id'"),
    ({"id": "z", "conversations": [{"value": "q"}, {"value": "1"}]}, "row 2 (id z): no 'image'"),
    ({"id": "z", "image": "x.png", "conversations": [{"value": "<image>\nq"}, {"value": ""}]},
     "row 2 (id z): no answer"),
    ({"id": "z", "image": "x.png", "conversations": [{"value": "<image>\nq"}]}, "row 2 (id z): 'conversations'"),
])
def test_a_damaged_row_is_an_error_naming_the_file_and_row(tmp_path, bad, message):
    folder = write_source(tmp_path / "src", [row("ok", "a.png", "q?", "1"), bad])
    with pytest.raises(KitError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_source(folder)
    assert "train_samples_all_tuning.json" in str(err.value)


def test_a_missing_source_is_an_error(tmp_path):
    with pytest.raises(KitError, match="no train_samples_all_tuning.json"):
        load_source(tmp_path)


def _item(answer: str, choices=None, answer_type="text", precision=None) -> SourceItem:
    return SourceItem("x", 1, "x.png", "q", answer, choices, answer_type, precision)


@pytest.mark.parametrize(("item", "predicted", "expected"), [
    (_item("3", answer_type="integer"), "3", True),
    (_item("3", answer_type="integer"), "3.0", True),
    (_item("3", answer_type="integer"), "4", False),
    (_item("0.5", answer_type="float", precision=1), "0.50", True),
    (_item("0.5", answer_type="float", precision=1), "0.6", False),
    (_item("No", ["Yes", "No"]), "B", True),
    (_item("No", ["Yes", "No"]), "(B) No", True),
    (_item("No", ["Yes", "No"]), "no", True),
    (_item("No", ["Yes", "No"]), "A", False),
    (_item("No", ["Yes", "No"]), "seven", False),  # MathVista's nearest-choice fallback would accept it
    (_item("red"), "Red.", True),
    (_item("red"), "blue", False),
    (_item("3", answer_type="integer"), None, False),
])
def test_answers_match_through_the_benchmark_normaliser(item, predicted, expected):
    assert answers_match(item, predicted) is expected


def test_synthesis_writes_one_parsed_line_per_item_prompt_and_sample(source, tmp_path):
    items = load_source(source)
    out = tmp_path / "synthesis.jsonl"
    summary = synthesize(ScriptedEngine(), items, out_path=out, progress=False)
    records = read_records(out)
    assert summary["written"] == len(records) == 12
    keys = {(r["item_id"], r["prompt_id"], r["sample"]) for r in records}
    assert len(keys) == 12
    seat = next(r for r in records if r["item_id"] == "a" and r["prompt_id"] == "seat_synthesis")
    assert seat["teacher"] == "scripted-teacher" and seat["sampling"] == Sampling().to_dict()
    assert "Answer: 3" in seat["turns"][0]  # SEAT's integrated prompt carries the gold answer
    assert seat["parsed"]["well_formed"] and seat["parsed"]["evaluations"][0]["verdict"] == "Accept"
    assert seat["answer_correct"] is True
    reflection = next(r for r in records if r["item_id"] == "a" and r["prompt_id"] == "cas_reflection")
    cot = next(r for r in records if r["item_id"] == "a" and r["prompt_id"] == "cas_cot")
    assert reflection["turns"][1] == cot["response"] and len(reflection["turns"]) == 3
    assert summary["prompts"]["seat_synthesis"]["well_formed"] == 100.0
    # The scripted CoT answers "1" unless it saw the gold answer: wrong everywhere.
    assert summary["prompts"]["cas_cot"]["answer_correct"] == 0.0


def test_rerun_after_a_crash_loses_nothing_and_duplicates_nothing(source, tmp_path):
    items = load_source(source)
    out = tmp_path / "synthesis.jsonl"
    with pytest.raises(RuntimeError, match="crashed"):
        synthesize(ScriptedEngine(fail_after=5), items, out_path=out, progress=False)
    assert len(read_records(out)) == 5
    engine = ScriptedEngine()
    summary = synthesize(engine, items, out_path=out, progress=False)
    assert summary["written"] == 7 and len(engine.calls) == 7
    records = read_records(out)
    assert len({(r["item_id"], r["prompt_id"], r["sample"]) for r in records}) == len(records) == 12
    assert synthesize(ScriptedEngine(), items, out_path=out, progress=False)["written"] == 0


def test_killed_process_resumes_without_loss_or_duplicates(source, tmp_path, repo_dir):
    out = tmp_path / "synthesis.jsonl"
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(repo_dir)!r}, {str(repo_dir / 'tests')!r}]
        from fakes import ScriptedEngine
        from kit.casseat.mathv360k import load_source
        from kit.casseat.synthesis import synthesize
        synthesize(ScriptedEngine(delay=0.2), load_source({str(source)!r}), out_path={str(out)!r}, progress=False)
    """)
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = read_records(out)
    assert 4 <= len(before) < 12
    synthesize(ScriptedEngine(), load_source(source), out_path=out, progress=False)
    after = read_records(out)
    assert len({(r["item_id"], r["prompt_id"], r["sample"]) for r in after}) == len(after) == 12
    assert after[: len(before)] == before


def test_resuming_with_other_settings_is_refused(source, tmp_path):
    items = load_source(source)
    out = tmp_path / "synthesis.jsonl"
    synthesize(ScriptedEngine(), items[:1], ["cas_cot"], out, progress=False)
    with pytest.raises(KitError, match="sampling"):
        synthesize(ScriptedEngine(), items, ["cas_cot"], out, sampling=Sampling(max_new_tokens=7), progress=False)


def test_several_samples_need_a_temperature_and_get_their_own_lines(source, tmp_path):
    items = load_source(source)[:2]
    with pytest.raises(KitError, match="temperature"):
        synthesize(ScriptedEngine(), items, ["cas_cot"], tmp_path / "x.jsonl", samples=3, progress=False)
    summary = synthesize(ScriptedEngine(), items, ["cas_cot"], tmp_path / "y.jsonl", samples=3,
                         sampling=Sampling(temperature=0.7), progress=False)
    assert summary["written"] == 6
    assert {r["sample"] for r in read_records(tmp_path / "y.jsonl")} == {0, 1, 2}


def test_bad_requests_are_refused_before_generating(source, tmp_path):
    items = load_source(source)
    engine = ScriptedEngine()
    with pytest.raises(KitError, match="cas_reflection continues cas_cot"):
        synthesize(engine, items, ["cas_reflection"], tmp_path / "a.jsonl", progress=False)
    with pytest.raises(KitError, match="unknown prompt"):
        synthesize(engine, items, ["direct"], tmp_path / "b.jsonl", progress=False)
    with pytest.raises(KitError, match="id a appears twice"):
        synthesize(engine, items + items[:1], ["cas_cot"], tmp_path / "c.jsonl", progress=False)
    assert engine.calls == []


def test_a_missing_image_stops_synthesis_naming_the_item(source, tmp_path):
    from kit.llm.generate import TransformersEngine

    items = load_source(source)
    (source / "images" / "2.png").unlink()
    engine = TransformersEngine.__new__(TransformersEngine)  # the check runs before the model is touched
    engine.model_label, engine.batch_size = "unused", 1
    with pytest.raises(KitError, match=r"item c\|cas_cot\|0: image file .*2.png not found"):
        synthesize(engine, items, ["cas_cot"], tmp_path / "s.jsonl", progress=False)


def test_summary_counts_blocks_and_refine_verdicts():
    parsed = {"well_formed": True, "evaluations": [{"verdict": "Refine"}, {"verdict": "Accept"}]}
    records = [{"prompt_id": "seat_synthesis", "parsed": parsed, "answer_correct": True},
               {"prompt_id": "seat_synthesis", "parsed": {"well_formed": False, "evaluations": []},
                "answer_correct": False}]
    summary = summarize(records)["prompts"]["seat_synthesis"]
    assert summary == {"n": 2, "well_formed": 50.0, "answer_correct": 50.0, "mean_blocks": 1.0, "mean_refine": 0.5}


def test_records_are_json_lines(source, tmp_path):
    out = tmp_path / "s.jsonl"
    synthesize(ScriptedEngine(), load_source(source)[:1], ["cas_cot"], out, progress=False)
    assert all(json.loads(line) for line in out.read_text().splitlines())


def test_the_notebook_stages_reuse_finished_work_and_name_bad_quantities(source, tmp_path, monkeypatch):
    from kit.casseat.selection import LabelledFilters
    from kit.casseat.synthesis import SynthesisConfig, run_synthesis
    from kit.casseat.trainsets import build_trainsets

    gold = {item.id: item.answer for item in load_source(source)}

    def right_every_time(chat):
        item_id, prompt_id, _ = chat.id.split("|")
        block = "[self-evaluation-start:\nok\nEvaluation: Accept\nself-evaluation-end]\n" \
            if prompt_id == "seat_synthesis" else ""
        return f"Step 1: look closely.\n{block}The answer is {gold[item_id]}"

    engine = ScriptedEngine(right_every_time)
    monkeypatch.setattr(SynthesisConfig, "engine", lambda self: engine)
    config = SynthesisConfig(teacher="scripted-teacher", source=str(source), items=3)
    first = run_synthesis(config, tmp_path / "run", progress=False)
    assert len(engine.calls) == 9 and first["summary"]["total"] == 9
    assert [c["filter"] for c in first["source_filters"]] == ["image_readable", "unique", "answer_kind"]
    again = run_synthesis(config, tmp_path / "run", progress=False)
    assert again == first and len(engine.calls) == 9  # reused, nothing generated
    other = run_synthesis(SynthesisConfig(teacher="scripted-teacher", source=str(source), items=2), tmp_path / "run",
                          progress=False)
    assert other["folder"] != first["folder"]

    built = build_trainsets(first["folder"], tmp_path / "run", LabelledFilters(min_chars=5), quantities=[1])
    assert built["sizes"]["seat"] == 3 and built["sizes"]["seat_n1"] == 1
    with pytest.raises(KitError, match=r"trainsets.quantities: \[50\] exceed the 3 seat examples"):
        build_trainsets(first["folder"], tmp_path / "run", LabelledFilters(min_chars=5), quantities=[50])
    mixed = build_trainsets(first["folder"], tmp_path / "run", LabelledFilters(min_chars=5), quantities=[1],
                            mixing_cot_fractions=[0.0, 1.0], mixing_size=2)
    assert mixed["folder"] != built["folder"]
    assert mixed["sizes"]["cas_seat_mix0"] == mixed["sizes"]["cas_seat_mix100"] == 2
    with pytest.raises(KitError, match=r"trainsets.mixing_size: 9 examples"):
        build_trainsets(first["folder"], tmp_path / "run", LabelledFilters(min_chars=5), mixing_cot_fractions=[0.5],
                        mixing_size=9)


# ------------------------------------------------------------------------------------------ several servers
def _openai_engine(servers: list[str], label: str | None = None):
    """An openai engine over ``servers`` that answers like ``ScriptedEngine``, without a network."""
    from kit.llm.generate import OpenAIEngine

    engine = OpenAIEngine(servers, "teacher-7b", concurrency=2)
    engine._request = lambda chat, sampling, server, index, count: default_script(chat)
    if label is not None:
        engine.model_label = label
    return engine


SERVERS = [f"http://gpu{i}:8000/v1" for i in range(4)]


def test_a_synthesis_started_on_two_servers_resumes_on_four(source, tmp_path):
    items = load_source(source)
    out = tmp_path / "s.jsonl"
    assert synthesize(_openai_engine(SERVERS[:2]), items[:2], ["cas_cot"], out, progress=False)["written"] == 2
    assert synthesize(_openai_engine(SERVERS), items, ["cas_cot"], out, progress=False)["written"] == 2
    records = read_records(out)
    assert [r["item_id"] for r in records] == ["a", "b", "c", "d"]
    assert {(r["teacher"], r["backend"]) for r in records} == {("teacher-7b", "openai")}
    with pytest.raises(KitError, match="teacher"):
        synthesize(ScriptedEngine(), items, ["seat_synthesis"], out, progress=False)


def test_the_synthesis_stage_key_leaves_the_servers_out(source):
    from dataclasses import asdict

    from kit.casseat.synthesis import SynthesisConfig
    from kit.llm.generate import EngineChoice

    def config(servers, teacher="teacher-7b", concurrency=None):
        choice = EngineChoice("openai", {teacher: servers}, concurrency=concurrency)
        return SynthesisConfig(teacher=teacher, source=str(source), engine_choice=choice)

    key = config(SERVERS[0]).key()
    assert config(SERVERS[:2]).key() == config(",".join(SERVERS)).key() == config(SERVERS[3:], concurrency=2).key()
    assert key["base_url"] is None and key["backend"] == "openai"  # the fields runs before the engine choice had
    settings = {k: v for k, v in asdict(config(SERVERS[0])).items() if k != "engine_choice"}
    assert {k: v for k, v in key.items() if k not in ("teacher_hash", "source_hash")} == \
        {**settings, "backend": "openai", "base_url": None, "tensor_parallel_size": 1}
    assert config(SERVERS[0], teacher="teacher-2b").key() != key
    engine = config(SERVERS[:3], concurrency=2).engine()
    assert engine.servers == tuple(SERVERS[:3]) and engine.concurrency == 2 and engine.model_label == "teacher-7b"
    assert config(SERVERS[:2]).engine().model_label == config(SERVERS[0]).engine().model_label
    with pytest.raises(KitError, match="ftp://gpu0"):
        config(["ftp://gpu0/v1"]).engine()
    choice = EngineChoice("openai", {"student-2b": SERVERS[3:]})
    with pytest.raises(KitError, match=r"engine.servers names no server for model teacher-7b"):
        SynthesisConfig(teacher="teacher-7b", source=str(source), engine_choice=choice).engine()
    with pytest.raises(KitError, match=r"engine.backend: the in-process vllm backend is gone.*vllm serve"):
        EngineChoice("vllm")
    transformers = SynthesisConfig(teacher="teacher-7b", source=str(source), engine_choice=EngineChoice())
    assert transformers.key() == SynthesisConfig(teacher="teacher-7b", source=str(source)).key()
    assert transformers.key()["backend"] == "transformers"


def test_the_tiny_runs_synthesis_folder_keeps_its_hash(repo_dir, monkeypatch):
    """The committed tiny run's synthesis folder is found again: the key of the same settings hashes as it did
    before the engine choice (the teacher's and the source's hashes taken from its PARAMS.json)."""
    import kit.core.artifacts
    from kit.casseat.selection import DEFAULT_ANSWER_KINDS
    from kit.casseat.synthesis import SynthesisConfig
    from kit.core.artifacts import stage_dir

    folders = sorted((repo_dir / "results" / "runs").glob("tiny-*/casseat/synthesis-*"))
    if not folders:
        pytest.skip("no committed tiny run")
    params = json.loads((folders[0] / "PARAMS.json").read_text())
    hashes = {params["teacher"]: params["teacher_hash"], params["source"]: params["source_hash"]}
    monkeypatch.setattr(kit.core.artifacts, "tree_hash", lambda path, *a, **k: hashes[str(path)])
    monkeypatch.setattr(kit.core.artifacts, "file_hash", lambda path, *a, **k: hashes[str(path)])
    monkeypatch.setattr(kit.core.artifacts, "fingerprint", lambda path: hashes[str(path)])
    monkeypatch.setattr("kit.casseat.synthesis.source_file", lambda source, revision=None: source)
    config = SynthesisConfig(teacher=params["teacher"], source=params["source"], items=params["items"],
                             batch_size=params["batch_size"], max_new_tokens=params["max_new_tokens"])
    assert list(params["answer_kinds"]) == list(DEFAULT_ANSWER_KINDS)
    key = {**config.key(), "answer_kinds": list(DEFAULT_ANSWER_KINDS)}
    assert stage_dir(folders[0].parent, "synthesis", key) == folders[0]
