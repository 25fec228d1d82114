"""The first code cell after a notebook's parameters: ``setup(profile, run_dir, results_dir)`` loads the
profile, applies its process settings (threads, offline, pinned hub revisions), seeds the global random
generators with the profile's ``seed``, picks the run folder and makes the output read like a handout.

A notebook run by ``kit run`` (papermill) gets its run folder from the runner; one opened in JupyterLab works
in ``results/runs/<profile>-interactive/``, so its cached stages are found again on the next visit. Under
papermill (``KIT_PAPERMILL`` set by the runner) progress bars are off and each finished stage prints one line;
in JupyterLab the bars stay.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from kit import REPO_DIR
from kit.core.profile import Profile, apply_runtime, load_profile

PAPERMILL_ENV = "KIT_PAPERMILL"  # set by kit.core.runner for the kernels it starts


@dataclass(frozen=True)
class NotebookRun:
    profile: Profile
    run: Path  # the run folder: every stage folder of the notebook lives under it
    results: Path  # where write_table and save_figure put the published tables and figures


def setup(profile: str, run_dir: str | None = None, results_dir: str = "results") -> NotebookRun:
    """The profile (a name under kit/profiles or a YAML path), applied to this kernel, and the run's folders."""
    loaded = load_profile(profile)
    apply_runtime(loaded)
    _seed_global_generators(int(loaded.get("seed", 0)))
    run = Path(run_dir) if run_dir else REPO_DIR / "results" / "runs" / f"{loaded.name}-interactive"
    _quiet_output(papermill=bool(os.environ.get(PAPERMILL_ENV)))
    return NotebookRun(loaded, run, REPO_DIR / results_dir)


def _seed_global_generators(seed: int) -> None:
    # Every stage takes its own seed; this is for what draws from the global generators in a notebook's own
    # cells (seaborn's strip-plot jitter), so that a figure comes out the same on every run.
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)


def _quiet_output(papermill: bool) -> None:
    # One line per finished stage (kit.core.artifacts logs them at INFO), on stdout so it sits in the cell.
    logger = logging.getLogger("kit")
    if not any(getattr(handler, "_kit_notebook", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._kit_notebook = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    if papermill:
        # A stored notebook is read, not watched: progress bars would only fill it with carriage returns.
        # tqdm (>= 4.66) takes its defaults from TQDM_* variables.
        os.environ["TQDM_DISABLE"] = "1"
        warnings.filterwarnings("ignore", message="IProgress not found")  # no bars, so no widgets needed
