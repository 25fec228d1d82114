"""EACO's DPO stage and the extra SFT stage on the shipped tiny LLaVA policy: a DPO step changes the adapter
and logs the implicit rewards, the SFT stage continues that same adapter, a bad pair stops the run before
training, and the settings carry the draft code's recipe."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from kit import REPO_DIR
from kit.dpo import DRAFT_SFT_WEIGHT, DPOSettings, _dpo_config, dpo
from kit.errors import KitError
from kit.train import SFTSettings, sft
from kit.trainsets import conversation

POLICY = REPO_DIR / "data" / "models" / "tiny-llava-policy"
pytestmark = [pytest.mark.skipif(not POLICY.is_dir(), reason="the shipped tiny policy is needed"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rows = []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]):
        path = folder / f"{i}.png"
        Image.new("RGB", (112, 112), colour).save(path)
        rows.append({"id": f"img{i}", "image": str(path), "prompt": "Describe the image.",
                     "chosen": "The picture shows a large square.", "rejected": "There are 5 red circles and a dog.",
                     "scores": [4, 1], "chosen_index": 0, "rejected_index": 1})
    return rows


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
    recorded = json.loads((out / "kit_dpo.json").read_text())
    assert recorded["recipe"]["beta"] == 0.1 and recorded["recipe"]["sft_weight"] == DRAFT_SFT_WEIGHT


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
    import trl

    def no_trainer(*args, **kwargs):
        raise AssertionError("a trainer was built")

    monkeypatch.setattr(trl, "DPOTrainer", no_trainer)
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
    config = _dpo_config(settings, tmp_path, cuda=False, checkpoints=False, progress=False)
    assert config.loss_type == ["sigmoid", "sft"] and config.loss_weights == [1.0, 1 / 1024]
    assert config.max_length is None and config.beta == 0.1
    plain = _dpo_config(DPOSettings(sft_weight=0), tmp_path, cuda=False, checkpoints=False, progress=False)
    assert plain.loss_type == ["sigmoid"]
    for bad, message in [({"beta": 0}, "beta"), ({"sft_weight": -1}, "sft_weight"), ({"lora_r": -2}, "lora_r")]:
        with pytest.raises(KitError, match=message):
            DPOSettings(**bad)


def test_an_explicit_reference_model_is_used_instead_of_the_disabled_adapter(pairs, tmp_path, monkeypatch):
    import trl

    seen = {}
    original = trl.DPOTrainer.__init__

    def spy(self, *args, **kwargs):
        seen["ref_model"] = kwargs.get("ref_model")
        original(self, *args, **kwargs)

    monkeypatch.setattr(trl.DPOTrainer, "__init__", spy)
    settings = DPOSettings(lora_r=4, lora_alpha=8, learning_rate=5e-3, max_steps=1, batch_size=2,
                           gradient_accumulation=1, warmup=0)
    result = dpo(POLICY, pairs, tmp_path / "adapter", settings, reference=POLICY, log=lambda m: None)
    assert seen["ref_model"] is not None and result.steps == 1
    assert json.loads((tmp_path / "adapter" / "kit_dpo.json").read_text())["reference"] == str(POLICY)
