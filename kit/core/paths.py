"""Whether a value names a local path or a Hugging Face hub id: the one rule every loader, stage key and notebook
parameter follows (docs/ARCHITECTURE.md). A hub id ("Qwen/Qwen2-VL-7B-Instruct") has exactly one '/', does not
start like a path, and names nothing local."""

from __future__ import annotations

import os
from pathlib import Path

from kit import REPO_DIR


def looks_like_hub_id(text: str) -> bool:
    """The shape of a hub id alone: ``owner/name``, not starting with '.', '/' or '~'."""
    owner, _, name = text.partition("/")
    return text.count("/") == 1 and bool(owner) and bool(name) and not text.startswith((".", "/", "~"))


def is_hub_id(source: str | Path) -> bool:
    """A hub id: the shape of one, and no existing local path by that name (from the working directory)."""
    text = str(source)
    return looks_like_hub_id(text) and not Path(text).expanduser().exists()


def resolve_path(value: str | Path | None) -> Path | str | None:
    """A local path (absolute, or relative to the repository root) or a hub id returned unchanged.

    A value whose first component is an existing folder of the repository ("data/tiny") is local even
    before the folder itself has been built. Notebooks use it on their path parameters.
    """
    if value is None:
        return None
    if isinstance(value, Path):
        return value if value.is_absolute() else REPO_DIR / value
    text = os.path.expanduser(str(value))
    candidate = Path(text)
    if candidate.is_absolute():
        return candidate
    if looks_like_hub_id(text) and not (REPO_DIR / text).exists() and not (REPO_DIR / text.split("/")[0]).is_dir():
        return text
    return REPO_DIR / candidate
