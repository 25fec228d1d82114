"""POPE: yes/no object-existence questions on COCO val2014 images, in three splits that differ only in
how the absent objects were drawn: ``random``, ``popular`` (the most frequent objects) and
``adversarial`` (the objects that co-occur most with the ones present). 500 images, 3 present + 3
absent objects each, so 3000 balanced questions per split.

Rules follow the official evaluation code, AoiDragon/POPE ``evaluate.py`` (commit f3ec604337f1), which
LLaVA copies into ``llava/eval/eval_pope.py`` (haotian-liu/LLaVA, commit 4241f08c6368):

- answer parsing (``extract``): keep the text before the first ``.``, delete commas, split on single
  spaces; the answer is ``no`` when one of the words is ``No``, ``not`` or ``no``, else ``yes`` (so an
  answer without either word counts as yes, exactly as the official script does);
- metrics, with ``yes`` as the positive class: accuracy = (TP + TN) / all, precision = TP / (TP + FP),
  recall = TP / (TP + FN), F1 = 2PR / (P + R), yes-ratio = answers parsed as yes / all.

The official script prints fractions; here every metric is a percentage (x100), the scale of the
LLaVA-1.5 and EACO tables. Where the official script would divide by zero (no ``yes`` answer at all,
or no ``yes`` label), precision/recall/F1 are 0.0 instead of an exception. ``score`` reports the
metrics per split and their unweighted mean over the splits present (``accuracy``, ``f1``, ... at the
top level: the "averaged over the three splits" number papers report).

Pairing answers with labels: POPE's ``evaluate.py`` (and LLaVA's ``eval_pope``, per split) pairs the
i-th answer with the i-th label line and silently truncates on a length mismatch; ``kit score pope``
pairs the same way but refuses a length mismatch (``KitError``).

Prompt: the question followed by "\\nAnswer the question using a single word or phrase.", the text of
LLaVA-1.5's ``llava_pope_test.jsonl`` and lmms-eval's ``pope.yaml`` post_prompt
(EvolvingLMMs-Lab/lmms-eval ``lmms_eval/tasks/pope/pope.yaml``).

On-disk layout (the official repository's ``output/coco/``, also LLaVA's
``playground/data/eval/pope/coco/``): ``<root>/coco_pope_<split>.json`` or
``<root>/coco/coco_pope_<split>.json``, each a JSON-lines file of ``{"question_id", "image", "text",
"label"}`` (the released files also carry ``image_id``); images (``COCO_val2014_*.jpg``) are looked up
in ``<root>``, ``<root>/val2014``, ``<root>/images`` and ``<root>/coco``. Hub copy: ``lmms-lab/POPE``,
split ``test``, columns ``question_id, question, answer, image_source, image, category``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kit.core.paths import is_hub_id
from kit.errors import KitError
from kit.eval.benchmarks import Metric, Outputs, _common

NAME = "pope"
HUB_ID = "lmms-lab/POPE"
CATEGORIES = ("random", "popular", "adversarial")
SPLITS = CATEGORIES + ("all",)
DEFAULT_SPLIT = "all"
TITLE = "POPE"  # the benchmark's name as the papers write it
# The numbers the papers' tables report (kit.eval.evaluate.metrics_table's columns, in this order).
HEADLINES = (Metric("POPE accuracy", ("accuracy",)), Metric("POPE F1", ("f1",)))
# The one column that stands for the benchmark where a single number per benchmark is needed (EACO's
# "average over benchmarks"): the "POPE" figure of the LLaVA-1.5/1.6 tables (F1 over its splits).
HEADLINE_METRIC = "POPE F1"
LABEL_FILE = "coco_pope_{}.json"
QUESTION_FIELDS = ("question_id", "image", "text", "label")
PROMPT_SUFFIX = "\nAnswer the question using a single word or phrase."
METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
_LABEL_NAME = re.compile(r"^coco_pope_(\w+)\.json$")


def record_id(record: Mapping[str, Any]) -> str:
    """``<split>/<question_id>``: question ids restart in every split file."""
    return f"{record.get('category', '?')}/{record.get('question_id', '?')}"


# ----------------------------------------------------------------------------------------------- loading
def label_file(root: Path, category: str) -> Path | None:
    """The label file of ``category`` in ``root`` or ``root/coco`` (None when neither exists)."""
    for folder in (root, root / "coco"):
        path = folder / LABEL_FILE.format(category)
        if path.is_file():
            return path
    return None


def category_of(path: Path) -> str:
    """The split a label file holds, from its official name ``coco_pope_<split>.json``."""
    match = _LABEL_NAME.match(path.name)
    return match.group(1) if match else path.stem


def read_labels(path: Path, category: str | None = None) -> list[dict]:
    """The question lines of one label file, checked; each gets ``category`` (from the file name)."""
    category = category or category_of(path)
    questions = []
    for line_no, question in enumerate(_common.read_jsonl(path), 1):
        _common.require_fields(question, QUESTION_FIELDS, path, f"at line {line_no}")
        if str(question["label"]).strip().lower() not in ("yes", "no"):
            raise KitError(f"{path}, line {line_no}: label {question['label']!r} is neither yes nor no")
        questions.append({**question, "category": category})
    if not questions:
        raise KitError(f"{path}: holds no question")
    return questions


def load(
    source: str | Path,
    split: str = DEFAULT_SPLIT,
    limit: int | None = None,
    check_images: bool = True,
    cache_dir: Path | None = None,
) -> list[dict]:
    """Questions of one split (``random``, ``popular``, ``adversarial``) or of every split present
    (``all``) from a local folder or the hub id ``lmms-lab/POPE``. Records keep the official fields and
    add ``category`` (the split) and ``image_path``."""
    if split not in SPLITS:
        raise KitError(f"pope: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if is_hub_id(source):
        return _load_hub(str(source), split, limit, cache_dir)
    root = _common.local_root(source, NAME, HUB_ID)
    wanted = CATEGORIES if split == "all" else (split,)
    files = {category: label_file(root, category) for category in wanted}
    present = {category: path for category, path in files.items() if path is not None}
    if not present or (split != "all" and len(present) != 1):
        names = ", ".join(LABEL_FILE.format(c) for c in wanted)
        raise KitError(f"pope: {root} holds none of {names} (looked in {root} and {root / 'coco'})")
    records: list[dict] = []
    for category, path in present.items():
        for question in read_labels(path, category):
            rid = record_id(question)
            question["image_path"] = _common.resolve_image(root, question["image"], path, rid, check_images,
                                                           root / "val2014", root / "images", root / "coco")
            records.append(question)
            if limit is not None and len(records) >= limit:
                return records
    return _common.limited(records, limit)


def _load_hub(source: str, split: str, limit: int | None, cache_dir: Path | None) -> list[dict]:
    records = []
    for row in _common.hub_rows(source, "test", NAME):
        record = {key: value for key, value in row.items() if key != "image"}
        rid = f"{record.get('category', '?')}/{record.get('question_id', '?')}"
        _common.require_fields(record, ("question_id", "question", "answer", "category"), f"{source}[test]", rid)
        if split != "all" and record["category"] != split:
            continue
        record.update({"text": record["question"], "label": record["answer"],
                       "image": record.get("image_source") or rid})
        record["image_path"] = _common.cache_image(row.get("image"), source, "test", rid.replace("/", "__"),
                                                   cache_dir)
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return _common.limited(records, limit)


# ------------------------------------------------------------------------------------------------ prompt
def build_prompt(record: Mapping[str, Any]) -> str:
    """The question and LLaVA-1.5's short-answer instruction."""
    return f"{str(record['text']).strip()}{PROMPT_SUFFIX}"


# -------------------------------------------------------------------------------------------- extraction
def extract(response: str, record: Mapping[str, Any] | None = None) -> str:
    """``"yes"`` or ``"no"`` by evaluate.py's rule (see the module docstring); never raises."""
    text = response if isinstance(response, str) else ""
    # Only keep the first sentence
    if text.find(".") != -1:
        text = text.split(".")[0]
    text = text.replace(",", "")
    words = text.split(" ")
    if "No" in words or "not" in words or "no" in words:
        return "no"
    return "yes"


def blind_choices(record: Mapping[str, Any], records: list[Mapping[str, Any]]) -> list[Any]:
    """What a guesser that neither sees the picture nor reads the question answers (``kit.eval.baselines``):
    yes or no."""
    return ["yes", "no"]


# ------------------------------------------------------------------------------------------------ scoring
def _pct(numerator: int, denominator: int) -> float:
    return 100 * numerator / denominator if denominator else 0.0


def confusion_metrics(pairs: list[tuple[str, str]]) -> dict:
    """evaluate.py's counts and metrics for (prediction, label) pairs, as percentages."""
    tp = sum(1 for pred, label in pairs if pred == "yes" and label == "yes")
    fp = sum(1 for pred, label in pairs if pred == "yes" and label == "no")
    tn = sum(1 for pred, label in pairs if pred == "no" and label == "no")
    fn = sum(1 for pred, label in pairs if pred == "no" and label == "yes")
    precision = _pct(tp, tp + fp)
    recall = _pct(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": _pct(tp + tn, len(pairs)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": _pct(tp + fp, len(pairs)),
        "TP": tp, "FP": fp, "TN": tn, "FN": fn,
        "questions": len(pairs),
    }


def _prediction(record: Mapping[str, Any], where: str, rid: str) -> str:
    if "prediction" in record:
        value = record["prediction"]
        return value if value in ("yes", "no") else extract(value if isinstance(value, str) else "")
    if "response" in record:
        return extract(record["response"])
    raise KitError(f"{where}: question {rid} has neither 'prediction' nor 'response'")


def score(records: Iterable[Mapping[str, Any]], where: str = "pope records") -> dict:
    """Accuracy, precision, recall, F1 and yes-ratio per split (``splits``) and their mean over the splits
    present (top level). Each record holds ``label`` (yes/no), ``category`` (the split; absent means
    ``all``) and ``prediction`` (yes/no from ``extract``) or ``response``."""
    by_split: dict[str, list[tuple[str, str]]] = {}
    seen: set[str] = set()
    for position, record in enumerate(records):
        rid = record_id(record) if isinstance(record, Mapping) else f"#{position}"
        _common.require_fields(record, ("label",), where, rid)
        label = str(record["label"]).strip().lower()
        if label not in ("yes", "no"):
            raise KitError(f"{where}: question {rid} has label {record['label']!r}, expected yes or no")
        if "question_id" in record:
            if rid in seen:
                raise KitError(f"{where}: question {rid} appears twice")
            seen.add(rid)
        category = str(record.get("category") or "all")
        by_split.setdefault(category, []).append((_prediction(record, where, rid), label))
    if not by_split:
        raise KitError(f"{where}: no records to score")
    order = [c for c in CATEGORIES if c in by_split] + sorted(c for c in by_split if c not in CATEGORIES)
    splits = {category: confusion_metrics(by_split[category]) for category in order}
    result: dict[str, Any] = {"benchmark": NAME}
    for metric in METRICS:
        result[metric] = sum(splits[c][metric] for c in order) / len(order)
    result["questions"] = sum(splits[c]["questions"] for c in order)
    result["averaged_over"] = order
    result["splits"] = splits
    return result


def read_outputs(path: str | Path, *, labels: str | Path | None = None,
                 questions: str | Path | None = None) -> Outputs:
    """POPE answers (JSON lines with ``answer`` (POPE), ``text`` (LLaVA) or ``response``) with their labels:

    - ``labels=None``: each answer line carries its ``label`` (and ``category``);
    - ``labels=<coco_pope_<split>.json>``: answers and label lines paired line by line, as ``evaluate.py`` does
      (the counts must agree; the official script silently truncates);
    - ``labels=<folder>``: answers split by category, each split paired with its ``coco_pope_<split>.json`` as
      LLaVA's ``eval_pope.py`` does; the category comes from the answer line or, by ``question_id``, from
      ``questions`` (LLaVA's ``llava_pope_test.jsonl``)."""
    path = Path(path)
    answers = [(line_no, line) for line_no, line in enumerate(_common.read_jsonl(path), 1)]
    records: list[dict] = []

    def pair(rows: list[tuple[int, Mapping]], label_lines: list[dict], label_path: Path) -> None:
        if len(rows) != len(label_lines):
            raise KitError(f"{path}: {len(rows)} answers for the {len(label_lines)} questions of {label_path}; POPE "
                           "pairs answers and questions line by line, so the counts must agree")
        for (line_no, line), label in zip(rows, label_lines, strict=True):
            records.append({**label, "response": _common.answer_text(line, f"{path}, line {line_no}")})

    if labels is None:
        for line_no, line in answers:
            _common.require_fields(line, ("label",), path, f"at line {line_no}")
            records.append({"question_id": line.get("question_id", line_no), "category": line.get("category", "all"),
                            "label": line["label"], "response": _common.answer_text(line, f"{path}, line {line_no}")})
    elif Path(labels).is_dir():
        folder = Path(labels)
        category_of_question: dict[str, str] = {}
        if questions:
            for line_no, question in enumerate(_common.read_jsonl(Path(questions)), 1):
                _common.require_fields(question, ("question_id", "category"), questions, f"at line {line_no}")
                category_of_question[str(question["question_id"])] = str(question["category"])
        groups: dict[str, list[tuple[int, Mapping]]] = {}
        for line_no, line in answers:
            category = line.get("category") or category_of_question.get(str(line.get("question_id")))
            if category is None:
                raise KitError(f"{path}, line {line_no}: no split (category) for question {line.get('question_id')!r}; "
                               "give --questions (LLaVA's llava_pope_test.jsonl)")
            groups.setdefault(str(category), []).append((line_no, line))
        for category, rows in groups.items():
            label_path = label_file(folder, category)
            if label_path is None:
                raise KitError(f"{folder}: no {LABEL_FILE.format(category)} for the answers of split {category!r}")
            pair(rows, read_labels(label_path, category), label_path)
    else:
        label_path = Path(labels)
        pair(answers, read_labels(label_path), label_path)
    return Outputs(records, str(path))


# ----------------------------------------------------------------------------------------- foreign formats
# lmms-eval (tasks/pope): ``doc`` is the lmms-lab/POPE row without its image: question_id, question, answer
# (yes/no), image_source, category (the split). VLMEvalKit (POPE, a Y/N dataset): columns index, question,
# answer (Yes/No), category (the splits the question belongs to, comma-separated: POPE_rating explodes them)
# and image_path.
FOREIGN_RULES = {
    "lmms-eval": "evaluate.py's answer rule on filtered_resps[0] (not lmms-eval's exact match), metrics per split "
                 "(doc category) and their mean",
    "vlmevalkit": "evaluate.py's answer rule on the prediction column (not VLMEvalKit's YOrN_Extraction), metrics "
                  "per split (a row listed in several splits counts in each) and their mean",
}


def from_lmms_eval(doc: Mapping[str, Any], response: str, sample: Mapping[str, Any], where: str) -> dict:
    _common.require_fields(doc, ("question_id", "answer"), where, str(doc.get("question_id", "?")))
    return {"question_id": doc["question_id"], "category": doc.get("category") or "all", "label": doc["answer"],
            "response": response}


def from_vlmevalkit(row: Mapping[str, Any], where: str) -> list[dict]:
    from kit.eval.benchmarks import foreign

    index = foreign.cell(row, "index", where)
    label = foreign.cell(row, "answer", where)
    splits = [s.strip() for s in str(row.get("category") or "all").split(",") if s.strip()] or ["all"]
    return [{"question_id": index, "category": split, "label": label, "response": foreign.prediction(row)}
            for split in splits]
