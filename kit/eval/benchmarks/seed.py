"""SEED-Bench (v1): four-option multiple-choice questions in 12 evaluation dimensions; dimensions 1-9 ask
about one image (14,233 questions, "SEED-Bench image", the number LLaVA-1.5 and EACO report), 10-12
about a video.

Metric, as in the official AILab-CVC/SEED-Bench ``eval.py`` (commit 250947c2acf6) and LLaVA's
``scripts/convert_seed_for_submission.py`` (haotian-liu/LLaVA, commit 524a75b74254): per dimension
(``question_type_id``) accuracy = right / questions x 100, and the total accuracy = all right / all
questions x 100 (so a micro average over the dimensions). A question without a prediction counts as
wrong (LLaVA's ``eval_single``). ``score`` reports the total (``accuracy``), every dimension by its
official name (``dimensions``) and the accuracy per data type.

The official SEED-Bench evaluation ranks the four options by likelihood; generative models are
evaluated instead by asking for the letter (LLaVA-1.5, lmms-eval) and comparing it with ``answer``.
LLaVA compares the raw text with the letter; lmms-eval keeps the first character. Extraction here is
VLMEvalKit's ``can_infer`` (open-compass/VLMEvalKit ``vlmeval/utils/matching_util.py``, commit
18fc37a5337e, with ``VERBOSE`` unset), which reads "(B)", "B.", "B)", "Answer: B" and "the answer is B"
(a letter that stands alone once punctuation ``.()[],:;!*#{}`` is blanked out, and only one such
letter), and otherwise the text of exactly one option contained in the response (case-insensitive).
A response that is exactly the letter scores as in LLaVA's exact comparison; other forms are
recovered where LLaVA would count them wrong. (A later VLMEvalKit commit, 134b4ea61d26, also demands
that the letter stand more than five words before the end, which rejects a bare "B"; not followed.)
``extract`` returns the letter or ``None``; a refusal that VLMEvalKit maps to "Z" is ``None`` here.

Prompt: the question, the options as "A. ...", "B. ...", and "Answer with the option's letter from
the given choices directly." (lmms-eval ``seed_doc_to_text``, EvolvingLMMs-Lab/lmms-eval
``lmms_eval/tasks/seedbench/utils.py`` commit 5c493e6f3f0a; the same text as LLaVA-1.5's
``llava-seed-bench.jsonl``).

On-disk layout (the files of the AILab-CVC/SEED-Bench dataset repository): ``<root>/SEED-Bench.json``,
``{"questions": [...], "question_type": {name: id}}`` with the fields ``answer, choice_a..choice_d,
data_id, data_type, question, question_id, question_type_id`` per question (``segment`` for some
videos); image ``data_id`` files in ``<root>/SEED-Bench-image/`` (where ``SEED-Bench-image.zip``
unpacks), ``<root>/images/`` or ``<root>`` (``.jpg``/``.png`` appended when ``data_id`` has no
suffix). Only image questions can be loaded (split ``image``). Hub copy: ``lmms-lab/SEED-Bench``,
split ``test``.
"""

from __future__ import annotations

import copy
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kit.core.paths import is_hub_id
from kit.errors import KitError
from kit.eval.benchmarks import Metric, Outputs, _common

NAME = "seed"
HUB_ID = "lmms-lab/SEED-Bench"
SPLITS = ("image",)
DEFAULT_SPLIT = "image"
TITLE = "SEED-Bench"  # the benchmark's name as the papers write it
# The numbers the papers' tables report (kit.eval.evaluate.metrics_table's columns, in this order).
HEADLINES = (Metric("SEED-Bench image", ("accuracy",)),)
# The one column that stands for the benchmark where a single number per benchmark is needed (EACO's
# "average over benchmarks"): accuracy.
HEADLINE_METRIC = "SEED-Bench image"
FILE_NAME = "SEED-Bench.json"
LETTERS = ("A", "B", "C", "D")
QUESTION_FIELDS = ("answer", "choice_a", "choice_b", "choice_c", "choice_d", "data_id", "data_type", "question",
                   "question_id", "question_type_id")
SCORE_FIELDS = ("answer", "question_id", "question_type_id")
PROMPT_SUFFIX = "Answer with the option's letter from the given choices directly."
# SEED-Bench v1's question_type (DATASET.md): the names of the 12 evaluation dimensions.
DIMENSIONS: dict[int, str] = {
    1: "Scene Understanding", 2: "Instance Identity", 3: "Instance Attributes", 4: "Instance Location",
    5: "Instances Counting", 6: "Spatial Relation", 7: "Instance Interaction", 8: "Visual Reasoning",
    9: "Text Understanding", 10: "Action Recognition", 11: "Action Prediction", 12: "Procedure Understanding",
}
IMAGE_SUFFIXES = ("", ".jpg", ".png", ".jpeg")


def record_id(record: Mapping[str, Any]) -> str:
    return str(record.get("question_id", "?"))


def choices_of(record: Mapping[str, Any]) -> dict[str, str]:
    """{"A": choice_a, ..., "D": choice_d}."""
    return {letter: str(record[f"choice_{letter.lower()}"]) for letter in LETTERS}


# ----------------------------------------------------------------------------------------------- loading
def _check(question: Mapping[str, Any], where: str | Path, rid: str) -> None:
    if question["answer"] not in LETTERS:
        raise KitError(f"{where}: question {rid} has answer {question['answer']!r}, expected one of A, B, C, D")
    if isinstance(question["question_type_id"], bool) or not isinstance(question["question_type_id"], int):
        raise KitError(f"{where}: question {rid} has question_type_id {question['question_type_id']!r}, "
                       "expected a whole number")


def read_questions(path: Path) -> tuple[list[dict], dict[int, str]]:
    """The questions of a SEED-Bench JSON file and its dimension names (id -> name), checked."""
    data = _common.read_json(path)
    if isinstance(data, Mapping) and "questions" in data:
        questions, types = data["questions"], data.get("question_type", {})
    elif isinstance(data, list):  # eval.py also accepts a bare list of questions
        questions, types = data, {}
    else:
        raise KitError(f"{path}: expected {{'questions': [...], 'question_type': {{...}}}}, "
                       f"got {type(data).__name__}")
    if not isinstance(questions, list) or not isinstance(types, Mapping):
        raise KitError(f"{path}: 'questions' must be a list and 'question_type' an object")
    names = dict(DIMENSIONS)
    for name, type_id in types.items():
        if isinstance(type_id, bool) or not isinstance(type_id, int):
            raise KitError(f"{path}: question_type {name!r} has id {type_id!r}, expected a whole number")
        names[type_id] = str(name)
    seen: set[str] = set()
    for position, question in enumerate(questions):
        rid = record_id(question) if isinstance(question, Mapping) else f"#{position}"
        _common.require_fields(question, QUESTION_FIELDS, path, rid)
        _check(question, path, rid)
        if rid in seen:
            raise KitError(f"{path}: question {rid} appears twice")
        seen.add(rid)
    return questions, names


def _find_image(root: Path, data_id: str) -> Path | None:
    for folder in (root / "SEED-Bench-image", root / "images", root):
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{data_id}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def load(
    source: str | Path,
    split: str = DEFAULT_SPLIT,
    limit: int | None = None,
    check_images: bool = True,
    cache_dir: Path | None = None,
) -> list[dict]:
    """The image questions from a local folder (``<source>/SEED-Bench.json``) or the hub id
    ``lmms-lab/SEED-Bench``; records keep the official fields and add ``dimension`` (the name of
    ``question_type_id``) and ``image_path``."""
    if split not in SPLITS:
        raise KitError(f"seed: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if is_hub_id(source):
        return _load_hub(str(source), limit, cache_dir)
    root = _common.local_root(source, NAME, HUB_ID)
    path = root / FILE_NAME
    questions, names = read_questions(path)
    records = []
    for question in questions:
        if question["data_type"] != "image":
            continue
        rid = record_id(question)
        image = _find_image(root, str(question["data_id"]))
        if image is None and check_images:
            raise KitError(f"{path}: image {question['data_id']!r} of question {rid} not found in "
                           f"{root / 'SEED-Bench-image'}, {root / 'images'} or {root}")
        record = dict(question)
        record["dimension"] = names.get(question["question_type_id"], str(question["question_type_id"]))
        record["image_path"] = str(image.resolve()) if image else None
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return _common.limited(records, limit)


def _load_hub(source: str, limit: int | None, cache_dir: Path | None) -> list[dict]:
    records = []
    # The video questions (dimensions 10-12) carry several frames each: leave them out before any is decoded.
    for row in _common.hub_rows(source, "test", NAME, keep=("data_type", lambda value: value == "image")):
        record = {key: value for key, value in row.items() if key != "image"}
        rid = record_id(record)
        _common.require_fields(record, QUESTION_FIELDS, f"{source}[test]", rid)
        _check(record, f"{source}[test]", rid)
        images = row.get("image")
        image = images[0] if isinstance(images, list) and images else images
        record["dimension"] = DIMENSIONS.get(record["question_type_id"], str(record["question_type_id"]))
        record["image_path"] = _common.cache_image(image, source, "test", rid, cache_dir)
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    if not records and limit != 0:
        raise KitError(f"seed: hub dataset {source} split 'test' has no image questions (data_type 'image')")
    return _common.limited(records, limit)


# ------------------------------------------------------------------------------------------------ prompt
def build_prompt(record: Mapping[str, Any]) -> str:
    """lmms-eval's SEED-Bench prompt: question, lettered options, the letter instruction."""
    question = str(record["question"])
    question += "\n" + f"A. {record['choice_a']}\n"
    question += f"B. {record['choice_b']}\n"
    question += f"C. {record['choice_c']}\n"
    question += f"D. {record['choice_d']}"
    return f"{question}\n{PROMPT_SUFFIX}"


# -------------------------------------------------------------------------------------------- extraction
_REJECT_TO_ANSWER = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)


def can_infer_option(answer: str, choices: Mapping[str, str]) -> str | bool:
    """VLMEvalKit ``can_infer_option`` (``VERBOSE`` unset): the one option letter standing alone."""
    if "Failed to obtain answer via API" in answer:
        return False
    for err in _REJECT_TO_ANSWER:
        if err in answer:
            return "Z"

    def count_choice(splits: list[str], options: Iterable[str]) -> int:
        return sum(1 for c in options if c in splits)

    answer_mod = answer
    for c in ".()[],:;!*#{}":
        answer_mod = answer_mod.replace(c, " ")
    splits = [x.strip() for x in answer_mod.split()]
    count = count_choice(splits, choices)
    if count == 1:
        for ch in choices:
            if ch in splits:
                return ch
    elif count == 0 and count_choice(splits, {"Z", ""}) == 1:
        return "Z"
    return False


def can_infer_text(answer: str, choices: Mapping[str, str]) -> str | bool:
    """VLMEvalKit ``can_infer_text``: the one option whose text the response contains."""
    answer = answer.lower()
    lowered = {k: str(v).lower() for k, v in choices.items() if k in string.ascii_uppercase}
    cands = [k for k in lowered if lowered[k] in answer]
    if len(cands) == 1:
        return cands[0]
    return False


def can_infer(answer: str, choices: Mapping[str, str]) -> str | bool:
    answer = str(answer)
    copt = can_infer_option(answer, choices)
    return copt if copt else can_infer_text(answer, copy.copy(choices))


def extract(response: str, record: Mapping[str, Any] | None = None) -> str | None:
    """The option letter (A-D) the response gives, or ``None``; never raises."""
    if not isinstance(response, str):
        return None
    try:
        choices = choices_of(record) if record is not None else {letter: "\0" for letter in LETTERS}
    except KeyError:
        choices = {letter: "\0" for letter in LETTERS}  # no option texts: letters only
    letter = can_infer(response, choices)
    return letter if letter in LETTERS else None


def blind_choices(record: Mapping[str, Any], records: list[Mapping[str, Any]]) -> list[Any]:
    """What a guesser that neither sees the picture nor reads the question answers (``kit.eval.baselines``):
    one of the four option letters."""
    return ["A", "B", "C", "D"]


# ------------------------------------------------------------------------------------------------ scoring
def score(records: Iterable[Mapping[str, Any]], where: str = "seed records",
          names: Mapping[int, str] | None = None) -> dict:
    """Total accuracy (``accuracy``, the SEED-Bench image number when the records are the image
    questions), accuracy per dimension (``dimensions``, by official name) and per data type. Each
    record holds ``answer``, ``question_id``, ``question_type_id`` and ``prediction`` (a letter or
    ``None``) or ``response``; a record with neither is counted wrong, as LLaVA counts a question
    without an answer."""
    names = {**DIMENSIONS, **(names or {})}
    counts: dict[int, list[int]] = {}
    by_type: dict[str, list[int]] = {}
    seen: set[str] = set()
    unanswered = 0
    for position, record in enumerate(records):
        rid = record_id(record) if isinstance(record, Mapping) else f"#{position}"
        _common.require_fields(record, SCORE_FIELDS, where, rid)
        if rid in seen:
            raise KitError(f"{where}: question {rid} appears twice")
        seen.add(rid)
        if "prediction" in record:
            prediction = record["prediction"]
            if prediction not in LETTERS:
                prediction = extract(prediction, record) if isinstance(prediction, str) else None
        elif "response" in record:
            prediction = extract(record["response"], record)
        else:
            prediction = None
            unanswered += 1
        correct = int(prediction is not None and prediction == record["answer"])
        type_id = record["question_type_id"]
        counts.setdefault(type_id, [0, 0])
        counts[type_id][0] += correct
        counts[type_id][1] += 1
        data_type = str(record.get("data_type", "image"))
        by_type.setdefault(data_type, [0, 0])
        by_type[data_type][0] += correct
        by_type[data_type][1] += 1
    if not counts:
        raise KitError(f"{where}: no records to score")
    dimensions = {
        names.get(type_id, str(type_id)): {"question_type_id": type_id, "accuracy": 100 * c / n, "questions": n}
        for type_id, (c, n) in sorted(counts.items())
    }
    total_correct = sum(c for c, _ in counts.values())
    total = sum(n for _, n in counts.values())
    return {
        "benchmark": NAME,
        "accuracy": 100 * total_correct / total,
        "correct": total_correct,
        "questions": total,
        "unanswered": unanswered,
        "data_types": {t: {"accuracy": 100 * c / n, "questions": n} for t, (c, n) in sorted(by_type.items())},
        "dimensions": dimensions,
    }


def read_outputs(path: str | Path, *, questions: str | Path | None = None, data_type: str = "image") -> Outputs:
    """SEED-Bench answers, for ``score(..., names=<dimension id -> name>)``: the official ``eval.py``'s
    ``results.json`` (JSON lines ``{'q_id', 'prediction', 'gt', 'q_type_id'}``, each with its ground truth), or
    LLaVA's answer lines ``{'question_id', 'text'}`` scored against ``questions`` (``SEED-Bench.json``), keeping
    the questions of ``data_type`` (``image``, ``video`` or ``all``); an unanswered question counts as wrong."""
    path = Path(path)
    lines = _common.read_jsonl(path)
    names: dict[int, str] = {}
    if lines and "q_id" in lines[0]:
        records = []
        for line_no, line in enumerate(lines, 1):
            _common.require_fields(line, ("q_id", "prediction", "gt", "q_type_id"), path, f"at line {line_no}")
            records.append({"question_id": line["q_id"], "answer": line["gt"], "question_type_id": line["q_type_id"],
                            "prediction": line["prediction"]})
    else:
        if not questions:
            raise KitError(f"{path}: answers without ground truth need --questions (SEED-Bench.json)")
        problems, names = read_questions(Path(questions))
        answers: dict[str, str] = {}
        for line_no, line in enumerate(lines, 1):
            _common.require_fields(line, ("question_id",), path, f"at line {line_no}")
            answers[str(line["question_id"])] = _common.answer_text(line, f"{path}, line {line_no}")
        records = []
        for question in problems:
            if data_type != "all" and question["data_type"] != data_type:
                continue
            record = dict(question)
            if str(question["question_id"]) in answers:  # a question without an answer counts as wrong
                record["response"] = answers[str(question["question_id"])]
            records.append(record)
    return Outputs(records, str(path), {"names": names})


# ----------------------------------------------------------------------------------------- foreign formats
# lmms-eval (tasks/seedbench): ``doc`` is the lmms-lab/SEED-Bench row without its frames (answer, choice_a-d,
# data_id, data_type, question, question_id, question_type_id); image and video questions alike. VLMEvalKit
# (SEEDBench_IMG, an MCQ dataset): columns index, question, A-D, answer (the letter) and category (the
# dimension's name).
FOREIGN_RULES = {
    "lmms-eval": "VLMEvalKit's can_infer on filtered_resps[0] (not lmms-eval's first character), accuracy per "
                 "dimension and in total",
    "vlmevalkit": "VLMEvalKit's can_infer (no LLM judge) on the prediction column, accuracy per dimension and in "
                  "total",
}
_DIMENSION_IDS = {name.lower(): type_id for type_id, name in DIMENSIONS.items()}


def _type_id(value: Any, where: str) -> int:
    from kit.eval.benchmarks import foreign

    return foreign.whole(value, where, "question_type_id")


def from_lmms_eval(doc: Mapping[str, Any], response: str, sample: Mapping[str, Any], where: str) -> dict:
    record = {k: v for k, v in doc.items() if k not in ("image", "prediction")}
    _common.require_fields(record, SCORE_FIELDS + ("choice_a", "choice_b", "choice_c", "choice_d"), where,
                           record_id(record))
    record["question_type_id"] = _type_id(record["question_type_id"], where)
    record["response"] = response
    return record


def from_vlmevalkit(row: Mapping[str, Any], where: str) -> dict:
    from kit.eval.benchmarks import foreign

    category = str(foreign.cell(row, "category", where))
    if category.lower() not in _DIMENSION_IDS:
        raise KitError(f"{where}: category {category!r} is not a SEED-Bench dimension ({', '.join(DIMENSIONS.values())})")
    record = {"question_id": str(foreign.cell(row, "index", where)), "question": row.get("question"),
              "answer": str(foreign.cell(row, "answer", where)).strip(),
              "question_type_id": _DIMENSION_IDS[category.lower()], "data_type": "image",
              "response": foreign.prediction(row)}
    for letter in LETTERS:
        record[f"choice_{letter.lower()}"] = "" if row.get(letter) is None else str(row[letter])
    return record


def foreign_options(fmt: str, records: list[dict], *, questions: Any = None, data_type: str = "image") -> dict:
    """``--data-type`` keeps the lmms-eval questions of that type (``records`` is filtered in place)."""
    if data_type != "all":
        records[:] = [r for r in records if str(r.get("data_type", "image")) == data_type]
        if not records:
            raise KitError(f"seed: no {data_type} question in the file (--data-type all scores every question)")
    return {}
