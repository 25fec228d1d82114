"""Fine-tuning: backend choice (unsloth never imported on a CPU), one recipe for both backends, the label
mask on a real batch, settings rejected before training, the adapter round trip, and accelerate with two
CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from fakes import row, write_source

from kit import REPO_DIR
from kit.core.settings_cli import accelerate_command
from kit.errors import KitError
from kit.llm import models
from kit.training.data import conversation, to_hf_dataset, write_set
from kit.training.sft import (
    SFTSettings,
    TurnMaskingCollator,
    _trl_config,
    _turns_and_ids,
    choose_backend,
    keep_turns,
    lora_targets,
    merge,
    sft,
)

STUDENT = REPO_DIR / "data" / "models" / "tiny-qwen2vl-student"
pytestmark = [pytest.mark.skipif(not STUDENT.is_dir(), reason="the shipped tiny student is needed"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    folder = write_source(tmp_path_factory.mktemp("src"), [row("a", "a.png", "q", "1")], {"a.png": (200, 30, 30)})
    image = str(folder / "a.png")
    out = []
    for i in range(8):
        cot = f"Step 1: Count the red squares: {i}.\nThe answer is {i}"
        out.append({"id": f"c{i}", "kind": "cot", "images": [image], "train_turns": [0],
                    "messages": conversation([f"How many red squares? {i}", cot], image)})
        out.append({"id": f"r{i}", "kind": "reflection", "images": [image], "train_turns": [1],
                    "messages": conversation([f"How many red squares? {i}", "Step 1: wrong.\nThe answer is 99",
                                              "Please reflect.", f"Step 1 is wrong.\nThe answer is {i}"], image)})
    return out


def test_backend_choice_on_a_cpu_never_imports_unsloth():
    assert not torch.cuda.is_available()
    assert choose_backend("auto") == ("peft", "auto: no CUDA GPU")
    assert choose_backend("peft") == ("peft", "asked for")
    with pytest.raises(KitError, match="needs a CUDA GPU"):
        choose_backend("unsloth")
    assert "unsloth" not in sys.modules


@pytest.mark.parametrize(("bad", "message"), [
    ({"lora_r": -4}, "lora_r"), ({"lora_r": 0}, "lora_r"), ({"lora_dropout": 1.5}, "lora_dropout"),
    ({"learning_rate": 0}, "learning_rate"), ({"batch_size": 0}, "batch_size"), ({"backend": "deepspeed"}, "backend"),
    ({"target_modules": ()}, "target_modules"),
])
def test_bad_settings_are_named(bad, message):
    with pytest.raises(KitError, match=message):
        SFTSettings(**bad)


def test_unknown_target_module_is_rejected_before_any_training(examples, tmp_path, monkeypatch):
    import trl

    def no_trainer(*args, **kwargs):
        raise AssertionError("a trainer was built")

    monkeypatch.setattr(trl, "SFTTrainer", no_trainer)
    with pytest.raises(KitError, match=r"target module\(s\) query_key_value not found.*q_proj"):
        sft(STUDENT, examples, tmp_path / "adapter", SFTSettings(target_modules=("q_proj", "query_key_value")))
    assert not (tmp_path / "adapter").exists()


def test_lora_stays_out_of_the_vision_tower_unless_asked():
    model = models.load(STUDENT).model
    language = lora_targets(model, SFTSettings())
    assert language and not any(".visual." in f".{name}." for name in language)
    with_vision = lora_targets(model, SFTSettings(target_modules=("q_proj", "qkv"), finetune_vision_layers=True))
    assert any(".visual." in f".{name}." for name in with_vision)


def test_both_backends_get_the_same_recipe(tmp_path):
    settings = SFTSettings(lora_r=8, learning_rate=5e-4, epochs=2, batch_size=4, gradient_accumulation=2,
                           max_length=512, seed=7)
    peft_config = _trl_config(settings, tmp_path, cuda=False, unsloth=False)
    unsloth_config = _trl_config(settings, tmp_path, cuda=False, unsloth=True)
    for name in ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "max_length", "seed", "warmup_steps", "remove_unused_columns"):
        assert getattr(peft_config, name) == getattr(unsloth_config, name), name
    assert peft_config.learning_rate == 5e-4 and peft_config.per_device_train_batch_size == 4
    # What each backend's collator needs, and nothing else, differs.
    assert unsloth_config.dataset_text_field == "" and unsloth_config.dataset_kwargs == {"skip_prepare_dataset": True}
    assert peft_config.assistant_only_loss and not peft_config.bf16
    assert not any(getattr(peft_config, name, False) for name in ("activation_checkpointing", "gradient_checkpointing"))


@pytest.mark.peft_sft
def test_batches_are_trls_to_the_bit_and_each_example_is_processed_once(examples):
    loaded = models.load(STUDENT)
    collator = TurnMaskingCollator(loaded.processor)
    rows = list(to_hf_dataset(examples))
    calls = []
    inner = collator.inner
    collator.inner = lambda batch: calls.append(len(batch)) or inner(batch)
    for _epoch in range(2):
        for start in (0, 5):  # uneven batches: rows of different lengths padded together
            batch = collator(rows[start:start + 5])
            reference = inner([{k: v for k, v in r.items() if k in ("messages", "images")} for r in rows[start:start + 5]])
            keep_turns(reference["labels"], *_turns_and_ids(rows[start:start + 5]))
            assert set(batch) == set(reference)
            assert all(torch.equal(batch[k], reference[k]) and batch[k].dtype == reference[k].dtype for k in batch)
    assert calls == [1] * 10  # ten examples, each rendered once over two epochs
    # keep_turns edits the batch, never the cached rows
    assert all((row["labels"] != -100).sum() > 0 for row in collator.cache.values())
    reflection = collator.collated(rows[1])
    assert int((reflection["labels"] != -100).sum()) > int((batch["labels"][0] != -100).sum())


@pytest.mark.peft_sft
def test_a_set_larger_than_the_cache_is_rendered_each_time_it_is_seen(examples):
    loaded = models.load(STUDENT)
    collator = TurnMaskingCollator(loaded.processor, cache_bytes=1)
    rows = list(to_hf_dataset(examples[:2]))
    assert torch.equal(collator(rows)["input_ids"], collator(rows)["input_ids"]) and collator.cache == {}


@pytest.mark.peft_sft
def test_label_mask_keeps_only_the_trained_assistant_turns(examples):
    loaded = models.load(STUDENT)
    dataset = to_hf_dataset(examples[:2])
    batch = TurnMaskingCollator(loaded.processor)([dataset[0], dataset[1]])
    tokenizer = loaded.processor.tokenizer
    decoded = [tokenizer.decode(batch["input_ids"][i][batch["labels"][i] != -100]) for i in range(2)]
    assert decoded[0] == "Step 1: Count the red squares: 0.\nThe answer is 0<|im_end|>"
    assert decoded[1] == "Step 1 is wrong.\nThe answer is 0<|im_end|>"  # the wrong CoT turn carries no loss
    assert batch["pixel_values"].shape[0] > 0


@pytest.mark.peft_sft
def test_adapter_round_trip_and_merge(examples, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    result = sft(STUDENT, examples, tmp_path / "adapter", SFTSettings(lora_r=4, learning_rate=5e-3, max_steps=4,
                                                                       batch_size=4, logging_steps=2), log=lambda m: None)
    assert result.backend == "peft" and result.steps == 4 and result.processes == 1
    recorded = json.loads((tmp_path / "adapter" / "kit_train.json").read_text())
    assert recorded["backend_reason"] == "auto: no CUDA GPU" and recorded["recipe"]["lora_r"] == 4

    ours = models.load(tmp_path / "adapter")
    plain = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(STUDENT), tmp_path / "adapter")
    plain.eval()
    batch = TurnMaskingCollator(ours.processor)([to_hf_dataset(examples[:1])[0]])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        a, b = ours.model(**inputs).logits, plain(**inputs).logits
        base = AutoModelForImageTextToText.from_pretrained(STUDENT)(**inputs).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, base, atol=1e-4)  # the adapter changed the model

    merged = models.load(merge(tmp_path / "adapter", tmp_path / "merged"))
    with torch.no_grad():
        assert torch.allclose(merged.model(**inputs).logits, a, atol=1e-4)


@pytest.mark.peft_sft
def test_accelerate_launch_with_two_cpu_processes(examples, tmp_path):
    data = write_set(tmp_path / "train.jsonl", examples)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    command = accelerate_command("kit.training.sft", [str(STUDENT), str(data), str(tmp_path / "adapter"), "--max-steps", "2",
                                               "--batch-size", "2", "--lora-r", "4"], processes=2)
    done = subprocess.run(command, cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    recorded = json.loads((tmp_path / "adapter" / "kit_train.json").read_text())
    assert recorded["processes"] == 2 and recorded["steps"] == 2
    assert len([line for line in done.stdout.splitlines() if line.startswith('{"adapter_dir"')]) == 1
    assert models.load(tmp_path / "adapter").adapter is not None


@pytest.mark.peft_sft
def test_bench_train_measures_the_peft_backend(tmp_path):
    from kit.tools.speed import bench_train

    source = write_source(tmp_path / "src", [row(f"q{i}", "a.png", f"How many? {i}", str(i)) for i in range(8)],
                          {"a.png": (1, 2, 3)})
    lines: list[str] = []
    results = bench_train(STUDENT, source=source, n=8, steps=2, batch_size=4, log=lines.append)
    assert list(results) == ["peft", "plain"] and results["peft"]["samples_per_s"] > 0
    assert results["peft"]["peak_memory_mb"] > 0 and lines[0].strip().startswith("peft:")
    assert results["plain"]["samples_per_s"] > 0 and lines[1].strip().startswith("plain:")
    # what each side did before its clock started is shown, not hidden
    assert results["peft"]["setup_seconds"] > 0 and "before the first step" in lines[0]
    assert results["plain"]["collate_seconds"] > 0 and "collated beforehand" in lines[1]


def _lora_weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.peft_sft
def test_a_killed_run_resumes_from_its_last_checkpoint(examples, tmp_path, monkeypatch):
    settings = SFTSettings(lora_r=4, lora_dropout=0.0, learning_rate=5e-3, max_steps=4, batch_size=4,
                           checkpoint_steps=2, logging_steps=1)
    data = write_set(tmp_path / "train.jsonl", examples)
    straight = sft(STUDENT, data, tmp_path / "straight", settings, log=lambda m: None)

    calls = {"n": 0}
    original = TurnMaskingCollator.__call__

    def dies_in_the_third_step(self, batch):  # the loader fetches one batch ahead
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        return original(self, batch)

    monkeypatch.setattr(TurnMaskingCollator, "__call__", dies_in_the_third_step)
    checkpoints = tmp_path / "adapter.checkpoints"
    with pytest.raises(KeyboardInterrupt):
        sft(STUDENT, data, tmp_path / "adapter", settings, log=lambda m: None, checkpoint_dir=checkpoints)
    assert not (tmp_path / "adapter").exists()  # nothing that looks finished
    assert (checkpoints / "checkpoint-2" / "trainer_state.json").is_file()

    monkeypatch.setattr(TurnMaskingCollator, "__call__", original)
    lines: list[str] = []
    resumed = sft(STUDENT, data, tmp_path / "adapter", settings, log=lines.append, checkpoint_dir=checkpoints)
    assert resumed.resumed_from_step == 2 and resumed.steps == 4 and "resuming from checkpoint-2" in lines[0]
    assert not checkpoints.exists()
    # The same data order and optimizer state: the resumed adapter is the uninterrupted one.
    a, b = _lora_weights(tmp_path / "adapter"), _lora_weights(tmp_path / "straight")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert straight.resumed_from_step == 0


@pytest.mark.peft_sft
def test_train_stage_reuses_a_finished_adapter_and_keys_on_the_data(examples, tmp_path, monkeypatch):
    from kit.training import sft as train

    settings = SFTSettings(lora_r=4, learning_rate=5e-3, max_steps=2, batch_size=4)
    data = write_set(tmp_path / "train.jsonl", examples)
    first = train.train_stage(STUDENT, data, tmp_path / "run", settings, progress=False, log=lambda m: None)
    folder = tmp_path / "run" / first["adapter_dir"].rsplit("/", 1)[1]
    assert folder.name.startswith("adapter-") and first["params"]["recipe"]["lora_r"] == 4
    assert models.load(folder).adapter is not None
    assert train.stage_folder(STUDENT, data, tmp_path / "run", settings) == folder  # where to train it elsewhere

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(train, "sft", no_training)
    assert train.train_stage(STUDENT, data, tmp_path / "run", settings, log=lambda m: None) == first
    write_set(data, examples[:4])  # other content, same file name: another stage
    with pytest.raises(AssertionError, match="trained again"):
        train.train_stage(STUDENT, data, tmp_path / "run", settings, log=lambda m: None)
    with pytest.raises(AssertionError, match="trained again"):
        train.train_stage(STUDENT, data, tmp_path / "run", SFTSettings(lora_r=8, max_steps=2), log=lambda m: None)


def test_checkpoint_steps_must_be_positive():
    with pytest.raises(KitError, match="checkpoint_steps"):
        SFTSettings(checkpoint_steps=0)
    assert "checkpoint_steps" not in SFTSettings().recipe()  # how often to save is not part of the recipe


def test_unsloth_trains_every_example_when_no_max_length_is_set(examples, monkeypatch):
    """Unsloth always has a length limit: without max_length it is its default raised to the longest example,
    measured with the processor alone, so nothing is skipped (LLaVA-NeXT rows outgrow 2048 tokens)."""
    import kit.training.sft
    from kit.llm.models import open_processor
    from kit.training.sft import example_lengths, fitting_examples, unsloth_length_limit

    lengths = example_lengths(examples, open_processor(str(STUDENT)))
    assert len(lengths) == len(examples) and min(lengths) > 0
    assert unsloth_length_limit(examples, SFTSettings(max_length=77), str(STUDENT)) == 77
    assert unsloth_length_limit(examples, SFTSettings(), str(STUDENT)) == max(kit.training.sft.UNSLOTH_MAX_LENGTH, *lengths)
    monkeypatch.setattr(kit.training.sft, "UNSLOTH_MAX_LENGTH", 8)  # a default shorter than every example
    limit = unsloth_length_limit(examples, SFTSettings(), str(STUDENT))
    assert limit == max(lengths)
    assert fitting_examples(examples, open_processor(str(STUDENT)), limit) == (examples, [])


@pytest.mark.peft_sft
def test_training_renders_each_example_once_before_the_first_step(examples, tmp_path, monkeypatch):
    """The length check renders every example into the collator's cache, so that the steps of every epoch render
    none."""
    import kit.training.sft as training

    rendered = []
    collated, batched = training.TurnMaskingCollator.collated, training.TurnMaskingCollator.__call__

    def counted(self, example):
        if training.example_key(example) not in self.cache:
            rendered.append(example["id"])
        return collated(self, example)

    def batch(self, rows):
        assert all(training.example_key(row) in self.cache for row in rows), "rendered during a training step"
        return batched(self, rows)

    monkeypatch.setattr(training.TurnMaskingCollator, "collated", counted)
    monkeypatch.setattr(training.TurnMaskingCollator, "__call__", batch)
    for max_length in (None, 10_000):
        rendered.clear()
        result = sft(STUDENT, examples, tmp_path / f"adapter-{max_length}",
                     SFTSettings(lora_r=4, epochs=2, batch_size=4, max_length=max_length), log=lambda m: None)
        assert sorted(rendered) == sorted(e["id"] for e in examples) and result.steps == 8
        assert result.setup_seconds > 0 and result.skipped_too_long == []
