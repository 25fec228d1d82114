"""Where notebooks put what a reader looks at: ``results/tables/NAME.csv`` + ``NAME.md`` and
``results/figures/NAME.png``, each written atomically so a killed run never leaves half a table.

With ``run_dir`` the same files also go into the run folder (``<run>/tables``, ``<run>/figures``):
``results/`` holds the latest run's tables, the run folder keeps its own, so that two runs can be
compared (``kit report --compare``) and a report names the run each number came from."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kit import REPO_DIR
from kit.core.artifacts import atomic_write_bytes, atomic_write_text
from kit.errors import KitError

RESULTS_DIR = REPO_DIR / "results"


def _destinations(results_dir: str | Path, run_dir: str | Path | None, kind: str) -> list[Path]:
    folders = [Path(results_dir) / kind]
    if run_dir is not None:
        folders.append(Path(run_dir) / kind)
    return folders


def write_table(
    frame: Any, name: str, results_dir: str | Path = RESULTS_DIR, note: str = "", *, run_dir: str | Path | None = None
) -> Path:
    """Write a pandas DataFrame as CSV and Markdown; ``note`` goes under the Markdown table (what
    the numbers are, e.g. "measured on the tiny profile's models")."""
    csv = frame.to_csv(index=False)
    markdown = frame.to_markdown(index=False) + ("\n\n" + note if note else "") + "\n"
    folders = _destinations(results_dir, run_dir, "tables")
    for folder in folders:
        atomic_write_text(folder / f"{name}.csv", csv)
        atomic_write_text(folder / f"{name}.md", markdown)
    return folders[0] / f"{name}.csv"


def save_figure(
    figure: Any, name: str, results_dir: str | Path = RESULTS_DIR, dpi: int = 110, *, run_dir: str | Path | None = None
) -> Path:
    """Save a matplotlib figure as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    folders = _destinations(results_dir, run_dir, "figures")
    for folder in folders:
        atomic_write_bytes(folder / f"{name}.png", buffer.getvalue())
    return folders[0] / f"{name}.png"


def relative_gain(value: float, base: float, lower_is_better: bool = False) -> float:
    """``100 * (value - base) / base``, the papers' relative improvement, rounded to 0.01 (sign flipped where
    lower is better, so that + always means better); NaN when the base is 0 or either number is missing."""
    if base is None or value is None or math.isnan(base) or math.isnan(value) or base == 0:
        return float("nan")
    gain = 100 * (value - base) / base
    return round(-gain if lower_is_better else gain, 2)


def spread_table(tables_by_seed: Mapping[int, Any], rows: Sequence[str]) -> Any:
    """How much a table's numbers move with the seed: one line per (``rows`` entry, column) of tables that
    share their index and columns, with the value under each seed, their mean, sample standard deviation
    (``sd``, NaN with one seed), minimum and maximum, rounded to 0.01. Columns holding a paper's reported
    numbers (``(paper)`` in the name) are constants and left out; so are cells missing under every seed."""
    import pandas as pd

    if not tables_by_seed:
        raise KitError("spread table: no seeds given")
    seeds = list(tables_by_seed)
    first = tables_by_seed[seeds[0]]
    for seed in seeds[1:]:
        table = tables_by_seed[seed]
        if list(table.columns) != list(first.columns) or list(table.index) != list(first.index):
            raise KitError(f"spread table: the table of seed {seed} has other rows or columns than seed {seeds[0]}'s")
    missing = [row for row in rows if row not in first.index]
    if missing:
        raise KitError(f"spread table: row(s) {missing} not in the tables; rows: {list(first.index)}")
    lines = []
    for row in rows:
        for column in first.columns:
            if "(paper)" in column:
                continue
            values = pd.Series([tables_by_seed[seed].loc[row, column] for seed in seeds], dtype=float)
            if values.isna().all():
                continue
            line = {first.index.name or "row": row, "metric": column}
            line.update({f"seed {seed}": value for seed, value in zip(seeds, values, strict=True)})
            line.update({"mean": values.mean(), "sd": values.std(ddof=1) if len(values) > 1 else float("nan"),
                         "min": values.min(), "max": values.max()})
            lines.append(line)
    return pd.DataFrame(lines).round(2)


def spread_sentence(seeds_table: Any, row: str, metric: str) -> str | None:
    """One sentence about a ``spread_table`` line: mean ± sd, range, and whether the sign holds under every
    seed (None when the table has no such line or no value)."""
    first = seeds_table.columns[0]
    found = seeds_table[(seeds_table[first] == row) & (seeds_table["metric"] == metric)]
    if found.empty:
        return None
    line = found.iloc[0]
    values = line[[c for c in seeds_table.columns if c.startswith("seed ")]].astype(float).dropna()
    if values.empty:
        return None
    if len(values) == 1:
        return f"{row}, {metric}: {values.iloc[0]:+.2f} (one seed, no spread)"
    if (values == 0).all():
        sign = "zero under every seed"
    elif (values > 0).all() or (values < 0).all():
        sign = "the same sign under every seed"
    else:
        sign = "**not the same sign under every seed**"
    return (f"{row}, {metric}: mean {line['mean']:+.2f} ± {line['sd']:.2f} over {len(values)} seeds "
            f"(from {line['min']:+.2f} to {line['max']:+.2f}); {sign}")
