"""EACO's tables and figure (arXiv 2412.04903), from the measurements of notebooks 06-08.

- ``main_table``: the base policy, + DPO with Critic pairs, + the extra SFT (= EACO) and the STIC-style
  baseline on HallusionBench, MME, MathVista and the radar benchmarks, with the relative improvements
  beside the paper's; ``critic_table`` the Critic's quality; ``training_table`` notebook 07's three training
  runs; ``radar_figure`` the paper's Figure 1 kind.
  Its ``average gain %``, set beside the paper's "8.5% improvement ... across multiple benchmarks", averages
  one number per benchmark (``average_columns``), not every column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kit.core.tables import relative_gain
from kit.errors import KitError
from kit.eval import evaluate as _evaluate
from kit.eval.baselines import BASELINE_ROW, baseline_sentence, with_baseline_row

MAIN_ROWS = ("base", "DPO (critic)", "EACO", "STIC")
# The paper's relative improvements of EACO over its base policy, in % (arXiv 2412.04903 v2, abstract:
# "reduces the overall hallucinations by 65.6% on HallusionBench and improves the reasoning ability by 21.8% on
# MME-Cognition. EACO achieves an 8.5% improvement over LLaVA-v1.6-Mistral-7B across multiple benchmarks").
# Which HallusionBench accuracy the 65.6 % is for is not said there, nor which benchmarks and metrics the
# 8.5 % averages: most likely the axes of its radar chart (Figure 1), so the kit averages one headline number
# per benchmark measured (kit.eval.evaluate.HEADLINE_METRIC; kit.core.deviations: eaco-average-basis).
PAPER_GAINS: dict[str, float] = {"HallusionBench": 65.6, "MME-C": 21.8, "average": 8.5}
PAPER_GAINS_SOURCE = "arXiv 2412.04903 v2, abstract"
# kit.eval.evaluate.HEADLINES labels -> the names the EACO tables use.
RENAME = {"MME perception": "MME-P", "MME cognition": "MME-C"}
FIRST_COLUMNS = ("HallusionBench aAcc", "HallusionBench fAcc", "HallusionBench qAcc", "MME-C", "MME-P", "MathVista")
# Columns where lower is better (the benchmarks' own ``higher_is_better``, kit.eval.evaluate.LOWER_IS_BETTER, as
# this table names them); their gain is computed with the sign flipped so that + always means better.
LOWER_IS_BETTER = tuple(RENAME.get(column, column) for column in _evaluate.LOWER_IS_BETTER)


def average_columns(columns: Sequence[str]) -> list[str]:
    """The headline columns ``average gain %`` averages, in the order given: one per benchmark, its
    ``kit.eval.evaluate.HEADLINE_METRIC`` as this table names it (HallusionBench aAcc, MME-P, MathVista, POPE F1,
    SEED-Bench image, ScienceQA-IMG, AMBER score when all are measured). Averaging every column instead would
    count HallusionBench three times, AMBER three times and POPE and MME twice."""
    from kit.eval.evaluate import HEADLINE_METRIC

    chosen = {RENAME.get(column, column) for column in HEADLINE_METRIC.values()}
    return [column for column in columns if column in chosen]


def average_sentence(table) -> str:
    """What a main table's ``average gain %`` averages, in words (for its note and the report)."""
    columns = average_columns([c for c in table.columns if "gain" not in c])
    return (f"`average gain %` is the mean of the {len(columns)} benchmarks' headline gains ({', '.join(columns)}; "
            "one number per benchmark; the paper does not say which benchmarks and metrics its average takes)")


def main_table(metrics: Mapping[str, Mapping[str, Mapping[str, Any]]],
               baseline: Mapping[str, Mapping[str, Any]] | None = None):
    """Rows ``base``, ``DPO (critic)``, ``EACO``, ``STIC`` (those given); columns ``HallusionBench aAcc``,
    ``HallusionBench fAcc``, ``HallusionBench qAcc``, ``MME-C``, ``MME-P``, ``MathVista``, then the other
    benchmarks measured (the radar ones), then ``<column> gain %`` over ``base`` for each, ``average gain %``
    (the mean over one headline gain per benchmark, ``average_columns``), and the paper's reported EACO
    gains on the EACO row (``HallusionBench gain % (paper)``:
    the paper does not say which HallusionBench accuracy; ``MME-C gain % (paper)``, ``average gain %
    (paper)``). With ``baseline`` (``kit.eval.baselines.blind_baseline``) a last row ``chance / majority`` holds a
    blind guesser's numbers (none for AMBER)."""
    from kit.eval.evaluate import metrics_table

    unknown = [label for label in metrics if label not in MAIN_ROWS]
    if unknown:
        raise KitError(f"EACO main table: unknown row(s) {unknown}; expected {', '.join(MAIN_ROWS)}")
    if "base" not in metrics:
        raise KitError("EACO main table: the relative improvements need the `base` row")
    table = metrics_table({label: metrics[label] for label in MAIN_ROWS if label in metrics}).rename(columns=RENAME)
    first = [c for c in FIRST_COLUMNS if c in table.columns]
    table = table[first + [c for c in table.columns if c not in first]]
    headline = list(table.columns)
    for column in headline:
        table[f"{column} gain %"] = [relative_gain(v, table.loc["base", column], column in LOWER_IS_BETTER)
                                     for v in table[column]]
    gains = table[[f"{c} gain %" for c in average_columns(headline)]]
    table["average gain %"] = gains.mean(axis=1, skipna=True).round(2)
    table.loc["base", [f"{c} gain %" for c in headline] + ["average gain %"]] = float("nan")
    on_eaco = {"HallusionBench gain % (paper)": PAPER_GAINS["HallusionBench"], "MME-C gain % (paper)":
               PAPER_GAINS["MME-C"], "average gain % (paper)": PAPER_GAINS["average"]}
    for column, value in on_eaco.items():
        table[column] = [value if label == "EACO" else float("nan") for label in table.index]
    table = with_baseline_row(table, baseline, RENAME)
    table.index.name = "model"
    return table


def critic_table(quality: Mapping[str, Mapping[str, Any]]):
    """One row per judge (e.g. the untrained base and the trained Critic) with ``kit.eaco.critic.critic_quality``'s
    numbers on the held-out ratings, accuracies in %."""
    import pandas as pd

    columns = {"n": "responses", "exact_accuracy": "exact score accuracy %", "spearman": "Spearman",
               "pairwise_accuracy": "pairwise preference accuracy %", "pairs": "pairs",
               "unparseable": "unparseable judgements"}
    rows = []
    for judge, numbers in quality.items():
        missing = [k for k in columns if k not in numbers]
        if missing:
            raise KitError(f"critic table: {judge} lacks {', '.join(missing)}")
        row = {"judge": judge, **{label: numbers[key] for key, label in columns.items()}}
        for key in ("exact_accuracy", "pairwise_accuracy"):  # critic_quality gives fractions
            row[columns[key]] = None if numbers[key] is None else round(100 * numbers[key], 2)
        rows.append(row)
    return pd.DataFrame(rows)


def radar_figure(table, title: str = "EACO: methods over benchmarks"):
    """A radar chart of the main table's rows over its headline columns, each axis scaled to the best row
    (1.0) so that benchmarks on different scales share the chart, as the paper's Figure 1 does. Columns where
    lower is better are inverted first. Returns the matplotlib figure."""
    import numpy as np
    from matplotlib import pyplot as plt

    table = table.drop(index=BASELINE_ROW, errors="ignore")  # the methods against each other; AMBER has no guess
    headline = [c for c in table.columns if "gain" not in c and not table[c].isna().all()]
    if len(headline) < 3:
        raise KitError(f"radar figure: needs at least 3 benchmark columns, the table has {headline}")
    values = table[headline].astype(float).copy()
    for column in headline:
        if column in LOWER_IS_BETTER:
            values[column] = values[column].max() - values[column]
        top = values[column].max()
        values[column] = values[column] / top if top and top > 0 else 0.0
    angles = np.linspace(0, 2 * np.pi, len(headline), endpoint=False).tolist()
    figure, axis = plt.subplots(figsize=(6.5, 6.5), subplot_kw={"polar": True})
    for label, row in values.iterrows():
        points = row.tolist()
        axis.plot(angles + angles[:1], points + points[:1], marker="o", label=label)
        axis.fill(angles + angles[:1], points + points[:1], alpha=0.08)
    axis.set_xticks(angles)
    axis.set_xticklabels(headline, fontsize=8)
    axis.set_yticklabels([])
    axis.set_title(title)
    axis.legend(loc="upper right", bbox_to_anchor=(1.25, 1.1), fontsize=8)
    figure.tight_layout()
    return figure



def training_table(dpo_critic: Mapping[str, Any], dpo_stic: Mapping[str, Any], eaco: Mapping[str, Any],
                   preference: Mapping[str, Any] | None = None):
    """Notebook 07's record of the three training runs: examples, steps, loss, the implicit rewards DPO logged
    at its first and last step, and seconds (``kit_dpo.json`` and ``kit_train.json`` contents). With ``preference``
    (``build_pairs``'s counts: ``images``, ``pairs``) the DPO rows also say on how many of the sampled images the
    pairs were made: a Critic that scores every answer alike leaves most images without a pair."""
    import pandas as pd

    def dpo_row(stage: str, r: Mapping[str, Any], pairs: int | None) -> dict[str, Any]:
        row = {"stage": stage, "examples": r["pairs"], "steps": r["steps"], "loss": r["train_loss"],
               "reward chosen (first, last)": r["rewards_chosen"], "reward rejected (first, last)": r["rewards_rejected"],
               "margin (first, last)": r["reward_margin"], "seconds": r["seconds"]}
        if preference is not None:
            row["images with a pair %"] = 100 * pairs / preference["images"] if preference["images"] else float("nan")
        return row

    critic_pairs = None if preference is None else preference["pairs"]
    return pd.DataFrame([
        dpo_row("DPO (critic pairs)", dpo_critic, critic_pairs), dpo_row("DPO (STIC pairs)", dpo_stic, dpo_stic["pairs"]),
        {"stage": "extra SFT (continues DPO critic)", "examples": eaco["examples"], "steps": eaco["steps"],
         "loss": eaco["train_loss"], "seconds": eaco["seconds"]},
    ])


def describe_main(table, profile: str, seeds_table=None) -> str:
    """Plain sentences about an EACO ``main_table``: each method's average gain and its largest and smallest
    one, and with ``seeds_table`` (``kit.core.tables.spread_table`` over seeds) how far the average gain and the
    paper's two headline gains move with the seed. Every number comes from the tables."""
    gains = [c for c in table.columns if c.endswith(" gain %") and c != "average gain %"]
    lines = [f"Measured on the `{profile}` profile; {average_sentence(table)}."]
    for label in ("DPO (critic)", "EACO", "STIC"):
        if label not in table.index:
            continue
        row = table.loc[label, gains].dropna()
        if row.empty:
            lines.append(f"- **{label}**: no benchmark has a relative gain (every base score is 0).")
            continue
        lines.append(f"- **{label}**: average gain {table.loc[label, 'average gain %']:+.2f} % over the base; largest "
                     f"on {row.idxmax().removesuffix(' gain %')} ({row.max():+.2f} %), smallest on "
                     f"{row.idxmin().removesuffix(' gain %')} ({row.min():+.2f} %).")
    if BASELINE_ROW in table.index:
        headline = [c for c in table.columns if "gain" not in c]
        lines.append(baseline_sentence(table, headline, [r for r in table.index if r != BASELINE_ROW], LOWER_IS_BETTER))
    if seeds_table is not None:
        from kit.core.tables import spread_sentence

        spread = [spread_sentence(seeds_table, label, metric) for label in ("DPO (critic)", "EACO", "STIC")
                  for metric in ("average gain %", "HallusionBench aAcc gain %", "MME-C gain %")]
        lines.extend(f"- {sentence}." for sentence in spread if sentence)
    return "\n".join(lines)
