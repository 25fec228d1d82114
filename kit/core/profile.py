"""Profiles: one YAML file names every model, dataset, sample count and setting a run uses.

``kit/profiles/NAME.yaml`` is loaded by name, any other YAML file by path. Values the papers leave
open are listed under ``assumptions:`` with their source, so that a reader of a results table can
tell a paper's setting from one we chose. Notebooks receive the values they declare in their
``parameters`` cell through ``notebook_parameters``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kit import PACKAGE_DIR
from kit.core.artifacts import HUB_REVISIONS_ENV, content_hash
from kit.core.paths import resolve_path
from kit.errors import KitError

PROFILES_DIR = PACKAGE_DIR / "profiles"
REQUIRED_KEYS = ("name", "seed", "models", "datasets")
ASSUMPTION_SOURCES = ("paper", "authors_code", "ours")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
# Profile names become run folder names, so keep them to characters every file system accepts.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LITERAL_TYPES = (str, int, float, bool, type(None))
_MISSING: Any = object()


@dataclass(frozen=True, eq=False)
class Profile:
    """A loaded, validated profile. ``hash`` changes whenever any value or assumption changes."""

    name: str
    path: Path
    data: dict[str, Any]
    assumptions: dict[str, dict[str, Any]]
    hash: str

    @property
    def reference(self) -> str:
        """What to pass to ``load_profile`` (or ``kit run --profile``) to load this profile again."""
        if self.path.resolve() == (PROFILES_DIR / f"{self.name}.yaml").resolve():
            return self.name
        return str(self.path)

    def get(self, dotted_key: str, default: Any = _MISSING) -> Any:
        """The value at ``dotted_key`` (``"models.teacher"``); without a default a missing key is an error."""
        node: Any = self.data
        for part in dotted_key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is _MISSING:
                    raise KitError(f"profile {self.path} has no key {dotted_key!r}")
                return default
            node = node[part]
        return node

    def resolve_path(self, value: str | Path | None) -> Path | str | None:
        """``resolve_path(value)``: a local path or a hub id (the rule does not depend on the profile)."""
        return resolve_path(value)

    def flatten(self) -> dict[str, Any]:
        """Every value under a notebook parameter name: nested keys joined by '_' (models.teacher ->
        models_teacher), top-level scalars under their own name."""
        flat: dict[str, Any] = {}
        _flatten_into(flat, self.data, prefix=(), path=self.path)
        return flat

    def __repr__(self) -> str:
        return f"Profile(name={self.name!r}, path={str(self.path)!r}, hash={self.hash[:12]!r})"


def _flatten_into(flat: dict[str, Any], node: dict[str, Any], prefix: tuple[str, ...], path: Path) -> None:
    for key, value in node.items():
        dotted = ".".join((*prefix, str(key)))
        if isinstance(value, dict):
            _flatten_into(flat, value, (*prefix, str(key)), path)
            continue
        if not _is_plain_literal(value):
            raise KitError(
                f"profile {path}: {dotted} is a {type(value).__name__}; notebook parameters must be "
                "strings, numbers, booleans, null or lists of them (quote dates and the like)"
            )
        name = "_".join((*prefix, str(key)))
        if name in flat:
            raise KitError(f"profile {path}: {dotted} and another key both flatten to parameter {name!r}")
        flat[name] = value


def _is_plain_literal(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_plain_literal(item) for item in value)
    return isinstance(value, _LITERAL_TYPES)


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``kit/profiles``."""
    return sorted(path.stem for path in PROFILES_DIR.glob("*.yaml"))


def _profile_file(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    is_path = (
        isinstance(name_or_path, Path) or "/" in text or os.sep in text or text.endswith((".yaml", ".yml"))
    )
    if not is_path:
        path = PROFILES_DIR / f"{text}.yaml"
        if not path.is_file():
            raise KitError(
                f"unknown profile {text!r}; available profiles: {', '.join(available_profiles())} "
                "(or give the path to a YAML file)"
            )
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        raise KitError(f"profile file {path} does not exist")
    return path


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path} line {mark.line + 1} column {mark.column + 1}" if mark else str(path)
        raise KitError(f"{where}: YAML syntax error: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise KitError(f"{path}: YAML error: {err}") from None


def _has_dotted(data: dict[str, Any], dotted_key: str) -> bool:
    node: Any = data
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


# A file name with an extension, e.g. train/generate_data.py or EACO/add_des_to_data.py.
_NAMES_A_FILE = re.compile(r"[\w-]+\.(?:py|sh|json|jsonl|yaml|yml|md|txt|ipynb)\b")


def _validate_assumptions(path: Path, data: dict[str, Any], assumptions: Any) -> dict[str, dict[str, Any]]:
    if assumptions is None:
        return {}
    if not isinstance(assumptions, dict):
        raise KitError(f"profile {path}: assumptions must be a mapping of dotted keys to entries")
    for key, entry in assumptions.items():
        where = f"profile {path}: assumption {key!r}"
        if not _has_dotted(data, str(key)):
            raise KitError(f"{where} names a key that does not exist in the profile")
        if not isinstance(entry, dict):
            raise KitError(f"{where} must be a mapping with source and reason")
        if entry.get("source") not in ASSUMPTION_SOURCES:
            raise KitError(
                f"{where} has source {entry.get('source')!r}; expected one of {', '.join(ASSUMPTION_SOURCES)}"
            )
        if not str(entry.get("reason") or "").strip():
            raise KitError(f"{where} has no reason")
        if entry["source"] == "authors_code" and not _NAMES_A_FILE.search(str(entry["reason"])):
            raise KitError(f"{where}: an authors_code reason must name the file of the authors' code (e.g. "
                           "train/generate_data.py)")
    return assumptions


# Profile sections that hold a training recipe, and the settings class that checks them. A section's keys
# that are fields of the class are checked by it (vision_layers is SFTSettings.finetune_vision_layers);
# the others (rows, max_new_tokens, ...) belong to other stages.
RECIPE_SECTIONS = {"finetune": "kit.training.sft.SFTSettings", "critic": "kit.training.sft.SFTSettings",
                   "extra_sft": "kit.training.sft.SFTSettings", "dpo": "kit.training.dpo.DPOSettings"}


def _validate_recipes(path: Path, data: dict[str, Any]) -> None:
    """Each training recipe in the profile is built once, so that ``lora_r: -4`` is refused when the profile
    loads (``kit run --dry-run`` included), not after hours of earlier stages."""
    import importlib

    from kit.core.settings_cli import settings_from_profile

    for section, dotted in RECIPE_SECTIONS.items():
        values = data.get(section)
        if not isinstance(values, dict):
            continue
        module, _, name = dotted.rpartition(".")
        try:
            settings_from_profile(getattr(importlib.import_module(module), name), values)
        except KitError as err:
            raise KitError(f"profile {path}: {section}: {err}") from None
        except TypeError as err:
            raise KitError(f"profile {path}: {section}: {err}") from None
    engine = data.get("engine")
    if isinstance(engine, dict):
        from kit.llm.generate import EngineChoice

        try:
            EngineChoice(**engine)
        except (KitError, TypeError) as err:
            raise KitError(f"profile {path}: engine: {err}") from None


def load_profile(name_or_path: str | Path) -> Profile:
    """Load ``kit/profiles/NAME.yaml`` by name, or any profile YAML by path, and validate it."""
    path = _profile_file(name_or_path)
    document = _read_yaml(path)
    if not isinstance(document, dict):
        raise KitError(f"profile {path}: expected a mapping of keys at the top level")
    data = {key: value for key, value in document.items() if key != "assumptions"}
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise KitError(f"profile {path}: missing required key(s) {', '.join(missing)}")
    name = data["name"]
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise KitError(f"profile {path}: name {name!r} must be letters, digits, '_', '-' or '.'")
    for section in ("models", "datasets"):
        if not isinstance(data[section], dict):
            raise KitError(f"profile {path}: {section} must be a mapping of names to paths or hub ids")
    # revisions: {<hub id>: <commit, tag or branch>}; a string, because YAML reads an unquoted all-digit
    # commit prefix as a number.
    revisions = data.get("revisions", {})
    if not isinstance(revisions, dict):
        raise KitError(f"profile {path}: revisions must be a mapping of hub ids to commits, tags or branches")
    for repo_id, revision in revisions.items():
        if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not isinstance(revision, str) or not revision:
            raise KitError(f"profile {path}: revisions.{repo_id} must map a hub id (org/name) to a quoted "
                           f"commit, tag or branch, not {revision!r}")
    assumptions = _validate_assumptions(path, data, document.get("assumptions"))
    _validate_recipes(path, data)
    # A value no notebook could receive (a YAML date, say) is reported now, not in the middle of a run.
    _flatten_into({}, data, prefix=(), path=path)
    try:
        profile_hash = content_hash({"data": data, "assumptions": assumptions})
    except TypeError as err:
        raise KitError(f"profile {path}: assumptions must hold plain values: {err}") from None
    return Profile(name=name, path=path.resolve(), data=data, assumptions=assumptions, hash=profile_hash)


def declared_parameters(notebook_path: str | Path) -> list[str]:
    """Names assigned in the notebook's cell tagged ``parameters`` (empty when it has none).

    Read with papermill's Python translator, the one ``papermill.inspect_notebook`` uses for Python
    kernels, called directly because ``inspect_notebook`` refuses notebooks without kernelspec
    metadata, and the runner executes every notebook with the ``python3`` kernel whatever it names.
    """
    import nbformat
    from papermill.translators import PythonTranslator

    try:
        notebook = nbformat.read(str(notebook_path), as_version=4)
    except (OSError, ValueError) as err:
        raise KitError(f"cannot read notebook {notebook_path}: {err}") from None
    for cell in notebook.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return [parameter.name for parameter in PythonTranslator.inspect(cell)]
    return []


def notebook_parameters(
    profile: Profile, notebook_path: str | Path, run_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The parameters to inject into a notebook: those its ``parameters`` cell declares that the
    profile provides, plus ``profile`` (what ``load_profile`` takes), ``run_dir`` (this run's folder)
    and ``results_dir`` (where tables and figures go) when declared."""
    values = profile.flatten()
    values["profile"] = profile.reference
    if run_dir is not None:
        values["run_dir"] = str(run_dir)
    if results_dir is not None:
        values["results_dir"] = str(results_dir)
    return {name: values[name] for name in declared_parameters(notebook_path) if name in values}


def runtime_environment(profile: Profile) -> dict[str, str | None]:
    """The environment variables the profile's process settings call for, without setting any: a value to set,
    or ``None`` for a variable to remove (an earlier profile's hub pins). ``apply_runtime`` sets them in this
    process; ``kit run --dry-run`` prints them in front of each notebook's papermill command."""
    environment: dict[str, str | None] = {}
    if profile.get("offline", False) is True:
        for variable in OFFLINE_VARIABLES:
            environment[variable] = "1"
    # The pinned hub revisions reach loaders and stage keys (kit.core.artifacts.hub_commit) in every kernel.
    revisions = profile.get("revisions", None)
    environment[HUB_REVISIONS_ENV] = json.dumps(revisions, sort_keys=True) if revisions else None
    threads = torch_threads(profile)
    if threads is not None:
        environment["OMP_NUM_THREADS"] = str(threads)
        environment["MKL_NUM_THREADS"] = str(threads)
    return environment


# Set by ``kit run`` for the kernels of notebooks that run side by side (``notebook_lanes``): each kernel gets its
# share of the profile's torch_threads instead of all of them. Thread counts change no number (LoRA adapters and
# greedy predictions are bit-identical at one and two threads: docs/performance.md), so it is not part of any key.
THREADS_SHARE_ENV = "KIT_TORCH_THREADS_SHARE"


def torch_threads(profile: Profile) -> int | None:
    """The torch threads this process should use: the profile's ``torch_threads`` (None: torch's default), or
    the smaller share ``kit run`` gave this kernel (``THREADS_SHARE_ENV``)."""
    threads = profile.get("torch_threads", None)
    if threads is None:
        return None
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise KitError(f"profile {profile.path}: torch_threads must be a positive integer or null")
    share = os.environ.get(THREADS_SHARE_ENV, "")
    if not share.isdigit() or int(share) < 1:
        return threads
    return min(threads, int(share))


def apply_runtime(profile: Profile) -> dict[str, str]:
    """Apply the profile's process settings; returns the environment variables it set.

    Environment variables are set (rather than only calling library functions) because notebook
    kernels are child processes and inherit ``os.environ`` at start.
    """
    environment = runtime_environment(profile)
    changed = {name: value for name, value in environment.items() if value is not None}
    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)  # an earlier profile's pins must not apply to this one
    os.environ.update(changed)
    threads = torch_threads(profile)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return changed


# ------------------------------------------------------------------------------------------ hand-supplied data
DATA_DOC = "docs/paper-data.md"


@dataclass(frozen=True)
class DataRequirement:
    """What the kit expects in the folder a ``datasets:`` key names when that data is supplied by hand.

    ``files``: each entry is one requirement, a tuple of glob patterns relative to the folder, any one of
    which must match (``("data/annotations.json", "annotations.json")``: either layout the reader accepts).
    ``reader``: the function that reads the folder (the rules here restate what it needs, nothing more).
    ``read_by``: the notebooks that read it, so a run that executes none of them does not need it.
    ``section``: the anchor of its section in ``docs/paper-data.md``."""

    title: str
    section: str
    reader: str
    read_by: tuple[str, ...]
    files: tuple[tuple[str, ...], ...]


# One table for every dataset the paper profile cannot fetch from the hub. A local ``datasets:`` path outside
# the tiny world's root (``world.root``, which notebook 00 and ``kit world build`` write) is data a person
# supplies; a key listed here is checked for its files too, any other such key only for its folder.
HAND_SUPPLIED_DATA: dict[str, DataRequirement] = {
    "datasets.eaco_images": DataRequirement(
        title="COCO train2014 (EACO's preference images)", section="coco-train2014",
        reader="kit.eaco.preference.list_images", read_by=("07",),
        files=(("*.jpg", "*.jpeg", "*.png"),)),
    "datasets.instructions": DataRequirement(
        title="STIC's instruction set (the extra SFT stage)", section="stic-instruction-set",
        reader="kit.eaco.pipeline.load_instruction_rows", read_by=("07",),
        files=(("*.json",), ("coco/train2017/*.jpg",), ("textvqa/train_images/*.jpg",), ("vg/VG_100K/*.jpg",),
               ("vg/VG_100K_2/*.jpg",))),
    "datasets.amber": DataRequirement(
        title="AMBER", section="amber", reader="kit.eval.benchmarks.amber.load", read_by=("08",),
        files=(("data/annotations.json", "annotations.json"), ("data/relation.json", "relation.json"),
               ("data/safe_words.txt", "safe_words.txt"), ("data/query/query_all.json", "query/query_all.json"),
               ("image/AMBER_*", "images/AMBER_*", "AMBER_*"))),
}
OTHER_LOCAL_DATA_SECTION = "other-local-datasets"


@dataclass(frozen=True)
class MissingData:
    """One hand-supplied dataset that is not where the profile says, or lacks files the kit reads."""

    key: str
    path: Path
    problem: str
    section: str
    read_by: tuple[str, ...] | None  # None: not known, so every notebook may read it

    def line(self) -> str:
        return f"{self.key}: {_shown_path(self.path)} {self.problem} (see {DATA_DOC}#{self.section})"


def _shown_path(path: Path) -> str:
    from kit import REPO_DIR

    try:
        return path.relative_to(REPO_DIR).as_posix()
    except ValueError:
        return str(path)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def hand_supplied_data(profile: Profile) -> dict[str, Path]:
    """``datasets:`` keys (``datasets.amber``) whose value is a local path a person supplies: not a hub id
    (``kit.core.paths.resolve_path``) and not inside the tiny world the pipeline builds (``world.root``)."""
    world_root = profile.get("world.root", None)
    built = resolve_path(world_root) if world_root else None
    found = {}
    for name, value in profile.get("datasets").items():
        resolved = resolve_path(value)
        if not isinstance(resolved, Path):
            continue
        if isinstance(built, Path) and _inside(resolved, built):
            continue
        found[f"datasets.{name}"] = resolved
    return found


def missing_data(profile: Profile) -> list[MissingData]:
    """Every hand-supplied dataset of the profile (``hand_supplied_data``) that is absent, or present without
    the files ``HAND_SUPPLIED_DATA`` names for its key; in the order of the profile's ``datasets:``."""
    missing = []
    for key, path in hand_supplied_data(profile).items():
        requirement = HAND_SUPPLIED_DATA.get(key)
        section = requirement.section if requirement else OTHER_LOCAL_DATA_SECTION
        read_by = requirement.read_by if requirement else None
        if not path.exists():
            missing.append(MissingData(key, path, "does not exist", section, read_by))
            continue
        if requirement is None:
            continue
        if not path.is_dir():
            missing.append(MissingData(key, path, "is not a folder", section, read_by))
            continue
        absent = [patterns for patterns in requirement.files
                  if not any(next(path.glob(pattern), None) is not None for pattern in patterns)]
        if absent:
            wanted = "; ".join(" or ".join(patterns) for patterns in absent)
            missing.append(MissingData(key, path, f"has no {wanted}", section, read_by))
    return missing
