"""``kit report``: what a reviewer reads. ``results/REPORT.md`` (the papers' claims beside the reproduced
numbers, with what each paper's figure is relative to and how the benchmark's answers were read, every table
and figure of a run, under each benchmark table how its answers were read, the run's provenance), ``results/ASSUMPTIONS.md`` (every value the
papers leave open, from the profiles, and the deviations from the authors' code, from ``kit.core.deviations``),
and ``kit report --compare RUN_A RUN_B`` (two runs side by side, the differences in bold).

Every number in the report is copied from a file of the run: its tables (``<run>/tables/*.csv``, written by
``kit.core.tables.write_table``), ``provenance.json``, ``profile.json`` and ``stages.json`` (written by ``kit run``).
Nothing is typed in or recomputed here; the tests check that.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit import REPO_DIR
from kit.core.artifacts import atomic_write_json, atomic_write_text
from kit.core.provenance import PROVENANCE_FILE, RESULTS_DIR
from kit.errors import KitError

REPORT_FILE = "REPORT.md"
ASSUMPTIONS_FILE = "ASSUMPTIONS.md"
RUN_RECORD_FILE = "RUN.json"
SOURCE_LABELS = {"paper": "paper text", "authors_code": "authors' code", "ours": "our choice"}


@dataclass(frozen=True)
class Claim:
    """One number a paper reports, and where the run's tables hold it and its reproduction."""

    paper: str
    table: str
    row: str
    column: str  # the reproduced number
    paper_column: str  # the table's copy of the paper's number
    seeds_table: str  # kit.core.tables.spread_table over seeds
    paper_baseline: str  # what the paper's number is relative to (the reproduced one is relative to `base`)


CAS_SEAT = "Cas-SEAT (arXiv 2501.05662)"
EACO = "EACO (arXiv 2412.04903)"
# The v1 abstract gives Cas-SEAT's gains "compared to existing methods" (kit.casseat.tables.PAPER_GAINS); EACO's
# abstract gives its gains over LLaVA-v1.6-Mistral-7B, the base policy. Written without digits: every number in
# the report must come from the run's files (unsourced_numbers).
CAS_SEAT_BASELINE = "existing methods (the abstract's words), not necessarily the untrained student"
EACO_BASELINE = "the base policy (the abstract's LLaVA model)"
CLAIMS: tuple[Claim, ...] = (
    *(Claim(CAS_SEAT, "casseat_main", "Cas-SEAT", f"{c} gain %", f"{c} gain % (paper)", "casseat_main_seeds",
            CAS_SEAT_BASELINE) for c in ("MathVista", "MATH-V", "We-Math strict", "We-Math loose")),
    # The paper's 65.6 % does not say which HallusionBench accuracy: all three are shown against it.
    *(Claim(EACO, "eaco_main", "EACO", f"HallusionBench {a} gain %", "HallusionBench gain % (paper)",
            "eaco_main_seeds", EACO_BASELINE) for a in ("aAcc", "fAcc", "qAcc")),
    Claim(EACO, "eaco_main", "EACO", "MME-C gain %", "MME-C gain % (paper)", "eaco_main_seeds", EACO_BASELINE),
    Claim(EACO, "eaco_main", "EACO", "average gain %", "average gain % (paper)", "eaco_main_seeds", EACO_BASELINE),
)
# Report order: the tables of each paper as its notebooks write them; any other table comes after these.
TABLE_ORDER = ("tiny_world_models", "casseat_synthesis", "casseat_selection", "casseat_prompting",
               "casseat_training", "casseat_main", "casseat_main_seeds", "casseat_paired", "casseat_strategies",
               "casseat_reflection", "casseat_quantity", "casseat_mixing", "casseat_extraction", "eaco_critic", "eaco_training", "eaco_main",
               "eaco_main_seeds", "eaco_extraction")
# The table in which a notebook records how its evaluations read answers (kit.eval.evaluate.extraction_table), and
# the benchmark tables those evaluations fill.
EXTRACTION_TABLES: dict[str, tuple[str, ...]] = {
    "casseat_extraction": ("casseat_main", "casseat_main_seeds", "casseat_paired", "casseat_strategies",
                           "casseat_reflection", "casseat_quantity", "casseat_mixing"),
    "eaco_extraction": ("eaco_main", "eaco_main_seeds"),
}


# ---------------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class Run:
    """A run folder read back: its tables (name -> DataFrame), figures, provenance, profile and stages."""

    folder: Path
    tables: dict[str, Any]
    figures: dict[str, Path]
    provenance: dict[str, Any]
    profile: dict[str, Any]
    stages: dict[str, Any]

    @property
    def name(self) -> str:
        return self.folder.name


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise KitError(f"{path}: {what} is not valid JSON (line {err.lineno})") from None


def resolve_run(run: str | Path | None, results_dir: str | Path = RESULTS_DIR) -> Path:
    """A run folder from an id under ``results/runs``, a folder path, or None: the run that finished a notebook
    last."""
    runs_dir = Path(results_dir) / "runs"
    if run is None:
        finished = []
        for stages in runs_dir.glob("*/stages.json"):
            times = [entry.get("finished_at", "") for entry in _read_json(stages, "stages").get("notebooks", {}).values()
                     if entry.get("status") == "done"]
            if times:
                finished.append((max(times), stages.parent))
        if not finished:
            raise KitError(f"no finished run under {runs_dir}; run `kit run --profile tiny` first or pass --run")
        return max(finished)[1]
    for candidate in (Path(run), runs_dir / str(run)):
        if candidate.is_dir():
            return candidate
    known = ", ".join(sorted(p.name for p in runs_dir.iterdir() if p.is_dir())) if runs_dir.is_dir() else "none"
    raise KitError(f"run {run!r}: no such folder, nor {runs_dir / str(run)}; runs: {known}")


def load_run(folder: str | Path) -> Run:
    import pandas as pd

    folder = Path(folder)
    tables = {}
    for csv in sorted((folder / "tables").glob("*.csv")):
        try:
            tables[csv.stem] = pd.read_csv(csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise KitError(f"{csv}: not a readable table: {err}") from None
    figures = {png.stem: png for png in sorted((folder / "figures").glob("*.png"))}
    if not tables:
        raise KitError(f"run {folder} has no tables ({folder / 'tables'} is empty or missing): run its notebooks "
                       "with `kit run` (tables are copied into the run folder since the report was added)")
    return Run(folder, tables, figures, _read_json(folder / PROVENANCE_FILE, "provenance"),
               _read_json(folder / "profile.json", "the profile record"),
               _read_json(folder / "stages.json", "the stage record"))


def _ordered(names: Sequence[str]) -> list[str]:
    known = [name for name in TABLE_ORDER if name in names]
    return known + sorted(name for name in names if name not in TABLE_ORDER)


# ------------------------------------------------------------------------------------------------- formatting
def _cell(value: Any) -> str:
    """A table value as the CSV holds it (so the report's numbers can be found in the run's files)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return str(value)


def _signed(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+}"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _lookup(table: Any, row: str, column: str) -> Any:
    if table is None or column not in table.columns:
        return None
    found = table[table.iloc[:, 0].astype(str) == row]
    return None if found.empty else found.iloc[0][column]


def _titles_in(names: Sequence[str]) -> list[str]:
    """The benchmarks (``kit.eval.evaluate.TITLES``) whose numbers the column names or metric names hold, in
    registry order: a name is the title, or starts with it and a space or a hyphen (``MME-C``)."""
    from kit.eval.evaluate import TITLES

    return [title for title in TITLES.values()
            if any(n == title or n.startswith((title + " ", title + "-")) for n in map(str, names))]


def _benchmarks_in(table: Any) -> list[str]:
    names = [str(c) for c in table.columns]
    if "metric" in table.columns:  # a seeds table names its numbers in rows
        names += [str(v) for v in table["metric"].dropna().unique()]
    return _titles_in(names)


def _readers(run: Run, table_name: str, titles: Sequence[str]) -> dict[str, str] | None:
    """Benchmark title -> how its answers were read, from the extraction table of the notebook that wrote
    ``table_name``; None when the run has no such record."""
    source = next((e for e, tables in EXTRACTION_TABLES.items() if table_name in tables), None)
    record = run.tables.get(source) if source else None
    if record is None:
        return None
    readers = {}
    for title in titles:
        rows = record[record["benchmark"] == title]
        ways = [str(r["extractor"]) if str(r["LLM"]) in ("-", "nan", "") else f"{r['extractor']} ({r['LLM']})"
                for _, r in rows.iterrows()]
        readers[title] = " and ".join(ways) if ways else "not recorded"
    return readers


def extraction_line(run: Run, name: str) -> str:
    """The sentence under a benchmark table that says how each of its benchmarks' answers were read."""
    source = next((e for e, tables in EXTRACTION_TABLES.items() if name in tables), None)
    titles = _benchmarks_in(run.tables[name]) if source else []
    if not titles:
        return ""
    readers = _readers(run, name, titles)
    if readers is None:
        return (f"Answers read by: not recorded in this run (it has no `{source}` table; each evaluation's "
                "`metrics.json` holds its `extractor`).")
    return (f"Answers read by (`{source}`): " + "; ".join(f"{title} {how}" for title, how in readers.items())
            + ".")


def _claim_label(claim: Claim, table: Any) -> tuple[str, list[str]]:
    """The claim's label and the benchmarks its number comes from (the average: one column per benchmark)."""
    if claim.column != "average gain %":
        return f"{claim.row}: {claim.column}", _titles_in([claim.column])
    from kit.eaco.tables import average_columns

    columns = average_columns([c for c in table.columns if "gain" not in c])
    return f"{claim.row}: {claim.column} (mean of {', '.join(columns)})", _titles_in(columns)


def claims_section(run: Run) -> str:
    rows = []
    for claim in CLAIMS:
        table = run.tables.get(claim.table)
        if table is None:
            continue
        spread = run.tables.get(claim.seeds_table)
        line = None
        if spread is not None:
            found = spread[(spread.iloc[:, 0] == claim.row) & (spread["metric"] == claim.column)]
            line = None if found.empty else found.iloc[0]
        over_seeds = "–"
        if line is not None and not (isinstance(line["sd"], float) and math.isnan(line["sd"])):
            seeds = [c.removeprefix("seed ") for c in spread.columns if c.startswith("seed ")]
            over_seeds = (f"{_signed(line['mean'])} ± {_cell(line['sd'])} (seeds {', '.join(seeds)}; "
                          f"from {_signed(line['min'])} to {_signed(line['max'])})")
        label, titles = _claim_label(claim, table)
        readers = _readers(run, claim.table, titles)
        ways = sorted(set(readers.values())) if readers else []
        read_by = ("not recorded" if readers is None else ways[0] if len(ways) == 1
                   else "; ".join(f"{title} {how}" for title, how in readers.items()))
        rows.append([claim.paper, label, _signed(_lookup(table, claim.row, claim.paper_column)),
                     claim.paper_baseline, _signed(_lookup(table, claim.row, claim.column)), over_seeds, read_by,
                     f"`{claim.table}`"])
    if not rows:
        return "No main table in this run yet (notebooks 05 and 08 write them).\n"
    return _markdown_table(["paper", "relative gain, %", "paper's", "paper's baseline", "reproduced (over `base`)",
                            "over seeds", "answers read by", "table"], rows) + "\n"


def provenance_section(run: Run) -> str:
    p = run.provenance
    if not p:
        return ("This run has no `provenance.json` (it was last executed by a kit without the report); run "
                "`kit run` on it again to record one.\n")
    profile = run.profile
    kit = p.get("kit", {})
    commit = kit.get("commit") or "not a git checkout"
    lines = [
        f"- run folder: `results/runs/{run.name}`",
        f"- kit commit: `{commit}`" + (" (with uncommitted changes)" if kit.get("dirty") else ""),
        f"- profile: `{p['profile']['reference']}` (`{_shown(Path(profile.get('path', '')))}`), hash `{p['profile']['hash']}`",
        f"- recorded: {p.get('recorded_at')}; python {p.get('python')}",
        "- hardware: " + "; ".join(f"{k} {_cell(v) if not isinstance(v, list) else ', '.join(v) or 'none'}"
                                   for k, v in p.get("hardware", {}).items()),
        "- seeds: " + "; ".join(f"`{k}` {v}" for k, v in p.get("seeds", {}).items()),
        "- libraries: " + "; ".join(f"{k} {v}" for k, v in p.get("libraries", {}).items()),
    ]
    stages = run.stages.get("notebooks", {})
    text = "\n".join(lines) + "\n\n"
    if stages:
        text += _markdown_table(["notebook", "status", "seconds of its last execution (cached stages reused)", "finished"],
                                [[name, e.get("status"), _cell(e.get("seconds")), e.get("finished_at", "")]
                                 for name, e in stages.items()]) + "\n\n"
    inputs = [[section, name, f"`{entry['source']}`", f"`{entry['hash']}`"]
              for section in ("models", "datasets") for name, entry in p.get(section, {}).items()]
    text += _markdown_table(["kind", "name", "source", "content hash"], inputs) + "\n"
    return text


def _note(run: Run, name: str) -> str:
    markdown = run.folder / "tables" / f"{name}.md"
    return markdown.read_text(encoding="utf-8").strip() if markdown.is_file() else ""


def render_report(run: Run, figures_prefix: str = "figures") -> str:
    """REPORT.md's text for a run; figures are linked as ``<figures_prefix>/NAME.png``."""
    profile_name = run.provenance.get("profile", {}).get("reference") or run.profile.get("reference", "?")
    parts = [
        "# Reproduction report",
        "",
        f"Generated by `kit report` from run `{run.name}` (profile `{profile_name}`). Every number below is "
        "copied from the run's files: its tables (`tables/`) and its record (`provenance.json`, `profile.json` and "
        f"`stages.json` in the run folder, published together as `{RUN_RECORD_FILE}`). The values the papers leave open and the deviations from the authors' code are in "
        f"[{ASSUMPTIONS_FILE}]({ASSUMPTIONS_FILE}).",
        "",
        "## The papers' claims beside this run",
        "",
        "Relative gains, in %. `reproduced` is this run's gain over the `base` row of its main table (the "
        "untrained student; the base policy), with the profile's `seed`; `over seeds` is the mean ± sample "
        "standard deviation of the same number over the profile's `spread.seeds`. `paper's baseline` says what "
        "the paper's own figure is relative to: Cas-SEAT's abstract gives its gains compared to existing "
        "methods, which need not be the untrained student. `answers read by` is how the benchmark's answers were "
        "extracted (`rules`, or `llm` with the model that read them). In the tiny profile these are measurements "
        "of tiny models on the tiny world: they test the pipeline and show the effects at toy scale, they are "
        "not estimates of the papers' numbers.",
        "",
        claims_section(run),
        "## Provenance",
        "",
        provenance_section(run),
        "## Tables",
        "",
    ]
    for name in _ordered(list(run.tables)):
        parts += [f"### `{name}`", "", _note(run, name) or run.tables[name].to_markdown(index=False), ""]
        line = extraction_line(run, name)
        if line:
            parts += [line, ""]
    parts += ["## Figures", ""]
    for name in sorted(run.figures):
        parts += [f"### `{name}`", "", f"![{name}]({figures_prefix}/{name}.png)", ""]
    return "\n".join(parts).rstrip() + "\n"


# ------------------------------------------------------------------------------------------------ assumptions
def render_assumptions(profiles: Sequence[Any]) -> str:
    """ASSUMPTIONS.md: for each profile, every open value with its setting, its source and reason and the
    tables it affects; then ``kit.core.deviations``."""
    from kit.core.deviations import DEVIATIONS

    parts = ["# Assumptions and deviations", "",
             "Generated by `kit report` from the profiles' `assumptions:` sections and `kit/core/deviations.py`. A value "
             "here is one the papers leave open; its source is the paper text, the authors' released code (the "
             "file is named) or our choice (with the reason).", ""]
    for profile in profiles:
        rows = []
        for key, entry in profile.assumptions.items():
            value = profile.get(key)
            rows.append([f"`{key}`", f"`{json.dumps(value)}`", SOURCE_LABELS.get(entry["source"], entry["source"]),
                         str(entry["reason"]).strip(), ", ".join(f"`{t}`" for t in entry.get("affects", []))])
        parts += [f"## Profile `{profile.name}` (`{_shown(profile.path)}`)", "",
                  _markdown_table(["value", "setting", "source", "why", "affects"], rows), ""]
    parts += ["## Deviations from the authors' released code", "",
              "Where the kit knowingly does not do what the authors' code does.", ""]
    rows = [[f"`{d.id}`", d.paper, d.source, d.authors, d.kit, ", ".join(f"`{t}`" for t in d.affects)]
            for d in DEVIATIONS]
    parts += [_markdown_table(["id", "paper", "authors' code", "what it does", "what the kit does", "affects"], rows)]
    return "\n".join(parts).rstrip() + "\n"


def _shown(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(REPO_DIR).as_posix()
    except ValueError:
        return str(path)


def shipped_profiles(extra: Sequence[str | Path] = ()) -> list[Any]:
    from kit.core.profile import available_profiles, load_profile

    profiles = [load_profile(name) for name in available_profiles()]
    paths = {p.path for p in profiles}
    for reference in extra:
        profile = load_profile(reference)
        if profile.path not in paths:
            profiles.append(profile)
            paths.add(profile.path)
    return profiles


# ---------------------------------------------------------------------------------------------------- write
def write_report(run: str | Path | None = None, results_dir: str | Path = RESULTS_DIR) -> dict[str, Path]:
    """Write ``<run>/REPORT.md`` and ``<run>/ASSUMPTIONS.md``, and publish both to ``results/`` when the run's
    tables and figures are the ones in ``results/tables`` and ``results/figures`` (the run that wrote them
    last); otherwise say which files differ, so the published report never mixes two runs."""
    results_dir = Path(results_dir)
    folder = resolve_run(run, results_dir)
    loaded = load_run(folder)
    profile_path = loaded.profile.get("path")
    profiles = shipped_profiles([profile_path] if profile_path and Path(profile_path).is_file() else [])
    assumptions = render_assumptions(profiles)
    written = {"run_report": atomic_write_text(folder / REPORT_FILE, render_report(loaded)),
               "run_assumptions": atomic_write_text(folder / ASSUMPTIONS_FILE, assumptions)}
    extras = [f"tables/{p.name}" for p in sorted((results_dir / "tables").glob("*.csv")) if p.stem not in loaded.tables]
    extras += [f"figures/{p.name}" for p in sorted((results_dir / "figures").glob("*.png"))
               if p.stem not in loaded.figures]
    differ = extras + [f"tables/{name}.csv" for name in loaded.tables
              if _bytes(results_dir / "tables" / f"{name}.csv") != _bytes(folder / "tables" / f"{name}.csv")]
    differ += [f"figures/{name}.png" for name in loaded.figures
               if _bytes(results_dir / "figures" / f"{name}.png") != _bytes(folder / "figures" / f"{name}.png")]
    if differ:
        raise KitError(f"the report of run {folder.name} is in {folder / REPORT_FILE}; it was not published to "
                       f"{results_dir} because these files there come from another run: {', '.join(differ[:6])}"
                       f"{' ...' if len(differ) > 6 else ''}. Re-run the run's notebooks to publish it")
    written["record"] = atomic_write_json(results_dir / RUN_RECORD_FILE, run_record(loaded))
    written["report"] = atomic_write_text(results_dir / REPORT_FILE, render_report(loaded))
    written["assumptions"] = atomic_write_text(results_dir / ASSUMPTIONS_FILE, assumptions)
    unsourced = unsourced_numbers(written["report"].read_text(encoding="utf-8"), published_sources(results_dir))
    if unsourced:
        raise KitError(f"{written['report']} holds numbers found in no results file: {', '.join(unsourced[:10])}")
    return written


def run_record(run: Run) -> dict[str, Any]:
    """What ``results/RUN.json`` publishes beside the tables: the run's name, provenance, profile and stages."""
    return {"run": run.name, "provenance": run.provenance, "profile": run.profile, "stages": run.stages}


def published_sources(results_dir: str | Path = RESULTS_DIR) -> list[Path]:
    """The files the published REPORT.md may take numbers from: ``results/tables/*`` and ``results/RUN.json``."""
    results_dir = Path(results_dir)
    return sorted((results_dir / "tables").glob("*.csv")) + sorted((results_dir / "tables").glob("*.md")) + [
        results_dir / RUN_RECORD_FILE]


CITATIONS = ("2501.05662", "2412.04903")
_TOKEN = re.compile(r"[\w.:+\-@]*\d[\w.:+\-@]*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def unsourced_numbers(text: str, sources: Sequence[str | Path]) -> list[str]:
    """The numbers of ``text`` (a report) that appear in none of ``sources``: a token with a digit counts as
    sourced when it appears there verbatim, or when it is a number equal to one there as shown (the same
    value rounded to the token's decimals; signs are ignored). Returns the unsourced tokens, in order."""
    corpus = "\n".join(Path(s).read_text(encoding="utf-8") for s in sources if Path(s).is_file())
    shown: set[str] = set()
    for match in _NUMBER.finditer(corpus):
        value = float(match.group())
        if math.isfinite(value):
            shown.update(f"{value:.{decimals}f}" for decimals in range(7))
    unsourced = []
    for raw in _TOKEN.findall(text):
        token = raw.strip(".,;:()[]*`'\"").lstrip("+-")
        if not token or token in CITATIONS or token in corpus:
            continue
        if _NUMBER.fullmatch(token):
            decimals = len(token.split(".")[1]) if "." in token and "e" not in token.lower() else 0
            if f"{float(token):.{decimals}f}" in shown:
                continue
        unsourced.append(raw)
    return unsourced


def _bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


# ----------------------------------------------------------------------------------------------------- compare
def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = value
    return flat


def _differs(a: Any, b: Any, tolerance: float) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return str(a) != str(b)
    if math.isnan(x) and math.isnan(y):
        return False
    if math.isnan(x) or math.isnan(y):
        return True
    return abs(x - y) > tolerance


def compare_tables(a: Any, b: Any, tolerance: float = 0.0) -> tuple[str, int, int]:
    """One table of two runs side by side: rows matched on the text columns (by position when those do not
    identify a row), each number ``a`` when both runs agree within ``tolerance``, else ``**a → b**``. Returns
    the Markdown, the number of differing cells and of compared cells."""
    import pandas as pd

    keys = [c for c in a.columns if c in b.columns and not pd.api.types.is_numeric_dtype(a[c])]
    unique = keys and not a.duplicated(keys).any() and not b.duplicated(keys).any()
    if unique:
        merged = a.assign(_a=range(len(a))).merge(b.assign(_b=range(len(b))), on=keys, how="outer",
                                                     suffixes=(" A", " B"), indicator=True)
        # A's rows in A's order, then those only B has.
        merged = merged.sort_values(by="_a", key=lambda order: order.fillna(len(a) + merged["_b"]))
    else:
        keys = []
        merged = a.add_suffix(" A").join(b.add_suffix(" B"), how="outer")
        merged["_merge"] = "both"
    values = [c for c in a.columns if c not in keys]
    values += [c for c in b.columns if c not in keys and c not in values]
    rows, differing, compared = [], 0, 0
    for _, line in merged.iterrows():
        cells = [_cell(line[k]) for k in keys]
        if keys and line["_merge"] != "both":
            cells[0] += f" (only in {'A' if line['_merge'] == 'left_only' else 'B'})"
        for column in values:
            x = line.get(f"{column} A") if f"{column} A" in merged.columns else line.get(column)
            y = line.get(f"{column} B") if f"{column} B" in merged.columns else None
            compared += 1
            if _differs(x, y, tolerance):
                differing += 1
                cells.append(f"**{_cell(x)} → {_cell(y)}**")
            else:
                cells.append(_cell(x))
        rows.append(cells)
    return _markdown_table(keys + values, rows), differing, compared


def compare_runs(run_a: str | Path, run_b: str | Path, results_dir: str | Path = RESULTS_DIR,
                 tolerance: float = 0.0) -> str:
    """``kit report --compare``'s Markdown: what differs between the two runs' settings and inputs, then every
    table they share side by side."""
    a, b = (load_run(resolve_run(run, results_dir)) for run in (run_a, run_b))
    parts = [f"# Run `{a.name}` (A) against run `{b.name}` (B)", "",
             f"Numbers that differ by more than {tolerance} are shown as **A → B**.", "", "## Settings and inputs", ""]
    settings = [("profile." + key, x, y) for key, (x, y) in _pairs(_flat(a.profile.get("data", {})),
                                                                  _flat(b.profile.get("data", {}))).items()]
    for section in ("kit", "libraries", "hardware", "models", "datasets"):
        settings += [(f"{section}.{key}", x, y) for key, (x, y) in
                     _pairs(_flat(a.provenance.get(section, {})), _flat(b.provenance.get(section, {}))).items()]
    changed = [[f"`{key}`", f"`{_cell(x)}`", f"`{_cell(y)}`"] for key, x, y in settings if _differs(x, y, 0.0)]
    parts += [_markdown_table(["setting", "A", "B"], changed) if changed else "Same settings, inputs and versions.", ""]
    parts += ["## Tables", ""]
    summary = []
    for name in _ordered(sorted(set(a.tables) | set(b.tables))):
        if name not in a.tables or name not in b.tables:
            summary.append([f"`{name}`", f"only in {'A' if name in a.tables else 'B'}", ""])
            continue
        text, differing, compared = compare_tables(a.tables[name], b.tables[name], tolerance)
        summary.append([f"`{name}`", f"{differing} of {compared} cells differ", ""])
        parts += [f"### `{name}`", "", text, ""]
    parts[parts.index("## Tables") + 2:parts.index("## Tables") + 2] = [
        _markdown_table(["table", "difference", ""], summary), ""]
    return "\n".join(parts).rstrip() + "\n"


def _pairs(x: Mapping[str, Any], y: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {key: (x.get(key), y.get(key)) for key in sorted(set(x) | set(y))}


# --------------------------------------------------------------------------------------------------------- CLI
def _report_command(args: argparse.Namespace) -> int:
    if args.compare:
        text = compare_runs(args.compare[0], args.compare[1], args.results_dir, args.tolerance)
        if args.out:
            atomic_write_text(args.out, text)
            print(f"wrote {args.out}")
        else:
            sys.stdout.write(text)
        return 0
    written = write_report(args.run, args.results_dir)
    for path in written.values():
        print(f"wrote {_shown(path)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kit report``."""
    parser = subparsers.add_parser(
        "report", help="write results/REPORT.md and results/ASSUMPTIONS.md, or compare two runs",
        description="Write REPORT.md and ASSUMPTIONS.md for a run (by default the run that finished a notebook "
        "last) into its folder and into results/; or, with --compare, print two runs' tables side by side.")
    parser.add_argument("--run", help="run id under results/runs, or a run folder (default: the latest)")
    parser.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="compare two runs instead")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="with --compare: numbers closer than this count as equal (default 0)")
    parser.add_argument("--out", type=Path, help="with --compare: write the Markdown here instead of printing it")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="folder holding runs/<run-id>/")
    parser.set_defaults(func=_report_command)
