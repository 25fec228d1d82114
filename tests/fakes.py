"""A generation engine that needs no model, for tests of what happens around generation."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from PIL import Image


class ScriptedEngine:
    """Answers each chat from ``script(chat) -> str`` (by default: a well-formed answer that copies the gold
    answer out of a SEAT prompt, else "Step 1: look.\\nThe answer is 1"). ``fail_after`` raises after that
    many answers, as a crash mid-run would; ``delay`` sleeps before each answer."""

    backend = "scripted"
    model_label = "scripted-teacher"

    def __init__(self, script=None, fail_after: int | None = None, delay: float = 0.0) -> None:
        self.script = script or default_script
        self.fail_after = fail_after
        self.delay = delay
        self.calls: list[str] = []

    def generate(self, chats, sampling, progress=False):
        for chat in chats:
            if self.fail_after is not None and len(self.calls) >= self.fail_after:
                raise RuntimeError("engine crashed")
            time.sleep(self.delay)
            self.calls.append(chat.id)
            yield chat, self.script(chat)


def default_script(chat) -> str:
    gold = re.search(r"Answer: (.*?) \n", chat.turns[0])
    answer = gold.group(1) if gold else "1"
    if len(chat.turns) == 3:
        return f"Step 1 is correct.\nThere is no mistake.\nThe answer is {answer}"
    if gold:
        return ("Step 1: look at the image.\n[self-evaluation-start:\nLet's verify step by step.\n"
                f"Evaluation: Accept\nself-evaluation-end]\nThe answer is {answer}")
    return f"Step 1: look at the image.\nThe answer is {answer}"


def write_source(folder: Path, rows: list[dict], images: dict[str, tuple[int, int, int]] | None = None) -> Path:
    """A MathV360K-layout folder: ``train_samples_all_tuning.json`` and solid-colour PNG images."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in (images or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (28, 28), colour).save(path)
    (folder / "train_samples_all_tuning.json").write_text(json.dumps(rows))
    return folder


def row(item_id: str, image: str, question: str, answer: str) -> dict:
    return {"id": item_id, "image": image,
            "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]}


def random_tiny_qwen2vl(folder: Path, texts: list[str], vocab: int = 320) -> Path:
    """A randomly initialised tiny Qwen2-VL saved to ``folder``, with a tokenizer trained on ``texts``.

    A freshly initialised model answers every prompt with the same run of tokens, which would make
    "batched equals one-at-a-time" hold trivially; large weights make responses depend on the input."""
    import torch

    from kit.llm import models
    from kit.tiny import models as tiny_models

    tokenizer = tiny_models.train_tokenizer(texts, models.QWEN2VL, vocab)
    model, processor = tiny_models.build_tiny(models.QWEN2VL, tokenizer, tiny_models.TinySize(hidden=64, layers=1, ffn=128))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.normal_(0.0, 0.5, generator=generator)
    return models.save(model, processor, folder)


def preference_pairs(folder: Path) -> list[dict]:
    """Four ``kit.eaco.preference`` pair rows, each on its own plain-coloured 112 x 112 image written to ``folder``:
    a plain chosen description against a hallucinated rejected one."""
    rows = []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]):
        path = folder / f"{i}.png"
        Image.new("RGB", (112, 112), colour).save(path)
        rows.append({"id": f"img{i}", "image": str(path), "prompt": "Describe the image.",
                     "chosen": "The picture shows a large square.", "rejected": "There are 5 red circles and a dog.",
                     "scores": [4, 1], "chosen_index": 0, "rejected_index": 1})
    return rows
