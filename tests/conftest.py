"""Shared fixtures. Tests locate files through ``repo_dir`` (never the working directory), so
``pytest /work/main/tests`` gives the same result from any folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_REPO_DIR = Path(__file__).resolve().parent.parent
# Import this checkout's ``kit`` even when pytest runs from elsewhere or another copy is installed.
if str(_REPO_DIR) not in sys.path:
    sys.path.insert(0, str(_REPO_DIR))

import kit  # noqa: E402

if kit.REPO_DIR != _REPO_DIR:
    raise RuntimeError(f"tests in {_REPO_DIR} imported kit from {kit.PACKAGE_DIR}; reinstall with `make`")


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    """The repository root (the folder holding pyproject.toml)."""
    return kit.REPO_DIR


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder beside the repository (reference fixtures); tests needing it skip without it."""
    path = kit.REPO_DIR.parent / "shared"
    if not path.is_dir():
        pytest.skip(
            f"shared folder {path} is absent (it holds reference fixtures kept outside the repository)"
        )
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for the module: the tests' small batches run faster and steadier that way."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """A small tiny world built for the tests (``data/tiny`` exists only after ``kit world build``; a fresh
    clone's tests must not depend on it)."""
    from kit.tiny.world import WorldConfig, build_world

    config = WorldConfig(train_pool=4, mathvista_testmini=4, mathvision_test=2, mathvision_testmini=2,
                         wemath_problems=2, hallusionbench_sets=5, mme_images_per_subtask=1, eaco_images=6,
                         vlfeedback_prompts=8, instructions=4)
    root = tmp_path_factory.mktemp("small_world") / "tiny"
    build_world(root, config, progress=False)
    return root


def _peft_masks_missing() -> str | None:
    from kit.errors import KitError
    from kit.training.sft import PEFT_MASKS_TRANSFORMERS, check_peft_masks

    try:
        check_peft_masks()
    except KitError:
        return f"the peft backend's masks on images need transformers>={PEFT_MASKS_TRANSFORMERS} (Unsloth's pins are older)"
    return None


def _trl_fused_head_missing() -> str | None:
    import trl.trainer.utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", True) is None:
        return "this TRL's fused log-prob head needs Triton, which CPU torch wheels lack"
    return None


def pytest_collection_modifyitems(config, items) -> None:
    """Skip, with the reason, what this environment's pins cannot run (CI's second environment holds Unsloth's
    pins: transformers 5.17, trl 1.15); everything else runs in both."""
    reasons = {}
    for item in items:
        for marker, why in (("peft_sft", _peft_masks_missing), ("trl_fused_head", _trl_fused_head_missing)):
            if item.get_closest_marker(marker) is not None:
                if marker not in reasons:
                    reasons[marker] = why()
                if reasons[marker]:
                    item.add_marker(pytest.mark.skip(reason=reasons[marker]))
