"""Chance and majority baselines: what a benchmark's own scorer gives a guesser that neither sees the picture nor
reads the question, so that every headline number can be read against the score of knowing nothing.

A benchmark module that has ``blind_choices(record, records)`` lists, per item, the predictions such a guesser picks
from uniformly: the options of a multiple-choice or yes/no item (chance), or for a free-form item the single most
common gold answer among items of its kind (majority). The baseline is the mean of each headline metric
(``kit.eval.evaluate.HEADLINES``) over ``DRAWS`` seeded draws scored by ``bench.score``, so composite metrics (We-Math's
strict and loose scores, HallusionBench's question-pair and figure accuracies, MME's accuracy+) get their true chance
level rather than 1/k. Benchmarks without the function (AMBER: an empty caption would score a perfect CHAIR) have no
baseline.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BASELINE_ROW = "chance / majority"  # the main tables' row for the blind guesser
DRAWS = 100  # at 300 items the mean of 100 draws has a standard error under 0.3 points
SEED = 0


def blind_metrics(benchmark: str, records: list[Mapping[str, Any]], *, draws: int = DRAWS,
                  seed: int = SEED) -> dict[str, Any] | None:
    """The blind guesser's metrics on ``records``, shaped like ``bench.score``'s for the headline paths only (each the
    mean over ``draws``), or None when the benchmark has no ``blind_choices``."""
    from kit.eval import benchmarks
    from kit.eval.evaluate import HEADLINES, _at_path

    bench = benchmarks.get(benchmark)
    if not hasattr(bench, "blind_choices"):
        return None
    choices = [bench.blind_choices(record, records) for record in records]
    rng = random.Random(seed)
    totals: dict[tuple[str, ...], float] = {}
    for _ in range(draws):
        metrics = bench.score([{**record, "prediction": rng.choice(options)}
                               for record, options in zip(records, choices, strict=True)])
        for _, keys in HEADLINES[bench.NAME]:
            totals[keys] = totals.get(keys, 0.0) + float(_at_path(metrics, keys) or 0.0)
    shaped: dict[str, Any] = {"benchmark": bench.NAME, "n": len(records), "draws": draws}
    for keys, total in totals.items():
        target = shaped
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = round(total / draws, 4)  # the draws leave float noise in the last digits
    return shaped


def blind_baseline(benchmarks: Mapping[str, str | Path], *, limit: int | None = None,
                   split: str | None = None) -> dict[str, dict[str, Any]]:
    """``benchmark -> blind_metrics`` on the items an evaluation with the same sources, ``limit`` and ``split``
    scores (benchmarks without a baseline are left out)."""
    from kit.eval import benchmarks as registry

    result = {}
    for name, source in benchmarks.items():
        bench = registry.get(name)
        records = bench.load(source, split=split or bench.DEFAULT_SPLIT, limit=limit)
        metrics = blind_metrics(name, records)
        if metrics is not None:
            result[name] = metrics
    return result


def with_baseline_row(table, baseline: Mapping[str, Mapping[str, Any]] | None, rename: Mapping[str, str] | None = None):
    """``table`` (a main table: one row per model, headline columns first) with ``BASELINE_ROW`` appended: the blind
    guesser's headline numbers (``blind_baseline``) in their columns, NaN everywhere else (its gains say nothing)."""
    from kit.eval.evaluate import metrics_table

    if baseline is None:
        return table
    row = metrics_table({BASELINE_ROW: baseline}).rename(columns=dict(rename or {}))
    table = table.copy()
    table.loc[BASELINE_ROW] = row.reindex(columns=table.columns).iloc[0]
    return table


MARGIN = 10.0  # points above the blind guess that count as skill (issue 17's bar for a base model)


def baseline_sentence(table, columns: list[str], rows: list[str], lower_is_better: tuple[str, ...] = ()) -> str:
    """A Markdown bullet on a main table with ``BASELINE_ROW``: the blind guesser's numbers, and which rows beat it
    by ``MARGIN`` points or more in which columns (columns without a baseline are left out)."""
    import math

    guessed = [c for c in columns if not math.isnan(table.loc[BASELINE_ROW, c])]
    if not guessed:
        return f"- No benchmark here has a `{BASELINE_ROW}` baseline."
    numbers = ", ".join(f"{c} {table.loc[BASELINE_ROW, c]:.2f}" for c in guessed)
    beating = []
    for row in rows:
        won = [c for c in guessed if (table.loc[BASELINE_ROW, c] - table.loc[row, c] if c in lower_is_better
                                      else table.loc[row, c] - table.loc[BASELINE_ROW, c]) >= MARGIN]
        if won:
            beating.append(f"{row} on {', '.join(won)}")
    return (f"- A blind guess (`{BASELINE_ROW}`: a random option, or the most common gold answer on free-form items, "
            f"scored by each benchmark's own rule) scores {numbers}. At least {MARGIN:g} points better than it: "
            + ("; ".join(beating) if beating else "no row on any benchmark") + ".")
