"""HallusionBench: 1129 yes/no questions (951 with an image, 178 visual-supplement questions without one).

Metrics follow the official code of tianyi-lab/HallusionBench, ``utils.py``:

- ``assign_correctness``: a judgement is "0" (incorrect), "1" (correct) or "2" (unclear); "unclear"
  counts as correct only for the visual-supplement questions without a figure (category ``VS``,
  ``figure_id`` 0), everything else needs "1";
- ``get_eval_all`` -> aAcc: correct questions / questions;
- ``get_eval_fig`` -> fAcc: figures (category, subcategory, set_id, figure_id) whose questions are all
  correct / figures, the figure-less VS questions excluded;
- ``get_eval_pair_all`` -> qAcc: question pairs (category, subcategory, set_id, question_id, i.e. the
  same question across the figures of a set) all correct / pairs; ``get_eval_pair_easy`` and
  ``get_eval_pair_hard`` restrict the pairs to figure 0 (the original) and to the edited figures.
  Percentages are rounded to 4 decimals as evaluation.py prints them.

Judges. The official judge is GPT-4 (``evaluate_by_chatgpt``): ``judge_prompt`` reproduces its
prompt and ``chat_judgement`` its parsing ("incorrect" -> 0, else "correct" -> 1, else 2); pass any
chat callable ``chat(prompt) -> str`` to ``score``. The offline default is a rule-based judge
(a deviation from the official protocol): ``extract`` reads yes/no from the response with
VLMEvalKit's ``YOrN_Extraction`` (open-compass/VLMEvalKit, ``vlmeval/dataset/utils/yorn.py``, with
``process_punctuation`` of ``vlmeval/dataset/utils/vqa_eval.py``), and the judgement is 1 when it
matches ``gt_answer`` ("1" yes, "0" no), 0 when it contradicts it and 2 when neither or both of
yes/no appear.

Prompt: the official repository leaves it to the user (evaluation.py ``generate_answer`` is a TODO);
the kit sends the question followed by ``"\\nPlease answer yes or no."``, the suffix VLMEvalKit model
wrappers and xtuner's evaluation append for HallusionBench (a choice, not an official rule).

On-disk layout (official repository): ``<root>/HallusionBench.json``, a list of questions whose
``filename`` (``"./VD/figure/0_0.png"``, ``null`` without a figure) is relative to ``<root>`` or to
``<root>/hallusion_bench`` (where the official image archive unpacks). Hub copy:
``lmms-lab/HallusionBench`` with splits ``image`` and ``non_image`` (``split="all"`` loads both).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kit.core.paths import is_hub_id
from kit.errors import KitError
from kit.eval.benchmarks import Metric, Outputs, _common

NAME = "hallusionbench"
HUB_ID = "lmms-lab/HallusionBench"
SPLITS = ("all", "image", "non_image")
DEFAULT_SPLIT = "all"
TITLE = "HallusionBench"  # the benchmark's name as the papers write it
# The numbers the papers' tables report (kit.eval.evaluate.metrics_table's columns, in this order).
HEADLINES = (Metric("HallusionBench aAcc", ("aAcc",)), Metric("HallusionBench fAcc", ("fAcc",)),
             Metric("HallusionBench qAcc", ("qAcc",)))
# The one column that stands for the benchmark where a single number per benchmark is needed (EACO's
# "average over benchmarks"): accuracy over all questions (fAcc, qAcc group them).
HEADLINE_METRIC = "HallusionBench aAcc"
FILE_NAME = "HallusionBench.json"
QUESTION_FIELDS = ("category", "subcategory", "visual_input", "set_id", "figure_id", "question_id", "question",
                   "gt_answer_details", "gt_answer", "filename")
SCORE_FIELDS = ("category", "subcategory", "set_id", "figure_id", "question_id")
CORRECTNESS_ENTRY = "gpt4v_output_gpt_check"  # evaluation.py: model_correctness_entry
OUTPUT_ENTRY = "model_prediction"  # evaluation.py: model_output_entry
PROMPT_SUFFIX = "\nPlease answer yes or no."


def record_id(record: Mapping[str, Any]) -> str:
    """The official per-question key of ``get_eval_all``: category_subcategory_set_figure_question."""
    return "_".join(str(record.get(k, "?")) for k in ("category", "subcategory", "set_id", "figure_id", "question_id"))


# ----------------------------------------------------------------------------------------------- loading
def load(
    source: str | Path,
    split: str = DEFAULT_SPLIT,
    limit: int | None = None,
    check_images: bool = True,
    cache_dir: Path | None = None,
) -> list[dict]:
    """Questions from a local folder (``<source>/HallusionBench.json``) or the hub id
    ``lmms-lab/HallusionBench``. ``split`` is ``all``, ``image`` (questions with a figure) or
    ``non_image``. Each record keeps the official fields and adds ``image_path`` (absolute, ``None``
    without a figure). Missing files or fields raise ``KitError`` naming the file and the question."""
    if split not in SPLITS:
        raise KitError(f"hallusionbench: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if is_hub_id(source):
        return _load_hub(str(source), split, limit, cache_dir)
    root = _common.local_root(source, NAME, HUB_ID)
    path = root / FILE_NAME
    data = _common.read_json(path)
    if not isinstance(data, list):
        raise KitError(f"{path}: expected a list of questions, got {type(data).__name__}")
    records = []
    for position, question in enumerate(data):
        rid = record_id(question) if isinstance(question, Mapping) else f"#{position}"
        _common.require_fields(question, QUESTION_FIELDS, path, rid)
        _check_question(question, path, rid)
        has_image = question["filename"] is not None
        if split == "image" and not has_image or split == "non_image" and has_image:
            continue
        record = dict(question)
        record["image_path"] = _common.resolve_image(root, question["filename"], path, rid, check_images,
                                                     root / "hallusion_bench")
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return _common.limited(records, limit)


def _check_question(question: Mapping[str, Any], where: str | Path, rid: str) -> None:
    if question["category"] not in ("VD", "VS"):
        raise KitError(f"{where}: question {rid} has category {question['category']!r}, expected 'VD' or 'VS'")
    if str(question["gt_answer"]) not in ("0", "1"):
        raise KitError(f"{where}: question {rid} has gt_answer {question['gt_answer']!r}, expected '0' or '1'")


def _load_hub(source: str, split: str, limit: int | None, cache_dir: Path | None) -> list[dict]:
    records = []
    for hub_split in (("image", "non_image") if split == "all" else (split,)):
        for row in _common.hub_rows(source, hub_split, NAME):
            record = {key: value for key, value in row.items() if key != "image"}
            record.setdefault("filename", None)
            rid = record_id(record)
            _common.require_fields(record, QUESTION_FIELDS, f"{source}[{hub_split}]", rid)
            _check_question(record, f"{source}[{hub_split}]", rid)
            record["image_path"] = _common.cache_image(row.get("image"), source, hub_split, rid, cache_dir)
            records.append(record)
            if limit is not None and len(records) >= limit:
                return records
    return _common.limited(records, limit)


# ------------------------------------------------------------------------------------------------ prompt
def build_prompt(record: Mapping[str, Any]) -> str:
    """The question and the yes/no instruction."""
    return f"{record['question']}{PROMPT_SUFFIX}"


# -------------------------------------------------------------------------------------------- extraction
_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")


def process_punctuation(in_text: str) -> str:
    """VLMEvalKit ``process_punctuation`` (from the VQA evaluation), including its quirks: the
    lookbehind is written ``(?!<=\\d)`` and ``re.UNICODE`` is passed as the ``count`` argument."""
    out_text = in_text
    for p in _PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (re.search(_COMMA_STRIP, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    return _PERIOD_STRIP.sub("", out_text, re.UNICODE)


def extract(response: str, record: Mapping[str, Any] | None = None) -> str | None:
    """VLMEvalKit ``YOrN_Extraction``: ``"yes"`` when the word yes appears and no does not, ``"no"``
    for the converse, ``None`` otherwise (the rule-based judge calls that "unclear")."""
    if not isinstance(response, str):
        return None
    words = process_punctuation(response.lower()).split()
    if "yes" in words and "no" not in words:
        return "yes"
    if "yes" not in words and "no" in words:
        return "no"
    return None


def rule_judgement(prediction: str | None, record: Mapping[str, Any]) -> str:
    """The offline judge: "1" when ``prediction`` (yes/no) matches ``gt_answer``, "0" when it does not,
    "2" (unclear) when there is no yes/no."""
    if prediction not in ("yes", "no"):
        return "2"
    return "1" if (prediction == "yes") == (str(record["gt_answer"]) == "1") else "0"


def judge_prompt(record: Mapping[str, Any], prediction_text: str) -> str:
    """utils.py ``evaluate_by_chatgpt``: the GPT-4 judge prompt for one question."""
    prompt = ("Imagine you are an intelligent teacher. Thoroughly read the question, reference answer and the "
              "prediction answer to ensure a clear understanding of the information provided. Assess the "
              "correctness of the predictions. ")
    prompt += ("If the prediction answer does not conflict with the reference answer, please generate “correct”. "
               "If the prediction answer conflict with the reference answer, please generate “incorrect”. If the "
               'prediction answer is unclear about the answer, please generate "unclear". \n\n Question:')
    prompt += str(record["question"])
    prompt += "\nReference answer: "
    prompt += str(record["gt_answer_details"])
    prompt += "\nPrediction answer:"
    prompt += prediction_text
    prompt += "\nOutput:"
    return prompt


def chat_judgement(output_text: str) -> str:
    """utils.py ``evaluate_by_chatgpt``: "0" if the judge says incorrect, else "1" if it says correct,
    else "2"."""
    text = output_text.lower()
    if "incorrect" in text:
        return "0"
    if "correct" in text:
        return "1"
    return "2"


def assign_correctness(judgement: Any, record: Mapping[str, Any], where: str) -> int:
    """utils.py ``assign_correctness`` for one question."""
    try:
        value = int(judgement)
    except (TypeError, ValueError):
        value = -1
    if value not in (0, 1, 2):
        raise KitError(f"{where}: question {record_id(record)} has judgement {judgement!r}, expected 0, 1 or 2")
    if record["category"] == "VS" and int(record["figure_id"]) == 0:
        return 1 if value in (1, 2) else 0
    return 1 if value == 1 else 0


def blind_choices(record: Mapping[str, Any], records: list[Mapping[str, Any]]) -> list[Any]:
    """What a guesser that neither sees the picture nor reads the question answers (``kit.eval.baselines``):
    yes or no."""
    return ["yes", "no"]


# ------------------------------------------------------------------------------------------------ scoring
def _correctness(record: Mapping[str, Any], chat: Callable[[str], str] | None, where: str) -> tuple[int, str]:
    """(0/1, source) from, in order: ``correct`` (0/1, final), the official judgement entry
    ``gpt4v_output_gpt_check``, the chat judge on the response text (when ``chat`` is given),
    ``prediction`` (yes/no from ``extract``), the rule judge on ``model_prediction``/``response``."""
    rid = record_id(record)
    if "correct" in record:
        value = record["correct"]
        if isinstance(value, bool) or value in (0, 1) or value in ("0", "1"):
            return int(value), "given"
        raise KitError(f"{where}: question {rid} has correct={value!r}, expected 0 or 1")
    if CORRECTNESS_ENTRY in record:
        return assign_correctness(record[CORRECTNESS_ENTRY], record, where), "given"
    text = record.get(OUTPUT_ENTRY, record.get("response"))
    if chat is not None and isinstance(text, str):
        _common.require_fields(record, ("question", "gt_answer_details"), where, rid)
        return assign_correctness(chat_judgement(str(chat(judge_prompt(record, text)))), record, where), "chat"
    _common.require_fields(record, ("gt_answer",), where, rid)
    if "prediction" in record:
        return assign_correctness(rule_judgement(record["prediction"], record), record, where), "rules"
    if isinstance(text, str):
        return assign_correctness(rule_judgement(extract(text, record), record), record, where), "rules"
    raise KitError(f"{where}: question {rid} has none of 'correct', '{CORRECTNESS_ENTRY}', 'prediction', "
                   f"'{OUTPUT_ENTRY}' or 'response'")


def _pct(correct: int, total: int) -> float:
    return round(100 * correct / total, 4) if total else 0.0


def _groups(rows: list[tuple[Mapping[str, Any], int]], keys: tuple[str, ...], keep=lambda r: True) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for record, correct in rows:
        if keep(record):
            groups.setdefault("_".join(str(record[k]) for k in keys), []).append(correct)
    return list(groups.values())


def score(
    records: Iterable[Mapping[str, Any]],
    chat: Callable[[str], str] | None = None,
    where: str = "hallusionbench records",
) -> dict:
    """aAcc, fAcc and qAcc (plus the easy/hard question-pair accuracies and per-category aAcc) over
    ``records`` (see ``_correctness`` for the fields read). ``judge`` says where the judgements came
    from: ``given``, ``chat``, ``rules`` (or a mix)."""
    rows: list[tuple[Mapping[str, Any], int]] = []
    sources: set[str] = set()
    seen: set[str] = set()
    for position, record in enumerate(records):
        rid = record_id(record) if isinstance(record, Mapping) else f"#{position}"
        _common.require_fields(record, SCORE_FIELDS, where, rid)
        if record["category"] not in ("VD", "VS"):
            raise KitError(f"{where}: question {rid} has category {record['category']!r}, expected 'VD' or 'VS'")
        if rid in seen:  # get_eval_all asserts that every question key is unique
            raise KitError(f"{where}: question {rid} appears twice")
        seen.add(rid)
        correct, source = _correctness(record, chat, where)
        sources.add(source)
        rows.append((record, correct))
    if not rows:
        raise KitError(f"{where}: no records to score")

    def no_figure(record: Mapping[str, Any]) -> bool:
        return record["category"] == "VS" and str(record["figure_id"]) == "0"

    figures = _groups(rows, ("category", "subcategory", "set_id", "figure_id"), lambda r: not no_figure(r))
    pairs = _groups(rows, ("category", "subcategory", "set_id", "question_id"))
    easy = _groups(rows, ("category", "subcategory", "set_id", "question_id"), lambda r: str(r["figure_id"]) == "0")
    hard = _groups(rows, ("category", "subcategory", "set_id", "question_id"), lambda r: str(r["figure_id"]) != "0")
    correct_questions = sum(c for _, c in rows)
    correct_figures = sum(1 for g in figures if all(g))
    correct_pairs = sum(1 for g in pairs if all(g))
    by_category = {}
    for category in ("VD", "VS"):
        selected = [c for r, c in rows if r["category"] == category]
        if selected:
            by_category[category] = {"aAcc": _pct(sum(selected), len(selected)), "questions": len(selected)}
    return {
        "benchmark": NAME,
        "judge": "+".join(sorted(sources)),
        "aAcc": _pct(correct_questions, len(rows)),
        "fAcc": _pct(correct_figures, len(figures)),
        "qAcc": _pct(correct_pairs, len(pairs)),
        "easy_qAcc": _pct(sum(1 for g in easy if all(g)), len(easy)),
        "hard_qAcc": _pct(sum(1 for g in hard if all(g)), len(hard)),
        "questions": len(rows),
        "correct_questions": correct_questions,
        "figures": len(figures),
        "correct_figures": correct_figures,
        "pairs": len(pairs),
        "correct_pairs": correct_pairs,
        "by_category": by_category,
    }


def read_outputs(path: str | Path) -> Outputs:
    """The HallusionBench questions (``HallusionBench.json``), each with ``correct`` (0/1, the released
    judgements) or the model's ``model_prediction``; ``score`` checks the fields."""
    path = Path(path)
    data = _common.read_json(path)
    if not isinstance(data, list):
        raise KitError(f"{path}: expected a list of HallusionBench questions, got {type(data).__name__}")
    return Outputs(data, str(path))


# ----------------------------------------------------------------------------------------- foreign formats
# lmms-eval (tasks/hallusion_bench): ``doc`` is the lmms-lab/HallusionBench row without its image, i.e. the
# fields of HallusionBench.json; ``hb_process_results`` sets ``model_prediction`` to the response, as here.
# VLMEvalKit (HallusionBench, a Y/N dataset): columns index (``<category>_<subcategory>_..._<set_id>_<figure_id>
# _<question_id>``: Hallusion_rating reads parts 3, 4 and 5), question, answer (Yes/No), category, l2-category
# (the subcategory).
FOREIGN_RULES = {
    "lmms-eval": "utils.py aAcc/fAcc/qAcc with the rule judge (VLMEvalKit's YOrN_Extraction against gt_answer) on "
                 "filtered_resps[0] as model_prediction",
    "vlmevalkit": "utils.py aAcc/fAcc/qAcc with the rule judge (VLMEvalKit's YOrN_Extraction against the answer "
                  "column) on the prediction column",
}


def from_lmms_eval(doc: Mapping[str, Any], response: str, sample: Mapping[str, Any], where: str) -> dict:
    record = {k: v for k, v in doc.items() if k not in ("image", "correct", CORRECTNESS_ENTRY)}
    _common.require_fields(record, SCORE_FIELDS + ("gt_answer",), where, record_id(record))
    record[OUTPUT_ENTRY] = response
    return record


def from_vlmevalkit(row: Mapping[str, Any], where: str) -> dict:
    from kit.eval.benchmarks import foreign

    index = str(foreign.cell(row, "index", where))
    parts = index.split("_")
    if len(parts) < 6:
        raise KitError(f"{where}: index {index!r} does not name <category>_<subcategory>_..._<set_id>_<figure_id>_"
                       "<question_id> as VLMEvalKit's HallusionBench indices do")
    category = parts[0] if parts[0] in ("VD", "VS") else str(foreign.cell(row, "category", where))
    answer = str(foreign.cell(row, "answer", where)).strip().lower()
    if answer not in ("yes", "no"):
        raise KitError(f"{where}: answer {row['answer']!r} is neither Yes nor No")
    return {"category": category, "subcategory": str(row.get("l2-category") or parts[1]), "set_id": parts[3],
            "figure_id": parts[4], "question_id": parts[5], "question": row.get("question"),
            "gt_answer": "1" if answer == "yes" else "0", OUTPUT_ENTRY: foreign.prediction(row)}
