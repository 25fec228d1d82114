"""ScienceQA-IMG: the test questions of ScienceQA that come with an image (2,017 of 4,241), multiple
choice with 2-5 options; the number LLaVA-1.5 and EACO report as "SQA-IMG".

Answer parsing and accuracy follow LLaVA's ``llava/eval/eval_science_qa.py`` (haotian-liu/LLaVA, commit
5200b75638cb):

- the response has its newlines replaced by ". "; the answer is the response itself when, stripped, it
  is one of the letters A-E; else its first letter when it starts with "<letter>. "; else, when it
  contains "The answer is ", the letter of the first "The answer is X." (or, failing that, of the first
  "The answer is X"); otherwise ``FAILED``;
- ``get_pred_idx``: the letter's index when it is among the first ``len(choices)`` letters, else -1, and
  a problem is right when that index equals ``answer``; a problem without a prediction is ``FAILED``;
- ``IMG-Accuracy``: the accuracy over the problems whose prompt holds ``<image>`` (the image
  problems), which is ``accuracy`` here; ``all_accuracy`` is LLaVA's "Accuracy" over every problem
  scored (equal to ``accuracy`` when only image problems are loaded).

(The LLaVA-1.5 release parsed with ``The answer is ([A-Z]).`` matched exactly once and without the
newline replacement; on a response that is a bare letter, "<letter>. ..." or names one answer, both
rules agree.)

Breakdowns follow lupantech/ScienceQA ``tools/evaluate_acc.py`` (commit 360b71cb6a36),
``get_scores``: accuracy by subject (NAT natural science, SOC social science, LAN language science), by
context modality (TXT: a non-empty ``hint``; IMG: an ``image``; NO: neither) and by grade group (G1-6:
grade1-grade6, G7-12: grade7-grade12). The official script formats them as "%.2f" strings; here they
are floats, over the image problems like the headline.

Prompt: LLaVA's "CQM-A" question (``scripts/convert_sqa_to_llava_base_prompt.py``,
``create_one_example_chatbot``: "Context: <hint or N/A>\\nQuestion: <question>\\nOptions: (A) x (B) y",
double spaces collapsed) followed by the single-prediction instruction of ``model_vqa_science.py``
(``--single-pred-prompt``): "\\nAnswer with the option's letter from the given choices directly."
LLaVA-1.5's released ``llava_test_CQM-A.json`` (shipped in its eval.zip, not in the repository) is
not available here to compare word for word.

On-disk layout (lupantech/ScienceQA ``data/scienceqa/``): ``<root>/problems.json`` (pid -> problem with
``question, choices, answer`` (index), ``hint, image`` (file name or null), ``task, grade, subject,
topic, category, skill, lecture, solution, split``) and ``<root>/pid_splits.json`` (split -> pids);
images in ``<root>/images/<split>/<pid>/<image>`` (also ``<root>/<split>/<pid>/`` or ``<root>/<pid>/``).
Hub copy: ``derek-thomas/ScienceQA`` (no pid column: rows are named ``<split>-<row>``), with the splits
train, validation (the kit's ``val``) and test only; ``minival`` and ``minitest`` need the local folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kit.core.paths import is_hub_id
from kit.errors import KitError
from kit.eval.benchmarks import Metric, Outputs, _common

NAME = "scienceqa"
HUB_ID = "derek-thomas/ScienceQA"
SPLITS = ("test", "val", "train", "minival", "minitest")
# The hub copy has only the three full splits, under datasets' names; minival and minitest are pid lists of
# the official pid_splits.json, and the hub rows carry no pid to pick them by.
HUB_SPLITS = {"test": "test", "val": "validation", "train": "train"}
DEFAULT_SPLIT = "test"
TITLE = "ScienceQA-IMG"  # the benchmark's name as the papers write it
# The numbers the papers' tables report (kit.eval.evaluate.metrics_table's columns, in this order).
HEADLINES = (Metric("ScienceQA-IMG", ("accuracy",)),)
# The one column that stands for the benchmark where a single number per benchmark is needed (EACO's
# "average over benchmarks"): accuracy.
HEADLINE_METRIC = "ScienceQA-IMG"
OPTIONS = ("A", "B", "C", "D", "E")
PROBLEM_FIELDS = ("question", "choices", "answer", "hint", "image", "subject", "grade")
SCORE_FIELDS = ("choices", "answer")
SUBJECTS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}
GRADE_GROUPS = {"G1-6": tuple(f"grade{i}" for i in range(1, 7)), "G7-12": tuple(f"grade{i}" for i in range(7, 13))}
PROMPT_SUFFIX = "Answer with the option's letter from the given choices directly."
FAILED = "FAILED"


def record_id(record: Mapping[str, Any]) -> str:
    return str(record.get("pid", "?"))


# ----------------------------------------------------------------------------------------------- loading
def check_problem(problem: Any, where: str | Path, pid: str) -> None:
    _common.require_fields(problem, PROBLEM_FIELDS, where, pid)
    choices = problem["choices"]
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(OPTIONS):
        raise KitError(f"{where}: problem {pid} has choices {choices!r}, expected a list of 2-5 options")
    answer = problem["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise KitError(f"{where}: problem {pid} has answer {answer!r}, expected an index into its "
                       f"{len(choices)} choices")


def read_problems(root: Path, split: str) -> tuple[list[tuple[str, dict]], Path]:
    """(pid, problem) for the pids of ``split`` in pid_splits.json order, checked; and problems.json."""
    problems_path, splits_path = root / "problems.json", root / "pid_splits.json"
    problems = _common.read_json(problems_path)
    splits = _common.read_json(splits_path)
    if not isinstance(problems, Mapping):
        raise KitError(f"{problems_path}: expected an object pid -> problem, got {type(problems).__name__}")
    if not isinstance(splits, Mapping) or not isinstance(splits.get(split), list):
        raise KitError(f"{splits_path}: has no list of pids for split {split!r}")
    selected = []
    for pid in splits[split]:
        pid = str(pid)
        if pid not in problems:
            raise KitError(f"{splits_path}: pid {pid} of split {split!r} is not in {problems_path.name}")
        check_problem(problems[pid], problems_path, pid)
        selected.append((pid, problems[pid]))
    return selected, problems_path


def load(
    source: str | Path,
    split: str = DEFAULT_SPLIT,
    limit: int | None = None,
    check_images: bool = True,
    cache_dir: Path | None = None,
) -> list[dict]:
    """The problems of ``split`` that have an image (ScienceQA-IMG) from a local folder or the hub id
    ``derek-thomas/ScienceQA``. Records keep the official fields and add ``pid`` and ``image_path``."""
    if split not in SPLITS:
        raise KitError(f"scienceqa: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if is_hub_id(source):
        return _load_hub(str(source), split, limit, cache_dir)
    root = _common.local_root(source, NAME, HUB_ID)
    problems, where = read_problems(root, split)
    records = []
    for pid, problem in problems:
        if not problem["image"]:
            continue
        record = {**problem, "pid": pid}
        record["image_path"] = _common.resolve_image(root / "images" / split / pid, problem["image"], where, pid,
                                                     check_images, root / split / pid, root / pid)
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return _common.limited(records, limit)


def _load_hub(source: str, split: str, limit: int | None, cache_dir: Path | None) -> list[dict]:
    if split not in HUB_SPLITS:
        raise KitError(f"scienceqa: split {split!r} is not in the hub copy {source} (it has "
                       f"{', '.join(HUB_SPLITS.values())}); {split} is a pid list of the official "
                       "data/scienceqa/pid_splits.json (lupantech/ScienceQA): give that folder instead, or use "
                       f"split {', '.join(HUB_SPLITS)}")
    hub_split = HUB_SPLITS[split]
    records = []
    for index, row in enumerate(_common.hub_rows(source, hub_split, NAME)):
        if row.get("image") is None:
            continue
        pid = f"{hub_split}-{index}"
        record = {key: value for key, value in row.items() if key != "image"}
        record.update({"pid": pid, "image": "image.png"})
        check_problem(record, f"{source}[{hub_split}]", pid)
        record["image_path"] = _common.cache_image(row["image"], source, hub_split, pid, cache_dir)
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return _common.limited(records, limit)


# ------------------------------------------------------------------------------------------------ prompt
def build_prompt(record: Mapping[str, Any]) -> str:
    """LLaVA's CQM-A question with the single-prediction instruction."""
    context = " ".join([str(record.get("hint") or ""), ""]).strip() or "N/A"
    choice = " ".join(f"({OPTIONS[i]}) {c}" for i, c in enumerate(record["choices"]))
    text = f"Context: {context}\nQuestion: {record['question']}\nOptions: {choice}\n"
    text = text.replace("  ", " ").strip()
    return f"{text}\n{PROMPT_SUFFIX}"


# -------------------------------------------------------------------------------------------- extraction
_ANSWER_IS_DOT = re.compile(r"The answer is ([A-E])\.")
_ANSWER_IS = re.compile(r"The answer is ([A-E])")


def extract(response: str, record: Mapping[str, Any] | None = None) -> str:
    """The letter eval_science_qa.py parses from ``response``, or ``"FAILED"``; never raises."""
    if not isinstance(response, str):
        return FAILED
    pred_text = response.replace("\n", ". ")
    if pred_text.strip() in OPTIONS:
        return pred_text.strip()
    if len(pred_text) >= 3 and pred_text[0] in OPTIONS and pred_text[1:3] == ". ":
        return pred_text[0]
    if "The answer is " in pred_text:
        match = _ANSWER_IS_DOT.search(pred_text) or _ANSWER_IS.search(pred_text)
        if match:
            return match.group(1)
    return FAILED


def pred_idx(prediction: str, choices: list[Any]) -> int:
    """eval_science_qa.py ``get_pred_idx`` on an already parsed answer: the index, or -1."""
    return OPTIONS.index(prediction) if prediction in OPTIONS[:len(choices)] else -1


def blind_choices(record: Mapping[str, Any], records: list[Mapping[str, Any]]) -> list[Any]:
    """What a guesser that neither sees the picture nor reads the question answers (``kit.eval.baselines``):
    one of the option letters."""
    return list(OPTIONS[:len(record["choices"])])


# ------------------------------------------------------------------------------------------------ scoring
def _accuracy(rows: list[tuple[Mapping[str, Any], bool]]) -> dict:
    right = sum(ok for _, ok in rows)
    return {"accuracy": 100 * right / len(rows), "correct": right, "questions": len(rows)}


def score(records: Iterable[Mapping[str, Any]], where: str = "scienceqa records") -> dict:
    """IMG accuracy (``accuracy``), the accuracy over every record (``all_accuracy``) and the breakdowns
    by subject, context and grade group over the image problems. Each record holds ``choices``,
    ``answer`` (index), ``subject``, ``grade``, ``hint``, ``image`` and ``prediction`` (a parsed letter or
    ``FAILED``) or ``response``; ``is_multimodal`` (LLaVA: the prompt holds ``<image>``) defaults to
    whether ``image`` is set."""
    rows: list[tuple[Mapping[str, Any], bool]] = []
    seen: set[str] = set()
    failed = 0
    for position, record in enumerate(records):
        rid = record_id(record) if isinstance(record, Mapping) else f"#{position}"
        _common.require_fields(record, SCORE_FIELDS, where, rid)
        if "pid" in record:
            if rid in seen:
                raise KitError(f"{where}: problem {rid} appears twice")
            seen.add(rid)
        if "prediction" in record:
            prediction = record["prediction"]
            if prediction not in OPTIONS:
                prediction = extract(prediction) if isinstance(prediction, str) else FAILED
        elif "response" in record:
            prediction = extract(record["response"], record)
        else:
            prediction = FAILED
        failed += prediction == FAILED
        rows.append((record, pred_idx(prediction, record["choices"]) == record["answer"]))
    if not rows:
        raise KitError(f"{where}: no records to score")

    def multimodal(record: Mapping[str, Any]) -> bool:
        return bool(record.get("is_multimodal", bool(record.get("image"))))

    image_rows = [(r, ok) for r, ok in rows if multimodal(r)]
    result: dict[str, Any] = {"benchmark": NAME}
    if image_rows:
        result.update(_accuracy(image_rows))
    else:
        result.update({"accuracy": None, "correct": 0, "questions": 0})
    result["all_accuracy"] = _accuracy(rows)["accuracy"]
    result["all_questions"] = len(rows)
    result["failed"] = failed
    groups: dict[str, dict[str, Any]] = {"subjects": {}, "contexts": {}, "grades": {}}
    for short_name, (group, select) in {
        **{code: ("subjects", lambda r, s=subject: r.get("subject") == s) for subject, code in SUBJECTS.items()},
        "TXT": ("contexts", lambda r: bool(r.get("hint"))),
        "IMG": ("contexts", lambda r: bool(r.get("image"))),
        "NO": ("contexts", lambda r: not r.get("hint") and not r.get("image")),
        **{code: ("grades", lambda r, g=grades: r.get("grade") in g) for code, grades in GRADE_GROUPS.items()},
    }.items():
        chosen = [(r, ok) for r, ok in image_rows if select(r)]
        if chosen:
            groups[group][short_name] = _accuracy(chosen)
    result.update(groups)
    return result


def read_outputs(path: str | Path, *, base_dir: str | Path, split: str = "test") -> Outputs:
    """LLaVA's ScienceQA answers (JSON lines ``{'question_id', 'prompt', 'text'}`` as ``model_vqa_science.py``
    writes them) against the problems of ``split`` in ``base_dir`` (``problems.json``, ``pid_splits.json``).
    As ``eval_science_qa.py``: a problem without an answer is ``FAILED``, and a problem is multimodal when its
    prompt holds ``<image>``."""
    path = Path(path)
    predictions: dict[str, Mapping] = {}
    for line_no, line in enumerate(_common.read_jsonl(path), 1):
        _common.require_fields(line, ("question_id", "text"), path, f"at line {line_no}")
        predictions[str(line["question_id"])] = line
    problems, _ = read_problems(Path(base_dir), split)
    records = []
    for pid, problem in problems:
        record = {**problem, "pid": pid}
        if pid in predictions:
            line = predictions[pid]
            record["response"] = _common.answer_text(line, f"{path}, question {pid}")
            record["is_multimodal"] = "<image>" in str(line.get("prompt", ""))
        else:  # eval_science_qa.py: a missing prediction is FAILED with the prompt 'Unknown'
            record["prediction"] = FAILED
            record["is_multimodal"] = False
        records.append(record)
    return Outputs(records, str(path))


# ----------------------------------------------------------------------------------------- foreign formats
# lmms-eval (tasks/scienceqa, scienceqa_img): ``doc`` is the lmms-lab/ScienceQA row (question, choices, answer
# (index), hint, task, grade, subject, topic, category, skill, lecture, solution) with its image left out
# (a row without an image keeps ``image: null``). VLMEvalKit (ScienceQA_TEST / ScienceQA_VAL, MCQ datasets of
# the image questions): columns index, question, hint, A-E, answer (the letter) and whichever of subject,
# grade the TSV has.
FOREIGN_RULES = {
    "lmms-eval": "eval_science_qa.py's answer parsing on filtered_resps[0] (not lmms-eval's exact match), "
                 "IMG-Accuracy and evaluate_acc.py's breakdowns",
    "vlmevalkit": "eval_science_qa.py's answer parsing on the prediction column (not VLMEvalKit's can_infer), "
                  "IMG-Accuracy and evaluate_acc.py's breakdowns over the columns present",
}


def from_lmms_eval(doc: Mapping[str, Any], response: str, sample: Mapping[str, Any], where: str) -> dict:
    record = {k: v for k, v in doc.items() if k != "image"}
    record["pid"] = str(sample.get("doc_id"))
    check_problem({**record, "image": None}, where, record["pid"])
    has_image = "image" not in doc or doc["image"] is not None  # lmms-eval leaves the picture itself out
    record.update({"image": "image.png" if has_image else None, "is_multimodal": has_image, "response": response})
    return record


def from_vlmevalkit(row: Mapping[str, Any], where: str) -> dict:
    from kit.eval.benchmarks import foreign

    choices = [str(row[letter]) for letter in OPTIONS if row.get(letter) is not None]
    answer = str(foreign.cell(row, "answer", where)).strip()
    if answer not in OPTIONS[:len(choices)]:
        raise KitError(f"{where}: answer {answer!r} is not one of the letters of its {len(choices)} options")
    return {"pid": str(foreign.cell(row, "index", where)), "question": row.get("question"), "choices": choices,
            "answer": OPTIONS.index(answer), "hint": row.get("hint") or "", "image": "image.png",
            "subject": row.get("subject"), "grade": row.get("grade"), "is_multimodal": True,
            "response": foreign.prediction(row)}
