"""The ``kit`` command. Each sub-command lives in the module that does the work; this file only
wires them together, importing lazily so that ``kit --help`` does not load torch."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

import kit
from kit.errors import KitError

# sub-command -> module exposing ``register(subparsers)``; the module sets ``func`` on its parser.
SUBCOMMANDS = {
    "run": "kit.core.runner",
    "world": "kit.tiny.world.cli",
    "models": "kit.tiny.commands",
    "score": "kit.eval.benchmarks.cli",
    "check": "kit.tools.check",
    "bench": "kit.tools.speed",
    "serve": "kit.llm.serve",
    "report": "kit.report",
}
# sub-commands that read notebooks/ under the project root: they stop with kit.require_root()'s sentence
# when no root is found (a non-editable install run from outside the project).
NEEDS_ROOT = {"run"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kit", description=kit.__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument(
        "--root", dest="kit_root", metavar="PATH",
        help=f"project folder holding notebooks/, data/ and results/ (sets {kit.ROOT_ENV}; default: "
        f"${kit.ROOT_ENV}, else the checkout kit is installed from, else the working directory)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("kit"):
                continue  # a sub-command not built yet
            raise
        module.register(sub)
    return parser


def _root_argument(argv: list[str]) -> str | None:
    """The value of the global ``--root``, read before any sub-command module is imported. Only tokens before
    the sub-command count (``kit world build --root`` is that sub-command's own option)."""
    for index, token in enumerate(argv):
        if token == "--root":
            return argv[index + 1] if index + 1 < len(argv) else None  # argparse reports the missing value
        if token.startswith("--root="):
            return token.partition("=")[2]
        if not token.startswith("-") or token == "--":
            break
    return None


def set_root(value: str) -> Path:
    """Make ``value`` the project root: ``KIT_ROOT`` for this process and the notebook kernels it starts, and
    ``kit.REPO_DIR`` for the modules imported after this (the sub-commands read it when imported)."""
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        raise KitError(f"--root {value} is not a folder")
    loaded = sorted(name for name in sys.modules if name.startswith("kit.") and name not in {"kit.cli", "kit.errors"})
    if loaded and root != kit.REPO_DIR:
        raise KitError(f"--root {root} comes too late: {loaded[0]} was imported with the root {kit.REPO_DIR}; "
                       f"set {kit.ROOT_ENV} before starting Python instead")
    os.environ[kit.ROOT_ENV] = str(root)
    kit.REPO_DIR, kit.ROOT_SOURCE = kit.find_root()
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        root = _root_argument(argv)
        if root is not None:
            set_root(root)
    except KitError as err:
        print(f"kit: error: {err}", file=sys.stderr)
        return 2

    from kit.core.envcheck import check_environment

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_environment()
        if args.command in NEEDS_ROOT:
            kit.require_root()
        return int(args.func(args) or 0)
    except KitError as err:
        print(f"kit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
