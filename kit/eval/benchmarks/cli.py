"""``kit score BENCHMARK ...``: rescore the official output files of a benchmark, print one JSON
object. A malformed file raises ``KitError`` naming the file and the item (exit status 2)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

from kit.errors import KitError
from kit.eval.benchmarks import _common


def _print(result: dict) -> int:
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _score_mathvista(args: argparse.Namespace) -> int:
    from kit.eval.benchmarks import mathvista

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
    from kit.eval.benchmarks import mathv

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
    from kit.eval.benchmarks import wemath

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
    from kit.eval.benchmarks import hallusionbench

    path = Path(args.file)
    data = _common.read_json(path)
    if not isinstance(data, list):
        raise KitError(f"{path}: expected a list of HallusionBench questions, got {type(data).__name__}")
    result = hallusionbench.score(data, where=str(path))
    result["file"] = str(path)
    return _print(result)


def _score_mme(args: argparse.Namespace) -> int:
    from kit.eval.benchmarks import mme

    records = mme.read_results(args.dir)
    result = mme.score(records, where=str(args.dir))
    result["dir"] = str(args.dir)
    return _print(result)


def _answer_text(line: Mapping, where: str) -> str:
    # POPE's own answer files say "answer", LLaVA's "text", the kit's prediction files "response".
    for key in ("text", "answer", "response"):
        if key in line:
            if not isinstance(line[key], str):
                raise KitError(f"{where}: '{key}' is a {type(line[key]).__name__}, expected text")
            return line[key]
    raise KitError(f"{where}: no answer text (a 'text', 'answer' or 'response' field)")


def _score_pope(args: argparse.Namespace) -> int:
    from kit.eval.benchmarks import pope

    path = Path(args.file)
    answers = [(line_no, line) for line_no, line in enumerate(_common.read_jsonl(path), 1)]
    records: list[dict] = []

    def pair(rows: list[tuple[int, Mapping]], labels: list[dict], label_path: Path) -> None:
        if len(rows) != len(labels):
            raise KitError(f"{path}: {len(rows)} answers for the {len(labels)} questions of {label_path}; POPE "
                           "pairs answers and questions line by line, so the counts must agree")
        for (line_no, line), label in zip(rows, labels, strict=True):
            records.append({**label, "response": _answer_text(line, f"{path}, line {line_no}")})

    if args.labels is None:
        for line_no, line in answers:
            _common.require_fields(line, ("label",), path, f"at line {line_no}")
            records.append({"question_id": line.get("question_id", line_no), "category": line.get("category", "all"),
                            "label": line["label"], "response": _answer_text(line, f"{path}, line {line_no}")})
    elif Path(args.labels).is_dir():
        folder = Path(args.labels)
        category_of_question: dict[str, str] = {}
        if args.questions:
            for line_no, question in enumerate(_common.read_jsonl(Path(args.questions)), 1):
                _common.require_fields(question, ("question_id", "category"), args.questions, f"at line {line_no}")
                category_of_question[str(question["question_id"])] = str(question["category"])
        groups: dict[str, list[tuple[int, Mapping]]] = {}
        for line_no, line in answers:
            category = line.get("category") or category_of_question.get(str(line.get("question_id")))
            if category is None:
                raise KitError(f"{path}, line {line_no}: no split (category) for question {line.get('question_id')!r}; "
                               "give --questions (LLaVA's llava_pope_test.jsonl)")
            groups.setdefault(str(category), []).append((line_no, line))
        for category, rows in groups.items():
            label_path = pope.label_file(folder, category)
            if label_path is None:
                raise KitError(f"{folder}: no {pope.LABEL_FILE.format(category)} for the answers of split {category!r}")
            pair(rows, pope.read_labels(label_path, category), label_path)
    else:
        label_path = Path(args.labels)
        pair(answers, pope.read_labels(label_path), label_path)
    result = pope.score(records, where=str(path))
    result["file"] = str(path)
    return _print(result)


def _score_seed(args: argparse.Namespace) -> int:
    from kit.eval.benchmarks import seed

    path = Path(args.file)
    lines = _common.read_jsonl(path)
    names: dict[int, str] = {}
    if lines and "q_id" in lines[0]:
        # eval.py's results.json: every line carries its ground truth and dimension.
        records = []
        for line_no, line in enumerate(lines, 1):
            _common.require_fields(line, ("q_id", "prediction", "gt", "q_type_id"), path, f"at line {line_no}")
            records.append({"question_id": line["q_id"], "answer": line["gt"], "question_type_id": line["q_type_id"],
                            "prediction": line["prediction"]})
    else:
        if not args.questions:
            raise KitError(f"{path}: answers without ground truth need --questions (SEED-Bench.json)")
        questions, names = seed.read_questions(Path(args.questions))
        answers: dict[str, str] = {}
        for line_no, line in enumerate(lines, 1):
            _common.require_fields(line, ("question_id",), path, f"at line {line_no}")
            answers[str(line["question_id"])] = _answer_text(line, f"{path}, line {line_no}")
        records = []
        for question in questions:
            if args.data_type != "all" and question["data_type"] != args.data_type:
                continue
            record = dict(question)
            if str(question["question_id"]) in answers:  # a question without an answer counts as wrong
                record["response"] = answers[str(question["question_id"])]
            records.append(record)
    result = seed.score(records, where=str(path), names=names)
    result["file"] = str(path)
    return _print(result)


def _score_scienceqa(args: argparse.Namespace) -> int:
    from kit.eval.benchmarks import scienceqa

    path = Path(args.file)
    predictions: dict[str, Mapping] = {}
    for line_no, line in enumerate(_common.read_jsonl(path), 1):
        _common.require_fields(line, ("question_id", "text"), path, f"at line {line_no}")
        predictions[str(line["question_id"])] = line
    problems, _ = scienceqa.read_problems(Path(args.base_dir), args.split)
    records = []
    for pid, problem in problems:
        record = {**problem, "pid": pid}
        if pid in predictions:
            line = predictions[pid]
            record["response"] = _answer_text(line, f"{path}, question {pid}")
            record["is_multimodal"] = "<image>" in str(line.get("prompt", ""))
        else:  # eval_science_qa.py: a missing prediction is FAILED with the prompt 'Unknown'
            record["prediction"] = scienceqa.FAILED
            record["is_multimodal"] = False
        records.append(record)
    result = scienceqa.score(records, where=str(path))
    result["file"] = str(path)
    return _print(result)


def _score_amber(args: argparse.Namespace) -> int:
    from kit.eval.benchmarks import amber

    path = Path(args.file)
    data = _common.read_json(path)
    if not isinstance(data, list):
        raise KitError(f"{path}: expected AMBER's response list [{{'id', 'response'}}], got {type(data).__name__}")
    resources = amber.read_resources(amber.data_dir(args.data))
    records = []
    for position, item in enumerate(data):
        rid = amber.record_id(item) if isinstance(item, Mapping) else f"#{position}"
        _common.require_fields(item, ("id", "response"), path, rid)
        record = {**amber.annotation(resources, item["id"], path), "response": item["response"]}
        if args.extract:
            record["prediction"] = amber.extract(item["response"], record)
        records.append(record)
    result = amber.score(records, where=str(path), nouns=args.nouns, similarity=args.similarity, data=resources)
    result["file"] = str(path)
    return _print(result)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kit score`` and its per-benchmark sub-commands."""
    parser = subparsers.add_parser(
        "score",
        help="rescore an official benchmark output file with the official rules (prints JSON)",
        description="Rescore the official output files of MathVista, MATH-V, We-Math, HallusionBench, MME, POPE, "
        "SEED-Bench, ScienceQA-IMG or AMBER and print one JSON object with the metrics.",
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

    p = benchmarks.add_parser("pope", help="POPE answers (JSON lines) paired with the coco_pope_<split>.json labels")
    p.add_argument("file", help="answers, one JSON object per line with 'answer' (POPE), 'text' (LLaVA) or 'response'; "
                   "each with 'label' (and 'category') when --labels is not given")
    p.add_argument("--labels", help="one coco_pope_<split>.json (answers paired line by line, as evaluate.py does) "
                   "or the folder of all three (answers split by category, as LLaVA's eval_pope.py does)")
    p.add_argument("--questions", help="with a --labels folder: LLaVA's llava_pope_test.jsonl (question_id -> category) "
                   "when the answer lines carry no 'category'")
    p.set_defaults(func=_score_pope)

    p = benchmarks.add_parser("seed", help="SEED-Bench answers: eval.py's results.json or LLaVA's answer JSON lines")
    p.add_argument("file", help="JSON lines: {'q_id', 'prediction', 'gt', 'q_type_id'} (official eval.py) or "
                   "{'question_id', 'text'} (LLaVA; needs --questions)")
    p.add_argument("--questions", help="SEED-Bench.json (for answer files without ground truth)")
    p.add_argument("--data-type", choices=("image", "video", "all"), default="image",
                   help="which questions of --questions to score; unanswered ones count as wrong (default: image)")
    p.set_defaults(func=_score_seed)

    p = benchmarks.add_parser("scienceqa", help="ScienceQA answers (LLaVA's JSON lines) against problems.json")
    p.add_argument("file", help="JSON lines {'question_id', 'prompt', 'text'} as LLaVA's model_vqa_science.py writes")
    p.add_argument("--base-dir", required=True, help="the folder with problems.json and pid_splits.json")
    p.add_argument("--split", default="test", help="the pid_splits.json split to score (default: test)")
    p.set_defaults(func=_score_scienceqa)

    p = benchmarks.add_parser("amber", help="AMBER responses [{'id', 'response'}] against the AMBER data folder")
    p.add_argument("file", help="the JSON list of {'id', 'response'} that AMBER's inference.py reads")
    p.add_argument("--data", required=True, help="the AMBER repository (or its data/ folder) with annotations.json, "
                   "relation.json and safe_words.txt")
    p.add_argument("--nouns", choices=("auto", "nltk", "vocabulary"), default="auto",
                   help="noun extraction: the official nltk pipeline, the documented vocabulary fallback, or nltk "
                   "when installed with its data (default: auto)")
    p.add_argument("--similarity", choices=("auto", "spacy", "exact"), default="auto",
                   help="synonym similarity: spaCy en_core_web_lg (official), exact match, or spaCy when the model "
                   "is installed (default: auto)")
    p.add_argument("--extract", action="store_true",
                   help="map discriminative responses to Yes/No by POPE's rule first (the official script counts "
                   "anything but exactly 'Yes'/'No' as wrong)")
    p.set_defaults(func=_score_amber)
