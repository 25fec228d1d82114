"""``kit score BENCHMARK ...``: rescore the official output files of a benchmark, print one JSON
object. A malformed file raises ``KitError`` naming the file and the item (exit status 2).

This module knows no benchmark's file layout: it declares each sub-command's arguments, and ``_score`` runs
every one of them alike: ``bench.read_outputs(path, **options)`` (the benchmark module reads its released
outputs, whose keyword-only parameters are the sub-command's options, by their argparse ``dest``), then
``bench.score(outputs.records, where=outputs.where, **outputs.options)``, and prints the metrics with the path
read (under ``"file"``, or ``"dir"`` for MME).

``--from official|lmms-eval|vlmevalkit`` (default: detected by content, ``kit.eval.benchmarks.foreign.detect``)
reads instead an lmms-eval ``--log_samples`` JSONL or a VLMEvalKit prediction file
(``kit.eval.benchmarks.foreign.read``: each benchmark module maps the tool's rows to its records); the output
then also says the ``format`` read and the ``rules`` that scored it. Official files print exactly as before."""

from __future__ import annotations

import argparse
import inspect
import json

from kit.errors import KitError
from kit.eval import benchmarks as _benchmarks
from kit.eval.benchmarks import foreign


def _print(result: dict) -> int:
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _score(args: argparse.Namespace) -> int:
    """``kit score <benchmark>``: ``read_outputs`` then ``score`` of that benchmark's module."""
    bench = _benchmarks.get(args.benchmark)
    parameters = inspect.signature(bench.read_outputs).parameters.values()
    keywords = [p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    options = {p.name: getattr(args, p.name) for p in keywords}
    fmt = getattr(args, "source_format", None) or foreign.detect(args.path)
    if fmt == foreign.OFFICIAL:
        # Options the official layout cannot do without (MATH-V --gt, ScienceQA --base-dir, AMBER --data).
        missing = [p.name for p in keywords if p.default is inspect.Parameter.empty and options[p.name] is None]
        if missing:
            flags = ", ".join("--" + name.replace("_", "-") for name in missing)
            raise KitError(f"kit score {args.benchmark}: the official output format needs {flags}")
        outputs = bench.read_outputs(args.path, **options)
        result = bench.score(outputs.records, where=outputs.where, **outputs.options)
        result[outputs.kind] = outputs.where
        return _print(result)
    outputs, fmt = foreign.read(bench, args.path, fmt, **options)
    result = bench.score(outputs.records, where=outputs.where, **outputs.options)
    result["format"] = fmt
    result["rules"] = foreign.rules(bench, fmt, outputs.records)
    result["file"] = outputs.where
    return _print(result)


def _benchmark(commands: argparse._SubParsersAction, name: str, help: str, path_help: str,
               metavar: str = "file") -> argparse.ArgumentParser:
    """The sub-command ``kit score <name>`` with its one positional argument, the released outputs to read
    (``args.path``, shown as ``file`` or, for MME, ``dir``); the caller adds the options."""
    parser = commands.add_parser(name, help=help)
    parser.add_argument("path", metavar=metavar, help=path_help)
    parser.add_argument("--from", dest="source_format", choices=foreign.FORMATS, default=None,
                        help="the layout of the outputs: the benchmark's official one, an lmms-eval --log_samples "
                        "JSONL or a VLMEvalKit prediction file (.tsv/.csv; .xlsx with openpyxl) (default: detected "
                        "by content)")
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kit score`` and its per-benchmark sub-commands; every one runs ``_score``."""
    parser = subparsers.add_parser(
        "score",
        help="rescore an official benchmark output file with the official rules (prints JSON)",
        description="Rescore the official output files of MathVista, MATH-V, We-Math, HallusionBench, MME, POPE, "
        "SEED-Bench, ScienceQA-IMG or AMBER (or an lmms-eval --log_samples JSONL or VLMEvalKit prediction file of "
        "them: --from) and print one JSON object with the metrics.",
    )
    parser.set_defaults(func=_score)
    commands = parser.add_subparsers(dest="benchmark", required=True)

    p = _benchmark(commands, "mathvista", "MathVista output JSON (pid -> record with extraction/response)",
                   "the official output file, e.g. results/<model>/output_<model>.json")
    p.add_argument("--int-rule", choices=("legacy", "current"), default="current",
                   help="integer normalisation: 'current' str(int(float(x))) or 'legacy' str(int(x)), the rule "
                   "of the older script behind most released score files (default: current)")

    p = _benchmark(commands, "mathv", "MATH-V output JSONL (id, response)",
                   "the official output file, one {'id', 'response', ...} per line")
    p.add_argument("--gt", help="the problems: data/test.jsonl or data/testmini.jsonl (official format only)")

    _benchmark(commands, "wemath", "We-Math testmini rows with a 'response' field",
               "testmini.json rows, each with the model's 'response'")

    _benchmark(commands, "hallusionbench", "HallusionBench.json questions with 'correct' or 'model_prediction'",
               "the questions, each with 'correct' (0/1) or the model's 'model_prediction'")

    _benchmark(commands, "mme", "MME eval-tool results folder (<subtask>.txt files)",
               "folder of <subtask>.txt files with image<TAB>question<TAB>Yes|No<TAB>response", metavar="dir")

    p = _benchmark(commands, "pope", "POPE answers (JSON lines) paired with the coco_pope_<split>.json labels",
                   "answers, one JSON object per line with 'answer' (POPE), 'text' (LLaVA) or 'response'; "
                   "each with 'label' (and 'category') when --labels is not given")
    p.add_argument("--labels", help="one coco_pope_<split>.json (answers paired line by line, as evaluate.py does) "
                   "or the folder of all three (answers split by category, as LLaVA's eval_pope.py does)")
    p.add_argument("--questions", help="with a --labels folder: LLaVA's llava_pope_test.jsonl (question_id -> category) "
                   "when the answer lines carry no 'category'")

    p = _benchmark(commands, "seed", "SEED-Bench answers: eval.py's results.json or LLaVA's answer JSON lines",
                   "JSON lines: {'q_id', 'prediction', 'gt', 'q_type_id'} (official eval.py) or "
                   "{'question_id', 'text'} (LLaVA; needs --questions)")
    p.add_argument("--questions", help="SEED-Bench.json (for answer files without ground truth)")
    p.add_argument("--data-type", choices=("image", "video", "all"), default="image",
                   help="which questions of --questions to score; unanswered ones count as wrong (default: image)")

    p = _benchmark(commands, "scienceqa", "ScienceQA answers (LLaVA's JSON lines) against problems.json",
                   "JSON lines {'question_id', 'prompt', 'text'} as LLaVA's model_vqa_science.py writes")
    p.add_argument("--base-dir", help="the folder with problems.json and pid_splits.json (official format only)")
    p.add_argument("--split", default="test", help="the pid_splits.json split to score (default: test)")

    p = _benchmark(commands, "amber", "AMBER responses [{'id', 'response'}] against the AMBER data folder",
                   "the JSON list of {'id', 'response'} that AMBER's inference.py reads")
    p.add_argument("--data", required=True, help="the AMBER repository (or its data/ folder) with annotations.json, "
                   "relation.json and safe_words.txt")
    p.add_argument("--nouns", choices=("auto", "nltk", "vocabulary"), default="auto",
                   help="noun extraction: the official nltk pipeline, the documented vocabulary fallback, or nltk "
                   "when installed with its data (default: auto)")
    p.add_argument("--similarity", choices=("auto", "spacy", "exact"), default="auto",
                   help="synonym similarity: spaCy en_core_web_lg (official), exact match, or spaCy when the model "
                   "is installed (default: auto)")
    p.add_argument("--extract", action="store_true", dest="extract_answers",  # amber.extract keeps its name
                   help="map discriminative responses to Yes/No by POPE's rule first (the official script counts "
                   "anything but exactly 'Yes'/'No' as wrong)")
