"""Reading a built world back: every family's records and (image, question) pairs, whichever module wrote
them (``families`` for the Cas-SEAT benchmarks and training sources, ``eaco_families`` for EACO's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kit.tiny.world import eaco_families
from kit.tiny.world.families import EACO_FAMILIES, FAMILIES, MME_SUFFIX


def load_records(root: Path, family: str) -> list[dict[str, Any]]:
    """The records of ``family`` as written, one dict per question (MME lines become dicts with
    subtask, image, question, answer; EACO images become dicts with the image path; the EACO benchmark
    families are read by ``kit.tiny.world.eaco_families.load_records``)."""
    if family in EACO_FAMILIES:
        return eaco_families.load_records(root, family)
    base = Path(root) / family
    if family == "mathv360k":
        return json.loads((base / "train_samples_all_tuning.json").read_text(encoding="utf-8"))
    if family == "mathvista":
        return list(json.loads((base / "testmini.json").read_text(encoding="utf-8")).values())
    if family == "mathvision":
        return [
            json.loads(line)
            for split in ("test", "testmini")
            for line in (base / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        ]
    if family == "wemath":
        return json.loads((base / "testmini.json").read_text(encoding="utf-8"))
    if family == "hallusionbench":
        return json.loads((base / "HallusionBench.json").read_text(encoding="utf-8"))
    if family == "mme":
        rows = []
        for txt in sorted(base.glob("*/*.txt")):
            for line in txt.read_text(encoding="utf-8").splitlines():
                question, answer = line.split("\t")
                rows.append(
                    {
                        "subtask": txt.parent.name,
                        "image": f"{txt.parent.name}/{txt.stem}.png",
                        "question": question,
                        "answer": answer,
                    }
                )
        return rows
    if family == "eaco_images":
        return [{"image": p.relative_to(base).as_posix()} for p in sorted(base.glob("images/*.png"))]
    if family == "vlfeedback":
        return [json.loads(line) for line in (base / "data.jsonl").read_text(encoding="utf-8").splitlines()]
    if family == "instructions":
        return json.loads((base / "llava_instruct.json").read_text(encoding="utf-8"))
    raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")


def image_questions(root: Path, family: str) -> list[tuple[str, str]]:
    """(image path relative to the world root, question text) for every question of ``family``;
    a question without an image (HallusionBench's visual_input 0, ScienceQA's text problems) has image ''."""
    if family in EACO_FAMILIES:
        return eaco_families.image_questions(root, family)
    pairs = []
    for r in load_records(root, family):
        if family in ("mathv360k", "instructions"):
            for turn in r["conversations"]:
                if turn["from"] == "human":
                    pairs.append(
                        (
                            f"{family}/{r['image']}",
                            turn["value"].removeprefix("<image>\n").split("\nChoices:")[0],
                        )
                    )
        elif family in ("mathvista",):
            pairs.append((f"{family}/{r['image']}", r["question"]))
        elif family == "mathvision":
            pairs.append((f"{family}/{r['image']}", r["question"].removesuffix("\n<image1>")))
        elif family == "wemath":
            pairs.append((f"{family}/{r['image_path']}", r["question"]))
        elif family == "hallusionbench":
            image = f"{family}/hallusion_bench/{r['filename'][2:]}" if r["filename"] else ""
            pairs.append((image, r["question"]))
        elif family == "mme":
            pairs.append((f"{family}/{r['image']}", r["question"].removesuffix(MME_SUFFIX)))
        elif family == "eaco_images":
            pairs.append((f"{family}/{r['image']}", ""))
        elif family == "vlfeedback":
            pairs.append((f"{family}/{r['img_path']}", r["prompt"]))
    return pairs
