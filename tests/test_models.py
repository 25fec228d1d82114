"""Tiny models of the real architectures: build, save, load through the one loader, same logits."""

import json

import pytest
import torch
from PIL import Image

from kit.errors import KitError
from kit.llm import models
from kit.tiny import models as tiny_models

TEXTS = ["How many red shapes are there? Step 1: Count the red shapes: 3. The answer is 3."] * 20


@pytest.fixture(scope="module", params=[models.QWEN2VL, models.LLAVA])
def built(request):
    tokenizer = tiny_models.train_tokenizer(TEXTS, request.param, 320)
    model, processor = tiny_models.build_tiny(request.param, tokenizer, tiny_models.TinySize(hidden=64, ffn=128), seed=0)
    return request.param, model, processor


def _batch(processor):
    image = Image.new("RGB", (112, 112), "white")
    image.paste((220, 40, 40), (10, 10, 40, 40))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many red shapes?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=[image], return_tensors="pt")


def test_image_is_sixteen_tokens(built):
    family, model, processor = built
    batch = _batch(processor)
    image_token = model.config.image_token_id if family == models.QWEN2VL else model.config.image_token_index
    assert int((batch["input_ids"] == image_token).sum()) == 16


def test_save_load_round_trip_gives_identical_logits(built, tmp_path):
    family, model, processor = built
    models.save(model, processor, tmp_path / "m", manifest={"note": "test"})
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "m" / "kit_model.json").read_text()) == {"note": "test"}
    loaded = models.load(tmp_path / "m", device="cpu")
    assert loaded.family == family
    batch = _batch(processor)
    reloaded_batch = _batch(loaded.processor)
    assert torch.equal(batch["input_ids"], reloaded_batch["input_ids"])
    with torch.no_grad():
        before = model.eval()(**batch).logits
        after = loaded.model(**reloaded_batch).logits
    assert torch.equal(before, after)


def test_chat_template_marks_assistant_tokens(built):
    _, _, processor = built
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "The answer is 3."}]},
    ]
    out = processor.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                  return_assistant_tokens_mask=True)
    kept = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert processor.tokenizer.decode(kept) == "The answer is 3.<|im_end|>"


def test_load_rejects_what_is_neither_folder_nor_hub_id(tmp_path):
    with pytest.raises(KitError, match="neither an existing folder nor a hub id"):
        models.load(tmp_path / "missing" / "model")
    (tmp_path / "file").write_text("x")
    with pytest.raises(KitError, match="is a file"):
        models.load(tmp_path / "file")


def test_qwen2vl_processor_needs_no_torchvision(built, tmp_path):
    family, model, processor = built
    if family != models.QWEN2VL:
        pytest.skip("the shim is for Qwen2-VL only")
    assert processor.video_processor is None if hasattr(processor, "video_processor") else True
    processor.save_pretrained(tmp_path)
    again = models.load_processor(str(tmp_path), family)
    assert again.tokenizer.get_vocab() == processor.tokenizer.get_vocab()


def test_default_dtype_is_16_bit_on_a_gpu_and_float32_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.default_dtype({"dtype": "float32"}) == "bfloat16"  # the tiny models' configs say float32
    assert models.default_dtype({}) == "bfloat16"
    assert models.default_dtype({"torch_dtype": "float16"}) == "float16"  # LLaVA-NeXT ships float16
    assert models.default_dtype({"dtype": torch.bfloat16}) == "bfloat16"
    assert models.default_dtype({"dtype": "bfloat16"}, cuda=False) == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.default_dtype({"torch_dtype": "bfloat16"}) == "float32"


def test_load_without_dtype_keeps_float32_on_the_cpu(built, tmp_path, monkeypatch):
    family, model, processor = built
    models.save(model, processor, tmp_path / "m")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.load(tmp_path / "m").model.dtype == torch.float32  # no GPU: the CPU default
    # On a GPU machine the device the weights go to decides: a CPU load stays float32.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.load(tmp_path / "m", device="cpu").model.dtype == torch.float32
    assert models.load(tmp_path / "m", dtype="bfloat16", device="cpu").model.dtype == torch.bfloat16


def test_a_pinned_hub_revision_reaches_every_from_pretrained(monkeypatch):
    import transformers

    from kit.core.artifacts import HUB_REVISIONS_ENV

    seen: list[tuple[str, dict]] = []

    def record(kind):
        def from_pretrained(source, **kwargs):
            seen.append((kind, kwargs))
            raise OSError("stop here")  # nothing is downloaded
        return from_pretrained

    monkeypatch.setenv(HUB_REVISIONS_ENV, '{"Qwen/Qwen2-VL-7B-Instruct": "abc1234"}')
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", record("config"))
    with pytest.raises(KitError, match="cannot read the model config"):
        models.load("Qwen/Qwen2-VL-7B-Instruct")
    assert seen == [("config", {"trust_remote_code": False, "revision": "abc1234"})]
    seen.clear()
    with pytest.raises(KitError):
        models.load("llava-hf/llava-v1.6-mistral-7b-hf")  # not pinned: the hub's main
    assert seen == [("config", {"trust_remote_code": False})]
