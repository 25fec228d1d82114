"""Fine-tuning with the real chat templates, not the kit's own.

The tiny models carry a ChatML template the kit wrote, with ``{% generation %}`` markers, which hides what
the real models do: TRL ships byte-exact copies of Qwen2-VL-Instruct's template (``qwen2_5_vl.jinja``;
Qwen2-VL's is byte-identical) and of llava-v1.6-mistral-7b-hf's (``llava_next.jinja``), neither with
markers. These tests put those templates onto the tiny models of both families and check which tokens
carry the loss, that the loss is not zero and that the adapter learns, on both backends' collator logic.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import trl
from fakes import row, write_source

from kit import REPO_DIR
from kit.errors import KitError
from kit.llm import models
from kit.training.data import conversation, to_hf_dataset, write_set
from kit.training.sft import (
    SFTSettings,
    TurnMaskingCollator,
    _turns_and_ids,
    fitting_examples,
    keep_turns,
    response_markers,
    sft,
    training_chat_template,
)

MODELS = REPO_DIR / "data" / "models"
TEMPLATES = Path(trl.__file__).parent / "chat_templates"
# family -> (tiny model, TRL's copy of the real template, what the real template puts after an answer)
REAL = {
    "qwen2_vl": ("tiny-qwen2vl-student", "qwen2_5_vl.jinja", "<|im_end|>\n"),
    "llava_next": ("tiny-llava-policy", "llava_next.jinja", "</s>"),
}
pytestmark = [pytest.mark.skipif(not (MODELS / "tiny-qwen2vl-student").is_dir(), reason="tiny models needed"),
              pytest.mark.usefixtures("one_thread")]


def with_real_template(family: str, folder: Path) -> Path:
    """A copy of the tiny model of ``family`` whose processor renders the real model's chat template."""
    tiny, template, _ = REAL[family]
    shutil.copytree(MODELS / tiny, folder)
    (folder / "chat_template.jinja").write_text((TEMPLATES / template).read_text())
    return folder


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    folder = write_source(tmp_path_factory.mktemp("src"), [row("a", "a.png", "q", "1")], {"a.png": (200, 30, 30)})
    return str(folder / "a.png")


def cot(i: int, image: str) -> dict:
    return {"id": f"c{i}", "kind": "cot", "images": [image], "train_turns": [0],
            "messages": conversation([f"How many red squares? {i}", f"Step 1: count them.\nThe answer is {i}"], image)}


def reflection(i: int, image: str) -> dict:
    return {"id": f"r{i}", "kind": "reflection", "images": [image], "train_turns": [1],
            "messages": conversation([f"How many red squares? {i}", "Step 1: wrong.\nThe answer is 99",
                                      "Please reflect.", f"Step 1 is wrong.\nThe answer is {i}"], image)}


def labelled_text(processor, batch, row_index: int) -> str:
    ids = batch["input_ids"][row_index][batch["labels"][row_index] != -100]
    return processor.tokenizer.decode(ids)


@pytest.fixture(scope="module", params=sorted(REAL))
def real(request, tmp_path_factory):
    folder = with_real_template(request.param, tmp_path_factory.mktemp(request.param) / "model")
    return request.param, folder, models.load(folder).processor


def test_the_real_templates_have_no_generation_markers_and_get_trl_training_variants(real):
    family, _, processor = real
    from trl.chat_template_utils import has_generation_markers

    assert not has_generation_markers(processor.chat_template)  # what made the peft backend label nothing
    patched = training_chat_template(processor)
    assert patched == (TEMPLATES / REAL[family][1].replace(".jinja", "_training.jinja")).read_text()
    assert training_chat_template(models.load(MODELS / REAL[family][0]).processor) is None  # the tiny one is marked


@pytest.mark.peft_sft
def test_labels_cover_exactly_the_assistant_tokens_with_the_end_of_turn(real, image):
    family, _, processor = real
    end = REAL[family][2]
    collator = TurnMaskingCollator(processor)
    rows = list(to_hf_dataset([cot(3, image), reflection(4, image)]))
    batch = collator(rows)
    # Rows processed one by one and joined are TRL's own batch to the bit, under the real template too.
    reference = collator.inner([{k: v for k, v in r.items() if k in ("messages", "images")} for r in rows])
    keep_turns(reference["labels"], *_turns_and_ids(rows))
    assert set(batch) == set(reference) and all(torch.equal(batch[k], reference[k]) for k in batch)
    assert labelled_text(processor, batch, 0).strip() == f"Step 1: count them.\nThe answer is 3{end}".strip()
    # The reflection example's wrong CoT turn carries no loss; only its reflection turn does.
    assert labelled_text(processor, batch, 1).strip() == f"Step 1 is wrong.\nThe answer is 4{end}".strip()
    # Nothing of the prompt: no system prompt, instruction or image token is labelled.
    for text in (labelled_text(processor, batch, i) for i in range(2)):
        assert "How many" not in text and "reflect" not in text and "helpful assistant" not in text
    assert batch["pixel_values"].shape[0] > 0


@pytest.mark.peft_sft
def test_an_example_with_nothing_to_learn_is_an_error_naming_it(real, image):
    _, _, processor = real
    example = {**cot(1, image), "id": "no-such-turn", "train_turns": [2]}
    with pytest.raises(KitError, match=r"'no-such-turn' has no token to learn from.*1 assistant turn"):
        TurnMaskingCollator(processor)(list(to_hf_dataset([example])))


def test_an_unknown_unmarked_template_is_refused(real):
    _, folder, _ = real
    processor = models.load(folder).processor
    processor.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'][0]['text'] }}\n{% endfor %}"
    with pytest.raises(KitError, match="no {% generation %} markers"):
        training_chat_template(processor)


def test_unsloth_response_markers_label_what_the_training_template_labels(real, image):
    """Unsloth's response-only mode labels the text after each assistant marker up to the next user marker.
    On the real rendering that is the assistant's turn as TRL's training template marks it (LLaVA-NeXT's
    separator space after ``</s>`` aside, which kit_train.json records)."""
    family, _, processor = real
    instruction, response = response_markers(processor.chat_template)
    example = reflection(2, image)
    text = processor.apply_chat_template(example["messages"], tokenize=False)
    spans, start = [], text.find(response)
    while start != -1:
        end = text.find(instruction, start + len(response))
        spans.append(text[start + len(response):end if end != -1 else len(text)])
        start = text.find(response, start + len(response))
    end_of_turn = REAL[family][2]
    separator = " " if family == "llava_next" else ""
    prefix = " " if family == "llava_next" else ""
    assert spans == [f"{prefix}Step 1: wrong.\nThe answer is 99{end_of_turn}{separator}",
                     f"{prefix}Step 1 is wrong.\nThe answer is 2{end_of_turn}{separator}"]


@pytest.mark.peft_sft
def test_training_on_the_real_template_learns(real, image, tmp_path):
    _, folder, _ = real
    examples = [cot(i, image) for i in range(4)] + [reflection(i, image) for i in range(4)]
    settings = SFTSettings(lora_r=4, lora_dropout=0.0, learning_rate=5e-3, max_steps=3, batch_size=4,
                           logging_steps=1)
    result = sft(folder, examples, tmp_path / "adapter", settings, log=lambda m: None)
    assert result.train_loss > 0.1 and "training chat template" in result.loss_mask
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(float(w.abs().max()) > 0 for w in lora_b)  # the adapter moved off its zero start


@pytest.mark.peft_sft
def test_examples_longer_than_max_length_are_skipped_and_counted(image, tmp_path):
    folder = with_real_template("qwen2_vl", tmp_path / "model")
    processor = models.load(folder).processor
    short, long = cot(1, image), cot(2, image)
    long["messages"] = conversation(["How many? " + "red " * 300, "The answer is 2"], image)
    kept, skipped = fitting_examples([short, long], processor, 200)
    assert kept == [short] and skipped == ["c2"]
    with pytest.raises(KitError, match="none of the 1 examples fits max_length 10"):
        fitting_examples([short], processor, 10)
    result = sft(folder, [short, long], tmp_path / "adapter", SFTSettings(lora_r=2, max_steps=1, batch_size=1,
                                                                          max_length=200), log=lambda m: None)
    assert result.skipped_too_long == ["c2"] and result.examples == 1


@pytest.mark.peft_sft
def test_the_training_collator_measures_each_example_as_the_plain_render_does(real, image):
    """Training measures lengths with its own collator (the training variant of the template, kept in its cache):
    under the real templates it must find the same lengths as the model's own template, so that the same examples
    are skipped."""
    from kit.training.sft import example_lengths

    _, _, processor = real
    examples = [cot(3, image), reflection(4, image)]
    collator = TurnMaskingCollator(processor)
    assert example_lengths(examples, processor, collator) == example_lengths(examples, processor)
    assert len(collator.cache) == len(examples)


def test_a_missing_training_image_names_the_file_and_the_row(image, tmp_path):
    data = write_set(tmp_path / "train.jsonl", [cot(1, image), {**cot(2, image), "images": [str(tmp_path / "gone.png")]}])
    with pytest.raises(KitError, match=r"train.jsonl row 2 \(example 'c2'\): image .*gone.png does not exist"):
        sft(MODELS / "tiny-qwen2vl-student", data, tmp_path / "adapter", SFTSettings(max_steps=1))
    assert not (tmp_path / "adapter").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and unsloth")
def test_unsloth_collator_labels_what_the_peft_collator_labels(real, image):  # pragma: no cover - GPU only
    pytest.importorskip("unsloth")
    from kit.training.sft import UnslothTurnCollator

    family, folder, processor = real
    loaded = models.load(folder)
    rows = list(to_hf_dataset([cot(3, image), reflection(4, image)]))
    ours = TurnMaskingCollator(processor)(rows)
    theirs = UnslothTurnCollator(loaded.model, processor, 2048)(rows)
    for i in range(2):
        assert labelled_text(processor, theirs, i).rstrip() == labelled_text(processor, ours, i).rstrip()
