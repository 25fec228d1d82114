"""We-Math testmini: 1740 rows = 525 composite problems (360 two-step, 165 three-step), each with its
one-step sub-problems (``key`` = ``<k>steps_<i>``) and the composite problem (``<k>steps_multi``).

Rules follow the official code of We-Math/We-Math:

- ``evaluation/four_dimensional_metrics.py``: ``load_and_process_data`` (the answer is the first
  character of ``response.split('Answer')[-1]`` after stripping and removing ``> < : .``, kept only if it
  is one of ``ABCDEFGH``; ``joker = answer == gt``), ``process_steps_data`` (left-join of the step rows
  and the composite row on ``ID``), ``calculate_metrics`` (IK, IG, CM, RM in strict and loose form),
  ``compute_final_scores`` (rates over the number of composite problems, RM rate = RM / (CM + RM)) and
  ``update_main_results_df`` (score = (N - 0.5 IG - RM - IK) / N, which equals (CM + 0.5 IG) / N because
  the four classes partition the problems);
- ``evaluation/accuracy.py``: ``update_main_results_df`` (S1 = accuracy over the one-step rows of the
  merged tables, S2/S3 = accuracy of the two-/three-step composite problems).

The official scripts hard-code N = 525; here N is the number of composite problems present (525 on
the real testmini), so the tiny world's smaller set scores on the same scale. An RM rate with
CM + RM = 0 is ``None`` (the official code divides by zero).

Prompt: the We-Math input prompt without knowledge concepts (README, "Step 1. Create your input
prompt"): the instruction "Now, we require you to solve a multiple-choice math question. ...", the
question and options, and the answer template "<Thought process>: <<your thought process>> <Answer>:
<<your option>>" that the answer rule above parses (the same template string that VLMEvalKit's
``build_mpo_prompt`` strips from We-Math questions).

On-disk layout (official ``data/testmini.json``): ``<root>/testmini.json``, a list of rows whose
``image_path`` is relative to ``<root>``. Hub copy: ``We-Math/We-Math``, split ``testmini``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kit.core.paths import is_hub_id
from kit.errors import KitError
from kit.eval.benchmarks import Metric, Outputs, _common

NAME = "wemath"
HUB_ID = "We-Math/We-Math"
SPLITS = ("testmini",)
DEFAULT_SPLIT = "testmini"
TITLE = "We-Math"  # the benchmark's name as the papers write it
# The numbers the papers' tables report (kit.eval.evaluate.metrics_table's columns, in this order).
HEADLINES = (Metric("We-Math strict", ("strict", "score")), Metric("We-Math loose", ("loose", "score")))
# The one column that stands for the benchmark where a single number per benchmark is needed (EACO's
# "average over benchmarks"): We-Math ranks models by the strict score.
HEADLINE_METRIC = "We-Math strict"
ROW_FIELDS = ("ID", "key", "question", "option", "answer", "image_path")
SCORE_FIELDS = ("ID", "key", "answer")
_KEY = re.compile(r"^([23])steps_(1|2|3|multi)$")

PROMPT_TEMPLATE = (
    "Now, we require you to solve a multiple-choice math question. Please briefly describe your thought process "
    "and provide the final answer(option).\n"
    "Question: {question}\n"
    "Option: {option}\n"
    "Regarding the format, please answer following the template below, and be sure to include two <> symbols:\n"
    "<Thought process>: <<your thought process>> <Answer>: <<your option>>"
)


def record_id(record: Mapping[str, Any]) -> str:
    return f"{record.get('ID', '?')}/{record.get('key', '?')}"


# ----------------------------------------------------------------------------------------------- loading
def load(
    source: str | Path,
    split: str = DEFAULT_SPLIT,
    limit: int | None = None,
    check_images: bool = True,
    cache_dir: Path | None = None,
) -> list[dict]:
    """Rows of ``split`` from a local folder (``<source>/<split>.json``) or the hub id ``We-Math/We-Math``.
    Each record keeps the official fields; ``image_path`` becomes the absolute path (the official
    relative value is kept as ``image``). Missing files or fields raise ``KitError`` naming the file and
    the row (``ID/key``)."""
    if is_hub_id(source):
        return _load_hub(str(source), split, limit, cache_dir)
    root = _common.local_root(source, NAME, HUB_ID)
    path = root / f"{split}.json"
    data = _common.read_json(path)
    if not isinstance(data, list):
        raise KitError(f"{path}: expected a list of rows, got {type(data).__name__}")
    records = []
    for position, row in enumerate(data):
        rid = record_id(row) if isinstance(row, Mapping) else f"#{position}"
        _common.require_fields(row, ROW_FIELDS, path, rid)
        _check_row(row, path, rid)
        record = dict(row)
        record["image"] = row["image_path"]
        record["image_path"] = _common.resolve_image(root, row["image_path"], path, rid, check_images)
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return _common.limited(records, limit)


def _check_row(row: Mapping[str, Any], where: str | Path, rid: str) -> None:
    if not isinstance(row["key"], str) or not _KEY.match(row["key"]):
        raise KitError(f"{where}: row {rid} has key {row['key']!r}, expected '<2|3>steps_<1|2|3|multi>'")


def _load_hub(source: str, split: str, limit: int | None, cache_dir: Path | None) -> list[dict]:
    records = []
    for row in _common.hub_rows(source, split, NAME):
        record = dict(row)
        rid = record_id(record)
        _common.require_fields(record, ROW_FIELDS, f"{source}[{split}]", rid)
        _check_row(record, f"{source}[{split}]", rid)
        image = record.pop("image_path")
        record["image"] = image if isinstance(image, str) else None
        record["image_path"] = _common.cache_image(image, source, split, f"{record['ID']}__{record['key']}", cache_dir)
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return _common.limited(records, limit)


# ------------------------------------------------------------------------------------------------ prompt
def build_prompt(record: Mapping[str, Any]) -> str:
    """The official input prompt (without knowledge concepts) for one row."""
    return PROMPT_TEMPLATE.format(question=record["question"], option=record["option"])


# -------------------------------------------------------------------------------------------- extraction
_STRIPPED = re.compile(r"[>><<:.]")


def extract(response: str, record: Mapping[str, Any] | None = None) -> str | None:
    """four_dimensional_metrics.py ``load_and_process_data``: take the text after the last ``Answer``,
    strip it, delete every ``>``, ``<``, ``:`` and ``.``, strip again, and return its first character
    if that is one of ``A``-``H`` (case-sensitive), else ``None``."""
    if not isinstance(response, str):
        return None
    text = _STRIPPED.sub("", response.split("Answer")[-1].strip()).strip()
    return text[0] if text and text[0] in "ABCDEFGH" else None


def is_correct(prediction: str | None, record: Mapping[str, Any]) -> bool:
    """One row's ``joker`` of four_dimensional_metrics.py: the extracted letter equals the gold one."""
    return prediction == record["answer"]


def blind_choices(record: Mapping[str, Any], records: list[Mapping[str, Any]]) -> list[Any]:
    """What a guesser that neither sees the picture nor reads the question answers (``kit.eval.baselines``): one of
    the option letters the question lists (``"A. ...; B. ..."``)."""
    letters = re.findall(r"(?:^|;)\s*([A-H])\.", str(record.get("option", "")))
    return letters or ["A"]


# ------------------------------------------------------------------------------------------------ scoring
def _merged(rows: list[dict], steps: int) -> list[dict[str, bool | None]]:
    """process_steps_data: rows of ``<steps>steps_1`` left-joined on ``ID`` with those of each further
    step and of the composite problem. A missing partner gives ``None`` (pandas' NaN): it is neither
    ``== True`` nor ``== False`` in the metrics and is skipped by the means."""
    by_key: dict[str, dict[Any, list[bool]]] = {}
    for row in rows:
        by_key.setdefault(row["key"], {}).setdefault(row["ID"], []).append(row["joker"])
    merged: list[dict[str, bool | None]] = []
    first = f"{steps}steps_1"
    for row in (r for r in rows if r["key"] == first):
        partial = [{"joker_1": row["joker"]}]
        for suffix in [str(i) for i in range(2, steps + 1)] + ["multi"]:
            partners = by_key.get(f"{steps}steps_{suffix}", {}).get(row["ID"], [None])
            partial = [{**p, f"joker_{suffix}": j} for p in partial for j in partners]
        merged.extend(partial)
    return merged


def _mean(values: list[bool | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _pct(value: float | None) -> float | None:
    return None if value is None else round(value * 100, 2)


def score(records: Iterable[Mapping[str, Any]], where: str = "wemath records") -> dict:
    """The four-dimensional metrics (strict and loose) and S1/S2/S3 of the official scripts. Each
    record holds ``ID``, ``key``, ``answer`` and either ``prediction`` (the return of ``extract``) or
    ``response``. Rates and scores are percentages rounded to 2 decimals (the official scripts print
    them with ``{:.2%}``); ``counts`` gives the numbers of problems behind them."""
    rows: list[dict] = []
    for position, record in enumerate(records):
        rid = record_id(record) if isinstance(record, Mapping) else f"#{position}"
        _common.require_fields(record, SCORE_FIELDS, where, rid)
        _check_row(record, where, rid)
        if "prediction" in record:
            answer = record["prediction"]
        elif "response" in record:
            answer = extract(record["response"], record)
        else:
            raise KitError(f"{where}: row {rid} has neither 'prediction' nor 'response'")
        rows.append({"ID": record["ID"], "key": record["key"], "joker": answer == record["answer"]})
    if not rows:
        raise KitError(f"{where}: no records to score")
    two = _merged(rows, 2)
    three = _merged(rows, 3)
    problems = len(two) + len(three)
    if problems == 0:
        raise KitError(f"{where}: no composite problem (no row with key 2steps_1 or 3steps_1)")

    counts = {"IG": 0, "IK": 0, "CM_loose": 0, "CM_strict": 0, "RM_loose": 0, "RM_strict": 0}
    for steps, merged in ((2, two), (3, three)):
        for m in merged:
            step_jokers = [m[f"joker_{i}"] for i in range(1, steps + 1)]
            multi = m["joker_multi"]
            all_true = all(j is True for j in step_jokers)
            any_true = any(j is True for j in step_jokers)
            all_false = all(j is False for j in step_jokers)
            any_false = any(j is False for j in step_jokers)
            if multi is True:
                counts["RM_loose"] += all_false
                counts["RM_strict"] += any_false
                counts["CM_loose"] += any_true
                counts["CM_strict"] += all_true
            elif multi is False:
                counts["IG"] += all_true
                counts["IK"] += any_false

    def dimension(mode: str) -> dict:
        cm, rm = counts[f"CM_{mode}"], counts[f"RM_{mode}"]
        return {
            "IK": _pct(counts["IK"] / problems),
            "IG": _pct(counts["IG"] / problems),
            "CM": _pct(cm / problems),
            "RM": _pct(rm / problems),
            "rm_rate": _pct(rm / (cm + rm)) if cm + rm else None,
            "score": _pct((problems - 0.5 * counts["IG"] - rm - counts["IK"]) / problems),
            "counts": {"IK": counts["IK"], "IG": counts["IG"], "CM": cm, "RM": rm},
        }

    one_step = [m[f"joker_{i}"] for steps, merged in ((2, two), (3, three)) for m in merged
                for i in range(1, steps + 1)]
    return {
        "benchmark": NAME,
        "rows": len(rows),
        "problems": problems,
        "two_step_problems": len(two),
        "three_step_problems": len(three),
        "strict": dimension("strict"),
        "loose": dimension("loose"),
        "S1": _pct(_mean(one_step)),
        "S2": _pct(_mean([m["joker_multi"] for m in two])),
        "S3": _pct(_mean([m["joker_multi"] for m in three])),
    }


def read_outputs(path: str | Path) -> Outputs:
    """The testmini rows (``testmini.json``) each with the model's ``response``, as We-Math's evaluation
    reads them; a stored ``prediction`` is dropped, so every response is extracted again."""
    path = Path(path)
    data = _common.read_json(path)
    if not isinstance(data, list):
        raise KitError(f"{path}: expected a list of testmini rows with 'response', got {type(data).__name__}")
    rows = []
    for position, row in enumerate(data):
        rid = record_id(row) if isinstance(row, Mapping) else f"#{position}"
        _common.require_fields(row, SCORE_FIELDS + ("response",), path, rid)
        if not isinstance(row["response"], str):
            raise KitError(f"{path}: row {rid} has a response of type {type(row['response']).__name__}")
        rows.append({k: v for k, v in row.items() if k != "prediction"})
    return Outputs(rows, str(path))


# ----------------------------------------------------------------------------------------- foreign formats
# lmms-eval (tasks/wemath, wemath_testmini_thinking): ``doc`` is the We-Math/We-Math testmini row (ID, key,
# question, option, answer, ...). VLMEvalKit (WeMath): columns index, ID, key, question, answer and the options;
# its wemath.py reads the prediction column with the same "Answer" rule.
FOREIGN_RULES = {
    "lmms-eval": "four_dimensional_metrics.py (the first letter after the last 'Answer') on filtered_resps[0]; "
                 "accuracy.py S1/S2/S3",
    "vlmevalkit": "four_dimensional_metrics.py (the first letter after the last 'Answer') on the prediction "
                  "column; accuracy.py S1/S2/S3",
}


def from_lmms_eval(doc: Mapping[str, Any], response: str, sample: Mapping[str, Any], where: str) -> dict:
    _common.require_fields(doc, SCORE_FIELDS, where, record_id(doc))
    return {"ID": doc["ID"], "key": doc["key"], "answer": doc["answer"], "response": response}


def from_vlmevalkit(row: Mapping[str, Any], where: str) -> dict:
    from kit.eval.benchmarks import foreign

    return {"ID": str(foreign.cell(row, "ID", where)), "key": str(foreign.cell(row, "key", where)),
            "answer": str(foreign.cell(row, "answer", where)).strip(), "response": foreign.prediction(row)}
