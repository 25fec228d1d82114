"""EACO's Critic: VLFeedback loading, critic training rows, reading scores, measuring and running the critic."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
from fakes import ScriptedEngine
from PIL import Image

from kit.eaco import critic
from kit.eaco.critic import Completion, CriticItem, FeedbackRow, ScoreParse, critic_quality, parse_score
from kit.errors import KitError
from kit.llm.generate import Sampling
from kit.llm.prompts import get


@pytest.fixture
def tiny_rows(small_world):
    return critic.load_vlfeedback(small_world / "vlfeedback", limit=2)


# ------------------------------------------------------------------------------------------ parse_score
@pytest.mark.parametrize("text, expected", [
    # the draft's get_score would read 1 here (the first integer anywhere)
    ("Add 1 point: the response is relevant.\nAward another point: it covers 2 of the 3 shapes.\nscore: 4", 4),
    ("Score: 2 at first sight, but on reflection the description is exact.\nSCORE: 5", 5),
    ("**Score:** 3", 3),
    ("Conclusion: \u201cscore: 0\u201d", 0),
    ("The total is clear. score: 4/5", 4),
])
def test_parse_score_reads_the_final_total(text, expected):
    assert parse_score(text) == ScoreParse(expected, True, None)


def test_the_drafts_first_integer_reading_would_take_the_rubric_walkthrough():
    text = "Add 1 point: the response is relevant.\nAward another point: it is mostly right.\nscore: 2"
    assert re.search(r"(\d+)", text).group(1) == "1"  # get_score, EACO/generate_pref_by_critic.py lines 36-42
    assert parse_score(text).score == 2


@pytest.mark.parametrize("text, problem", [
    ("", "empty"),
    ("The response is good and gets 4 points.", "no 'score: <int>'"),
    ("score: 7", "outside 0-5"),
    ("score: 3.5", "not a whole number"),
    ("score: four", "no 'score: <int>'"),
])
def test_parse_score_flags_what_it_cannot_read(text, problem):
    parsed = parse_score(text)
    assert not parsed.ok and parsed.score is None and problem in parsed.problem


# ------------------------------------------------------------------------------------------ critic_quality
def test_critic_quality_on_a_hand_computed_example():
    gold = {("a", 0): 5, ("a", 1): 3, ("a", 2): 1, ("b", 0): 4, ("b", 1): 2}
    predicted = {("a", 0): 5, ("a", 1): 1, ("a", 2): 1, ("b", 0): None, ("b", 1): 2}
    quality = critic_quality(predicted, gold)
    # exact: a0, a2, b1 of 5; pairs: a0>a1 right, a0>a2 right, a1>a2 predicted tie (wrong), b0>b1 unparseable
    assert quality["exact_accuracy"] == pytest.approx(0.6)
    assert quality["pairs"] == 4 and quality["pairwise_accuracy"] == pytest.approx(0.5)
    assert quality["unparseable"] == 1 and quality["n"] == 5 and quality["spearman_n"] == 4
    # ranks gold [4,3,1,2], predicted [4,1.5,1.5,3]: r = 3 / sqrt(5 * 4.5)
    assert quality["spearman"] == pytest.approx(math.sqrt(0.4))
    # a missing prediction counts as unparseable; a prediction without gold is an error
    assert critic_quality({}, gold)["unparseable"] == 5
    with pytest.raises(KitError, match="no gold score"):
        critic_quality({("c", 0): 3}, gold)


def test_spearman_is_one_for_the_same_order_and_none_without_variance():
    assert critic.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert critic.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert critic.spearman([1, 2, 3], [4, 4, 4]) is None


# ------------------------------------------------------------------------------------------ training rows
def test_scoring_instructions_on_two_rows_of_the_tiny_file(tiny_rows, tmp_path):
    from kit.training.data import read_set, write_set

    examples = critic.scoring_instructions(tiny_rows)
    assert len(examples) == 8
    # (helpfulness, faithfulness, ethics): row 0 (3,4,5) (4,3,5) (5,5,5) (3,1,5); row 1 (4,3,5) (3,1,5) (4,3,5) (5,5,5)
    targets = [e["messages"][1]["content"][0]["text"].splitlines()[-1] for e in examples]
    assert targets == ["score: 4", "score: 4", "score: 5", "score: 3", "score: 4", "score: 3", "score: 4", "score: 5"]
    first = examples[0]
    assert first["id"] == "tiny-vlf-0|0|additive" and first["kind"] == "critic_additive"
    assert first["images"] == [tiny_rows[0].image] and first["train_turns"] == [0]
    user = first["messages"][0]
    assert user["role"] == "user" and user["content"][0] == {"type": "image"}
    assert tiny_rows[0].prompt in user["content"][1]["text"]
    assert tiny_rows[0].completions[0].response in user["content"][1]["text"]
    assert "leaves out 2 of the 3 shapes" in first["messages"][1]["content"][0]["text"]  # VLFeedback's rationale
    write_set(tmp_path / "critic.jsonl", examples)
    assert read_set(tmp_path / "critic.jsonl") == examples

    per_dimension = critic.scoring_instructions(tiny_rows[:1], "per_dimension")
    faithful = [e for e in per_dimension if e["id"].endswith("|visual_faithfulness")]
    assert [e["messages"][1]["content"][0]["text"].splitlines()[-1] for e in faithful] == \
        ["score: 4", "score: 3", "score: 5", "score: 1"]
    assert len(per_dimension) == 12 and "visual faithfulness" in faithful[0]["messages"][0]["content"][1]["text"]


def test_the_aggregate_is_a_named_choice_rounding_halves_up(tiny_rows):
    def totals(aggregate):
        return [critic.gold_score(c, aggregate) for c in tiny_rows[0].completions]

    assert totals("mean") == [4, 4, 5, 3]
    assert totals("min") == [3, 3, 5, 1]
    # sums 12, 12, 15, 9 onto 0-5: 3.75, 3.75, 5, 2.5 (half up to 3, where round() would give 2)
    assert totals("rescaled_sum") == [4, 4, 5, 3]
    with pytest.raises(KitError, match="unknown aggregate"):
        critic.scoring_instructions(tiny_rows, aggregate="median")


# ------------------------------------------------------------------------------------------ loading
def _copy_with(small_world, tmp_path, edit):
    source = small_world / "vlfeedback"
    folder = tmp_path / "vlf"
    (folder / "images").mkdir(parents=True)
    lines = (source / "data.jsonl").read_text().splitlines()[:3]
    rows = [json.loads(line) for line in lines]
    for row in rows:
        shutil.copy(source / row["img_path"], folder / row["img_path"])
    edit(rows)
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_bad_rows_are_errors_naming_the_file_line_and_id(small_world, tmp_path):
    def bad_rating(rows):
        rows[1]["completions"][2]["annotations"]["Visual Faithfulness"]["Rating"] = "6"

    folder = _copy_with(small_world, tmp_path / "1", bad_rating)
    with pytest.raises(KitError, match=r"data.jsonl line 2 \(id tiny-vlf-1\) completion 2 Visual Faithfulness: "
                                       r"rating '6' is not a whole number from 1 to 5"):
        critic.load_vlfeedback(folder)
    assert [r.id for r in critic.load_vlfeedback(folder, skip_invalid=True)] == ["tiny-vlf-0", "tiny-vlf-2"]

    folder = _copy_with(small_world, tmp_path / "2", lambda rows: rows[2].update(img_path="images/missing.png"))
    with pytest.raises(KitError, match=r"line 3 \(id tiny-vlf-2\): image file .*missing.png not found"):
        critic.load_vlfeedback(folder)
    assert len(critic.load_vlfeedback(folder, limit=2)) == 2  # the limit stops before the bad row

    folder = _copy_with(small_world, tmp_path / "3", lambda rows: rows[0]["completions"][1].update(response=" "))
    with pytest.raises(KitError, match=r"line 1 \(id tiny-vlf-0\) completion 1: the response is empty"):
        critic.load_vlfeedback(folder)

    folder = _copy_with(small_world, tmp_path / "4", lambda rows: rows[2].update(id="tiny-vlf-0"))
    with pytest.raises(KitError, match="id tiny-vlf-0 already appears at .*line 1"):
        critic.load_vlfeedback(folder)
    with pytest.raises(KitError, match="neither a folder, a file nor a hub id"):
        critic.load_vlfeedback(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------ held-out split
def test_heldout_split_shares_no_image(tiny_rows):
    completion = tiny_rows[0].completions[0]
    # several prompts per image, as in VLFeedback, where one image carries several instructions
    rows = [FeedbackRow(f"p{i}", f"/img/{i % 7}.png", f"question {i}", [completion]) for i in range(30)]
    train, heldout = critic.split_heldout(rows, fraction=0.25, seed=3)
    assert not {r.image for r in train} & {r.image for r in heldout}
    assert sorted(r.id for r in train + heldout) == sorted(r.id for r in rows)
    assert 0 < len(heldout) < len(rows)
    assert critic.split_heldout(rows, 0.25, seed=3) == (train, heldout)
    # training rows split the same way, by their image
    examples = critic.scoring_instructions(rows)
    train_x, held_x = critic.split_heldout(examples, 0.25, seed=3)
    assert not {e["images"][0] for e in train_x} & {e["images"][0] for e in held_x}
    with pytest.raises(KitError, match="fraction"):
        critic.split_heldout(rows, 1.0)


# ------------------------------------------------------------------------------------------ running the critic
def _image(path, colour=(200, 40, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), colour).save(path)
    return str(path)


def _judge(chat) -> str:
    text = chat.turns[0]
    if "garbled" in text:
        return "I cannot tell."
    return "Add 1 point for relevance.\nAward another point.\nscore: " + ("5" if "three shapes" in text else "2")


def test_score_responses_records_the_parse_and_resumes(tmp_path):
    image = _image(tmp_path / "a.png")
    items = [CriticItem("img-a", 0, image, "Describe the image.", "There are three shapes."),
             CriticItem("img-a", 1, image, "Describe the image.", "There is one shape."),
             CriticItem("img-a", 2, image, "Describe the image.", "garbled")]
    out = tmp_path / "scores.jsonl"
    with pytest.raises(RuntimeError):
        critic.score_responses(ScriptedEngine(_judge, fail_after=2), items, out)
    assert len(out.read_text().splitlines()) == 2
    engine = ScriptedEngine(_judge)
    summary = critic.score_responses(engine, items, out)
    assert engine.calls == ["img-a|2"] and summary["written"] == 1 and summary["total"] == 3
    assert summary["unparseable"] == 1 and summary["scores"] == {"2": 1, "5": 1, "unparseable": 1}
    assert critic.read_scores(out) == {("img-a", 0): 5, ("img-a", 1): 2, ("img-a", 2): None}
    record = json.loads(out.read_text().splitlines()[0])
    assert record["judgement"].startswith("Add 1 point") and record["ok"] and record["score"] in (2, 5)
    assert record["critic"] == "scripted-teacher" and record["sampling"]["temperature"] == 0.0

    again = ScriptedEngine(_judge)
    assert critic.score_responses(again, items, out)["written"] == 0 and again.calls == []
    with pytest.raises(KitError, match="prompt_id"):
        critic.score_responses(ScriptedEngine(_judge), items, out, prompt_id="eaco_critic_draft")
    with pytest.raises(KitError, match="sampling"):
        critic.score_responses(ScriptedEngine(_judge), items, out, Sampling(max_new_tokens=64))
    changed = [CriticItem("img-a", 0, image, "Describe the image.", "Something else entirely.")]
    with pytest.raises(KitError, match="another response text"):
        critic.score_responses(ScriptedEngine(_judge), changed, out)


def test_the_critic_is_shown_the_question_and_the_draft_prompt_is_kept_word_for_word(tmp_path):
    item = CriticItem("x", 0, _image(tmp_path / "x.png"), "How many shapes?", "Three shapes.")
    ours = critic.critic_chat(item).turns[0]
    draft = critic.critic_chat(item, "eaco_critic_draft").turns[0]
    assert "How many shapes?" in ours and "How many shapes?" not in draft
    for text in (ours, draft):
        assert text.startswith("Review the user\u2019s question and the corresponding response using the additive "
                               "5-point scoring system")
        assert "Three shapes." in text
        assert "Conclude with the score using the format: \u201cscore: <total points>\u201d" in text
    assert get("eaco_critic_draft").source == "authors_code" and get("eaco_critic_additive").source == "ours"
    with pytest.raises(KitError, match="not a critic prompt"):
        critic.critic_chat(item, "judge")


def test_critic_items_and_gold_scores_line_up(tiny_rows):
    items = critic.critic_items(tiny_rows)
    gold = critic.gold_scores(tiny_rows)
    assert [(i.id, i.index) for i in items] == list(gold)
    assert gold[("tiny-vlf-1", 1)] == 3 and items[5].response == tiny_rows[1].completions[1].response
    assert isinstance(tiny_rows[0].completions[0], Completion)


def test_a_hub_id_is_refused_while_offline_without_touching_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KitError, match="offline"):
        critic.load_vlfeedback("MMInstruction/VLFeedback")


def test_blank_image_rows_keep_everything_but_the_picture(tiny_rows, tmp_path):
    from kit.eaco.pipeline import judged_params

    rows = tiny_rows[:3]
    blank = critic.blank_image_rows(rows, tmp_path / "blanks")
    assert [(r.id, r.prompt, r.completions) for r in blank] == [(r.id, r.prompt, r.completions) for r in rows]
    for row, blanked in zip(rows, blank, strict=True):
        with Image.open(row.image) as original, Image.open(blanked.image) as grey:
            assert grey.size == original.size and grey.getextrema() == ((128, 128),) * 3
    assert len(list((tmp_path / "blanks").glob("blank-*.png"))) == len({Image.open(r.image).size for r in rows})
    assert critic.blank_image_rows(rows, tmp_path / "blanks") == blank  # written once, reused
    # the judged stage is keyed by the pictures: the control never reuses the real images' judgements
    assert judged_params("critic", rows)["items"] != judged_params("critic", blank)["items"]
