"""``kit score BENCHMARK ...``: rescore the official output files of a benchmark, print one JSON
object. A malformed file raises ``KitError`` naming the file and the item (exit status 2)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

from kit.benchmarks import _common
from kit.errors import KitError


def _print(result: dict) -> int:
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _score_mathvista(args: argparse.Namespace) -> int:
    from kit.benchmarks import mathvista

    path = Path(args.file)
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
    # No LLM here: the stored extraction where present, else the rule shortcuts on the response.
    cleaned = []
    for position, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise KitError(f"{path}: record #{position} is a {type(record).__name__}, expected a JSON object")
        item = {k: v for k, v in record.items() if k != "prediction"}
        if "extraction" not in item and "response" not in item:
            raise KitError(f"{path}: record {mathvista.record_id(record)} has neither 'extraction' nor 'response'")
        cleaned.append(item)
    result = mathvista.score(cleaned, int_rule=args.int_rule, where=str(path))
    result["file"] = str(path)
    return _print(result)


def _score_mathv(args: argparse.Namespace) -> int:
    from kit.benchmarks import mathv

    path, gt_path = Path(args.file), Path(args.gt)
    gt: dict[str, dict] = {}
    for line_no, problem in enumerate(_common.read_jsonl(gt_path), 1):
        _common.require_fields(problem, ("id",), gt_path, f"at line {line_no}")
        rid = str(problem["id"])
        if rid in gt:
            raise KitError(f"{gt_path}, line {line_no}: id {rid} appears twice")
        gt[rid] = problem
    records = []
    for line_no, output in enumerate(_common.read_jsonl(path), 1):
        rid = str(output.get("id", f"at line {line_no}"))
        _common.require_fields(output, ("id", "response"), path, rid)
        if not isinstance(output["response"], str):
            raise KitError(f"{path}: record {rid} has a response of type {type(output['response']).__name__}")
        records.append({"id": rid, "response": output["response"]})  # re-extracted, as evaluate(..., True)
    result = mathv.score(records, gt=gt, where=str(path))
    result["file"] = str(path)
    return _print(result)


def _score_wemath(args: argparse.Namespace) -> int:
    from kit.benchmarks import wemath

    path = Path(args.file)
    data = _common.read_json(path)
    if not isinstance(data, list):
        raise KitError(f"{path}: expected a list of testmini rows with 'response', got {type(data).__name__}")
    rows = []
    for position, row in enumerate(data):
        rid = wemath.record_id(row) if isinstance(row, Mapping) else f"#{position}"
        _common.require_fields(row, wemath.SCORE_FIELDS + ("response",), path, rid)
        if not isinstance(row["response"], str):
            raise KitError(f"{path}: row {rid} has a response of type {type(row['response']).__name__}")
        rows.append({k: v for k, v in row.items() if k != "prediction"})
    result = wemath.score(rows, where=str(path))
    result["file"] = str(path)
    return _print(result)


def _score_hallusionbench(args: argparse.Namespace) -> int:
    from kit.benchmarks import hallusionbench

    path = Path(args.file)
    data = _common.read_json(path)
    if not isinstance(data, list):
        raise KitError(f"{path}: expected a list of HallusionBench questions, got {type(data).__name__}")
    result = hallusionbench.score(data, where=str(path))
    result["file"] = str(path)
    return _print(result)


def _score_mme(args: argparse.Namespace) -> int:
    from kit.benchmarks import mme

    records = mme.read_results(args.dir)
    result = mme.score(records, where=str(args.dir))
    result["dir"] = str(args.dir)
    return _print(result)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kit score`` and its per-benchmark sub-commands."""
    parser = subparsers.add_parser(
        "score",
        help="rescore an official benchmark output file with the official rules (prints JSON)",
        description="Rescore the official output files of MathVista, MATH-V, We-Math, HallusionBench or MME "
        "and print one JSON object with the metrics.",
    )
    benchmarks = parser.add_subparsers(dest="benchmark", required=True)

    p = benchmarks.add_parser("mathvista", help="MathVista output JSON (pid -> record with extraction/response)")
    p.add_argument("file", help="the official output file, e.g. results/<model>/output_<model>.json")
    p.add_argument("--int-rule", choices=("legacy", "current"), default="current",
                   help="integer normalisation: 'current' str(int(float(x))) or 'legacy' str(int(x)), the rule "
                   "of the older script behind most released score files (default: current)")
    p.set_defaults(func=_score_mathvista)

    p = benchmarks.add_parser("mathv", help="MATH-V output JSONL (id, response)")
    p.add_argument("file", help="the official output file, one {'id', 'response', ...} per line")
    p.add_argument("--gt", required=True, help="the problems: data/test.jsonl or data/testmini.jsonl")
    p.set_defaults(func=_score_mathv)

    p = benchmarks.add_parser("wemath", help="We-Math testmini rows with a 'response' field")
    p.add_argument("file", help="testmini.json rows, each with the model's 'response'")
    p.set_defaults(func=_score_wemath)

    p = benchmarks.add_parser("hallusionbench", help="HallusionBench.json questions with 'correct' or 'model_prediction'")
    p.add_argument("file", help="the questions, each with 'correct' (0/1) or the model's 'model_prediction'")
    p.set_defaults(func=_score_hallusionbench)

    p = benchmarks.add_parser("mme", help="MME eval-tool results folder (<subtask>.txt files)")
    p.add_argument("dir", help="folder of <subtask>.txt files with image<TAB>question<TAB>Yes|No<TAB>response")
    p.set_defaults(func=_score_mme)
