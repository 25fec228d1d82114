"""MathVista (testmini, 1000 problems): loader, standard prompt, answer extraction and score.

Rules follow the official code of lupantech/MathVista; each function names the function it mirrors:

- ``evaluation/extract_answer.py``: ``extract_answer`` (empty response, exact choice text, integer and
  float shortcuts, optional ``quick_extract``, then the LLM extractor) and ``create_test_prompt``;
- ``evaluation/prompts/ext_ans.py``: ``demo_prompt``, the five-example extractor prompt
  (pids 852, 104, 824, 506, 540);
- ``evaluation/calculate_score.py``: ``get_most_similar``, ``normalize_extracted_answer``,
  ``safe_equal``, ``get_acc_with_contion`` and the breakdown loop over the nine target keys in ``main``;
- ``evaluation/build_query.py``: ``create_one_query`` (hint texts, ``Question:``/``(Unit: ...)``,
  ``Choices:``/``(A) ...`` formatting).

On-disk layout (official ``data/testmini.json``): ``<root>/<split>.json`` maps pid -> problem, the
problem's ``image`` is relative to ``<root>`` (``images/<pid>.png`` in the tiny world). Hub copy:
``AI4Math/MathVista``, split ``testmini``, columns ``pid, question, image, decoded_image, choices,
unit, precision, answer, question_type, answer_type, metadata, query``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kit.core.paths import is_hub_id
from kit.errors import KitError
from kit.eval.benchmarks import Metric, Outputs, _common

logger = logging.getLogger(__name__)

NAME = "mathvista"
HUB_ID = "AI4Math/MathVista"
SPLITS = ("testmini", "test")  # the hub "test" split has no public answers
DEFAULT_SPLIT = "testmini"
TITLE = "MathVista"  # the benchmark's name as the papers write it
# The numbers the papers' tables report (kit.eval.evaluate.metrics_table's columns, in this order).
HEADLINES = (Metric("MathVista", ("accuracy",)),)
# The one column that stands for the benchmark where a single number per benchmark is needed (EACO's
# "average over benchmarks"): accuracy.
HEADLINE_METRIC = "MathVista"
INT_RULES = ("legacy", "current")

PROBLEM_FIELDS = ("pid", "question", "image", "choices", "unit", "precision", "answer", "question_type",
                  "answer_type", "metadata")
# calculate_score.py main(): the keys of the fine-grained accuracy; the last seven live in ``metadata``.
BREAKDOWN_KEYS = ("question_type", "answer_type", "language", "source", "category", "task", "context", "grade",
                  "skills")
METADATA_KEYS = BREAKDOWN_KEYS[2:]
SCORE_FIELDS = ("pid", "choices", "precision", "answer", "question_type", "answer_type", "metadata")

# evaluation/prompts/ext_ans.py: demo_prompt (pids 852, 104, 824, 506, 540). In the official source the
# last question is written with "\n" escapes inside a normal (non-raw) string, i.e. real newlines.
DEMO_PROMPT = """
Please read the following example. Then extract the answer from the model response and type it at the end of the prompt.

Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end.
Question: Which number is missing?

Model response: The number missing in the sequence is 14.

Extracted answer: 14

Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.
Question: What is the fraction of females facing the camera?

Model response: The fraction of females facing the camera is 0.6, which means that six out of ten females in the group are facing the camera.

Extracted answer: 0.6

Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.
Question: How much money does Luca need to buy a sour apple candy and a butterscotch candy? (Unit: $)

Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.

Extracted answer: 1.45

Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.
Question: Between which two years does the line  graph saw its maximum peak?

Model response: The line graph saw its maximum peak between 2007 and 2008.

Extracted answer: [2007, 2008]

Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.
Question: What fraction of the shape is blue?\nChoices:\n(A) 3/11\n(B) 8/11\n(C) 6/11\n(D) 3/5

Model response: The correct answer is (B) 8/11.

Extracted answer: B
"""

# evaluation/build_query.py create_one_query: the hint for shot_type "solution".
HINT_MULTI_CHOICE = "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
HINT_INTEGER = ("Hint: Please answer the question requiring an integer answer and provide the final value, "
                "e.g., 1, 2, 3, at the end.")
HINT_FLOAT_1 = ("Hint: Please answer the question requiring a floating-point number with one decimal place and "
                "provide the final value, e.g., 1.2, 1.3, 1.4, at the end.")
HINT_FLOAT_2 = ("Hint: Please answer the question requiring a floating-point number with two decimal places and "
                "provide the final value, e.g., 1.23, 1.34, 1.45, at the end.")
HINT_LIST = ("Hint: Please answer the question requiring a Python list as an answer and provide the final list, "
             "e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.")


def record_id(record: Mapping[str, Any]) -> str:
    return str(record.get("pid", "?"))


# ----------------------------------------------------------------------------------------------- loading
def load(
    source: str | Path,
    split: str = DEFAULT_SPLIT,
    limit: int | None = None,
    check_images: bool = True,
    cache_dir: Path | None = None,
) -> list[dict]:
    """Problems of ``split`` from a local folder (``<source>/<split>.json``, the official
    ``data/testmini.json`` layout) or the hub id ``AI4Math/MathVista``. Each record keeps the official
    fields and adds ``image_path`` (absolute). Missing files or fields raise ``KitError`` naming the
    file and the pid."""
    if is_hub_id(source):
        return _load_hub(str(source), split, limit, cache_dir)
    root = _common.local_root(source, NAME, HUB_ID)
    path = root / f"{split}.json"
    data = _common.read_json(path)
    if not isinstance(data, dict):
        raise KitError(f"{path}: expected an object mapping pid -> problem, got {type(data).__name__}")
    records = []
    for pid, problem in data.items():
        _common.require_fields(problem, PROBLEM_FIELDS, path, str(pid))
        _check_problem(problem, path, str(pid))
        record = dict(problem)
        record["image_path"] = _common.resolve_image(root, problem["image"], path, str(pid), check_images)
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return _common.limited(records, limit)


def _check_problem(problem: Mapping[str, Any], where: str | Path, pid: str) -> None:
    metadata = problem["metadata"]
    _common.require_fields(metadata, METADATA_KEYS, f"{where} (metadata)", pid)
    if problem["question_type"] == "multi_choice" and not problem["choices"]:
        raise KitError(f"{where}: record {pid} is multi_choice but has no choices")
    if not isinstance(metadata["skills"], list):
        raise KitError(f"{where}: record {pid} has metadata.skills {metadata['skills']!r}, expected a list")


def _load_hub(source: str, split: str, limit: int | None, cache_dir: Path | None) -> list[dict]:
    records = []
    for row in _common.hub_rows(source, split, NAME):
        record = {key: value for key, value in row.items() if key != "decoded_image"}
        _common.require_fields(record, PROBLEM_FIELDS, f"{source}[{split}]", str(record.get("pid", "?")))
        _check_problem(record, f"{source}[{split}]", str(record["pid"]))
        record["image_path"] = _common.cache_image(row.get("decoded_image"), source, split, str(record["pid"]),
                                                   cache_dir)
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return _common.limited(records, limit)


# ------------------------------------------------------------------------------------------------ prompt
def build_prompt(record: Mapping[str, Any]) -> str:
    """The record's ``query`` when present (the released zero-shot queries, ``data/query.json`` and the
    hub ``query`` column), else the same construction: hint, ``Question: ...`` with ``(Unit: ...)``,
    then ``Choices:`` and ``(A) ...`` lines, joined by newlines. Hint texts and line formats are those of
    build_query.py ``create_one_query``; the order (hint first, no trailing ``Solution:``) is the one of
    the released queries, which this construction reproduces exactly for 985 of the 1000 testmini
    problems (the other 15 had their choices reordered after the queries were generated)."""
    query = record.get("query")
    if isinstance(query, str) and query:
        return query
    question_type = record["question_type"]
    answer_type = record["answer_type"]
    precision = record.get("precision")
    if question_type == "multi_choice":
        hint = HINT_MULTI_CHOICE
    elif answer_type == "integer":
        hint = HINT_INTEGER
    elif answer_type == "float" and precision is not None and float(precision) == 1:
        hint = HINT_FLOAT_1
    elif answer_type == "float" and precision is not None and float(precision) == 2:
        hint = HINT_FLOAT_2
    elif answer_type == "list":
        hint = HINT_LIST
    else:
        raise KitError(
            f"mathvista: problem {record_id(record)} has answer_type {answer_type!r} with precision {precision!r}, "
            "for which the official query construction has no hint"
        )
    question_text = f"Question: {record['question']}"
    if record.get("unit"):
        question_text += f" (Unit: {record['unit']})"
    elements = [hint, question_text]
    choices = record.get("choices")
    if choices:
        elements.append("\n".join(["Choices:"] + [f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices)]))
    return "\n".join(elements)


# -------------------------------------------------------------------------------------------- extraction
def create_test_prompt(query: str, response: str) -> str:
    """extract_answer.py ``create_test_prompt``: demo prompt, the query and the response, then the cue."""
    test_prompt = f"{query}\n\n{response}"
    return f"{DEMO_PROMPT.strip()}\n\n{test_prompt}\n\nExtracted answer: "


def extract(
    response: str,
    record: Mapping[str, Any],
    llm: Callable[[str], str] | None = None,
    quick_extract: bool = False,
) -> str | None:
    """extract_answer.py ``extract_answer``: ``""`` for an empty response; the response itself when it is
    one of the choices (multi_choice); ``str(int(response))`` / ``str(float(response))`` when the whole
    response parses as the answer type; with ``quick_extract`` the text of ``The answer is "..."``;
    otherwise the LLM extractor ``llm(prompt) -> str`` on the official five-example prompt (the query is
    ``build_prompt(record)``, as in the current official code which uses ``problem['query']``).

    With ``llm=None`` (rules only) a response no rule answers gives ``None``: the item has no answer and
    scores as wrong. As in the official code, an exception raised by ``llm`` is logged and gives ``""``."""
    if not isinstance(response, str):
        return None
    if response == "":
        return ""
    choices = record.get("choices") or []
    if record.get("question_type") == "multi_choice" and response in choices:
        return response
    answer_type = record.get("answer_type")
    if answer_type == "integer":
        try:
            return str(int(response))
        except (ValueError, TypeError, OverflowError):
            pass
    if answer_type == "float":
        try:
            return str(float(response))
        except (ValueError, TypeError, OverflowError):
            pass
    if quick_extract:
        match = re.search(r'The answer is "(.*)"\.', response)
        if match:
            return match.group(1)
    if llm is None:
        return None
    try:
        return str(llm(create_test_prompt(build_prompt(record), response)))
    except Exception as err:  # extract_answer.py: print the error and return ""
        logger.warning("mathvista: answer extraction failed for problem %s: %s", record_id(record), err)
        return ""


FINAL_ANSWER = re.compile(r"the answer is\s*:?\s*(.+?)\s*$", re.IGNORECASE)


def extract_final_answer(response: str) -> str | None:
    """The text after the last "The answer is", without a closing full stop or quotes."""
    if not isinstance(response, str):
        return None
    matches = [FINAL_ANSWER.search(line) for line in response.splitlines()]
    found = [m.group(1) for m in matches if m]
    if not found:
        return None
    answer = found[-1].strip().rstrip(".").strip().strip('"').strip()
    return answer or None


def extract_rules(response: str, record: Mapping[str, Any]) -> str | None:
    """Rules-only extraction, the tiny profile's: the official shortcuts of ``extract``, then the text of
    the final "The answer is X" line where the official code would ask an LLM. A documented deviation:
    without an LLM a reasoning response would otherwise always score as wrong."""
    extraction = extract(response, record, llm=None, quick_extract=True)
    if extraction is None:
        extraction = extract_final_answer(response)
    return extraction


def is_correct(extraction: Any, record: Mapping[str, Any], int_rule: str = "current") -> bool:
    """Normalise ``extraction`` as calculate_score.py does and compare it with the record's answer."""
    if extraction is None:
        return False
    prediction = normalize_extracted_answer(
        extraction, record.get("choices"), record["question_type"], record["answer_type"],
        record.get("precision"), int_rule=int_rule,
    )
    return prediction is not None and safe_equal(prediction, record["answer"])


def blind_choices(record: Mapping[str, Any], records: list[Mapping[str, Any]]) -> list[Any]:
    """What a guesser that neither sees the picture nor reads the question answers (``kit.eval.baselines``): one of
    the choices, or for a free-form item the most common gold answer among the free-form items of its answer type
    and precision (a majority baseline)."""
    if record["question_type"] == "multi_choice" and record.get("choices"):
        return list(record["choices"])
    kind = (record["answer_type"], record.get("precision"))
    return [_common.most_common(str(r["answer"]) for r in records if r["question_type"] != "multi_choice"
                                and (r["answer_type"], r.get("precision")) == kind)]


# ------------------------------------------------------------------------------------------------ scoring
def get_most_similar(prediction: str, choices: list[str]) -> str:
    """calculate_score.py ``get_most_similar``: the first choice at the least Levenshtein distance."""
    distances = [_common.levenshtein(prediction, str(choice)) for choice in choices]
    return choices[distances.index(min(distances))]


def normalize_extracted_answer(
    extraction: Any,
    choices: list[str] | None,
    question_type: str,
    answer_type: str,
    precision: Any,
    int_rule: str = "current",
) -> str | None:
    """calculate_score.py ``normalize_extracted_answer``. Multi-choice: a letter (or the first ``(X)``)
    becomes that choice's text, anything else the most similar choice. Integer: ``str(int(float(x)))``
    with ``int_rule="current"``; ``str(int(x))`` with ``"legacy"``, the rule of the older script that
    produced most released score files (so ``"2.0"`` fails). Float: ``str(round(float(x), int(precision)))``.
    List: ``str(x)``. Anything that does not convert gives ``None``."""
    if int_rule not in INT_RULES:
        raise KitError(f"mathvista: int_rule must be one of {', '.join(INT_RULES)}, got {int_rule!r}")
    if question_type == "multi_choice":
        if isinstance(extraction, str):
            extraction = extraction.strip()
        else:
            try:
                extraction = str(extraction)
            except Exception:
                extraction = ""
        if not choices:
            return None
        letter = re.findall(r"\(([a-zA-Z])\)", extraction)
        if letter:
            extraction = letter[0].upper()
        options = [chr(ord("A") + i) for i in range(len(choices))]
        if extraction in options:
            return choices[options.index(extraction)]
        return get_most_similar(extraction, choices)
    if answer_type == "integer":
        try:
            return str(int(extraction)) if int_rule == "legacy" else str(int(float(extraction)))
        except Exception:
            return None
    if answer_type == "float":
        try:
            return str(round(float(extraction), int(precision)))
        except Exception:
            return None
    if answer_type == "list":
        try:
            return str(extraction)
        except Exception:
            return None
    return None


def safe_equal(prediction: Any, answer: Any) -> bool:
    """calculate_score.py ``safe_equal``: plain ``==``, ``False`` when the comparison raises."""
    try:
        return bool(prediction == answer)
    except Exception:
        return False


def _answer_of(record: Mapping[str, Any]) -> tuple[Any, bool]:
    """The raw extraction to normalise and whether there is one: the official ``extraction`` field,
    else ``prediction`` (what ``extract`` returned), else the rule shortcuts on ``response``."""
    if "extraction" in record:
        return record["extraction"], record["extraction"] is not None
    if "prediction" in record:
        return record["prediction"], record["prediction"] is not None
    if "response" in record:
        extraction = extract(record["response"], record)
        return extraction, extraction is not None
    return None, False


def _percent(correct: int, total: int) -> float:
    return round(correct / total * 100, 2) if total else 0.0


def score(
    records: Iterable[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]],
    int_rule: str = "current",
    where: str = "mathvista records",
) -> dict:
    """Accuracy and the nine breakdowns of calculate_score.py over ``records`` (a list, or the official
    output mapping pid -> record). Each record holds the problem fields (``metadata`` included, the
    breakdowns use the labels stored there) and one of ``extraction`` (official), ``prediction`` (the
    return of ``extract``) or ``response`` (then the rule shortcuts run; no LLM). ``None`` means no
    answer and counts as wrong (the official code would turn a null multi-choice extraction into the
    choice nearest to ``"None"``). Accuracies are percentages rounded to 2 decimals, as the released
    score files print them; each breakdown value maps to ``{"accuracy", "correct", "total"}``, sorted by
    accuracy (highest first) like the official ``scores`` dict."""
    items = list(records.values()) if isinstance(records, Mapping) else list(records)
    if not items:
        raise KitError(f"{where}: no records to score")
    judged: list[tuple[Mapping[str, Any], bool]] = []
    for position, record in enumerate(items):
        rid = record_id(record) if isinstance(record, Mapping) else f"#{position}"
        _common.require_fields(record, SCORE_FIELDS, where, rid)
        _common.require_fields(record["metadata"], METADATA_KEYS, f"{where} (metadata)", rid)
        if record["question_type"] == "multi_choice" and not record["choices"]:
            raise KitError(f"{where}: record {rid} is multi_choice but has no choices")
        extraction, answered = _answer_of(record)
        if answered:
            prediction = normalize_extracted_answer(extraction, record["choices"], record["question_type"],
                                                    record["answer_type"], record["precision"], int_rule)
            correct = safe_equal(prediction, record["answer"])
        else:
            correct = False
        judged.append((record, correct))

    total = len(judged)
    correct_count = sum(1 for _, ok in judged if ok)
    result: dict[str, Any] = {
        "benchmark": NAME,
        "int_rule": int_rule,
        "correct": correct_count,
        "total": total,
        "accuracy": _percent(correct_count, total),
    }
    for key in BREAKDOWN_KEYS:
        counts: dict[Any, list[int]] = {}
        for record, ok in judged:
            value = record[key] if key in ("question_type", "answer_type") else record["metadata"][key]
            values = value if key == "skills" else [value]
            for item in values:
                try:
                    tally = counts.setdefault(item, [0, 0])
                except TypeError as err:
                    raise KitError(f"{where}: record {record_id(record)} has an unhashable {key} {item!r}") from err
                tally[0] += int(ok)
                tally[1] += 1
        breakdown = {
            str(value): {"accuracy": _percent(c, t), "correct": c, "total": t} for value, (c, t) in counts.items()
        }
        result[key] = dict(sorted(breakdown.items(), key=lambda item: item[1]["accuracy"], reverse=True))
    return result


def read_outputs(path: str | Path, *, int_rule: str = "current") -> Outputs:
    """The released output file of MathVista's ``generate_response.py``/``extract_answer.py``
    (``results/<model>/output_<model>.json``: pid -> record with the problem fields and ``extraction`` and/or
    ``response``; a list of such records is read too), for ``score(..., int_rule=int_rule)``. No LLM here: the
    stored ``extraction`` where present, else the rule shortcuts on ``response``; a stored ``prediction`` is
    dropped so that it is never mistaken for the official extraction."""
    path = Path(path)
    data = _common.read_json(path)
    if isinstance(data, Mapping):
        for pid, record in data.items():
            if isinstance(record, Mapping) and "pid" not in record:
                raise KitError(f"{path}: record {pid} lacks the field 'pid'")
        records = list(data.values())
    elif isinstance(data, list):
        records = data
    else:
        raise KitError(f"{path}: expected the MathVista output object (pid -> record), got {type(data).__name__}")
    cleaned = []
    for position, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise KitError(f"{path}: record #{position} is a {type(record).__name__}, expected a JSON object")
        item = {k: v for k, v in record.items() if k != "prediction"}
        if "extraction" not in item and "response" not in item:
            raise KitError(f"{path}: record {record_id(record)} has neither 'extraction' nor 'response'")
        cleaned.append(item)
    return Outputs(cleaned, str(path), {"int_rule": int_rule})


# ----------------------------------------------------------------------------------------- foreign formats
# lmms-eval (tasks/mathvista): ``doc`` is the AI4Math/MathVista row without ``decoded_image`` (pid, question,
# choices, unit, precision, answer, question_type, answer_type, metadata, query); ``process_results`` logs
# under its metric key (``llm_as_judge_eval``, formerly ``gpt_eval_score``) and ``submission`` a dict with the
# ``extraction`` that MathVista's LLM extractor (mathvista_evals.py ``extract_answer``) made of the response.
# VLMEvalKit (MathVista_MINI): columns index (the pid), question, answer (the choice text for multi_choice),
# answer_option, question_type, answer_type, choices (a Python list as text), precision, unit, task, skills
# (and whichever other metadata the TSV has); no extraction is stored in the prediction file.
FOREIGN_RULES = {
    "lmms-eval": "calculate_score.py normalisation and comparison; the extraction lmms-eval logged (MathVista's "
                 "LLM extractor) where present, else extract_answer.py's rule shortcuts on filtered_resps[0]",
    "vlmevalkit": "calculate_score.py normalisation and comparison on extract_answer.py's rule shortcuts "
                  "(no LLM) applied to the prediction column",
}


def _logged_extraction(sample: Mapping[str, Any]) -> tuple[bool, Any]:
    for key in ("llm_as_judge_eval", "gpt_eval_score", "submission", *sample):
        value = sample.get(key)
        if isinstance(value, Mapping) and "extraction" in value and "true_false" in value:
            return True, value["extraction"]
    return False, None


def from_lmms_eval(doc: Mapping[str, Any], response: str, sample: Mapping[str, Any], where: str) -> dict:
    """One lmms-eval sample as a record: the dataset row, ``response`` and the logged ``extraction``."""
    record = {k: v for k, v in doc.items() if k not in ("decoded_image", "prediction", "extraction")}
    record.setdefault("pid", str(sample.get("doc_id")))
    _common.require_fields(record, SCORE_FIELDS, where, record_id(record))
    record["response"] = response
    logged, extraction = _logged_extraction(sample)
    if logged:
        record["extraction"] = extraction
    return record


def from_vlmevalkit(row: Mapping[str, Any], where: str) -> dict:
    """One VLMEvalKit MathVista row as a record (metadata the TSV lacks is ``None``)."""
    from kit.eval.benchmarks import foreign

    question_type = str(foreign.cell(row, "question_type", where))
    choices = [str(c) for c in foreign.literal_list(row.get("choices"), where, "choices")]
    precision = row.get("precision")
    metadata = {key: row.get(key) for key in METADATA_KEYS}
    metadata["skills"] = [str(s) for s in foreign.literal_list(row.get("skills"), where, "skills")]
    return {
        "pid": str(foreign.cell(row, "index", where)),
        "question": row.get("question"),
        "choices": choices or None,
        "unit": row.get("unit"),
        "precision": float(precision) if precision is not None else None,
        "answer": str(foreign.cell(row, "answer", where)),
        "question_type": question_type,
        "answer_type": str(foreign.cell(row, "answer_type", where)),
        "metadata": metadata,
        "response": foreign.prediction(row),
    }


def foreign_options(fmt: str, records: list[dict], *, int_rule: str = "current") -> dict:
    return {"int_rule": int_rule}


def foreign_rules(fmt: str, records: list[Mapping[str, Any]]) -> dict:
    """The rules, and how many answers came from the logged extraction and how many from the rule shortcuts."""
    logged = sum(1 for r in records if "extraction" in r)
    return {"scoring": FOREIGN_RULES[fmt],
            "extraction": {"logged_llm_extraction": logged, "rule_shortcuts": len(records) - logged}}
