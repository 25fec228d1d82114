"""EACO's preference stage (arXiv 2412.04903): DPO on Critic-chosen pairs, with an SFT term on the chosen
response, through TRL's ``DPOTrainer``; the extra SFT stage that follows is ``kit.training.sft.sft(...,
adapter=<this adapter>)``, which continues the same adapter.

::

    from kit.training.dpo import DPOSettings, dpo
    result = dpo("data/models/tiny-llava-policy", "run/pairs.jsonl", "run/adapters/dpo", DPOSettings())
    # result.rewards_chosen / result.rewards_rejected: the implicit rewards TRL logged, first and last step

What the authors' draft code does (github.com/yongxinwang-ai/EACO_draft @ dfac188; every file cited is the same
at the snapshot's newest commit, 23ac840), and the defaults here:

- ``scripts/dpo_finetune.sh`` runs ``llava/train/train_dpo.py`` with LoRA r 128, alpha 256 on the language model
  (``--lora_r 128 --lora_alpha 256``), learning rate 1e-7, 1 epoch, cosine schedule, warm-up 3 %
  (``--learning_rate 1e-7 --num_train_epochs 1 --lr_scheduler_type cosine --warmup_ratio 0.03``) and a global
  batch of 8 (``--per_device_train_batch_size 1 --gradient_accumulation_steps 2`` on 4 GPUs): here batch 1 x
  accumulation 8 on one device.
- The trainer is ``EACO/dpo_trainer.py`` (the same file as STIC's ``stic/dpo_trainer.py``): ``LLaVATrainer``
  subclasses ``trl.DPOTrainer`` (``llava/train/llava_trainer.py`` lines 17 and 134), and the draft's file is a
  drop-in replacement for the installed ``trl/trainer/dpo_trainer.py`` (relative imports, lines 40-42; STIC's
  README, step 3, has the user copy it there). Its loss, ``DPOSettings.loss="draft"`` here:

  - the chosen answer's log-probability is the SUM of its tokens' log-probabilities
    (``_get_batch_logps``, lines 465-497, with ``average_log_prob=False`` at lines 595-599);
  - the rejected answer is not scored by its own tokens: ``_get_noisy_batch_logps`` (lines 498-545, called at
    lines 618-623) sums, over the rejected answer's positions (label != -100, after the one-token shift), the
    log-probability of the most likely token that is NOT the rejected token there: top-1, or top-2 when top-1
    is the rejected token (lines 529-538). The policy and the reference each choose by their own logits, since
    the reference pass runs the same ``concatenated_forward`` (lines 642-657);
  - ``losses = -F.logsigmoid(self.beta * logits)`` (line 452; beta 0.1, the default at line 123) on
    ``(pi_chosen - pi_rejected) - (ref_chosen - ref_rejected)`` (lines 443-449), then
    ``losses -= policy_chosen_logps / 1024`` (line 458): the chosen answer's SUMMED negative log-likelihood
    divided by 1024, so the term grows with the answer's length; the loss is the batch mean (line 677);
  - the reference is the policy with its adapter disabled (lines 643-650), TRL's behaviour for a LoRA run
    without an explicit ``ref_model``.

  ``DPOSettings.loss="trl_sigmoid"`` is TRL's loss instead: sigmoid DPO on the rejected answer's own tokens plus
  ``sft_weight`` x TRL's ``sft`` term, which is the MEAN negative log-likelihood per chosen token, about L times
  weaker than the draft's term for answers of L tokens.
- Inputs: ``train_dpo.py``'s ``model_max_length`` defaults to 1048 (lines 118-119; ``dpo_finetune.sh`` does
  not set it) and is applied after the image is expanded into its 576 features
  (``model.config.tokenizer_model_max_length``, line 940; ``llava/model/llava_arch.py`` lines 274-277), so an
  answer is cut after about 400 tokens and the image never is. The kit's LLaVA-NeXT processor expands an image
  into its anyres tiles (2,340 tokens for a 640 x 480 COCO image) and TRL's ``max_length`` cuts the whole
  sequence, image tokens included, so DPO keeps ``max_length=None``: whole answers (``kit.core.deviations``
  ``eaco-dpo-no-truncation``).

How the draft loss runs on TRL 1.16's ``DPOTrainer`` (a subclass, no fork): TRL scores every token through the
fused LM head it patches onto the model (``trl.trainer.utils.add_fused_lm_head``); ``DPOTrainer._compute_loss``
calls ``model(..., labels=..., fused_lm_head=True).log_probs`` for the policy and then the reference, on a batch
whose first half are the chosen rows and second half the rejected rows. ``_DraftHead`` wraps that head: such a
call runs the model's own forward to full float32 logits (as the draft does) and returns ``draft_token_logps``,
the draft's noisy rule on the rejected half; TRL then computes its sigmoid loss, rewards and metrics from those
sums (so ``rewards/rejected`` and ``logps/rejected`` are the draft's noisy ones, as the draft logs them), and the
subclass's ``_compute_loss`` adds ``sft_weight`` x the policy's summed chosen NLL, averaged over the batch.

DPO runs on transformers + peft + TRL on every device (the draft uses DeepSpeed; Unsloth serves the SFT
stages). Several GPUs (or CPU processes): ``accelerate launch -m kit.training.dpo POLICY PAIRS OUT [options]``, one option
per ``DPOSettings`` field (``python -m kit.training.dpo --help``); ``launch_command(...)`` builds the command that trains
exactly what ``dpo_stage`` would, into its folder, so the stage then reuses the adapter.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
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
)

DRAFT_SFT_WEIGHT = 1 / 1024  # EACO/dpo_trainer.py line 458: `losses -= policy_chosen_logps / 1024`
LOSSES: dict[str, str] = {  # DPOSettings.loss -> what it computes (kit_dpo.json records it)
    "draft": "-logsigmoid(beta * margin), the rejected answer scored by the draft's noisy tokens (top-1, or top-2 "
             "when top-1 is the rejected token), + sft_weight * the chosen answer's summed NLL; batch mean",
    "trl_sigmoid": "TRL's sigmoid DPO on the rejected answer's own tokens + sft_weight * TRL's sft term (the mean "
                   "NLL per chosen token); batch mean",
}


@dataclass(frozen=True)
class DPOSettings:
    """One DPO recipe; the defaults are the draft code's (module docstring).

    ``loss`` names the objective (``LOSSES``): ``"draft"`` is the draft trainer's (``EACO/dpo_trainer.py``):
    sigmoid DPO with ``beta`` where the rejected answer's log-probability is that of the most likely token other
    than the rejected one at each of its positions, plus ``sft_weight`` x the chosen answer's summed negative
    log-likelihood (1/1024 in the draft). ``"trl_sigmoid"`` is TRL's sigmoid DPO on the rejected answer's own
    tokens plus ``sft_weight`` x TRL's per-token mean NLL of the chosen answers. ``sft_weight`` 0 drops the SFT
    term from either."""

    # Each field's end-of-line comment is also its help on the command line (kit.core.settings_cli).
    lora_r: int = 128  # LoRA rank
    lora_alpha: int = 256  # LoRA alpha (the update is scaled by alpha / r)
    lora_dropout: float = 0.05  # dropout on the LoRA path
    target_modules: tuple[str, ...] = LANGUAGE_ATTENTION + LANGUAGE_MLP  # linear layers LoRA wraps, by name
    finetune_vision_layers: bool = False  # also wrap the target modules inside the vision tower
    learning_rate: float = 1e-7  # peak learning rate
    epochs: float = 1.0  # passes over the pairs
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 1  # pairs per step and process
    gradient_accumulation: int = 8  # steps whose gradients add up before each update
    warmup: float = 0.03  # a fraction of the run (< 1) or steps (>= 1)
    scheduler: str = "cosine"  # learning-rate schedule (transformers' SchedulerType)
    beta: float = 0.1  # DPO's beta: how far the policy may move from the reference
    loss: str = field(default="draft", metadata={"choices": tuple(LOSSES)})  # the objective (LOSSES)
    sft_weight: float = DRAFT_SFT_WEIGHT  # weight of the SFT term on the chosen answer (0: none)
    max_length: int | None = None  # None: vision rows are never cut (TRL would cut image tokens first)
    seed: int = 0  # LoRA initialisation and data order
    logging_steps: int = 1  # log the loss and rewards every N steps
    checkpoint_steps: int = 100  # with dpo(checkpoint_dir=...): save every N steps, so a killed run resumes
    extra: dict[str, Any] = field(default_factory=dict)  # passed to TRL's DPOConfig as they are (JSON on the command line)

    @classmethod
    def from_profile(cls, profile: Any, section: str, **overrides: Any) -> DPOSettings:
        """The recipe in the profile's ``section`` (dpo), with the profile's ``seed``; ``overrides`` win."""
        from kit.core.settings_cli import settings_from_profile

        return settings_from_profile(cls, profile.get(section), **{"seed": profile.get("seed"), **overrides})

    def __post_init__(self) -> None:
        check_settings(self, "DPO settings", [(self.beta > 0, "beta must be > 0"),
                                              (self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}"),
                                              (self.sft_weight >= 0, "sft_weight must be >= 0")])

    def recipe(self) -> dict[str, Any]:
        """What the run trains: every field but ``logging_steps`` and ``checkpoint_steps`` (``recipe_of``)."""
        return recipe_of(self)


@dataclass
class DPOResult:
    adapter_dir: str
    recipe: dict[str, Any]
    loss: str  # the DPOSettings.loss that ran
    pairs: int
    steps: int
    train_loss: float
    rewards_chosen: list[float]  # TRL's rewards/chosen at the first and the last logged step
    rewards_rejected: list[float]
    reward_margin: list[float]
    seconds: float
    peak_memory_mb: float
    resumed_from_step: int = 0


def draft_token_logps(logits: Any, labels: Any, noisy: Any) -> Any:
    """Per-position log-probabilities as the draft's trainer scores them. ``logits`` (rows, positions, vocab)
    score the next-token ``labels`` (rows, positions; -100 where nothing is scored) at the same index, i.e. both
    already shifted by one. A row whose ``noisy`` (rows,) entry is true scores, at each position, the most likely
    token other than its label (top-1, or top-2 when top-1 is the label: ``_get_noisy_batch_logps``), the others
    their label (``_get_batch_logps``). The gradient flows through the scored token's log-probability, not through
    the choice of token. Unscored positions are 0; summing over positions gives the draft's sequence log-probs."""
    return _draft_scores(logits, labels, noisy)[0]


def _draft_scores(logits: Any, labels: Any, noisy: Any) -> tuple[Any, Any]:
    import torch

    logits = logits.float()  # the draft scores float32 logits (`.logits.to(torch.float32)`, lines 584 and 607)
    scored = labels != -100
    top_two = logits.topk(2, dim=-1).indices
    other = torch.where(top_two[..., 0] == labels, top_two[..., 1], top_two[..., 0])
    target = torch.where(noisy.to(labels.device)[:, None], other, labels.clamp(min=0))
    log_softmax = logits.log_softmax(-1)
    token_logps = log_softmax.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return torch.where(scored, token_logps, torch.zeros_like(token_logps)), log_softmax


class _DraftHead:
    """Wraps the fused LM head that TRL patched onto ``model`` (``add_fused_lm_head``) so that a
    ``fused_lm_head=True`` call returns the draft's per-token log-probabilities: the label's for the chosen rows
    (the batch's first half) and the noisy token's for the rejected rows (the second half: ``DPOTrainer``'s
    batches are [chosen, rejected]). Other calls (generation, plain forwards) pass through unchanged.

    With ``record``, the first such call after ``chosen_logps`` is reset keeps the chosen rows' summed
    log-probabilities, with their gradient: ``DPOTrainer._compute_loss`` runs the policy before the reference,
    which, for a LoRA run, is the same model with its adapter disabled and goes through the same head."""

    def __init__(self, model: Any, record: bool) -> None:
        self.fused = model.forward
        self.record = record
        self.chosen_logps: Any = None
        model.forward = self.forward

    def forward(self, *args: Any, fused_lm_head: bool = False, labels: Any = None, shift_labels: Any = None,
                num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        import torch
        from trl.trainer.utils import FusedCausalLMOutput

        if not fused_lm_head:
            return self.fused(*args, labels=labels, shift_labels=shift_labels, num_items_in_batch=num_items_in_batch,
                              **kwargs)
        if shift_labels is not None:
            raise KitError("DPO loss 'draft' does not support pre-shifted labels (context or sequence parallelism)")
        logits = self.fused(*args, **kwargs).logits[:, :-1]  # the model's own forward: full logits
        labels = labels[:, 1:].to(logits.device)
        rows = logits.size(0)
        noisy = torch.arange(rows, device=logits.device) >= rows // 2
        log_probs, log_softmax = _draft_scores(logits, labels, noisy)
        if self.record and self.chosen_logps is None:
            self.chosen_logps = log_probs[: rows // 2].sum(-1)
        scored = labels != -100
        with torch.no_grad():  # TRL's metrics (entropy, logits/*, mean_token_accuracy, WPO weights)
            probs = log_softmax.exp()
            per_token = (-(probs * log_softmax).sum(-1), torch.logsumexp(2 * log_softmax, dim=-1),
                         logits.float().mean(-1))
            entropy, log_sum_sq_probs, mean_logits = (torch.where(scored, x, torch.zeros_like(x)) for x in per_token)
            is_top1 = (logits.argmax(-1) == labels) & scored
        return FusedCausalLMOutput(loss=-log_probs.sum() / scored.sum().clamp(min=1), log_probs=log_probs,
                                   entropy=entropy, log_sum_sq_probs=log_sum_sq_probs, mean_logits=mean_logits,
                                   is_top1=is_top1, label_mask=scored)


@functools.cache
def _draft_trainer_class() -> type:
    """TRL's ``DPOTrainer`` with the draft's loss (``DPOSettings.loss="draft"``), built on first use so that
    importing ``kit.training.dpo`` does not import TRL."""
    from accelerate.utils import is_peft_model
    from trl import DPOTrainer

    class DraftDPOTrainer(DPOTrainer):
        """``DPOTrainer`` whose token scores are the draft's (``_DraftHead``, on the policy and on an explicit
        reference) and whose loss adds ``sft_weight`` x the policy's summed chosen NLL to TRL's sigmoid loss
        (configure TRL with ``loss_type=["sigmoid"]``)."""

        def __init__(self, *args: Any, sft_weight: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.setup_draft(sft_weight)

        def setup_draft(self, sft_weight: float) -> None:
            self.draft_sft_weight = sft_weight
            policy = self.model.get_base_model() if is_peft_model(self.model) else self.model
            self.draft_head = _DraftHead(policy, record=True)
            if self.ref_model is not None:
                _DraftHead(self.ref_model, record=False)

        def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
            self.draft_head.chosen_logps = None
            result = super()._compute_loss(model, inputs, return_outputs)
            chosen, self.draft_head.chosen_logps = self.draft_head.chosen_logps, None
            if chosen is None:
                raise KitError("DPO loss 'draft': the policy's forward did not go through the draft's LM head")
            # EACO/dpo_trainer.py: `losses -= policy_chosen_logps / 1024` (line 458), then `losses.mean()` (677)
            sft = -chosen.mean() * self.draft_sft_weight
            self._metrics["train" if self.model.training else "eval"]["draft_sft"].append(float(sft.detach()))
            if return_outputs:
                return result[0] + sft, result[1]
            return result + sft

    return DraftDPOTrainer


def dpo_dataset(pairs: list[dict[str, Any]]):
    """Preference pairs (``kit.eaco.preference`` rows, validated) as a ``datasets.Dataset`` in TRL's conversational
    vision format with the images opened."""
    from datasets import Dataset, Features, Image, Sequence

    from kit.training.data import to_dpo_rows, validate_pairs

    validate_pairs(pairs, "DPO pairs")
    rows = to_dpo_rows(pairs)
    dataset = Dataset.from_list(rows)
    return dataset.cast(Features({**dataset.features, "images": Sequence(Image())}))


def _pairs(data: Any) -> list[dict[str, Any]]:
    from kit.training.data import read_pairs

    if isinstance(data, str | Path):
        return read_pairs(data)
    return list(data)


def _dpo_config(settings: DPOSettings, output_dir: Path, cuda: bool, checkpoints: bool, progress: bool):
    """TRL's ``DPOConfig`` for ``settings``: the arguments both trainers share (``trainer_config``) and DPO's own."""
    from trl import DPOConfig

    # "draft": TRL computes the sigmoid term only; the draft trainer adds its summed-NLL term itself.
    losses, weights = ["sigmoid"], [1.0]
    if settings.loss == "trl_sigmoid" and settings.sft_weight > 0:
        losses.append("sft")
        weights.append(settings.sft_weight)
    return trainer_config(DPOConfig, settings, output_dir, cuda=cuda, checkpoints=checkpoints, progress=progress,
                          lr_scheduler_type=settings.scheduler, beta=settings.beta, loss_type=losses,
                          loss_weights=weights)


def _trainer(loaded: Any, dataset: Any, settings: DPOSettings, args: Any, targets: list[str],
             ref_model: Any = None) -> Any:
    """The trainer ``settings.loss`` names, with a fresh LoRA adapter on ``targets``."""
    from trl import DPOTrainer

    options: dict[str, Any] = dict(
        model=loaded.model, ref_model=ref_model, processing_class=loaded.processor, train_dataset=dataset, args=args,
        peft_config=lora_config(settings, targets), callbacks=[thread_share_callback()])
    if settings.loss == "draft":
        return _draft_trainer_class()(**options, sft_weight=settings.sft_weight)
    return DPOTrainer(**options)


def _logged(history: list[dict[str, Any]], key: str) -> list[float]:
    values = [round(float(entry[key]), 6) for entry in history if key in entry]
    return [values[0], values[-1]] if values else []


def dpo(model: Any, data: Any, output_dir: str | Path, settings: DPOSettings | None = None, log=print, *,
        reference: str | Path | None = None, checkpoint_dir: str | Path | None = None, progress: bool = False,
        metadata: dict[str, Any] | None = None) -> DPOResult:
    """DPO-tune ``model`` (a folder or hub id) with a fresh LoRA adapter on preference ``data`` (a
    ``kit.eaco.preference`` pairs file or its rows) and save the adapter with the processor in ``output_dir``
    (PEFT format), atomically, with ``kit_dpo.json`` (the recipe, the loss that ran and its formula, the logged
    rewards, the speed and ``metadata``). A pair with a missing image or an empty response stops the run before
    training, naming it. ``checkpoint_dir`` makes a killed run resume from its last checkpoint, as
    ``kit.training.sft.sft`` does.

    ``reference``: an explicit reference model (a folder, hub id or adapter folder, e.g. an earlier stage's
    model) instead of the policy with its adapter disabled."""
    import torch

    from kit.llm.models import load

    settings = settings or DPOSettings()
    pairs = _pairs(data)
    if not pairs:
        raise KitError(f"DPO: no preference pairs in {data}")
    dataset = dpo_dataset(pairs)
    cuda = torch.cuda.is_available()
    loaded = load(model, dtype="bfloat16" if cuda else None)
    targets = lora_targets(loaded.model, settings)  # a module the model lacks is named before training starts
    output_dir = Path(output_dir)
    resume = last_checkpoint(checkpoint_dir)
    with tempfile.TemporaryDirectory(prefix="kit-dpo-") as scratch, PeakMemory() as memory:
        torch.manual_seed(settings.seed)
        ref_model = load(reference, dtype="bfloat16" if cuda else None).model if reference is not None else None
        args = _dpo_config(settings, Path(checkpoint_dir or scratch), cuda, checkpoint_dir is not None, progress)
        trainer = _trainer(loaded, dataset, settings, args, targets, ref_model)
        accelerator = trainer.accelerator
        if accelerator.is_main_process:
            log(f"DPO ({settings.loss} loss) on {model} with {len(pairs)} pairs, {accelerator.num_processes} "
                "process(es)" + (f", resuming from {resume.name}" if resume is not None else ""))
        started = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        seconds = time.perf_counter() - started
    history = trainer.state.log_history
    result = DPOResult(
        adapter_dir=str(output_dir), recipe=settings.recipe(), loss=settings.loss, pairs=len(pairs),
        steps=int(output.global_step), train_loss=round(float(output.training_loss), 6),
        rewards_chosen=_logged(history, "rewards/chosen"), rewards_rejected=_logged(history, "rewards/rejected"),
        reward_margin=_logged(history, "rewards/margins"), seconds=round(seconds, 2),
        peak_memory_mb=round(memory.peak_mb, 1),
        resumed_from_step=checkpoint_step(resume),
    )
    save_adapter(accelerator, trainer.model, loaded.processor, output_dir, "kit_dpo.json", {
        **asdict(result), "loss_formula": LOSSES[settings.loss], "model": str(model),
        "reference": str(reference) if reference else "adapter disabled",
        "data": str(data) if isinstance(data, str | Path) else "(in memory)", **(metadata or {})}, checkpoint_dir)
    return result


def _adapter_folder(model: str | Path, data: str | Path, run_dir: str | Path,
                    settings: DPOSettings) -> tuple[Path, dict[str, Any]]:
    """The ``dpo-<hash>`` folder of a DPO stage and the params its hash is taken over: the policy's and the
    pairs' content and the recipe."""
    from kit.core.artifacts import fingerprint, stage_dir

    params = {"model": fingerprint(model), "data": fingerprint(data), "recipe": settings.recipe()}
    return stage_dir(run_dir, "dpo", params), params


def stage_folder(model: str | Path, data: str | Path, run_dir: str | Path,
                 settings: DPOSettings | None = None) -> Path:
    """The ``dpo-<hash>`` folder ``dpo_stage`` uses for these arguments: train into it elsewhere
    (``launch_command``) and ``dpo_stage`` reuses the finished adapter."""
    return _adapter_folder(model, data, run_dir, settings or DPOSettings())[0]


def dpo_stage(model: str | Path, data: str | Path, run_dir: str | Path, settings: DPOSettings | None = None,
              *, progress: bool = True, log=print) -> dict[str, Any]:
    """``dpo`` as a pipeline stage in ``run_dir/dpo-<hash>/`` (the policy's and the pairs' content and the
    recipe): a finished adapter is reused, a killed run resumes. Returns its ``kit_dpo.json``."""
    settings = settings or DPOSettings()
    folder, params = _adapter_folder(model, data, run_dir, settings)
    done = folder / "kit_dpo.json"
    if not done.is_file():
        dpo(model, data, folder, settings, log, checkpoint_dir=checkpoint_folder(folder), progress=progress,
            metadata={"params": params})
    return json.loads(done.read_text())


# ------------------------------------------------------------------------------------------ command line
DPO_OPTIONS = SettingsOptions(DPOSettings, flags={"finetune_vision_layers": "--finetune-vision"})  # as kit.training.sft's


def launch_command(policy: str | Path, pairs: str | Path, run_dir: str | Path, settings: DPOSettings | None = None,
                   *, processes: int = 2, extra_launch_args: Sequence[str] = ()) -> list[str]:
    """The ``accelerate launch ... -m kit.training.dpo`` command (a list: ``shlex.join`` prints it) that trains, in
    ``processes`` processes, what ``dpo_stage(policy, pairs, run_dir, settings)`` would, into the folder it
    would (``stage_folder``) with its checkpoints beside it, so that ``dpo_stage`` then reuses the adapter.
    ``--batch-size`` is per process: the effective batch is ``processes`` times the one-process stage's."""
    settings = settings or DPOSettings()
    folder = stage_folder(policy, pairs, run_dir, settings).absolute()
    arguments = [absolute_if_local(policy), absolute_if_local(pairs), str(folder), *DPO_OPTIONS.argv(settings),
                 "--checkpoint-dir", str(checkpoint_folder(folder))]
    return accelerate_command("kit.training.dpo", arguments, processes=processes, extra_launch_args=extra_launch_args)


def argument_parser() -> argparse.ArgumentParser:
    """``python -m kit.training.dpo``'s options: POLICY PAIRS OUTPUT, ``--checkpoint-dir`` and one option per
    ``DPOSettings`` field (``DPO_OPTIONS``)."""
    parser = argparse.ArgumentParser(prog="python -m kit.training.dpo",
                                     description="DPO with a fresh LoRA adapter on preference pairs (kit.training.dpo.dpo).")
    parser.add_argument("policy", help="policy model folder or hub id (a fresh LoRA adapter is trained on it)")
    parser.add_argument("pairs", type=Path, help="preference pairs (kit.eaco.preference JSONL)")
    parser.add_argument("output", type=Path, help="adapter folder to write (a dpo_stage folder: see launch_command)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="save checkpoints here and resume from the last one after a kill")
    DPO_OPTIONS.add_to(parser, "DPO settings (kit.training.dpo.DPOSettings)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m kit.training.dpo POLICY PAIRS OUTPUT [options]`` (or ``accelerate launch -m kit.training.dpo ...``)."""
    return run_training_command(
        argument_parser(), DPO_OPTIONS, argv, "dpo",
        stage=lambda args, settings, run_dir: _adapter_folder(args.policy, args.pairs, run_dir, settings),
        train=lambda args, settings, metadata: dpo(args.policy, args.pairs, args.output, settings,
                                                   checkpoint_dir=args.checkpoint_dir, metadata=metadata))

if __name__ == "__main__":
    raise SystemExit(main())
