"""Each notebook kernel's share of the CPU threads while ``kit run`` runs notebook lanes side by side.

``kit run`` gives a kernel that starts beside another lane its share of the profile's ``torch_threads`` at start
(``kit.core.profile.THREADS_SHARE_ENV``), and names a file that holds the share *now*: when a lane finishes it
rewrites the file, and the kernels' long loops (training steps, generation batches) follow it, so a notebook that
started beside another lane takes all the threads once it runs alone. Thread counts change no number (LoRA adapters
and greedy predictions are bit-identical at one and two threads: docs/performance.md). No kit imports here: the
runner, the stage workers, training and generation all use it.
"""

from __future__ import annotations

import os
from pathlib import Path

THREADS_FILE_ENV = "KIT_TORCH_THREADS_FILE"


def follow_thread_share() -> int | None:
    """Set torch's threads to the share ``kit run`` last wrote to ``THREADS_FILE_ENV``'s file; the share, or None
    outside side-by-side lanes (then nothing changes). Cheap enough to call at every training step."""
    path = os.environ.get(THREADS_FILE_ENV)
    if not path:
        return None
    try:
        text = Path(path).read_text().strip()
    except OSError:  # the block has ended and its file is gone: keep what this kernel has
        return None
    if not text.isdigit() or int(text) < 1:
        return None
    import torch

    if torch.get_num_threads() != int(text):
        torch.set_num_threads(int(text))
    return int(text)
