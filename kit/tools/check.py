"""``kit check``: the environment report (``kit.core.envcheck``), or with ``--gpu`` the prepared GPU check
(``kit.tools.gpucheck``). A module of its own so that the environment check, which every command runs,
never imports the GPU check."""

from __future__ import annotations

import argparse
from pathlib import Path

from kit import REPO_DIR


def _run_check(args: argparse.Namespace) -> int:
    if args.gpu:
        from kit.tools.gpucheck import run_from_cli  # imports nothing heavy until it runs

        return run_from_cli(args.gpu_output, args.gpu_workdir, args.gpu_peft_python)
    from kit.core.envcheck import environment_report

    report = environment_report()
    width = max(len(label) for label in report)
    for label, value in report.items():
        print(f"{label:<{width}}  {value}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kit check``: the environment report (``kit.core.envcheck``), or with ``--gpu`` the GPU check."""
    parser = subparsers.add_parser(
        "check",
        help="print the environment (versions, CUDA, training backend)",
        description="Print python, torch, transformers, trl, peft and papermill versions, whether CUDA "
        "is available and which training backend will be used. With --gpu: the GPU check (kit/tools/gpucheck.py).",
    )
    parser.add_argument("--gpu", action="store_true",
                        help="run the GPU check (about 8 minutes on one H100): Unsloth against peft on models of the "
                        "real shapes, one DPO step, adapter reloads; writes its figures to --gpu-output. Needs CUDA")
    parser.add_argument("--gpu-output", type=Path, default=REPO_DIR / "docs" / "gpu-validation.md",
                        help="the Markdown file whose measured section --gpu rewrites (default: docs/gpu-validation.md)")
    parser.add_argument("--gpu-workdir", type=Path, default=None,
                        help="where --gpu writes its model folders (about 36 GB; default: the system's temp folder)")
    parser.add_argument("--gpu-peft-python", type=Path, default=None,
                        help="the Python that runs --gpu's builds, peft rows and DPO step (default: this one); for an "
                        "environment where kit.training.sft accepts backend peft on CUDA, which Unsloth's pins do not")
    parser.set_defaults(func=_run_check)
