"""EACO's preference stage (arXiv 2412.04903): DPO on Critic-chosen pairs, with an SFT term on the chosen
response, through TRL's ``DPOTrainer``; the extra SFT stage that follows is ``kit.train.sft(...,
adapter=<this adapter>)``, which continues the same adapter.

::

    from kit.dpo import DPOSettings, dpo
    result = dpo("data/models/tiny-llava-policy", "run/pairs.jsonl", "run/adapters/dpo", DPOSettings())
    # result.rewards_chosen / result.rewards_rejected: the implicit rewards TRL logged, first and last step

What the authors' draft code does (github.com/yongxinwang-ai/EACO_draft @ dfac188, ``scripts/dpo_finetune.sh``
and ``llava/train/train_dpo.py``), and the defaults here:

- LoRA r 128, alpha 256 on the language model (``--lora_r 128 --lora_alpha 256``);
- learning rate 1e-7, 1 epoch, cosine schedule, warm-up 3 % (``--learning_rate 1e-7 --num_train_epochs 1
  --lr_scheduler_type cosine --warmup_ratio 0.03``);
- global batch 8 (``--per_device_train_batch_size 1 --gradient_accumulation_steps 2`` on 4 GPUs): here
  batch 1 x accumulation 8 on one device;
- the sigmoid DPO loss with beta 0.1, the reference being the base model with the adapter disabled (TRL's
  behaviour for a LoRA run without an explicit ``ref_model``);
- an SFT (negative log-likelihood) term on the chosen response with weight 1/1024 in the draft code
  (``sft_weight``; 0 turns it off). TRL combines the two losses as ``loss_type=["sigmoid", "sft"]`` with
  ``loss_weights=[1, sft_weight]``.

DPO runs on transformers + peft + TRL on every device (the draft uses DeepSpeed; Unsloth serves the SFT
stages). Vision rows keep ``max_length=None`` so that no image token is truncated away.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kit.errors import KitError
from kit.train import (
    LANGUAGE_ATTENTION,
    LANGUAGE_MLP,
    _last_checkpoint,
    _PeakMemory,
    check_settings,
    lora_targets,
)

DRAFT_SFT_WEIGHT = 1 / 1024  # llava/train/train_dpo.py: the chosen response's NLL added with this weight


@dataclass(frozen=True)
class DPOSettings:
    """One DPO recipe; the defaults are the draft code's (module docstring)."""

    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = LANGUAGE_ATTENTION + LANGUAGE_MLP
    finetune_vision_layers: bool = False
    learning_rate: float = 1e-7
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 1
    gradient_accumulation: int = 8
    warmup: float = 0.03  # a fraction of the run (< 1) or steps (>= 1)
    scheduler: str = "cosine"
    beta: float = 0.1
    loss_type: str = "sigmoid"
    sft_weight: float = DRAFT_SFT_WEIGHT
    max_length: int | None = None
    seed: int = 0
    logging_steps: int = 1
    checkpoint_steps: int = 100
    extra: dict[str, Any] = field(default_factory=dict)  # passed to TRL's DPOConfig as they are

    def __post_init__(self) -> None:
        check_settings(self, "DPO settings", [(self.beta > 0, "beta must be > 0"),
                                              (self.sft_weight >= 0, "sft_weight must be >= 0")])

    def recipe(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("logging_steps", "checkpoint_steps"):
            data.pop(name)
        data["target_modules"] = list(self.target_modules)
        return data


@dataclass
class DPOResult:
    adapter_dir: str
    recipe: dict[str, Any]
    pairs: int
    steps: int
    train_loss: float
    rewards_chosen: list[float]  # TRL's rewards/chosen at the first and the last logged step
    rewards_rejected: list[float]
    reward_margin: list[float]
    seconds: float
    peak_memory_mb: float
    resumed_from_step: int = 0


def dpo_dataset(pairs: list[dict[str, Any]]):
    """Preference pairs (``kit.preference`` rows, validated) as a ``datasets.Dataset`` in TRL's conversational
    vision format with the images opened."""
    from datasets import Dataset, Features, Image, Sequence

    from kit.preference import to_dpo_rows, validate_pairs

    validate_pairs(pairs, "DPO pairs")
    rows = to_dpo_rows(pairs)
    dataset = Dataset.from_list(rows)
    return dataset.cast(Features({**dataset.features, "images": Sequence(Image())}))


def _pairs(data: Any) -> list[dict[str, Any]]:
    from kit.preference import read_pairs

    if isinstance(data, str | Path):
        return read_pairs(data)
    return list(data)


def _dpo_config(settings: DPOSettings, output_dir: Path, cuda: bool, checkpoints: bool, progress: bool):
    from trl import DPOConfig

    losses, weights = [settings.loss_type], [1.0]
    if settings.sft_weight > 0:
        losses.append("sft")
        weights.append(settings.sft_weight)
    options: dict[str, Any] = dict(
        output_dir=str(output_dir), per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation, learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs, max_steps=settings.max_steps, warmup_steps=settings.warmup,
        lr_scheduler_type=settings.scheduler, beta=settings.beta, loss_type=losses, loss_weights=weights,
        max_length=settings.max_length, seed=settings.seed, data_seed=settings.seed,
        logging_steps=settings.logging_steps, save_strategy="steps" if checkpoints else "no",
        save_steps=settings.checkpoint_steps, save_total_limit=1, report_to=[], use_cpu=not cuda, bf16=cuda,
        fp16=False, activation_checkpointing=False, remove_unused_columns=False, dataloader_num_workers=0,
        dataloader_pin_memory=cuda, disable_tqdm=not progress,
    )
    options.update(settings.extra)
    return DPOConfig(**options)


def _logged(history: list[dict[str, Any]], key: str) -> list[float]:
    values = [round(float(entry[key]), 6) for entry in history if key in entry]
    return [values[0], values[-1]] if values else []


def dpo(model: Any, data: Any, output_dir: str | Path, settings: DPOSettings | None = None, log=print, *,
        reference: str | Path | None = None, checkpoint_dir: str | Path | None = None, progress: bool = False,
        metadata: dict[str, Any] | None = None) -> DPOResult:
    """DPO-tune ``model`` (a folder or hub id) with a fresh LoRA adapter on preference ``data`` (a
    ``kit.preference`` pairs file or its rows) and save the adapter with the processor in ``output_dir``
    (PEFT format), atomically, with ``kit_dpo.json`` (the recipe, the logged rewards, the speed and
    ``metadata``). A pair with a missing image or an empty response stops the run before training, naming
    it. ``checkpoint_dir`` makes a killed run resume from its last checkpoint, as ``kit.train.sft`` does.

    ``reference``: an explicit reference model (a folder, hub id or adapter folder, e.g. an earlier stage's
    model) instead of the policy with its adapter disabled."""
    import torch
    from peft import LoraConfig
    from trl import DPOTrainer

    from kit.artifacts import atomic_dir, atomic_write_json
    from kit.models import load

    settings = settings or DPOSettings()
    pairs = _pairs(data)
    if not pairs:
        raise KitError(f"DPO: no preference pairs in {data}")
    dataset = dpo_dataset(pairs)
    cuda = torch.cuda.is_available()
    loaded = load(model, dtype="bfloat16" if cuda else None)
    targets = lora_targets(loaded.model, settings)  # a module the model lacks is named before training starts
    output_dir = Path(output_dir)
    resume = _last_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    with tempfile.TemporaryDirectory(prefix="kit-dpo-") as scratch, _PeakMemory() as memory:
        torch.manual_seed(settings.seed)
        ref_model = load(reference, dtype="bfloat16" if cuda else None).model if reference is not None else None
        trainer = DPOTrainer(
            model=loaded.model, ref_model=ref_model, processing_class=loaded.processor, train_dataset=dataset,
            args=_dpo_config(settings, Path(checkpoint_dir or scratch), cuda, checkpoint_dir is not None, progress),
            peft_config=LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                                   lora_dropout=settings.lora_dropout, target_modules=targets, bias="none",
                                   task_type="CAUSAL_LM"),
        )
        accelerator = trainer.accelerator
        if accelerator.is_main_process:
            log(f"DPO on {model} with {len(pairs)} pairs, {accelerator.num_processes} process(es)"
                + (f", resuming from {resume.name}" if resume is not None else ""))
        started = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        seconds = time.perf_counter() - started
    history = trainer.state.log_history
    result = DPOResult(
        adapter_dir=str(output_dir), recipe=settings.recipe(), pairs=len(pairs), steps=int(output.global_step),
        train_loss=round(float(output.training_loss), 6), rewards_chosen=_logged(history, "rewards/chosen"),
        rewards_rejected=_logged(history, "rewards/rejected"), reward_margin=_logged(history, "rewards/margins"),
        seconds=round(seconds, 2), peak_memory_mb=round(memory.peak_mb, 1),
        resumed_from_step=int(resume.name.rsplit("-", 1)[1]) if resume is not None else 0,
    )
    if accelerator.is_main_process:
        with atomic_dir(output_dir) as tmp:
            accelerator.unwrap_model(trainer.model).save_pretrained(tmp)
            loaded.processor.save_pretrained(tmp)
            atomic_write_json(tmp / "kit_dpo.json", {
                **asdict(result), "model": str(model), "reference": str(reference) if reference else "adapter disabled",
                "data": str(data) if isinstance(data, str | Path) else "(in memory)", **(metadata or {})})
        if checkpoint_dir is not None:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    return result


def dpo_stage(model: str | Path, data: str | Path, run_dir: str | Path, settings: DPOSettings | None = None,
              *, progress: bool = True, log=print) -> dict[str, Any]:
    """``dpo`` as a pipeline stage in ``run_dir/dpo-<hash>/`` (the policy's and the pairs' content and the
    recipe): a finished adapter is reused, a killed run resumes. Returns its ``kit_dpo.json``."""
    from kit.artifacts import fingerprint, stage_dir

    settings = settings or DPOSettings()
    params = {"model": fingerprint(model), "data": fingerprint(data), "recipe": settings.recipe()}
    folder = stage_dir(run_dir, "dpo", params)
    done = folder / "kit_dpo.json"
    if not done.is_file():
        dpo(model, data, folder, settings, log, checkpoint_dir=folder.with_name(folder.name + ".checkpoints"),
            progress=progress, metadata={"params": params})
    return json.loads(done.read_text())
