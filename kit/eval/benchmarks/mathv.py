"""MATH-Vision (MATH-V): test (3040 problems) and testmini (304). Rule-based, no LLM.

Rules follow the official code of mathllm/MATH-V:

- ``evaluation/evaluate.py``: ``evaluate`` (answer extraction from ``response`` with ``regen_answer``,
  and ``correct = is_equal(gt, answer) or is_equal(gt_option_text, answer)``) and
  ``math_level_subject_acc`` (the ``-all``, ``-level<l>``, ``<subject>``, ``<subject>_level<l>`` and
  ``-level<l>_<subject>`` tallies, printed as ``"c/t=p%"`` with ``p = round(c / max(t, 1) * 100, 2)``);
- ``evaluation/utils.py``: ``is_number``, ``eval_tuple``, ``is_equal``, ``find_math_answer``,
  ``_strip_string``, ``_fix_fracs``, ``_fix_a_slash_b``, ``_fix_sqrt``, ``_remove_right_units``;
- ``models/Qwen-VL.py``: ``geninput``, the step-by-step ``\\boxed{}`` prompt (options listed unless they
  are just ``A``-``E``).

``is_equal`` parses LaTeX with ``latex2sympy`` from the ``latex2sympy2`` package (the one the
official utils import) and compares values rounded to 2 decimals. Two deliberate differences, neither
of which changes a released result: the official ``eval`` of the printed sympy expression runs with
the module's globals (all of Python's builtins, ``os``, ...); here the expression is evaluated by a
small interpreter that knows only arithmetic and the names of the ``math`` module (what
``from math import *`` gives the official code), and that refuses integer powers and factorials with
more than 100000 digits (the official code would spend minutes computing them, then compare).
Such inputs count as "not equal".

On-disk layout (official ``data/``): ``<root>/test.jsonl`` and ``<root>/testmini.jsonl``, one problem
per line with ``image`` relative to ``<root>`` (``images/<id>.png`` in the tiny world). Hub copy:
``MathLLMs/MathVision``, splits ``test``/``testmini``, columns ``id, question, options, image,
decoded_image, answer, solution, level, subject``.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kit.core.paths import is_hub_id
from kit.errors import KitError
from kit.eval.benchmarks import Metric, Outputs, _common

NAME = "mathv"
HUB_ID = "MathLLMs/MathVision"
SPLITS = ("test", "testmini")
DEFAULT_SPLIT = "test"
TITLE = "MATH-V"  # the benchmark's name as the papers write it
# The numbers the papers' tables report (kit.eval.evaluate.metrics_table's columns, in this order).
HEADLINES = (Metric("MATH-V", ("accuracy",)),)
# The one column that stands for the benchmark where a single number per benchmark is needed (EACO's
# "average over benchmarks"): accuracy.
HEADLINE_METRIC = "MATH-V"
PROBLEM_FIELDS = ("id", "question", "options", "answer", "level", "subject", "image")
SCORE_FIELDS = ("id", "options", "answer", "level", "subject")

# models/Qwen-VL.py geninput (the chain-of-thought prompt of the released CoT runs).
PROMPT_PREFIX = (
    'Please solve the problem step by step and put your answer in one "\\boxed{}". '
    'If it is a multiple choice question, only one letter is allowed in the "\\boxed{}".\n'
)


def record_id(record: Mapping[str, Any]) -> str:
    return str(record.get("id", "?"))


# ----------------------------------------------------------------------------------------------- loading
def load(
    source: str | Path,
    split: str = DEFAULT_SPLIT,
    limit: int | None = None,
    check_images: bool = True,
    cache_dir: Path | None = None,
) -> list[dict]:
    """Problems of ``split`` (``test`` or ``testmini``) from a local folder (``<source>/<split>.jsonl``)
    or the hub id ``MathLLMs/MathVision``; each record keeps the official fields and adds
    ``image_path`` (absolute). Missing files or fields raise ``KitError`` naming the file and the id."""
    if split not in SPLITS:
        raise KitError(f"mathv: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if is_hub_id(source):
        return _load_hub(str(source), split, limit, cache_dir)
    root = _common.local_root(source, NAME, HUB_ID)
    path = root / f"{split}.jsonl"
    records = []
    for line_no, problem in enumerate(_common.read_jsonl(path), 1):
        rid = str(problem.get("id", f"at line {line_no}"))
        _common.require_fields(problem, PROBLEM_FIELDS, path, rid)
        _check_problem(problem, path, rid)
        record = dict(problem)
        record["image_path"] = _common.resolve_image(root, problem["image"], path, rid, check_images)
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return _common.limited(records, limit)


def _check_problem(problem: Mapping[str, Any], where: str | Path, rid: str) -> None:
    options = problem["options"]
    if not isinstance(options, list):
        raise KitError(f"{where}: record {rid} has options {options!r}, expected a list")
    if options:
        answer = str(problem["answer"])
        if len(answer) != 1 or not 0 <= ord(answer) - ord("A") < len(options):
            raise KitError(f"{where}: record {rid} has answer {answer!r}, expected a letter among its options")


def _load_hub(source: str, split: str, limit: int | None, cache_dir: Path | None) -> list[dict]:
    records = []
    for row in _common.hub_rows(source, split, NAME):
        record = {key: value for key, value in row.items() if key != "decoded_image"}
        rid = str(record.get("id", "?"))
        _common.require_fields(record, PROBLEM_FIELDS, f"{source}[{split}]", rid)
        _check_problem(record, f"{source}[{split}]", rid)
        record["image_path"] = _common.cache_image(row.get("decoded_image"), source, split, rid, cache_dir)
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return _common.limited(records, limit)


# ------------------------------------------------------------------------------------------------ prompt
def build_prompt(record: Mapping[str, Any]) -> str:
    """models/Qwen-VL.py ``geninput``: the boxed-answer instruction, the question, and the options as
    ``(A) ...`` lines unless the options are just the letters ``A``-``E`` (then they are in the image)."""
    options = record.get("options") or []
    options_text = ""
    if options and "".join(str(o) for o in options) != "ABCDE":
        options_text = "".join(f"({chr(ord('A') + i)}) {option}\n" for i, option in enumerate(options))
    return PROMPT_PREFIX + f"{record['question']}\n{options_text}"


# -------------------------------------------------------------------------------------------- extraction
def is_number(text: str) -> bool:
    """utils.py ``is_number``."""
    try:
        float(text)
        return True
    except (ValueError, OverflowError):
        return False


def _fix_fracs(string: str) -> str:
    """utils.py ``_fix_fracs``."""
    substrs = string.split("\\frac")
    new_str = substrs[0]
    if len(substrs) > 1:
        for substr in substrs[1:]:
            new_str += "\\frac"
            if len(substr) > 0 and substr[0] == "{":
                new_str += substr
            else:
                if len(substr) < 2:
                    return string
                a, b = substr[0], substr[1]
                if b != "{":
                    new_str += "{" + a + "}{" + b + "}" + substr[2:]
                else:
                    new_str += "{" + a + "}" + b + substr[2:]
    return new_str


def _fix_a_slash_b(string: str) -> str:
    """utils.py ``_fix_a_slash_b``: ``"3/4"`` -> ``"\\frac{3}{4}"`` for plain integers only."""
    if len(string.split("/")) != 2:
        return string
    a_text, b_text = string.split("/")
    try:
        a, b = int(a_text), int(b_text)
    except (ValueError, OverflowError):
        return string
    if string != f"{a}/{b}":
        return string
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _remove_right_units(string: str) -> str:
    """utils.py ``_remove_right_units``."""
    return string.split("\\text{ ")[0]


def _fix_sqrt(string: str) -> str:
    """utils.py ``_fix_sqrt``."""
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        if len(split) > 0 and split[0] != "{":
            new_string += "\\sqrt{" + split[0] + "}" + split[1:]
        else:
            new_string += "\\sqrt" + split
    return new_string


def _strip_string(string: str) -> str:
    """utils.py ``_strip_string`` (note the official order: fractions are only fixed when the string
    contains ``sqrt``)."""
    string = string.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "").replace("$", "")
    string = _remove_right_units(string)
    string = string.replace("\\%", "").replace("\\%", "")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if len(string) == 0:
        return string
    if string[0] == ".":
        string = "0" + string
    if len(string.split("=")) == 2:
        string = string.split("=")[-1]
    if len(string.split("\\approx")) == 2:
        string = string.split("\\approx")[-1]
    if "sqrt" in string:
        string = _fix_sqrt(string)
    string = string.replace(" ", "")
    if "sqrt" in string:
        string = _fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return _fix_a_slash_b(string)


_BOXED = re.compile("oxed{(.*)}", flags=re.S)


def find_math_answer(text: str) -> str:
    """utils.py ``find_math_answer``: lower-case, take the last ``oxed{...}`` (greedy, as official),
    cut at an unmatched ``}``, keep what follows ``=``/``\\approx``, drop LaTeX formatting and units,
    then ``_strip_string``."""
    s = text.lower()
    if "{}" in s:
        s = s.replace("{}", "")
    found = _BOXED.findall(s)
    ans = found[-1] if found else s
    if ans.find("}") != -1 and (ans.find("{") == -1 or ans.find("}") < ans.find("{")):
        ans = ans.split("}")[0]
    ans = ans.split("=")[-1]
    ans = ans.split("\\approx")[-1]
    ans = ans.replace(" ", "").replace("\\,", "").replace("∞", "\\infty")
    ans = ans.replace("+\\infty", "\\infty").replace("\\\\", "\\").replace("\n", "")
    ans = ans.replace("\\text", "").replace("\\mbox", "").replace("bmatrix", "pmatrix")
    ans = ans.replace("\\left", "").replace("\\right", "").replace("^{\\circ}", "")
    ans = ans.replace("^\\circ", "").replace("{m}^3", "").replace("m^3", "")
    ans = ans.replace("{units}", "").replace("units", "").replace("{km}", "").replace("km", "")
    return _strip_string(ans)


_FLAGS = ("the final answer is", "the answer is", "the correct answer is", "the answer should be")


def extract(response: str, record: Mapping[str, Any] | None = None) -> str:
    """evaluate.py ``evaluate`` (the ``regen_answer`` branch): a response ending in `` X.``/`` (X).``
    or starting with ``X\\n``/``(X)\\n``/``(X) X\\n`` becomes the letter; a number after the last
    ``is `` is taken; without ``\\boxed`` the text after "the (final|correct) answer is/should be"
    (first line, first sentence); with several boxes the last one; then ``find_math_answer`` and the
    official clean-up of ``(a)``/``{a}`` letters. Always returns a string (possibly empty)."""
    if not isinstance(response, str):
        return ""
    model_answer = response.strip()
    for c in "ABCDE":
        if (model_answer.endswith(f" {c}.") or model_answer.endswith(f" ({c}).") or model_answer.startswith(f"{c}\n")
                or model_answer.startswith(f"({c})\n") or model_answer.startswith(f"({c}) {c}\n")):
            model_answer = c
    if is_number(model_answer.split("is ")[-1].rstrip(".")):
        model_answer = model_answer.split("is ")[-1].rstrip(".")
    if "oxed{" not in model_answer:
        for flag in _FLAGS:
            raw_model_answer = model_answer
            model_answer = model_answer.split(flag)[-1].strip()
            if flag in raw_model_answer:
                model_answer = model_answer.split("\n")[0].split(". ")[0]
            flag = flag.replace("the", "The")
            raw_model_answer = model_answer
            model_answer = model_answer.split(flag)[-1].strip()
            if flag in raw_model_answer:
                model_answer = model_answer.split("\n")[0].split(". ")[0]
    elif model_answer.count("oxed{") > 1:
        model_answer = "\\boxed{" + model_answer.split("oxed{")[-1]
    model_answer = find_math_answer(model_answer)
    for letter in "abcde":
        model_answer = model_answer.replace(f"({letter})", letter)
    for letter in "abcde":
        model_answer = model_answer.replace("{" + letter + "}", letter)
    return model_answer.rstrip(".").lstrip(":").strip()


# ------------------------------------------------------------------------------------------ equivalence
_MATH_NAMES = {name: getattr(math, name) for name in dir(math) if not name.startswith("_")}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_MAX_DIGITS = 100_000


def _evaluate(node: ast.AST) -> Any:
    """The arithmetic subset of Python that ``str()`` of a sympy expression uses, with ``math`` names."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in _MATH_NAMES:
            raise NameError(node.id)
        return _MATH_NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if (isinstance(node.op, ast.Pow) and isinstance(left, int) and isinstance(right, int) and abs(left) > 1
                and right > 0 and right * math.log10(abs(left)) > _MAX_DIGITS):
            raise OverflowError("integer power too large")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        function = _evaluate(node.func)
        args = [_evaluate(arg) for arg in node.args]
        if function is math.factorial and args and isinstance(args[0], int) and args[0] > 25_000:
            raise OverflowError("factorial too large")
        return function(*args)
    if isinstance(node, ast.Tuple | ast.List):
        return [_evaluate(element) for element in node.elts]
    raise ValueError(f"unsupported expression node {type(node).__name__}")


@functools.lru_cache(maxsize=65536)
def _latex_round2(text: str) -> tuple[bool, Any]:
    """``round(eval(str(latex2sympy(text))), 2)`` as ``(True, value)``, or ``(False, None)`` when any
    step fails (the official code catches every exception there). Cached: it is a pure function of
    ``text`` and latex2sympy is slow."""
    from latex2sympy2 import latex2sympy

    try:
        expression = str(latex2sympy(text))
        return True, round(_evaluate(ast.parse(expression, mode="eval")), 2)
    except Exception:
        return False, None


def eval_tuple(s: str) -> str:
    """utils.py ``eval_tuple``: ``"(a,b)"``/``"[a,b]"`` with every element evaluated and rounded."""
    sl = s[1:-1].split(",")
    try:
        if (s[0] == "(" and s[-1] == ")" or s[0] == "[" and s[-1] == "]") and len(sl) > 1:
            parts = []
            for sub in sl:
                if "infty" not in sub and sub not in ["a", "-a"]:
                    ok, value = _latex_round2(sub)
                    if not ok:
                        return s
                    parts.append(str(value))
                else:
                    parts.append(sub)
            return f"{s[0]}{','.join(parts)}{s[-1]}"
    except Exception:
        return s
    return s


@functools.lru_cache(maxsize=65536)
def is_equal(asw: str, gt_asw: str) -> bool:
    """utils.py ``is_equal``: case-insensitive exact match, then tuple-wise match after ``eval_tuple``,
    then the latex2sympy values rounded to 2 decimals."""
    asw = asw.lower()
    gt_asw = gt_asw.lower()
    if asw.replace(" ", "") == "" or gt_asw.replace(" ", "") == "":
        return False
    if gt_asw.strip() == asw.strip():
        return True
    asw = eval_tuple(asw)
    gt_asw = eval_tuple(gt_asw)
    if gt_asw == asw:
        return True
    ok_gt, value_gt = _latex_round2(gt_asw)
    if not ok_gt:
        return False
    ok, value = _latex_round2(asw)
    if not ok:
        return False
    try:
        return bool(value_gt == value)
    except Exception:
        return False


def is_correct(model_answer: str, record: Mapping[str, Any]) -> bool:
    """evaluate.py: ``is_equal(gt, answer) or is_equal(gt_option_text, answer)`` where the option text
    is ``options[ord(gt) - ord('A')]`` for multiple choice and ``''`` otherwise."""
    gt_answer = str(record["answer"])
    options = record.get("options") or []
    gt_value = str(options[ord(gt_answer) - ord("A")]) if options else ""
    return is_equal(gt_answer, model_answer) or is_equal(gt_value, model_answer)


def blind_choices(record: Mapping[str, Any], records: list[Mapping[str, Any]]) -> list[Any]:
    """What a guesser that neither sees the picture nor reads the question answers (``kit.eval.baselines``): one of
    the option letters, or for a free-form item the most common gold answer of the free-form items (a majority
    baseline)."""
    if record.get("options"):
        return [chr(ord("A") + i) for i in range(len(record["options"]))]
    return [_common.most_common(str(r["answer"]) for r in records if not r.get("options"))]


# ------------------------------------------------------------------------------------------------ scoring
def _tally(correct: int, total: int) -> dict:
    return {"accuracy": round(correct / max(total, 1) * 100, 2), "correct": correct, "total": total}


def score(
    records: Iterable[Mapping[str, Any]],
    gt: Mapping[str, Mapping[str, Any]] | None = None,
    where: str = "mathv records",
) -> dict:
    """Accuracy overall, by level, by subject and by subject and level (evaluate.py
    ``math_level_subject_acc``). Each record holds ``id`` and either ``prediction`` (the return of
    ``extract``) or ``response`` (re-extracted, as the official script does). The problem fields
    (``answer``, ``options``, ``level``, ``subject``) come from the record itself or, when ``gt`` (id ->
    problem) is given, from ``gt``. ``official`` reproduces the released ``*_result.json`` strings."""
    items = list(records)
    if not items:
        raise KitError(f"{where}: no records to score")
    tallies: dict[str, list[int]] = {}
    total_correct = 0
    for position, record in enumerate(items):
        rid = record_id(record) if isinstance(record, Mapping) else f"#{position}"
        _common.require_fields(record, ("id",), where, rid)
        if gt is not None:
            if rid not in gt:
                raise KitError(f"{where}: record {rid} has no problem with that id in the ground truth")
            problem = gt[rid]
        else:
            problem = record
        _common.require_fields(problem, SCORE_FIELDS, where, rid)
        _check_problem(problem, where, rid)
        if "prediction" in record:
            model_answer = record["prediction"]
        elif "response" in record:
            model_answer = extract(record["response"], problem)
        else:
            raise KitError(f"{where}: record {rid} has neither 'prediction' nor 'response'")
        correct = isinstance(model_answer, str) and is_correct(model_answer, problem)
        total_correct += int(correct)
        level, subject = problem["level"], problem["subject"]
        for key in ("-all", f"-level{level}", f"{subject}", f"{subject}_level{level}", f"-level{level}_{subject}"):
            tally = tallies.setdefault(key, [0, 0])
            tally[0] += int(correct)
            tally[1] += 1
    official = {
        key: f"{c}/{t}={round(c / max(t, 1) * 100, 2)}%" if t else f"{c}/{t}=0"
        for key, (c, t) in sorted(tallies.items())
    }
    by_level = {key[len("-level"):]: _tally(*value) for key, value in tallies.items()
                if key.startswith("-level") and "_" not in key}
    subjects = {str(p["subject"]) for p in ((gt[record_id(r)] if gt is not None else r) for r in items)}
    by_subject = {key: _tally(*value) for key, value in tallies.items() if key in subjects}
    by_subject_level = {key: _tally(*value) for key, value in tallies.items()
                        if not key.startswith("-") and key not in subjects}
    return {
        "benchmark": NAME,
        "correct": total_correct,
        "total": len(items),
        "accuracy": round(total_correct / len(items) * 100, 2),
        "by_level": dict(sorted(by_level.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0)),
        "by_subject": dict(sorted(by_subject.items())),
        "by_subject_level": dict(sorted(by_subject_level.items())),
        "official": official,
    }


def read_outputs(path: str | Path, *, gt: str | Path) -> Outputs:
    """A released MATH-V output file (JSON lines ``{'id', 'response', ...}``) and the problems ``gt``
    (``data/test.jsonl`` or ``data/testmini.jsonl``), for ``score(..., gt=<id -> problem>)``. Every response
    is extracted again, as the official ``evaluate(..., True)`` does."""
    path, gt_path = Path(path), Path(gt)
    problems: dict[str, dict] = {}
    for line_no, problem in enumerate(_common.read_jsonl(gt_path), 1):
        _common.require_fields(problem, ("id",), gt_path, f"at line {line_no}")
        rid = str(problem["id"])
        if rid in problems:
            raise KitError(f"{gt_path}, line {line_no}: id {rid} appears twice")
        problems[rid] = problem
    records = []
    for line_no, output in enumerate(_common.read_jsonl(path), 1):
        rid = str(output.get("id", f"at line {line_no}"))
        _common.require_fields(output, ("id", "response"), path, rid)
        if not isinstance(output["response"], str):
            raise KitError(f"{path}: record {rid} has a response of type {type(output['response']).__name__}")
        records.append({"id": rid, "response": output["response"]})
    return Outputs(records, str(path), {"gt": problems})


# ----------------------------------------------------------------------------------------- foreign formats
# lmms-eval (tasks/mathvision): ``doc`` is the MathLLMs/MathVision row without ``decoded_image`` (id, question,
# options, answer, solution, level, subject). VLMEvalKit (MathVision, MathVision_MINI): columns index, question,
# answer (a letter for multiple choice), choices (a Python list as text), category (the subject) and, where the
# TSV has it, level.
FOREIGN_RULES = {
    "lmms-eval": "evaluate.py (answer extraction from filtered_resps[0], is_equal on the answer or its option "
                 "text), math_level_subject_acc",
    "vlmevalkit": "evaluate.py (answer extraction from the prediction column, is_equal on the answer or its "
                  "option text), math_level_subject_acc (level 'unknown' where the file has no level column)",
}


def from_lmms_eval(doc: Mapping[str, Any], response: str, sample: Mapping[str, Any], where: str) -> dict:
    record = {key: doc[key] for key in ("id", *SCORE_FIELDS) if key in doc}
    _common.require_fields(record, ("id", *SCORE_FIELDS), where, record_id(record))
    record["id"] = str(record["id"])
    _check_problem(record, where, record["id"])
    record["response"] = response
    return record


def from_vlmevalkit(row: Mapping[str, Any], where: str) -> dict:
    from kit.eval.benchmarks import foreign

    record = {"id": str(foreign.cell(row, "index", where)),
              "options": [str(o) for o in foreign.literal_list(row.get("choices"), where, "choices")],
              "answer": str(foreign.cell(row, "answer", where)), "level": row.get("level") or "unknown",
              "subject": str(row.get("subject") or foreign.cell(row, "category", where))}
    if isinstance(record["level"], float) and record["level"] == int(record["level"]):
        record["level"] = int(record["level"])
    _check_problem(record, where, record["id"])
    record["response"] = foreign.prediction(row)
    return record
