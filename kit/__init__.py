"""seat-kit: reproduce SEAT/Cas-SEAT (arXiv 2501.05662) and EACO (arXiv 2412.04903).

Heavy libraries (torch, transformers) are imported by the modules that need them, never here,
so that ``import kit`` and ``kit --help`` stay fast.

``REPO_DIR`` is the project root: the folder holding ``notebooks/``, ``data/``, ``results/`` and
``docs/``. It is resolved once, at import, by the first of these rules that applies:

1. the ``KIT_ROOT`` environment variable (``kit --root PATH`` sets it before any sub-command is imported);
2. the checkout this package sits in (an editable install): its parent holds ``notebooks/`` and a
   ``pyproject.toml`` naming ``seat-kit``;
3. the current working directory, if it holds ``notebooks/``.

When none applies (a non-editable install run from elsewhere) ``REPO_DIR`` is the working directory and
``ROOT_SOURCE`` is None; commands that need the notebooks then stop with ``require_root()``'s sentence.
Profiles are package data (``kit/profiles``), found from ``PACKAGE_DIR`` wherever the package is installed.
Notebook kernels started by ``kit run`` inherit the environment and the working directory, so they resolve
the same root.
"""

import os
from pathlib import Path

__version__ = "0.1.0"

ROOT_ENV = "KIT_ROOT"
PROJECT_NAME = "seat-kit"
PACKAGE_DIR = Path(__file__).resolve().parent


def is_checkout(folder: Path) -> bool:
    """Whether ``folder`` is a checkout of this project: ``notebooks/`` and a pyproject.toml naming seat-kit."""
    pyproject = folder / "pyproject.toml"
    if not (folder / "notebooks").is_dir() or not pyproject.is_file():
        return False
    import tomllib

    try:
        return tomllib.loads(pyproject.read_text()).get("project", {}).get("name") == PROJECT_NAME
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def find_root() -> tuple[Path, str | None]:
    """The project root and the rule that found it (``KIT_ROOT``, ``checkout`` or ``working directory``);
    the rule is None when nothing holds the project, and the root is then the working directory."""
    explicit = os.environ.get(ROOT_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve(), ROOT_ENV
    if is_checkout(PACKAGE_DIR.parent):
        return PACKAGE_DIR.parent, "checkout"
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the working directory was removed
        return PACKAGE_DIR.parent, None
    if (cwd / "notebooks").is_dir():
        return cwd, "working directory"
    return cwd, None


REPO_DIR, ROOT_SOURCE = find_root()


def require_root() -> Path:
    """``REPO_DIR`` when it holds the notebooks; otherwise ``KitError`` naming the three ways to give a root."""
    from kit.errors import KitError

    if ROOT_SOURCE is None:
        raise KitError(
            f"no seat-kit project found from {REPO_DIR} (this kit is installed at {PACKAGE_DIR}): run kit "
            f"from the project folder (the one holding notebooks/), pass `kit --root PATH`, or set {ROOT_ENV}=PATH"
        )
    if not (REPO_DIR / "notebooks").is_dir():
        raise KitError(
            f"the project root {REPO_DIR} (from {ROOT_SOURCE}) holds no notebooks/ folder: give the folder that "
            f"does with `kit --root PATH` or {ROOT_ENV}=PATH, or unset {ROOT_ENV} and run kit from that folder"
        )
    return REPO_DIR
