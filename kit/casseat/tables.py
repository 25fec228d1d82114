"""The Cas-SEAT paper's result tables (arXiv 2501.05662), built from measured metrics.

- ``main_table``: the teacher, the student before training (``base``), after SEAT training and after
  Cas-SEAT training, each under its own inference strategy, on MathVista, MATH-Vision and We-Math, with the
  relative improvement over the base beside the paper's reported one. The paper reports its gains
  "compared to existing methods" (``PAPER_BASELINE``), which need not be the untrained student: the two
  columns are set side by side, not claimed to measure the same thing.
- ``sweep_table``: one ablation axis (data quantity, CoT : evaluation mix) against the same headline numbers.
- ``grid_table``: long against cascaded prompts, at training (which set the student learnt from) and at
  inference (which strategy it answers with).
- ``reflection_table``: what the cascade's reflection turn changes, item by item: the answers it turns from
  wrong to right beside those it turns from right to wrong.
- ``paired_table``: a trained student against the base on the same items, with McNemar's exact test
  (``kit.core.stats``), so a gain can be told from noise.

The metrics are ``kit.eval.evaluate`` results (``benchmark name -> metrics``); the columns are
``kit.eval.evaluate.HEADLINES``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kit.core.tables import relative_gain
from kit.errors import KitError
from kit.eval.baselines import BASELINE_ROW, baseline_sentence, with_baseline_row

# Cas-SEAT's relative improvements, in %, as the paper's v1 abstract gives them (arxiv.org/html/2501.05662v1):
# "Experiments show that, compared to existing methods, Cas-SEAT significantly enhances [...], improving
# performance by 19.68%, 55.57%, and 46.79% on the MathVista, Math-V, and We-Math datasets, respectively."
# (The words at [...] were cut off in every copy we could read.) The baseline is "existing methods", not
# necessarily the untrained student that the kit's gains are measured against, and the paper does not say
# which We-Math score (strict or loose) its figure is for.
PAPER_GAINS: dict[str, float] = {"MathVista": 19.68, "MATH-V": 55.57, "We-Math": 46.79}
PAPER_GAINS_SOURCE = "arXiv 2501.05662 v1, abstract"
PAPER_BASELINE = "existing methods"  # what the abstract's gains are relative to
MAIN_ROWS = ("teacher", "base", "SEAT", "Cas-SEAT")


def _paper_gain(column: str) -> float:
    return PAPER_GAINS["We-Math" if column.startswith("We-Math") else column]


def main_table(metrics: Mapping[str, Mapping[str, Mapping[str, Any]]],
               baseline: Mapping[str, Mapping[str, Any]] | None = None):
    """Rows ``teacher``, ``base``, ``SEAT``, ``Cas-SEAT`` (those given, in that order); columns the headline
    numbers (``MathVista``, ``MATH-V``, ``We-Math strict``, ``We-Math loose``), then ``<column> gain %`` (over
    ``base``) and ``<column> gain % (paper)``, the paper's figure on the Cas-SEAT row (a gain over
    ``PAPER_BASELINE``, "existing methods", not necessarily over the base). With ``baseline``
    (``kit.eval.baselines.blind_baseline``) a last row ``chance / majority`` holds a blind guesser's numbers."""
    from kit.eval.evaluate import metrics_table

    unknown = [label for label in metrics if label not in MAIN_ROWS]
    if unknown:
        raise KitError(f"main table: unknown row(s) {unknown}; expected {', '.join(MAIN_ROWS)}")
    if "base" not in metrics:
        raise KitError("main table: the relative improvements need the `base` row")
    table = metrics_table({label: metrics[label] for label in MAIN_ROWS if label in metrics})
    headline = list(table.columns)
    for column in headline:
        table[f"{column} gain %"] = [relative_gain(v, table.loc["base", column]) for v in table[column]]
    for column in headline:
        table[f"{column} gain % (paper)"] = [
            _paper_gain(column) if label == "Cas-SEAT" else float("nan") for label in table.index]
    table.loc["base", [f"{c} gain %" for c in headline]] = float("nan")  # the base against itself says nothing
    table = with_baseline_row(table, baseline)
    table.index.name = "model"
    return table


def sweep_table(results: Mapping[Any, Mapping[str, Mapping[str, Any]]], axis: str):
    """One row per value of an ablation ``axis`` (e.g. ``examples``), in the order given, with the headline
    numbers as columns."""
    from kit.eval.evaluate import metrics_table

    table = metrics_table({str(value): per_bench for value, per_bench in results.items()})
    table.insert(0, axis, list(results))
    return table.reset_index(drop=True)


def grid_table(results: Mapping[tuple[str, str], Mapping[str, Mapping[str, Any]]],
               axes: tuple[str, str] = ("trained on", "strategy")):
    """One row per ``(first axis, second axis)`` pair (e.g. the set the student learnt from and the strategy
    it answers with), with the headline numbers as columns."""
    from kit.eval.evaluate import metrics_table

    keys = list(results)
    table = metrics_table({f"{a} / {b}": results[(a, b)] for a, b in keys})
    table.insert(0, axes[1], [b for _, b in keys])
    table.insert(0, axes[0], [a for a, _ in keys])
    return table.reset_index(drop=True)


def mix_label(cot_fraction: float) -> str:
    """``0.25`` -> ``"1:3"``: CoT examples to self-evaluation examples, in lowest terms."""
    from fractions import Fraction

    share = Fraction(cot_fraction).limit_denominator(100)
    return f"{share.numerator}:{share.denominator - share.numerator}"


def student_sets(trainsets_folder: str | Path, quantities: list[int],
                 mixing_cot_fractions: list[float]) -> dict[str, Path]:
    """Student name -> training set file of a ``kit.casseat.trainsets.build_trainsets`` folder: ``seat``, ``cas_seat``,
    ``cas_seat_n<N>`` for each quantity and ``cas_seat_mix<P>`` for each mixing share."""
    from kit.casseat.trainsets import mixing_name

    folder = Path(trainsets_folder)
    names = ["seat", "cas_seat", *(f"cas_seat_n{n}" for n in quantities),
             *(mixing_name(f) for f in mixing_cot_fractions)]
    paths = {name: folder / f"{name}.jsonl" for name in names}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise KitError(f"training sets missing: {', '.join(missing)}; run notebook 02 with the same "
                       "trainsets.quantities and trainsets.mixing_cot_fractions first")
    return paths


def describe_main(table, profile: str, seeds_table=None) -> str:
    """Plain sentences about a ``main_table``: which rows beat the base where, and by how much against the
    paper's figure, and with ``seeds_table`` (``kit.core.tables.spread_table`` over seeds) how far each gain moves
    with the seed. Every number comes from the tables."""
    headline = [c for c in table.columns if "gain" not in c]
    lines = [f"Measured on the `{profile}` profile."]
    for row in ("SEAT", "Cas-SEAT"):
        if row not in table.index:
            continue
        parts = []
        for column in headline:
            gain = table.loc[row, f"{column} gain %"]
            if math.isnan(gain):
                continue
            paper = table.loc[row, f"{column} gain % (paper)"]
            beside = "" if math.isnan(paper) else f" (paper: {paper:+.2f} % over {PAPER_BASELINE})"
            parts.append(f"{column} {table.loc['base', column]:.2f} → {table.loc[row, column]:.2f}, "
                         f"{gain:+.2f} %{beside}")
        lines.append(f"- **{row}** against the base: " + "; ".join(parts) + ".")
    zero = [c for c in headline if table.loc["base", c] == 0]
    if zero:
        models = table.drop(index=BASELINE_ROW, errors="ignore")
        lines.append(f"- The base scores 0 on {', '.join(zero)}: no relative gain can be computed there"
                     + (" (every model scores 0)." if all((models[c] == 0).all() for c in zero) else "."))
    if "teacher" in table.index and "Cas-SEAT" in table.index:
        closer = [c for c in headline if 0 < table.loc["teacher", c] <= table.loc["Cas-SEAT", c]]
        lines.append("- The Cas-SEAT student " + (f"reaches the teacher on {', '.join(closer)}." if closer
                                                 else "stays below the teacher on every benchmark."))
    if BASELINE_ROW in table.index:
        lines.append(baseline_sentence(table, headline, [r for r in table.index if r != BASELINE_ROW]))
    if seeds_table is not None:
        from kit.core.tables import spread_sentence

        spread = [spread_sentence(seeds_table, row, f"{column} gain %") for row in ("SEAT", "Cas-SEAT")
                  for column in headline]
        lines.extend(f"- {sentence}." for sentence in spread if sentence)
    return "\n".join(lines)


def _title(benchmark: str) -> str:
    from kit.eval.evaluate import TITLES

    return TITLES.get(benchmark, benchmark) + (" (per question)" if benchmark == "wemath" else "")


def reflection_table(outcomes: Mapping[str, Mapping[str, Mapping[str, Any]]]):
    """One row per (model, benchmark) from ``label -> kit.eval.evaluate.item_outcomes`` of two-turn evaluations:
    the accuracy of the first answer and of the answer after the reflection turn, and the items the reflection
    turned wrong -> right and right -> wrong. We-Math counts single questions (its strict and loose scores need
    whole problems)."""
    import pandas as pd

    rows = []
    for label, benchmarks in outcomes.items():
        for benchmark, items in benchmarks.items():
            pairs = [(o.first, o.final) for o in items.values()]
            if any(first is None for first, _ in pairs):
                raise KitError(f"reflection table: {label} on {benchmark} was not evaluated with two turns")
            fixed = sum(not first and final for first, final in pairs)
            broken = sum(first and not final for first, final in pairs)
            rows.append({"model": label, "benchmark": _title(benchmark), "items": len(pairs),
                         "first answer %": 100 * sum(first for first, _ in pairs) / len(pairs),
                         "after reflection %": 100 * sum(final for _, final in pairs) / len(pairs),
                         "wrong -> right": fixed, "right -> wrong": broken,
                         "wrong -> right per right -> wrong": fixed / broken if broken else float("nan")})
    return pd.DataFrame(rows)


def paired_table(comparisons: Mapping[tuple[str, str, Any], tuple[Mapping[str, Mapping[str, Any]],
                                                                   Mapping[str, Mapping[str, Any]]]]):
    """``(model, against, seed) -> (the model's item_outcomes, the other's item_outcomes)`` (e.g. one spread seed's
    Cas-SEAT student against the base, or against that seed's SEAT student): per benchmark, the items both got
    right, those only the model or only the other got right, the accuracy difference model - other in points and
    McNemar's exact p-value (``kit.core.stats.paired``)."""
    import pandas as pd

    from kit.core.stats import paired

    rows = []
    for (model, against, seed), (a, b) in comparisons.items():
        if set(a) != set(b):
            raise KitError(f"paired table: {model} and {against} were evaluated on different benchmarks "
                           f"({sorted(a)} against {sorted(b)})")
        for benchmark in a:
            result = paired({i: o.final for i, o in a[benchmark].items()}, {i: o.final for i, o in b[benchmark].items()})
            rows.append({"model": model, "against": against, "seed": seed, "benchmark": _title(benchmark),
                         "items": result["items"], "both right": result["both right"], "only model": result["only A"],
                         "only the other": result["only B"], "neither": result["neither"],
                         "difference (points)": result["difference (points)"], "McNemar p": result["McNemar p"]})
    return pd.DataFrame(rows)


def describe_reflection(table) -> str:
    """A sentence per model of a ``reflection_table``: how many answers the reflection fixed and broke."""
    lines = []
    for model, rows in table.groupby("model", sort=False):
        fixed, broken = int(rows["wrong -> right"].sum()), int(rows["right -> wrong"].sum())
        verdict = ("fixes more answers than it breaks" if fixed > broken else
                   "breaks more answers than it fixes" if broken > fixed else "fixes as many answers as it breaks")
        lines.append(f"- The reflection turn of **{model}** {verdict}: {fixed} wrong -> right against {broken} "
                     f"right -> wrong over {int(rows['items'].sum())} items.")
    return "\n".join(lines)


def describe_paired(table, alpha: float = 0.05) -> str:
    """Per comparison and benchmark of a ``paired_table``: the differences over the seeds, and how many are more
    than noise at ``alpha`` (McNemar's exact test)."""
    lines = []
    for (model, against, benchmark), rows in table.groupby(["model", "against", "benchmark"], sort=False):
        significant = rows[rows["McNemar p"] < alpha]
        signs = ", ".join(f"{d:+.2f}" for d in rows["difference (points)"])
        lines.append(f"- {model} against {against} on {benchmark}: {signs} points (seeds "
                     f"{', '.join(map(str, rows['seed']))}); {len(significant)} of {len(rows)} significant at "
                     f"p < {alpha}.")
    return "\n".join(lines)


def training_table(students: Mapping[str, Mapping[str, Any]]):
    """Notebook 04's record of every student's run (``kit_train.json`` contents): examples, steps, mean loss,
    seconds, samples/s and the backend that ran."""
    import pandas as pd

    return pd.DataFrame([{"student": name, "examples": r["examples"], "steps": r["steps"], "train loss": r["train_loss"],
                          "seconds": r["seconds"], "samples/s": r["samples_per_second"], "backend": r["backend"]}
                         for name, r in students.items()])
