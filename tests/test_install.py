"""A non-editable install (``pip install .``) finds the project from KIT_ROOT, ``kit --root``, or the working
directory, not from where the package is installed; profiles travel with the package (docs/installing.md).

The kit is installed without dependencies into a temporary folder (pip ``--target``, offline, this
environment's setuptools) and put first on ``PYTHONPATH``, so that it shadows the editable install; every
subprocess checks that it imported that copy. ``python -P`` keeps the working directory off ``sys.path``, so
that running from the repository does not import the checkout's ``kit`` either."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kit import ROOT_ENV
from kit.cli import _root_argument

# Runs the kit CLI, then reports which kit it imported and the root it used (on stderr, after the command).
PROBE = """
import sys, kit
from kit.cli import main
code = main(sys.argv[1:])
print(f"probe: kit={kit.__file__} root={kit.REPO_DIR} source={kit.ROOT_SOURCE}", file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def installed(repo_dir: Path, tmp_path_factory) -> Path:
    """The folder a non-editable ``pip install --target`` of this checkout's kit went to."""
    source = tmp_path_factory.mktemp("source")
    # A copy of what the build reads, so that setuptools' build/ and egg-info do not land in the checkout.
    shutil.copytree(repo_dir / "kit", source / "kit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(repo_dir / name, source / name)
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "kit" / "profiles" / "tiny.yaml").is_file()
    assert not (target / "notebooks").exists()
    return target


def _environment(installed: Path, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name != ROOT_ENV}
    return {**env, "PYTHONPATH": str(installed), **extra}


def _kit(installed: Path, cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-P", "-c", PROBE, *args], cwd=cwd, env=_environment(installed, **extra),
                          capture_output=True, text=True, timeout=300)
    print(f"$ (cd {cwd} && kit {' '.join(args)})  -> exit {done.returncode}\n{done.stdout}{done.stderr}")
    assert f"probe: kit={installed / 'kit' / '__init__.py'} " in done.stderr, done.stderr
    return done


def test_root_option_is_read_before_the_subcommand_only():
    assert _root_argument(["--root", "/p", "run", "--profile", "tiny"]) == "/p"
    assert _root_argument(["--root=/p", "run"]) == "/p"
    assert _root_argument(["world", "build", "--root", "data/tiny"]) is None
    assert _root_argument(["run", "--profile", "tiny"]) is None


@pytest.mark.slow
def test_installed_copy_loads_profiles_as_package_data(installed: Path, tmp_path: Path):
    code = ("import kit; from kit.core.profile import load_profile; p = load_profile('tiny'); "
            "print(kit.__file__, kit.ROOT_SOURCE, p.path, p.reference, sep='\\n')")
    done = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env=_environment(installed),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kit_file, source, profile_path, reference = done.stdout.split("\n")[:4]
    assert Path(kit_file) == installed / "kit" / "__init__.py"
    assert source == "None"  # no project here, and loading a profile does not need one
    assert Path(profile_path) == installed / "kit" / "profiles" / "tiny.yaml"
    assert reference == "tiny"


@pytest.mark.slow
def test_root_found_from_the_working_directory(installed: Path, repo_dir: Path):
    done = _kit(installed, repo_dir, "run", "--profile", "tiny", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "00_tiny_world" in done.stdout
    assert f"root={repo_dir} source=working directory" in done.stderr


@pytest.mark.slow
def test_root_given_with_the_root_option(installed: Path, repo_dir: Path, tmp_path: Path):
    done = _kit(installed, tmp_path, "--root", str(repo_dir), "run", "--profile", "tiny", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "00_tiny_world" in done.stdout
    assert f"root={repo_dir} source={ROOT_ENV}" in done.stderr


@pytest.mark.slow
def test_root_given_with_the_environment_variable(installed: Path, repo_dir: Path, tmp_path: Path):
    done = _kit(installed, tmp_path, "run", "--profile", "tiny", "--dry-run", **{ROOT_ENV: str(repo_dir)})
    assert done.returncode == 0, done.stderr
    assert f"root={repo_dir} source={ROOT_ENV}" in done.stderr


@pytest.mark.slow
def test_no_root_is_refused_in_one_sentence(installed: Path, tmp_path: Path):
    done = _kit(installed, tmp_path, "run", "--profile", "tiny", "--dry-run")
    assert done.returncode == 2
    assert done.stdout == ""
    message = done.stderr.split("probe:")[0].strip()
    assert message.startswith("kit run: error: no seat-kit project found")
    assert "\n" not in message
    for way in ("run kit from the project folder", "kit --root PATH", f"{ROOT_ENV}=PATH"):
        assert way in message
    assert not (tmp_path / "results").exists()
