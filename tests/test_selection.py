"""Selection filters on a crafted set whose counts are known by hand, and the training-set builders."""

from __future__ import annotations

import pytest
from fakes import ScriptedEngine, row, write_source

from kit.casseat.mathv360k import load_source
from kit.casseat.selection import LabelledFilters, filter_labelled, filter_source, mllm_judge, report_table
from kit.casseat.synthesis import read_records, synthesize
from kit.casseat.trainsets import cas_seat_set, mixing_name, mixing_set, quantity_subsets, seat_set
from kit.errors import KitError
from kit.llm.prompts import get
from kit.training.data import read_set, to_hf_dataset, write_set


@pytest.fixture
def crafted(tmp_path):
    rows = [
        row("ok1", "img/a.png", "How many circles?", "3"),
        row("dup", "img/a_copy.png", "How  many CIRCLES?", "3"),      # same pixels, same question
        row("ok2", "img/a.png", "How many squares?", "2"),             # same image, other question: kept
        row("missing", "img/none.png", "How many?", "1"),
        row("broken", "img/broken.png", "How many?", "1"),
        row("long", "img/b.png", "Describe the picture.", "a red circle above two blue squares"),
        row("choice", "img/b.png", "Is it red?\nChoices:\n(A) Yes\n(B) No", "Yes"),
    ]
    folder = write_source(tmp_path / "src", rows, {"img/a.png": (1, 2, 3), "img/a_copy.png": (1, 2, 3),
                                                     "img/b.png": (9, 9, 9)})
    (folder / "img" / "broken.png").write_bytes(b"not a png")
    return load_source(folder)


def test_source_filters_remove_what_each_should_and_count_it(crafted):
    kept, counts, removed_by = filter_source(crafted)
    assert [i.id for i in kept] == ["ok1", "ok2", "choice"]
    assert [(c.filter, c.before, c.removed, c.kept) for c in counts] == [
        ("image_readable", 7, 2, 5), ("unique", 5, 1, 4), ("answer_kind", 4, 1, 3)]
    assert removed_by == {"missing": "image_readable", "broken": "image_readable", "dup": "unique",
                          "long": "answer_kind"}
    table = report_table(counts)
    assert list(table["removed"]) == [2, 1, 1]


def test_answer_kinds_are_a_parameter(crafted):
    kept, _, _ = filter_source(crafted, answer_kinds=("integer",))
    assert [i.id for i in kept] == ["ok1", "ok2"]
    with pytest.raises(KitError, match="unknown kind"):
        filter_source(crafted, answer_kinds=("essay",))


def _record(item_id, prompt_id, response, correct, problems=(), blocks=1, answer="3"):
    evaluations = [{"text": "", "verdict": "Accept", "after_step": 1}] * blocks
    return {"item_id": item_id, "prompt_id": prompt_id, "sample": 0, "response": response,
            "answer_correct": correct, "gold": "3", "question": "How many?", "image": "x.png",
            "turns": ["prompt"] if prompt_id != "cas_reflection" else ["prompt", "cot", "reflect"],
            "parsed": {"well_formed": not problems, "problems": list(problems), "evaluations": evaluations,
                       "answer": answer}}


LONG = "Step 1: I look at the image closely.\nThe answer is 3"


def test_labelled_filters_count_per_prompt_in_order():
    records = [
        _record("a", "seat_synthesis", LONG, True),
        _record("b", "seat_synthesis", LONG, False),                           # wrong answer
        _record("c", "seat_synthesis", "Step", False, ["no final answer"], answer=None),
        _record("d", "seat_synthesis", LONG, True, blocks=0),                  # no self-evaluation
        _record("e", "seat_synthesis", LONG, True, ["block 1 is not closed"]),  # malformed
        _record("f", "seat_synthesis", "x" * 5000 + "\nThe answer is 3", True),  # too long
        _record("g", "cas_cot", LONG, True, blocks=0),                         # CoT needs no block
        _record("h", "cas_cot", "The answer is 3", True, blocks=0),            # too short
    ]
    kept, counts = filter_labelled(records, LabelledFilters(min_blocks=1, min_chars=20, max_chars=4000))
    assert sorted(r["item_id"] for r in kept) == ["a", "g"]
    by = {(c.prompt_id, c.filter): (c.before, c.removed) for c in counts}
    assert by[("seat_synthesis", "has_final_answer")] == (6, 1)
    assert by[("seat_synthesis", "answer_matches_gold")] == (5, 1)
    assert by[("seat_synthesis", "well_formed")] == (4, 2)
    assert by[("seat_synthesis", "length")] == (2, 1)
    assert by[("cas_cot", "length")] == (2, 1)
    assert ("seat_synthesis", "judge") not in by


def test_judge_filter_uses_the_engine_and_counts_its_removals():
    records = [_record("a", "seat_synthesis", LONG, True), _record("b", "seat_synthesis", LONG, True)]
    engine = ScriptedEngine(script=lambda chat: "Yes." if chat.id.startswith("a|") else "No, step 1 is wrong.")
    kept, counts = filter_labelled(records, LabelledFilters(judge=True), judge=mllm_judge(engine))
    assert [r["item_id"] for r in kept] == ["a"]
    assert counts[-1].filter == "judge" and counts[-1].removed == 1
    assert "Correct answer: 3" in get("judge").format(question="q", answer="3", response="r")
    with pytest.raises(KitError, match="judge"):
        filter_labelled(records, LabelledFilters(judge=True))


@pytest.mark.parametrize("bad", [{"min_blocks": -1}, {"min_chars": 10, "max_chars": 5}])
def test_bad_filter_parameters_are_refused(bad):
    with pytest.raises(KitError, match="selection"):
        LabelledFilters(**bad)


# ------------------------------------------------------------------------------------------ training sets
@pytest.fixture
def synthesised(tmp_path):
    rows = [row(f"q{i}", "img/a.png", f"How many circles in {i}?", str(i)) for i in range(6)]
    items = load_source(write_source(tmp_path / "src", rows, {"img/a.png": (5, 5, 5)}))

    def script(chat):  # CoT right on even items only; reflections always right
        gold = chat.id.split("|")[0][1:]
        if chat.id.split("|")[1] == "cas_cot" and int(gold) % 2:
            return "Step 1: count.\nThe answer is 99"
        if chat.id.split("|")[1] == "seat_synthesis":
            return ("Step 1: count.\n[self-evaluation-start:\nok\nEvaluation: Accept\nself-evaluation-end]\n"
                    f"The answer is {gold}")
        return f"Step 1: count again.\nThe answer is {gold}"

    out = tmp_path / "s.jsonl"
    synthesize(ScriptedEngine(script), items, out_path=out, progress=False)
    records = read_records(out)
    kept, _ = filter_labelled(records, LabelledFilters(min_chars=10))
    return records, kept


def test_seat_set_asks_without_the_answer_and_trains_on_the_teacher(synthesised):
    _, kept = synthesised
    examples = seat_set(kept)
    assert len(examples) == 6
    user, assistant = examples[0]["messages"]
    assert user["content"][0] == {"type": "image"}
    assert "Answer:" not in user["content"][1]["text"] and "How many circles" in user["content"][1]["text"]
    assert assistant["role"] == "assistant" and "self-evaluation-start" in assistant["content"][0]["text"]
    assert examples[0]["train_turns"] == [0] and len(examples[0]["images"]) == 1


def test_cas_seat_set_mixes_at_the_ratio_and_masks_wrong_cot_turns(synthesised):
    records, kept = synthesised
    assert sum(r["prompt_id"] == "cas_cot" for r in kept) == 3  # odd items' CoT was wrong
    examples = cas_seat_set(kept, records, cot_per_reflection=1.0)
    kinds = [e["kind"] for e in examples]
    assert kinds.count("cot") == 3 and kinds.count("reflection") == 3
    for e in examples:
        if e["kind"] == "reflection":
            assert len(e["messages"]) == 4
            cot_answer = e["messages"][1]["content"][0]["text"]
            assert e["train_turns"] == ([1] if "99" in cot_answer else [0, 1])
    half = cas_seat_set(kept, records, cot_per_reflection=0.5)
    assert [e["kind"] for e in half].count("reflection") == 6 and [e["kind"] for e in half].count("cot") == 3
    only_reflection = cas_seat_set(kept, records, cot_per_reflection=0)
    assert {e["kind"] for e in only_reflection} == {"reflection"}
    with pytest.raises(KitError):
        cas_seat_set(kept, records, cot_per_reflection=-1)


def test_mixing_sets_hold_the_size_and_vary_the_share(synthesised):
    records, kept = synthesised  # 3 CoT lines kept, 6 reflections
    for fraction, size, cot in [(0.0, 4, 0), (0.25, 4, 1), (0.5, 4, 2), (1.0, 3, 3)]:
        examples = mixing_set(kept, records, fraction, size)
        kinds = [e["kind"] for e in examples]
        assert len(examples) == size and kinds.count("cot") == cot, fraction
    with pytest.raises(KitError, match=r"trainsets.mixing_size: 4 examples at CoT fraction 1.0 need 4 CoT"):
        mixing_set(kept, records, 1.0, 4)
    with pytest.raises(KitError, match="mixing_cot_fractions: 1.5"):
        mixing_set(kept, records, 1.5, 2)
    assert [mixing_name(f) for f in (0.0, 0.25, 1.0)] == ["cas_seat_mix0", "cas_seat_mix25", "cas_seat_mix100"]


def test_quantity_subsets_are_nested_and_bounded(synthesised):
    _, kept = synthesised
    examples = seat_set(kept)
    subsets = quantity_subsets(examples, [4, 2, 6], seed=3)
    assert list(subsets) == [2, 4, 6]
    assert subsets[2] == subsets[4][:2] and subsets[4] == subsets[6][:4]
    with pytest.raises(KitError, match="sizes"):
        quantity_subsets(examples, [7])


def test_sets_round_trip_and_open_as_a_hf_dataset(synthesised, tmp_path):
    _, kept = synthesised
    path = write_set(tmp_path / "seat.jsonl", seat_set(kept))
    examples = read_set(path)
    dataset = to_hf_dataset(examples)
    assert len(dataset) == 6 and dataset[0]["images"][0].size == (28, 28)
    assert dataset[0]["messages"][0]["content"][0]["type"] == "image"
    (tmp_path / "bad.jsonl").write_text('{"messages": []}\n')
    with pytest.raises(KitError, match="bad.jsonl line 1: no images"):
        read_set(tmp_path / "bad.jsonl")
