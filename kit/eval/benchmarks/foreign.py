"""Model outputs written by the two common evaluation toolkits, read for ``kit score --from``:

- ``lmms-eval`` (EvolvingLMMs-Lab/lmms-eval, ``--log_samples``): ``<date>_samples_<task>.jsonl``, one JSON object
  per document with ``doc_id``, ``doc`` (the dataset row, its images left out), ``target``, ``arguments``,
  ``resps`` (the raw outputs), ``filtered_resps`` (one entry per request, each the text after the task's
  filters: ``evaluator.py``) and one key per metric holding what the task's ``process_results`` returned;
- ``vlmevalkit`` (open-compass/VLMEvalKit): the prediction file ``<model>_<dataset>.xlsx`` (or ``.tsv`` /
  ``.json`` with ``PRED_FORMAT``): the dataset's TSV without its ``image`` column plus ``prediction``, the
  model's text (``vlmeval/inference.py``, ``vlmeval/smp/file.py``: ``.tsv`` is tab-separated with every cell
  quoted).

This module only reads the two layouts and detects them by content; which fields of ``doc`` or of a row a
benchmark's official scorer needs lives in that benchmark's module, as ``from_lmms_eval(doc, response, sample,
where)`` and ``from_vlmevalkit(row, where)`` (each returns the record for ``score``, or ``None`` to leave a row
out, or a list of records), ``FOREIGN_RULES`` (format -> the sentence saying which rules score it) and optionally
``foreign_options(**options)`` (the keyword options ``score`` needs, from ``kit score``'s). A benchmark module
without the hook of a format is not covered by that tool, and ``read`` says so.

``.xlsx`` needs openpyxl, which the kit does not depend on; without it the error says to export the file as
``.tsv`` (or install openpyxl)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from kit.errors import KitError
from kit.eval.benchmarks import Outputs, _common

OFFICIAL, LMMS_EVAL, VLMEVALKIT = "official", "lmms-eval", "vlmevalkit"
FORMATS = (OFFICIAL, LMMS_EVAL, VLMEVALKIT)
TOOLS = {LMMS_EVAL: "lmms-eval (--log_samples JSONL)", VLMEVALKIT: "VLMEvalKit (prediction .xlsx/.tsv)"}
HOOKS = {LMMS_EVAL: "from_lmms_eval", VLMEVALKIT: "from_vlmevalkit"}
TABLE_SUFFIXES = (".xlsx", ".tsv", ".csv")


# ----------------------------------------------------------------------------------------------- detection
def _first_json_object(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    return json.loads(line)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return None


def _is_lmms_sample(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "doc_id" in obj and "doc" in obj and (
        "filtered_resps" in obj or "resps" in obj)


def _is_vlmeval_row(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "index" in obj and "prediction" in obj


def detect(path: str | Path) -> str:
    """The format of ``path`` by its content: ``vlmevalkit`` for a table (``.xlsx``, or a ``.tsv``/``.csv`` whose
    header has ``index`` and ``prediction``) or a JSON list of such rows, ``lmms-eval`` for JSON lines whose first
    object has ``doc_id``, ``doc`` and ``filtered_resps`` (or ``resps``), else ``official`` (whose reader then
    reports whatever is wrong with the file)."""
    path = Path(path)
    if not path.is_file():
        return OFFICIAL
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        return VLMEVALKIT
    if suffix in (".tsv", ".csv"):
        try:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                header = next(csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ","), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            return OFFICIAL
        return VLMEVALKIT if {"index", "prediction"} <= set(header) else OFFICIAL
    first = _first_json_object(path)
    if _is_lmms_sample(first):
        return LMMS_EVAL
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return OFFICIAL
        if isinstance(data, list) and data and _is_vlmeval_row(data[0]):
            return VLMEVALKIT
        if isinstance(data, list) and data and _is_lmms_sample(data[0]):
            return LMMS_EVAL
    return OFFICIAL


# ----------------------------------------------------------------------------------------------- lmms-eval
def read_lmms_eval(path: Path) -> list[tuple[str, dict]]:
    """(where, sample) for every sample of a ``--log_samples`` JSONL file (a JSON list of samples is read too)."""
    if path.suffix.lower() == ".json" and (text := _json_list(path)) is not None:
        samples = list(enumerate(text))
    else:
        samples = list(enumerate(_common.read_jsonl(path)))
    rows = []
    for position, sample in samples:
        where = f"{path}, sample {position + 1}"
        if not isinstance(sample, Mapping):
            raise KitError(f"{where}: expected a JSON object, got {type(sample).__name__}")
        missing = [key for key in ("doc_id", "doc") if key not in sample]
        if missing:
            raise KitError(f"{where}: not an lmms-eval sample (no {', '.join(repr(m) for m in missing)})")
        where = f"{path}, doc_id {sample['doc_id']}"
        if not isinstance(sample["doc"], Mapping):
            raise KitError(f"{where}: 'doc' is a {type(sample['doc']).__name__}, expected the dataset row (an object)")
        rows.append((where, dict(sample)))
    if not rows:
        raise KitError(f"{path}: holds no lmms-eval sample")
    return rows


def _json_list(path: Path) -> list | None:
    data = _common.read_json(path)
    return data if isinstance(data, list) else None


def lmms_response(sample: Mapping[str, Any], where: str) -> str:
    """The model's text of one sample: ``filtered_resps[0]`` (what ``process_results`` received as
    ``results[0]``), else ``resps[0]``; a nested list (no ``take_first`` filter) gives its first entry."""
    for key in ("filtered_resps", "resps"):
        value = sample.get(key)
        while isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str):
            return value
    raise KitError(f"{where}: no response text in 'filtered_resps' or 'resps'")


# ---------------------------------------------------------------------------------------------- VLMEvalKit
def _cell(value: Any) -> Any:
    """A table cell as pandas' NaN-free text: ``None`` for an empty or NaN cell, else the value (text kept)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and value == "":
        return None
    return value


def read_vlmevalkit(path: Path) -> list[tuple[str, dict]]:
    """(where, row) for every row of a VLMEvalKit prediction file; empty cells are ``None``."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise KitError(f"{path}: file not found")
    if suffix == ".xlsx":
        try:
            import openpyxl
        except ImportError:
            raise KitError(f"{path}: reading .xlsx needs openpyxl, which is not installed; export the prediction "
                           "file as .tsv (VLMEvalKit: PRED_FORMAT=tsv, or pandas: read_excel(...).to_csv(..., "
                           "sep='\\t', index=False)) or install openpyxl") from None
        try:
            sheet = openpyxl.load_workbook(path, read_only=True, data_only=True).worksheets[0]
            table = [list(r) for r in sheet.iter_rows(values_only=True)]
        except Exception as err:  # a broken workbook: one line
            raise KitError(f"{path}: not a readable .xlsx workbook ({err})") from err
        header, body = ([str(h) for h in table[0]], table[1:]) if table else ([], [])
    elif suffix in (".tsv", ".csv"):
        try:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                table = list(csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ","))
        except UnicodeDecodeError as err:
            raise KitError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
        except csv.Error as err:
            raise KitError(f"{path}: not a readable {suffix[1:]} table ({err})") from err
        header, body = (table[0], table[1:]) if table else ([], [])
    elif suffix in (".json", ".jsonl"):
        data = _json_list(path) if suffix == ".json" else _common.read_jsonl(path)
        if data is None or not all(isinstance(r, Mapping) for r in data):
            raise KitError(f"{path}: expected VLMEvalKit's prediction rows, a JSON list of objects")
        header = list(data[0]) if data else []
        body = [[row.get(h) for h in header] for row in data]
    else:
        raise KitError(f"{path}: a VLMEvalKit prediction file is .xlsx, .tsv, .csv or .json, not {suffix or 'this'}")
    missing = [name for name in ("index", "prediction") if name not in header]
    if missing:
        raise KitError(f"{path}: not a VLMEvalKit prediction file (no column {', '.join(repr(m) for m in missing)})")
    rows = []
    for line_no, values in enumerate(body, 2):
        if not any(_cell(v) is not None for v in values):
            continue
        row = {name: _cell(values[i]) if i < len(values) else None for i, name in enumerate(header)}
        rows.append((f"{path}, row {line_no} (index {row['index']})", row))
    if not rows:
        raise KitError(f"{path}: holds no prediction row")
    return rows


def cell(row: Mapping[str, Any], name: str, where: str) -> Any:
    """The value of column ``name``; a missing column or an empty cell is a ``KitError`` naming the row."""
    if row.get(name) is None:
        raise KitError(f"{where}: no value in column {name!r}")
    return row[name]


def prediction(row: Mapping[str, Any]) -> str:
    """The ``prediction`` cell as VLMEvalKit's evaluators read it (``str(x)``; an empty cell is ``""``)."""
    value = row.get("prediction")
    return "" if value is None else str(value)


def literal_list(value: Any, where: str, name: str) -> list:
    """A list stored in a cell as its Python text (VLMEvalKit writes ``str(list)``; its evaluators ``eval`` it;
    here ``ast.literal_eval``)."""
    import ast

    if isinstance(value, list):
        return value
    if value is None:
        return []
    try:
        parsed = ast.literal_eval(str(value))
    except (ValueError, SyntaxError) as err:
        raise KitError(f"{where}: column {name!r} holds {value!r}, not a Python list") from err
    if not isinstance(parsed, list | tuple):
        raise KitError(f"{where}: column {name!r} holds {value!r}, not a list")
    return list(parsed)


def whole(value: Any, where: str, name: str) -> int:
    """A whole number from a cell (``3``, ``"3"``, ``3.0``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number) or number != int(number):
        raise KitError(f"{where}: column {name!r} holds {value!r}, expected a whole number")
    return int(number)


# ---------------------------------------------------------------------------------------------------- read
def covered(bench: ModuleType, fmt: str) -> bool:
    return fmt == OFFICIAL or callable(getattr(bench, HOOKS.get(fmt, ""), None))


def read(bench: ModuleType, path: str | Path, fmt: str | None = None, **options: Any) -> tuple[Outputs, str]:
    """``(outputs, format)``: the outputs of ``path`` in format ``fmt`` (detected by content when ``None``).
    ``official`` is the benchmark's own ``read_outputs(path, **options)``; the two toolkits' files are read here
    and each row is turned into a record by the benchmark's hook. A benchmark without the hook is refused."""
    fmt = fmt or detect(path)
    if fmt not in FORMATS:
        raise KitError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == OFFICIAL:
        return bench.read_outputs(path, **options), fmt
    title = getattr(bench, "TITLE", getattr(bench, "NAME", "?"))
    if not covered(bench, fmt):
        raise KitError(f"{title} is not covered by {TOOLS[fmt]}, so the kit has no reader for {title} outputs in "
                       f"the {fmt} format.")
    path = Path(path)
    hook = getattr(bench, HOOKS[fmt])
    records = []
    if fmt == LMMS_EVAL:
        for where, sample in read_lmms_eval(path):
            _add(records, hook(dict(sample["doc"]), lmms_response(sample, where), sample, where))
    else:
        for where, row in read_vlmevalkit(path):
            _add(records, hook(row, where))
    if not records:
        raise KitError(f"{path}: no {title} question to score in this {fmt} file")
    make_options = getattr(bench, "foreign_options", None)
    score_options = make_options(fmt, records, **options) if callable(make_options) else {}
    return Outputs(records, str(path), score_options), fmt


def _add(records: list[dict], made: dict | list[dict] | None) -> None:
    """A hook returns one record, a list of them (a VLMEvalKit POPE row in several splits) or ``None``."""
    if isinstance(made, list):
        records.extend(made)
    elif made is not None:
        records.append(made)


def rules(bench: ModuleType, fmt: str, records: list[Mapping[str, Any]]) -> Any:
    """What ``kit score`` reports under ``rules`` for a foreign file: the benchmark's ``FOREIGN_RULES[fmt]``,
    or ``foreign_rules(fmt, records)`` where the module counts what ran (MathVista's extraction mode)."""
    describe = getattr(bench, "foreign_rules", None)
    if callable(describe):
        return describe(fmt, records)
    return getattr(bench, "FOREIGN_RULES", {}).get(fmt)
