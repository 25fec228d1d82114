"""The files that build the environment agree with each other and with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def by_name(requirements: list[str]) -> dict[str, Requirement]:
    parsed = [Requirement(line) for line in requirements]
    names = [canonicalize_name(requirement.name) for requirement in parsed]
    assert len(set(names)) == len(names), f"a requirement is listed twice: {sorted(names)}"
    return dict(zip(names, parsed, strict=True))


def normalised(requirement: Requirement) -> tuple:
    return (
        canonicalize_name(requirement.name),
        frozenset(requirement.extras),
        frozenset(str(spec) for spec in requirement.specifier),
        str(requirement.marker or ""),
    )


@pytest.fixture(scope="module")
def pyproject(repo_dir: Path) -> dict:
    return tomllib.loads((repo_dir / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def torch_pin(repo_dir: Path) -> Requirement:
    lines = [
        line.strip()
        for line in (repo_dir / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pins = [Requirement(line) for line in lines if canonicalize_name(Requirement(line).name) == "torch"]
    assert len(pins) == 1 and str(pins[0]) == "torch==2.13.0"
    return pins[0]


def environment_pip_section(repo_dir: Path) -> list[str]:
    environment = yaml.safe_load((repo_dir / "environment.yml").read_text())
    assert environment["name"] == "seat-kit"
    assert environment["channels"] == ["conda-forge"]
    dependencies = environment["dependencies"]
    assert "python=3.11" in dependencies and "pip" in dependencies
    sections = [entry["pip"] for entry in dependencies if isinstance(entry, dict) and "pip" in entry]
    assert len(sections) == 1
    return sections[0]


def test_environment_yml_matches_pyproject(repo_dir: Path, pyproject: dict, torch_pin: Requirement) -> None:
    pip_section = environment_pip_section(repo_dir)
    assert pip_section[0] == str(torch_pin), "torch must be installed first, at the constraints pin"
    assert pip_section[-1] == "-e .", "the kit itself is installed last, editable"

    conda = by_name(pip_section[:-1])
    project = pyproject["project"]
    wanted = by_name(project["dependencies"] + project["optional-dependencies"]["dev"])
    assert set(conda) == set(wanted)
    for name, requirement in wanted.items():
        if name == "torch":
            # pyproject keeps a range; the environment takes the pinned release, which must lie in it.
            assert requirement.specifier.contains(next(iter(torch_pin.specifier)).version)
            continue
        assert normalised(conda[name]) == normalised(requirement), name


def test_gpu_packages_only_in_the_unsloth_extra(pyproject: dict) -> None:
    project = pyproject["project"]
    gpu = {canonicalize_name(Requirement(line).name) for line in project["optional-dependencies"]["unsloth"]}
    assert {"unsloth", "unsloth-zoo", "torchvision"} <= gpu
    cpu_side = project["dependencies"] + project["optional-dependencies"]["dev"]
    cpu_names = {canonicalize_name(Requirement(line).name) for line in cpu_side}
    assert not cpu_names & (gpu | {"torchvision"})


def test_ci_runs_make_test(repo_dir: Path) -> None:
    script = repo_dir / ".ci" / "run"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    commands = [
        line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-3:] == ["make test", "make test-unsloth-pins", "make check-locks"]
    assert script.stat().st_mode & 0o111, ".ci/run must be executable"


def test_readme_quick_start_is_the_two_make_commands(repo_dir: Path) -> None:
    readme = (repo_dir / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick_start, re.DOTALL)
    assert block is not None
    assert block.group(1).split("\n")[:-1] == ["make reproduce", "make test"]
    assert "2501.05662" in readme and "2412.04903" in readme


def makefile_recipe(makefile: str, target: str) -> list[str]:
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", makefile, re.MULTILINE)
    assert match is not None, f"no recipe for {target}"
    return [line[1:] for line in match.group(1).splitlines()]


def test_makefile_installs_torch_before_the_kit(repo_dir: Path, torch_pin: Requirement) -> None:
    makefile = (repo_dir / "Makefile").read_text()
    recipe = makefile_recipe(makefile, "$(STAMP)")
    torch_step = next(
        index for index, line in enumerate(recipe) if line.endswith(f"install $(TORCH_PIP_ARGS) {torch_pin}")
    )
    kit_step = next(index for index, line in enumerate(recipe) if '-c constraints.txt -e ".[dev]"' in line)
    assert torch_step < kit_step
    assert any("ipykernel install --user --name seat-kit" in line for line in recipe)
    assert recipe[-2:] == ["$(VENV)/bin/kit check", "touch $@"]
    assert re.search(r"^STAMP := \$\(VENV\)/\.installed$", makefile, re.MULTILINE)
    assert re.search(r"^\$\(STAMP\): pyproject\.toml constraints\.txt$", makefile, re.MULTILINE)


@pytest.mark.parametrize(
    ("target", "command"),
    [
        ("reproduce", "$(VENV)/bin/kit run --profile $(PROFILE)"),
        ("test", "$(PY) -m pytest -q"),
        ("test-fast", '$(PY) -m pytest -q -m "not slow"'),
        ("lint", "$(VENV)/bin/ruff check kit tests"),
        ("clean-runs", "rm -rf results/runs"),
    ],
)
def test_makefile_targets(repo_dir: Path, target: str, command: str) -> None:
    makefile = (repo_dir / "Makefile").read_text()
    assert makefile_recipe(makefile, target) == [command]
    assert re.search(r"^PROFILE \?= tiny$", makefile, re.MULTILINE)


def pins_of(path: Path) -> dict[str, str]:
    """name -> version of a file of ``name==version`` lines (comments and ``-c``/``-r`` lines aside)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{path.name}: {line} is not a pin"
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def test_the_old_end_of_the_window_is_the_training_environment(repo_dir: Path, pyproject: dict) -> None:
    """CI's second CPU environment (envs/unsloth-pins.txt) tests the versions the GPU training environment
    installs (envs/train-gpu.lock), and both lie inside pyproject's ranges."""
    window = pins_of(repo_dir / "envs" / "unsloth-pins.txt")
    train = pins_of(repo_dir / "envs" / "train-gpu.lock")
    assert set(window) == {"torch", "transformers", "trl", "datasets"}
    for name, version in window.items():
        assert train[name] == version, f"{name}: unsloth-pins.txt has {version}, train-gpu.lock {train[name]}"
    requirements = by_name(pyproject["project"]["dependencies"])
    for name in ("transformers", "trl", "datasets"):
        assert requirements[name].specifier.contains(window[name]), f"{name} {window[name]} is outside pyproject"
    assert {"unsloth", "unsloth-zoo", "torchvision"} <= set(train)
    assert "vllm" not in train, "vLLM pins its own torch: it belongs in the serving environment only"


def test_the_serving_environment_is_vllm_alone(repo_dir: Path) -> None:
    serve = pins_of(repo_dir / "envs" / "serve-gpu.lock")
    assert "vllm" in serve and "seat-kit" not in serve and "unsloth" not in serve


def test_the_conda_gpu_variant_installs_the_training_lock(repo_dir: Path) -> None:
    environment = yaml.safe_load((repo_dir / "environment-gpu.yml").read_text())
    (pip_section,) = [entry["pip"] for entry in environment["dependencies"] if isinstance(entry, dict)]
    assert "-c envs/train-gpu.lock" in pip_section and "-e .[unsloth,dev]" in pip_section
    makefile = (repo_dir / "Makefile").read_text()
    assert '-c envs/train-gpu.lock -e ".[unsloth,dev]"' in makefile
    assert "-r envs/serve-gpu.lock" in makefile
    ci = (repo_dir / ".ci" / "run").read_text()
    assert "make test-unsloth-pins" in ci and "make check-locks" in ci
