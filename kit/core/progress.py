"""Whether a stage draws a progress bar: one switch for every bar the kit draws itself."""

from __future__ import annotations

import os


def progress_bars(progress: bool = True) -> bool:
    """Whether a stage asked to show ``progress`` draws a bar: not when ``TQDM_DISABLE`` is set (as the runner
    sets it for papermill kernels), which tqdm itself honours only where a call leaves ``disable`` unset."""
    return progress and not os.environ.get("TQDM_DISABLE")
