"""Data selection: SEAT's "Double-level Data Filtering" (arXiv 2501.05662 v2), made explicit.

The paper filters twice, the source data before synthesis and the labelled (synthesised) data after it,
without publishing the criteria. Here each criterion is a named filter with its parameters in the profile
(``selection:``), applied in a fixed order, and the report says how many items each one removed.

Source filters (on ``kit.casseat.mathv360k.SourceItem``s, before synthesis):

- ``image_readable``: the image file exists and Pillow can decode it.
- ``unique``: the first of several items with the same image pixels and the same question (whitespace and
  case aside) is kept, the rest removed.
- ``answer_kind``: the gold answer is of a kind answer checking can judge (``SourceItem.answer_kind``;
  default: multi_choice, integer, float, short_text; long free-text answers are removed).

Labelled filters (on synthesis lines, per prompt):

- ``has_final_answer``: the parser found "The answer is ...".
- ``answer_matches_gold``: that answer equals the gold answer through MathVista's normaliser
  (``kit.casseat.mathv360k.answers_match``).
- ``well_formed``: no parser problem (closed blocks, an Accept/Refine verdict each, reasoning before the
  answer); for ``seat_synthesis`` also at least ``min_blocks`` self-evaluation blocks, since a SEAT example
  without one teaches no self-evaluation.
- ``length``: the response is ``min_chars`` to ``max_chars`` characters long.
- ``judge``: optional; an MLLM asked whether the reasoning is correct (``mllm_judge``); off by default.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from kit.casseat.mathv360k import SourceItem
from kit.core.progress import progress_bars
from kit.errors import KitError

ANSWER_KINDS = ("multi_choice", "integer", "float", "short_text", "long_text")
DEFAULT_ANSWER_KINDS = ("multi_choice", "integer", "float", "short_text")


@dataclass
class FilterCount:
    stage: str  # source | labelled
    filter: str
    prompt_id: str  # "" for source filters
    before: int
    removed: int

    @property
    def kept(self) -> int:
        return self.before - self.removed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kept": self.kept}


def report_table(counts: Iterable[FilterCount | dict[str, Any]]):
    """Filter counts (``FilterCount``s or their dicts) as a ``pandas.DataFrame``, one row per filter and
    prompt, in order; source filters show ``(source)`` as their prompt."""
    import pandas as pd

    rows = [c.to_dict() if isinstance(c, FilterCount) else dict(c) for c in counts]
    for row in rows:
        row["prompt_id"] = row["prompt_id"] or "(source)"
        row["kept"] = row["before"] - row["removed"]
    return pd.DataFrame(rows, columns=["prompt_id", "filter", "before", "removed", "kept"])


# ------------------------------------------------------------------------------------------ source
def _image_key(path: str) -> str | None:
    from PIL import Image

    from kit.core.artifacts import content_hash

    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
            return content_hash({"size": rgb.size, "pixels": rgb.tobytes().hex()})
    except (FileNotFoundError, OSError, ValueError):
        return None


def filter_source(items: list[SourceItem], answer_kinds: Iterable[str] = DEFAULT_ANSWER_KINDS,
                  progress: bool = False) -> tuple[list[SourceItem], list[FilterCount], dict[str, str]]:
    """Apply the source filters in order. Returns the kept items, the counts, and for every removed item
    the filter that removed it (by item id)."""
    from tqdm.auto import tqdm

    kinds = tuple(answer_kinds)
    unknown = [k for k in kinds if k not in ANSWER_KINDS]
    if unknown:
        raise KitError(f"selection.answer_kinds: unknown kind(s) {', '.join(unknown)}; choose from {', '.join(ANSWER_KINDS)}")
    removed_by: dict[str, str] = {}
    counts: list[FilterCount] = []
    pixel_keys: dict[str, str | None] = {}
    for path in tqdm(sorted({item.image for item in items}), desc="reading images", disable=not progress_bars(progress), leave=False):
        pixel_keys[path] = _image_key(path)

    def run(name: str, keep: Callable[[SourceItem], bool], current: list[SourceItem]) -> list[SourceItem]:
        kept = []
        for item in current:
            if keep(item):
                kept.append(item)
            else:
                removed_by[item.id] = name
        counts.append(FilterCount("source", name, "", len(current), len(current) - len(kept)))
        return kept

    current = run("image_readable", lambda item: pixel_keys[item.image] is not None, items)
    seen: set[tuple[str, str]] = set()

    def first_of_its_kind(item: SourceItem) -> bool:
        key = (pixel_keys[item.image], re.sub(r"\s+", " ", item.question.strip().lower()))
        if key in seen:
            return False
        seen.add(key)
        return True

    current = run("unique", first_of_its_kind, current)
    current = run("answer_kind", lambda item: item.answer_kind in kinds, current)
    return current, counts, removed_by


# ------------------------------------------------------------------------------------------ labelled
@dataclass(frozen=True)
class LabelledFilters:
    """The labelled filters' parameters (profile ``selection:``)."""

    min_blocks: int = 1
    min_chars: int = 20
    max_chars: int = 4000
    judge: bool = False

    @classmethod
    def from_profile(cls, profile: Any) -> LabelledFilters:
        """The profile's ``selection:`` section (its ``answer_kinds`` belong to the source filters)."""
        section = profile.get("selection")
        return cls(min_blocks=section["min_blocks"], min_chars=section["min_chars"], max_chars=section["max_chars"],
                   judge=section["judge"])

    def __post_init__(self) -> None:
        if self.min_blocks < 0:
            raise KitError(f"selection.min_blocks must be >= 0, not {self.min_blocks}")
        if not 0 <= self.min_chars <= self.max_chars:
            raise KitError(f"selection: need 0 <= min_chars <= max_chars, got {self.min_chars} and {self.max_chars}")


def _checks(filters: LabelledFilters, judged: dict[tuple, bool] | None) -> list[tuple[str, Callable[[dict], bool]]]:
    def well_formed(record: dict) -> bool:
        parsed = record["parsed"]
        if not parsed["well_formed"]:
            return False
        return record["prompt_id"] != "seat_synthesis" or len(parsed["evaluations"]) >= filters.min_blocks

    checks = [
        ("has_final_answer", lambda r: r["parsed"]["answer"] is not None),
        ("answer_matches_gold", lambda r: bool(r["answer_correct"])),
        ("well_formed", well_formed),
        ("length", lambda r: filters.min_chars <= len(r["response"]) <= filters.max_chars),
    ]
    if filters.judge:
        if judged is None:
            raise KitError("selection.judge is on: pass judge=mllm_judge(engine) to filter_labelled")
        checks.append(("judge", lambda r: judged.get(_key(r), False)))
    return checks


def _key(record: dict) -> tuple:
    return record["item_id"], record["prompt_id"], record["sample"]


def filter_labelled(records: list[dict], filters: LabelledFilters = LabelledFilters(),
                    judge: Callable[[list[dict]], dict[tuple, bool]] | None = None,
                    ) -> tuple[list[dict], list[FilterCount]]:
    """Apply the labelled filters in order, per prompt. ``judge`` (see ``mllm_judge``) is called once, on
    the records that pass every other filter."""
    kept_all: list[dict] = []
    counts: list[FilterCount] = []
    prompts = list(dict.fromkeys(r["prompt_id"] for r in records))
    judged = None
    if filters.judge and judge is not None:
        survivors = [r for r in records if all(check(r) for _, check in _checks(replace(filters, judge=False), None))]
        judged = judge(survivors)
    for prompt_id in prompts:
        current = [r for r in records if r["prompt_id"] == prompt_id]
        for name, check in _checks(filters, judged):
            kept = [r for r in current if check(r)]
            counts.append(FilterCount("labelled", name, prompt_id, len(current), len(current) - len(kept)))
            current = kept
        kept_all += current
    return kept_all, counts


def mllm_judge(engine: Any, sampling: Any = None, progress: bool = False) -> Callable[[list[dict]], dict[tuple, bool]]:
    """A judge over a generation engine: it sees the image, the question, the gold answer and the
    reasoning (prompt ``judge`` in ``kit.llm.prompts``) and must answer yes or no; anything else counts as no."""
    from kit.llm.generate import Chat, Sampling
    from kit.llm.prompts import get

    sampling = sampling or Sampling(max_new_tokens=8)

    def judge(records: list[dict]) -> dict[tuple, bool]:
        chats = []
        for record in records:
            text = get("judge").format(question=record["question"], response=record["response"], answer=record["gold"])
            chats.append(Chat("|".join(map(str, _key(record))), [text], record["image"]))
        verdicts = {}
        keys = {"|".join(map(str, _key(r))): _key(r) for r in records}
        for chat, text in engine.generate(chats, sampling, progress=progress):
            verdicts[keys[chat.id]] = bool(re.match(r"\s*yes\b", text, re.IGNORECASE))
        return verdicts

    return judge
