"""Write and check the GPU environments' lock files (``envs/*.lock``), on any machine, CUDA or not.

    python envs/lock.py write    # re-resolve both environments from PyPI and rewrite their locks
    python envs/lock.py check    # resolve each lock again (pip --dry-run): fails when it no longer installs

Both use ``pip install --dry-run --ignore-installed --report``: pip resolves the whole tree from the package
index's metadata and downloads no wheel, so a 2-core CPU machine checks a CUDA stack in under a minute.
``--isolated`` keeps this machine's pip configuration (CPU-only wheels, local caps) out of the answer, so
the lock is what ``pip`` gives a GPU machine with the default index: Linux x86_64, CPython 3.11, the CUDA
wheels torch publishes on PyPI. ``make locks`` and ``make check-locks`` call this script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ENVS_DIR = Path(__file__).resolve().parent
REPO_DIR = ENVS_DIR.parent


@dataclass(frozen=True)
class Environment:
    name: str
    purpose: str
    requirements: tuple[str, ...]  # what the lock is resolved from
    with_kit: bool  # the kit itself (editable, from this checkout, with its ``unsloth`` and ``dev`` extras) belongs in it

    @property
    def lock(self) -> Path:
        return ENVS_DIR / f"{self.name}.lock"


ENVIRONMENTS = (
    Environment(
        "train-gpu",
        "the kit with Unsloth on CUDA (`make train-env`): notebooks, training, the GPU check",
        # unsloth and unsloth_zoo 2026.10.9 cap transformers<=5.17.0, trl<=1.15.0, datasets<5, torch<2.15;
        # torch 2.13.0 is the release the CPU environment uses too (constraints.txt).
        ("torch==2.13.0", "unsloth==2026.10.9", "unsloth_zoo==2026.10.9"),
        with_kit=True,
    ),
    Environment(
        "serve-gpu",
        "vLLM alone (`make serve-env`), started as `vllm serve MODEL --enable-lora`; the kit talks to it over HTTP",
        # vllm 0.34.0 pins flashinfer-python==0.7.3, which PyPI does not have (pip: "No matching distribution"),
        # so 0.33.0 is the newest release that installs.
        ("vllm==0.33.0",),
        with_kit=False,
    ),
)


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", *args]


def _kit_requirement() -> list[str]:
    return ["-e", f"{REPO_DIR}[unsloth,dev]"]


def resolve(env: Environment, extra: list[str]) -> list[tuple[str, str]]:
    """(name, version) of every distribution pip would install, the kit itself left out."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = _pip("install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), *extra)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
            raise SystemExit(f"{env.name}: pip cannot resolve it:\n  " + "\n  ".join(errors or [done.stderr[-2000:]])
                             + f"\n(command: {' '.join(command)})")
        installed = json.loads(report.read_text())["install"]
    return sorted(((item["metadata"]["name"], item["metadata"]["version"]) for item in installed
                   if item["metadata"]["name"] != "seat-kit"), key=lambda pair: pair[0].lower())


def write(env: Environment) -> None:
    extra = [*env.requirements, *(_kit_requirement() if env.with_kit else [])]
    pins = resolve(env, extra)
    header = [
        f"# {env.name}: {env.purpose}.",
        f"# Resolved from: {' '.join(env.requirements)}{' + this kit' if env.with_kit else ''}",
        "# for Linux x86_64, CPython 3.11, PyPI's default (CUDA) wheels. Regenerate: make locks",
    ]
    text = "\n".join([*header, *(f"{name}=={version}" for name, version in pins)]) + "\n"
    tmp = env.lock.with_suffix(".lock.tmp")
    tmp.write_text(text)
    tmp.replace(env.lock)
    print(f"{env.lock.relative_to(REPO_DIR)}: {len(pins)} distributions")


def check(env: Environment) -> None:
    if not env.lock.is_file():
        raise SystemExit(f"{env.lock} is missing; run `make locks`")
    # With the kit: the lock must hold everything the kit's current pyproject asks for (a pin the kit no longer
    # accepts fails here). Alone: the pinned set must be installable as it stands.
    extra = (["-c", str(env.lock), *env.requirements, *_kit_requirement()] if env.with_kit
             else ["-r", str(env.lock)])
    pins = dict(resolve(env, extra))
    locked = dict(line.split("==", 1) for line in env.lock.read_text().splitlines()
                  if line and not line.startswith("#"))
    unlocked = sorted(set(pins) - set(locked))
    if unlocked:
        raise SystemExit(f"{env.name}: pip would also install {', '.join(unlocked)}, which {env.lock.name} does not "
                         "pin; run `make locks`")
    print(f"{env.lock.relative_to(REPO_DIR)}: resolves ({len(pins)} distributions, all pinned)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python envs/lock.py", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("write", "check"))
    parser.add_argument("names", nargs="*", help="environments (default: all): "
                        + ", ".join(env.name for env in ENVIRONMENTS))
    args = parser.parse_args(argv)
    chosen = [env for env in ENVIRONMENTS if not args.names or env.name in args.names]
    unknown = set(args.names) - {env.name for env in ENVIRONMENTS}
    if unknown:
        parser.error(f"unknown environment {', '.join(sorted(unknown))}")
    for env in chosen:
        (write if args.action == "write" else check)(env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
