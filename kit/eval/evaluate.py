"""Evaluate a vision-language model on a benchmark: batched greedy generation, resumable predictions,
the benchmark's own extraction and score.

::

    from kit.eval.evaluate import evaluate, evaluate_many, metrics_table
    metrics = evaluate("data/models/tiny-qwen2vl-teacher", "mathvista", source="data/tiny/mathvista",
                       predictions_path="runs/teacher/mathvista.jsonl")

How it works:

- ``bench.load(source, split, limit)`` gives the records; the strategy builds each prompt (``direct``: the
  benchmark's standard prompt, ``bench.build_prompt``).
- Items are generated greedily (``do_sample=False``) with the KV cache in batches. Image items and
  text-only items (HallusionBench questions without a figure) are batched separately, because a batch
  either carries pixel values for every row or for none. Within each group items are sorted by prompt
  length so that a batch pads little; results are reported in the records' order.
- Every finished item is appended to ``predictions_path`` (a ``JsonlAppender`` keyed by ``id``) at once,
  so a killed run resumes where it stopped: ids already in the file are not generated again. A line
  holds ``id, benchmark, strategy, model, max_new_tokens, prompt, response, extractor, decoding, prediction``.
  Resuming with another benchmark, strategy, model, token budget or prompt is refused (``KitError``)
  rather than mixing two runs in one file.
- ``extractor="rules"``: MathVista uses ``mathvista.extract_rules`` (the tiny profile's rules-only
  extraction, a documented deviation), every other benchmark its own official ``extract``.
  ``extractor="llm"`` passes ``llm(prompt) -> str`` to the official LLM steps: MathVista's answer
  extractor and HallusionBench's GPT-style judge (``score(chat=llm)``). MATH-V, We-Math, MME, POPE,
  SEED-Bench, ScienceQA and AMBER have no LLM step in their official evaluation, so they keep their rule
  extraction. ``llm_name`` (the model behind ``llm``) goes into each line and the metrics as
  ``extractor_model``; a stored line read by another model is extracted again. ``extraction_table`` lists,
  per benchmark, how a set of evaluations read their answers (notebooks 05 and 08 write it; the report
  quotes it under each benchmark table). The profile's ``evaluation.extractor`` chooses (``kit.llm.judges``).
- The Cas-SEAT strategies (``cot``, ``seat``, ``cas_seat``, ``cas_seat_oracle``) ask for a final "The answer
  is X". When the benchmark's rules find nothing in the whole response, they are given that X
  (``kit.eval.seat_format.final_answer``, the pattern of the authors' ``quick_extract`` in
  ``self-evaluate/evaluation/extract_answer.py``): We-Math's official extractor looks only after the word
  "Answer", so "... The answer is B" would otherwise count as no answer. Rule extraction is cheap and is
  redone at scoring, so a resumed predictions file is always scored by the current rules.

Engines: ``engine`` (a ``kit.llm.generate.EngineChoice``, default transformers) chooses where the answers are
generated: ``transformers`` loads the model (with its adapter) here; ``openai`` asks the servers of
``engine.servers`` for the base model, or for a student's adapter by name (``vllm serve <base> --enable-lora``),
so a trained adapter is evaluated without merging. A line's ``model`` is the engine's label and its
``decoding`` what the engine sent; ``evaluate_stage`` keys an openai evaluation apart (``engine_key``), never
by the servers.

Strategies (``kit.eval.strategies``): ``direct`` (the benchmark's prompt), ``cot``, ``seat``, ``cas_seat`` (a second
chat turn with the reflection prompt on every item) and ``cas_seat_oracle`` (the reflection only on items
already wrong, as the authors' released code does: it reads the labels and is labelled as such). A
two-turn item's line is written once its last turn is done and also holds ``turns``.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from kit.errors import KitError
from kit.eval import benchmarks as _benchmarks
from kit.eval import strategies

logger = logging.getLogger(__name__)

EXTRACTORS = ("rules", "llm")
STRATEGIES = strategies.STRATEGIES


# What each benchmark module declares about its results (``TITLE``, ``HEADLINES``, ``HEADLINE_METRIC``;
# kit.eval.benchmarks.Benchmark), gathered in registry order for the tables:
# benchmark -> [(column label, path of keys into the metrics)], the numbers the papers' tables report.
HEADLINES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    name: [(metric.label, metric.keys) for metric in _benchmarks.get(name).HEADLINES] for name in _benchmarks.names()}
# benchmark -> the one column that stands for it where a single number per benchmark is needed (EACO's
# "average over benchmarks").
HEADLINE_METRIC: dict[str, str] = {name: _benchmarks.get(name).HEADLINE_METRIC for name in _benchmarks.names()}
# The benchmarks' names as the papers write them (extraction_table's rows; a benchmark's table columns start
# with it).
TITLES: dict[str, str] = {name: _benchmarks.get(name).TITLE for name in _benchmarks.names()}
# The headline columns where lower is better (a gain is then a fall).
LOWER_IS_BETTER: tuple[str, ...] = tuple(metric.label for name in _benchmarks.names()
                                         for metric in _benchmarks.get(name).HEADLINES if not metric.higher_is_better)
# What reading a benchmark's answers means, for (benchmark, extractor); other benchmarks have no LLM step.
READ_BY: dict[tuple[str, str], str] = {
    ("mathvista", "llm"): "MathVista's official LLM answer extractor (extract_answer.py prompt) through the LLM",
    ("mathvista", "rules"): "the official extractor's rule steps only, without its LLM step (a documented "
                            "deviation: an answer no rule reads scores as wrong)",
    ("hallusionbench", "llm"): "HallusionBench's official GPT-4 judge prompt (evaluate_by_chatgpt) through the LLM",
    ("hallusionbench", "rules"): "a rule judge (yes/no match) instead of the official GPT-4 judge (a documented "
                                 "deviation)",
}
NO_LLM_STEP = "the benchmark's official rule extraction (its evaluation has no LLM step)"


# ------------------------------------------------------------------------------------------ helpers
def _benchmark(benchmark: str | ModuleType) -> ModuleType:
    if isinstance(benchmark, ModuleType):
        missing = [name for name in _benchmarks.INTERFACE if not hasattr(benchmark, name)]
        if missing:
            raise KitError(f"benchmark module {benchmark.__name__} lacks {', '.join(missing)}")
        return benchmark
    return _benchmarks.get(benchmark)


def item_ids(bench: ModuleType, records: list[Mapping[str, Any]]) -> list[str]:
    """One unique key per record: ``bench.record_id``, with ``#2``, ``#3``... appended to later records that
    share it (MME asks two questions per image and names both by the image). Only earlier records decide
    a record's key, so the keys of a prefix do not change when ``limit`` grows."""
    seen: dict[str, int] = {}
    ids = []
    for record in records:
        rid = str(bench.record_id(record))
        count = seen.get(rid, 0) + 1
        seen[rid] = count
        ids.append(rid if count == 1 else f"{rid}#{count}")
    return ids


def extract_prediction(bench: ModuleType, response: str, record: Mapping[str, Any], extractor: str,
                       llm: Callable[[str], str] | None = None, strategy: str = "direct") -> Any:
    """The answer in ``response`` by the chosen extractor (see the module docstring)."""
    if bench.NAME == "mathvista" and extractor == "llm":
        return bench.extract(response, record, llm=llm)
    rules = bench.extract_rules if bench.NAME == "mathvista" else bench.extract
    prediction = rules(response, record)
    if prediction in (None, "") and extractor == "rules" and strategy != "direct":
        from kit.eval.seat_format import final_answer

        final = final_answer(response)
        if final is not None:
            prediction = rules(final, record)
    return prediction


def scored_prediction(bench: ModuleType, line: Mapping[str, Any], record: Mapping[str, Any], extractor: str,
                      llm: Callable[[str], str] | None, llm_name: str | None, strategy: str) -> Any:
    """The answer a stored predictions line is scored with: rules are cheap and always applied again (a resumed
    file is scored by the current rules); an LLM's reading is kept unless another reader wrote it."""
    reader = llm_name if extractor == "llm" else None
    stale = line.get("extractor") != extractor or line.get("extractor_model") != reader
    if stale or extractor == "rules":
        return extract_prediction(bench, line["response"], record, extractor, llm, strategy)
    return line["prediction"]


def generate_batch(loaded: Any, prompts: list[str], image_paths: list[str | None], ids: list[str],
                   max_new_tokens: int) -> list[str]:
    """Greedy responses for one batch, in the given order; either every item has an image or none has."""
    from kit.llm.generate import Chat, Sampling, TransformersEngine

    with_image = image_paths[0] is not None
    if any((path is not None) != with_image for path in image_paths):
        raise KitError("a batch must hold only image items or only text-only items")
    chats = [Chat(rid, [prompt], path) for rid, prompt, path in zip(ids, prompts, image_paths, strict=True)]
    engine = TransformersEngine(loaded, batch_size=len(chats))
    answers = {chat.id: text for chat, text in engine.generate(chats, Sampling(max_new_tokens=max_new_tokens))}
    return [answers[rid] for rid in ids]


class _TwoTurns:
    """The engine ``evaluate`` hands ``generate_into`` for a two-turn strategy (``cot``, ``seat``...): each chat is
    answered, then asked the reflection prompt where the strategy wants it, and the last answer is given back.
    Every answer of the first turn is needed before the second turn's batches can form; an item's line is written
    once its last turn is done, so a killed run redoes only unfinished items. ``turns``: chat id -> the first
    answer, then the reflection prompt when it was asked."""

    def __init__(self, engine: Any, strategy: str, bench: ModuleType, records: list[Mapping[str, Any]],
                 position: Mapping[str, int], extract: Callable[[int, str], Any]) -> None:
        self.engine, self.strategy, self.bench, self.records = engine, strategy, bench, records
        self.position, self.extract = position, extract
        self.turns: dict[str, list[str]] = {}

    def generate(self, chats: list[Any], sampling: Any, progress: bool = True):
        from kit.llm.generate import Chat

        answers = {chat.id: response for chat, response in self.engine.generate(chats, sampling, progress=progress)}
        reflect = [chat for chat in chats if strategies.needs_reflection(
            self.strategy, self.bench, self.records[self.position[chat.id]], answers[chat.id],
            lambda text, i=self.position[chat.id]: self.extract(i, text))]
        reflected = {chat.id for chat in reflect}
        for chat in chats:
            if chat.id not in reflected:
                self.turns[chat.id] = [answers[chat.id]]
                yield chat, answers[chat.id]
        second = [Chat(chat.id, [*chat.turns, answers[chat.id], strategies.reflection_prompt()], chat.image)
                  for chat in reflect]
        for chat, response in self.engine.generate(second, sampling, progress=progress):
            self.turns[chat.id] = [answers[chat.id], strategies.reflection_prompt()]
            yield chat, response


# ------------------------------------------------------------------------------------------ evaluate
def evaluate(
    model: Any,
    benchmark: str | ModuleType,
    strategy: str = "direct",
    *,
    source: str | Path | None = None,
    split: str | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 96,
    predictions_path: str | Path | None = None,
    extractor: str = "rules",
    llm: Callable[[str], str] | None = None,
    llm_name: str | None = None,
    progress: bool = True,
    engine: Any = None,
) -> dict:
    """Generate, extract and score ``benchmark`` for ``model`` (a ``LoadedModel`` or a name/path for
    ``kit.llm.models.load``: a base model or an adapter folder); ``source`` is the dataset folder or hub id.
    ``engine``: a ``kit.llm.generate.EngineChoice`` (None: transformers). Returns ``bench.score(...)`` plus
    ``benchmark``, ``strategy``, ``n`` (items scored), ``extractor`` (with ``extractor_model``, ``llm_name``,
    when it is ``llm``) and ``generated`` (items generated by this call; the rest came from
    ``predictions_path``)."""

    bench = _benchmark(benchmark)
    if source is None:
        raise KitError(f"evaluate: source is required (the {bench.NAME} folder or hub id {bench.HUB_ID!r})")
    if strategy not in STRATEGIES:
        raise KitError(f"evaluate: unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if strategy == "cas_seat_oracle":
        logger.warning("cas_seat_oracle reads the labels to decide which items to reflect on; its numbers are "
                       "not comparable with the other strategies'")
    if extractor not in EXTRACTORS:
        raise KitError(f"evaluate: unknown extractor {extractor!r}; expected one of {', '.join(EXTRACTORS)}")
    if extractor == "llm" and llm is None:
        raise KitError("evaluate: extractor='llm' needs llm=callable(prompt) -> str")
    # Which model read the answers is part of a line's record only when a model read them.
    reader = {"extractor_model": llm_name} if extractor == "llm" else {}
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise KitError(f"evaluate: batch_size must be a whole number >= 1, not {batch_size!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise KitError(f"evaluate: max_new_tokens must be a whole number >= 1, not {max_new_tokens!r}")

    records = bench.load(source, split=split or bench.DEFAULT_SPLIT, limit=limit)
    if not records:
        raise KitError(f"evaluate: {bench.NAME} at {source} has no records (split {split or bench.DEFAULT_SPLIT})")
    ids = item_ids(bench, records)
    prompts = [strategies.first_prompt(strategy, bench, record) for record in records]
    engine = _engine(engine, model, batch_size)
    settings = {"benchmark": bench.NAME, "strategy": strategy, "model": engine.model_label,
                "max_new_tokens": max_new_tokens}

    from kit.llm.generate import Chat, Sampling, generate_into

    sampling = Sampling(max_new_tokens=max_new_tokens)
    decoding = engine.decoding(sampling)  # greedy, with the checkpoint's repetition_penalty (kit.llm.generate)
    position = {rid: i for i, rid in enumerate(ids)}

    def extract(i: int, response: str) -> Any:
        return extract_prediction(bench, response, records[i], extractor, llm, strategy)

    def check_stored(stored: dict[tuple, dict]) -> None:
        # generate_into has checked the settings; a stored item must also have been asked the same prompt.
        for (rid,), line in stored.items():
            i = position.get(rid)
            if i is not None and line.get("prompt") != prompts[i]:
                raise KitError(f"{predictions_path}: id {rid} was written with prompt={line.get('prompt')!r}, this "
                               f"run has {prompts[i]!r}; use another file rather than mixing two runs")
        for i, rid in enumerate(ids):  # fail before any generation rather than after hours of it
            path = records[i].get("image_path")
            if (rid,) not in stored and path is not None and not Path(path).is_file():
                raise KitError(f"{bench.NAME}: record {ids[i]}: image file {path} not found")

    two_turns = None if strategy in strategies.SINGLE_TURN else _TwoTurns(engine, strategy, bench, records, position,
                                                                          extract)

    def make_record(key: tuple, chat: Chat, response: str) -> dict[str, Any]:
        i = position[key[0]]
        line = {"prompt": prompts[i], "response": response, "extractor": extractor, **reader, "decoding": decoding,
                "prediction": extract(i, response)}
        if two_turns is not None:
            line["turns"] = two_turns.turns[chat.id]  # the first answer, then the reflection prompt, if asked
        return line

    chats = {(rid,): Chat(rid, [prompts[i]], records[i].get("image_path")) for i, rid in enumerate(ids)}
    with contextlib.ExitStack() as stack:
        if predictions_path is None:  # nothing to resume from or keep: the lines go to a temporary file
            predictions_path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "predictions.jsonl"
        stored, generated = generate_into(predictions_path, ("id",), settings, two_turns or engine, chats, sampling,
                                          make_record, progress=progress, check_stored=check_stored)
    done = {rid: line for (rid,), line in stored.items()}

    scored = []
    for record, rid in zip(records, ids, strict=True):
        line = done[rid]
        prediction = scored_prediction(bench, line, record, extractor, llm, llm_name, strategy)
        scored.append({**record, "response": line["response"], "prediction": prediction})
    score_options = {"chat": llm} if extractor == "llm" and bench.NAME == "hallusionbench" else {}
    metrics = dict(bench.score(scored, **score_options))
    metrics.update({"benchmark": bench.NAME, "strategy": strategy, "n": len(scored), "extractor": extractor,
                    **reader, "generated": generated})
    return metrics


def _engine(choice: Any, model: Any, batch_size: int) -> Any:
    """The engine ``evaluate`` generates with: ``choice`` (an ``EngineChoice``, None for transformers) applied
    to ``model``; on transformers the model is loaded here (once: a ``LoadedModel`` is used as it is)."""
    from kit.llm.generate import EngineChoice, TransformersEngine, engine_for
    from kit.llm.models import load_model

    choice = choice if choice is not None else EngineChoice()
    if not isinstance(choice, EngineChoice):
        raise KitError(f"evaluate: engine must be a kit.llm.generate.EngineChoice or None, not {type(choice).__name__}")
    if choice.backend == "transformers":
        return TransformersEngine(load_model(model), batch_size=batch_size)
    return engine_for(choice, model, batch_size=batch_size)


def evaluate_many(
    model: Any,
    benchmarks: Mapping[str, str | Path],
    strategy: str = "direct",
    *,
    predictions_dir: str | Path | None = None,
    engine: Any = None,
    **options: Any,
) -> dict[str, dict]:
    """``evaluate`` on each ``name -> source`` with the model loaded once (on the transformers engine; the
    servers hold it on openai); predictions go to ``predictions_dir/<name>.jsonl`` when a folder is given.
    ``options`` are passed to ``evaluate``."""
    from kit.llm.generate import EngineChoice
    from kit.llm.models import load_model

    if "predictions_path" in options or "source" in options:
        raise KitError("evaluate_many: give sources in `benchmarks` and a folder as `predictions_dir`")
    if engine is None or (isinstance(engine, EngineChoice) and engine.backend == "transformers"):
        model = load_model(model)
    results = {}
    for name, source in benchmarks.items():
        path = Path(predictions_dir) / f"{name}.jsonl" if predictions_dir is not None else None
        results[name] = evaluate(model, name, strategy, source=source, predictions_path=path, engine=engine,
                                 **options)
    return results


STAGE_DONE = "metrics.json"  # what evaluate_stage writes last: its folder is finished once it exists


def evaluate_stage(
    model: str | Path,
    benchmarks: Mapping[str, str | Path],
    strategy: str,
    run_dir: str | Path,
    *,
    engine: Any = None,
    **options: Any,
) -> dict[str, dict]:
    """``evaluate_many`` as a pipeline stage: predictions and metrics in ``run_dir/eval-<hash>/``, the hash
    taken over the model's content (an adapter folder's, or the hub id), each benchmark's data, the strategy,
    the generation options and, for a backend other than transformers, the backend (``engine_key``: never
    the servers). Predictions are appended line by line, so a killed run resumes where it stopped;
    ``metrics.json`` is written last and a folder that has it is reused as it is.
    Returns ``benchmark name -> metrics``."""
    from kit.core.artifacts import atomic_write_json, resumable_stage

    params = _stage_params(model, benchmarks, strategy, engine, options)

    def build(folder: Path) -> dict[str, Any]:
        atomic_write_json(folder / "PARAMS.json", {**params, "model_path": str(model)})
        metrics = evaluate_many(model, benchmarks, strategy, predictions_dir=folder / "predictions", engine=engine,
                                **options)
        return {"params": params, "model_path": str(model), "metrics": metrics}

    _, done = resumable_stage(run_dir, "eval", params, build, done=STAGE_DONE)
    return done["metrics"]


def evaluate_stages(profile: Any, runs: Mapping[Any, Mapping[str, Any]], what: str = "evaluating") -> dict[Any, dict]:
    """``label -> evaluate_stage``'s keyword arguments (``model``, ``benchmarks``, ``strategy``, ``run_dir``, the
    options) in, ``label -> metrics`` out. The evaluations not yet done run first, side by side in the
    profile's ``stage_workers`` (``kit.core.parallel``); every result is then read back through
    ``evaluate_stage``."""
    from kit.core.parallel import Stage, run_stages

    run_stages(profile, [Stage(f"{Path(str(run['model'])).name} / {run['strategy']}",
                               stage_folder(**run) / STAGE_DONE, evaluate_stage, (), dict(run))
                         for run in runs.values()], what=what)
    return {label: evaluate_stage(**run) for label, run in runs.items()}


def stage_folder(model: str | Path, benchmarks: Mapping[str, str | Path], strategy: str, run_dir: str | Path, *,
                 engine: Any = None, **options: Any) -> Path:
    """The ``eval-<hash>`` folder ``evaluate_stage`` uses for these arguments (finished once it holds
    ``STAGE_DONE``)."""
    from kit.core.artifacts import stage_dir

    return stage_dir(run_dir, "eval", _stage_params(model, benchmarks, strategy, engine, options))


class ItemOutcome(NamedTuple):
    """One item of a finished evaluation, by the benchmark's own per-item rule: ``first`` is whether the first
    turn's answer was right (None for a one-turn strategy), ``final`` whether the scored answer was."""

    first: bool | None
    final: bool


def item_outcomes(model: str | Path, benchmarks: Mapping[str, str | Path], strategy: str, run_dir: str | Path, *,
                  engine: Any = None, **options: Any) -> dict[str, dict[str, ItemOutcome]]:
    """``benchmark -> item id -> ItemOutcome`` of the finished ``evaluate_stage`` with these arguments, read back from
    its predictions and scored item by item with ``bench.is_correct`` (what the paired tests and the reflection
    flips are counted from). Answers are read as the evaluation read them (``scored_prediction``); a two-turn
    item's first answer (its ``turns``) is read by the same reader. We-Math's rule is per question, not its
    strict and loose scores over whole problems."""
    from kit.eval.benchmarks._common import read_jsonl

    folder = stage_folder(model, benchmarks, strategy, run_dir, engine=engine, **options)
    if not (folder / STAGE_DONE).is_file():
        raise KitError(f"{folder}: the evaluation of {model} under {strategy} has not finished; run it "
                       "(evaluate_stage) before reading its items")
    extractor, llm, llm_name = options.get("extractor", "rules"), options.get("llm"), options.get("llm_name")
    outcomes: dict[str, dict[str, ItemOutcome]] = {}
    for name, source in benchmarks.items():
        bench = _benchmark(name)
        if not hasattr(bench, "is_correct"):
            raise KitError(f"{bench.NAME} has no per-item correctness rule (is_correct); its items cannot be compared")
        records = bench.load(source, split=options.get("split") or bench.DEFAULT_SPLIT, limit=options.get("limit"))
        path = folder / "predictions" / f"{name}.jsonl"
        lines = {str(line.get("id")): line for line in read_jsonl(path)}
        items = {}
        for record, rid in zip(records, item_ids(bench, records), strict=True):
            if rid not in lines:
                raise KitError(f"{path}: no line for item {rid} of {bench.NAME}; the folder does not hold this "
                               "evaluation's predictions")
            line = lines[rid]
            final = bench.is_correct(scored_prediction(bench, line, record, extractor, llm, llm_name, strategy), record)
            turns = line.get("turns")
            first = None
            if turns:
                first = bench.is_correct(extract_prediction(bench, turns[0], record, extractor, llm, strategy), record)
            items[rid] = ItemOutcome(None if first is None else bool(first), bool(final))
        outcomes[name] = items
    return outcomes


def _stage_params(model: str | Path, benchmarks: Mapping[str, str | Path], strategy: str, engine: Any,
                  options: Mapping[str, Any]) -> dict[str, Any]:
    from kit.core.artifacts import fingerprint
    from kit.llm.generate import engine_key

    if strategy not in STRATEGIES:
        raise KitError(f"evaluate: unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    keyed = {k: v for k, v in options.items() if k in ("limit", "max_new_tokens", "extractor", "split", "llm_name")}
    if keyed.get("extractor", "rules") == "rules":
        # The default reads by rules whatever llm_name says; leaving it out of the key keeps finding the stage
        # folders of runs made before the notebooks passed it.
        keyed.pop("extractor", None)
        keyed.pop("llm_name", None)
    return {"model": fingerprint(model), "strategy": strategy, "options": keyed,
            "benchmarks": {name: fingerprint(source) for name, source in benchmarks.items()}, **engine_key(engine)}


def _at_path(metrics: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    value: Any = metrics
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def metrics_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]]):
    """A ``pandas.DataFrame`` with one row per label and the headline number of each benchmark as columns
    (MathVista and MATH-V accuracy, We-Math strict/loose score, HallusionBench aAcc/fAcc/qAcc, MME
    perception/cognition, POPE accuracy/F1 averaged over its splits, SEED-Bench image accuracy,
    ScienceQA-IMG accuracy, AMBER score/CHAIR/F1), in registry order; a benchmark a label lacks is NaN."""
    import pandas as pd

    rows: dict[str, dict[str, Any]] = {}
    present: set[str] = set()
    for label, per_bench in results.items():
        row: dict[str, Any] = {}
        for name, metrics in per_bench.items():
            canonical = metrics.get("benchmark") if isinstance(metrics.get("benchmark"), str) else None
            canonical = _benchmark(canonical or name).NAME
            if canonical not in HEADLINES:
                raise KitError(f"metrics_table: no headline numbers known for benchmark {name!r}")
            present.add(canonical)
            for column, keys in HEADLINES[canonical]:
                value = _at_path(metrics, keys)
                row[column] = float("nan") if value is None else value
        rows[str(label)] = row
    columns = [column for name in _benchmarks.names() if name in present for column, _ in HEADLINES[name]]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).astype(float)


def extraction_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]]):
    """How the answers of a set of evaluations were read, as each evaluation recorded it: one row per benchmark
    and way of reading (``label -> benchmark name -> metrics``, as ``metrics_table`` takes), with the
    ``extractor``, the model that read them (``LLM``; ``-`` for rules), what that means for the benchmark, and
    how many evaluations read them so. A benchmark read two ways in one set gets two rows."""
    import pandas as pd

    counts: dict[tuple[str, str, str], int] = {}
    for per_bench in results.values():
        for name, metrics in per_bench.items():
            canonical = metrics.get("benchmark") if isinstance(metrics.get("benchmark"), str) else None
            canonical = _benchmark(canonical or name).NAME
            extractor = str(metrics.get("extractor") or "rules")  # evaluate() has always recorded it
            key = (canonical, extractor, str(metrics.get("extractor_model") or "-"))
            counts[key] = counts.get(key, 0) + 1
    order = {name: i for i, name in enumerate(_benchmarks.names())}
    rows = [{"benchmark": TITLES.get(name, name), "extractor": extractor, "LLM": model,
             "answers read by": READ_BY.get((name, extractor), NO_LLM_STEP), "evaluations": n}
            for (name, extractor, model), n in sorted(counts.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0]))]
    return pd.DataFrame(rows, columns=["benchmark", "extractor", "LLM", "answers read by", "evaluations"])
