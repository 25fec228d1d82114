"""Evaluate a vision-language model on a benchmark: batched greedy generation, resumable predictions,
the benchmark's own extraction and score.

::

    from kit.evaluate import evaluate, evaluate_many, metrics_table
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
  holds ``id, benchmark, strategy, model, max_new_tokens, prompt, response, extractor, prediction``.
  Resuming with another benchmark, strategy, model, token budget or prompt is refused (``KitError``)
  rather than mixing two runs in one file.
- ``extractor="rules"``: MathVista uses ``mathvista.extract_rules`` (the tiny profile's rules-only
  extraction, a documented deviation), every other benchmark its own official ``extract``.
  ``extractor="llm"`` passes ``llm(prompt) -> str`` to the official LLM steps: MathVista's answer
  extractor and HallusionBench's GPT-style judge (``score(chat=llm)``). MATH-V, We-Math, MME, POPE,
  SEED-Bench, ScienceQA and AMBER have no LLM step in their official evaluation, so they keep their rule
  extraction.

Strategies: only ``direct`` for now. The released Cas-SEAT code (github.com/HelloZicky/Cas-SEAT,
``self-evaluate/evaluation/generate_response.py``) has the SEAT self-evaluation prompt and the plain
benchmark query, but no separate "let's think step by step" prompt, so a ``cot`` strategy is not invented
here (MATH-V's standard prompt already asks for step-by-step solutions). The SEAT and Cas-SEAT prompts
join ``STRATEGIES`` with the Cas-SEAT pipeline.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from kit.errors import KitError

logger = logging.getLogger(__name__)

EXTRACTORS = ("rules", "llm")


def _direct_prompt(bench: ModuleType, record: Mapping[str, Any]) -> str:
    return bench.build_prompt(record)


# strategy name -> prompt builder (benchmark module, record) -> user text
STRATEGIES: dict[str, Callable[[ModuleType, Mapping[str, Any]], str]] = {
    "direct": _direct_prompt,
}

# benchmark -> [(column label, path of keys into the metrics)], the numbers the papers' tables report.
HEADLINES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "mathvista": [("MathVista", ("accuracy",))],
    "mathv": [("MATH-V", ("accuracy",))],
    "wemath": [("We-Math strict", ("strict", "score")), ("We-Math loose", ("loose", "score"))],
    "hallusionbench": [("HallusionBench aAcc", ("aAcc",)), ("HallusionBench fAcc", ("fAcc",)),
                       ("HallusionBench qAcc", ("qAcc",))],
    "mme": [("MME perception", ("perception",)), ("MME cognition", ("cognition",))],
    "pope": [("POPE accuracy", ("accuracy",)), ("POPE F1", ("f1",))],
    "seed": [("SEED-Bench image", ("accuracy",))],
    "scienceqa": [("ScienceQA-IMG", ("accuracy",))],
    "amber": [("AMBER score", ("amber_score",)), ("AMBER CHAIR", ("generative", "CHAIR")),
              ("AMBER F1", ("discriminative", "F1"))],
}


# ------------------------------------------------------------------------------------------ helpers
def _benchmark(benchmark: str | ModuleType) -> ModuleType:
    from kit import benchmarks

    if isinstance(benchmark, ModuleType):
        missing = [name for name in ("load", "build_prompt", "extract", "score", "record_id", "NAME")
                   if not hasattr(benchmark, name)]
        if missing:
            raise KitError(f"benchmark module {benchmark.__name__} lacks {', '.join(missing)}")
        return benchmark
    return benchmarks.get(benchmark)


def load_model(model: Any) -> Any:
    """``model`` itself when it is a ``LoadedModel``, else ``kit.models.load(model)``."""
    from kit.models import LoadedModel, load

    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str | Path):
        return load(model)
    raise KitError(f"model must be a LoadedModel, a local folder or a hub id, not {type(model).__name__}")


def model_label(loaded: Any) -> str:
    """The model's identity as written to prediction files: its source, plus the adapter if any."""
    return f"{loaded.source}+{loaded.adapter}" if loaded.adapter else str(loaded.source)


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
                       llm: Callable[[str], str] | None = None) -> Any:
    """The answer in ``response`` by the chosen extractor (see the module docstring)."""
    if bench.NAME == "mathvista":
        if extractor == "llm":
            return bench.extract(response, record, llm=llm)
        return bench.extract_rules(response, record)
    return bench.extract(response, record)


@contextlib.contextmanager
def _left_padding(tokenizer) -> Iterator[None]:
    # Rows of a batch grow at their right end during generation, so padding must sit on the left.
    before = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = before


def _open_image(rid: str, path: str):
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise KitError(f"record {rid}: image file {path} not found") from None
    except OSError as err:
        raise KitError(f"record {rid}: cannot read image file {path}: {err}") from None


def _chat_text(processor, prompt: str, with_image: bool) -> str:
    content = [{"type": "image"}] if with_image else []
    content.append({"type": "text", "text": prompt})
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)


def generate_batch(loaded: Any, prompts: list[str], image_paths: list[str | None], ids: list[str],
                   max_new_tokens: int) -> list[str]:
    """Greedy responses for one batch; either every item has an image or none has."""
    import torch

    with_image = image_paths[0] is not None
    if any((path is not None) != with_image for path in image_paths):
        raise KitError("a batch must hold only image items or only text-only items")
    processor = loaded.processor
    texts = [_chat_text(processor, prompt, with_image) for prompt in prompts]
    images = [_open_image(rid, path) for rid, path in zip(ids, image_paths, strict=True)] if with_image else None
    with _left_padding(processor.tokenizer):
        batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    device = next(loaded.model.parameters()).device
    batch = batch.to(device)
    with torch.inference_mode():
        output = loaded.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True)
    new_tokens = output[:, batch["input_ids"].shape[1]:]
    return processor.batch_decode(new_tokens, skip_special_tokens=True)


def _check_resumed(line: Mapping[str, Any], expected: Mapping[str, Any], path: Path) -> None:
    for field, value in expected.items():
        if line.get(field) != value:
            raise KitError(
                f"{path}: item {line.get('id')} was written with {field}={line.get(field)!r}, this run has "
                f"{value!r}; use another predictions file (or delete this one) instead of mixing runs"
            )


def _batches(order: list[int], batch_size: int) -> list[list[int]]:
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


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
    progress: bool = True,
) -> dict:
    """Generate, extract and score ``benchmark`` for ``model`` (a ``LoadedModel`` or a name/path for
    ``kit.models.load``); ``source`` is the dataset folder or hub id. Returns ``bench.score(...)`` plus
    ``benchmark``, ``strategy``, ``n`` (items scored), ``extractor`` and ``generated`` (items generated by
    this call; the rest came from ``predictions_path``)."""
    from tqdm.auto import tqdm

    from kit.artifacts import JsonlAppender

    bench = _benchmark(benchmark)
    if source is None:
        raise KitError(f"evaluate: source is required (the {bench.NAME} folder or hub id {bench.HUB_ID!r})")
    if strategy not in STRATEGIES:
        raise KitError(f"evaluate: unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if extractor not in EXTRACTORS:
        raise KitError(f"evaluate: unknown extractor {extractor!r}; expected one of {', '.join(EXTRACTORS)}")
    if extractor == "llm" and llm is None:
        raise KitError("evaluate: extractor='llm' needs llm=callable(prompt) -> str")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise KitError(f"evaluate: batch_size must be a whole number >= 1, not {batch_size!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise KitError(f"evaluate: max_new_tokens must be a whole number >= 1, not {max_new_tokens!r}")

    records = bench.load(source, split=split or bench.DEFAULT_SPLIT, limit=limit)
    if not records:
        raise KitError(f"evaluate: {bench.NAME} at {source} has no records (split {split or bench.DEFAULT_SPLIT})")
    ids = item_ids(bench, records)
    prompts = [STRATEGIES[strategy](bench, record) for record in records]
    loaded = load_model(model)
    settings = {"benchmark": bench.NAME, "strategy": strategy, "model": model_label(loaded),
                "max_new_tokens": max_new_tokens}

    appender = JsonlAppender(predictions_path, ("id",)) if predictions_path is not None else None
    done: dict[str, dict] = {}
    try:
        if appender is not None:
            stored = {line["id"]: line for line in appender.records()}
            for position, rid in enumerate(ids):
                if rid in stored:
                    _check_resumed(stored[rid], {**settings, "prompt": prompts[position]}, appender.path)
                    done[rid] = stored[rid]
        pending = [i for i, rid in enumerate(ids) if rid not in done]
        for i in pending:  # fail before any generation rather than after hours of it
            path = records[i].get("image_path")
            if path is not None and not Path(path).is_file():
                raise KitError(f"{bench.NAME}: record {ids[i]}: image file {path} not found")

        tokenizer = loaded.processor.tokenizer
        groups = ([i for i in pending if records[i].get("image_path") is not None],
                  [i for i in pending if records[i].get("image_path") is None])
        bar = tqdm(total=len(pending), desc=f"{bench.NAME} {strategy}", disable=not progress, leave=False)
        for group in groups:
            # Longest prompts first: similar lengths share a batch, and the largest batch runs first so an
            # out-of-memory error shows at once instead of near the end.
            lengths = {i: len(tokenizer(prompts[i])["input_ids"]) for i in group}
            order = sorted(group, key=lambda i: (-lengths[i], i))
            for chunk in _batches(order, batch_size):
                responses = generate_batch(loaded, [prompts[i] for i in chunk],
                                           [records[i].get("image_path") for i in chunk],
                                           [ids[i] for i in chunk], max_new_tokens)
                for i, response in zip(chunk, responses, strict=True):
                    line = {"id": ids[i], **settings, "prompt": prompts[i], "response": response,
                            "extractor": extractor,
                            "prediction": extract_prediction(bench, response, records[i], extractor, llm)}
                    if appender is not None:
                        appender.append(line)
                    done[ids[i]] = line
                bar.update(len(chunk))
        bar.close()
    finally:
        if appender is not None:
            appender.close()

    scored = []
    for record, rid in zip(records, ids, strict=True):
        line = done[rid]
        prediction = line["prediction"]
        if line.get("extractor") != extractor:
            prediction = extract_prediction(bench, line["response"], record, extractor, llm)
        scored.append({**record, "response": line["response"], "prediction": prediction})
    score_options = {"chat": llm} if extractor == "llm" and bench.NAME == "hallusionbench" else {}
    metrics = dict(bench.score(scored, **score_options))
    metrics.update({"benchmark": bench.NAME, "strategy": strategy, "n": len(scored), "extractor": extractor,
                    "generated": len(pending)})
    return metrics


def evaluate_many(
    model: Any,
    benchmarks: Mapping[str, str | Path],
    strategy: str = "direct",
    *,
    predictions_dir: str | Path | None = None,
    **options: Any,
) -> dict[str, dict]:
    """``evaluate`` on each ``name -> source`` with the model loaded once; predictions go to
    ``predictions_dir/<name>.jsonl`` when a folder is given. ``options`` are passed to ``evaluate``."""
    if "predictions_path" in options or "source" in options:
        raise KitError("evaluate_many: give sources in `benchmarks` and a folder as `predictions_dir`")
    loaded = load_model(model)
    results = {}
    for name, source in benchmarks.items():
        path = Path(predictions_dir) / f"{name}.jsonl" if predictions_dir is not None else None
        results[name] = evaluate(loaded, name, strategy, source=source, predictions_path=path, **options)
    return results


def _dig(metrics: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
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

    from kit import benchmarks

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
                value = _dig(metrics, keys)
                row[column] = float("nan") if value is None else value
        rows[str(label)] = row
    columns = [column for name in benchmarks.names() if name in present for column, _ in HEADLINES[name]]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).astype(float)
