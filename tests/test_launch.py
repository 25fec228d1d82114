"""Every training stage under ``accelerate launch``: the settings dataclasses as command lines (exact round
trips, clear errors), ``launch_command`` training into the very folder the stage function uses (the students'
SFT, the Critic, DPO and the extra SFT), stage folder names pinned, and, with two CPU processes, DPO and the
extra SFT continuing its adapter, each then reused by its stage function without training again."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from fakes import preference_pairs
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from kit import REPO_DIR
from kit.core.settings_cli import SettingsOptions, accelerate_command, field_comments
from kit.errors import KitError
from kit.training import dpo
from kit.training import sft as train
from kit.training.data import conversation, write_set
from kit.training.dpo import DPO_OPTIONS, DPOSettings
from kit.training.sft import SFT_OPTIONS, SFTSettings

POLICY = REPO_DIR / "data" / "models" / "tiny-llava-policy"


# ------------------------------------------------------------------------------------------ round trips
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,8}", fullmatch=True)
positive = st.one_of(st.integers(1, 10**6), st.floats(min_value=1e-12, max_value=1e6))  # ints stay ints
any_number = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=6))
extra = st.dictionaries(st.text(max_size=6), st.one_of(json_scalars, st.lists(json_scalars, max_size=3)), max_size=3)


def _common() -> dict[str, Any]:
    return dict(
        lora_r=st.integers(1, 512), lora_alpha=st.integers(1, 1024), lora_dropout=st.floats(0, 0.999),
        target_modules=st.lists(identifiers, min_size=1, max_size=4).map(tuple),
        finetune_vision_layers=st.booleans(), learning_rate=positive, epochs=positive,
        max_steps=st.integers(-5, 10**6), batch_size=st.integers(1, 64), gradient_accumulation=st.integers(1, 64),
        max_length=st.one_of(st.none(), st.integers(1, 10**5)), warmup=any_number, seed=st.integers(-2**31, 2**31),
        logging_steps=st.integers(-3, 1000), checkpoint_steps=st.integers(1, 10**5), extra=extra)


sft_settings = st.builds(SFTSettings, **_common(), backend=st.sampled_from(train.BACKENDS))
dpo_settings = st.builds(DPOSettings, **_common(), scheduler=st.text(max_size=12), beta=positive,
                         loss=st.sampled_from(tuple(dpo.LOSSES)), sft_weight=st.one_of(st.just(0), positive))


def _through_the_command_line(module: Any, options: SettingsOptions, settings: Any, every: bool) -> Any:
    # The module's own parser, positionals and all, as `python -m kit.training.sft` reads it.
    args = module.argument_parser().parse_args(["MODEL", "DATA", "OUT", *options.argv(settings, every=every)])
    return options.settings(args)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings=sft_settings, every=st.booleans())
def test_sft_settings_round_trip_through_the_command_line(settings, every):
    back = _through_the_command_line(train, SFT_OPTIONS, settings, every)
    assert back == settings and repr(back) == repr(settings)  # repr: 5 and 5.0 hash differently


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings=dpo_settings, every=st.booleans())
def test_dpo_settings_round_trip_through_the_command_line(settings, every):
    back = _through_the_command_line(dpo, DPO_OPTIONS, settings, every)
    assert back == settings and repr(back) == repr(settings)


def test_the_command_line_keeps_numbers_types_and_the_readme_option_names():
    settings = SFTSettings(lora_r=4, lora_alpha=16, epochs=5, warmup=5, learning_rate=1e-5, max_steps=-1,
                           finetune_vision_layers=True, max_length=2048, extra={"lr_scheduler_type": "cosine"})
    argv = SFT_OPTIONS.argv(settings)
    assert argv == ["--lora-r", "4", "--lora-alpha", "16", "--finetune-vision", "--learning-rate", "1e-05",
                    "--epochs", "5", "--max-length", "2048", "--warmup", "5",
                    "--extra", '{"lr_scheduler_type": "cosine"}']  # only what differs from the defaults
    back = SFT_OPTIONS.parse(argv)
    assert back.epochs == 5 and type(back.epochs) is int and type(SFT_OPTIONS.parse(["--epochs", "5.0"]).epochs) is float
    assert SFT_OPTIONS.argv(SFTSettings(warmup=0)) == ["--warmup", "0"]  # 0 is not the default 0.0: other hash
    assert DPO_OPTIONS.argv(DPOSettings(max_steps=3, warmup=-1e-05)) == ["--max-steps", "3", "--warmup=-1e-05"]
    assert DPO_OPTIONS.parse(["--max-length=none", "--no-finetune-vision"]) == DPOSettings()
    # The options the README's commands use, unchanged.
    readme = ("--lora-r 16 --lora-alpha 16 --lora-dropout 0 --learning-rate 2e-4 --epochs 1 --batch-size 2 "
              "--gradient-accumulation 4 --warmup 5 --max-length 2048 --checkpoint-steps 200 --backend peft "
              "--target-modules q_proj v_proj --seed 3 --max-steps 7 --finetune-vision")
    assert SFT_OPTIONS.parse(readme.split()) == SFTSettings(
        lora_r=16, lora_alpha=16, lora_dropout=0, learning_rate=2e-4, epochs=1, batch_size=2, gradient_accumulation=4,
        warmup=5, max_length=2048, checkpoint_steps=200, backend="peft", target_modules=("q_proj", "v_proj"),
        seed=3, max_steps=7, finetune_vision_layers=True)


def test_a_value_without_an_exact_spelling_is_refused_not_changed():
    with pytest.raises(KitError, match=r"extra = \{'a': \(1, 2\)\} has no exact command-line spelling"):
        SFT_OPTIONS.argv(SFTSettings(extra={"a": (1, 2)}))  # JSON would read the tuple back as a list
    with pytest.raises(KitError, match="target_modules"):
        SFT_OPTIONS.argv(SFTSettings(target_modules=("q_proj", "-x")))


def test_help_comes_from_each_fields_comment():
    assert field_comments(SFTSettings)["max_steps"] == "> 0 overrides epochs"
    text = train.argument_parser().format_help()
    assert "--max-steps N" in text and "> 0 overrides epochs (default: -1)" in text
    assert "--backend {auto,unsloth,peft}" in text and "--max-length N|none" in text
    assert "--loss {draft,trl_sigmoid}" in dpo.argument_parser().format_help()


def test_field_types_metadata_and_literal_choices():
    @dataclass(frozen=True)
    class Recipe:
        mode: Literal["fast", "slow"] = "fast"
        rate: float | None = 0.5
        names: tuple[str, ...] = ()
        on: bool = True
        note: str = field(default="", metadata={"help": "free text"})

    options = SettingsOptions(Recipe)
    assert options.argv(Recipe(rate=None, on=False, names=("a", "b"))) == [
        "--rate=none", "--names", "a", "b", "--no-on"]
    assert options.parse(["--rate", "2", "--names"]) == Recipe(rate=2)
    parser = argparse.ArgumentParser()
    options.add_to(parser)
    assert "free text" in parser.format_help()
    with pytest.raises(KitError, match="invalid choice: 'medium'"):
        options.parse(["--mode", "medium"])

    @dataclass(frozen=True)
    class Needs:
        size: int  # how big
        hidden: int = 1

    needs = SettingsOptions(Needs, skip=["hidden"])
    assert needs.argv(Needs(3)) == ["--size", "3"] and needs.parse(["--size", "3"]) == Needs(3)
    with pytest.raises(KitError, match="required: --size"):
        needs.parse([])
    with pytest.raises(KitError, match="hidden = 2 has no exact command-line spelling"):
        needs.argv(Needs(3, hidden=2))  # a field with no option cannot carry a value other than its default


@pytest.mark.parametrize(("module", "argv", "message"), [
    (train, ["--lora-r", "four"], "argument --lora-r: not a whole number: 'four'"),
    (train, ["--lora-r", "2.5"], "argument --lora-r: not a whole number: '2.5'"),
    (train, ["--lora-r", "-4"], "fine-tuning settings: lora_r must be a whole number > 0"),
    (train, ["--backend", "deepspeed"], "invalid choice: 'deepspeed'"),
    (train, ["--learning-rate", "fast"], "argument --learning-rate: not a number: 'fast'"),
    (train, ["--extra", "{lr: 1}"], "argument --extra: not JSON"),
    (train, ["--lora-rank", "4"], "unrecognized arguments: --lora-rank"),
    (dpo, ["--loss", "sigmoid"], "invalid choice: 'sigmoid' (choose from draft, trl_sigmoid)"),
    (dpo, ["--beta", "0"], "DPO settings: beta must be > 0"),
    (dpo, ["--max-length", "long"], "argument --max-length: not a whole number: 'long'"),
])
def test_bad_options_exit_non_zero_naming_the_option(module, argv, message, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr(module, "sft" if module is train else "dpo", no_training)
    with pytest.raises(SystemExit) as exit_:
        module.main(["MODEL", "DATA", "OUT", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage: python -m kit." in err


def test_a_bad_option_from_the_real_command_line_exits_2():
    done = subprocess.run([sys.executable, "-m", "kit.training.dpo", "P", "D", "O", "--beta", "-1"], cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "beta must be > 0" in done.stderr


# ------------------------------------------------------------------------------------------ stage folders
@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    """Small stand-ins whose content fixes the stage hashes (stage folders key local sources by content)."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "x"}')
    (tmp_path / "train.jsonl").write_text('{"id": "a"}\n')
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text('{"r": 4}')
    return {"model": tmp_path / "model", "data": tmp_path / "train.jsonl", "adapter": tmp_path / "adapter"}


def test_stage_folder_names_do_not_change(inputs, tmp_path):
    # Names computed with the code before the command lines existed: committed results depend on them.
    model, data = inputs["model"], inputs["data"]
    run = tmp_path / "run"
    assert train.stage_folder(model, data, run, SFTSettings(lora_r=4, epochs=5, warmup=5, backend="peft")).name \
        == "adapter-b34face89eb2"
    assert train.stage_folder(model, data, run, SFTSettings(backend="peft"), adapter=inputs["adapter"]).name \
        == "adapter-b358688b2168"
    assert dpo.stage_folder(model, data, run, DPOSettings(lora_r=4, warmup=0)).name == "dpo-0c2d05a35daa"


def _parts(command: list[str], module: str) -> tuple[list[str], list[str]]:
    """(positionals, options) of the module's part of a launch command."""
    rest = command[command.index("-m") + 2:]
    assert command[command.index("-m") + 1] == module
    return rest[:3], rest[3:]


@pytest.mark.parametrize("adapter", [False, True], ids=["critic-or-student", "extra-sft"])
def test_train_launch_command_trains_into_the_stage_folder(inputs, tmp_path, monkeypatch, adapter):
    monkeypatch.chdir(tmp_path)  # relative arguments, as a notebook might pass them
    settings = SFTSettings(lora_r=8, learning_rate=1e-4, epochs=3, batch_size=2, gradient_accumulation=4, seed=1,
                           backend="peft")
    given = {"adapter": "adapter"} if adapter else {}
    command = train.launch_command("model", "train.jsonl", "run", settings, processes=3, **given)
    assert command[1:5] == ["launch", "--multi_gpu", "--num_processes", "3"]
    shlex.join(command)  # printable
    folder = train.stage_folder("model", "train.jsonl", "run", settings, **given).absolute()
    positionals, options = _parts(command, "kit.training.sft")
    assert positionals == [str(inputs["model"]), str(inputs["data"]), str(folder)]
    args = train.argument_parser().parse_args([*positionals, *options])
    assert train.SFT_OPTIONS.settings(args) == settings and args.checkpoint_dir == train.checkpoint_folder(folder)
    assert args.adapter == (inputs["adapter"] if adapter else None)


def test_critic_launch_command_trains_where_critic_stage_looks(small_world, tmp_path, monkeypatch):
    from kit.eaco.pipeline import critic_stage

    calls = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return {}

    monkeypatch.setattr(train, "train_stage", record)  # critic_stage's training, seen but not run
    settings = SFTSettings(lora_r=16, learning_rate=5e-4, epochs=2, backend="peft")
    critic_stage(POLICY, small_world / "vlfeedback", tmp_path / "run", settings, progress=False)
    (model, data, run_dir, given), _ = calls[0]
    assert Path(data).name == "train.jsonl" and given == settings
    command = train.launch_command(model, data, run_dir, given, processes=4)
    assert _parts(command, "kit.training.sft")[0][1:] == [str(data), str(train.stage_folder(model, data, run_dir, given))]


def test_dpo_launch_command_trains_into_the_stage_folder(inputs, tmp_path):
    settings = DPOSettings(lora_r=4, beta=0.2, loss="trl_sigmoid", warmup=0)
    command = dpo.launch_command(inputs["model"], inputs["data"], tmp_path / "run", settings,
                                 extra_launch_args=["--main_process_port", "29511"])
    folder = dpo.stage_folder(inputs["model"], inputs["data"], tmp_path / "run", settings)
    positionals, options = _parts(command, "kit.training.dpo")
    assert positionals[2] == str(folder) and command[command.index("-m") - 2:command.index("-m")] == [
        "--main_process_port", "29511"]
    args = dpo.argument_parser().parse_args([*positionals, *options])
    assert dpo.DPO_OPTIONS.settings(args) == settings and args.checkpoint_dir == train.checkpoint_folder(folder)


def test_accelerate_command_processes():
    assert "--multi_gpu" not in accelerate_command("kit.training.sft", ["a"], processes=1)
    with pytest.raises(KitError, match="processes"):
        accelerate_command("kit.training.sft", [], processes=0)


def test_an_output_named_for_other_settings_is_refused_before_training(inputs, tmp_path, monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr(train, "sft", no_training)
    settings = SFTSettings(lora_r=4, backend="peft")
    folder = train.stage_folder(inputs["model"], inputs["data"], tmp_path, settings)
    code = train.main([str(inputs["model"]), str(inputs["data"]), str(folder), "--lora-r", "8", "--backend", "peft"])
    other = train.stage_folder(inputs["model"], inputs["data"], tmp_path, SFTSettings(lora_r=8, backend="peft"))
    assert code == 2 and f"options make {other.name}: train into that folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ two CPU processes
def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def launched_dpo(tmp_path_factory) -> dict[str, Any]:
    """DPO on four tiny pairs under ``accelerate launch`` with two CPU processes, from ``launch_command``."""
    if not POLICY.is_dir():
        pytest.skip("the shipped tiny policy is needed")
    root = tmp_path_factory.mktemp("launch")
    rows = preference_pairs(root)
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = DPOSettings(lora_r=4, lora_alpha=8, learning_rate=5e-3, max_steps=2, batch_size=1,
                           gradient_accumulation=1, warmup=0)
    run = root / "run"
    done = _run(dpo.launch_command(POLICY, pairs, run, settings), cwd=root)
    return {"root": root, "pairs": pairs, "rows": rows, "run": run, "settings": settings, "stdout": done.stdout,
            "folder": dpo.stage_folder(POLICY, pairs, run, settings)}


@pytest.mark.slow
def test_dpo_under_accelerate_is_reused_by_dpo_stage(launched_dpo, monkeypatch):
    folder = launched_dpo["folder"]
    recorded = json.loads((folder / "kit_dpo.json").read_text())
    assert recorded["steps"] == 2 and recorded["pairs"] == 4 and len(recorded["rewards_chosen"]) == 2
    assert len([line for line in launched_dpo["stdout"].splitlines() if line.startswith('{"adapter_dir"')]) == 1
    assert "2 process(es)" in launched_dpo["stdout"]
    assert not train.checkpoint_folder(folder).exists()  # removed once the adapter was written
    # The record is the one dpo_stage writes: the same params, under which the stage finds it.
    assert recorded["params"] == dpo._adapter_folder(POLICY, launched_dpo["pairs"], launched_dpo["run"],
                                                     launched_dpo["settings"])[1]

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(dpo, "dpo", no_training)
    mtime = (folder / "adapter_model.safetensors").stat().st_mtime_ns
    assert dpo.dpo_stage(POLICY, launched_dpo["pairs"], launched_dpo["run"], launched_dpo["settings"],
                         log=lambda m: None) == recorded
    assert (folder / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in launched_dpo["run"].iterdir()) == [folder.name]


@pytest.mark.slow
def test_extra_sft_under_accelerate_continues_the_dpo_adapter_and_is_reused(launched_dpo, monkeypatch):
    dpo_adapter, root = launched_dpo["folder"], launched_dpo["root"]
    data = write_set(root / "extra_sft.jsonl", [
        {"id": p["id"], "kind": "description", "images": [p["image"]], "train_turns": [0],
         "messages": conversation([p["prompt"], p["chosen"]], p["image"])} for p in launched_dpo["rows"]])
    settings = SFTSettings(lora_r=16, learning_rate=5e-3, max_steps=2, batch_size=1, logging_steps=1)
    run = root / "run"
    done = _run(train.launch_command(POLICY, data, run, settings, adapter=dpo_adapter), cwd=root)
    folder = train.stage_folder(POLICY, data, run, settings, adapter=dpo_adapter)
    recorded = json.loads((folder / "kit_train.json").read_text())
    assert recorded["processes"] == 2 and recorded["steps"] == 2
    assert recorded["continued_adapter"] == str(dpo_adapter)
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 4  # the DPO adapter's, not 16
    assert recorded["params"]["continues"] == train._adapter_folder(POLICY, data, run, settings, dpo_adapter)[1]["continues"]
    assert len([line for line in done.stdout.splitlines() if line.startswith('{"adapter_dir"')]) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(train, "sft", no_training)
    assert train.train_stage(POLICY, data, run, settings, adapter=dpo_adapter, log=lambda m: None) == recorded
