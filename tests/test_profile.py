from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
import yaml

from kit import REPO_DIR
from kit.core import profile as profile_module
from kit.core.profile import (
    OFFLINE_VARIABLES,
    Profile,
    apply_runtime,
    available_profiles,
    load_profile,
    notebook_parameters,
)
from kit.errors import KitError

MINIMAL = {
    "name": "mini",
    "seed": 3,
    "offline": False,
    "torch_threads": None,
    "models": {"teacher": "Qwen/Qwen2-VL-7B-Instruct", "student": "data/models/student"},
    "datasets": {"mathvista": "data/tiny/mathvista"},
    "world": {"train_pool": 12, "sizes": {"inner": 4}},
    "evaluation": {"limit": None, "batch_size": 2},
    "assumptions": {
        "models.student": {"source": "ours", "reason": "the paper names no checkpoint", "affects": ["t1"]},
    },
}


def write_profile(folder: Path, document: dict, name: str = "mini.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def notebook_with_parameters(path: Path, source: str) -> Path:
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    notebook.cells = [nbformat.v4.new_markdown_cell("# title"), cell, nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(notebook, path)
    return path


@pytest.mark.parametrize("name", ["tiny", "paper"])
def test_shipped_profiles_load(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.path == profile_module.PROFILES_DIR / f"{name}.yaml"
    assert profile.reference == name
    assert len(profile.hash) == 64
    assert {"teacher", "student", "policy", "critic_base"} <= set(profile.get("models"))
    for key in profile.assumptions:
        profile.get(key)  # every assumption names a real value


def test_shipped_profiles_are_listed() -> None:
    assert {"tiny", "paper"} <= set(available_profiles())


def test_get_dotted_keys_and_defaults(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path, MINIMAL))
    assert profile.get("world.sizes.inner") == 4
    assert profile.get("evaluation.limit") is None
    assert profile.get("world.missing", default=7) == 7
    with pytest.raises(KitError, match=r"no key 'world\.missing'"):
        profile.get("world.missing")


def test_hash_changes_with_any_value_or_assumption(tmp_path: Path) -> None:
    base = load_profile(write_profile(tmp_path, MINIMAL)).hash
    assert load_profile(write_profile(tmp_path, MINIMAL, "again.yaml")).hash == base

    changed_value = {**MINIMAL, "world": {"train_pool": 13, "sizes": {"inner": 4}}}
    assert load_profile(write_profile(tmp_path, changed_value, "value.yaml")).hash != base

    reason = {"source": "ours", "reason": "another reason", "affects": ["t1"]}
    changed_assumption = {**MINIMAL, "assumptions": {"models.student": reason}}
    assert load_profile(write_profile(tmp_path, changed_assumption, "assumption.yaml")).hash != base


def test_hash_ignores_yaml_formatting(tmp_path: Path) -> None:
    path = write_profile(tmp_path, MINIMAL)
    reformatted = tmp_path / "reformatted.yaml"
    reformatted.write_text("# a comment\n" + yaml.safe_dump(MINIMAL, sort_keys=True, indent=4))
    assert load_profile(path).hash == load_profile(reformatted).hash


def test_resolve_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kit.core import paths

    monkeypatch.setattr(paths, "REPO_DIR", tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "local-model").mkdir()
    profile = load_profile(write_profile(tmp_path, MINIMAL))

    assert profile.resolve_path("Qwen/Qwen2-VL-7B-Instruct") == "Qwen/Qwen2-VL-7B-Instruct"
    assert profile.resolve_path("data/models/student") == tmp_path / "data/models/student"
    # one '/', but "data" is a folder of the repository: a local path that is not built yet
    assert profile.resolve_path("data/tiny") == tmp_path / "data/tiny"
    assert profile.resolve_path("ckpt/local-model") == tmp_path / "ckpt/local-model"
    assert profile.resolve_path("./org/name") == tmp_path / "org/name"
    assert profile.resolve_path("/abs/org/model") == Path("/abs/org/model")
    assert profile.resolve_path("plain-folder") == tmp_path / "plain-folder"
    assert profile.resolve_path(None) is None


def test_flatten_names_match_notebook_parameters(tmp_path: Path) -> None:
    flat = load_profile(write_profile(tmp_path, MINIMAL)).flatten()
    assert flat["name"] == "mini"
    assert flat["seed"] == 3
    assert flat["offline"] is False
    assert flat["torch_threads"] is None
    assert flat["models_teacher"] == "Qwen/Qwen2-VL-7B-Instruct"
    assert flat["world_train_pool"] == 12
    assert flat["world_sizes_inner"] == 4
    assert flat["evaluation_limit"] is None
    assert not any(key.startswith("assumptions") for key in flat)


def test_flatten_of_shipped_tiny_profile() -> None:
    flat = load_profile("tiny").flatten()
    for key in ("name", "seed", "offline", "device", "torch_threads", "models_teacher", "world_train_pool"):
        assert key in flat
    assert all(isinstance(value, str | int | float | bool | type(None) | list) for value in flat.values())


def test_unknown_profile_lists_the_available_ones() -> None:
    with pytest.raises(KitError, match=r"unknown profile 'tinny'.*paper, tiny"):
        load_profile("tinny")


def test_missing_profile_file(tmp_path: Path) -> None:
    with pytest.raises(KitError, match=r"does not exist"):
        load_profile(tmp_path / "nope.yaml")


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nseed: 0\nmodels:\n  teacher: [unclosed\ndatasets: {}\n")
    with pytest.raises(KitError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert str(path) in message
    assert "YAML syntax error" in message
    assert " line 5 " in message or " line 4 " in message


def test_missing_required_keys_are_named(tmp_path: Path) -> None:
    document = {key: value for key, value in MINIMAL.items() if key not in ("seed", "datasets")}
    document["assumptions"] = {}
    with pytest.raises(KitError, match=r"missing required key\(s\) seed, datasets"):
        load_profile(write_profile(tmp_path, document))


def test_assumption_for_a_key_that_does_not_exist(tmp_path: Path) -> None:
    entry = {"source": "ours", "reason": "r"}
    document = {**MINIMAL, "assumptions": {"models.critic": entry}}
    with pytest.raises(KitError, match=r"assumption 'models\.critic' names a key that does not exist"):
        load_profile(write_profile(tmp_path, document))


def test_assumption_source_must_be_known(tmp_path: Path) -> None:
    document = {**MINIMAL, "assumptions": {"models.student": {"source": "guess", "reason": "r"}}}
    with pytest.raises(KitError, match=r"source 'guess'; expected one of paper, authors_code, ours"):
        load_profile(write_profile(tmp_path, document))


def test_values_a_notebook_cannot_receive_are_rejected_at_load(tmp_path: Path) -> None:
    path = tmp_path / "dated.yaml"
    path.write_text(yaml.safe_dump(MINIMAL) + "released: 2025-01-10\n")
    with pytest.raises(KitError, match=r"released is a date"):
        load_profile(path)


@pytest.mark.parametrize(("section", "bad", "message"), [
    ("finetune", {"lora_r": -4}, r"finetune: fine-tuning settings: lora_r must be a whole number > 0"),
    ("finetune", {"vision_layers": False, "backend": "deepspeed"}, r"finetune: .*backend must be one of"),
    ("critic", {"learning_rate": 0}, r"critic: .*learning_rate must be > 0"),
    ("extra_sft", {"batch_size": "32"}, r"extra_sft: .*batch_size must be a whole number"),
    ("dpo", {"beta": -1.0}, r"dpo: DPO settings: beta must be > 0"),
])
def test_training_recipes_are_checked_when_the_profile_loads(tmp_path: Path, section, bad, message) -> None:
    document = {**MINIMAL, section: {"rows": None, "max_new_tokens": 64, **bad}}  # other stages' keys pass
    with pytest.raises(KitError, match=message):
        load_profile(write_profile(tmp_path, document))
    load_profile(write_profile(tmp_path, {**MINIMAL, section: {"rows": None, "lora_r": 8}}))


@pytest.mark.parametrize(("engine", "message"), [
    ({"backend": "vllm"}, r"engine: engine.backend: the in-process vllm backend is gone"),
    ({"backend": "openai", "servers": []}, r"engine: engine.backend openai needs engine.servers"),
    ({"backend": "openai", "servers": [["Qwen/Qwen2-VL-2B-Instruct"]]}, r"engine.servers\[0\] must be"),
    ({"backend": "transformers", "port": 8000}, r"engine: .*port"),
])
def test_the_engine_choice_is_checked_when_the_profile_loads(tmp_path: Path, engine, message) -> None:
    with pytest.raises(KitError, match=message):
        load_profile(write_profile(tmp_path, {**MINIMAL, "engine": engine}))
    servers = [["Qwen/Qwen2-VL-2B-Instruct", "http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"]]
    profile = load_profile(write_profile(tmp_path, {**MINIMAL, "engine": {"backend": "openai", "servers": servers}}))
    assert profile.flatten()["engine_servers"] == servers  # plain literals, as a notebook parameter must be


def test_the_paper_profile_generates_on_vllm_servers_for_each_base_model() -> None:
    from kit.llm.generate import EngineChoice

    profile = load_profile("paper")
    choice = EngineChoice(**profile.get("engine"))
    for role in ("teacher", "student", "policy", "critic_base"):
        assert choice.servers_for(profile.get(f"models.{role}"))  # every model a stage generates with is served


def test_kit_run_dry_run_refuses_a_bad_recipe(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = write_profile(tmp_path, {**MINIMAL, "finetune": {"lora_r": -4}})
    done = subprocess.run([sys.executable, "-m", "kit.cli", "run", "--profile", str(path), "--dry-run"],
                          cwd=REPO_DIR, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "lora_r must be a whole number > 0" in done.stdout + done.stderr


def test_notebook_parameters_are_the_declared_ones(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path, MINIMAL))
    notebook = notebook_with_parameters(
        tmp_path / "00_x.ipynb",
        "seed = 0\nmodels_teacher = ''\nworld_train_pool = 1  # pool size\nprofile = ''\nrun_dir = ''\nlocal_only = 5\n",
    )
    parameters = notebook_parameters(profile, notebook, tmp_path / "run")
    assert parameters == {
        "seed": 3,
        "models_teacher": "Qwen/Qwen2-VL-7B-Instruct",
        "world_train_pool": 12,
        # loaded from a path outside kit/profiles: the path is what load_profile needs again
        "profile": str(profile.path),
        "run_dir": str(tmp_path / "run"),
    }


def test_notebook_parameters_for_a_shipped_profile_pass_its_name(tmp_path: Path) -> None:
    notebook = notebook_with_parameters(tmp_path / "00_x.ipynb", "profile = ''\nname = ''\n")
    assert notebook_parameters(load_profile("tiny"), notebook) == {"profile": "tiny", "name": "tiny"}


def test_notebook_without_parameters_cell_gets_nothing(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("seed = 0")]
    nbformat.write(notebook, tmp_path / "00_x.ipynb")
    assert notebook_parameters(load_profile("tiny"), tmp_path / "00_x.ipynb", tmp_path) == {}


@pytest.fixture
def clean_runtime_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # delenv records the variables' absence, so whatever apply_runtime sets is undone after the test
    for variable in (*OFFLINE_VARIABLES, "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)


def profile_with(tmp_path: Path, **changes) -> Profile:
    return load_profile(write_profile(tmp_path, {**MINIMAL, **changes}, "runtime.yaml"))


@pytest.mark.usefixtures("clean_runtime_env")
def test_apply_runtime_offline(tmp_path: Path) -> None:
    changed = apply_runtime(profile_with(tmp_path, offline=True))
    for variable in OFFLINE_VARIABLES:
        assert os.environ[variable] == "1"
        assert changed[variable] == "1"


@pytest.mark.usefixtures("clean_runtime_env")
def test_apply_runtime_online_leaves_environment_alone(tmp_path: Path) -> None:
    assert apply_runtime(profile_with(tmp_path, offline=False)) == {}
    assert not any(variable in os.environ for variable in OFFLINE_VARIABLES)


@pytest.mark.usefixtures("clean_runtime_env")
def test_apply_runtime_threads(tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        changed = apply_runtime(profile_with(tmp_path, torch_threads=1))
        assert torch.get_num_threads() == 1
        assert changed["OMP_NUM_THREADS"] == os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


@pytest.mark.usefixtures("clean_runtime_env")
def test_apply_runtime_rejects_bad_thread_count(tmp_path: Path) -> None:
    with pytest.raises(KitError, match=r"torch_threads must be a positive integer"):
        apply_runtime(profile_with(tmp_path, torch_threads=0))


def test_a_kernel_follows_the_thread_share_kit_run_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from kit.core.threads import THREADS_FILE_ENV, follow_thread_share

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(THREADS_FILE_ENV, raising=False)
        assert follow_thread_share() is None and torch.get_num_threads() == before
        share = tmp_path / "threads"
        monkeypatch.setenv(THREADS_FILE_ENV, str(share))
        assert follow_thread_share() is None  # not written yet (or the block has ended): nothing changes
        for text in ("0\n", "two\n"):
            share.write_text(text)
            assert follow_thread_share() is None and torch.get_num_threads() == before
        torch.set_num_threads(2)
        share.write_text("1\n")
        assert follow_thread_share() == 1 and torch.get_num_threads() == 1
        share.write_text("2\n")
        assert follow_thread_share() == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
