"""The ``kit`` command. Each sub-command lives in the module that does the work; this file only
wires them together, importing lazily so that ``kit --help`` does not load torch."""

from __future__ import annotations

import argparse
import importlib
import sys

from kit.errors import KitError

# sub-command -> module exposing ``register(subparsers)``; the module sets ``func`` on its parser.
SUBCOMMANDS = {
    "run": "kit.core.runner",
    "world": "kit.tiny.world.cli",
    "models": "kit.tiny.pretrain",
    "score": "kit.eval.benchmarks.cli",
    "check": "kit.tools.check",
    "bench": "kit.tools.speed",
    "serve": "kit.llm.serve",
    "report": "kit.report",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kit", description=__doc__.splitlines()[0])
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


def main(argv: list[str] | None = None) -> int:
    from kit.core.envcheck import check_environment

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_environment()
        return int(args.func(args) or 0)
    except KitError as err:
        print(f"kit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
