"""Where notebooks put what a reader looks at: ``results/tables/NAME.csv`` + ``NAME.md`` and
``results/figures/NAME.png``, each written atomically so a killed run never leaves half a table."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from kit import REPO_DIR
from kit.artifacts import atomic_write_bytes, atomic_write_text

RESULTS_DIR = REPO_DIR / "results"


def write_table(frame: Any, name: str, results_dir: str | Path = RESULTS_DIR, note: str = "") -> Path:
    """Write a pandas DataFrame as CSV and Markdown; ``note`` goes under the Markdown table (what
    the numbers are, e.g. "measured on the tiny profile's models")."""
    folder = Path(results_dir) / "tables"
    atomic_write_text(folder / f"{name}.csv", frame.to_csv(index=False))
    markdown = frame.to_markdown(index=False)
    atomic_write_text(folder / f"{name}.md", markdown + ("\n\n" + note if note else "") + "\n")
    return folder / f"{name}.csv"


def save_figure(figure: Any, name: str, results_dir: str | Path = RESULTS_DIR, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    path = Path(results_dir) / "figures" / f"{name}.png"
    atomic_write_bytes(path, buffer.getvalue())
    return path


def relative_gain(value: float, base: float, lower_is_better: bool = False) -> float:
    """``100 * (value - base) / base``, the papers' relative improvement, rounded to 0.01 (sign flipped where
    lower is better, so that + always means better); NaN when the base is 0 or either number is missing."""
    if base is None or value is None or math.isnan(base) or math.isnan(value) or base == 0:
        return float("nan")
    gain = 100 * (value - base) / base
    return round(-gain if lower_is_better else gain, 2)
