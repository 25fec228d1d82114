"""Training sets on disk, shared by every training stage: JSONL files of chat examples in the conversational
format TRL's ``SFTTrainer`` and Unsloth's ``UnslothVisionDataCollator`` take. Each example is
``{"id", "kind", "messages", "images", "train_turns"}``: ``messages`` whose first user turn opens with an
``{"type": "image"}`` part, ``images`` (one path per example; ``to_hf_dataset`` opens them), and
``train_turns``, the assistant turns (0-based) that carry the loss. Preference pairs for DPO are JSONL files too,
one ``{"id", "image", "prompt", "chosen", "rejected", ...}`` per line (``read_pairs``, ``to_dpo_rows``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kit.errors import KitError


def conversation(turns: list[str], image: str | None) -> list[dict[str, Any]]:
    """User/assistant turns (user first) as chat messages with content parts, the image in the first."""
    messages = []
    for i, text in enumerate(turns):
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if i == 0 and image is not None:
            content.insert(0, {"type": "image"})
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": content})
    return messages


def write_set(path: str | Path, examples: list[dict]) -> Path:
    """Write a training set as JSONL, atomically."""
    from kit.core.artifacts import atomic_write_text

    return atomic_write_text(path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))


def read_set(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise KitError(f"training set {path} does not exist")
    examples = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as err:
            raise KitError(f"{path} line {number} is not valid JSON: {err.msg}") from None
        missing = [k for k in ("messages", "images") if k not in example]
        if missing:
            raise KitError(f"{path} line {number}: no {', '.join(missing)}")
        examples.append(example)
    return examples


def to_hf_dataset(examples: list[dict]):
    """A ``datasets.Dataset`` with the images opened (PIL), ready for TRL's ``SFTTrainer``."""
    from datasets import Dataset, Features, Image, Sequence, Value

    rows = {"id": [e["id"] for e in examples], "kind": [e["kind"] for e in examples],
            "messages": [e["messages"] for e in examples], "images": [e["images"] for e in examples],
            "train_turns": [e["train_turns"] for e in examples]}
    dataset = Dataset.from_dict(rows)
    features = Features({**dataset.features, "images": Sequence(Image()), "train_turns": Sequence(Value("int32"))})
    return dataset.cast(features)


def validate_pairs(rows: Sequence[Mapping[str, Any]], where: str) -> None:
    """Refuse a pair a DPO run could not use: no id, a missing image file, an empty prompt, chosen or
    rejected response. The ``KitError`` names ``where`` (the file) and the pair's id."""
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping) or not row.get("id"):
            raise KitError(f"{where}: pair {number} has no id")
        name = f"{where}: pair {row['id']}"
        image = row.get("image")
        if not isinstance(image, str) or not Path(image).is_file():
            raise KitError(f"{name}: image file {image} not found")
        for field in ("prompt", "chosen", "rejected"):
            value = row.get(field)
            if not isinstance(value, str) or not value.strip():
                raise KitError(f"{name}: the {field} {'text' if field == 'prompt' else 'response'} is empty")


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """The pairs of a ``build_pairs`` / ``stic_pairs`` file, validated."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path} does not exist; build the pairs first")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise KitError(f"{path} line {number} is not valid JSON ({err.msg})") from None
    validate_pairs(rows, str(path))
    return rows


def to_dpo_rows(pairs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pairs in TRL ``DPOTrainer``'s conversational vision format (trl 1.16,
    ``trl.trainer.dpo_trainer.DataCollatorForVisionPreference``): ``images`` (one path; open them before
    training, as ``kit.training.data.to_hf_dataset`` does), ``prompt`` (the user message, an image part then the
    text), ``chosen`` and ``rejected`` (one assistant message each)."""
    rows = []
    for pair in pairs:
        rows.append({
            "images": [pair["image"]],
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": pair["prompt"]}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": pair["chosen"]}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": pair["rejected"]}]}],
        })
    return rows
