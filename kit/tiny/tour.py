"""The tiny world's tour (notebook 00): what each family looks like, how big the tiny models are, and
how good they are, measured now rather than read from a file."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path
from typing import Any

from kit.errors import KitError
from kit.tiny.world import FAMILIES
from kit.tiny.world.readers import load_records


def _sample(root: Path, family: str, record: dict, rng: random.Random) -> dict[str, Any]:
    """One record as (image, question, answer) whatever the family's own schema."""
    base = root / family
    if family == "wemath":
        return {"image": base / record["image_path"], "question": f"{record['question']}\n{record['option']}",
                "answer": record["answer"]}
    if family == "hallusionbench":
        image = base / "hallusion_bench" / record["filename"] if record.get("filename") else None
        return {"image": image, "question": record["question"],
                "answer": "Yes" if record["gt_answer"] == "1" else "No"}
    if family == "eaco_images":
        instructions = json.loads((base / "instructions.json").read_text())["instructions"]
        return {"image": base / record["image"], "question": rng.choice(instructions), "answer": "(unlabelled)"}
    if family == "vlfeedback":
        best = max(record["completions"],
                   key=lambda c: int(c["annotations"]["Visual Faithfulness"]["Rating"]))
        return {"image": base / record["img_path"], "question": record["prompt"],
                "answer": f"{best['response']} (faithfulness {best['annotations']['Visual Faithfulness']['Rating']}/5)"}
    if family == "instructions":
        conv = record["conversations"]
        return {"image": base / record["image"], "question": conv[0]["value"].replace("<image>\n", ""),
                "answer": conv[1]["value"]}
    answer = record["answer"]
    if family == "mathv360k" and record.get("choices"):
        answer = f"{answer} (choices: {', '.join(record['choices'])})"
    return {"image": base / record["image"], "question": record["question"], "answer": answer}


def samples(root: str | Path, family: str, n: int = 3, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` seeded random records of ``family`` as dicts with ``image`` (a path, or None for a
    question without a picture), ``question`` and ``answer``."""
    if family not in FAMILIES:
        raise KitError(f"unknown tiny-world family {family!r}; choose from {', '.join(FAMILIES)}")
    root = Path(root)
    rng = random.Random(seed)
    if family in _BENCHMARK_ANSWERS:
        # EACO's radar benchmarks: read through their own loaders, which resolve each layout's image paths.
        from kit.eval import benchmarks

        bench = benchmarks.get(family)
        records = bench.load(root / family, split=bench.DEFAULT_SPLIT)
        picked = rng.sample(records, min(n, len(records)))
        return [{"image": r["image_path"], "question": bench.build_prompt(r), "answer": _BENCHMARK_ANSWERS[family](r),
                 "family": family} for r in picked]
    records = load_records(root, family)
    picked = rng.sample(records, min(n, len(records)))
    return [dict(_sample(root, family, r, rng), family=family) for r in picked]


# family -> the gold answer of one of its benchmark records, as a reader would say it
_BENCHMARK_ANSWERS: dict[str, Any] = {
    "pope": lambda r: r["label"],
    "seed": lambda r: r["answer"],
    "scienceqa": lambda r: "ABCDE"[int(r["answer"])],
    "amber": lambda r: r["truth"] if isinstance(r["truth"], str) else ", ".join(r["truth"]),
}


def gallery(root: str | Path, families: list[str] | None = None, n: int = 3, seed: int = 0):
    """A matplotlib figure: one row per family, ``n`` images with their question and answer."""
    import matplotlib.pyplot as plt
    from PIL import Image

    families = families or list(FAMILIES)
    fig, axes = plt.subplots(len(families), n, figsize=(3.4 * n, 3.3 * len(families)), squeeze=False)
    for row, family in enumerate(families):
        for col, item in enumerate(samples(root, family, n, seed)):
            ax = axes[row][col]
            if item["image"] is not None:
                ax.imshow(Image.open(item["image"]).convert("RGB"))
            else:
                ax.text(0.5, 0.5, "(no image)", ha="center", va="center")
            question = textwrap.shorten(item["question"].replace("\n", " "), 110)
            answer = textwrap.shorten(str(item["answer"]).replace("\n", " "), 60)
            ax.set_title("\n".join(textwrap.wrap(question, 38)[:3]) + f"\n→ {answer}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(family, fontsize=10)
    fig.tight_layout()
    return fig


def model_cards(models: dict[str, str]) -> Any:
    """A table of the tiny models: architecture, parameters, size on disk and how they were built."""
    import pandas as pd

    from kit.llm.models import count_parameters, load

    rows = []
    for role, path in models.items():
        loaded = load(path, device="cpu")
        folder = Path(loaded.source)
        manifest_file = folder / "kit_model.json"
        manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
        spec = manifest.get("spec", {})
        rows.append({
            "role": role,
            "path": str(path),
            "architecture": type(loaded.model).__name__,
            "parameters": count_parameters(loaded.model),
            "MB on disk": round(sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**20, 2),
            "hidden x layers": f"{spec.get('size', {}).get('hidden', '?')} x {spec.get('size', {}).get('layers', '?')}",
            "pre-training steps": spec.get("steps"),
        })
    return pd.DataFrame(rows)


def mathvista_skill(models: dict[str, str], world_root: str | Path, limit: int | None = None) -> Any:
    """Accuracy of each model on the tiny MathVista testmini, measured now (greedy, rules-only
    extraction), overall and by context (bar charts vs shape scenes)."""
    import pandas as pd

    from kit.llm.models import load
    from kit.tiny.pretrain import mathvista_score

    rows = []
    for role, path in models.items():
        loaded = load(path, device="cpu")
        scores = mathvista_score(loaded.model, loaded.processor, Path(world_root), limit=limit)
        row = {"role": role, "MathVista (tiny) accuracy": scores["accuracy"], "items": scores["total"]}
        row.update({f"{k}": v["accuracy"] for k, v in scores["context"].items()})
        rows.append(row)
    return pd.DataFrame(rows)
