"""EACO's preference data (arXiv 2412.04903): the policy describes each image several times, the Critic scores
every description, and the best and worst become a DPO pair; plus STIC's pairs as the baseline.

::

    from kit.eaco import critic

    from kit.eaco import preference
    images = preference.list_images("data/tiny/eaco_images")
    instructions, _ = preference.load_instructions("data/tiny/eaco_images")
    preference.sample_responses(policy_engine, images, instructions, "run/samples.jsonl", n=5, temperature=0.2)
    critic.score_responses(critic_engine, preference.items_from_samples("run/samples.jsonl"), "run/scores.jsonl")
    preference.build_pairs("run/samples.jsonl", "run/scores.jsonl", "run/pairs.jsonl")
    dpo_rows = preference.to_dpo_rows(preference.read_pairs("run/pairs.jsonl"))

What the authors' draft does (github.com/yongxinwang-ai/EACO_draft @ dfac188, ``EACO/generate_pref_by_critic.py``,
``__main__``, lines 243-283): for each image, one of STIC's eight description prompts (``random.choice``,
line 250), five answers at temperature 0.2 (lines 251-253, ``--temperature`` default line 159, 1024 new
tokens), each judged with the additive rubric (lines 256-259), then the highest-scored answer chosen and the
lowest rejected by ``draft_choose_pair`` (lines 261-265). Kept: the prompts, five samples at 0.2, the rule.
Changed, each in ``kit.core.deviations``: a separate Critic judges (``eaco-generator-judges-itself``), the score is
the last ``score: N`` (``eaco-score-first-integer``), all-equal scores make no pair (``eaco-equal-scores-paired``),
and the pair is written with all scores (``eaco-preference-record-overwritten``).

Randomness is per image rather than one ``random.seed(42)`` stream (draft line 34): each image's prompt is
drawn from ``(seed, image id)``, so a resumed or partial run draws the same prompt for the same image, and
sample k is generated with seed ``seed + k`` (as ``kit.casseat.synthesis.synthesize`` does).
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.errors import KitError
from kit.training.data import validate_pairs

if TYPE_CHECKING:
    from kit.eaco.critic import CriticItem

logger = logging.getLogger(__name__)

SAMPLE_KEY = ("image_id", "sample")
STIC_KEY = ("image_id", "role")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DRAFT_SAMPLES = 5  # responses per image in the draft (line 251) and the paper
DRAFT_TEMPERATURE = 0.2  # the draft's --temperature default (line 159)
DRAFT_MAX_NEW_TOKENS = 1024  # the draft's --max_new_tokens default (line 162)
STIC_RESIZE = 20  # torchvision T.Resize(size=20) in STIC's load_image (stic/generate_pref.py line 50)
STIC_BRIGHTNESS, STIC_HUE = 0.5, 0.3  # T.ColorJitter(brightness=.5, hue=.3) (line 52)


# ------------------------------------------------------------------------------------------ inputs
def list_images(folder: str | Path, limit: int | None = None) -> dict[str, str]:
    """``image id -> path`` for the PNG/JPEG files under ``folder`` (recursively, sorted), the id being the
    path relative to the folder (``images/0.png``; a COCO file name). ``limit``: the first N."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise KitError(f"images: {root} is not a folder")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise KitError(f"images: {root} holds no {', '.join(IMAGE_SUFFIXES)} files")
    paths = paths[:limit] if limit is not None else paths
    return {p.relative_to(root).as_posix(): str(p.resolve()) for p in paths}


def load_instructions(source: str | Path | None = None) -> tuple[list[str], list[str]]:
    """``(description instructions, hallucination instructions)``: from ``instructions.json`` (a file, or a
    folder holding it, with lists ``instructions`` and ``hallucination_instructions``), or with no source
    STIC's two lists (yihedeng9/STIC @ 626484428be2, ``stic/generate_pref.py``: ``prompt_list``,
    ``hallu_prompt_list``; the draft's ``prompt_list``, lines 172-179, is the same eight)."""
    if source is None:
        from kit.llm.prompts import DESCRIPTION_INSTRUCTIONS, HALLUCINATION_INSTRUCTIONS

        return list(DESCRIPTION_INSTRUCTIONS), list(HALLUCINATION_INSTRUCTIONS)
    path = Path(source).expanduser()
    path = path / "instructions.json" if path.is_dir() else path
    if not path.is_file():
        raise KitError(f"instructions: {path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise KitError(f"instructions: {path} is not valid JSON ({err.msg})") from None
    lists = []
    for name in ("instructions", "hallucination_instructions"):
        values = data.get(name) if isinstance(data, dict) else None
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise KitError(f"instructions: {path} needs '{name}', a non-empty list of non-empty strings")
        lists.append(list(values))
    return lists[0], lists[1]


def _image_table(images: Mapping[str, str | Path] | Sequence[str | Path]) -> dict[str, str]:
    table = {str(k): str(v) for k, v in images.items()} if isinstance(images, Mapping) \
        else {Path(p).as_posix(): str(p) for p in images}
    if len(table) != len(images):
        raise KitError("images: two images have the same id")
    bad = [k for k in table if "|" in k]
    if bad:
        raise KitError(f"images: image id {bad[0]!r} contains '|', which chat ids use as a separator")
    return table


def _rng(seed: int, image_id: str, purpose: str) -> random.Random:
    from kit.core.artifacts import content_hash

    # Seeded from the image's own id, so the draw does not depend on which other images are in the run.
    return random.Random(int(content_hash([seed, image_id, purpose])[:16], 16))


def instruction_for(image_id: str, instructions: Sequence[str], seed: int = 0) -> tuple[int, str]:
    """The description instruction an image is asked with (index, text): a seeded draw per image, where the
    draft draws ``random.choice(prompt_list)`` from one global stream (line 250)."""
    index = _rng(seed, image_id, "instruction").randrange(len(instructions))
    return index, instructions[index]


def _check_instructions(instructions: Sequence[str], name: str) -> list[str]:
    values = list(instructions)
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise KitError(f"{name}: need a non-empty list of non-empty instruction strings")
    return values


# ------------------------------------------------------------------------------------------ sampling
def sample_responses(engine: Any, images: Mapping[str, str | Path] | Sequence[str | Path],
                     instructions: Sequence[str], out_path: str | Path, n: int = DRAFT_SAMPLES,
                     temperature: float = DRAFT_TEMPERATURE, seed: int = 0, *,
                     max_new_tokens: int = DRAFT_MAX_NEW_TOKENS, top_p: float = 1.0,
                     progress: bool = False) -> dict[str, Any]:
    """The policy answers each image ``n`` times under one description instruction (``instruction_for``,
    recorded with its index), sample k with seed ``seed + k``; one line per ``(image_id, sample)`` in
    ``out_path``, appended and fsynced as it arrives. A re-run generates only the keys missing; a file written
    with other settings (policy, backend, decoding, seed, instruction list) is refused. ``images``:
    ``list_images``'s id -> path mapping, or paths (each its own id). Returns ``written``, ``total``, ``images``."""
    from kit.core.artifacts import content_hash
    from kit.llm.generate import Chat, Sampling, engine_decoding, generate_into

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise KitError(f"sample_responses: n must be a whole number >= 1, not {n!r}")
    if n > 1 and temperature == 0:
        raise KitError("sample_responses: n > 1 at temperature 0 would repeat one greedy answer; raise the temperature")
    instructions = _check_instructions(instructions, "sample_responses")
    table = _image_table(images)
    base = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    settings = {"policy": engine.model_label, "backend": engine.backend, "sampling": base.to_dict(),
                "decoding": engine_decoding(engine, base), "instructions_hash": content_hash(instructions)}
    plan = {image_id: instruction_for(image_id, instructions, seed) for image_id in table}

    def record(key: tuple, chat: Any, text: str) -> dict[str, Any]:
        image_id, sample = key
        index, instruction = plan[image_id]
        return {"sample_seed": seed + sample, "image": table[image_id], "instruction": instruction,
                "instruction_index": index, "response": text}

    written, stored = 0, {}
    for sample in range(n):  # sample k with its own seed, so one generate_into call per sample
        chats = {(image_id, sample): Chat(f"{image_id}|{sample}", [plan[image_id][1]], path)
                 for image_id, path in table.items()}
        stored, new = generate_into(out_path, SAMPLE_KEY, settings, engine, chats, replace(base, seed=seed + sample),
                                    record, progress=progress)
        written += new
    return {"written": written, "total": len(stored), "images": len(table)}


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a ``sample_responses`` file."""
    from kit.core.artifacts import JsonlAppender

    if not Path(path).is_file():
        raise KitError(f"{path} does not exist; run sample_responses first")
    with JsonlAppender(path, SAMPLE_KEY) as appender:
        return appender.records()


def items_from_samples(samples_path: str | Path) -> list[CriticItem]:
    """The Critic's items for a samples file: id = image id, index = sample index."""
    from kit.eaco.critic import CriticItem

    return [CriticItem(r["image_id"], r["sample"], r["image"], r["instruction"], r["response"])
            for r in read_samples(samples_path)]


# ------------------------------------------------------------------------------------------ choosing a pair
def draft_choose_pair(scores: Sequence[int]) -> tuple[int, int]:
    """The draft's rule verbatim (``EACO/generate_pref_by_critic.py`` lines 261-265): chosen = the first index
    of the highest score, rejected = the first index of the lowest; when they coincide, which happens only
    when every score is equal, chosen moves to the next response (``(i + 1) % 5`` there; ``% len`` here,
    the same for five). Unparseable judgements reach it as 0 (``get_score``'s fallback)."""
    if not scores:
        raise KitError("draft_choose_pair: no scores")
    chosen = list(scores).index(max(scores))
    rejected = list(scores).index(min(scores))
    if chosen == rejected:
        chosen = (chosen + 1) % len(scores)
    return chosen, rejected


def choose_pair(scores: Sequence[int | None]) -> tuple[int, int] | None:
    """``(chosen index, rejected index)`` by the draft's rule (first highest chosen, first lowest rejected)
    over the parseable scores (``None`` = unparseable, left out rather than counted as 0). ``None`` when
    fewer than two scores parse or all parseable scores are equal: there the draft pairs response
    ``i + 1`` over response ``i`` although the Critic preferred neither (``kit.core.deviations``
    ``eaco-equal-scores-paired``), and we make no pair."""
    valid = [(i, s) for i, s in enumerate(scores) if s is not None]
    if len(valid) < 2:
        return None
    high = max(s for _, s in valid)
    low = min(s for _, s in valid)
    if high == low:
        return None
    return next(i for i, s in valid if s == high), next(i for i, s in valid if s == low)


# ------------------------------------------------------------------------------------------ pairs
def build_pairs(samples_path: str | Path, scores_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Pair each image's responses by their Critic scores and write the pairs to ``out_path`` (JSONL,
    atomically, after ``validate_pairs``): ``{"id", "image", "prompt", "chosen", "rejected", "scores" (all,
    ``None`` where unparseable), "chosen_index", "rejected_index"}``. Every sample must have been scored,
    for the same response text; an empty response takes no part. Returns counts, with the images left
    without a pair by reason."""
    from kit.core.artifacts import JsonlAppender, atomic_write_text
    from kit.eaco.critic import KEY_FIELDS

    samples = read_samples(samples_path)
    if not Path(scores_path).is_file():
        raise KitError(f"{scores_path} does not exist; run kit.eaco.critic.score_responses over {samples_path} first")
    with JsonlAppender(scores_path, KEY_FIELDS) as appender:
        scored = {(r["item_id"], r["index"]): r for r in appender.records()}
    by_image: dict[str, list[dict[str, Any]]] = {}
    for record in samples:
        by_image.setdefault(record["image_id"], []).append(record)
    n = max((len(v) for v in by_image.values()), default=0)
    rows, skipped = [], {"all_equal": 0, "too_few_parseable": 0}
    unparseable = empty = 0
    for image_id, records in by_image.items():
        records.sort(key=lambda r: r["sample"])
        if [r["sample"] for r in records] != list(range(n)):
            raise KitError(f"{samples_path}: image {image_id} has samples {[r['sample'] for r in records]}, "
                           f"others have {n}; finish sample_responses first")
        scores: list[int | None] = []
        for record in records:
            score = scored.get((image_id, record["sample"]))
            if score is None:
                raise KitError(f"{scores_path}: no score for image {image_id} sample {record['sample']}; run "
                               f"kit.eaco.critic.score_responses over {samples_path} first")
            if score.get("response") != record["response"]:
                raise KitError(f"{scores_path}: image {image_id} sample {record['sample']} was scored for another "
                               f"response than {samples_path} holds; score the samples again into a new file")
            unparseable += not score["ok"]
            blank = not record["response"].strip()
            empty += blank
            scores.append(score["score"] if score["ok"] and not blank else None)
        pair = choose_pair(scores)
        if pair is None:
            skipped["too_few_parseable" if sum(s is not None for s in scores) < 2 else "all_equal"] += 1
            continue
        chosen, rejected = pair
        rows.append({"id": image_id, "image": records[0]["image"], "prompt": records[0]["instruction"],
                     "chosen": records[chosen]["response"], "rejected": records[rejected]["response"],
                     "scores": scores, "chosen_index": chosen, "rejected_index": rejected})
    validate_pairs(rows, str(out_path))
    atomic_write_text(out_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {"pairs": len(rows), "images": len(by_image), "skipped": skipped, "unparseable_scores": unparseable,
            "empty_responses": empty, "path": str(out_path)}


# ------------------------------------------------------------------------------------------ STIC baseline
def corrupt_image(image: Any, rng: random.Random) -> tuple[Any, dict[str, Any]]:
    """STIC's image corruption (``stic/generate_pref.py``, ``load_image``, lines 48-53): at even odds
    ``T.Resize(size=20)`` (shorter side to 20 pixels, aspect kept, bilinear) or ``T.ColorJitter(brightness=.5,
    hue=.3)`` (brightness factor in [0.5, 1.5] and hue shift in [-0.3, 0.3], applied in random order, as
    torchvision's PIL path does). Reimplemented with PIL, since torchvision is not a dependency. Returns the
    image and what was done."""
    import numpy as np
    from PIL import Image, ImageEnhance

    image = image.convert("RGB")
    if rng.random() > 0.5:  # the draft's test, so the two branches keep its order
        width, height = image.size
        short = min(width, height)
        size = (STIC_RESIZE, int(STIC_RESIZE * height / width)) if width == short \
            else (int(STIC_RESIZE * width / height), STIC_RESIZE)
        return image.resize(size, Image.Resampling.BILINEAR), {"kind": "resize", "size": list(size)}
    brightness = rng.uniform(1 - STIC_BRIGHTNESS, 1 + STIC_BRIGHTNESS)
    hue = rng.uniform(-STIC_HUE, STIC_HUE)
    order = rng.sample(["brightness", "hue"], 2)
    for step in order:
        if step == "brightness":
            image = ImageEnhance.Brightness(image).enhance(brightness)
        else:
            h, s, v = image.convert("HSV").split()
            # Hue is an angle: the shift wraps around, as torchvision's uint8 overflow does.
            shifted = (np.asarray(h, dtype=np.int16) + int(hue * 255)) % 256
            image = Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8), "L"), s, v)).convert("RGB")
    return image, {"kind": "color_jitter", "brightness": brightness, "hue": hue, "order": order}


def stic_plan(image_id: str, instructions: Sequence[str], hallucination_instructions: Sequence[str],
              seed: int = 0) -> dict[str, Any]:
    """What STIC does for one image (``stic/generate_pref.py`` ``__main__`` lines 205-222), drawn in its order
    from a per-image stream: the DPO prompt (a description instruction), then at even odds a hallucination
    instruction or a corrupted image (with the corruption's own draws) for the rejected answer."""
    rng = _rng(seed, image_id, "stic")
    prompt = rng.choice(list(instructions))
    if rng.random() > 0.5:
        return {"prompt": prompt, "rejected_kind": "hallucination_prompt",
                "rejected_prompt": rng.choice(list(hallucination_instructions)), "rng": rng}
    return {"prompt": prompt, "rejected_kind": "corrupted_image", "rejected_prompt": prompt, "rng": rng}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def stic_pairs(engine: Any, images: Mapping[str, str | Path] | Sequence[str | Path], out_path: str | Path, *,
               instructions: Sequence[str], hallucination_instructions: Sequence[str], seed: int = 0,
               sampling: Any = None, corrupted_dir: str | Path | None = None, pairs_path: str | Path | None = None,
               progress: bool = False) -> list[dict[str, Any]]:
    """STIC's self-training pairs (yihedeng9/STIC @ 626484428be2, ``stic/generate_pref.py``), EACO's baseline:
    chosen = the answer to STIC's detailed-description prompt (``kit.llm.prompts`` ``stic_full_description``) on the
    clean image; rejected = the answer to a hallucination instruction, or to the DPO prompt on a corrupted image
    (``corrupt_image``; STIC never passes the corruption flag: ``kit.core.deviations`` ``stic-corruption-not-applied``).
    The pair's prompt is the plain description instruction, as in STIC's records (lines 224-228).

    Generations go to ``out_path``, one line per ``(image_id, role)``, resumable and settings-checked like
    ``sample_responses``; corrupted images are written once to ``corrupted_dir`` (default: beside
    ``out_path``). Returns the pairs (images whose answers came back empty are left out, with a warning) and
    writes them to ``pairs_path`` when given."""
    from kit.core.artifacts import atomic_write_bytes, atomic_write_text, content_hash
    from kit.llm.generate import Chat, Sampling, engine_decoding, generate_into, open_image
    from kit.llm.prompts import get

    instructions = _check_instructions(instructions, "stic_pairs")
    hallucination_instructions = _check_instructions(hallucination_instructions, "stic_pairs")
    sampling = sampling or Sampling(max_new_tokens=DRAFT_MAX_NEW_TOKENS, temperature=DRAFT_TEMPERATURE, seed=seed)
    table = _image_table(images)
    out_path = Path(out_path)
    corrupted_dir = Path(corrupted_dir) if corrupted_dir else out_path.parent / f"{out_path.stem}_corrupted"
    settings = {"policy": engine.model_label, "backend": engine.backend, "sampling": sampling.to_dict(),
                "decoding": engine_decoding(engine, sampling), "seed": seed,
                "instructions_hash": content_hash([list(instructions), list(hallucination_instructions)])}
    plans = {image_id: stic_plan(image_id, instructions, hallucination_instructions, seed) for image_id in table}
    chats = {}
    for image_id, path in table.items():
        plan = plans[image_id]
        corruption = None
        seen = path
        if plan["rejected_kind"] == "corrupted_image":
            corrupted, corruption = corrupt_image(open_image(image_id, path), plan["rng"])
            seen = str((corrupted_dir / f"{_safe(image_id)}.png").resolve())
            if not Path(seen).is_file():
                buffer = io.BytesIO()
                corrupted.save(buffer, format="PNG")
                atomic_write_bytes(seen, buffer.getvalue())
        plan["corruption"], plan["seen"] = corruption, seen
        for role, text, image in (("chosen", get("stic_full_description").text, path),
                                  ("rejected", plan["rejected_prompt"], seen)):
            chats[(image_id, role)] = Chat(f"{image_id}|{role}", [text], image)

    def record(key: tuple, chat: Any, text: str) -> dict[str, Any]:
        image_id, role = key
        plan = plans[image_id]
        return {"image": table[image_id], "input_image": plan["seen"] if role == "rejected" else table[image_id],
                "prompt_sent": chat.turns[0], "prompt": plan["prompt"], "rejected_kind": plan["rejected_kind"],
                "corruption": plan["corruption"], "response": text}

    stored, _ = generate_into(out_path, STIC_KEY, settings, engine, chats, sampling, record, progress=progress)
    rows = []
    for image_id in table:
        chosen, rejected = stored.get((image_id, "chosen")), stored.get((image_id, "rejected"))
        if chosen is None or rejected is None:
            continue
        if not chosen["response"].strip() or not rejected["response"].strip():
            logger.warning("stic_pairs: image %s has an empty answer; no pair", image_id)
            continue
        plan = plans[image_id]
        rows.append({"id": image_id, "image": table[image_id], "prompt": plan["prompt"],
                     "chosen": chosen["response"], "rejected": rejected["response"], "scores": [],
                     "chosen_index": None, "rejected_index": None, "method": "stic",
                     "rejected_kind": plan["rejected_kind"], "rejected_prompt": plan["rejected_prompt"],
                     "corruption": plan["corruption"]})
    if pairs_path is not None:
        validate_pairs(rows, str(pairs_path))
        atomic_write_text(pairs_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows
