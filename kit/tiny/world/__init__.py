"""The embedded tiny world: a seeded generator of small pictures with questions, exact answers and gold
step-by-step solutions, written in the real datasets' on-disk layouts so that the same loaders and
scorers run on the tiny world and on the real benchmarks.

``build_world(root, config)`` writes every family (see ``kit.tiny.world.families`` for the layouts) plus

* ``SCENES.jsonl``: one line per image file, ``{"file", "scene_hash", "split", "scene"}``, the ground
  truth behind every picture;
* ``MANIFEST.json``: the generator version, the config, record and image counts per family and the
  sha256 of every file.

The build is atomic (written beside ``root`` and swapped in) and skipped when ``MANIFEST.json`` already
records the same config and generator version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from kit.core.artifacts import atomic_dir, file_hash
from kit.errors import KitError
from kit.tiny.world import eaco_families
from kit.tiny.world import families as fam
from kit.tiny.world.families import EVAL_FAMILIES, FAMILIES, TRAIN_FAMILIES
from kit.tiny.world.readers import image_questions, load_records
from kit.tiny.world.scenes import Scene, describe, edit_scene, render, sample_scene, scene_hash, scene_split

# Bump whenever the generator's output changes, so that an existing world is rebuilt.
WORLD_VERSION = 2
MANIFEST = "MANIFEST.json"
SCENES = "SCENES.jsonl"

__all__ = [
    "EVAL_FAMILIES",
    "FAMILIES",
    "TRAIN_FAMILIES",
    "WORLD_VERSION",
    "Scene",
    "WorldConfig",
    "build_world",
    "describe",
    "edit_scene",
    "family_rng",
    "load_records",
    "overlap_report",
    "read_manifest",
    "read_scenes",
    "render",
    "sample_scene",
    "scene_hash",
]


@dataclass(frozen=True)
class WorldConfig:
    """The seed, the image size and every family's size (the ``world:`` section of a profile)."""

    seed: int = 20250110
    image_size: int = 112
    train_pool: int = 6000
    mathvista_testmini: int = 300
    mathvision_test: int = 300
    mathvision_testmini: int = 60
    wemath_problems: int = 60
    hallusionbench_sets: int = 40
    mme_images_per_subtask: int = 20
    eaco_images: int = 300
    vlfeedback_prompts: int = 300
    instructions: int = 300
    # EACO's other benchmarks.
    pope_images: int = 50
    seed_questions: int = 280
    scienceqa_problems: int = 300
    amber_images: int = 60

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise KitError(f"world.{f.name} must be a whole number >= 0, not {value!r}")
        if self.image_size % 4 or self.image_size < 32:
            raise KitError(f"world.image_size must be a multiple of 4 and at least 32, not {self.image_size}")

    @classmethod
    def from_profile(cls, world: Mapping[str, Any]) -> WorldConfig:
        """From a profile's ``world:`` section; ``root`` is where to build, not part of the config."""
        if not isinstance(world, Mapping):
            raise KitError(f"the profile's world section must be a mapping, not {type(world).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(world) - names - {"root"})
        if unknown:
            raise KitError(f"unknown key(s) in the profile's world section: {', '.join(unknown)}")
        missing = sorted(names - set(world))
        if missing:
            raise KitError(f"the profile's world section lacks: {', '.join(missing)}")
        return cls(**{name: world[name] for name in names})

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def family_rng(seed: int, family: str) -> random.Random:
    """The generator of one family, derived from (seed, family name) only, so that changing one
    family's size leaves every other family's files unchanged."""
    digest = hashlib.sha256(f"{seed}/{family}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    path = Path(root) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_world(
    root: str | Path, config: WorldConfig, force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Write the tiny world into ``root`` and return its manifest; a world already built with the same
    config, generator version and families is returned as it is unless ``force``."""
    root = Path(root)
    existing = read_manifest(root)
    if (
        not force
        and existing is not None
        and existing.get("version") == WORLD_VERSION
        and existing.get("config") == config.to_dict()
        # a world built before a family was added (the EACO benchmarks) lacks it: rebuild
        and set(existing.get("counts", {})) == set(FAMILIES)
    ):
        return existing
    with atomic_dir(root) as tmp:
        manifest = _build_into(tmp, config, progress)
    return manifest


def _build_into(folder: Path, config: WorldConfig, progress: bool) -> dict[str, Any]:
    ctx = fam.Context(folder, config.image_size)
    seed = config.seed
    eval_steps: list[tuple[str, Callable[[], int]]] = [
        (
            "mathvista",
            lambda: fam.write_mathvista(ctx, family_rng(seed, "mathvista"), config.mathvista_testmini),
        ),
        (
            "mathvision",
            lambda: fam.write_mathvision(
                ctx,
                family_rng(seed, "mathvision/test"),
                family_rng(seed, "mathvision/testmini"),
                config.mathvision_test,
                config.mathvision_testmini,
            ),
        ),
        ("wemath", lambda: fam.write_wemath(ctx, family_rng(seed, "wemath"), config.wemath_problems)),
        (
            "hallusionbench",
            lambda: fam.write_hallusionbench(
                ctx, family_rng(seed, "hallusionbench"), config.hallusionbench_sets
            ),
        ),
        ("mme", lambda: fam.write_mme(ctx, family_rng(seed, "mme"), config.mme_images_per_subtask)),
        # EACO's other benchmarks: own generators, evaluation-side scenes only, so that no earlier family
        # and no training family changes (training families reject evaluation-side scenes anyway).
        ("pope", lambda: eaco_families.write_pope(ctx, family_rng(seed, "pope"), config.pope_images)),
        ("seed", lambda: eaco_families.write_seed(ctx, family_rng(seed, "seed"), config.seed_questions)),
        ("scienceqa", lambda: eaco_families.write_scienceqa(ctx, family_rng(seed, "scienceqa"), config.scienceqa_problems)),
        ("amber", lambda: eaco_families.write_amber(ctx, family_rng(seed, "amber"), config.amber_images)),
    ]
    # Evaluation families first: the training families then refuse every scene they used.
    eval_hashes: set[str] = set()
    train_steps: list[tuple[str, Callable[[], int]]] = [
        (
            "mathv360k",
            lambda: fam.write_mathv360k(ctx, family_rng(seed, "mathv360k"), config.train_pool, eval_hashes),
        ),
        (
            "eaco_images",
            lambda: fam.write_eaco_images(
                ctx, family_rng(seed, "eaco_images"), config.eaco_images, eval_hashes
            ),
        ),
        (
            "vlfeedback",
            lambda: fam.write_vlfeedback(
                ctx, family_rng(seed, "vlfeedback"), config.vlfeedback_prompts, eval_hashes
            ),
        ),
        (
            "instructions",
            lambda: fam.write_instructions(
                ctx, family_rng(seed, "instructions"), config.instructions, eval_hashes
            ),
        ),
    ]
    counts: dict[str, dict[str, int]] = {}
    bar = tqdm(
        total=len(eval_steps) + len(train_steps), desc="tiny world", unit="family", disable=not progress
    )
    for name, write in eval_steps:
        bar.set_postfix_str(name)
        counts[name] = {"records": write()}
        bar.update()
    eval_hashes.update(scene_hash(s) for s in ctx.scenes.values())
    for name, write in train_steps:
        bar.set_postfix_str(name)
        counts[name] = {"records": write()}
        bar.update()
    bar.close()
    for name in counts:
        counts[name]["images"] = sum(1 for rel in ctx.scenes if rel.split("/", 1)[0] == name)
    lines = [
        json.dumps({"file": rel, "scene_hash": scene_hash(s), "split": scene_split(s), "scene": s.to_dict()})
        for rel, s in sorted(ctx.scenes.items())
    ]
    (folder / SCENES).write_text("\n".join(lines) + "\n", encoding="utf-8")
    files = {
        p.relative_to(folder).as_posix(): file_hash(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "generator": "kit.tiny.world",
        "version": WORLD_VERSION,
        "config": config.to_dict(),
        "counts": counts,
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def read_scenes(root: str | Path) -> dict[str, Scene]:
    """Image path (relative to the world root) -> the scene it shows, from ``SCENES.jsonl``."""
    path = Path(root) / SCENES
    if not path.is_file():
        raise KitError(f"no {SCENES} in {root}: build the world with `kit world build` first")
    scenes = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        scenes[row["file"]] = Scene.from_dict(row["scene"])
    return scenes


def _pixel_hash(path: Path) -> str:
    # Decoded pixels, not file bytes, so that a re-encoded copy of an evaluation image is still caught.
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        return hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def overlap_report(root: str | Path) -> dict[str, list[dict[str, Any]]]:
    """What training families share with evaluation families; every list is empty for a sound world.

    * ``scenes``: scene hashes (from ``SCENES.jsonl``) used on both sides;
    * ``images``: identical pictures (decoded pixels) on both sides, whether or not SCENES lists them;
    * ``image_questions``: the same question asked of the same picture on both sides.
    """
    root = Path(root)
    side = {name: "train" for name in TRAIN_FAMILIES} | {name: "eval" for name in EVAL_FAMILIES}

    scene_files: dict[str, dict[str, list[str]]] = {}
    for rel, scene in read_scenes(root).items():
        scene_files.setdefault(scene_hash(scene), {"train": [], "eval": []})[
            side[rel.split("/", 1)[0]]
        ].append(rel)
    shared_scenes = [
        {"scene_hash": h, "train": sorted(f["train"]), "eval": sorted(f["eval"])}
        for h, f in sorted(scene_files.items())
        if f["train"] and f["eval"]
    ]

    pixel: dict[str, str] = {}
    image_files: dict[str, dict[str, list[str]]] = {}
    for family in FAMILIES:
        for path in sorted((root / family).rglob("*.png")):
            rel = path.relative_to(root).as_posix()
            pixel[rel] = _pixel_hash(path)
            image_files.setdefault(pixel[rel], {"train": [], "eval": []})[side[family]].append(rel)
    shared_images = [
        {"pixel_hash": h, "train": f["train"], "eval": f["eval"]}
        for h, f in sorted(image_files.items())
        if f["train"] and f["eval"]
    ]

    asked: dict[tuple[str, str], dict[str, list[str]]] = {}
    for family in FAMILIES:
        for image, question in image_questions(root, family):
            if not image or not question or image not in pixel:
                continue
            key = (pixel[image], _normal(question))
            asked.setdefault(key, {"train": [], "eval": []})[side[family]].append(image)
    shared_questions = [
        {"question": q, "train": sorted(set(f["train"])), "eval": sorted(set(f["eval"]))}
        for (_, q), f in sorted(asked.items())
        if f["train"] and f["eval"]
    ]
    return {"scenes": shared_scenes, "images": shared_images, "image_questions": shared_questions}
