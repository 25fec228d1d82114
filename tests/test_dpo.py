"""EACO's DPO stage and the extra SFT stage on the shipped tiny LLaVA policy: a DPO step changes the adapter
and logs the implicit rewards, the SFT stage continues that same adapter, a bad pair stops the run before
training, and the settings carry the draft code's recipe.

The two DPO losses (``DPOSettings.loss``) are checked against arithmetic written out here, position by position:
on a hand-made batch through TRL's own ``_compute_loss`` (stand-in models whose logits are fixed tables), and
on the tiny policy with a perturbed adapter, so that the policy and the reference differ."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from fakes import preference_pairs

from kit import REPO_DIR
from kit.errors import KitError
from kit.training.data import conversation
from kit.training.dpo import (
    DRAFT_SFT_WEIGHT,
    LOSSES,
    DPOSettings,
    _dpo_config,
    _draft_trainer_class,
    _trainer,
    dpo,
    dpo_dataset,
)
from kit.training.sft import SFTSettings, lora_targets, sft

POLICY = REPO_DIR / "data" / "models" / "tiny-llava-policy"
pytestmark = [pytest.mark.skipif(not POLICY.is_dir(), reason="the shipped tiny policy is needed"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return preference_pairs(tmp_path_factory.mktemp("images"))


def _weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def dpo_adapter(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "adapter"
    settings = DPOSettings(lora_r=4, lora_alpha=8, learning_rate=5e-3, max_steps=2, batch_size=2,
                           gradient_accumulation=1, warmup=0)
    return dpo(POLICY, pairs, out, settings, log=lambda m: None), out


def test_a_dpo_step_changes_the_adapter_and_logs_the_rewards(dpo_adapter):
    result, out = dpo_adapter
    assert result.steps == 2 and result.pairs == 4
    assert len(result.rewards_chosen) == 2 and len(result.rewards_rejected) == 2
    # LoRA's B matrices start at zero: after DPO they are not, and the rewards moved apart from 0.
    lora_b = [w for name, w in _weights(out).items() if "lora_B" in name]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)
    assert result.rewards_chosen[-1] != 0 or result.rewards_rejected[-1] != 0
    assert result.train_loss == result.train_loss and abs(result.train_loss) < 1e3  # finite
    recorded = json.loads((out / "kit_dpo.json").read_text())
    assert recorded["recipe"]["beta"] == 0.1 and recorded["recipe"]["sft_weight"] == DRAFT_SFT_WEIGHT
    assert recorded["loss"] == recorded["recipe"]["loss"] == "draft"
    assert recorded["loss_formula"] == LOSSES["draft"]


@pytest.mark.peft_sft
def test_the_extra_sft_stage_continues_the_same_adapter(dpo_adapter, pairs, tmp_path):
    _, adapter = dpo_adapter
    examples = [{"id": p["id"], "kind": "description", "images": [p["image"]], "train_turns": [0],
                 "messages": conversation([p["prompt"], p["chosen"]], p["image"])} for p in pairs]
    result = sft(POLICY, examples, tmp_path / "sft", SFTSettings(lora_r=16, learning_rate=5e-3, max_steps=2,
                                                                 batch_size=2), adapter=adapter, log=lambda m: None)
    assert result.steps == 2
    before, after = _weights(adapter), _weights(tmp_path / "sft")
    assert before.keys() == after.keys()  # the same adapter, not a new one of rank 16
    assert any(not torch.equal(before[k], after[k]) for k in before)
    config = json.loads((tmp_path / "sft" / "adapter_config.json").read_text())
    assert config["r"] == 4
    assert json.loads((tmp_path / "sft" / "kit_train.json").read_text())["continued_adapter"] == str(adapter)


def test_a_bad_pair_stops_the_run_before_training(pairs, tmp_path, monkeypatch):
    import kit.training.dpo

    def no_trainer(*args, **kwargs):
        raise AssertionError("a trainer was built")

    monkeypatch.setattr(kit.training.dpo, "_trainer", no_trainer)
    missing = [*pairs[:2], {**pairs[2], "image": str(tmp_path / "gone.png")}]
    with pytest.raises(KitError, match="img2"):
        dpo(POLICY, missing, tmp_path / "adapter", DPOSettings(max_steps=1))
    empty = [*pairs[:1], {**pairs[1], "chosen": "  "}]
    with pytest.raises(KitError, match="img1"):
        dpo(POLICY, empty, tmp_path / "adapter", DPOSettings(max_steps=1))
    assert not (tmp_path / "adapter").exists()


def test_settings_carry_the_draft_recipe_and_refuse_bad_values(tmp_path):
    settings = DPOSettings()
    assert (settings.lora_r, settings.lora_alpha, settings.learning_rate, settings.beta) == (128, 256, 1e-7, 0.1)
    assert settings.batch_size * settings.gradient_accumulation == 8 and settings.epochs == 1
    assert settings.loss == "draft" and settings.sft_weight == 1 / 1024
    config = _dpo_config(settings, tmp_path, cuda=False, checkpoints=False, progress=False)
    # The draft's summed-NLL term is the draft trainer's own; TRL computes only the sigmoid term.
    assert config.loss_type == ["sigmoid"] and config.loss_weights == [1.0]
    assert config.max_length is None and config.beta == 0.1
    trl_loss = _dpo_config(DPOSettings(loss="trl_sigmoid"), tmp_path, cuda=False, checkpoints=False, progress=False)
    assert trl_loss.loss_type == ["sigmoid", "sft"] and trl_loss.loss_weights == [1.0, 1 / 1024]
    plain = _dpo_config(DPOSettings(loss="trl_sigmoid", sft_weight=0), tmp_path, cuda=False, checkpoints=False,
                        progress=False)
    assert plain.loss_type == ["sigmoid"]
    for bad, message in [({"beta": 0}, "beta"), ({"sft_weight": -1}, "sft_weight"), ({"lora_r": -2}, "lora_r"),
                         ({"loss": "sigmoid"}, "loss must be one of draft, trl_sigmoid")]:
        with pytest.raises(KitError, match=message):
            DPOSettings(**bad)


@pytest.mark.trl_fused_head
def test_an_explicit_reference_model_is_used_instead_of_the_disabled_adapter(pairs, tmp_path, monkeypatch):
    import trl

    seen = {}
    original = trl.DPOTrainer.__init__

    def spy(self, *args, **kwargs):
        seen["ref_model"] = kwargs.get("ref_model")
        original(self, *args, **kwargs)

    monkeypatch.setattr(trl.DPOTrainer, "__init__", spy)
    settings = DPOSettings(lora_r=4, lora_alpha=8, learning_rate=5e-3, max_steps=1, batch_size=2,
                           gradient_accumulation=1, warmup=0, loss="trl_sigmoid")
    result = dpo(POLICY, pairs, tmp_path / "adapter", settings, reference=POLICY, log=lambda m: None)
    assert seen["ref_model"] is not None and result.steps == 1
    recorded = json.loads((tmp_path / "adapter" / "kit_dpo.json").read_text())
    assert recorded["reference"] == str(POLICY) and recorded["loss"] == "trl_sigmoid"
    assert any(w.abs().sum() > 0 for name, w in _weights(tmp_path / "adapter").items() if "lora_B" in name)


# -- the two losses, by hand ---------------------------------------------------------------------------------


def _sequence_logp(logits, ids, completion, row: int, noisy: bool) -> float:
    """Sum over the completion tokens of ``row`` of log p(token), logits[t] predicting ids[t + 1]; with
    ``noisy`` the token scored is the draft's instead: the most likely one that is not ids[t + 1] (top-1, or
    top-2 when top-1 is ids[t + 1])."""
    total = 0.0
    for t in range(ids.shape[1] - 1):
        if not completion[row, t + 1]:
            continue
        z = [float(x) for x in logits[row, t]]
        label = int(ids[row, t + 1])
        by_score = sorted(range(len(z)), key=lambda v: -z[v])
        token = (by_score[1] if by_score[0] == label else by_score[0]) if noisy else label
        total += z[token] - math.log(sum(math.exp(x) for x in z))
    return total


def _loss_by_hand(loss: str, policy, reference, ids, completion, beta: float, sft_weight: float) -> float:
    """The batch loss: rows [0, n) are the chosen answers, rows [n, 2n) the rejected ones."""
    n = ids.shape[0] // 2
    noisy = loss == "draft"
    total, chosen_sum, chosen_tokens = 0.0, 0.0, 0
    for i in range(n):
        policy_chosen = _sequence_logp(policy, ids, completion, i, False)
        policy_rejected = _sequence_logp(policy, ids, completion, n + i, noisy)
        margin = (policy_chosen - policy_rejected) - (_sequence_logp(reference, ids, completion, i, False)
                                                      - _sequence_logp(reference, ids, completion, n + i, noisy))
        total += math.log1p(math.exp(-beta * margin)) / n  # -log sigmoid(beta * margin)
        if loss == "draft":
            total += -policy_chosen * sft_weight / n  # the summed chosen log-probability / 1024, batch mean
        chosen_sum += policy_chosen
        chosen_tokens += int(completion[i, 1:].sum())
    if loss == "trl_sigmoid":
        total += sft_weight * -chosen_sum / chosen_tokens  # TRL's sft: the mean NLL per chosen token
    return total


class _TableModel(torch.nn.Module):
    """A stand-in causal LM whose next-token logits are a fixed table (rows, positions, vocab): its backbone
    returns the table as hidden states and its LM head is the identity, so TRL's fused head and the plain
    forward both see exactly these logits."""

    is_gradient_checkpointing = False

    def __init__(self, table: torch.Tensor) -> None:
        from transformers import PretrainedConfig

        super().__init__()
        self.config = PretrainedConfig()
        self.table = torch.nn.Parameter(table.clone())
        self.head = torch.nn.Linear(table.shape[-1], table.shape[-1], bias=False)
        self.head.weight.data = torch.eye(table.shape[-1])
        self.head.weight.requires_grad_(False)
        self.base_model = lambda *args, **kwargs: SimpleNamespace(last_hidden_state=self.table)

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.head

    def forward(self, *args, **kwargs):
        from transformers.modeling_outputs import CausalLMOutput

        return CausalLMOutput(logits=self.head(self.table))


def _trainer_on_tables(loss: str, policy: _TableModel, reference: _TableModel, beta: float, sft_weight: float,
                       tmp_path):
    """The kit's trainer for ``loss`` around two table models, with the attributes TRL 1.16's
    ``DPOTrainer._compute_loss`` reads (its constructor needs a real model, processor and dataset)."""
    from trl import DPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    args = _dpo_config(DPOSettings(loss=loss, beta=beta, sft_weight=sft_weight), tmp_path, cuda=False,
                       checkpoints=False, progress=False)
    cls = _draft_trainer_class() if loss == "draft" else DPOTrainer
    trainer = cls.__new__(cls)
    add_fused_lm_head(policy, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))  # as DPOTrainer does
    add_fused_lm_head(reference)
    trainer.__dict__.update(
        model=policy, ref_model=reference, args=args, aux_loss_enabled=False, beta=args.beta,
        precompute_ref_logps=False, loss_types=args.loss_type, loss_weights=args.loss_weights, ld_alpha=None,
        f_divergence_type=args.f_divergence_type, f_alpha_divergence_coef=args.f_alpha_divergence_coef,
        label_smoothing=args.label_smoothing, use_weighting=args.use_weighting, _total_train_tokens=0, _tp_size=1,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x))
    if loss == "draft":
        trainer.setup_draft(sft_weight)
    return trainer


# Two pairs: rows 0-1 chosen, rows 2-3 rejected; tokens 0-1 are the prompt, the rest the answers (0 pads).
IDS = torch.tensor([[0, 1, 2, 3, 4, 1], [0, 1, 3, 2, 0, 0], [0, 1, 4, 4, 2, 0], [0, 1, 1, 0, 3, 2]])
COMPLETION = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]])


def _tables() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    policy = torch.randn(4, 6, 5, generator=generator) * 2
    reference = policy + torch.randn(4, 6, 5, generator=generator)
    policy[2, 1, 4] = reference[2, 1, 4] = 6.0  # rejected row 2 predicts its own token 4: the top-2 branch
    policy[3, 3, 3] = -6.0  # and row 3 its token 3 least: the top-1 branch
    return policy, reference


@pytest.mark.parametrize("loss", ["draft", pytest.param("trl_sigmoid", marks=pytest.mark.trl_fused_head)])
def test_each_loss_on_a_hand_made_batch_is_the_hand_computed_one(loss, tmp_path):
    policy_table, reference_table = _tables()
    # The batch exercises both of the draft's rules on the rejected rows.
    top1_is_label = [bool(policy_table[r, t].argmax() == IDS[r, t + 1])
                     for r in (2, 3) for t in range(5) if COMPLETION[r, t + 1]]
    assert any(top1_is_label) and not all(top1_is_label)
    beta, sft_weight = 0.5, 0.25
    policy, reference = _TableModel(policy_table), _TableModel(reference_table)
    trainer = _trainer_on_tables(loss, policy, reference, beta, sft_weight, tmp_path)
    inputs = {"input_ids": IDS, "attention_mask": torch.ones_like(IDS), "completion_mask": COMPLETION}
    value = trainer._compute_loss(policy, inputs, False)
    expected = _loss_by_hand(loss, policy_table, reference_table, IDS, COMPLETION, beta, sft_weight)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    other = _loss_by_hand("trl_sigmoid" if loss == "draft" else "draft", policy_table, reference_table, IDS,
                          COMPLETION, beta, sft_weight)
    assert abs(other - expected) > 0.1  # the two formulas differ on this batch, so the check can fail
    value.backward()
    assert policy.table.grad[2:].abs().sum() > 0  # the rejected rows' scores carry a gradient
    logged = trainer._metrics["train"]
    n = 2
    rejected_by_hand = [beta * (_sequence_logp(policy_table, IDS, COMPLETION, n + i, loss == "draft")
                                - _sequence_logp(reference_table, IDS, COMPLETION, n + i, loss == "draft"))
                        for i in range(n)]
    assert logged["rewards/rejected"][-1] == pytest.approx(sum(rejected_by_hand) / n, rel=1e-5)


def test_the_draft_loss_on_the_tiny_policy_is_the_hand_computed_one(pairs, tmp_path):
    from kit.llm.models import load

    settings = DPOSettings(lora_r=4, lora_alpha=8, max_steps=1, batch_size=2, gradient_accumulation=1, warmup=0,
                           beta=0.5, sft_weight=0.25)
    loaded = load(POLICY)
    args = _dpo_config(settings, tmp_path, cuda=False, checkpoints=False, progress=False)
    trainer = _trainer(loaded, dpo_dataset(pairs), settings, args, lora_targets(loaded.model, settings))
    model = trainer.model
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter, so that the policy and its reference differ
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.5)
    batch = next(iter(trainer.get_train_dataloader()))
    value = trainer.compute_loss(model, batch)
    inputs = {key: tensor for key, tensor in batch.items() if key != "completion_mask"}
    with torch.no_grad():
        policy_logits = model(**inputs).logits
        with model.disable_adapter():
            reference_logits = model(**inputs).logits
    ids, completion = batch["input_ids"], batch["completion_mask"]
    assert abs(_sequence_logp(policy_logits, ids, completion, 0, False)
               - _sequence_logp(reference_logits, ids, completion, 0, False)) > 0.5
    expected = _loss_by_hand("draft", policy_logits, reference_logits, ids, completion, 0.5, 0.25)
    assert value.item() == pytest.approx(expected, rel=1e-4)
