"""Pre-training the tiny models: corpus hygiene, the assistant-only label mask, the build command and
the shipped checkpoints against their manifest."""

import dataclasses
import json

import pytest
import torch

from kit import models, pretrain
from kit.artifacts import file_hash
from kit.errors import KitError
from kit.profile import load_profile
from kit.world import WorldConfig, build_world
from kit.world.scenes import scene_hash, scene_split

SMALL = WorldConfig(train_pool=40, mathvista_testmini=6, mathvision_test=4, mathvision_testmini=2,
                    wemath_problems=2, hallusionbench_sets=5, mme_images_per_subtask=2, eaco_images=2,
                    vlfeedback_prompts=2, instructions=4)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "tiny"
    build_world(root, SMALL, progress=False)
    return root


def test_fresh_scenes_stay_on_the_training_side(world):
    from kit.world import read_scenes

    records = pretrain.fresh_records(300, seed=7)
    hashes = {scene_hash(r["image"]) for r in records}
    assert all(scene_split(r["image"]) == "train" for r in records)
    evaluation = {scene_hash(s) for path, s in read_scenes(world).items() if not path.startswith(
        ("mathv360k", "eaco_images", "vlfeedback", "instructions"))}
    assert evaluation and not hashes & evaluation
    assert records[0]["solution"][-1].startswith("The answer is")


def test_corpus_styles(world):
    examples = pretrain.corpus_examples(world, ("cot", "query", "direct"), 1.0, seed=0)
    by_style = {e.source for e in examples}
    assert by_style == {"cot", "query", "direct"}
    assert len(examples) == 3 * SMALL.train_pool
    query = next(e for e in examples if e.source == "query")
    assert query.turns[0][0].startswith("Hint: ")
    cot = next(e for e in examples if e.source == "cot")
    assert cot.turns[0][1].splitlines()[-1].startswith("The answer is")


@pytest.mark.parametrize("family", [models.QWEN2VL, models.LLAVA])
def test_labels_cover_assistant_tokens_only(world, family):
    examples = pretrain.corpus_examples(world, ("cot", "instructions"), 1.0, seed=0)
    tokenizer = models.train_tokenizer(pretrain.corpus_texts(world), family, 400)
    _, processor = models.build_tiny(family, tokenizer, models.TinySize(hidden=32, ffn=64))
    multi_turn = next(e for e in examples if len(e.turns) > 1)
    batch = pretrain.collate(processor, [examples[0], multi_turn])
    for row, example in enumerate([examples[0], multi_turn]):
        kept = batch["input_ids"][row][batch["labels"][row] != -100]
        expected = "".join(answer + "<|im_end|>" for _, answer in example.turns)
        assert tokenizer.decode(kept) == expected


def tiny_spec(**changes):
    spec = pretrain.PretrainSpec(name="test-student", family=models.QWEN2VL,
                                 size=models.TinySize(hidden=32, ffn=64, vocab=400),
                                 corpus=("cot",), steps=3, batch_size=4, warmup=1, seed=5,
                                 eval_every=2, curve_items=3)
    return dataclasses.replace(spec, **changes)


def test_build_writes_a_loadable_checkpoint_and_manifest(world, tmp_path):
    spec = tiny_spec()
    manifest = pretrain.build_models(["test-student"], world, tmp_path, threads=1, log=lambda m: None,
                                     specs={"test-student": spec})
    entry = manifest["models"]["test-student"]
    folder = tmp_path / "test-student"
    assert entry["files"] == {p.name: file_hash(p) for p in folder.iterdir() if p.is_file()}
    assert entry["report"]["steps"] == 3
    assert [point["step"] for point in entry["report"]["curve"]] == [2]
    assert entry["world_text_hash"] == pretrain.world_text_hash(world)
    assert json.loads((tmp_path / "MANIFEST.json").read_text()) == manifest
    reloaded = models.load(folder, device="cpu")
    assert models.count_parameters(reloaded.model) == entry["report"]["parameters"]


def test_unknown_model_is_refused(world, tmp_path):
    with pytest.raises(KitError, match="unknown tiny model"):
        pretrain.build_models(["tiny-gpt"], world, tmp_path)


# --------------------------------------------------------------------------- the shipped checkpoints
MANIFEST = pretrain.MODELS_DIR / pretrain.MANIFEST_NAME
shipped = pytest.mark.skipif(not MANIFEST.is_file(), reason="no shipped checkpoints (run `kit models build`)")


@shipped
def test_shipped_checkpoints_match_their_manifest():
    manifest = json.loads(MANIFEST.read_text())["models"]
    assert set(manifest) == set(pretrain.SPECS)
    for name, entry in manifest.items():
        folder = pretrain.MODELS_DIR / name
        assert entry["files"] == {p.name: file_hash(p) for p in folder.iterdir() if p.is_file()}, name
        spec = dict(entry["spec"])
        assert spec == pretrain._spec_dict(pretrain.SPECS[name]), f"{name}: SPECS changed since it was built"


@shipped
def test_shipped_checkpoints_were_trained_on_todays_world(tmp_path):
    world = load_profile("tiny").get("world")
    root = tmp_path / "tiny"
    manifest = build_world(root, WorldConfig.from_profile(world), progress=False)
    for name, entry in json.loads(MANIFEST.read_text())["models"].items():
        assert entry["world_config"] == manifest["config"], name
        assert entry["world_text_hash"] == pretrain.world_text_hash(root), name


@shipped
def test_teacher_is_clearly_stronger_than_a_student_that_is_still_learning():
    manifest = json.loads(MANIFEST.read_text())["models"]
    teacher = manifest["tiny-qwen2vl-teacher"]["report"]["accuracy"]["mathvista_testmini"]
    student = manifest["tiny-qwen2vl-student"]["report"]
    assert teacher >= student["accuracy"]["mathvista_testmini"] + 10.0
    # the student stops where more training still helps: its curve is rising at the end
    curve = [point["accuracy"] for point in student["curve"]]
    assert max(curve[-3:]) > curve[0]


def test_logits_are_reproducible_from_seed():
    tokenizer = models.train_tokenizer(["a b c"] * 5, models.QWEN2VL, 300)
    first, _ = models.build_tiny(models.QWEN2VL, tokenizer, models.TinySize(hidden=32, ffn=64), seed=3)
    second, _ = models.build_tiny(models.QWEN2VL, tokenizer, models.TinySize(hidden=32, ffn=64), seed=3)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
