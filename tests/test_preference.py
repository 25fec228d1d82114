"""EACO's preference data: sampling the policy, the draft's pair rule, pairs, DPO rows and STIC's baseline."""

from __future__ import annotations

import json
import random

import pytest
from fakes import ScriptedEngine
from PIL import Image

from kit.eaco import critic, preference
from kit.errors import KitError
from kit.training import data


class SeedRecordingEngine(ScriptedEngine):
    """A scripted engine that also records the sampling seed of each call."""

    def __init__(self, script=None, **kwargs) -> None:
        super().__init__(script, **kwargs)
        self.seeds: list[int] = []

    def generate(self, chats, sampling, progress=False):
        self.seeds.append(sampling.seed)
        yield from super().generate(chats, sampling, progress)


def _describe(chat) -> str:
    return f"description {chat.id}"


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "coco"
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (folder / "images").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), colour).save(folder / "images" / f"{i}.png")
    return preference.list_images(folder)


@pytest.fixture
def instructions(small_world):
    return preference.load_instructions(small_world / "eaco_images")


# ------------------------------------------------------------------------------------------ the pair rule
@pytest.mark.parametrize("scores, expected", [
    ([3, 3, 3, 3, 3], (1, 0)),  # all equal: the only case where the tie rule fires
    ([4, 4, 4, 4, 4], (1, 0)),
    ([2, 5, 5, 1, 1], (1, 3)),  # partial ties: the first highest, the first lowest
    ([0, 0, 0, 0, 4], (4, 0)),
    ([5, 1, 5, 1, 3], (0, 1)),
])
def test_the_drafts_rule_verbatim(scores, expected):
    assert preference.draft_choose_pair(scores) == expected


@pytest.mark.parametrize("scores, expected", [
    ([2, 5, 5, 1, 1], (1, 3)),  # agrees with the draft wherever the draft's scores differ
    ([5, 1, 5, 1, 3], (0, 1)),
    ([3, 3, 3, 3, 3], None),  # the draft pairs 1 over 0 here
    ([None] * 5, None),
    ([None, 4, None, None, None], None),
    ([None, 4, 4, None, None], None),
    ([None, 4, 2, None, 4], (1, 2)),  # the draft reads None as 0 and would reject response 0
])
def test_choose_pair_leaves_unparseable_scores_out_and_pairs_no_equal_scores(scores, expected):
    assert preference.choose_pair(scores) == expected
    assert preference.draft_choose_pair([0, 4, 2, 0, 4]) == (1, 0)


# ------------------------------------------------------------------------------------------ sampling
def test_sampling_records_one_line_per_image_and_sample_with_its_seed(images, instructions, tmp_path):
    out = tmp_path / "samples.jsonl"
    engine = SeedRecordingEngine(_describe)
    summary = preference.sample_responses(engine, images, instructions[0], out, n=3, temperature=0.2, seed=10)
    assert summary == {"written": 9, "total": 9, "images": 3}
    assert engine.seeds == [10, 11, 12]  # each sample index its own seed
    records = preference.read_samples(out)
    assert {(r["image_id"], r["sample"]) for r in records} == {(i, k) for i in images for k in range(3)}
    for record in records:
        assert record["instruction"] == instructions[0][record["instruction_index"]]
        assert record["sample_seed"] == 10 + record["sample"] and record["response"] == \
            f"description {record['image_id']}|{record['sample']}"
    # one instruction per image, the same for all its samples, drawn from the image's own id
    per_image = {r["image_id"]: r["instruction"] for r in records}
    assert all(r["instruction"] == per_image[r["image_id"]] for r in records)
    assert per_image["images/1.png"] == preference.instruction_for("images/1.png", instructions[0], 10)[1]

    again = SeedRecordingEngine(_describe)
    assert preference.sample_responses(again, images, instructions[0], out, n=3, seed=10)["written"] == 0
    assert again.calls == []


def test_a_partial_file_resumes_only_the_missing_keys(images, instructions, tmp_path):
    out = tmp_path / "samples.jsonl"
    with pytest.raises(RuntimeError):
        preference.sample_responses(ScriptedEngine(_describe, fail_after=4), images, instructions[0], out, n=3)
    done = {(r["image_id"], r["sample"]) for r in preference.read_samples(out)}
    assert len(done) == 4
    engine = ScriptedEngine(_describe)
    assert preference.sample_responses(engine, images, instructions[0], out, n=3)["written"] == 5
    assert len(engine.calls) == 5 and not {tuple(c.rsplit("|", 1)) for c in engine.calls} & \
        {(i, str(k)) for i, k in done}
    assert len(preference.read_samples(out)) == 9


def test_changed_settings_are_refused(images, instructions, tmp_path):
    out = tmp_path / "samples.jsonl"
    preference.sample_responses(ScriptedEngine(_describe), images, instructions[0], out, n=2)
    with pytest.raises(KitError, match="sampling"):
        preference.sample_responses(ScriptedEngine(_describe), images, instructions[0], out, n=2, temperature=0.7)
    with pytest.raises(KitError, match="instructions_hash"):
        preference.sample_responses(ScriptedEngine(_describe), images, instructions[0][:4], out, n=2)
    with pytest.raises(KitError, match="temperature 0"):
        preference.sample_responses(ScriptedEngine(_describe), images, instructions[0], tmp_path / "x.jsonl",
                                    n=2, temperature=0)


# ------------------------------------------------------------------------------------------ pairs
SCRIPTED_SCORES = {  # (image, sample) -> the critic's total; None: an unreadable judgement
    ("images/0.png", 0): 2, ("images/0.png", 1): 5, ("images/0.png", 2): None,
    ("images/1.png", 0): 3, ("images/1.png", 1): 3, ("images/1.png", 2): 3,
    ("images/2.png", 0): 4, ("images/2.png", 1): 1, ("images/2.png", 2): 4,
}


def _critic(chat) -> str:
    image_id, sample = chat.turns[0].rsplit("description ", 1)[1].split("\n")[0].rsplit("|", 1)
    score = SCRIPTED_SCORES[(image_id, int(sample))]
    return "Add 1 point for relevance." if score is None else f"Add 1 point for relevance.\nscore: {score}"


def test_build_pairs_keeps_every_score_and_skips_equal_ones(images, instructions, tmp_path):
    samples, scores, out = tmp_path / "samples.jsonl", tmp_path / "scores.jsonl", tmp_path / "pairs.jsonl"
    preference.sample_responses(ScriptedEngine(_describe), images, instructions[0], samples, n=3)
    with pytest.raises(KitError, match="run kit.eaco.critic.score_responses"):
        preference.build_pairs(samples, scores, out)
    critic.score_responses(ScriptedEngine(_critic), preference.items_from_samples(samples), scores)
    summary = preference.build_pairs(samples, scores, out)
    assert summary["pairs"] == 2 and summary["skipped"] == {"all_equal": 1, "too_few_parseable": 0}
    assert summary["unparseable_scores"] == 1
    rows = {r["id"]: r for r in data.read_pairs(out)}
    assert set(rows) == {"images/0.png", "images/2.png"}
    first = rows["images/0.png"]
    assert first["scores"] == [2, 5, None]
    assert (first["chosen_index"], first["rejected_index"]) == (1, 0)
    assert first["chosen"] == "description images/0.png|1" and first["rejected"] == "description images/0.png|0"
    assert first["image"] == images["images/0.png"] and first["prompt"] in instructions[0]
    assert rows["images/2.png"]["scores"] == [4, 1, 4] and rows["images/2.png"]["chosen_index"] == 0


def test_validate_pairs_names_the_pair_and_the_file(tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    good = {"id": "img-a", "image": str(image), "prompt": "Describe.", "chosen": "A red square.", "rejected": "A cat."}
    data.validate_pairs([good], "pairs.jsonl")
    with pytest.raises(KitError, match=r"pairs.jsonl: pair img-b: image file .*gone.png not found"):
        data.validate_pairs([good, {**good, "id": "img-b", "image": str(tmp_path / "gone.png")}], "pairs.jsonl")
    with pytest.raises(KitError, match="pairs.jsonl: pair img-a: the rejected response is empty"):
        data.validate_pairs([{**good, "rejected": "  "}], "pairs.jsonl")
    with pytest.raises(KitError, match="pair img-a: the chosen response is empty"):
        data.validate_pairs([{**good, "chosen": ""}], "pairs.jsonl")
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(json.dumps({**good, "chosen": ""}) + "\n")
    with pytest.raises(KitError, match=f"{bad}: pair img-a: the chosen response is empty"):
        data.read_pairs(bad)


def test_dpo_rows_are_trls_conversational_vision_format():
    pair = {"id": "i", "image": "/x/a.png", "prompt": "Describe the image.", "chosen": "Good.", "rejected": "Bad.",
            "scores": [5, 1], "chosen_index": 0, "rejected_index": 1}
    (row,) = data.to_dpo_rows([pair])
    assert set(row) == {"images", "prompt", "chosen", "rejected"}
    assert row["images"] == ["/x/a.png"]
    assert row["prompt"] == [{"role": "user", "content": [{"type": "image"},
                                                          {"type": "text", "text": "Describe the image."}]}]
    assert row["chosen"] == [{"role": "assistant", "content": [{"type": "text", "text": "Good."}]}]
    assert row["rejected"] == [{"role": "assistant", "content": [{"type": "text", "text": "Bad."}]}]


# ------------------------------------------------------------------------------------------ STIC baseline
class _Draws(random.Random):
    """A stream whose first random() is fixed, to take a chosen branch of corrupt_image."""

    def __init__(self, first: float) -> None:
        super().__init__(0)
        self.first = first

    def random(self) -> float:
        value, self.first = (self.first, None) if self.first is not None else (super().random(), None)
        return value


def test_corrupt_image_resizes_or_jitters_as_stic_intends():
    image = Image.new("RGB", (60, 40), (200, 120, 40))
    small, done = preference.corrupt_image(image, _Draws(0.9))
    assert done == {"kind": "resize", "size": [30, 20]} and small.size == (30, 20)  # shorter side to 20
    jittered, done = preference.corrupt_image(image, _Draws(0.1))
    assert done["kind"] == "color_jitter" and 0.5 <= done["brightness"] <= 1.5 and -0.3 <= done["hue"] <= 0.3
    assert jittered.size == image.size and jittered.getpixel((0, 0)) != image.getpixel((0, 0))


def _stic_answer(chat) -> str:
    return f"answer to {chat.turns[0][:30]!r} on {chat.image}"


def test_stic_pairs_pair_the_detailed_answer_against_a_hallucinated_or_corrupted_one(instructions, tmp_path):
    from kit.llm.prompts import get

    folder = tmp_path / "coco"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (40, 30), (30 * i, 100, 200 - 20 * i)).save(folder / f"{i}.png")
    images = preference.list_images(folder)
    out, pairs_path = tmp_path / "stic.jsonl", tmp_path / "stic_pairs.jsonl"
    describe, hallucinate = instructions
    engine = ScriptedEngine(_stic_answer)
    rows = preference.stic_pairs(engine, images, out, instructions=describe, hallucination_instructions=hallucinate,
                                 pairs_path=pairs_path)
    assert len(rows) == 8 and len(engine.calls) == 16
    kinds = {r["rejected_kind"] for r in rows}
    assert kinds == {"hallucination_prompt", "corrupted_image"}  # both of STIC's branches occur for these ids
    lines = {(r["image_id"], r["role"]): r for r in map(json.loads, out.read_text().splitlines())}
    for row in rows:
        chosen, rejected = lines[(row["id"], "chosen")], lines[(row["id"], "rejected")]
        assert row["prompt"] in describe and chosen["prompt_sent"] == get("stic_full_description").text
        assert chosen["input_image"] == images[row["id"]]
        if row["rejected_kind"] == "hallucination_prompt":
            assert rejected["prompt_sent"] in hallucinate and rejected["input_image"] == images[row["id"]]
        else:
            assert rejected["prompt_sent"] == row["prompt"] and rejected["input_image"] != images[row["id"]]
            with Image.open(rejected["input_image"]) as seen:
                assert row["corruption"]["kind"] in ("resize", "color_jitter")
                assert seen.size == ((26, 20) if row["corruption"]["kind"] == "resize" else (40, 30))
    assert [r["id"] for r in data.read_pairs(pairs_path)] == [r["id"] for r in rows]

    again = ScriptedEngine(_stic_answer)
    assert preference.stic_pairs(again, images, out, instructions=describe,
                                 hallucination_instructions=hallucinate) == rows
    assert again.calls == []
    with pytest.raises(KitError, match="seed"):
        preference.stic_pairs(ScriptedEngine(_stic_answer), images, out, instructions=describe,
                              hallucination_instructions=hallucinate, seed=1)


def test_instructions_load_from_the_tiny_world_and_default_to_sticks_lists(instructions, tmp_path):
    describe, hallucinate = instructions
    assert len(describe) == 8 and len(hallucinate) == 8
    assert preference.load_instructions() == (describe, hallucinate)
    bad = tmp_path / "instructions.json"
    bad.write_text(json.dumps({"instructions": ["Describe."]}))
    with pytest.raises(KitError, match="hallucination_instructions"):
        preference.load_instructions(tmp_path)
