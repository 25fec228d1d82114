"""MME: 2374 yes/no questions, two per image, in 10 perception and 4 cognition sub-tasks.

Rules follow the official MME evaluation tool, ``eval_tool/calculation.py`` of the
MME_Benchmark_release_version (the copy LLaVA ships under ``playground/data/eval/MME``):

- ``calculate_metrics.parse_pred_ans``: the lower-cased response is ``yes``/``no`` when it is exactly
  that, else ``yes`` if ``"yes"`` occurs in its first 4 characters, else ``no`` if ``"no"`` does, else
  ``other`` (which is always wrong);
- ``calculate_metrics.process_result``: per sub-task, ``acc`` = correct questions / questions and
  ``acc_plus`` = images whose two questions (two consecutive lines of the result file) are both
  right / images; the sub-task score is ``100 * acc + 100 * acc_plus`` (max 200); Perception sums its
  10 sub-tasks (max 2000) and Cognition its 4 (max 800), in the order of ``eval_type_dict``.

The official tool opens every one of the 14 result files; here a missing sub-task is left out and
the totals sum the sub-tasks present (the tiny world has a subset), which the output lists. Lines
that are blank are skipped; a result file whose two lines of an image name different images is an
error (the official tool would silently pair them).

Prompt: the MME questions themselves end with "Please answer yes or no." (the suffix lmms-eval's
MME ``utils.py`` calls ``replace_prompt``); ``build_prompt`` adds it to a question that lacks it.

On-disk layouts: the benchmark, ``<root>/<subtask>/images/<name>.<png|jpg>`` with
``<root>/<subtask>/questions_answers_YN/<name>.txt`` (or image and ``.txt`` side by side in
``<root>/<subtask>/``), each ``.txt`` holding ``question<TAB>Yes|No`` lines; the eval-tool results,
one ``<subtask>.txt`` per sub-task with ``image<TAB>question<TAB>Yes|No<TAB>response`` lines (read by
``read_results``). Hub copy: ``lmms-lab/MME``, split ``test``, columns ``question_id, image, question,
answer, category``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kit.core.paths import is_hub_id
from kit.errors import KitError
from kit.eval.benchmarks import Metric, Outputs, _common

NAME = "mme"
HUB_ID = "lmms-lab/MME"
SPLITS = ("test",)
DEFAULT_SPLIT = "test"
TITLE = "MME"  # the benchmark's name as the papers write it
# The numbers the papers' tables report (kit.eval.evaluate.metrics_table's columns, in this order).
HEADLINES = (Metric("MME perception", ("perception",)), Metric("MME cognition", ("cognition",)))
# The one column that stands for the benchmark where a single number per benchmark is needed (EACO's
# "average over benchmarks"): the "MME" figure of the LLaVA-1.5/1.6 tables.
HEADLINE_METRIC = "MME perception"
PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
              "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
SUBTASKS = PERCEPTION + COGNITION
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
PROMPT_SUFFIX = "Please answer yes or no."
SCORE_FIELDS = ("category", "image", "answer")


def record_id(record: Mapping[str, Any]) -> str:
    return str(record.get("question_id") or f"{record.get('category', '?')}/{record.get('image', '?')}")


# ----------------------------------------------------------------------------------------------- loading
def load(
    source: str | Path,
    split: str = DEFAULT_SPLIT,
    limit: int | None = None,
    check_images: bool = True,
    cache_dir: Path | None = None,
) -> list[dict]:
    """Questions from a local MME folder (either layout, sub-task folders named as in the benchmark)
    or the hub id ``lmms-lab/MME``. Records: ``question_id`` (``<subtask>/<image file>``),
    ``category``, ``image``, ``question``, ``answer`` (``Yes``/``No``) and ``image_path``. A question
    file without its image, or a malformed line, raises ``KitError`` naming the file and line."""
    if split not in SPLITS:
        raise KitError(f"mme: unknown split {split!r}; expected {', '.join(SPLITS)}")
    if is_hub_id(source):
        return _load_hub(str(source), split, limit, cache_dir)
    root = _common.local_root(source, NAME, HUB_ID)
    present = [name for name in SUBTASKS if (root / name).is_dir()]
    if not present:
        raise KitError(f"mme: {root} holds none of the sub-task folders {', '.join(SUBTASKS)}")
    records: list[dict] = []
    for subtask in present:
        folder = root / subtask
        qa_folder = folder / "questions_answers_YN"
        image_folder = folder / "images"
        if qa_folder.is_dir():
            texts, image_dirs = sorted(qa_folder.glob("*.txt")), (image_folder, folder)
        else:
            texts, image_dirs = sorted(folder.glob("*.txt")), (folder, image_folder)
        for text_path in texts:
            image_path = _find_image(text_path.stem, image_dirs)
            if image_path is None and check_images:
                raise KitError(f"{text_path}: no image named {text_path.stem}{{{','.join(IMAGE_SUFFIXES[:3])}}} in "
                               f"{' or '.join(str(d) for d in image_dirs)}")
            image_name = image_path.name if image_path else f"{text_path.stem}.png"
            for _line_no, question, answer in _read_questions(text_path):
                records.append({
                    "question_id": f"{subtask}/{image_name}",
                    "category": subtask,
                    "image": image_name,
                    "question": question,
                    "answer": answer,
                    "image_path": str(image_path.resolve()) if image_path else None,
                })
                if limit is not None and len(records) >= limit:
                    return records
    return _common.limited(records, limit)


def _find_image(stem: str, folders: Iterable[Path]) -> Path | None:
    for folder in folders:
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _read_questions(path: Path) -> list[tuple[int, str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise KitError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    questions = []
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or parts[1].strip().lower() not in ("yes", "no"):
            raise KitError(f"{path}, line {line_no}: expected 'question<TAB>Yes|No', got {line!r}")
        questions.append((line_no, parts[0], parts[1].strip()))
    if not questions:
        raise KitError(f"{path}: holds no question")
    return questions


def _load_hub(source: str, split: str, limit: int | None, cache_dir: Path | None) -> list[dict]:
    records = []
    for row in _common.hub_rows(source, split, NAME):
        record = {key: value for key, value in row.items() if key != "image"}
        rid = str(record.get("question_id", "?"))
        _common.require_fields(record, ("question_id", "question", "answer", "category"), f"{source}[{split}]", rid)
        record["image"] = str(record["question_id"]).split("/")[-1]
        record["image_path"] = _common.cache_image(row.get("image"), source, split, rid.replace("/", "__"),
                                                   cache_dir)
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return _common.limited(records, limit)


# ------------------------------------------------------------------------------------------------ prompt
def build_prompt(record: Mapping[str, Any]) -> str:
    """The MME question, with " Please answer yes or no." appended when it is not already there."""
    question = str(record["question"]).rstrip()
    if PROMPT_SUFFIX.lower() in question.lower():
        return question
    return f"{question} {PROMPT_SUFFIX}"


# -------------------------------------------------------------------------------------------- extraction
def parse_pred_ans(pred_ans: str) -> str:
    """calculation.py ``parse_pred_ans`` (on an already lower-cased answer)."""
    if pred_ans in ["yes", "no"]:
        return pred_ans
    prefix_pred_ans = pred_ans[:4]
    if "yes" in prefix_pred_ans:
        return "yes"
    if "no" in prefix_pred_ans:
        return "no"
    return "other"


def extract(response: str, record: Mapping[str, Any] | None = None) -> str:
    """``"yes"``, ``"no"`` or ``"other"`` for a response (calculation.py lower-cases, then parses)."""
    if not isinstance(response, str):
        return "other"
    return parse_pred_ans(response.lower())


def blind_choices(record: Mapping[str, Any], records: list[Mapping[str, Any]]) -> list[Any]:
    """What a guesser that neither sees the picture nor reads the question answers (``kit.eval.baselines``):
    yes or no."""
    return ["yes", "no"]


# ------------------------------------------------------------------------------------------------ scoring
def score(records: Iterable[Mapping[str, Any]], where: str = "mme records") -> dict:
    """Per sub-task ``acc``, ``acc_plus`` and ``score`` (= 100 acc + 100 acc_plus), and the Perception
    and Cognition totals over the sub-tasks present. Each record holds ``category`` (the sub-task),
    ``image``, ``answer`` (Yes/No) and either ``prediction`` (yes/no/other from ``extract``) or
    ``response``. Questions are grouped into images by ``image`` within a sub-task."""
    by_task: dict[str, dict[str, list[bool]]] = {}
    for position, record in enumerate(records):
        rid = record_id(record) if isinstance(record, Mapping) else f"#{position}"
        _common.require_fields(record, SCORE_FIELDS, where, rid)
        category = record["category"]
        if category not in SUBTASKS:
            raise KitError(f"{where}: question {rid} has category {category!r}, not an MME sub-task "
                           f"({', '.join(SUBTASKS)})")
        gt = str(record["answer"]).strip().lower()
        if gt not in ("yes", "no"):
            raise KitError(f"{where}: question {rid} has answer {record['answer']!r}, expected Yes or No")
        if "prediction" in record:
            prediction = record["prediction"]
            if prediction not in ("yes", "no", "other"):
                prediction = extract(str(prediction)) if prediction is not None else "other"
        elif "response" in record:
            prediction = extract(record["response"], record)
        else:
            raise KitError(f"{where}: question {rid} has neither 'prediction' nor 'response'")
        by_task.setdefault(category, {}).setdefault(str(record["image"]), []).append(prediction == gt)
    if not by_task:
        raise KitError(f"{where}: no records to score")

    subtasks: dict[str, dict] = {}
    totals = {"perception": 0.0, "cognition": 0.0}
    for name in SUBTASKS:
        if name not in by_task:
            continue
        images = by_task[name]
        answers = [ok for image in images.values() for ok in image]
        acc = sum(answers) / len(answers)
        acc_plus = sum(1 for image in images.values() if all(image)) / len(images)
        task_score = 0.0
        task_score += acc * 100
        task_score += acc_plus * 100
        subtasks[name] = {"score": task_score, "acc": acc * 100, "acc_plus": acc_plus * 100,
                          "questions": len(answers), "images": len(images)}
        totals["perception" if name in PERCEPTION else "cognition"] += task_score
    return {
        "benchmark": NAME,
        "perception": totals["perception"],
        "cognition": totals["cognition"],
        "perception_subtasks": [name for name in PERCEPTION if name in subtasks],
        "cognition_subtasks": [name for name in COGNITION if name in subtasks],
        "subtasks": subtasks,
    }


def read_results(directory: str | Path) -> list[dict]:
    """Records from an eval-tool results folder: one ``<subtask>.txt`` per sub-task with lines
    ``image<TAB>question<TAB>Yes|No<TAB>response``, two consecutive lines per image. Malformed files
    raise ``KitError`` naming the file and line."""
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise KitError(f"mme: {folder} is not a folder of <subtask>.txt result files")
    texts = sorted(folder.glob("*.txt"))
    unknown = [p.name for p in texts if p.stem not in SUBTASKS]
    if unknown:
        raise KitError(f"mme: {folder} holds {', '.join(unknown)}, not named after an MME sub-task "
                       f"({', '.join(SUBTASKS)})")
    if not texts:
        raise KitError(f"mme: {folder} holds no <subtask>.txt result file")
    records: list[dict] = []
    for path in sorted(texts, key=lambda p: SUBTASKS.index(p.stem)):
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as err:
            raise KitError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
        rows = []
        for line_no, line in enumerate(lines, 1):
            line = line.rstrip("\r")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 4:
                raise KitError(f"{path}, line {line_no}: expected 4 tab-separated fields "
                               f"(image, question, Yes|No, response), found {len(parts)}")
            image, question, gt, response = parts
            if gt.lower() not in ("yes", "no"):
                raise KitError(f"{path}, line {line_no}: ground truth {gt!r} is neither Yes nor No")
            rows.append((line_no, image, question, gt, response))
        if not rows:
            raise KitError(f"{path}: holds no result line")
        if len(rows) % 2:
            raise KitError(f"{path}: {len(rows)} result lines; the eval tool expects two questions per image")
        for first, second in zip(rows[::2], rows[1::2], strict=True):
            if first[1] != second[1]:
                raise KitError(f"{path}, lines {first[0]} and {second[0]}: the two questions of an image name "
                               f"different images ({first[1]!r}, {second[1]!r})")
        for line_no, image, question, gt, response in rows:
            records.append({"question_id": f"{path.stem}/{image}", "category": path.stem, "image": image,
                            "question": question, "answer": gt, "response": response, "line": line_no})
    return records


def read_outputs(directory: str | Path) -> Outputs:
    """The eval tool's results folder (``read_results``), reported as a ``"dir"``."""
    return Outputs(read_results(directory), str(directory), kind="dir")


# ----------------------------------------------------------------------------------------- foreign formats
# lmms-eval (tasks/mme): ``doc`` is the lmms-lab/MME row without its image: question_id
# (``<subtask>/<image file>``), question, answer (Yes/No), category (the sub-task). VLMEvalKit (MME, a Y/N
# dataset): columns index, question, answer (Yes/No), category (the sub-task) and image_path, by which
# MME_rating pairs the two questions of an image.
FOREIGN_RULES = {
    "lmms-eval": "calculation.py parse_pred_ans on filtered_resps[0] (not lmms-eval's variant), acc + acc_plus "
                 "per sub-task, questions paired by question_id's image",
    "vlmevalkit": "calculation.py parse_pred_ans on the prediction column (not VLMEvalKit's YOrN_Extraction), acc "
                  "+ acc_plus per sub-task, questions paired by image_path",
}


def from_lmms_eval(doc: Mapping[str, Any], response: str, sample: Mapping[str, Any], where: str) -> dict:
    _common.require_fields(doc, ("question_id", "answer", "category"), where, str(doc.get("question_id", "?")))
    return {"question_id": str(doc["question_id"]), "category": doc["category"],
            "image": str(doc["question_id"]).split("/")[-1], "question": doc.get("question"),
            "answer": doc["answer"], "response": response}


def from_vlmevalkit(row: Mapping[str, Any], where: str) -> dict:
    from kit.eval.benchmarks import foreign

    category = str(foreign.cell(row, "category", where))
    image = str(row.get("image_path") or foreign.cell(row, "image", where))
    return {"question_id": f"{category}/{row['index']}", "category": category, "image": image,
            "question": row.get("question"), "answer": str(foreign.cell(row, "answer", where)),
            "response": foreign.prediction(row)}
