"""kit.report: REPORT.md holds every table, figure and claim of a run and no number that is not in the run's
files; ASSUMPTIONS.md lists every open value and deviation; a report never mixes two runs; --compare shows
what differs. Also kit.core.tables.spread_table, and the committed results/REPORT.md against the committed tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from matplotlib import pyplot as plt

from kit import REPO_DIR
from kit.cli import main
from kit.core.deviations import DEVIATIONS
from kit.core.profile import load_profile
from kit.core.provenance import write_provenance
from kit.core.tables import save_figure, spread_sentence, spread_table, write_table
from kit.errors import KitError
from kit.report import (
    compare_runs,
    published_sources,
    render_assumptions,
    shipped_profiles,
    unsourced_numbers,
    write_report,
)


def _casseat_main(cas_seat_mathvista: float) -> pd.DataFrame:
    table = pd.DataFrame({"model": ["teacher", "base", "SEAT", "Cas-SEAT"], "MathVista": [43.67, 20.67, 21.33,
                          cas_seat_mathvista], "MATH-V": [21.0, 13.0, 6.0, 17.67]}).set_index("model")
    for column in ("MathVista", "MATH-V"):
        table[f"{column} gain %"] = (100 * (table[column] - table.loc["base", column]) / table.loc["base", column]).round(2)
        table.loc["base", f"{column} gain %"] = float("nan")
    table["MathVista gain % (paper)"] = [float("nan")] * 3 + [19.68]
    table["MATH-V gain % (paper)"] = [float("nan")] * 3 + [55.57]
    return table


def _eaco_main(eaco_mme: float) -> pd.DataFrame:
    table = pd.DataFrame({"model": ["base", "DPO (critic)", "EACO", "STIC"], "HallusionBench aAcc": [49.17, 49.17, 50.83,
                          47.5], "MME-C": [110.0, 110.0, eaco_mme, 50.0]}).set_index("model")
    for column in ("HallusionBench aAcc", "MME-C"):
        table[f"{column} gain %"] = (100 * (table[column] - table.loc["base", column]) / table.loc["base", column]).round(2)
        table.loc["base", f"{column} gain %"] = float("nan")
    table["average gain %"] = table[["HallusionBench aAcc gain %", "MME-C gain %"]].mean(axis=1).round(2)
    table["HallusionBench gain % (paper)"] = [float("nan"), float("nan"), 65.6, float("nan")]
    table["MME-C gain % (paper)"] = [float("nan"), float("nan"), 21.8, float("nan")]
    table["average gain % (paper)"] = [float("nan"), float("nan"), 8.5, float("nan")]
    return table


JUDGE = "Qwen/Qwen2.5-14B-Instruct"


def _extraction(benchmarks: dict[str, str]) -> pd.DataFrame:
    """kit.eval.evaluate.extraction_table over two evaluations that read each benchmark as `benchmarks` says."""
    from kit.eval.evaluate import extraction_table

    metrics = {name: {"benchmark": name, "extractor": how, **({"extractor_model": JUDGE} if how == "llm" else {})}
               for name, how in benchmarks.items()}
    return extraction_table({"base": metrics, "Cas-SEAT": metrics})


def _make_run(results: Path, name: str = "tiny-1a2b3c4d", cas_seat: tuple = (26.0, 24.33, 27.67),
              extraction: bool = True) -> Path:
    """A run folder as `kit run` leaves it: tables and figures (also in results/), provenance, profile, stages."""
    run = results / "runs" / name
    main_by_seed = {seed: _casseat_main(value) for seed, value in enumerate(cas_seat)}
    eaco_by_seed = {seed: _eaco_main(value) for seed, value in enumerate((120.0, 115.0, 100.0))}
    write_table(main_by_seed[0].reset_index(), "casseat_main", results, note="Measured on the `tiny` profile.",
                run_dir=run)
    write_table(spread_table(main_by_seed, ["SEAT", "Cas-SEAT"]), "casseat_main_seeds", results, run_dir=run)
    write_table(eaco_by_seed[0].reset_index(), "eaco_main", results, run_dir=run)
    write_table(spread_table(eaco_by_seed, ["DPO (critic)", "EACO", "STIC"]), "eaco_main_seeds", results, run_dir=run)
    if extraction:
        write_table(_extraction({"mathvista": "llm", "mathv": "rules"}), "casseat_extraction", results, run_dir=run)
        write_table(_extraction({"hallusionbench": "llm", "mme": "rules"}), "eaco_extraction", results, run_dir=run)
    figure, axis = plt.subplots(figsize=(2, 2))
    axis.plot([0, 1], [0, 1])
    save_figure(figure, "casseat_main", results, run_dir=run)
    plt.close(figure)
    profile = load_profile("tiny")
    write_provenance(run, profile, results)
    (run / "profile.json").write_text(json.dumps({"reference": "tiny", "path": str(profile.path), "hash": profile.hash,
                                                  "data": profile.data, "assumptions": profile.assumptions}))
    (run / "stages.json").write_text(json.dumps({"run_id": name, "notebooks": {"05_evaluate": {
        "status": "done", "seconds": 441.2, "finished_at": "2026-11-23T09:00:00+00:00"}}}))
    return run


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("report") / "results"
    _make_run(results)
    write_report("tiny-1a2b3c4d", results)
    return results


def test_spread_table_gives_each_seed_mean_sd_and_range_and_leaves_out_the_papers_numbers():
    tables = {seed: _casseat_main(value) for seed, value in zip((0, 1, 2), (26.0, 24.0, 28.0), strict=True)}
    spread = spread_table(tables, ["Cas-SEAT"])
    line = spread[spread.metric == "MathVista"].iloc[0]
    assert (line["seed 0"], line["seed 1"], line["seed 2"]) == (26.0, 24.0, 28.0)
    assert (line["mean"], line["sd"], line["min"], line["max"]) == (26.0, 2.0, 24.0, 28.0)
    assert not spread.metric.str.contains("paper").any()
    assert "the same sign under every seed" in spread_sentence(spread, "Cas-SEAT", "MathVista gain %")
    with pytest.raises(KitError, match="row"):
        spread_table(tables, ["student"])
    with pytest.raises(KitError, match="seed 1"):
        spread_table({0: tables[0], 1: tables[1].drop(columns="MATH-V")}, ["Cas-SEAT"])


def test_a_gain_whose_sign_changes_between_seeds_is_said_to():
    tables = {seed: _casseat_main(value) for seed, value in enumerate((26.0, 18.0))}
    spread = spread_table(tables, ["Cas-SEAT"])
    assert "not the same sign under every seed" in spread_sentence(spread, "Cas-SEAT", "MathVista gain %")
    unchanged = spread_table({seed: _casseat_main(20.67) for seed in (0, 1)}, ["Cas-SEAT"])  # the base's score
    assert "zero under every seed" in spread_sentence(unchanged, "Cas-SEAT", "MathVista gain %")


def test_the_report_holds_every_table_figure_claim_and_the_provenance(results):
    report = (results / "REPORT.md").read_text()
    for name in ("casseat_main", "casseat_main_seeds", "eaco_main", "eaco_main_seeds"):
        assert f"### `{name}`" in report
    assert "![casseat_main](figures/casseat_main.png)" in report
    claim = next(line for line in report.splitlines() if "Cas-SEAT: MathVista gain %" in line)
    # paper's figure, the seed-0 run, and mean ± sd over the three seeds (26.0, 24.33, 27.67 against 20.67)
    assert "| +19.68 | existing methods" in claim and "| +25.79 | +25.79 ± 8.08" in claim and "seeds 0, 1, 2" in claim
    record = json.loads((results / "RUN.json").read_text())
    provenance = record["provenance"]
    assert provenance["kit"]["commit"] in report
    assert provenance["models"]["teacher"]["hash"] in report
    assert provenance["libraries"]["transformers"] in report
    assert "spread_seeds" in provenance["seeds"] and provenance["seeds"]["seed"] == 0
    assert (results / "runs" / "tiny-1a2b3c4d" / "REPORT.md").read_text() == report


def test_the_report_says_how_answers_were_read_and_what_each_paper_compares_with(results, tmp_path):
    report = (results / "REPORT.md").read_text()
    claims = report.split("## Provenance")[0]
    mathvista = next(line for line in claims.splitlines() if "Cas-SEAT: MathVista gain %" in line)
    assert f"| llm ({JUDGE}) |" in mathvista and "| existing methods (the abstract's words)" in mathvista
    assert "| rules |" in next(line for line in claims.splitlines() if "Cas-SEAT: MATH-V gain %" in line)
    average = next(line for line in claims.splitlines() if "EACO: average gain %" in line)
    assert "(mean of HallusionBench aAcc)" in average and "| +8.5 | the base policy" in average
    # Under every benchmark table of notebooks 05 and 08: each of its benchmarks and how it was read.
    casseat = report.split("### `casseat_main`")[1].split("### ")[0]
    assert f"Answers read by (`casseat_extraction`): MathVista llm ({JUDGE}); MATH-V rules." in casseat
    eaco_seeds = report.split("### `eaco_main_seeds`")[1].split("### ")[0]
    assert f"Answers read by (`eaco_extraction`): HallusionBench llm ({JUDGE}); MME rules." in eaco_seeds
    assert "### `casseat_extraction`" in report
    # A run from before the extraction tables says it does not know.
    older = _make_run(tmp_path / "results", "tiny-old", extraction=False)
    from kit.report import load_run, render_report

    text = render_report(load_run(older))
    assert "Answers read by: not recorded in this run (it has no `casseat_extraction` table" in text
    assert "| not recorded |" in text


def test_every_number_in_the_report_comes_from_a_results_file(results):
    report = (results / "REPORT.md").read_text()
    sources = published_sources(results)
    assert unsourced_numbers(report, sources) == []
    typed_in = report.replace("| +19.68 |", "| +19.71 |", 1)
    assert unsourced_numbers(typed_in, sources) == ["+19.71"]
    assert unsourced_numbers(report + "\nAbout 42.4242 % better, on torch 9.9.9.\n", sources) == ["42.4242", "9.9.9."]


def test_assumptions_list_every_open_value_of_every_profile_and_every_deviation():
    profiles = shipped_profiles()
    text = render_assumptions(profiles)
    assert {p.name for p in profiles} >= {"tiny", "paper"}
    for profile in profiles:
        for key in profile.assumptions:
            assert f"`{key}`" in text
    for deviation in DEVIATIONS:
        assert f"`{deviation.id}`" in text
    assert "authors' code" in text and "our choice" in text


def test_a_report_is_not_published_over_another_runs_tables(results):
    table = results / "tables" / "eaco_main.csv"
    published = (results / "REPORT.md").read_bytes()
    original = table.read_text()
    table.write_text(original.replace("120.0", "121.0", 1))
    try:
        with pytest.raises(KitError, match="tables/eaco_main.csv"):
            write_report("tiny-1a2b3c4d", results)
        assert (results / "REPORT.md").read_bytes() == published
    finally:
        table.write_text(original)


def test_compare_shows_the_differing_numbers_in_bold(results, tmp_path):
    other = _make_run(tmp_path / "results", "tiny-seed1", cas_seat=(27.0, 24.33, 27.67))
    text = compare_runs(results / "runs" / "tiny-1a2b3c4d", other, results)
    assert "**26.0 → 27.0**" in text
    assert "**25.79 → 30.62**" in text  # the gain follows the score
    assert "2 of 24 cells differ" in text  # casseat_main: the score and its gain, of 4 rows x 6 value columns
    assert "0 of" in text and "`eaco_main`" in text
    assert compare_runs(other, other, results).split("## Tables")[1].count("→") == 0
    tolerant = compare_runs(results / "runs" / "tiny-1a2b3c4d", other, results, tolerance=10)
    assert "→" not in tolerant.split("## Tables")[1]


def test_kit_report_command(results, tmp_path, capsys):
    assert main(["report", "--run", "tiny-1a2b3c4d", "--results-dir", str(results)]) == 0
    assert "REPORT.md" in capsys.readouterr().out
    assert main(["report", "--compare", "tiny-1a2b3c4d", "tiny-1a2b3c4d", "--results-dir", str(results),
                 "--out", str(tmp_path / "c.md")]) == 0
    assert (tmp_path / "c.md").read_text().startswith("# Run `tiny-1a2b3c4d` (A) against run `tiny-1a2b3c4d` (B)")
    assert main(["report", "--run", "nope", "--results-dir", str(results)]) == 2
    assert "tiny-1a2b3c4d" in capsys.readouterr().err


def test_a_run_without_tables_is_refused(tmp_path):
    (tmp_path / "results" / "runs" / "empty").mkdir(parents=True)
    with pytest.raises(KitError, match="no tables"):
        write_report("empty", tmp_path / "results")


def test_the_committed_report_matches_the_committed_results():
    """results/REPORT.md: every table and figure in results/ has its section, and every number is in a file."""
    results = REPO_DIR / "results"
    report = (results / "REPORT.md").read_text()
    for table in (results / "tables").glob("*.csv"):
        assert f"### `{table.stem}`" in report, table.name
    for figure in (results / "figures").glob("*.png"):
        assert f"(figures/{figure.name})" in report, figure.name
    assert unsourced_numbers(report, published_sources(results)) == []
    assert (results / "ASSUMPTIONS.md").read_text() == render_assumptions(shipped_profiles())


def test_an_authors_code_assumption_must_name_the_file(tmp_path):
    text = (REPO_DIR / "kit" / "profiles" / "tiny.yaml").read_text()
    text = text.replace("reason: train/generate_data.py decodes", "reason: the generation script decodes")
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(KitError, match="synthesis.temperature.*name the file"):
        load_profile(tmp_path / "p.yaml")


def test_copying_a_run_keeps_its_report_reproducible(results, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(results / "runs" / "tiny-1a2b3c4d", copy)
    assert compare_runs(results / "runs" / "tiny-1a2b3c4d", copy, results).split("## Tables")[1].count("→") == 0
