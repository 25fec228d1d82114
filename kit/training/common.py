"""What the two LoRA trainers share (``kit.training.sft`` and ``kit.training.dpo``), written once, as TRL keeps its
PEFT options beside its trainers' configs: the checks of a recipe, the recipe itself, the LoRA adapter
(``lora_targets``, ``lora_config``), the trainer arguments both set the same way (``trainer_config``), the tail that
saves the adapter (``save_adapter``), checkpoints and resuming (``checkpoint_folder``, ``last_checkpoint``), the
peak memory of a run (``PeakMemory``), the command-line body (``run_training_command``) and the per-turn loss mask
(``turn_mask``, also used by ``kit.tiny.pretrain``).

Each settings class (``SFTSettings``, ``DPOSettings``) keeps its LoRA fields flat, with its own defaults: their
names and values are the recipe that names each adapter folder, and the command-line options. Nothing here
imports torch, transformers or TRL at import time."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from kit.core.progress import progress_bars
from kit.errors import KitError

LANGUAGE_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LANGUAGE_MLP = ("gate_proj", "up_proj", "down_proj")
# Submodule paths of the vision towers of the supported families (Qwen2-VL's ``visual``, LLaVA's
# ``vision_tower`` and ``multi_modal_projector``): LoRA stays out of them unless finetune_vision_layers.
VISION_PARTS = ("visual", "vision_tower", "multi_modal_projector")
# Settings fields that change how a run is watched or checkpointed, never what it trains: left out of the recipe.
NOT_RECIPE = ("logging_steps", "checkpoint_steps")


class LoraRecipe(Protocol):
    """The fields every LoRA training recipe has (``SFTSettings``, ``DPOSettings``)."""

    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: tuple[str, ...]
    finetune_vision_layers: bool
    learning_rate: float
    epochs: float
    max_steps: int
    batch_size: int
    gradient_accumulation: int
    max_length: int | None
    warmup: float
    seed: int
    logging_steps: int
    checkpoint_steps: int
    extra: dict[str, Any]


# ------------------------------------------------------------------------------------------ the recipe
def check_settings(settings: LoraRecipe, what: str, more: Sequence[tuple[bool, str]] = ()) -> None:
    """The checks every LoRA training recipe shares plus ``more``; the first that fails is a ``KitError`` naming
    the field, before any model is loaded."""
    checks = [
        (isinstance(settings.lora_r, int) and settings.lora_r > 0, "lora_r must be a whole number > 0"),
        (settings.lora_alpha > 0, "lora_alpha must be > 0"),
        (0 <= settings.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
        (settings.learning_rate > 0, "learning_rate must be > 0"),
        (settings.epochs > 0 or settings.max_steps > 0, "epochs or max_steps must be > 0"),
        (isinstance(settings.batch_size, int) and settings.batch_size > 0, "batch_size must be a whole number > 0"),
        (isinstance(settings.gradient_accumulation, int) and settings.gradient_accumulation > 0,
         "gradient_accumulation must be a whole number > 0"),
        (settings.max_length is None or settings.max_length > 0, "max_length must be > 0 or None"),
        (bool(settings.target_modules), "target_modules must name at least one module"),
        (isinstance(settings.checkpoint_steps, int) and settings.checkpoint_steps > 0,
         "checkpoint_steps must be a whole number > 0"),
        *more,
    ]
    for ok, message in checks:
        if not ok:
            raise KitError(f"{what}: {message}")


def recipe_of(settings: LoraRecipe, not_recipe: Sequence[str] = ()) -> dict[str, Any]:
    """The settings as the recipe that names an adapter folder: every field but ``NOT_RECIPE`` and ``not_recipe``,
    ``target_modules`` as a list (as JSON has it)."""
    data = asdict(settings)
    for name in (*not_recipe, *NOT_RECIPE):
        data.pop(name)
    data["target_modules"] = list(settings.target_modules)
    return data


# ------------------------------------------------------------------------------------------ the LoRA adapter
def lora_targets(model: Any, settings: LoraRecipe) -> list[str]:
    """The full names of the linear modules LoRA wraps; a target name the model lacks is an error."""
    import torch

    linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    chosen, found = [], set()
    for name in linear:
        leaf = name.rsplit(".", 1)[-1]
        in_vision = any(f".{part}." in f".{name}." for part in VISION_PARTS)
        if leaf in settings.target_modules and (settings.finetune_vision_layers or not in_vision):
            chosen.append(name)
            found.add(leaf)
    missing = [target for target in settings.target_modules if target not in found]
    if missing:
        available = sorted({name.rsplit(".", 1)[-1] for name in linear})
        raise KitError(f"fine-tuning settings: target module(s) {', '.join(missing)} not found in the model "
                       f"(its linear layers: {', '.join(available)})")
    return chosen


def lora_config(settings: LoraRecipe, targets: list[str]):
    """The ``peft.LoraConfig`` of a fresh adapter on ``targets`` (``lora_targets``): the settings' rank, alpha and
    dropout, no bias, a causal language model."""
    from peft import LoraConfig

    return LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")


# ------------------------------------------------------------------------------------------ trainer arguments
def no_activation_checkpointing(config_class: type) -> dict[str, bool]:
    """The option that turns activation checkpointing off: ``activation_checkpointing`` from transformers 5.18,
    ``gradient_checkpointing`` (its deprecated alias since) before, which Unsloth's 5.17 still needs."""
    from dataclasses import fields

    names = {f.name for f in fields(config_class)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": False}


def trainer_config(config_class: type, settings: LoraRecipe, output_dir: Path, *, cuda: bool, checkpoints: bool,
                   progress: bool, **specific: Any):
    """``config_class`` (TRL's ``SFTConfig`` or ``DPOConfig``) with the arguments both trainers set the same way,
    then the trainer's own (``specific``), then the settings' ``extra`` as they are: the step size, length and
    seeds from the settings; checkpoints every ``checkpoint_steps`` steps, the last one kept, when ``checkpoints``;
    bf16 on CUDA, the CPU otherwise; no activation checkpointing, no reporting, the data loaded in the process."""
    options: dict[str, Any] = dict(
        output_dir=str(output_dir), per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation, learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs, max_steps=settings.max_steps, warmup_steps=settings.warmup,
        max_length=settings.max_length, seed=settings.seed, data_seed=settings.seed,
        logging_steps=settings.logging_steps, save_strategy="steps" if checkpoints else "no",
        save_steps=settings.checkpoint_steps, save_total_limit=1, report_to=[], use_cpu=not cuda, bf16=cuda,
        fp16=False, **no_activation_checkpointing(config_class), remove_unused_columns=False,
        dataloader_num_workers=0, dataloader_pin_memory=cuda, disable_tqdm=not progress_bars(progress),
        # Every LoRA weight takes part in each forward: DDP need not search for unused ones.
        ddp_find_unused_parameters=False,
    )
    options.update(specific)
    options.update(settings.extra)
    return config_class(**options)


# ------------------------------------------------------------------------------------------ checkpoints, saving
def checkpoint_folder(stage: str | Path) -> Path:
    """Where a stage's trainer keeps its checkpoints until the stage is finished: ``<stage>.checkpoints``."""
    stage = Path(stage)
    return stage.with_name(stage.name + ".checkpoints")


def checkpoint_step(checkpoint: Path | None) -> int:
    """The step of a trainer's ``checkpoint-N`` folder; 0 for none."""
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint is not None else 0


def last_checkpoint(checkpoint_dir: str | Path | None) -> Path | None:
    """The newest complete ``checkpoint-N`` folder the trainer left in ``checkpoint_dir`` (one it was killed while
    writing lacks ``trainer_state.json``, which the trainer writes last); None for none, or no folder."""
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return None
    complete = [checkpoint for checkpoint in Path(checkpoint_dir).glob("checkpoint-*")
                if checkpoint.name.rsplit("-", 1)[1].isdigit() and (checkpoint / "trainer_state.json").is_file()]
    return max(complete, key=checkpoint_step, default=None)


def save_adapter(accelerator: Any, model: Any, processor: Any, output_dir: Path, record_name: str,
                 record: dict[str, Any], checkpoint_dir: str | Path | None) -> None:
    """The end of a training run: the main process writes the adapter (``model`` unwrapped, PEFT format), the
    processor and ``record`` as ``record_name`` into ``output_dir``, atomically, then removes ``checkpoint_dir``;
    every process waits for it, so that several never race for the folder."""
    import shutil

    from kit.core.artifacts import atomic_dir, atomic_write_json

    if accelerator.is_main_process:
        with atomic_dir(output_dir) as tmp:
            accelerator.unwrap_model(model).save_pretrained(tmp)
            processor.save_pretrained(tmp)
            atomic_write_json(tmp / record_name, record)
        if checkpoint_dir is not None:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    accelerator.wait_for_everyone()


class PeakMemory:
    """The peak memory of this run: CUDA's peak allocation on a GPU; on a CPU the peak resident size of the
    process, sampled every 50 ms (``ru_maxrss`` would report the peak of every earlier run in the process)."""

    def __enter__(self) -> PeakMemory:
        import threading

        import psutil
        import torch

        self.cuda = torch.cuda.is_available()
        self.peak_mb = 0.0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        process, self._stop = psutil.Process(), threading.Event()

        def sample() -> None:
            while True:
                self.peak_mb = max(self.peak_mb, process.memory_info().rss / 2**20)
                if self._stop.wait(0.05):
                    return

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        import torch

        if self.cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()


# ------------------------------------------------------------------------------------------ the loss mask
def assistant_turn_numbers(labelled: Sequence[Any]) -> list[int]:
    """Each position's 0-based assistant turn, -1 where it is not an assistant token: ``labelled`` marks the
    assistant's tokens (a collator's or a chat template's mask), and each contiguous run of them is one turn."""
    numbers, turn, inside = [], -1, False
    for bit in labelled:
        if bit and not inside:
            turn += 1
        inside = bool(bit)
        numbers.append(turn if inside else -1)
    return numbers


def turn_mask(labelled: Sequence[Any], turns: Sequence[int] | None) -> list[bool]:
    """The positions that carry the loss: the assistant tokens (``labelled``) of the turns numbered in ``turns``
    (0-based; None: every turn). A Cas-SEAT reflection example keeps its second turn only, not the wrong chain of
    thought it reflects on. The one rule of ``kit.training.sft``'s collators and ``kit.tiny.pretrain.collate``."""
    return [number >= 0 and (turns is None or number in turns) for number in assistant_turn_numbers(labelled)]


# ------------------------------------------------------------------------------------------ command line
_STAGE_NAME = re.compile(r"(?P<kind>[a-z]+)-[0-9a-f]{12}")


def stage_metadata(output: Path, kind: str, stage: Callable[[Path], tuple[Path, dict[str, Any]]]) -> dict[str, Any] | None:
    """For a command line whose OUTPUT is a stage folder (``<kind>-<12 hex>``, as ``launch_command`` writes):
    the metadata the stage function records (``{"params": ...}``), so the folder is the one it would have
    written. ``stage(run_dir)`` gives the folder and params of this command's inputs and settings under
    ``run_dir``; when its name is not OUTPUT's, the settings differ from those that named the folder and the
    stage function would later reuse an adapter trained another way: a ``KitError``. Any other OUTPUT: None."""
    name = _STAGE_NAME.fullmatch(output.name)
    if name is None or name["kind"] != kind:
        return None
    folder, params = stage(output.parent)
    if folder.name != output.name:
        raise KitError(f"{output} is a {kind} stage folder, but this command's inputs and options make "
                       f"{folder.name}: train into that folder, or build the command with launch_command")
    return {"params": params}


def run_training_command(parser: argparse.ArgumentParser, options: Any, argv: list[str] | None, kind: str,
                         stage: Callable[[argparse.Namespace, Any, Path], tuple[Path, dict[str, Any]]],
                         train: Callable[[argparse.Namespace, Any, dict[str, Any] | None], Any]) -> int:
    """The body of ``python -m kit.training.sft`` and ``python -m kit.training.dpo``: settings from the options
    (``kit.core.settings_cli.SettingsOptions``; bad ones: usage and exit 2), the stage metadata when OUTPUT is a
    ``kind`` stage folder (``stage_metadata``; ``stage(args, settings, run_dir)``), then ``train(args, settings,
    metadata)``; a ``KitError`` exits 2, and the main process prints the result as one JSON line."""
    args = parser.parse_args(argv)
    try:
        settings = options.settings(args)
    except KitError as err:
        parser.error(str(err))  # usage and the message on stderr, exit status 2
    try:
        metadata = stage_metadata(args.output, kind, lambda run_dir: stage(args, settings, run_dir))
        result = train(args, settings, metadata)
    except KitError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # one line per run, not per process
        print(json.dumps(asdict(result)))
    return 0


def thread_share_callback() -> Any:
    """A ``TrainerCallback`` that follows ``kit run``'s share of the CPU threads at every step
    (``kit.core.profile.follow_thread_share``): a training that started beside another notebook lane takes all the
    threads once that lane finishes. Thread counts change no number; outside side-by-side lanes it does nothing."""
    from transformers import TrainerCallback

    from kit.core.threads import follow_thread_share

    class FollowThreadShare(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            follow_thread_share()

    return FollowThreadShare()
