"""Pre-training the tiny models: corpus hygiene, the assistant-only label mask, the build command and
the shipped checkpoints against their manifest."""

import dataclasses
import json

import pytest
import torch

from kit.core.artifacts import file_hash
from kit.core.profile import load_profile
from kit.errors import KitError
from kit.llm import models
from kit.tiny import models as tiny_models
from kit.tiny import pretrain
from kit.tiny.world import WorldConfig, build_world
from kit.tiny.world.scenes import scene_hash, scene_split
from kit.training.common import turn_mask

SMALL = WorldConfig(train_pool=40, mathvista_testmini=6, mathvision_test=4, mathvision_testmini=2,
                    wemath_problems=2, hallusionbench_sets=5, mme_images_per_subtask=2, eaco_images=2,
                    vlfeedback_prompts=2, instructions=4)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "tiny"
    build_world(root, SMALL, progress=False)
    return root


def test_fresh_scenes_stay_on_the_training_side(world):
    from kit.tiny.world import read_scenes

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
    tokenizer = tiny_models.train_tokenizer(pretrain.corpus_texts(world), family, 400)
    _, processor = tiny_models.build_tiny(family, tokenizer, tiny_models.TinySize(hidden=32, ffn=64))
    multi_turn = next(e for e in examples if len(e.turns) > 1)
    batch = pretrain.collate(processor, [examples[0], multi_turn])
    for row, example in enumerate([examples[0], multi_turn]):
        kept = batch["input_ids"][row][batch["labels"][row] != -100]
        expected = "".join(answer + "<|im_end|>" for _, answer in example.turns)
        assert tokenizer.decode(kept) == expected


def tiny_spec(**changes):
    spec = pretrain.PretrainSpec(name="test-student", family=models.QWEN2VL,
                                 size=tiny_models.TinySize(hidden=32, ffn=64, vocab=400),
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
        # A field added to PretrainSpec after a model was built is absent from its manifest: at its default it
        # changes nothing, so the built model still matches its spec.
        defaults = {f.name: f.default for f in dataclasses.fields(pretrain.PretrainSpec)
                    if f.default is not dataclasses.MISSING}
        spec = {**json.loads(json.dumps(defaults)), **entry["spec"]}
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
    tokenizer = tiny_models.train_tokenizer(["a b c"] * 5, models.QWEN2VL, 300)
    first, _ = tiny_models.build_tiny(models.QWEN2VL, tokenizer, tiny_models.TinySize(hidden=32, ffn=64), seed=3)
    second, _ = tiny_models.build_tiny(models.QWEN2VL, tokenizer, tiny_models.TinySize(hidden=32, ffn=64), seed=3)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_seat_and_cas_styles_use_the_authors_prompts_and_parse_well_formed(world):
    from kit.eval import seat_format as seat
    from kit.llm.prompts import get

    examples = pretrain.corpus_examples(world, ("seat", "cas"), 1.0, seed=0)
    by_style: dict[str, list] = {}
    for e in examples:
        by_style.setdefault(e.source, []).append(e)
    assert {k: len(v) for k, v in by_style.items()} == {"seat": 40, "cas_cot": 40, "cas_reflection": 40}
    for e in by_style["seat"]:
        prompt, answer = e.turns[0]
        assert prompt.startswith("This is a mathematical question") and "Answer: " in prompt
        parsed = seat.parse(answer)
        assert parsed.well_formed and len(parsed.evaluations) == 1
    refined = sum(seat.parse(e.turns[0][1]).verdicts == ["Refine"] for e in by_style["seat"])
    assert 0 < refined < 40
    for e in by_style["cas_reflection"]:
        assert e.turns[1][0] == get("cas_reflection").text and e.loss_turns == (1,)
        assert seat.parse(e.turns[1][1], expect_blocks=False).well_formed
    # Adding the new styles leaves the other styles' examples as they were.
    base = pretrain.corpus_examples(world, ("cot",), 1.0, seed=0)
    mixed = pretrain.corpus_examples(world, ("cot", "seat"), 1.0, seed=0)
    assert sorted(e.turns[0][1] for e in base) == sorted(e.turns[0][1] for e in mixed if e.source == "cot")


def test_loss_turns_leave_only_the_chosen_assistant_turn_labelled(world):
    examples = pretrain.corpus_examples(world, ("cas",), 1.0, seed=0)
    tokenizer = tiny_models.train_tokenizer(pretrain.corpus_texts(world), models.QWEN2VL, 400)
    _, processor = tiny_models.build_tiny(models.QWEN2VL, tokenizer, tiny_models.TinySize(hidden=32, ffn=64))
    reflection = next(e for e in examples if e.source == "cas_reflection")
    batch = pretrain.collate(processor, [reflection])
    kept = batch["input_ids"][0][batch["labels"][0] != -100]
    assert tokenizer.decode(kept) == reflection.turns[1][1] + "<|im_end|>"
    assert turn_mask([0, 1, 1, 0, 0, 1, 0, 1], (1,)) == [0, 0, 0, 0, 0, 1, 0, 0]
    assert turn_mask([0, 1, 1, 0, 1], None) == [0, 1, 1, 0, 1]


@pytest.mark.parametrize(("labelled", "turns"), [
    ([0, 1, 1, 0, 0, 1, 0, 1], (1,)), ([0, 1, 1, 0, 0, 1, 0, 1], (0, 2)), ([1, 1, 0, 1], None), ([0, 1, 1, 0, 1], [1]),
])
def test_fine_tuning_keeps_the_turns_pre_training_keeps(labelled, turns):
    """One rule for both: kit.training.sft.keep_turns (labels of a collated batch, in place) leaves labelled the
    positions kit.training.common.turn_mask keeps, which is what pretrain.collate labels."""
    from kit.training.sft import keep_turns

    labels = torch.tensor([[7 if bit else -100 for bit in labelled]])
    keep_turns(labels, [turns], ["x"])
    assert (labels[0] != -100).tolist() == turn_mask(labelled, turns)


@pytest.mark.peft_sft  # TRL builds the fine-tuning masks of vision chats only from transformers 5.18
def test_pretrain_and_fine_tuning_collators_label_the_same_tokens(world, tmp_path):
    """The same reflection conversation collated by pretrain.collate and by the fine-tuning collator
    (kit.training.sft.TurnMaskingCollator) with the same processor: the same tokens carry the loss."""
    from kit.tiny.world.scenes import render
    from kit.training.data import conversation, to_hf_dataset
    from kit.training.sft import TurnMaskingCollator

    examples = pretrain.corpus_examples(world, ("cas",), 1.0, seed=0)
    tokenizer = tiny_models.train_tokenizer(pretrain.corpus_texts(world), models.QWEN2VL, 400)
    _, processor = tiny_models.build_tiny(models.QWEN2VL, tokenizer, tiny_models.TinySize(hidden=32, ffn=64))
    reflection = next(e for e in examples if e.source == "cas_reflection")
    image = reflection.image
    if not isinstance(image, str):
        image = str(tmp_path / "scene.png")
        render(reflection.image).save(image)
    row = {"id": "r", "kind": "reflection", "images": [image], "train_turns": list(reflection.loss_turns),
           "messages": conversation([text for turn in reflection.turns for text in turn], image)}
    ours = pretrain.collate(processor, [reflection])
    theirs = TurnMaskingCollator(processor)(list(to_hf_dataset([row])))
    labelled = [batch["input_ids"][0][batch["labels"][0] != -100].tolist() for batch in (ours, theirs)]
    assert labelled[0] == labelled[1] and labelled[0]
    assert tokenizer.decode(labelled[1]) == reflection.turns[1][1] + "<|im_end|>"


def test_by_style_batches_hold_one_style_and_weights_are_checked(world, monkeypatch):
    seen: list[set] = []
    real_collate = pretrain.collate

    def spy(processor, examples, cache=None):
        seen.append({e.source for e in examples})
        return real_collate(processor, examples, cache)

    monkeypatch.setattr(pretrain, "collate", spy)
    examples = pretrain.corpus_examples(world, ("cot", "direct"), 1.0, seed=0)
    tokenizer = tiny_models.train_tokenizer(pretrain.corpus_texts(world), models.QWEN2VL, 400)
    model, processor = tiny_models.build_tiny(models.QWEN2VL, tokenizer, tiny_models.TinySize(hidden=32, ffn=64))
    spec = tiny_spec(corpus=("cot", "direct"), steps=6, eval_every=0, batching="by_style",
                     style_weights=(("cot", 1.0), ("direct", 1.0)))
    pretrain.train(model, processor, examples, spec, log=lambda m: None)
    assert len(seen) == 6 and all(len(styles) == 1 for styles in seen)
    with pytest.raises(KitError, match="style_weights name seat"):
        pretrain.train(model, processor, examples, dataclasses.replace(spec, style_weights=(("seat", 1.0),)),
                       log=lambda m: None)
    with pytest.raises(KitError, match="batching must be"):
        pretrain.train(model, processor, examples, dataclasses.replace(spec, batching="random"), log=lambda m: None)


def test_a_model_continued_from_another_needs_it_built(world, tmp_path):
    base = tiny_spec(name="test-base", eval_every=0)
    continued = tiny_spec(name="test-continued", init_from="test-base", eval_every=0, corpus=("cot", "cas"),
                          batching="by_style")
    specs = {"test-base": base, "test-continued": continued}
    with pytest.raises(KitError, match="continues from test-base"):
        pretrain.build_models(["test-continued"], world, tmp_path, threads=1, log=lambda m: None, specs=specs)
    manifest = pretrain.build_models(["test-continued", "test-base"], world, tmp_path, threads=1,
                                     log=lambda m: None, specs=specs)
    assert list(manifest["models"]) == ["test-base", "test-continued"]
    # The continued model keeps its base's tokenizer.
    assert (tmp_path / "test-base" / "tokenizer.json").read_bytes() == \
        (tmp_path / "test-continued" / "tokenizer.json").read_bytes()


def test_an_experiment_changes_one_models_spec_from_the_command_line():
    specs = pretrain.with_overrides(pretrain.SPECS, ["tiny-qwen2vl-teacher-base"],
                                    ["mrope=spatial", "vision_rope_theta=100", "steps=10", "init_from=None"])
    changed = specs["tiny-qwen2vl-teacher-base"]
    assert (changed.mrope, changed.vision_rope_theta, changed.steps, changed.init_from) == ("spatial", 100.0, 10, None)
    assert specs["tiny-qwen2vl-student"] == pretrain.SPECS["tiny-qwen2vl-student"]
    deeper = pretrain.with_overrides(pretrain.SPECS, ["tiny-qwen2vl-teacher-base"], ["size.layers=5", "steps=10"])
    base = pretrain.SPECS["tiny-qwen2vl-teacher-base"]
    assert deeper["tiny-qwen2vl-teacher-base"] == dataclasses.replace(base, size=dataclasses.replace(base.size, layers=5),
                                                                      steps=10)
    for bad, message in ((["steps=many"], "steps takes a number of type int"), (["colour=red"], "FIELD one of"),
                         (["size=4"], "FIELD one of"), (["size.depth=4"], "FIELD one of"),
                         (["size.layers=deep"], "size.layers takes a number of type int")):
        with pytest.raises(KitError, match=message):
            pretrain.with_overrides(pretrain.SPECS, ["tiny-qwen2vl-student"], bad)
    with pytest.raises(KitError, match="--only"):
        pretrain.with_overrides(pretrain.SPECS, None, ["steps=10"])


def test_a_perception_warm_up_trains_its_gates_before_the_corpus(world, tmp_path, monkeypatch):
    from kit.tiny import perception

    for name in perception.WARM_UPS:  # every shipped warm-up is a valid gate at both families' settings
        assert perception.warm_up(name, family=models.QWEN2VL, mrope="spatial", vision_rope_theta=100.0)
        assert perception.warm_up(name, family=models.LLAVA)
    with pytest.raises(KitError, match="not one of"):
        perception.warm_up("colour-first")
    monkeypatch.setitem(perception.WARM_UPS, "test", (
        {"kind": "shape", "min_objects": 1, "max_objects": 1, "steps": 2, "batch_size": 2, "warmup": 1},
        {"kind": "quadrant", "min_objects": 1, "max_objects": 1, "steps": 1, "batch_size": 2, "warmup": 1}))
    lines: list[str] = []
    spec = tiny_spec(perception="test", mrope="spatial", vision_rope_theta=100.0, eval_every=0)
    pretrain.build_models(["test-student"], world, tmp_path, threads=1, log=lines.append, specs={"test-student": spec})
    assert [line for line in lines if "perception warm-up" in line] == [
        "test-student: perception warm-up, shape, 2 steps", "test-student: perception warm-up, quadrant, 1 steps"]
    built = json.loads((tmp_path / "MANIFEST.json").read_text())["models"]["test-student"]
    assert built["spec"]["perception"] == "test" and built["spec"]["mrope"] == "spatial"
    config = json.loads((tmp_path / "test-student" / "config.json").read_text())
    assert config["text_config"]["rope_parameters"]["mrope_section"] == tiny_models.mrope_section("spatial", spec.size.hidden // spec.size.heads)


def test_a_scan_reads_a_shapes_scene_first_and_leaves_the_rest_of_its_solution_as_written():
    from kit.tiny.world.scenes import Scene, Shape

    scene = Scene("shapes", objects=(Shape("square", "blue", "small", 3, 3), Shape("circle", "red", "large", 0, 2)))
    gold = ["Step 1: Count the red shapes: 1.", "The answer is 1."]
    assert pretrain.scanned(gold, scene, "cells") == [
        "Step 1: Read the cells: -, -, red circle, -; -, -, -, -; -, -, -, -; -, -, -, blue square.",
        "Step 2: Count the red shapes: 1.", "The answer is 1."]
    plain, scanned = pretrain.fresh_records(40, seed=3), pretrain.fresh_records(40, seed=3, scan="objects")
    # The same scenes and questions either way; only the shapes scenes' solutions gain the scan.
    assert [r["question"] for r in plain] == [r["question"] for r in scanned]
    for before, after in zip(plain, scanned, strict=True):
        shapes = after["image"].kind == "shapes"
        assert after["solution"][0].startswith("Step 1: Read the objects: ") == shapes
        assert len(after["solution"]) == len(before["solution"]) + shapes
        assert after["solution"][-1] == before["solution"][-1]
    with pytest.raises(KitError, match="scan must be one of"):
        pretrain.scanned(gold, scene, "rows")
    with pytest.raises(KitError, match="optionally with \\+bars"):
        pretrain.scanned(gold, scene, "cells+heights")


def test_a_bars_scan_reads_each_bar_colour_and_height_before_the_world_s_steps():
    from kit.tiny.world.scenes import Bar, Scene

    chart = Scene("bars", bars=(Bar("A", 3, "green"), Bar("B", 5, "red"), Bar("C", 1, "blue"), Bar("D", 2, "yellow")))
    gold = ["Step 1: Bar B is red.", "The answer is red."]
    assert pretrain.scanned(gold, chart, "cells") == gold  # without +bars a chart keeps its own first steps
    assert pretrain.scanned(gold, chart, "cells+bars") == [
        "Step 1: Read the bars: A green 3, B red 5, C blue 1, D yellow 2.", "Step 2: Bar B is red.", "The answer is red."]
    records = pretrain.fresh_records(40, seed=5, scan="objects+bars")
    assert {r["image"].kind for r in records} == {"shapes", "bars"}
    for record in records:
        reads = "objects" if record["image"].kind == "shapes" else "bars"
        assert record["solution"][0].startswith(f"Step 1: Read the {reads}: ")


def test_local_solutions_change_only_the_steps_of_the_fresh_scenes_they_rewrite():
    plain = pretrain.fresh_records(60, seed=7, scan="cells+bars")
    local = pretrain.fresh_records(60, seed=7, scan="cells+bars", solutions="local")
    assert [(r["question"], r["answer"]) for r in plain] == [(r["question"], r["answer"]) for r in local]
    changed = [r for r, p in zip(local, plain, strict=True) if r["solution"] != p["solution"]]
    assert changed and len(changed) < len(local)
    for record in changed:  # the scan still comes first; the rest is the rewritten solution
        assert record["solution"][0].startswith("Step 1: Read the ") and record["solution"][-1].startswith("The answer")
    with pytest.raises(KitError, match="solutions must be"):
        pretrain.fresh_records(2, seed=7, solutions="short")


def test_the_build_s_answer_budget_fits_the_longest_solution_it_trains_on():
    processor = models.load(pretrain.MODELS_DIR / "tiny-qwen2vl-student", device="cpu").processor
    short = [pretrain.Example(None, [("q", "Step 1: Bar B is red.\nThe answer is red.")])]
    assert pretrain.answer_budget(processor, short) == 96  # the world's own solutions fit the profile's 96
    scanned = [pretrain.Example(None, [("q", "\n".join(r["solution"]))])
               for r in pretrain.fresh_records(300, seed=2, scan="cells+bars", solutions="local")]
    longest = max(len(processor.tokenizer(e.turns[0][1])["input_ids"]) for e in scanned)
    assert longest > 96 and pretrain.answer_budget(processor, scanned) == longest + 16
