"""Environment checks that run before every ``kit`` command, and ``kit check``.

Some packages only work on a CUDA machine and break the CPU environment merely by being installed:
the first ``import`` fails deep inside transformers with an error that points nowhere near the
cause. Detecting them by import spec (without importing them) turns that into one actionable line.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from pathlib import Path

from kit import REPO_DIR
from kit.errors import KitError

# package -> why it cannot stay installed on a machine without CUDA
CUDA_ONLY_PACKAGES = {
    "torchvision": (
        "its only reachable wheel is a CUDA build whose operators fail to load and break "
        "transformers' image processors"
    ),
    "unsloth": ("its import fails without a CUDA device; it belongs in the GPU training environment "
                "(make train-env, envs/train-gpu.lock)"),
}
REPORTED_PACKAGES = ("torch", "transformers", "trl", "peft", "papermill")


def is_installed(module_name: str) -> bool:
    """Whether ``module_name`` can be imported, found without importing it."""
    if module_name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        return False


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (imports torch, so only call it when the answer matters)."""
    import torch

    return bool(torch.cuda.is_available())


def _pip_command() -> str:
    executable = Path(sys.executable)
    try:
        shown = executable.relative_to(REPO_DIR).as_posix()
    except ValueError:
        shown = str(executable)
    return f"{shown} -m pip"


def check_environment() -> None:
    """Raise ``KitError`` when a CUDA-only package is installed on a machine without CUDA."""
    present = [name for name in CUDA_ONLY_PACKAGES if is_installed(name)]
    if not present or cuda_available():
        return
    if len(present) == 1:
        problem = f"{present[0]} is installed but this machine has no CUDA: {CUDA_ONLY_PACKAGES[present[0]]}"
    else:
        reasons = "; ".join(f"{name}: {CUDA_ONLY_PACKAGES[name]}" for name in present)
        problem = f"{' and '.join(present)} are installed but this machine has no CUDA ({reasons})"
    raise KitError(f"{problem}; run `{_pip_command()} uninstall -y {' '.join(present)}`")


def training_backend() -> str:
    """``unsloth`` when it is installed and CUDA is available, otherwise ``peft``."""
    if is_installed("unsloth") and cuda_available():
        return "unsloth"
    return "peft"


def installed_version(distribution: str) -> str:
    """The installed version of a distribution, or ``not installed``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment_report() -> dict[str, str]:
    """The versions and capabilities ``kit check`` prints, as label -> value."""
    report = {"python": f"{platform.python_version()} ({sys.executable})"}
    report.update({name: installed_version(name) for name in REPORTED_PACKAGES})
    cuda = cuda_available()
    if cuda:
        import torch

        report["cuda"] = f"available ({torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda})"
    else:
        report["cuda"] = "not available"
    report["training backend"] = "unsloth" if cuda and is_installed("unsloth") else "peft"
    return report
