"""Supervised fine-tuning of a vision-language model with LoRA: one API, two backends.

::

    from kit.training.sft import SFTSettings, sft
    result = sft("data/models/tiny-qwen2vl-student", "run/trainsets-.../cas_seat.jsonl", "run/adapters/cas-seat",
                 SFTSettings(lora_r=16, learning_rate=1e-3, epochs=1))
    # result.adapter_dir opens with kit.llm.models.load(...) or peft.PeftModel.from_pretrained(...)

- **unsloth** on CUDA when it is installed: ``FastVisionModel.from_pretrained``, ``get_peft_model`` with
  its vision/language layer switches, ``UnslothVisionDataCollator`` and TRL's ``SFTTrainer`` with the
  settings vision fine-tuning needs (``remove_unused_columns=False``, ``dataset_text_field=""``,
  ``dataset_kwargs={"skip_prepare_dataset": True}``). Unsloth is imported first (it patches transformers)
  and only then, never on a CPU.
- **peft** everywhere else: transformers + peft + TRL's ``SFTTrainer`` with the processor as
  ``processing_class``, ``bf16`` only on CUDA, no gradient checkpointing on CPU.

``backend="auto"`` picks unsloth when CUDA and the package are there, peft otherwise; the run records
which backend ran and why. The same ``SFTSettings`` give the same recipe on both (``recipe``): LoRA rank,
alpha, dropout, the modules it wraps (the language model's attention and MLP projections; the vision
tower's too with ``finetune_vision_layers``), learning rate, epochs or steps, batch size, accumulation,
maximum length and seed. Bad settings (a negative rank, a target module the model does not have) are
rejected before any training starts.

**Where the loss goes.** Training examples are ``kit.casseat.trainsets`` rows: ``messages`` with image parts,
``images``, and ``train_turns`` (the assistant turns that carry the loss; a Cas-SEAT reflection example's
wrong CoT turn does not). Both backends put the loss on those assistant turns only, end-of-turn token
included, and never on the system prompt, the user's instruction or the image:

- peft: TRL's vision collator with ``assistant_only_loss`` renders the *training* variant of the model's
  chat template (``trl.chat_template_utils.get_training_chat_template``: the real Qwen2-VL and
  LLaVA-NeXT templates have no ``{% generation %}`` markers, and without them transformers returns an
  all-zero assistant mask, i.e. a run that learns nothing);
- unsloth: ``UnslothVisionDataCollator`` in its response-only mode with the template's user and assistant
  markers (``response_markers``), images at their own resolution (``resize="max"``, as inference sees
  them; its default shrinks them to the vision tower's size).

Then ``keep_turns`` drops the assistant turns not in ``train_turns``, and an example left with no
labelled token is a ``KitError`` naming it, never a silent zero loss. With ``max_length`` an example
that does not fit is skipped and counted (``skipped_too_long`` in ``kit_train.json``), because cutting
its end would cut the answer, and cutting its start would cut the image. What still differs between the
backends is recorded in ``kit_train.json`` (``loss_mask``).

Several GPUs (or CPU processes): ``accelerate launch -m kit.training.sft MODEL DATA OUT [options]``, one option per
``SFTSettings`` field (``python -m kit.training.sft --help``); ``launch_command(...)`` builds the command that trains
exactly what ``train_stage`` would, into its folder, so the stage then reuses the adapter.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kit.core.settings_cli import SettingsOptions, absolute_if_local, accelerate_command
from kit.errors import KitError
from kit.training.common import (
    LANGUAGE_ATTENTION,
    LANGUAGE_MLP,
    PeakMemory,
    assistant_turn_numbers,
    check_settings,
    checkpoint_folder,
    checkpoint_step,
    last_checkpoint,
    lora_config,
    lora_targets,
    recipe_of,
    run_training_command,
    save_adapter,
    thread_share_callback,
    trainer_config,
    turn_mask,
)

# transformers' Trainer (5.2x) reads ``model.is_gradient_checkpointing``, deprecated there, once per trainer: a
# FutureWarning the kit cannot act on, repeated a dozen times in notebook 04. Silenced here, where training starts.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

BACKENDS = ("auto", "unsloth", "peft")
UNSLOTH_MAX_LENGTH = 2048  # FastVisionModel.from_pretrained's max_seq_length in Unsloth's vision notebooks


@dataclass(frozen=True)
class SFTSettings:
    """One fine-tuning recipe. Defaults: LoRA r 16 / alpha 32 / dropout 0.05 on the language model's
    attention and MLP projections, Unsloth's vision notebook defaults (ours where the papers are silent)."""

    # Each field's end-of-line comment is also its help on the command line (kit.core.settings_cli).
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA alpha (the update is scaled by alpha / r)
    lora_dropout: float = 0.05  # dropout on the LoRA path
    target_modules: tuple[str, ...] = LANGUAGE_ATTENTION + LANGUAGE_MLP  # linear layers LoRA wraps, by name
    finetune_vision_layers: bool = False  # also wrap the target modules inside the vision tower
    learning_rate: float = 2e-4  # peak learning rate
    epochs: float = 1.0  # passes over the training set
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 8  # examples per step and process
    gradient_accumulation: int = 1  # steps whose gradients add up before each update
    max_length: int | None = None  # longest example in tokens, image included (longer ones are skipped)
    warmup: float = 0.0  # steps (>= 1) or a fraction of the run (< 1), as TrainingArguments.warmup_steps
    seed: int = 0  # LoRA initialisation and data order
    backend: str = field(default="auto", metadata={"choices": BACKENDS})  # auto: unsloth on CUDA when installed, else peft
    logging_steps: int = 10  # log the loss every N steps
    checkpoint_steps: int = 200  # with sft(checkpoint_dir=...): save every N steps, so a killed run resumes
    extra: dict[str, Any] = field(default_factory=dict)  # passed to TRL's SFTConfig as they are (JSON on the command line)

    @classmethod
    def from_profile(cls, profile: Any, section: str, **overrides: Any) -> SFTSettings:
        """The recipe in the profile's ``section`` (finetune, critic or extra_sft), with the profile's ``seed``; ``overrides`` win."""
        from kit.core.settings_cli import settings_from_profile

        return settings_from_profile(cls, profile.get(section), **{"seed": profile.get("seed"), **overrides})

    def __post_init__(self) -> None:
        check_settings(self, "fine-tuning settings", [(self.backend in BACKENDS,
                                                       f"backend must be one of {', '.join(BACKENDS)}")])

    def recipe(self) -> dict[str, Any]:
        """What the run does, independent of the backend that does it."""
        return recipe_of(self, not_recipe=("backend",))


@dataclass
class SFTResult:
    adapter_dir: str
    backend: str
    backend_reason: str
    recipe: dict[str, Any]
    steps: int
    examples: int
    processes: int
    train_loss: float
    seconds: float  # the training steps: what samples_per_second divides by
    samples_per_second: float
    peak_memory_mb: float
    resumed_from_step: int = 0  # > 0 when a killed run continued from its last checkpoint
    loss_mask: str = ""  # which tokens carried the loss (LOSS_MASKS)
    skipped_too_long: list[str] = field(default_factory=list)  # ids of examples longer than max_length
    # before the first step: loading the model, rendering every example once (peft) and building the trainer
    setup_seconds: float = 0.0


# ------------------------------------------------------------------------------------------ backends
def choose_backend(requested: str = "auto") -> tuple[str, str]:
    """The backend to use and why. Looks for unsloth with ``find_spec`` and never imports it here."""
    import torch

    cuda = torch.cuda.is_available()
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if requested == "peft":
        return "peft", "asked for"
    if requested == "unsloth":
        if not cuda:
            raise KitError("backend 'unsloth' needs a CUDA GPU; this machine has none (use backend 'peft' or 'auto')")
        if not has_unsloth:
            raise KitError("backend 'unsloth' is not installed: build the training environment with `make train-env`")
        return "unsloth", "asked for"
    if requested != "auto":
        raise KitError(f"unknown backend {requested!r}; choose from {', '.join(BACKENDS)}")
    if cuda and has_unsloth:
        return "unsloth", "auto: CUDA and unsloth available"
    if cuda:
        return "peft", "auto: CUDA but unsloth not installed"
    return "peft", "auto: no CUDA GPU"


def _read_examples(data: Any) -> list[dict]:
    """The training rows, each image checked: a missing one is a ``KitError`` naming the file and the row."""
    from kit.training.data import read_set

    examples = read_set(data) if isinstance(data, str | Path) else list(data)
    where = str(data) if isinstance(data, str | Path) else "the training rows"
    for number, example in enumerate(examples, start=1):
        for image in example.get("images") or []:
            if isinstance(image, str | Path) and not Path(image).is_file():
                raise KitError(f"{where} row {number} (example {example.get('id')!r}): image {image} does not exist")
    return examples


def keep_turns(labels: Any, turns: list[list[int] | None], ids: list[str]) -> None:
    """Keep the loss only on each row's ``turns`` (0-based assistant turns, ``None``: all of them), in place.

    ``labels`` come from a collator that labels every assistant turn: each contiguous run of labelled
    positions is one turn (``kit.training.common.turn_mask``, the rule ``kit.tiny.pretrain`` masks by too). A row
    left with no labelled token is a ``KitError`` naming its example: its chat template marked no assistant turn,
    or ``train_turns`` names turns the example does not have."""
    for row, keep in enumerate(turns):
        labelled = (labels[row] != -100).tolist()
        mask = turn_mask(labelled, keep)
        for position, (was, stays) in enumerate(zip(labelled, mask, strict=True)):
            if was and not stays:
                labels[row, position] = -100
        if not any(mask):
            marked = max(assistant_turn_numbers(labelled), default=-1) + 1
            raise KitError(f"fine-tuning: example {ids[row]!r} has no token to learn from: the chat template "
                           f"marked {marked} assistant turn(s) and train_turns is {keep}")

def _turns_and_ids(examples: list[dict]) -> tuple[list[list[int] | None], list[str]]:
    turns = [None if e.get("train_turns") is None else list(e["train_turns"]) for e in examples]
    return turns, [str(e.get("id", f"#{i}")) for i, e in enumerate(examples)]


def training_chat_template(processor: Any) -> str | None:
    """The chat template that marks the assistant's tokens: the processor's own when it has
    ``{% generation %}`` markers (the tiny models'), else TRL's training variant of it (byte-exact
    matches of the real Qwen2-VL and LLaVA-NeXT templates). An unknown unmarked template is a ``KitError``:
    training on it would learn nothing."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = processor.chat_template
    if template and has_generation_markers(template):
        return None
    try:
        patched = get_training_chat_template(processor)
    except ValueError as err:
        raise KitError(f"fine-tuning: the model's chat template has no {{% generation %}} markers and TRL has no "
                       f"training variant of it ({err}); give the processor a template with the markers") from None
    if patched is None:
        raise KitError("fine-tuning: the model's chat template cannot mark the assistant's tokens")
    return patched


# Collated examples kept in memory for the next epoch, up to this many bytes (every tiny-profile set fits; a
# paper-size set keeps its first examples and renders the rest each time).
COLLATE_CACHE_BYTES = 2 * 1024**3


class TurnMaskingCollator:
    """TRL's vision collator with the loss on the assistant's tokens (the training chat template), then
    only on each example's ``train_turns`` (``keep_turns``).

    Each example is rendered and processed once, by TRL's collator on its own, and joined into batches as TRL
    joins them (right padding: the pad token, attention 0, label -100): the batches are TRL's to the bit, and
    later epochs skip the chat template, the tokenizer and the image processor. ``sft`` renders every example
    into the cache before the first step, when it measures their lengths (``fitting_examples``).

    It never truncates: an example longer than ``max_length`` is skipped before training instead."""

    def __init__(self, processor: Any, cache_bytes: int = COLLATE_CACHE_BYTES) -> None:
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        self.inner = DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True,
                                                           chat_template=training_chat_template(processor))
        self.pad_token_id = processor.tokenizer.pad_token_id
        self.cache_bytes = cache_bytes
        self.cached_bytes = 0
        self.cache: dict[str, dict] = {}

    def __call__(self, examples: list[dict]) -> dict:
        batch = join_rows([self.collated(e) for e in examples], self.pad_token_id)
        keep_turns(batch["labels"], *_turns_and_ids(examples))
        return batch

    def collated(self, example: dict) -> dict:
        """One example as TRL's collator makes a batch of one (from the cache when it was seen before)."""
        key = example_key(example)
        row = self.cache.get(key)
        if row is None:
            row = dict(self.inner([{k: v for k, v in example.items() if k in ("messages", "images")}]))
            size = sum(t.numel() * t.element_size() for t in row.values())
            if self.cached_bytes + size <= self.cache_bytes:
                self.cache[key] = row
                self.cached_bytes += size
        return row


def example_key(example: dict) -> str:
    """What a training row's collated tensors depend on: its messages and its images' pixels."""
    import hashlib

    digest = hashlib.blake2b(json.dumps(example["messages"], sort_keys=True).encode(), digest_size=16)
    for image in example.get("images") or []:  # PIL images from the dataset, or paths
        is_pil = hasattr(image, "tobytes")
        digest.update(f"{image.mode}{image.size}".encode() + image.tobytes() if is_pil else str(image).encode())
    return digest.hexdigest()


def join_rows(rows: list[dict], pad_token_id: int) -> dict:
    """Batches of one joined as TRL's vision collator pads a batch: on the right, ``input_ids`` with the pad
    token, ``labels`` with -100, every other per-token tensor (attention mask, token types) with 0; per-image
    tensors (pixel values, grid sizes) concatenated."""
    import torch

    length = max(row["input_ids"].shape[1] for row in rows)
    batch = {}
    for key in rows[0]:
        per_token = rows[0][key].dim() >= 2 and rows[0][key].shape[:2] == rows[0]["input_ids"].shape
        if not per_token:
            batch[key] = torch.cat([row[key] for row in rows])
            continue
        fill = pad_token_id if key == "input_ids" else -100 if key == "labels" else 0
        padded = []
        for row in rows:
            tensor = row[key]
            missing = length - tensor.shape[1]
            if missing:
                pad = torch.full((tensor.shape[0], missing, *tensor.shape[2:]), fill, dtype=tensor.dtype)
                tensor = torch.cat([tensor, pad], dim=1)
            padded.append(tensor)
        batch[key] = torch.cat(padded)
    return batch


# The text that opens a user turn and an assistant turn in each chat format the supported families use:
# ChatML (Qwen2-VL, and the tiny models) and Mistral's [INST] (llava-v1.6-mistral-hf). Unsloth's
# response-only mode labels from each response marker up to the next instruction marker.
RESPONSE_MARKERS = {"<|im_start|>": ("<|im_start|>user\n", "<|im_start|>assistant\n"),
                    "[/INST]": ("[INST]", "[/INST]")}


def response_markers(chat_template: str | None) -> tuple[str, str]:
    """``(instruction_part, response_part)`` for Unsloth's ``train_on_responses_only`` from the template."""
    for sign, markers in RESPONSE_MARKERS.items():
        if chat_template and sign in chat_template:
            return markers
    raise KitError("fine-tuning with unsloth: no user/assistant markers known for this chat template "
                   f"(known: {', '.join(RESPONSE_MARKERS)}); use backend 'peft'")


class UnslothTurnCollator:
    """``UnslothVisionDataCollator`` (response-only, images at their own resolution), then ``keep_turns``."""

    def __init__(self, model: Any, processor: Any, max_length: int | None) -> None:
        from unsloth.trainer import UnslothVisionDataCollator

        instruction, response = response_markers(processor.chat_template)
        self.inner = UnslothVisionDataCollator(model, processor, max_seq_length=max_length, resize="max",
                                               train_on_responses_only=True, instruction_part=instruction,
                                               response_part=response)

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.inner([{k: v for k, v in e.items() if k in ("messages", "images")} for e in examples])
        keep_turns(batch["labels"], *_turns_and_ids(examples))
        return batch


LOSS_MASKS = {
    "peft": "train_turns of the assistant, end-of-turn token included (TRL's training chat template)",
    "unsloth": "train_turns of the assistant (Unsloth's response-only markers: the text after each assistant "
               "marker up to the next user marker, so the separator after LLaVA-NeXT's </s> is labelled too)",
}


def example_lengths(examples: list[dict], processor: Any, collator: TurnMaskingCollator | None = None) -> list[int]:
    """Each example's whole conversation in tokens, image tokens included, rendered as the collator renders
    it (no truncation). With ``collator``, rendered by it, as the trainer's rows: into its cache, so that training
    renders none of them again."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from kit.training.data import to_hf_dataset

    if collator is not None:
        return [int(collator.collated(row)["input_ids"].shape[1]) for row in to_hf_dataset(examples)]
    render = DataCollatorForVisionLanguageModeling(processor=processor)
    return [int(render([{"messages": row["messages"], "images": row["images"]}])["input_ids"].shape[1])
            for row in to_hf_dataset(examples)]


def fitting_examples(examples: list[dict], processor: Any, max_length: int | None,
                     collator: TurnMaskingCollator | None = None) -> tuple[list[dict], list[str]]:
    """The examples whose whole conversation, image tokens included, fits ``max_length``, and the ids of
    those that do not (each rendered and measured once, as the collator renders it; by ``collator`` when given,
    which keeps them, with or without ``max_length``)."""
    if max_length is None and collator is None:
        return examples, []
    lengths = example_lengths(examples, processor, collator)
    if max_length is None:
        return examples, []
    kept, skipped = [], []
    for example, length in zip(examples, lengths, strict=True):
        (kept if length <= max_length else skipped).append(example)
    if not kept:
        raise KitError(f"fine-tuning: none of the {len(examples)} examples fits max_length {max_length}")
    return kept, [str(e.get("id")) for e in skipped]


def _trl_config(settings: SFTSettings, output_dir: Path, cuda: bool, unsloth: bool, checkpoints: bool = False,
                progress: bool = False):
    """TRL's ``SFTConfig`` for ``settings``: the arguments both trainers share (``trainer_config``) and SFT's own."""
    from trl import SFTConfig

    if unsloth:
        # What Unsloth's vision fine-tuning needs: its collator prepares the batches itself.
        specific: dict[str, Any] = dict(dataset_text_field="", dataset_kwargs={"skip_prepare_dataset": True})
    else:
        specific = dict(assistant_only_loss=True)
    return trainer_config(SFTConfig, settings, output_dir, cuda=cuda, checkpoints=checkpoints, progress=progress,
                          **specific)


# TRL computes assistant masks on images only from here (its SFTTrainer refuses vision assistant-only loss
# below it; below it transformers' processor returns all-zero masks, which keep_turns reports as nothing to learn).
PEFT_MASKS_TRANSFORMERS = "5.18.0"


def check_peft_masks() -> None:
    """Refuse the peft backend where transformers cannot mark assistant tokens on image chats: Unsloth's
    environment (transformers 5.17) trains with the unsloth backend, whose masks come from the template's markers."""
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) < Version(PEFT_MASKS_TRANSFORMERS + ".dev0"):
        raise KitError(f"backend 'peft' needs transformers>={PEFT_MASKS_TRANSFORMERS} to put the loss on assistant "
                       f"turns only (TRL's rule for vision chats); this environment has {transformers.__version__} "
                       "(Unsloth's pins): train with backend 'unsloth' on CUDA here, or in the CPU environment "
                       "(make install)")


def _train_peft(model_source: Any, examples: list[dict], settings: SFTSettings, output_dir: Path,
                adapter: str | Path | None = None, **config: bool) -> tuple[Any, Any, Any, list[str]]:
    import torch
    from peft import get_peft_model
    from trl import SFTTrainer

    from kit.llm.models import load
    from kit.training.data import to_hf_dataset

    cuda = torch.cuda.is_available()
    loaded = load(model_source, adapter=adapter, dtype="bfloat16" if cuda else None, trainable=True)
    model = loaded.model
    if adapter is None:
        targets = lora_targets(model, settings)
        torch.manual_seed(settings.seed)
        model = get_peft_model(model, lora_config(settings, targets))
    check_peft_masks()
    collator = TurnMaskingCollator(loaded.processor)
    examples, skipped = fitting_examples(examples, loaded.processor, settings.max_length, collator)
    trainer = SFTTrainer(model=model, args=_trl_config(settings, output_dir, cuda, unsloth=False, **config),
                         train_dataset=to_hf_dataset(examples), processing_class=loaded.processor,
                         data_collator=collator,
                         callbacks=[thread_share_callback()])
    return trainer, model, loaded.processor, skipped


def unsloth_length_limit(examples: list[dict], settings: SFTSettings, model_source: Any,
                         adapter: str | Path | None = None) -> int:
    """The ``max_seq_length`` the unsloth backend trains with: the settings' ``max_length``, or else
    ``UNSLOTH_MAX_LENGTH`` raised to the longest example (measured with the model's processor, no weights)."""
    if settings.max_length is not None:
        return settings.max_length
    from kit.llm.models import open_processor

    longest = max(example_lengths(examples, open_processor(model_source, adapter=adapter)), default=0)
    return max(UNSLOTH_MAX_LENGTH, longest)


def _train_unsloth(model_source: Any, examples: list[dict], settings: SFTSettings, output_dir: Path,
                   adapter: str | Path | None = None, **config: bool):
    import unsloth  # noqa: F401 - first, so that it patches transformers and TRL before they load
    from trl import SFTTrainer
    from unsloth import FastVisionModel

    from kit.training.data import to_hf_dataset

    # An adapter folder opens on its base with the adapter trainable (Unsloth reads adapter_config.json).
    # Unsloth always has a length limit (its collator truncates at the model's max_seq_length), so without one
    # in the settings it gets its default or the longest example, whichever is longer: as on peft, nothing is
    # skipped then (LLaVA-NeXT's AnyRes tiles alone are ~2,300 tokens for a 640 x 480 image).
    limit = unsloth_length_limit(examples, settings, model_source, adapter)
    model, processor = FastVisionModel.from_pretrained(str(adapter or model_source), load_in_4bit=False,
                                                       max_seq_length=limit)
    if adapter is None:
        language = [t for t in settings.target_modules if t in LANGUAGE_ATTENTION + LANGUAGE_MLP]
        model = FastVisionModel.get_peft_model(
            model, finetune_vision_layers=settings.finetune_vision_layers, finetune_language_layers=True,
            finetune_attention_modules=any(t in LANGUAGE_ATTENTION for t in language),
            finetune_mlp_modules=any(t in LANGUAGE_MLP for t in language),
            r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout, bias="none",
            random_state=settings.seed,
        )
    FastVisionModel.for_training(model)
    examples, skipped = fitting_examples(examples, processor, limit)
    trainer = SFTTrainer(model=model, args=_trl_config(settings, output_dir, cuda=True, unsloth=True, **config),
                         train_dataset=to_hf_dataset(examples), processing_class=processor,
                         data_collator=UnslothTurnCollator(model, processor, limit))
    return trainer, model, processor, skipped


def sft(model: Any, data: Any, output_dir: str | Path, settings: SFTSettings | None = None,
        log=print, *, adapter: str | Path | None = None, checkpoint_dir: str | Path | None = None,
        progress: bool = False, metadata: dict[str, Any] | None = None) -> SFTResult:
    """Fine-tune ``model`` (a folder or hub id) with LoRA on ``data`` (a ``kit.casseat.trainsets`` JSONL file or its
    rows) and save the adapter with the processor in ``output_dir`` (PEFT format), atomically, with
    ``kit_train.json`` naming the backend, why it was chosen, the recipe, the measured speed and ``metadata``.

    With ``checkpoint_dir`` the trainer saves a checkpoint every ``settings.checkpoint_steps`` steps there and a
    re-run after a kill continues from the last one (optimizer, scheduler and data order included); the
    folder is removed once the adapter is written. ``progress`` shows the trainer's progress bar.

    ``adapter``: an existing LoRA adapter of ``model`` to go on training (EACO's additional SFT stage continues
    the DPO adapter). Its LoRA shape and target modules are kept, so ``settings``' LoRA fields do not apply;
    ``kit_train.json`` names the adapter it continued."""
    settings = settings or SFTSettings()
    backend, reason = choose_backend(settings.backend)
    examples = _read_examples(data)
    if not examples:
        raise KitError(f"fine-tuning: no training examples in {data}")
    output_dir = Path(output_dir)
    resume = last_checkpoint(checkpoint_dir)
    with tempfile.TemporaryDirectory(prefix="kit-train-") as scratch, PeakMemory() as memory:  # the trainer's own files, per process
        began = time.perf_counter()
        trainer_dir = Path(checkpoint_dir) if checkpoint_dir is not None else Path(scratch)
        build = _train_unsloth if backend == "unsloth" else _train_peft
        trainer, peft_model, processor, skipped = build(model, examples, settings, trainer_dir, adapter=adapter,
                                                        checkpoints=checkpoint_dir is not None, progress=progress)
        accelerator = trainer.accelerator
        if accelerator.is_main_process:
            log(f"fine-tuning {model}{f' (continuing {adapter})' if adapter else ''} with {backend} ({reason}) "
                f"on {len(examples) - len(skipped)} examples"
                + (f" ({len(skipped)} longer than max_length {settings.max_length} skipped)" if skipped else "")
                + f", {accelerator.num_processes} process(es)"
                + (f", resuming from {resume.name}" if resume is not None else ""))
        started = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        seconds = time.perf_counter() - started
    steps = int(output.global_step)
    resumed_from = checkpoint_step(resume)
    result = SFTResult(
        adapter_dir=str(output_dir), backend=backend, backend_reason=reason, recipe=settings.recipe(),
        steps=steps, examples=len(examples) - len(skipped), processes=accelerator.num_processes,
        train_loss=round(float(output.training_loss), 5), seconds=round(seconds, 2),
        samples_per_second=round((steps - resumed_from) * settings.batch_size * settings.gradient_accumulation
                                 * accelerator.num_processes / max(seconds, 1e-9), 2),
        peak_memory_mb=round(memory.peak_mb, 1), resumed_from_step=resumed_from,
        loss_mask=LOSS_MASKS[backend], skipped_too_long=skipped, setup_seconds=round(started - began, 2),
    )
    save_adapter(accelerator, peft_model, processor, output_dir, "kit_train.json", {
        **asdict(result), "model": str(model), "continued_adapter": str(adapter) if adapter else None,
        "data": str(data) if isinstance(data, str | Path) else "(in memory)", **(metadata or {})}, checkpoint_dir)
    return result


def _adapter_folder(model: str | Path, data: str | Path, run_dir: str | Path, settings: SFTSettings,
                    adapter: str | Path | None) -> tuple[Path, dict[str, Any]]:
    """The ``adapter-<hash>`` folder of a fine-tuning stage and the params its hash is taken over: the base model's
    and the training set's content, the recipe, the backend and the adapter it continues, if any."""
    from kit.core.artifacts import fingerprint, stage_dir

    backend, _ = choose_backend(settings.backend)
    params = {"model": fingerprint(model), "data": fingerprint(data), "recipe": settings.recipe(), "backend": backend}
    if adapter is not None:
        params["continues"] = fingerprint(adapter)
    return stage_dir(run_dir, "adapter", params), params


def stage_folder(model: str | Path, data: str | Path, run_dir: str | Path, settings: SFTSettings | None = None,
                 *, adapter: str | Path | None = None) -> Path:
    """The ``adapter-<hash>`` folder ``train_stage`` uses for these arguments: train into it elsewhere (e.g.
    ``accelerate launch -m kit.training.sft`` on several GPUs: ``launch_command``) and ``train_stage`` reuses the
    finished adapter."""
    return _adapter_folder(model, data, run_dir, settings or SFTSettings(), adapter)[0]


def train_stage(model: str | Path, data: str | Path, run_dir: str | Path, settings: SFTSettings | None = None,
                *, adapter: str | Path | None = None, progress: bool = True, log=print) -> dict[str, Any]:
    """A fine-tuning run as a pipeline stage: ``sft`` into ``run_dir/adapter-<hash>/``, the hash taken over
    the base model's and the training set's content, the recipe and the backend. A finished adapter is
    reused as it is; a killed run resumes from its last checkpoint (``adapter-<hash>.checkpoints/``).
    Returns the adapter's ``kit_train.json`` (``adapter_dir``, ``backend``, ``steps``, ``train_loss``, ...)."""
    settings = settings or SFTSettings()
    folder, params = _adapter_folder(model, data, run_dir, settings, adapter)
    done = folder / "kit_train.json"
    if not done.is_file():
        sft(model, data, folder, settings, log, adapter=adapter, checkpoint_dir=checkpoint_folder(folder),
            progress=progress, metadata={"params": params})
    return json.loads(done.read_text())


def merge(adapter_dir: str | Path, output_dir: str | Path) -> Path:
    """The base model with the adapter merged in, saved (safetensors) with its processor to ``output_dir``."""
    from kit.core.artifacts import atomic_dir
    from kit.llm.models import load

    loaded = load(adapter_dir)
    merged = loaded.model.merge_and_unload()
    with atomic_dir(output_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        loaded.processor.save_pretrained(tmp)
    return Path(output_dir)


# ------------------------------------------------------------------------------------------ command line
# The command line is SFTSettings' fields (kit.core.settings_cli), under the option names the docs have always used.
SFT_OPTIONS = SettingsOptions(SFTSettings, flags={"finetune_vision_layers": "--finetune-vision"})


def launch_command(model: str | Path, data: str | Path, run_dir: str | Path, settings: SFTSettings | None = None,
                   *, adapter: str | Path | None = None, processes: int = 2,
                   extra_launch_args: Sequence[str] = ()) -> list[str]:
    """The ``accelerate launch ... -m kit.training.sft`` command (a list: ``shlex.join`` prints it) that trains, in
    ``processes`` processes, what ``train_stage(model, data, run_dir, settings, adapter=adapter)`` would, into
    the folder it would (``stage_folder``) with its checkpoints beside it, so that ``train_stage`` then reuses
    the adapter. Works for every stage that trains through ``train_stage``: the students' SFT, the Critic
    (``critic_stage``'s ``train.jsonl``) and the extra SFT (``adapter=`` the DPO adapter). Local paths are made
    absolute so the command runs from any folder; ``--batch-size`` is per process, so the effective batch is
    ``processes`` times the one ``train_stage`` trains with in one process."""
    settings = settings or SFTSettings()
    folder = stage_folder(model, data, run_dir, settings, adapter=adapter).absolute()
    arguments = [absolute_if_local(model), absolute_if_local(data), str(folder), *SFT_OPTIONS.argv(settings)]
    if adapter is not None:
        arguments += ["--adapter", absolute_if_local(adapter)]
    arguments += ["--checkpoint-dir", str(checkpoint_folder(folder))]
    return accelerate_command("kit.training.sft", arguments, processes=processes, extra_launch_args=extra_launch_args)


def argument_parser() -> argparse.ArgumentParser:
    """``python -m kit.training.sft``'s options: MODEL DATA OUTPUT, ``--adapter``, ``--checkpoint-dir`` and one option
    per ``SFTSettings`` field (``SFT_OPTIONS``)."""
    parser = argparse.ArgumentParser(prog="python -m kit.training.sft", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="base model folder or hub id")
    parser.add_argument("data", type=Path, help="training set (kit.casseat.trainsets JSONL)")
    parser.add_argument("output", type=Path, help="adapter folder to write (a train_stage folder: see launch_command)")
    parser.add_argument("--adapter", type=Path, default=None,
                        help="an adapter of MODEL to go on training (EACO's extra SFT continues the DPO adapter); "
                             "its LoRA shape is kept, so the --lora-* options do not apply")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="save checkpoints here and resume from the last one after a kill")
    SFT_OPTIONS.add_to(parser, "fine-tuning settings (kit.training.sft.SFTSettings)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m kit.training.sft MODEL DATA OUTPUT [options]`` (or ``accelerate launch -m kit.training.sft ...``)."""
    return run_training_command(
        argument_parser(), SFT_OPTIONS, argv, "adapter",
        stage=lambda args, settings, run_dir: _adapter_folder(args.model, args.data, run_dir, settings, args.adapter),
        train=lambda args, settings, metadata: sft(args.model, args.data, args.output, settings, adapter=args.adapter,
                                                   checkpoint_dir=args.checkpoint_dir, metadata=metadata))

if __name__ == "__main__":
    raise SystemExit(main())
