"""The Cas-SEAT tables: the main table's rows, columns and relative gains beside the paper's, the ablation
tables, and the sentences computed from them."""

from __future__ import annotations

import math

import pytest

from kit.casseat.tables import (
    PAPER_GAINS,
    describe_main,
    grid_table,
    main_table,
    mix_label,
    student_sets,
    sweep_table,
)
from kit.core.tables import relative_gain
from kit.errors import KitError


def _metrics(mathvista: float, mathv: float, strict: float, loose: float) -> dict:
    return {"mathvista": {"benchmark": "mathvista", "accuracy": mathvista},
            "mathv": {"benchmark": "mathv", "accuracy": mathv},
            "wemath": {"benchmark": "wemath", "strict": {"score": strict}, "loose": {"score": loose}}}


MAIN = {"Cas-SEAT": _metrics(36.0, 15.0, 10.0, 30.0), "base": _metrics(30.0, 10.0, 0.0, 20.0),
        "SEAT": _metrics(27.0, 12.0, 5.0, 20.0), "teacher": _metrics(50.0, 20.0, 25.0, 40.0)}


def test_main_table_rows_columns_and_gains():
    table = main_table(MAIN)
    assert list(table.index) == ["teacher", "base", "SEAT", "Cas-SEAT"]
    headline = ["MathVista", "MATH-V", "We-Math strict", "We-Math loose"]
    assert list(table.columns) == headline + [f"{c} gain %" for c in headline] + [f"{c} gain % (paper)" for c in headline]
    assert table.loc["Cas-SEAT", "MathVista gain %"] == 20.0 and table.loc["Cas-SEAT", "MATH-V gain %"] == 50.0
    assert table.loc["SEAT", "MathVista gain %"] == -10.0 and table.loc["teacher", "We-Math loose gain %"] == 100.0
    assert math.isnan(table.loc["Cas-SEAT", "We-Math strict gain %"])  # a base of 0 has no relative gain
    assert all(math.isnan(table.loc["base", f"{c} gain %"]) for c in headline)
    paper = table.loc["Cas-SEAT", [f"{c} gain % (paper)" for c in headline]].tolist()
    assert paper == [PAPER_GAINS["MathVista"], PAPER_GAINS["MATH-V"], PAPER_GAINS["We-Math"], PAPER_GAINS["We-Math"]]
    assert paper[:3] == [19.68, 55.57, 46.79]
    assert table[[f"{c} gain % (paper)" for c in headline]].drop(index="Cas-SEAT").isna().all().all()


def test_main_table_names_what_is_wrong():
    with pytest.raises(KitError, match="unknown row"):
        main_table({**MAIN, "student": MAIN["base"]})
    with pytest.raises(KitError, match="need the `base` row"):
        main_table({"SEAT": MAIN["SEAT"]})


def test_relative_gain_and_mix_labels():
    assert relative_gain(36.0, 30.0) == 20.0 and relative_gain(24.0, 30.0) == -20.0
    assert math.isnan(relative_gain(5.0, 0.0)) and math.isnan(relative_gain(float("nan"), 3.0))
    assert [mix_label(f) for f in (0.0, 0.25, 0.5, 0.75, 1.0)] == ["0:1", "1:3", "1:1", "3:1", "1:0"]


def test_sweep_and_grid_tables_keep_the_order_given():
    sweep = sweep_table({400: MAIN["Cas-SEAT"], 100: MAIN["base"]}, "examples")
    assert sweep["examples"].tolist() == [400, 100] and sweep["MathVista"].tolist() == [36.0, 30.0]
    grid = grid_table({("base", "cot"): MAIN["base"], ("SEAT", "seat"): MAIN["SEAT"]})
    assert grid[["trained on", "strategy"]].values.tolist() == [["base", "cot"], ["SEAT", "seat"]]
    assert grid["MATH-V"].tolist() == [10.0, 12.0]


def test_describe_main_says_what_the_table_holds():
    text = describe_main(main_table(MAIN), "tiny")
    # The paper's figure is over "existing methods", not necessarily over this base: the sentence says so.
    assert ("**Cas-SEAT** against the base: MathVista 30.00 → 36.00, +20.00 % (paper: +19.68 % over existing "
            "methods)") in text
    assert "**SEAT** against the base: MathVista 30.00 → 27.00, -10.00 %" in text
    assert "stays below the teacher on every benchmark" in text


def test_student_sets_name_a_missing_set(tmp_path):
    for name in ("seat", "cas_seat", "cas_seat_n10", "cas_seat_mix0"):
        (tmp_path / f"{name}.jsonl").write_text("")
    assert list(student_sets(tmp_path, [10], [0.0])) == ["seat", "cas_seat", "cas_seat_n10", "cas_seat_mix0"]
    with pytest.raises(KitError, match=r"cas_seat_mix50.jsonl; run notebook 02"):
        student_sets(tmp_path, [10], [0.0, 0.5])


def test_describe_main_names_benchmarks_without_a_gain():
    text = describe_main(main_table({"base": _metrics(30.0, 10.0, 0.0, 0.0), "Cas-SEAT": _metrics(36.0, 15.0, 0.0, 0.0)}),
                         "tiny")
    assert "The base scores 0 on We-Math strict, We-Math loose: no relative gain can be computed there " \
           "(every model scores 0)." in text


def test_training_table_lists_every_student_run():
    from kit.casseat.tables import training_table

    run = {"examples": 10, "steps": 3, "train_loss": 1.5, "seconds": 2.0, "samples_per_second": 15.0, "backend": "peft"}
    table = training_table({"seat": run, "cas_seat": {**run, "examples": 20}})
    assert table["student"].tolist() == ["seat", "cas_seat"] and table["examples"].tolist() == [10, 20]
    assert list(table.columns) == ["student", "examples", "steps", "train loss", "seconds", "samples/s", "backend"]


def test_the_papers_gains_are_quoted_with_their_baseline():
    """The v1 abstract gives the gains "compared to existing methods"; the kit says so and records it."""
    import inspect

    from kit.casseat import tables as casseat
    from kit.core.deviations import get

    assert casseat.PAPER_BASELINE == "existing methods"
    source = inspect.getsource(casseat)
    assert ("compared to existing methods, Cas-SEAT significantly enhances [...], improving\n# performance by "
            "19.68%, 55.57%, and 46.79% on the MathVista, Math-V, and We-Math datasets, respectively.") in source
    assert "existing methods" in get("casseat-gains-baseline").authors


def _items(pattern: str, first: str | None = None):
    from kit.eval.evaluate import ItemOutcome

    return {str(i): ItemOutcome(None if first is None else first[i] == "1", c == "1") for i, c in enumerate(pattern)}


def test_reflection_table_counts_flips_both_ways():
    from kit.casseat.tables import describe_reflection, reflection_table

    # first answers 1100, after reflection 0110: one fixed (item 2), one broken (item 0)
    table = reflection_table({"teacher": {"mathvista": _items("0110", first="1100"),
                                          "wemath": _items("11", first="01")}})
    row = table.set_index("benchmark").loc["MathVista"]
    assert (row["items"], row["wrong -> right"], row["right -> wrong"]) == (4, 1, 1)
    assert (row["first answer %"], row["after reflection %"]) == (50.0, 50.0)
    assert row["first answer %"] + 100 * (row["wrong -> right"] - row["right -> wrong"]) / row["items"] == \
        row["after reflection %"]
    assert list(table.benchmark) == ["MathVista", "We-Math (per question)"]
    assert "fixes more answers than it breaks: 2 wrong -> right against 1" in describe_reflection(table)
    with pytest.raises(KitError, match="two turns"):
        reflection_table({"base": {"mathvista": _items("01")}})


def test_paired_table_compares_each_seed_on_the_same_items():
    from kit.casseat.tables import describe_paired, paired_table
    from kit.core.stats import mcnemar_exact

    base = {"mathvista": _items("0000011111"), "mathv": _items("0101")}
    seat = {"mathvista": _items("0000000000"), "mathv": _items("0101")}
    cas = {0: {"mathvista": _items("1111111111"), "mathv": _items("0101")},
           1: {"mathvista": _items("0000001111"), "mathv": _items("1010")}}
    table = paired_table({**{("Cas-SEAT", "base", s): (cas[s], base) for s in cas},
                          ("Cas-SEAT", "SEAT", 0): (cas[0], seat)})
    first = table.iloc[0]
    assert (first["model"], first["against"], first["seed"], first["benchmark"]) == ("Cas-SEAT", "base", 0, "MathVista")
    assert (first["both right"], first["only model"], first["only the other"], first["neither"]) == (5, 5, 0, 0)
    assert first["difference (points)"] == 50.0 and first["McNemar p"] == pytest.approx(mcnemar_exact(5, 0))
    assert table.iloc[3]["difference (points)"] == 0.0 and table.iloc[3]["only the other"] == 2
    assert table.iloc[4]["difference (points)"] == 100.0 and table.iloc[4]["McNemar p"] < 0.01
    sentence = describe_paired(table)
    assert "Cas-SEAT against base on MathVista: +50.00, -10.00 points (seeds 0, 1); 0 of 2" in sentence
    assert "Cas-SEAT against SEAT on MathVista: +100.00 points (seeds 0); 1 of 1 significant" in sentence
    with pytest.raises(KitError, match="different benchmarks"):
        paired_table({("SEAT", "base", 0): ({"mathvista": _items("1")}, {"mathv": _items("1")})})


def test_main_table_ends_with_the_blind_guess_and_says_who_beats_it():
    baseline = _metrics(27.0, 22.0, 2.0, 9.0)
    table = main_table(MAIN, baseline=baseline)
    assert table.index.tolist() == ["teacher", "base", "SEAT", "Cas-SEAT", "chance / majority"]
    assert table.loc["chance / majority", "MathVista"] == 27.0
    assert table.loc["chance / majority", [c for c in table.columns if "gain" in c]].isna().all()
    assert table.loc["Cas-SEAT", "MathVista gain %"] == main_table(MAIN).loc["Cas-SEAT", "MathVista gain %"]
    text = describe_main(table, "tiny")
    # teacher 50 vs 27 on MathVista, 25 vs 2 on We-Math strict, 40 vs 9 loose; base, SEAT 20 and Cas-SEAT 30 vs 9 loose
    assert "At least 10 points better than it: teacher on MathVista, We-Math strict, We-Math loose; " \
           "base on We-Math loose; SEAT on We-Math loose; Cas-SEAT on We-Math loose." in text
