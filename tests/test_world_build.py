"""Building the tiny world: deterministic, atomic, skipped when up to date, independent per family,
and with no picture both trained on and evaluated."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import pytest

from kit import REPO_DIR
from kit.cli import main
from kit.core.artifacts import file_hash
from kit.errors import KitError
from kit.tiny.world import WorldConfig, build_world, overlap_report, read_manifest, readers
from kit.tiny.world import families as fam

SMALL = WorldConfig(
    seed=3,
    train_pool=120,
    mathvista_testmini=40,
    mathvision_test=30,
    mathvision_testmini=10,
    wemath_problems=10,
    hallusionbench_sets=10,
    mme_images_per_subtask=4,
    eaco_images=10,
    vlfeedback_prompts=10,
    instructions=10,
    pope_images=6,
    seed_questions=14,
    scienceqa_problems=12,
    amber_images=5,
)
# The sizes of the tiny profile's world when the shipped tiny models were trained (before the EACO
# benchmark families existed), and hashes of what those families wrote then, computed from a fresh
# `kit world build` before pope/seed/scienceqa/amber were added: the text files' sha256 (with the
# SCENES.jsonl lines of those families) and the decoded pixels of their PNGs (PNG bytes depend on the
# zlib build, pixels do not).
SHIPPED_SIZES = WorldConfig(
    seed=20250110, image_size=112, train_pool=6000, mathvista_testmini=300, mathvision_test=300,
    mathvision_testmini=60, wemath_problems=60, hallusionbench_sets=40, mme_images_per_subtask=20,
    eaco_images=300, vlfeedback_prompts=300, instructions=300,
)
EARLIER_FAMILIES = ("mathvista", "mathvision", "wemath", "hallusionbench", "mme", "mathv360k", "eaco_images",
                    "vlfeedback", "instructions")
EARLIER_TEXT_HASH = "df2ecaf0367fb721ba571bff13d9b46b0908fcd8e6ec9a6e75751c777e58f8a2"
EARLIER_PIXEL_HASH = "a97f284e0b80434f6053c5aba919442ab513ad0f4bbf8ae5c48ec150851bfc4b"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("built") / "tiny"
    build_world(root, SMALL, progress=False)
    return root


def family_files(manifest: dict, family: str) -> dict[str, str]:
    return {path: digest for path, digest in manifest["files"].items() if path.split("/", 1)[0] == family}


def test_the_manifest_records_config_counts_and_a_hash_of_every_file(world: Path) -> None:
    manifest = read_manifest(world)
    assert manifest["config"] == SMALL.to_dict()
    on_disk = sorted(p.relative_to(world).as_posix() for p in world.rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == [p for p in on_disk if p != "MANIFEST.json"]
    assert all(file_hash(world / path) == digest for path, digest in manifest["files"].items())
    counts = manifest["counts"]
    assert counts["mathvista"]["records"] == SMALL.mathvista_testmini
    assert counts["mathvision"]["records"] == SMALL.mathvision_test + SMALL.mathvision_testmini
    assert counts["mathv360k"] == {"records": SMALL.train_pool, "images": SMALL.train_pool // 3}
    assert counts["mme"] == {
        "records": 2 * 6 * SMALL.mme_images_per_subtask,
        "images": 6 * SMALL.mme_images_per_subtask,
    }
    assert counts["pope"] == {"records": 3 * 6 * SMALL.pope_images, "images": SMALL.pope_images}
    assert counts["seed"] == {"records": SMALL.seed_questions, "images": SMALL.seed_questions}
    assert counts["scienceqa"]["records"] == SMALL.scienceqa_problems
    assert counts["amber"]["images"] == SMALL.amber_images


def test_the_same_config_builds_byte_identical_worlds(world: Path, tmp_path: Path) -> None:
    again = build_world(tmp_path / "again", SMALL, progress=False)
    assert again == read_manifest(world)
    for path in ("mathvista/testmini.json", "mathvista/images/1.png", "wemath/testmini.json", "SCENES.jsonl"):
        assert (tmp_path / "again" / path).read_bytes() == (world / path).read_bytes()


def test_the_build_does_not_depend_on_python_hash_randomisation(world: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = (
        "import json, sys; from kit.tiny.world import WorldConfig, build_world; "
        "print(json.dumps(build_world(sys.argv[1], WorldConfig(**json.loads(sys.argv[2])), progress=False)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "other"), json.dumps(SMALL.to_dict())],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == read_manifest(world)


def test_a_different_seed_builds_a_different_world(world: Path, tmp_path: Path) -> None:
    other = build_world(tmp_path / "other", dataclasses.replace(SMALL, seed=4), progress=False)
    ours = read_manifest(world)
    for path in (
        "mathvista/testmini.json",
        "mathv360k/train_samples_all_tuning.json",
        "hallusionbench/HallusionBench.json",
    ):
        assert other["files"][path] != ours["files"][path]


def test_changing_one_family_size_leaves_every_other_family_unchanged(world: Path, tmp_path: Path) -> None:
    changed = build_world(
        tmp_path / "bigger", dataclasses.replace(SMALL, mathvista_testmini=45), progress=False
    )
    ours = read_manifest(world)
    assert family_files(changed, "mathvista") != family_files(ours, "mathvista")
    for family in fam.FAMILIES:
        if family != "mathvista":
            assert family_files(changed, family) == family_files(ours, family), family


def test_the_eaco_benchmark_families_change_no_other_family(world: Path, tmp_path: Path) -> None:
    without = build_world(
        tmp_path / "without",
        dataclasses.replace(SMALL, pope_images=0, seed_questions=0, scienceqa_problems=0, amber_images=0),
        progress=False,
    )
    ours = read_manifest(world)
    for family in fam.FAMILIES:
        if family not in fam.EACO_FAMILIES:
            assert family_files(without, family) == family_files(ours, family), family
        else:
            assert family_files(without, family) != family_files(ours, family), family


def _pixels(path: Path) -> bytes:
    with PIL.Image.open(path) as image:
        return image.convert("RGB").tobytes()


def test_the_shipped_models_world_is_byte_identical_to_before_the_eaco_families(tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    build_world(root, SHIPPED_SIZES, progress=False)
    text = {
        p.relative_to(root).as_posix(): file_hash(p)
        for p in sorted(root.rglob("*"))
        if p.suffix in (".json", ".jsonl", ".txt") and p.relative_to(root).parts[0] in EARLIER_FAMILIES
    }
    lines = [line for line in (root / "SCENES.jsonl").read_text(encoding="utf-8").splitlines()
             if json.loads(line)["file"].split("/", 1)[0] in EARLIER_FAMILIES]
    text["SCENES.jsonl[existing]"] = hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()
    assert len(text) == 130
    assert hashlib.sha256(json.dumps(text, sort_keys=True).encode()).hexdigest() == EARLIER_TEXT_HASH
    pixels = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        if path.relative_to(root).parts[0] in EARLIER_FAMILIES:
            pixels.update(path.relative_to(root).as_posix().encode())
            pixels.update(_pixels(path))
    assert pixels.hexdigest() == EARLIER_PIXEL_HASH


def test_a_world_built_before_the_eaco_families_is_rebuilt(world: Path, tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    shutil.copytree(world, root)
    manifest = read_manifest(root)
    for family in fam.EACO_FAMILIES:
        del manifest["counts"][family]
        shutil.rmtree(root / family)
    (root / "MANIFEST.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert build_world(root, SMALL, progress=False) == read_manifest(world)
    assert (root / "amber/data/annotations.json").is_file()


def test_an_up_to_date_world_is_not_rebuilt(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("an up-to-date world was rebuilt")

    monkeypatch.setattr(fam, "write_mathvista", fail)
    start = time.perf_counter()
    assert build_world(world, SMALL, progress=False) == read_manifest(world)
    assert time.perf_counter() - start < 1.0
    with pytest.raises(AssertionError, match="rebuilt"):
        build_world(world, SMALL, force=True, progress=False)
    assert read_manifest(world)["config"] == SMALL.to_dict()  # the failed forced rebuild changed nothing


def test_a_build_that_fails_midway_leaves_the_previous_world_intact(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tiny"
    shutil.copytree(world, root)
    before = read_manifest(root)

    def killed(*args: object, **kwargs: object) -> int:
        raise RuntimeError("killed while writing MME")

    monkeypatch.setattr(fam, "write_mme", killed)
    with pytest.raises(RuntimeError, match="killed"):
        build_world(root, dataclasses.replace(SMALL, seed=99), progress=False)
    assert read_manifest(root) == before
    assert all(file_hash(root / path) == digest for path, digest in before["files"].items())
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"], "no half-built folder is left beside the world"


def test_training_and_evaluation_share_no_picture(world: Path) -> None:
    report = overlap_report(world)
    assert report == {"scenes": [], "images": [], "image_questions": []}


def test_the_overlap_report_catches_a_planted_overlap(world: Path, tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    shutil.copytree(world, root)
    problem = json.loads((root / "mathvista/testmini.json").read_text())["1"]
    # plant MathVista's first picture and question in the training pool, as a re-encoded copy
    from PIL import Image

    with Image.open(root / "mathvista" / problem["image"]) as image:
        image.save(root / "mathv360k/images/planted.png", compress_level=1)
    pool_file = root / "mathv360k/train_samples_all_tuning.json"
    pool = json.loads(pool_file.read_text())
    pool.append(
        {
            **pool[0],
            "id": "planted",
            "image": "images/planted.png",
            "conversations": [
                {"from": "human", "value": f"<image>\n{problem['question']}"},
                {"from": "gpt", "value": problem["answer"]},
            ],
        }
    )
    pool_file.write_text(json.dumps(pool))
    scenes_file = root / "SCENES.jsonl"
    line = next(row for row in scenes_file.read_text().splitlines() if '"mathvista/images/1.png"' in row)
    scenes_file.write_text(
        scenes_file.read_text()
        + line.replace("mathvista/images/1.png", "mathv360k/images/planted.png")
        + "\n"
    )
    report = overlap_report(root)
    assert [entry["train"] for entry in report["images"]] == [["mathv360k/images/planted.png"]]
    assert report["image_questions"][0]["question"] == problem["question"].lower()
    assert "mathvista/images/1.png" in report["scenes"][0]["eval"]


def test_building_draws_no_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fonts(*args: object, **kwargs: object) -> None:
        raise AssertionError("the tiny world must not draw text")

    for name in ("load_default", "truetype", "load", "load_path"):
        monkeypatch.setattr(PIL.ImageFont, name, no_fonts)
    monkeypatch.setattr(PIL.ImageDraw.ImageDraw, "text", no_fonts)
    build_world(tmp_path / "tiny", dataclasses.replace(SMALL, train_pool=30), progress=False)


def test_world_config_from_profile_checks_every_key() -> None:
    section = {"root": "data/tiny", **SMALL.to_dict()}
    assert WorldConfig.from_profile(section) == SMALL
    with pytest.raises(KitError, match="unknown key"):
        WorldConfig.from_profile({**section, "mathvista_testmin": 3})
    with pytest.raises(KitError, match="lacks: train_pool"):
        WorldConfig.from_profile({k: v for k, v in section.items() if k != "train_pool"})
    with pytest.raises(KitError, match="whole number"):
        WorldConfig.from_profile({**section, "eaco_images": True})
    with pytest.raises(KitError, match="image_size"):
        WorldConfig.from_profile({**section, "image_size": 110})


def test_kit_world_build_and_show_with_the_tiny_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import yaml

    sizes = yaml.safe_load((REPO_DIR / "kit/profiles/tiny.yaml").read_text())["world"]
    root = tmp_path / "tiny"
    start = time.perf_counter()
    assert main(["world", "build", "--profile", "tiny", "--root", str(root)]) == 0
    seconds = time.perf_counter() - start
    assert seconds < 30, f"building the tiny profile's world took {seconds:.1f} s"
    out = capsys.readouterr().out
    assert "built in" in out
    manifest = read_manifest(root)
    assert manifest["counts"]["mathv360k"]["records"] == sizes["train_pool"]
    assert manifest["counts"]["mathvista"]["records"] == sizes["mathvista_testmini"]
    assert len({r["ID"] for r in readers.load_records(root, "wemath")}) == sizes["wemath_problems"]
    assert overlap_report(root) == {"scenes": [], "images": [], "image_questions": []}
    assert main(["world", "build", "--profile", "tiny", "--root", str(root)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["world", "show", "hallusionbench", "--root", str(root), "--n", "2"]) == 0
    shown = capsys.readouterr().out
    assert shown.count('"gt_answer"') == 2
    assert main(["world", "show", "mme", "--root", str(tmp_path / "missing")]) == 2
    assert "kit world build" in capsys.readouterr().err
