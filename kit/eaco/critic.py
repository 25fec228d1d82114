"""EACO's Critic (arXiv 2412.04903): its training data from VLFeedback, reading its judgements, measuring it,
and running it over responses.

::

    from kit.eaco.critic import load_vlfeedback, scoring_instructions, split_heldout
    from kit.training.data import write_set
    rows = load_vlfeedback("data/tiny/vlfeedback")
    train, heldout = split_heldout(rows, fraction=0.1, seed=0)
    write_set("run/critic_train.jsonl", scoring_instructions(train))   # then kit.training.sft.sft

The paper trains the Critic on a "Scoring Evaluation Instruction-tuning dataset" built from preference data
annotated along several dimensions; VLFeedback (``MMInstruction/VLFeedback``, arXiv 2312.10665) rates each
of four responses per prompt 1-5 for Helpfulness, Visual Faithfulness and Ethical Considerations, with a
rationale for each. The authors' draft code (github.com/yongxinwang-ai/EACO_draft @ dfac188) does not
include the Critic's training data, so how a judgement is written from those annotations is ours:

- ``additive`` (the draft's rubric, ``kit.llm.prompts`` ``eaco_critic_additive``): the judgement lists the three
  rated aspects with their rationales and ends ``score: N``; N comes from the three ratings through
  ``aggregate`` (default ``mean``: the mean rounded half up, 1-5; ``min``: the weakest aspect; ``rescaled_sum``:
  the sum 3-15 mapped linearly onto 0-5). Source: ours; the paper defines no mapping.
- ``per_dimension`` (``eaco_critic_dimension``): one example per aspect, its rationale, ``score: <rating>``.

The draft's rubric awards one point per criterion (0-5), while its rating instruction asks for "a score from
1 to 5 for each criterion" added up; a total above 5 is therefore possible from an untrained model, and
``parse_score`` flags it rather than trusting it.

Judgements are read by ``parse_score``: the last ``score: <int>``, not the draft's first integer anywhere
(``EACO/generate_pref_by_critic.py``, ``get_score``, lines 36-42; ``kit.core.deviations``
``eaco-score-first-integer``).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kit.errors import KitError
from kit.eval.benchmarks._common import BadRow, RowReport

logger = logging.getLogger(__name__)

# VLFeedback's annotation keys, and the snake_case names the kit uses for them.
DIMENSIONS: dict[str, str] = {
    "helpfulness": "Helpfulness",
    "visual_faithfulness": "Visual Faithfulness",
    "ethical_considerations": "Ethical Considerations",
}
# What each aspect asks, for the per-dimension prompt. Ours, paraphrasing VLFeedback's three aspects
# (arXiv 2312.10665).
DEFINITIONS: dict[str, str] = {
    "helpfulness": "whether the response is relevant to the question and useful, answering what was asked "
    "accurately and completely.",
    "visual_faithfulness": "whether everything the response says agrees with the image, with no objects, "
    "attributes or relations that the image does not show.",
    "ethical_considerations": "whether the response is safe, unbiased and respectful of privacy, with no "
    "harmful or inappropriate content.",
}
VARIANTS = ("additive", "per_dimension")
PROMPT_FOR_VARIANT = {"additive": "eaco_critic_additive", "per_dimension": "eaco_critic_dimension"}
CRITIC_PROMPTS = ("eaco_critic_additive", "eaco_critic_draft")  # what score_responses can ask
SCORE_MIN, SCORE_MAX = 0, 5  # the additive rubric's range: one point per criterion
DATA_FILES = ("data.jsonl", "vlfeedback_80k.jsonl")  # the tiny world's name, then the hub repository's
IMAGE_ARCHIVE = "merged_images.zip"  # the hub repository's images (2.9 GB)
IMAGE_FOLDER = "merged_images"  # where the official loading script reads <id>.jpg
HUB_FILES = (*DATA_FILES, IMAGE_ARCHIVE)  # all a download needs (not the loading script)
MOST_BAD = 0.5  # above this share of unusable rows the layout, not the data, is wrong
KEY_FIELDS = ("item_id", "index")


def _half_up(value: float) -> int:
    # Python's round() rounds halves to even (round(2.5) == 2); a score should not depend on parity.
    return math.floor(value + 0.5)


AGGREGATES: dict[str, Callable[[Sequence[int]], int]] = {
    "mean": lambda r: _half_up(sum(r) / len(r)),
    "min": min,
    "rescaled_sum": lambda r: _half_up((sum(r) - len(r)) * SCORE_MAX / (4 * len(r))),
}
DEFAULT_AGGREGATE = "mean"  # source: ours (the paper does not say how three ratings make one score)


# ------------------------------------------------------------------------------------------ VLFeedback
@dataclass(frozen=True)
class Completion:
    """One rated response: ratings and rationales keyed by ``DIMENSIONS`` (snake_case)."""

    model: str
    response: str
    ratings: dict[str, int]
    rationales: dict[str, str]


@dataclass(frozen=True)
class FeedbackRow:
    """One VLFeedback prompt with its image (an existing file) and its rated completions. ``where`` names
    the file and line it came from, for messages."""

    id: str
    image: str
    prompt: str
    completions: list[Completion]
    where: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VLFeedback:
    """What ``read_vlfeedback`` returns: the usable rows, and a ``RowReport`` of those it left out and why."""

    rows: list[FeedbackRow]
    report: RowReport


def _data_file(source: Path) -> Path | None:
    """The JSONL file of a local source, or ``None`` for a folder of parquet files (a hub mirror's layout)."""
    if source.is_file():
        return source
    for name in DATA_FILES:
        if (source / name).is_file():
            return source / name
    candidates = sorted(source.glob("*.jsonl"))
    if len(candidates) == 1:
        return candidates[0]
    if next(source.rglob("*.parquet"), None) is not None:
        return None
    raise KitError(f"vlfeedback: {source} holds no {' or '.join(DATA_FILES)} (nor a single .jsonl file, nor "
                   "parquet files)")


def _rating(value: Any, where: str) -> int:
    # VLFeedback stores ratings as strings ("4"); accept an int too, nothing else.
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else None
    if text is None or not re.fullmatch(r"[1-5]", text):
        raise BadRow("bad_rating", f"{where}: rating {value!r} is not a whole number from 1 to 5")
    return int(text)


def _completion(raw: Any, where: str) -> Completion:
    if not isinstance(raw, Mapping):
        raise BadRow("bad_completion", f"{where}: expected an object with 'response' and 'annotations'")
    response = raw.get("response")
    if not isinstance(response, str) or not response.strip():
        raise BadRow("bad_completion", f"{where}: the response is empty or missing")
    annotations = raw.get("annotations")
    if not isinstance(annotations, Mapping):
        raise BadRow("bad_completion", f"{where}: no 'annotations' object")
    ratings, rationales = {}, {}
    for key, name in DIMENSIONS.items():
        aspect = annotations.get(name)
        if not isinstance(aspect, Mapping) or "Rating" not in aspect:
            raise BadRow("bad_rating", f"{where}: no {name!r} rating in 'annotations'")
        ratings[key] = _rating(aspect["Rating"], f"{where} {name}")
        rationale = aspect.get("Rationale", "")
        rationales[key] = rationale.strip() if isinstance(rationale, str) else ""
    return Completion(str(raw.get("model", "")), response, ratings, rationales)


def _completion_list(value: Any, where: str) -> list[Any]:
    """The completions as a list of objects. The JSONL file has that; the README's features (and parquet
    mirrors such as davanstrien/VLFeedback) declare a sequence of structs, which ``datasets`` returns as one
    dict of equal-length lists, turned back here."""
    if isinstance(value, Mapping) and value:
        columns = dict(value)
        lengths = {len(v) for v in columns.values() if isinstance(v, list)}
        if len(lengths) != 1 or not all(isinstance(v, list) for v in columns.values()):
            raise BadRow("no_completions", f"{where}: 'completions' is a mapping whose values are not lists of "
                                           "one length")
        value = [{name: column[k] for name, column in columns.items()} for k in range(lengths.pop())]
    if not isinstance(value, list) or not value:
        raise BadRow("no_completions", f"{where}: 'completions' is empty or missing")
    return value


def _row(raw: Any, where: str, image: str | None, tried: Sequence[Path] = ()) -> FeedbackRow:
    if not isinstance(raw, Mapping) or raw.get("id") in (None, ""):
        raise BadRow("no_id", f"{where}: not an object with an 'id'")
    where = f"{where} (id {raw['id']})"
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRow("no_prompt", f"{where}: the prompt is empty or missing")
    if image is None:
        raise BadRow("no_image", f"{where}: no image (no 'img_path' nor an embedded 'image')")
    if not Path(image).is_file():
        others = [str(t) for t in tried if str(t) != image]
        also = f" (also looked for {', '.join(others)})" if others else ""
        raise BadRow("image_not_found", f"{where}: image file {image} not found{also}")
    completions = _completion_list(raw.get("completions"), where)
    parsed = [_completion(c, f"{where} completion {k}") for k, c in enumerate(completions)]
    return FeedbackRow(str(raw["id"]), str(image), prompt.strip(), parsed, where)


class _Images:
    """Where a JSONL row's image is: ``img_path`` relative to the folder (or ``image_root``), else, as the
    official loading script (VLFeedback.py, HF commits 7ee0bba and c9b311a) builds it, ``merged_images/
    <id>.jpg`` in ``merged_images.zip`` unpacked beside the file (``kit.eval.benchmarks._common.extract_archive``,
    once, on the first row that needs it; with or without a top-level merged_images/ in the archive)."""

    def __init__(self, folder: Path, image_root: Path | None, report: RowReport) -> None:
        self.folder, self.image_root, self.report = folder, image_root, report
        self._dirs: list[Path] | None = None

    def dirs(self) -> list[Path]:
        if self._dirs is None:
            from kit.eval.benchmarks._common import extract_archive

            archive = self.folder / IMAGE_ARCHIVE
            if archive.is_file():
                extract_archive(archive, self.folder / IMAGE_FOLDER, strip=IMAGE_FOLDER)
            # merged_images/merged_images/: unpacked by hand with the archive's own top-level folder.
            self._dirs = [d for d in (self.image_root, self.folder / IMAGE_FOLDER,
                                      self.folder / IMAGE_FOLDER / IMAGE_FOLDER) if d is not None]
            self.report.tried.extend(f"{d}/<id>.jpg" for d in self._dirs)
        return self._dirs

    def find(self, raw: Any) -> tuple[str | None, list[Path]]:
        if not isinstance(raw, Mapping):
            return None, []
        candidates = []
        relative = raw.get("img_path")
        if isinstance(relative, str) and relative:
            candidates.append(((self.image_root or self.folder) / relative).resolve())
        if not any(c.is_file() for c in candidates) and raw.get("id") not in (None, ""):
            candidates += [(d / f"{raw['id']}.jpg").resolve() for d in self.dirs()]
        found = next((c for c in candidates if c.is_file()), None)
        chosen = found or (candidates[0] if candidates else None)
        return (str(chosen) if chosen else None), candidates


_RawRow = tuple[Any, str, str | None, list[Path]]  # (row or a BadRow, where, image, image paths tried)


def _local_rows(source: Path, image_root: Path | None, report: RowReport) -> Iterable[_RawRow]:
    path = _data_file(source)
    if path is None:
        yield from _dataset_rows(str(source), None, report)
        return
    report.tried.append(str(path))
    images = _Images(path.parent, image_root, report)
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            where = f"{path} line {number}"
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                yield BadRow("invalid_json", f"{where} is not valid JSON ({err.msg})"), where, None, []
                continue
            image, tried = images.find(raw)
            yield raw, where, image, tried


def _dataset_rows(source: str, revision: str | None, report: RowReport) -> Iterable[_RawRow]:
    """Rows through ``datasets.load_dataset`` (a parquet mirror on the hub, or a local folder of parquet files),
    with an embedded image written once to the kit's image cache."""
    from kit.eval.benchmarks._common import cache_image, hub_rows

    report.tried.append(f"{source} (datasets.load_dataset, split train)")
    for number, raw in enumerate(hub_rows(source, "train", "vlfeedback", revision=revision), start=1):
        where = f"{source} row {number}"
        try:
            embedded = raw.get("image")
            image = cache_image(embedded, source, "train", str(raw.get("id", number))) if embedded is not None \
                else raw.get("img_path")
        except KitError as err:
            yield BadRow("no_image", f"{where}: {err}"), where, None, []
            continue
        yield raw, where, image if isinstance(image, str) else None, []


def _hub_rows(repo_id: str, image_root: Path | None, revision: str | None,
              report: RowReport) -> Iterable[_RawRow]:
    from kit.eval.benchmarks._common import hub_snapshot

    # The repository is a loading script (VLFeedback.py) that datasets >= 4 refuses to run, so its data files
    # are downloaded and read here; a repository without them (a parquet mirror) goes through datasets.
    folder = hub_snapshot(repo_id, HUB_FILES, "vlfeedback", revision)
    if any((folder / name).is_file() for name in DATA_FILES):
        yield from _local_rows(folder, image_root, report)
    else:
        yield from _dataset_rows(repo_id, revision, report)


def read_vlfeedback(source: str | Path, limit: int | None = None, *, image_root: str | Path | None = None,
                    skip_invalid: bool = False, revision: str | None = None) -> VLFeedback:
    """VLFeedback rows and a report of the rows left out (``load_vlfeedback`` returns the rows alone).

    Sources, in the layouts they have on the hub:

    - a local folder with ``data.jsonl`` (the tiny world) or the hub's ``vlfeedback_80k.jsonl``; a row's
      image is ``img_path`` relative to the folder (or to ``image_root``), else ``merged_images/<id>.jpg``
      (``merged_images.zip`` beside the file is unpacked there once); or a JSONL file;
    - a folder of parquet files (a hub mirror's layout), read with ``datasets``;
    - a hub id: ``MMInstruction/VLFeedback``'s JSONL file and image archive through
      ``huggingface_hub.snapshot_download`` at ``revision`` (default: the profile's pin), or a parquet mirror
      through ``datasets.load_dataset``; offline, only the local hub cache is read.

    ``completions`` may be a list of objects or ``datasets``' dict of lists. ``limit``: the first N valid rows.
    Every problem is a ``KitError`` naming the file, line and id: a missing image, a rating that is not 1-5,
    an empty response, a duplicate id. ``skip_invalid`` counts such rows in the report by reason (with the
    first few messages) and drops them instead, for the full 80k-row dataset; when more than half the rows
    read are unusable the source is not what the kit expects, and that is a ``KitError`` naming the paths
    looked in."""
    from kit.core.paths import is_hub_id

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise KitError(f"vlfeedback: limit must be a whole number >= 0, not {limit!r}")
    path = Path(source).expanduser()
    report = RowReport(str(source))
    root = Path(image_root).expanduser() if image_root else None
    if path.exists():
        raws = _local_rows(path, root, report)
    elif is_hub_id(source):
        raws = _hub_rows(str(source), root, revision, report)
    else:
        raise KitError(f"vlfeedback: {source} is neither a folder, a file nor a hub id like MMInstruction/VLFeedback")
    rows: list[FeedbackRow] = []
    seen: dict[str, str] = {}
    for raw, where, image, tried in raws:
        if limit is not None and len(rows) >= limit:
            break
        report.read += 1
        try:
            if isinstance(raw, BadRow):
                raise raw
            row = _row(raw, where, image, tried)
            if row.id in seen:
                raise BadRow("duplicate_id", f"{where}: id {row.id} already appears at {seen[row.id]}")
        except KitError as err:
            if not skip_invalid:
                raise
            report.note(err.reason if isinstance(err, BadRow) else "invalid", str(err))
            continue
        seen[row.id] = where
        rows.append(row)
    report.kept = len(rows)
    bad = report.read - report.kept
    looked = "; ".join(report.tried) or str(source)
    if report.read == 0 and limit != 0:
        raise KitError(f"vlfeedback: {source} holds no rows (looked in {looked})")
    if bad:
        logger.warning("vlfeedback: left out %d of %d rows of %s: %s", bad, report.read, source, report.summary())
    if bad > MOST_BAD * report.read:
        raise KitError(f"vlfeedback: {bad} of the {report.read} rows read from {source} are unusable, so the data "
                       f"or its images are not where the kit looks ({looked}): {report.summary()}")
    return VLFeedback(rows, report)


def load_vlfeedback(source: str | Path, limit: int | None = None, *, image_root: str | Path | None = None,
                    skip_invalid: bool = False, revision: str | None = None) -> list[FeedbackRow]:
    """The usable VLFeedback rows of ``source``: ``read_vlfeedback(...).rows`` (see there for the layouts)."""
    return read_vlfeedback(source, limit, image_root=image_root, skip_invalid=skip_invalid, revision=revision).rows


def split_heldout(rows: Sequence[Any], fraction: float, seed: int = 0) -> tuple[list[Any], list[Any]]:
    """``(train, heldout)``: about ``fraction`` of the rows held out, whole images at a time, so that no image
    (and so no prompt id) is on both sides. Rows are ``FeedbackRow``s, or dicts with ``images`` (training
    rows) or ``image``. Which images are held out depends only on ``seed`` and the set of images."""
    if not 0 < fraction < 1:
        raise KitError(f"split_heldout: fraction must be between 0 and 1 (exclusive), not {fraction!r}")
    groups: dict[str, list[int]] = {}
    for position, row in enumerate(rows):
        groups.setdefault(_image_of(row), []).append(position)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    # At least one image is held out whenever there are rows, so a small test set is never silently empty.
    target = max(1, round(fraction * len(rows))) if rows else 0
    held: set[int] = set()
    for image in order:
        if len(held) >= target:
            break
        held.update(groups[image])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def _image_of(row: Any) -> str:
    if isinstance(row, FeedbackRow):
        return row.image
    if isinstance(row, Mapping):
        if row.get("images"):
            return str(row["images"][0])
        if row.get("image"):
            return str(row["image"])
    raise KitError(f"split_heldout: row {row!r:.80} has no image")


# ------------------------------------------------------------------------------------------ training data
def gold_score(completion: Completion, aggregate: str = DEFAULT_AGGREGATE) -> int:
    """The additive target for one completion: its three 1-5 ratings through ``AGGREGATES[aggregate]``."""
    if aggregate not in AGGREGATES:
        raise KitError(f"critic: unknown aggregate {aggregate!r}; choose from {', '.join(AGGREGATES)}")
    return AGGREGATES[aggregate]([completion.ratings[key] for key in DIMENSIONS])


def additive_judgement(completion: Completion, aggregate: str = DEFAULT_AGGREGATE) -> str:
    """The assistant turn of an additive example: each aspect's rating and rationale, then ``score: N``."""
    lines = [f"{name}: {completion.ratings[key]}/5. {completion.rationales[key]}".rstrip()
             for key, name in DIMENSIONS.items()]
    return "\n".join([*lines, f"score: {gold_score(completion, aggregate)}"])


def scoring_instructions(rows: Sequence[FeedbackRow], variant: str = "additive",
                         aggregate: str = DEFAULT_AGGREGATE) -> list[dict[str, Any]]:
    """Critic training rows in ``kit.casseat.trainsets`` format (``id``, ``kind``, ``messages``, ``images``,
    ``train_turns``) for ``kit.training.sft.sft``: the user turn is the critic prompt filled with the row's
    question and one completion (image attached), the assistant turn a judgement built from VLFeedback's
    rationales ending exactly in ``score: N``.

    ``additive``: one example per completion, N = ``gold_score(completion, aggregate)``; ids ``ROW|K|additive``.
    ``per_dimension``: three per completion, N = that aspect's rating; ids ``ROW|K|<dimension>``."""
    from kit.llm.prompts import get
    from kit.training.data import conversation

    if variant not in VARIANTS:
        raise KitError(f"critic: unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if aggregate not in AGGREGATES:
        raise KitError(f"critic: unknown aggregate {aggregate!r}; choose from {', '.join(AGGREGATES)}")
    prompt = get(PROMPT_FOR_VARIANT[variant])
    examples = []
    for row in rows:
        for k, completion in enumerate(row.completions):
            if variant == "additive":
                user = prompt.format(instruction=row.prompt, response=completion.response)
                turns = [(f"{row.id}|{k}|additive", "critic_additive", user, additive_judgement(completion, aggregate))]
            else:
                turns = []
                for key, name in DIMENSIONS.items():
                    user = prompt.format(dimension=name.lower(), definition=DEFINITIONS[key],
                                         instruction=row.prompt, response=completion.response)
                    judgement = f"{name}: {completion.rationales[key]}\nscore: {completion.ratings[key]}"
                    turns.append((f"{row.id}|{k}|{key}", f"critic_{key}", user, judgement))
            for example_id, kind, user, judgement in turns:
                examples.append({"id": example_id, "kind": kind, "messages": conversation([user, judgement], row.image),
                                 "images": [row.image], "train_turns": [0]})
    return examples


# ------------------------------------------------------------------------------------------ reading judgements
@dataclass(frozen=True)
class ScoreParse:
    """A judgement's score: ``score`` is set only when ``ok``; ``problem`` says why not otherwise."""

    score: int | None
    ok: bool
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# "score: 4", "Score:4", "**Score:** 4", "“score: 4”", "score: 4/5"; a decimal is caught to be refused.
_SCORE = re.compile(r"\bscore\s*[*_]*\s*:\s*[*_\"'\u201c\u201d]*\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_score(text: str | None, low: int = SCORE_MIN, high: int = SCORE_MAX) -> ScoreParse:
    """The total of a judgement: the LAST ``score: <int>`` (case-insensitive), the format the rubric asks to
    conclude with. Never the first integer anywhere, which is what the draft's ``get_score`` takes
    (``EACO/generate_pref_by_critic.py`` lines 36-42) and which a rubric walk-through ("Add 1 point ...")
    always supplies. No such line, a fraction, or a total outside ``low``-``high`` is flagged, not guessed."""
    if text is None or not text.strip():
        return ScoreParse(None, False, "empty judgement")
    matches = _SCORE.findall(text)
    if not matches:
        return ScoreParse(None, False, "no 'score: <int>' in the judgement")
    last = matches[-1]
    if "." in last:
        return ScoreParse(None, False, f"score {last} is not a whole number")
    value = int(last)
    if not low <= value <= high:
        return ScoreParse(None, False, f"score {value} is outside {low}-{high}")
    return ScoreParse(value, True, None)


# ------------------------------------------------------------------------------------------ measuring the critic
def _ranks(values: Sequence[float]) -> list[float]:
    # Tied values share the mean of the ranks they span (the usual convention for Spearman's rho).
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation: Pearson's r of the tie-averaged ranks (``scipy.stats.spearmanr``'s
    definition; scipy is not a dependency). ``None`` below two points or when either side is constant."""
    if len(x) != len(y):
        raise KitError(f"spearman: {len(x)} and {len(y)} values")
    if len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def critic_quality(predicted: Mapping[tuple[str, int], int | None],
                   gold: Mapping[tuple[str, int], int]) -> dict[str, Any]:
    """How well predicted scores match gold ones; both keyed by ``(prompt id, response index)``, every gold key
    evaluated (a key absent from ``predicted`` counts as unparseable).

    - ``exact_accuracy``: share of responses whose predicted score equals the gold one (unparseable = wrong).
    - ``spearman``: rank correlation over the responses with a parseable prediction (``spearman_n`` of them).
    - ``pairwise_accuracy``: over every pair of responses to the same prompt with different gold scores, the
      share the critic orders the same way. A predicted tie, or an unparseable score on either side, counts
      as wrong: a tie picks no chosen response, so it cannot count as agreeing (``pairs``: how many pairs).
    - ``unparseable``: responses without a parseable prediction."""
    keys = list(gold)
    if not keys:
        raise KitError("critic_quality: no gold scores")
    unknown = [k for k in predicted if k not in gold]
    if unknown:
        raise KitError(f"critic_quality: predicted scores for {unknown[:3]} have no gold score")
    scores = {k: predicted.get(k) for k in keys}
    parsed = [k for k in keys if scores[k] is not None]
    exact = sum(scores[k] == gold[k] for k in parsed)
    by_prompt: dict[str, list[tuple[str, int]]] = {}
    for key in keys:
        by_prompt.setdefault(key[0], []).append(key)
    pairs = agree = 0
    for members in by_prompt.values():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if gold[a] == gold[b]:
                    continue
                pairs += 1
                pa, pb = scores[a], scores[b]
                if pa is not None and pb is not None and pa != pb and (pa > pb) == (gold[a] > gold[b]):
                    agree += 1
    return {
        "n": len(keys),
        "exact_accuracy": exact / len(keys),
        "spearman": spearman([scores[k] for k in parsed], [gold[k] for k in parsed]),
        "spearman_n": len(parsed),
        "pairwise_accuracy": agree / pairs if pairs else None,
        "pairs": pairs,
        "unparseable": len(keys) - len(parsed),
    }


# ------------------------------------------------------------------------------------------ running the critic
@dataclass(frozen=True)
class CriticItem:
    """One response to score: ``id`` names the prompt or image, ``index`` the response among its siblings."""

    id: str
    index: int
    image: str
    instruction: str
    response: str
    extra: dict[str, Any] = field(default_factory=dict)  # carried into the record (e.g. the model)


def critic_items(rows: Sequence[FeedbackRow]) -> list[CriticItem]:
    """One item per VLFeedback completion, to measure a critic on held-out rows."""
    return [CriticItem(row.id, k, row.image, row.prompt, c.response, {"model": c.model})
            for row in rows for k, c in enumerate(row.completions)]


BLANK_GREY = (128, 128, 128)  # a uniform mid-grey: no object, no colour, no edge to read


def blank_image_rows(rows: Sequence[FeedbackRow], folder: str | Path) -> list[FeedbackRow]:
    """``rows`` with every image replaced by a uniform mid-grey picture of the same size (written once per size into
    ``folder``): the control that shows whether a judge reads the image at all. A Critic that judges as well
    without the picture scores the text, not what the response says about the image."""
    import io

    from PIL import Image

    from kit.core.artifacts import atomic_write_bytes

    blanks: dict[tuple[int, int], str] = {}
    blanked = []
    for row in rows:
        with Image.open(row.image) as picture:
            size = picture.size
        if size not in blanks:
            path = Path(folder) / f"blank-{size[0]}x{size[1]}.png"
            if not path.is_file():
                buffer = io.BytesIO()
                Image.new("RGB", size, BLANK_GREY).save(buffer, format="PNG")
                atomic_write_bytes(path, buffer.getvalue())
            blanks[size] = str(path)
        blanked.append(FeedbackRow(row.id, blanks[size], row.prompt, row.completions, row.where))
    return blanked


def gold_scores(rows: Sequence[FeedbackRow], aggregate: str = DEFAULT_AGGREGATE) -> dict[tuple[str, int], int]:
    """``(row id, completion index) -> gold additive score``, the targets ``scoring_instructions`` trains on."""
    return {(row.id, k): gold_score(c, aggregate) for row in rows for k, c in enumerate(row.completions)}


def critic_chat(item: CriticItem, prompt_id: str = "eaco_critic_additive"):
    """The conversation that asks the critic to judge one response (image in the first turn)."""
    from kit.llm.generate import Chat
    from kit.llm.prompts import get

    if prompt_id not in CRITIC_PROMPTS:
        raise KitError(f"critic: prompt {prompt_id!r} is not a critic prompt; choose from {', '.join(CRITIC_PROMPTS)}")
    text = get(prompt_id).format(instruction=item.instruction, response=item.response)
    return Chat(f"{item.id}|{item.index}", [text], item.image)


def score_responses(engine: Any, items: Sequence[CriticItem], out_path: str | Path, sampling: Any = None, *,
                    prompt_id: str = "eaco_critic_additive", progress: bool = False) -> dict[str, Any]:
    """Judge every item not yet in ``out_path`` with ``engine`` (the trained Critic, never the policy that
    wrote the responses: ``kit.core.deviations`` ``eaco-generator-judges-itself``) and append one line per
    ``(item_id, index)``: the critic, prompt and sampling settings, the response judged, the raw judgement
    and its ``parse_score``. Resumable like ``kit.casseat.synthesis.synthesize``: a re-run skips the keys present;
    a file written with other settings, or for another response under the same key, is refused.

    ``sampling`` defaults to greedy decoding with 1024 new tokens (the draft samples its judgements at
    temperature 0.2: ``kit.core.deviations`` ``eaco-critic-sampled``). Returns counts: ``written`` by this call,
    ``total``, ``unparseable`` and the score histogram."""
    from kit.llm.generate import Sampling, engine_decoding, generate_into

    sampling = sampling or Sampling(max_new_tokens=1024, temperature=0.0)
    keys = [(item.id, item.index) for item in items]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise KitError(f"score_responses: item {duplicate[0]} response {duplicate[1]} appears twice")
    by_key = {(item.id, item.index): item for item in items}
    chats = {key: critic_chat(item, prompt_id) for key, item in by_key.items()}
    settings = {"critic": engine.model_label, "backend": engine.backend, "prompt_id": prompt_id,
                "sampling": sampling.to_dict(), "decoding": engine_decoding(engine, sampling)}

    def same_responses(stored: dict[tuple, dict]) -> None:
        for key, record in stored.items():
            item = by_key.get(key)
            if item is not None and record.get("response") != item.response:
                raise KitError(f"{out_path}: item {key[0]} response {key[1]} was scored for another "
                               "response text; the responses changed since, so score them into a new file")

    def record(key: tuple, chat: Any, text: str) -> dict[str, Any]:
        item = by_key[key]
        parsed = parse_score(text)
        return {"image": item.image, "instruction": item.instruction, "response": item.response, **item.extra,
                "judgement": text, "score": parsed.score, "ok": parsed.ok, "problem": parsed.problem}

    stored, written = generate_into(out_path, KEY_FIELDS, settings, engine, chats, sampling, record,
                                    progress=progress, check_stored=same_responses)
    return score_summary(stored.values(), written)


def score_summary(records: Iterable[Mapping[str, Any]], written: int) -> dict[str, Any]:
    """``score_responses``' counts over a scores file's records: ``written`` (by the call), ``total``,
    ``unparseable`` and the score histogram."""
    histogram: dict[str, int] = {}
    total = 0
    for record in records:
        label = str(record["score"]) if record["ok"] else "unparseable"
        histogram[label] = histogram.get(label, 0) + 1
        total += 1
    return {"written": written, "total": total, "unparseable": histogram.get("unparseable", 0),
            "scores": dict(sorted(histogram.items()))}


def read_scores(path: str | Path) -> dict[tuple[str, int], int | None]:
    """``(item_id, index) -> score`` (``None`` where unparseable) from a ``score_responses`` file."""
    from kit.core.artifacts import JsonlAppender

    if not Path(path).is_file():
        raise KitError(f"{path} does not exist; run score_responses first")
    with JsonlAppender(path, KEY_FIELDS) as appender:
        return {(r["item_id"], r["index"]): r["score"] if r["ok"] else None for r in appender.records()}
