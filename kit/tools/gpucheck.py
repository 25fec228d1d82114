"""``kit check --gpu`` (``make gpu-check``): Unsloth against the peft backend on models of the real shapes.

The tiny profile proves the kit's code on models whose sizes and tokenizers the kit chose; what it cannot show is
how that code behaves on the paper's models: speed, memory, bf16, and whether Unsloth's collator and saved adapters
agree with the peft path. The GPU machine has no network, so the real weights cannot be had there. This check
builds models of the **real configurations** instead (the hub ``config.json`` values of Qwen2-VL-2B-Instruct,
Qwen2-VL-7B-Instruct and llava-v1.6-mistral-7b-hf, written out below with their source) with random weights in
bf16, gives them a processor with the real image settings, the kit's tiny tokenizer of the same family (its ids
are all inside the real vocabulary; the special tokens the real template needs are checked, and added where the
tiny tokenizer lacks them) and TRL's copy of the real chat template, and saves each as an ordinary model folder.

Then, on the same rows (``kit.casseat.trainsets`` format: chain-of-thought and reflection examples whose ``train_turns``
differ), for each shape and each backend ``kit.training.sft.sft`` runs as the pipeline runs it, and the check measures:

- steps/s and tokens/s over the measured steps, after warm-up steps that are not timed;
- peak memory: ``SFTResult.peak_memory_mb`` (CUDA's peak allocation over loading and training);
- the loss masks of every batch the trainer really collated: each labelled span must be exactly one of the row's
  ``train_turns`` (end-of-turn marker aside) and no row may be left without labels;
- the dtype of the frozen weights, of the trainable (LoRA) weights and of the first decoder layer's output (bf16
  compute on CUDA), and that every logged loss is finite;
- that each saved adapter reloads with plain ``peft.PeftModel`` (in a process that never imports Unsloth) with
  every saved tensor in place, and gives the logits ``kit.llm.models.load`` gives on one batch;
- one DPO step (``kit.training.dpo``, the draft's loss and LoRA shape) on two pairs, on the LLaVA-NeXT shape.

Unsloth patches transformers and TRL when it is imported, so each backend trains in its own process: the peft
rows (and the builds and the DPO step) in one that never imports Unsloth, the Unsloth rows in one that imports it
before anything else, the reload checks in a third (or in the first when no Unsloth process runs). Under
Unsloth's pins (transformers 5.17) ``kit.training.sft`` refuses backend peft; the peft rows then say so, unless
``Plan.peft_python`` (``--gpu-peft-python``) names a Python whose environment it accepts. Timing hooks (``_Probe``) attach to the trainers through
transformers' ``DEFAULT_CALLBACKS`` and the kit's two collator classes, for the duration of a run only, so that
the code measured is ``kit.training.sft.sft`` itself.

Every figure written comes from a run; a row that could not run says why (``unsloth not installed``, the time
budget, an error) and carries no number. ``run_check`` takes a ``Plan`` (shapes, device, steps) so that the tests run the whole
pipeline on CPU with tiny shapes of the same architectures; ``kit check --gpu`` refuses to run without CUDA.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kit import REPO_DIR
from kit.errors import KitError

DOC = REPO_DIR / "docs" / "gpu-validation.md"
MODELS_DIR = REPO_DIR / "data" / "models"
TINY_WORLD_IMAGES = REPO_DIR / "data" / "tiny" / "mathv360k" / "images"
# docs/gpu-validation.md: the text between these lines is the measured section ``kit check --gpu`` rewrites.
BEGIN = "<!-- kit check --gpu: measured section begins; everything down to the end marker is rewritten -->"
END = "<!-- kit check --gpu: measured section ends -->"
LIMIT_S = 8 * 60  # the issue's budget for the whole check on one H100
# Share of the budget by which each process must have started its last unit (build+peft+DPO, unsloth,
# reload); a unit started in time may run past it, so the parent stops a process 45 s after its share.
STAGE_SHARES = {"peft": 0.50, "unsloth": 0.78, "reload": 1.0}
STAGE_GRACE_S = 45
REPORTED = ("torch", "transformers", "trl", "peft", "accelerate", "unsloth", "unsloth_zoo")

# ------------------------------------------------------------------------------------------ the real shapes
# Qwen/Qwen2-VL-2B-Instruct, config.json on the hub (the 2.21 B parameter count the hub page shows comes out of
# it exactly). The vision sizes are those the hub file gives (equal to Qwen2VLVisionConfig's defaults).
QWEN2VL_2B_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl", "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656, "hidden_act": "silu",
    "hidden_size": 1536, "initializer_range": 0.02, "intermediate_size": 8960, "max_position_embeddings": 32768,
    "max_window_layers": 28, "num_attention_heads": 12, "num_hidden_layers": 28, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False,
    "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
                      "hidden_size": 1536, "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14,
                      "temporal_patch_size": 2},
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 151936,
}
# Qwen/Qwen2-VL-7B-Instruct, config.json on the hub (8.29 B parameters): the 2B file with the 7B's widths, an
# untied LM head and the larger vocabulary.
QWEN2VL_7B_CONFIG: dict[str, Any] = {
    **QWEN2VL_2B_CONFIG, "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28,
    "num_key_value_heads": 4, "tie_word_embeddings": False, "vocab_size": 152064,
    "vision_config": {**QWEN2VL_2B_CONFIG["vision_config"], "hidden_size": 3584},
}
# Qwen/Qwen2-VL-{2B,7B}-Instruct, preprocessor_config.json: native resolution between these pixel counts.
QWEN2VL_IMAGES: dict[str, Any] = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
                                  "temporal_patch_size": 2, "merge_size": 2}
# llava-hf/llava-v1.6-mistral-7b-hf, config.json on the hub (7.57 B parameters). The hub file leaves the
# Mistral widths to MistralConfig's defaults (hidden 4096, 32 layers, 32 heads), as transformers reads it.
LLAVA_NEXT_7B_CONFIG: dict[str, Any] = {
    "architectures": ["LlavaNextForConditionalGeneration"], "model_type": "llava_next", "ignore_index": -100,
    "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    "image_token_index": 32000, "projector_hidden_act": "gelu",
    "text_config": {"_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2", "architectures": ["MistralForCausalLM"],
                    "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
                    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
                    "sliding_window": None, "torch_dtype": "bfloat16", "vocab_size": 32064},
    "torch_dtype": "float16", "use_image_newline_parameter": True,
    "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                      "model_type": "clip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 24,
                      "patch_size": 14, "projection_dim": 768, "vocab_size": 32000},
    "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064,
}
# llava-hf/llava-v1.6-mistral-7b-hf, preprocessor_config.json (AnyRes tiles of 336) and processor_config.json
# (patch 14, CLIP's class token counted and dropped by the "default" strategy: 576 features per tile).
LLAVA_NEXT_IMAGES: dict[str, Any] = {
    "size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}, "do_pad": True,
    "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
}
LLAVA_NEXT_PROCESSOR: dict[str, Any] = {"patch_size": 14, "vision_feature_select_strategy": "default",
                                        "num_additional_image_tokens": 1}


@dataclass(frozen=True)
class Shape:
    """One model shape the check builds: a hub config and processor settings, with where they come from."""

    key: str
    name: str
    source: str  # the hub repository whose files the numbers are
    family: str  # "qwen2_vl" | "llava_next": which tiny tokenizer and which TRL template
    config: Mapping[str, Any]
    images: Mapping[str, Any]  # image processor settings
    processor: Mapping[str, Any] = field(default_factory=dict)  # LLaVA-NeXT's processor settings
    max_length: int | None = None  # SFTSettings.max_length for its rows
    image_size: tuple[int, int] = (640, 480)  # width, height of the training images


# family -> (the kit's tiny model whose tokenizer is used, TRL's copy of the real template, tokens the template
# writes that the real tokenizer has as single tokens). Qwen2-VL-Instruct ships a template byte-identical to
# Qwen2.5-VL's (TRL's chat_templates/README.md); qwen2_5_vl.jinja is TRL's copy of it.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "qwen2_vl": ("tiny-qwen2vl-student", "qwen2_5_vl.jinja",
                 ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>")),
    "llava_next": ("tiny-llava-policy", "llava_next.jinja", ("<image>", "</s>")),
}

# Qwen2-VL's SFT uses the paper profile's finetune.max_length (2048). LLaVA-NeXT's rows are longer: a 640 x 480
# image alone is 2,340 tokens in AnyRes tiles, so its rows get 4096 (the profile's Critic and extra SFT set none,
# and Unsloth's default of 2048 would skip every row).
REAL_SHAPES: tuple[Shape, ...] = (
    Shape("qwen2vl-2b", "Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl", QWEN2VL_2B_CONFIG,
          QWEN2VL_IMAGES, max_length=2048),
    Shape("llava-next-7b", "llava-v1.6-mistral-7b-hf", "llava-hf/llava-v1.6-mistral-7b-hf", "llava_next",
          LLAVA_NEXT_7B_CONFIG, LLAVA_NEXT_IMAGES, LLAVA_NEXT_PROCESSOR, max_length=4096),
    Shape("qwen2vl-7b", "Qwen2-VL-7B-Instruct", "Qwen/Qwen2-VL-7B-Instruct", "qwen2_vl", QWEN2VL_7B_CONFIG,
          QWEN2VL_IMAGES, max_length=2048),
)


def _tiny(config: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """``config`` with some values replaced (nested dicts merged), for the tests' tiny shapes."""
    merged = dict(config)
    for key, value in changes.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and key.endswith("_config") else value
    return merged


# The same architectures at sizes a CPU trains in seconds (tests): real config files with small widths.
TINY_SHAPES: tuple[Shape, ...] = (
    Shape("tiny-qwen2vl", "tiny Qwen2-VL (test)", "Qwen/Qwen2-VL-2B-Instruct, shrunk", "qwen2_vl",
          _tiny(QWEN2VL_2B_CONFIG, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                num_key_value_heads=2, num_hidden_layers=1, max_window_layers=1, vocab_size=704,
                rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                vision_config={"depth": 1, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2, "hidden_size": 64}),
          {**QWEN2VL_IMAGES, "max_pixels": 112 * 112}, max_length=2048, image_size=(80, 60)),
    Shape("tiny-llava-next", "tiny LLaVA-NeXT (test)", "llava-hf/llava-v1.6-mistral-7b-hf, shrunk", "llava_next",
          _tiny(LLAVA_NEXT_7B_CONFIG, image_grid_pinpoints=[[56, 112], [112, 56], [112, 112], [168, 56], [56, 168]],
                text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 704},
                vision_config={"hidden_size": 32, "intermediate_size": 64, "image_size": 56,
                               "num_attention_heads": 2, "num_hidden_layers": 2, "projection_dim": 32},
                vocab_size=704),
          {**LLAVA_NEXT_IMAGES, "size": {"shortest_edge": 56}, "crop_size": {"height": 56, "width": 56},
           "image_grid_pinpoints": [[56, 112], [112, 56], [112, 112], [168, 56], [56, 168]]},
          LLAVA_NEXT_PROCESSOR, max_length=4096, image_size=(80, 60)),
)
SHAPES: dict[str, Shape] = {shape.key: shape for shape in REAL_SHAPES + TINY_SHAPES}


@dataclass(frozen=True)
class Plan:
    """What one check runs. The defaults are ``kit check --gpu``'s: every real shape, both backends, 1 untimed
    warm-up step and 3 timed steps of 2 rows each, the DPO step on the LLaVA-NeXT shape, 7 minutes of work."""

    shapes: tuple[str, ...] = tuple(shape.key for shape in REAL_SHAPES)
    backends: tuple[str, ...] = ("peft", "unsloth")
    device: str = "cuda"
    warmup_steps: int = 1
    measured_steps: int = 3
    batch_size: int = 2
    lora_r: int = 16  # the paper profile's finetune section: r 16, alpha 16, dropout 0, lr 2e-4
    lora_alpha: int = 16
    learning_rate: float = 2e-4
    dpo_shape: str | None = "llava-next-7b"
    budget_s: float = 420.0
    threads: int | None = None  # torch CPU threads in the workers (tests)
    command: str = "kit check --gpu"
    # The Python that runs the builds, the peft rows and the DPO step (default: this one). Unsloth's pins
    # (transformers 5.17) make kit.training.sft refuse backend peft, so the training environment cannot run those rows.
    peft_python: str | None = None

    def __post_init__(self) -> None:
        unknown = [key for key in (*self.shapes, *([self.dpo_shape] if self.dpo_shape else [])) if key not in SHAPES]
        if unknown:
            raise KitError(f"gpu check: unknown shape(s) {', '.join(unknown)}; known: {', '.join(SHAPES)}")
        if self.warmup_steps < 1 or self.measured_steps < 1:
            raise KitError("gpu check: warmup_steps and measured_steps must be >= 1 (the warm-up step is not timed)")


# ------------------------------------------------------------------------------------------ data (parent, no torch)
ROWS = 4  # two batches of two: every batch mixes a chain-of-thought row and a reflection row
COT_ANSWER = ("Step 1: Look at the grid and find every square.\nStep 2: Keep the red ones: there are {n} of them.\n"
              "Step 3: Nothing else in the picture is red.\nThe answer is {n}")
WRONG_ANSWER = "Step 1: Count the circles.\nStep 2: There are {n} circles.\nThe answer is {n}"
REFLECTION = "Step 2 is wrong: the question asks about red squares, not circles.\nThe answer is {n}"


def training_rows(images: list[str]) -> list[dict[str, Any]]:
    """Chain-of-thought and reflection rows in ``kit.casseat.trainsets`` format, one image each: CoT rows train their one
    answer, reflection rows their reflection only (``[1]``) or their CoT turn too (``[0, 1]``), as Cas-SEAT's do."""
    from kit.training.data import conversation

    rows = []
    for i, image in enumerate(images):
        question = f"How many red squares are in the picture? (item {i})"
        if i % 2 == 0:
            rows.append({"id": f"cot-{i}", "kind": "cot", "images": [image], "train_turns": [0],
                         "messages": conversation([question, COT_ANSWER.format(n=i + 2)], image)})
        else:
            turns = [question, WRONG_ANSWER.format(n=i + 5), "Please check your answer step by step.",
                     REFLECTION.format(n=i + 2)]
            rows.append({"id": f"reflection-{i}", "kind": "reflection", "images": [image],
                         "train_turns": [1] if i % 4 == 1 else [0, 1], "messages": conversation(turns, image)})
    return rows


def preference_pairs(images: list[str]) -> list[dict[str, Any]]:
    """Two ``kit.eaco.preference`` pairs for the DPO step."""
    return [{"id": f"pair-{i}", "image": image, "prompt": "Describe the image in detail.",
             "chosen": "The picture is a grid of coloured squares; the red ones are in the top row.",
             "rejected": "The picture shows a dog on a beach next to three red umbrellas."}
            for i, image in enumerate(images[:2])]


def prepare_images(folder: Path, size: tuple[int, int], count: int = 4) -> tuple[list[str], str]:
    """``count`` training images of ``size``: the tiny world's MathV360K images scaled up when the tiny world is
    built (``data/tiny`` is not in git, so a fresh GPU machine has none), else grids of coloured squares drawn
    here. Returns the paths and where they came from."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(TINY_WORLD_IMAGES.glob("*.png"), key=lambda p: (len(p.stem), p.stem))[:count] \
        if TINY_WORLD_IMAGES.is_dir() else []
    paths = []
    for i in range(count):
        if len(sources) == count:
            image = Image.open(sources[i]).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        else:
            image = Image.new("RGB", size, (245, 245, 245))
            draw = ImageDraw.Draw(image)
            cell = min(size) // 4
            for x in range(size[0] // cell):
                for y in range(size[1] // cell):
                    colour = (200, 30, 30) if (x + y + i) % 3 == 0 else (30, 30 + 40 * (x % 4), 200)
                    draw.rectangle([x * cell + 4, y * cell + 4, (x + 1) * cell - 4, (y + 1) * cell - 4], fill=colour)
        path = folder / f"{size[0]}x{size[1]}-{i}.png"
        image.save(path)
        paths.append(str(path))
    origin = (f"the tiny world's MathV360K images {', '.join(p.name for p in sources)} scaled to {size[0]}x{size[1]}"
              if len(sources) == count else f"grids of coloured squares drawn at {size[0]}x{size[1]} "
                                             "(the tiny world is not built on this machine)")
    return paths, origin


# ------------------------------------------------------------------------------------------ building (worker)
def _template(family: str) -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / FAMILIES[family][1]).read_text()


def _single_token(tokenizer: Any, text: str) -> bool:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 1


def shape_processor(shape: Shape) -> tuple[Any, list[str]]:
    """The processor for ``shape``: the real image settings, the tiny tokenizer of its family (with the single
    tokens the real template needs added if it lacks them; returned) and TRL's copy of the real template."""
    from transformers import AutoTokenizer

    from kit.llm import models

    tiny, _, needed = FAMILIES[shape.family]
    tokenizer = AutoTokenizer.from_pretrained(str(MODELS_DIR / tiny))
    if shape.family == "qwen2_vl":
        from transformers import Qwen2VLImageProcessorPil

        image_processor = Qwen2VLImageProcessorPil(
            size={"shortest_edge": shape.images["min_pixels"], "longest_edge": shape.images["max_pixels"]},
            patch_size=shape.images["patch_size"], merge_size=shape.images["merge_size"],
            temporal_patch_size=shape.images["temporal_patch_size"])
        if models._torchvision_available():
            # The GPU environment: the real processor class, which AutoProcessor (kit.llm.models' loader there)
            # reopens; its video part needs torchvision.
            from transformers import Qwen2VLProcessor, Qwen2VLVideoProcessor

            processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                         video_processor=Qwen2VLVideoProcessor())
        else:  # the CPU environment: kit.llm.models' image-only processor, as the tiny models use
            processor = models.qwen2vl_processor_without_video()(image_processor=image_processor,
                                                                     tokenizer=tokenizer)
    else:
        from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

        processor = LlavaNextProcessor(image_processor=LlavaNextImageProcessorPil(**shape.images), tokenizer=tokenizer,
                                       **shape.processor)
    added = [token for token in needed if not _single_token(tokenizer, token)]
    if added:
        tokenizer.add_tokens(added, special_tokens=True)
    if shape.family == "llava_next":
        tokenizer.eos_token = "</s>"  # Mistral's end of turn, which the real template writes after each answer
    template = _template(shape.family)
    processor.chat_template = template
    tokenizer.chat_template = template
    return processor, added


def shape_config(shape: Shape, tokenizer: Any) -> Any:
    """The transformers config of ``shape`` with the token ids the model looks for (image, vision start/end) set
    to the tiny tokenizer's; every width, depth and vocabulary size stays the hub's."""
    from transformers import AutoConfig

    data = json.loads(json.dumps(shape.config))
    ids = tokenizer.convert_tokens_to_ids
    if shape.family == "qwen2_vl":
        data.update(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                    vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
                    bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"))
        vocab = data["vocab_size"]
    else:
        data["image_token_index"] = ids("<image>")
        data["text_config"] = {**data["text_config"], "bos_token_id": ids("<|endoftext|>"), "eos_token_id": ids("</s>"),
                               "pad_token_id": tokenizer.pad_token_id}
        vocab = data["text_config"]["vocab_size"]
    if len(tokenizer) > vocab:
        raise KitError(f"gpu check: the tiny {shape.family} tokenizer has {len(tokenizer)} tokens, more than "
                       f"{shape.name}'s vocabulary of {vocab}")
    data.pop("architectures", None)
    return AutoConfig.for_model(**data)


def build_model(shape: Shape, folder: Path, device: str) -> dict[str, Any]:
    """Build ``shape`` with random weights (bf16 on CUDA) and save it to ``folder`` like any model folder."""
    import torch
    from transformers import AutoModelForImageTextToText

    from kit.llm import models

    started = time.perf_counter()
    processor, added = shape_processor(shape)
    config = shape_config(shape, processor.tokenizer)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: a 7B model's random init on the CPU takes minutes
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    parameters = sum(p.numel() for p in model.parameters())
    init_device = str(next(model.parameters()).device)
    folder.parent.mkdir(parents=True, exist_ok=True)
    needed_gb = parameters * dtype.itemsize / 1e9 + 1
    free_gb = shutil.disk_usage(folder.parent).free / 1e9
    if free_gb < needed_gb:
        raise KitError(f"{free_gb:.1f} GB free in {folder.parent}, {shape.name} needs {needed_gb:.1f} GB: pass "
                       "--gpu-workdir on a larger disk")
    models.save(model, processor, folder, manifest={
        "gpucheck_shape": shape.key, "config_source": shape.source, "weights": "random (gpu check)",
        "tokenizer": f"data/models/{FAMILIES[shape.family][0]}", "template": f"trl/chat_templates/{FAMILIES[shape.family][1]}"})
    del model
    _free(device)
    reopened = models.load_processor(str(folder), models.QWEN2VL if shape.family == "qwen2_vl" else models.LLAVA)
    missing = [t for t in FAMILIES[shape.family][2] if not _single_token(reopened.tokenizer, t)]
    return {"folder": str(folder), "parameters": parameters, "dtype": str(dtype).removeprefix("torch."),
            "init_device": init_device,
            "added_tokens": added, "tokenizer_size": len(reopened.tokenizer),
            "template_ok": reopened.chat_template == _template(shape.family) and not missing,
            "missing_tokens": missing, "seconds": round(time.perf_counter() - started, 1)}


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _allocated_mb(device: str) -> float:
    import torch

    return round(torch.cuda.memory_allocated() / 2**20, 1) if device.startswith("cuda") else 0.0


# ------------------------------------------------------------------------------------------ measuring (worker)
END_MARKERS = ("<|im_end|>", "</s>")


def _normal(text: str) -> str:
    for marker in END_MARKERS:
        text = text.replace(marker, "")
    return text.strip()


def _turn_texts(example: Mapping[str, Any]) -> list[str]:
    turns = [m for m in example["messages"] if m["role"] == "assistant"]
    return ["".join(part.get("text") or "" for part in turn["content"] if isinstance(part, Mapping))
            if not isinstance(turn["content"], str) else turn["content"] for turn in turns]


def check_labels(tokenizer: Any, input_ids: Any, labels: Any, attention_mask: Any,
                 examples: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per row of one collated batch: labelled and real (unpadded) tokens, and whether the labels are exactly the
    row's ``train_turns``: each contiguous labelled span must decode to one of those assistant turns (its
    end-of-turn marker and surrounding whitespace aside), in order, and nothing else may be labelled."""
    rows = []
    for row, example in enumerate(examples):
        label_row = labels[row].tolist()
        spans, current = [], []
        for label in label_row:
            if label != -100:
                current.append(label)
            elif current:
                spans.append(current)
                current = []
        if current:
            spans.append(current)
        texts = [tokenizer.decode(span, skip_special_tokens=False) for span in spans]
        turns = _turn_texts(example)
        keep = example.get("train_turns")
        expected = [turns[i] for i in (range(len(turns)) if keep is None else keep) if i < len(turns)]
        problem = ""
        if not spans:
            problem = "no labelled token"
        elif [_normal(t) for t in texts] != [_normal(t) for t in expected]:
            problem = f"labelled {[_normal(t)[:60] for t in texts]}, expected {[_normal(t)[:60] for t in expected]}"
        elif any(int(input_ids[row][i]) != label for i, label in enumerate(label_row) if label != -100):
            problem = "labels differ from the input ids they label"
        rows.append({"id": str(example.get("id")), "labelled": sum(len(s) for s in spans),
                     "tokens": int(attention_mask[row].sum()) if attention_mask is not None else len(label_row),
                     "spans": len(spans), "ok": not problem, "problem": problem})
    return rows


class _Probe:
    """What one training run did, seen from inside the trainer: the time at the end of each optimizer step (after
    a CUDA sync), the logged losses, the dtypes of the weights and of the first decoder layer's output, and every
    batch the kit's collators built, with its mask check."""

    def __init__(self, device: str, tokenizer: Any) -> None:
        self.cuda = device.startswith("cuda")
        self.tokenizer = tokenizer
        self.step_times: list[float] = []
        self.losses: list[float] = []
        self.raw: list[tuple[Any, Any, Any, list[dict[str, Any]]]] = []  # the collated batches, checked afterwards
        self.dtypes: dict[str, Any] = {}
        self.began: float | None = None
        self.bf16: bool | None = None
        self._hook: Any = None

    def callback(self) -> Any:
        import torch
        from transformers import TrainerCallback

        probe = self

        class ProbeCallback(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
                probe.bf16 = bool(getattr(args, "bf16", False))
                probe.began = time.perf_counter()
                if model is not None:
                    probe._watch(model)

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if probe.cuda:
                    torch.cuda.synchronize()
                probe.step_times.append(time.perf_counter())

            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
                if logs and "loss" in logs:
                    probe.losses.append(float(logs["loss"]))

            def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if probe._hook is not None:
                    probe._hook.remove()
                    probe._hook = None

        return ProbeCallback()

    def _watch(self, model: Any) -> None:
        import re

        from kit.training.common import VISION_PARTS

        frozen = {str(p.dtype).removeprefix("torch.") for p in model.parameters() if not p.requires_grad}
        trainable = {str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad}
        self.dtypes.update(frozen=sorted(frozen), trainable=sorted(trainable))
        for name, module in model.named_modules():
            if re.search(r"(^|\.)layers\.0$", name) and not any(f".{part}." in f".{name}." for part in VISION_PARTS):
                def record(module: Any, inputs: Any, output: Any) -> None:
                    tensor = output[0] if isinstance(output, tuple | list) else output
                    if hasattr(tensor, "dtype") and "compute" not in self.dtypes:
                        self.dtypes["compute"] = str(tensor.dtype).removeprefix("torch.")

                self._hook = module.register_forward_hook(record)
                self.dtypes["compute_module"] = name
                break

    def wrap_collator(self, original: Callable[..., Any]) -> Callable[..., Any]:
        probe = self

        def __call__(collator: Any, examples: list[dict]) -> Any:
            batch = original(collator, examples)
            # Copies only: the check runs after training, outside the timed steps.
            mask = batch.get("attention_mask")
            probe.raw.append((batch["input_ids"].detach().cpu().clone(), batch["labels"].detach().cpu().clone(),
                              None if mask is None else mask.detach().cpu().clone(),
                              [{k: e.get(k) for k in ("id", "messages", "train_turns")} for e in examples]))
            return batch

        return __call__

    @property
    def batches(self) -> list[dict[str, Any]]:
        """Every collated batch, each row's labels checked (``check_labels``)."""
        return [{"rows": check_labels(self.tokenizer, ids, labels, mask, examples), "shape": list(ids.shape)}
                for ids, labels, mask, examples in self.raw]


@contextlib.contextmanager
def probing(device: str, tokenizer: Any) -> Iterator[_Probe]:
    """Attach a ``_Probe`` to every trainer built and every batch the kit's collators build inside the block;
    everything is put back afterwards. ``kit.training.sft.sft`` takes no callbacks, and the check measures it as is."""
    import transformers.trainer as hf_trainer

    from kit.training import sft

    probe = _Probe(device, tokenizer)
    callback = probe.callback()
    hf_trainer.DEFAULT_CALLBACKS.append(callback)
    originals = {cls: cls.__call__ for cls in (sft.TurnMaskingCollator, sft.UnslothTurnCollator)}
    for cls, original in originals.items():
        cls.__call__ = probe.wrap_collator(original)
    try:
        yield probe
    finally:
        hf_trainer.DEFAULT_CALLBACKS.remove(callback)
        for cls, original in originals.items():
            cls.__call__ = original


def _speed(probe: _Probe, batches: list[dict[str, Any]], warmup: int, batch_size: int) -> dict[str, Any]:
    """Steps/s, samples/s and tokens/s over the steps after ``warmup`` (timed from the end of the last warm-up
    step to the end of the last step, so collation, forward, backward and the optimizer are all inside)."""
    times = probe.step_times
    if len(times) <= warmup:
        return {}
    measured = len(times) - warmup
    seconds = times[-1] - times[warmup - 1]
    tokens = sum(r["tokens"] for b in batches[warmup:warmup + measured] for r in b["rows"])
    return {"measured_steps": measured, "measured_seconds": round(seconds, 3),
            "steps_per_s": round(measured / seconds, 3), "samples_per_s": round(measured * batch_size / seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1) if tokens else None}


def _expected_dtype(device: str) -> str:
    return "bfloat16" if device.startswith("cuda") else "float32"


def sft_unit(shape: Shape, backend: str, plan: Plan, model_folder: str, rows_path: str, out: Path) -> dict[str, Any]:
    """``kit.training.sft.sft`` with ``backend`` on the check's rows, measured; the adapter lands in ``out``."""
    from transformers import AutoTokenizer

    from kit.training.sft import SFTSettings, sft

    settings = SFTSettings(backend=backend, max_steps=plan.warmup_steps + plan.measured_steps,
                           batch_size=plan.batch_size, lora_r=plan.lora_r, lora_alpha=plan.lora_alpha,
                           lora_dropout=0.0, learning_rate=plan.learning_rate, max_length=shape.max_length,
                           logging_steps=1, seed=0)
    before = _allocated_mb(plan.device)
    # The saved tokenizer decodes the labels (the same file both backends' processors load).
    with probing(plan.device, AutoTokenizer.from_pretrained(model_folder)) as probe:
        result = sft(model_folder, rows_path, out, settings, log=lambda message: print(f"[gpucheck] {message}",
                                                                                     flush=True))
    batches = probe.batches
    row: dict[str, Any] = {
        "backend": result.backend, "steps": result.steps, "examples": result.examples,
        "skipped_too_long": result.skipped_too_long, "train_loss": result.train_loss,
        "peak_memory_mb": result.peak_memory_mb, "allocated_before_mb": before, "adapter": str(out),
        "losses": [round(x, 4) for x in probe.losses], "dtypes": probe.dtypes, "bf16_autocast": probe.bf16,
        "batches": batches, **_speed(probe, batches, plan.warmup_steps, plan.batch_size),
    }
    problems = []
    if not probe.losses or not all(math.isfinite(x) for x in probe.losses):
        problems.append(f"loss not finite: {probe.losses}")
    if not batches:
        problems.append("no batch went through the kit's collator")
    problems += [f"batch {i + 1} row {r['id']}: {r['problem']}" for i, b in enumerate(batches)
                 for r in b["rows"] if not r["ok"]]
    expected = _expected_dtype(plan.device)
    if probe.dtypes.get("frozen") != [expected]:
        problems.append(f"frozen weights are {probe.dtypes.get('frozen')}, not {expected}")
    if probe.dtypes.get("compute") != expected:
        problems.append(f"the first decoder layer computes in {probe.dtypes.get('compute')}, not {expected}")
    if "steps_per_s" not in row:
        problems.append(f"the trainer reported {len(probe.step_times)} step end(s) to the probe; "
                        f"{plan.warmup_steps + 1} are needed to time a step after the warm-up")
    if before > 1024:  # CUDA memory an earlier unit left behind would be counted in this row's peak
        problems.append(f"{before:.0f} MB were still allocated before the run; its peak memory includes them")
    row["problems"] = problems
    row["status"] = "ok" if not problems else "failed"
    del result
    _free(plan.device)
    return row


def dpo_unit(shape: Shape, plan: Plan, model_folder: str, pairs_path: str, out: Path) -> dict[str, Any]:
    """One optimizer step of ``kit.training.dpo.dpo`` (the draft's loss, LoRA r 128 / alpha 256) over the two pairs:
    batch 1 with accumulation 2, as the paper profile's ``dpo`` section runs (batch 1 per device)."""
    from kit.training.dpo import DPOSettings, dpo

    settings = DPOSettings(max_steps=1, batch_size=1, gradient_accumulation=2, warmup=0.0, logging_steps=1)
    with probing(plan.device, None) as probe:  # DPO batches go through TRL's collator, not the kit's
        result = dpo(model_folder, pairs_path, out, settings,
                     log=lambda message: print(f"[gpucheck] {message}", flush=True))
    step = probe.step_times[0] - probe.began if probe.step_times and probe.began else None
    row = {"loss_kind": result.loss, "pairs": result.pairs, "steps": result.steps, "train_loss": result.train_loss,
           "step_seconds": None if step is None else round(step, 3), "train_seconds": result.seconds,
           "peak_memory_mb": result.peak_memory_mb, "rewards_chosen": result.rewards_chosen,
           "rewards_rejected": result.rewards_rejected, "lora_r": settings.lora_r, "dtypes": probe.dtypes,
           "adapter": str(out)}
    problems = []
    if result.steps != 1:
        problems.append(f"{result.steps} optimizer steps instead of 1")
    if not math.isfinite(result.train_loss):
        problems.append(f"loss not finite: {result.train_loss}")
    expected = _expected_dtype(plan.device)
    if probe.dtypes.get("frozen") != [expected]:
        problems.append(f"frozen weights are {probe.dtypes.get('frozen')}, not {expected}")
    if probe.dtypes.get("compute") != expected:
        problems.append(f"the first decoder layer computes in {probe.dtypes.get('compute')}, not {expected}")
    if step is None:
        problems.append("the trainer reported no step end to the probe")
    row["problems"] = problems
    row["status"] = "ok" if not problems else "failed"
    _free(plan.device)
    return row


def reload_unit(shape: Shape, plan: Plan, model_folder: str, adapters: Mapping[str, str],
                rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each adapter in ``adapters`` (label -> folder) onto the base with plain ``peft.PeftModel``: every tensor of
    ``adapter_model.safetensors`` must be in the model unchanged, and one batch must give the logits that
    ``kit.llm.models.load(adapter)`` gives."""
    import torch
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    from kit.llm import models

    dtype = torch.bfloat16 if plan.device.startswith("cuda") else torch.float32
    base = AutoModelForImageTextToText.from_pretrained(model_folder, dtype=dtype, use_safetensors=True)
    base.to(plan.device).eval()
    plain: Any = None
    results: dict[str, dict[str, Any]] = {}
    for number, (label, folder) in enumerate(adapters.items()):
        name = f"adapter{number}"
        try:
            if plain is None:
                plain = PeftModel.from_pretrained(base, folder, adapter_name=name)
            else:
                plain.load_adapter(folder, adapter_name=name)
            plain.eval()
            saved = load_file(str(Path(folder) / "adapter_model.safetensors"))
            loaded = get_peft_model_state_dict(plain, adapter_name=name)
            same = [key for key, tensor in saved.items()
                    if key in loaded and torch.equal(tensor.to(loaded[key].dtype).cpu(), loaded[key].detach().cpu())]
            results[label] = {"tensors_saved": len(saved), "tensors_loaded_unchanged": len(same),
                              "lora_b_nonzero": any(float(t.abs().max()) > 0 for k, t in saved.items() if "lora_B" in k)}
        except Exception as err:  # a folder plain PEFT cannot open is the finding, not a crash of the check
            results[label] = {"status": "failed", "problems": [f"PeftModel could not load it: {_short(err)}"]}
    for number, (label, folder) in enumerate(adapters.items()):
        if results[label].get("status") == "failed":
            continue
        row = results[label]
        problems = []
        try:
            kit_loaded = models.load(folder, device=plan.device, dtype=str(dtype).removeprefix("torch."))
            # The processor alone renders the batch: no loss mask is needed here, and TRL's need transformers 5.18.
            text = kit_loaded.processor.apply_chat_template(rows[0]["messages"], tokenize=False)
            images = [Image.open(path).convert("RGB") for path in rows[0]["images"]]
            batch = kit_loaded.processor(text=[text], images=[images], return_tensors="pt")
            inputs = {k: (v.to(plan.device, dtype) if v.is_floating_point() else v.to(plan.device))
                      for k, v in batch.items() if hasattr(v, "to")}
            with torch.no_grad():
                theirs = kit_loaded.model(**inputs).logits.float()
                plain.set_adapter(f"adapter{number}")
                ours = plain(**inputs).logits.float()
                with plain.disable_adapter():
                    bare = plain(**inputs).logits.float()
            scale = float(ours.abs().max())
            row.update(logits_max_diff=float((theirs - ours).abs().max()), logits_scale=round(scale, 3),
                       adapter_effect=float((ours - bare).abs().max()), sequence=int(inputs["input_ids"].shape[1]))
            del kit_loaded, theirs, ours, bare
            _free(plan.device)
        except Exception as err:
            problems.append(f"comparing with kit.llm.models.load failed: {_short(err)}")
        if row["tensors_loaded_unchanged"] != row["tensors_saved"]:
            problems.append(f"{row['tensors_saved'] - row['tensors_loaded_unchanged']} of {row['tensors_saved']} "
                            "saved tensors are not in the model as saved")
        if "logits_max_diff" in row and row["logits_max_diff"] > 1e-3 * max(1.0, row["logits_scale"]):
            problems.append(f"logits differ from kit.llm.models.load's by {row['logits_max_diff']:.3g}")
        row["problems"] = problems
        row["status"] = "ok" if not problems else "failed"
    del plain, base
    _free(plan.device)
    return results


def _short(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


# ------------------------------------------------------------------------------------------ workers
def _worker() -> None:
    """``python -c 'from kit.tools.gpucheck import _worker; _worker()' STAGE SPEC OUT``: one process of the check.

    ``peft``: build every shape, train its peft row, run the DPO step, and, when no Unsloth process follows
    (``spec["reload_here"]``), reload the adapters too. ``unsloth``: the Unsloth rows, Unsloth imported first.
    ``reload``: the reload checks of every adapter the other two wrote."""
    stage, spec_path, out_path = sys.argv[1:4]
    if stage == "unsloth":
        try:
            import unsloth  # noqa: F401 - before transformers, so that it patches it as it does in training
        except Exception as err:  # the rows say so; the other stages go on
            _write_json(Path(out_path), {"unsloth_import_error": _short(err)})
            return
    spec = json.loads(Path(spec_path).read_text())
    plan = Plan(**{**spec["plan"], "shapes": tuple(spec["plan"]["shapes"]),
                   "backends": tuple(spec["plan"]["backends"])})
    import torch

    if plan.threads:
        torch.set_num_threads(plan.threads)
    stage_run = _Stage(stage, spec, plan, Path(out_path))
    stage_run.results["process"] = {"python": sys.executable, "versions": _versions()}
    if stage == "peft":
        stage_run.build_and_train()
        if spec.get("reload_here"):
            stage_run.reload()
    elif stage == "unsloth":
        stage_run.unsloth()
    elif stage == "reload":
        stage_run.reload()
    stage_run.save()


class _Stage:
    """The units of one worker process, each started only before its deadline, each saved when done (so a
    process stopped at its limit still leaves what it measured)."""

    def __init__(self, stage: str, spec: dict[str, Any], plan: Plan, out: Path) -> None:
        self.stage, self.spec, self.plan, self.out = stage, spec, plan, out
        self.work = Path(spec["workdir"])
        self.results: dict[str, Any] = {"models": {}, "sft": {}, "dpo": {}, "reload": {}}

    def save(self) -> None:
        _write_json(self.out, self.results)

    def attempt(self, section: str, key: str, deadline: float, work: Callable[[], dict[str, Any]]) -> None:
        if time.time() >= deadline:
            self.results[section][key] = {"status": "not run", "problems": [
                f"the check's time budget ({self.plan.budget_s:.0f} s of work) was spent before it could start"]}
        else:
            print(f"[gpucheck] {self.stage}: {section} {key}", flush=True)
            try:
                self.results[section][key] = work()
            except Exception as err:  # one unit's failure is a row of the report, not the end of the check
                self.results[section][key] = {"status": "failed", "problems": [_short(err)]}
                _free(self.plan.device)
        self.save()

    def build_and_train(self) -> None:
        import torch

        plan, deadline = self.plan, self.spec["deadlines"]["peft"]
        if plan.device.startswith("cuda"):
            self.results["device"] = {"name": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
                                      "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)}
        else:
            self.results["device"] = {"name": f"CPU, {plan.threads or torch.get_num_threads()} thread(s)"}
        refused = _peft_refusal() if "peft" in plan.backends else None
        if refused:
            self.results["limits"] = [refused]
        for key in plan.shapes:
            shape = SHAPES[key]
            self.attempt("models", key, deadline, lambda shape=shape, key=key: build_model(
                shape, self.work / "models" / key, plan.device))
            folder = self.results["models"][key].get("folder")
            if folder and refused:
                self.results["sft"][f"{key}/peft"] = {"status": "not run: kit.training.sft refuses backend peft in this "
                                                                "environment (below)", "problems": []}
            elif folder and "peft" in plan.backends:
                self.attempt("sft", f"{key}/peft", deadline, lambda shape=shape, key=key, folder=folder: sft_unit(
                    shape, "peft", plan, folder, self.spec["rows"][key], self.work / "adapters" / f"{key}-peft"))
            if folder and key == plan.dpo_shape:
                self.attempt("dpo", key, deadline, lambda shape=shape, key=key, folder=folder: dpo_unit(
                    shape, plan, folder, self.spec["pairs"][key], self.work / "adapters" / f"{key}-dpo"))

    def unsloth(self) -> None:
        for key, folder in self.spec["models"].items():
            self.attempt("sft", f"{key}/unsloth", self.spec["deadlines"]["unsloth"],
                         lambda key=key, folder=folder: sft_unit(SHAPES[key], "unsloth", self.plan, folder,
                                                                 self.spec["rows"][key],
                                                                 self.work / "adapters" / f"{key}-unsloth"))

    def reload(self) -> None:
        from kit.training.data import read_set

        models = self.spec.get("models") or {k: m["folder"] for k, m in self.results["models"].items()
                                             if m.get("folder")}
        for key, folder in models.items():
            adapters = (self.spec.get("adapters") or {}).get(key) or {
                label: row["adapter"] for label, row in _adapters(self.results, key).items()}
            if adapters:
                self.attempt("reload", key, self.spec["deadlines"]["reload"],
                             lambda key=key, folder=folder, adapters=adapters: {
                                 "status": "ok", "adapters": reload_unit(SHAPES[key], self.plan, folder, adapters,
                                                                         read_set(self.spec["rows"][key]))})


def _peft_refusal() -> str | None:
    """Why ``kit.training.sft`` refuses backend peft in this process's environment (its own check), or ``None``."""
    from kit.training.sft import check_peft_masks

    try:
        check_peft_masks()
    except KitError as err:
        return f"{sys.executable}: {err} (to measure the peft rows on this machine, pass --gpu-peft-python with a " \
               "Python whose environment has CUDA torch and a transformers kit.training.sft accepts for peft)"
    return None


def _write_json(path: Path, data: Any) -> None:
    from kit.core.artifacts import atomic_write_json

    atomic_write_json(path, data)


def _run_worker(stage: str, spec: dict[str, Any], workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Run one stage in a fresh Python process (offline: the GPU machine has no network) and return what it
    wrote; a process that dies or is stopped at its deadline leaves its finished units and an ``exit`` note."""
    spec_path, out_path, log_path = (workdir / f"{stage}-spec.json", workdir / f"{stage}-results.json",
                                     workdir / f"{stage}.log")
    _write_json(spec_path, spec)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])}
    python = (spec["plan"].get("peft_python") if stage == "peft" else None) or sys.executable
    command = [python, "-c", "from kit.tools.gpucheck import _worker; _worker()", stage, str(spec_path), str(out_path)]
    last = spec["deadlines"]["reload" if stage == "reload" or spec.get("reload_here") else stage]
    timeout = max(1.0, last + STAGE_GRACE_S - time.time())
    stopped = False
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                   cwd=str(REPO_DIR))

        def stop() -> None:
            nonlocal stopped
            stopped = True
            process.kill()

        timer = threading.Timer(timeout, stop)
        timer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log_file.write(line)
                if line.startswith("[gpucheck]"):
                    log(line.rstrip())
            code = process.wait()
        finally:
            timer.cancel()
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    if code != 0:
        tail = log_path.read_text().strip().splitlines()[-12:]
        results["exit"] = ("stopped at the time limit" if stopped else f"exited with code {code}") + \
            (": " + " | ".join(tail)[-1500:] if tail else "")
    return results


# ------------------------------------------------------------------------------------------ the check (parent)
def _versions() -> dict[str, str]:
    from kit.core.envcheck import installed_version

    return {name: installed_version(name) for name in REPORTED}


def unsloth_state(device: str) -> str | None:
    """Why the Unsloth rows cannot run here, or ``None`` when they can."""
    from kit.core.envcheck import is_installed

    if not is_installed("unsloth"):
        return "unsloth not installed"
    if not device.startswith("cuda"):
        return "unsloth needs CUDA; this run is on the CPU"
    return None


def run_check(output: str | Path | None = DOC, plan: Plan | None = None, *, workdir: str | Path | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the check (``plan``: shapes, backends, device, steps), write its measured section into ``output``
    (``None``: write nothing) and return every result. Nothing here is estimated: a row that did not run says
    why."""
    plan = plan or Plan()
    started = time.time()
    started_at = datetime.now(UTC)
    deadlines = {stage: started + plan.budget_s * share for stage, share in STAGE_SHARES.items()}
    results: dict[str, Any] = {"plan": asdict(plan), "started": started_at.isoformat(timespec="seconds"),
                               "versions": _versions(), "python": sys.executable, "models": {}, "sft": {},
                               "dpo": {}, "reload": {}, "notes": [], "limits": [], "processes": {}}
    with tempfile.TemporaryDirectory(prefix="kit-gpucheck-", dir=workdir) as tmp:
        work = Path(tmp)
        rows, pairs, origins = {}, {}, {}
        for key in plan.shapes:
            shape = SHAPES[key]
            images, origins[key] = prepare_images(work / "images", shape.image_size, ROWS)
            rows[key] = str(_write_lines(work / f"rows-{key}.jsonl", training_rows(images)))
            pairs[key] = str(_write_lines(work / f"pairs-{key}.jsonl", preference_pairs(images)))
        results["data"] = {"rows": ROWS, "images": origins}
        spec = {"plan": asdict(plan), "workdir": str(work), "rows": rows, "pairs": pairs, "deadlines": deadlines}
        # Unsloth patches transformers on import, so its rows get a process of their own and the reloads another
        # that never imports it; without an Unsloth process the reloads run in the peft one (a start saved).
        why_not = unsloth_state(plan.device) if "unsloth" in plan.backends else None
        unsloth_runs = "unsloth" in plan.backends and why_not is None
        spec["reload_here"] = not unsloth_runs
        log(f"[gpucheck] building {', '.join(plan.shapes)} on {plan.device}: peft rows"
            + (", the DPO step" if plan.dpo_shape else "") + ("" if unsloth_runs else ", adapter reloads"))
        _merge(results, _run_worker("peft", spec, work, log), "peft")
        spec["models"] = {key: m["folder"] for key, m in results["models"].items() if m.get("folder")}
        if unsloth_runs:
            log("[gpucheck] unsloth rows (a process of their own: unsloth patches transformers on import)")
            found = _run_worker("unsloth", spec, work, log)
            if "unsloth_import_error" in found:
                why_not = f"unsloth failed to import: {found['unsloth_import_error']}"
            else:
                _merge(results, found, "unsloth")
            spec["adapters"] = {key: {label: row["adapter"] for label, row in _adapters(results, key).items()}
                                for key in spec["models"]}
            if any(spec["adapters"].values()):
                log("[gpucheck] reloading the adapters with plain PeftModel (a process that never imports unsloth)")
                _merge(results, _run_worker("reload", spec, work, log), "reload")
        if why_not is not None:
            for key in plan.shapes:
                results["sft"][f"{key}/unsloth"] = {"status": why_not, "problems": []}
        results["seconds"] = round(time.time() - started, 1)
    if output is not None:
        write_doc(output, render(results))
    log(render_tables(results))
    return results


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    from kit.core.artifacts import atomic_write_text

    return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _adapters(results: Mapping[str, Any], key: str) -> dict[str, dict[str, Any]]:
    """The adapters of shape ``key`` that training wrote: ``peft``, ``unsloth`` and ``dpo``."""
    found = {backend: results["sft"][f"{key}/{backend}"] for backend in ("peft", "unsloth")
             if results["sft"].get(f"{key}/{backend}", {}).get("adapter")}
    if results["dpo"].get(key, {}).get("adapter"):
        found["dpo"] = results["dpo"][key]
    return {label: row for label, row in found.items() if Path(row["adapter"], "adapter_config.json").is_file()}


def _merge(results: dict[str, Any], found: Mapping[str, Any], stage: str) -> None:
    for section in ("models", "sft", "dpo", "reload"):
        results[section].update(found.get(section, {}))
    if "process" in found:
        results.setdefault("processes", {})[stage] = found["process"]
    results.setdefault("limits", []).extend(found.get("limits", []))
    if "device" in found:
        results["device"] = found["device"]
    if "exit" in found:
        results["notes"].append(f"the {stage} process {found['exit']}")


def failures(results: Mapping[str, Any]) -> list[str]:
    """Every problem the check found, one line each (empty when all that ran passed)."""
    lines = [f"model {key}: {m['problems'][0]}" for key, m in results["models"].items() if m.get("problems")]
    lines += [f"model {key}: the real template or its tokens did not survive saving"
              for key, m in results["models"].items() if m.get("folder") and not m.get("template_ok")]
    for section in ("sft", "dpo"):
        lines += [f"{section} {key}: {p}" for key, row in results[section].items() for p in row.get("problems", [])]
    for key, row in results["reload"].items():
        lines += [f"reload {key}: {p}" for p in row.get("problems", [])]
        lines += [f"reload {key}/{label}: {p}" for label, a in row.get("adapters", {}).items()
                  for p in a.get("problems", [])]
    lines += [f"note: {n}" for n in results.get("notes", [])]
    return lines


# ------------------------------------------------------------------------------------------ the report
ADAPTER_ORDER = ("peft", "unsloth", "dpo")


def _count(parameters: int | None) -> str:
    if not parameters:
        return "—"
    return f"{parameters / 1e9:.2f} B" if parameters >= 1e8 else f"{parameters / 1e6:.2f} M"


def _gib(mb: float | None) -> str:
    return "—" if mb is None else f"{mb / 1024:.2f} GiB"


def _num(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _memory_label(results: Mapping[str, Any]) -> str:
    return ("peak CUDA memory (max allocated)" if str(results["plan"]["device"]).startswith("cuda")
            else "peak memory (process RSS)")


def _missing(built: Mapping[str, Any]) -> str:
    """The result cell of a row its process never wrote."""
    if built.get("folder"):
        return "not finished: its process was stopped or died (see the problems below)"
    return "not run: " + ("; ".join(built.get("problems", [])) or "its model was not built")


def render_tables(results: Mapping[str, Any]) -> str:
    """The measured tables in Markdown: SFT per shape and backend, adapter reloads, the DPO step, problems."""
    out = [f"### SFT: peft and Unsloth on the same rows ({results['data']['rows']} rows, batch "
           f"{results['plan']['batch_size']}, {results['plan']['warmup_steps']} untimed warm-up step(s) + "
           f"{results['plan']['measured_steps']} timed)", "",
           f"| shape | parameters | backend | result | steps/s | samples/s | tokens/s | {_memory_label(results)} | "
           "labelled / total tokens per row, every batch | frozen · LoRA · compute dtype | loss, step by step |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in results["plan"]["shapes"]:
        shape, built = SHAPES[key], results["models"].get(key, {})
        params = _count(built.get("parameters"))
        for backend in results["plan"]["backends"]:
            row = results["sft"].get(f"{key}/{backend}") or {"status": _missing(built)}
            masks = "; ".join(", ".join(f"{r['labelled']}/{r['tokens']}" for r in b["rows"])
                              for b in row.get("batches", [])) or "—"
            dtypes = row.get("dtypes") or {}
            dtype = (" · ".join("/".join(dtypes.get(k) or ["—"]) if isinstance(dtypes.get(k), list)
                                else str(dtypes.get(k, "—")) for k in ("frozen", "trainable", "compute"))
                     if dtypes else "—")
            status = row.get("status", "—")
            if status == "not run" and row.get("problems"):
                status = f"not run: {row['problems'][0]}"
            if status == "failed":
                status = f"failed ({len(row.get('problems', []))} problem(s), below)"
            losses = " → ".join(f"{x:.3f}" for x in row.get("losses", [])) or "—"
            out.append(f"| {shape.name} | {params} | {backend} | {status} | {_num(row.get('steps_per_s'), 3)} | "
                       f"{_num(row.get('samples_per_s'))} | {_num(row.get('tokens_per_s'), 0)} | "
                       f"{_gib(row.get('peak_memory_mb'))} | {masks} | {dtype} | {losses} |")
    out += ["", "### Adapters reloaded with plain `peft.PeftModel` (a process that never imports Unsloth)", "",
            "| shape | adapter | result | saved tensors in the model unchanged | LoRA B moved off zero | "
            "max \\|logit Δ\\| against `kit.llm.models.load` | max \\|logit Δ\\| against the base (adapter's effect) |",
            "|---|---|---|---|---|---|---|"]
    if not results["reload"]:
        out.append("| — | — | no adapter was written, so none was reloaded | — | — | — | — |")
    for key in results["plan"]["shapes"]:
        reload = results["reload"].get(key)
        if reload is None:
            continue
        if "adapters" not in reload:
            out.append(f"| {SHAPES[key].name} | — | {reload.get('status')} | — | — | — | — |")
        adapters = reload.get("adapters", {})
        for label, row in sorted(adapters.items(), key=lambda item: ADAPTER_ORDER.index(item[0])):
            tensors = (f"{row['tensors_loaded_unchanged']}/{row['tensors_saved']}" if "tensors_saved" in row else "—")
            moved = {True: "yes", False: "no"}.get(row.get("lora_b_nonzero"), "—")
            out.append(f"| {SHAPES[key].name} | {label} | {row.get('status')} | {tensors} | {moved} | "
                       f"{_num(row.get('logits_max_diff'), 6)} | {_num(row.get('adapter_effect'), 6)} |")
    if results["plan"].get("dpo_shape"):
        key = results["plan"]["dpo_shape"]
        row = results["dpo"].get(key) or {"status": _missing(results["models"].get(key, {}))}
        if row.get("status") == "not run" and row.get("problems"):
            row = {**row, "status": f"not run: {row['problems'][0]}"}
        dtypes = row.get("dtypes") or {}
        rewards = (" / ".join(_num(v[-1], 4) if v else "—" for v in (row["rewards_chosen"], row["rewards_rejected"]))
                   if "rewards_chosen" in row else "—")
        dtype = " · ".join("/".join(dtypes.get(k) or ["—"]) for k in ("frozen", "trainable")) + \
            f" · {dtypes.get('compute', '—')}"
        out += ["", "### One DPO step (`kit.training.dpo`, the draft's loss, LoRA r 128 / alpha 256, 2 pairs: batch 1 × "
                "accumulation 2)", "",
                f"| shape | result | optimizer steps | seconds for the step (from the trainer's start: nothing "
                f"untimed) | {_memory_label(results)} | loss | rewards chosen / rejected | frozen · LoRA · compute "
                "dtype |",
                "|---|---|---|---|---|---|---|---|",
                f"| {SHAPES[key].name} | {row.get('status')} | {row.get('steps', '—')} | {_num(row.get('step_seconds'), 2)} | "
                f"{_gib(row.get('peak_memory_mb'))} | {_num(row.get('train_loss'), 4)} | {rewards} | {dtype} |"]
    problems = failures(results)
    out += ["", "### Problems found", ""] + ([f"- {p}" for p in problems] or ["- none: every row that ran passed its checks"])
    if results.get("limits"):
        out += ["", "### Not measured in this environment", ""] + [f"- {line}" for line in results["limits"]]
    return "\n".join(out)


def render(results: Mapping[str, Any]) -> str:
    """The whole measured section: when, how, on what, then the tables."""
    plan, versions, device = results["plan"], results["versions"], results.get("device", {})
    when = datetime.fromisoformat(results["started"]).strftime("%Y-%m-%d %H:%M UTC")
    minutes, seconds = divmod(int(results.get("seconds", 0)), 60)
    shapes = ", ".join(f"{SHAPES[k].name} ({SHAPES[k].source})" for k in plan["shapes"])
    built = [m for m in results["models"].values() if m.get("folder")]
    added = sorted({t for m in built for t in m.get("added_tokens", [])})
    lines = [
        "## Measured", "",
        f"- **When:** {when}, {minutes} min {seconds:02d} s in all (budget {plan['budget_s']:.0f} s of work, "
        f"limit {LIMIT_S // 60} min).",
        f"- **Command:** `{plan['command']}`, Python `{results['python']}`.",
        f"- **Device:** {device.get('name', 'not reached')}" + (f", CUDA {device['cuda']}" if device.get("cuda") else "")
        + (f", {device['memory_gb']} GB" if device.get("memory_gb") else "") + ".",
        "- **Versions:** " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        *(["- **Processes:** " + "; ".join(
            f"{stage}: `{info['python']}` (" + ", ".join(f"{k} {info['versions'].get(k, '?')}" for k in
                                                  ("torch", "transformers", "trl", "peft", "unsloth")) + ")"
            for stage, info in results["processes"].items()) + "."] if results.get("processes") else []),
        f"- **Shapes:** {shapes}; random weights in "
        + (", ".join(sorted({m['dtype'] for m in built})) or "—")
        + "; tokenizers of the kit's tiny models (ids inside the real vocabulary"
        + (f"; added as single tokens: {', '.join(f'`{t}`' for t in added)}" if added else "")
        + "), TRL's copies of the real chat templates.",
        f"- **Data:** {results['data']['rows']} `kit.casseat.trainsets` rows per shape (chain-of-thought and reflection, "
        "`train_turns` [0], [1] and [0, 1]); images: "
        + "; ".join(f"{SHAPES[k].name}: {v}" for k, v in results["data"]["images"].items()) + ".",
        f"- **Recipe:** `kit.training.sft.sft` as the pipeline runs it, LoRA r {plan['lora_r']} / alpha {plan['lora_alpha']} "
        f"on the language model's attention and MLP, learning rate {plan['learning_rate']}, batch {plan['batch_size']}, "
        f"{plan['warmup_steps'] + plan['measured_steps']} steps: the first {plan['warmup_steps']} untimed. "
        "Steps/s run from the end of the last warm-up step to the end of the last step (CUDA synchronised), so "
        "collation, forward, backward and the optimizer are inside; peak memory is `kit_train.json`'s "
        "(`SFTResult.peak_memory_mb`: over loading and training).",
        "", render_tables(results), ""]
    return "\n".join(lines)


def write_doc(path: str | Path, section: str) -> Path:
    """Put ``section`` between the markers of ``path`` (atomically); a file without them gets a short header and
    the section."""
    from kit.core.artifacts import atomic_write_text

    path = Path(path)
    body = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    text = path.read_text() if path.is_file() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + body + tail.lstrip("\n")
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "# GPU validation\n\nWritten by `kit check --gpu` "
                "(kit/tools/gpucheck.py); see docs/gpu-validation.md in the repository for what it checks.\n\n") + body
    return atomic_write_text(path, text)


# ------------------------------------------------------------------------------------------ kit check --gpu
def run_from_cli(output: str | Path, workdir: str | Path | None = None, peft_python: str | Path | None = None) -> int:
    """``kit check --gpu``: refuse without CUDA (writing nothing), else run the check on the real shapes and
    return 0 when every row that ran passed, 1 otherwise."""
    import torch

    if not torch.cuda.is_available():
        raise KitError("--gpu needs a CUDA GPU and this machine has none; nothing was measured or written. Run "
                       "`make gpu-check` on the GPU machine (it uses the training environment .venv-train)")
    if workdir is not None and not Path(workdir).is_dir():
        raise KitError(f"--gpu-workdir {workdir} is not a folder")
    if peft_python is not None and not os.access(peft_python, os.X_OK):
        raise KitError(f"--gpu-peft-python {peft_python} is not an executable Python")
    free_gb = shutil.disk_usage(workdir or tempfile.gettempdir()).free / 1e9
    print(f"[gpucheck] {free_gb:.0f} GB free for the models (about 36 GB of bf16 weights are written)", flush=True)
    command = "kit check --gpu" + (f" --gpu-output {output}" if Path(output) != DOC else "") + \
        (f" --gpu-workdir {workdir}" if workdir else "") + (f" --gpu-peft-python {peft_python}" if peft_python else "")
    plan = replace(Plan(), command=command, peft_python=str(peft_python) if peft_python else None)
    results = run_check(output, plan, workdir=workdir)
    problems = failures(results)
    print(f"[gpucheck] wrote {output}; " + (f"{len(problems)} problem(s)" if problems else "every check passed"))
    return 1 if problems else 0
