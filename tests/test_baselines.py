"""Blind-guess baselines: a random option (or the majority answer on free-form items) scored by each benchmark's own
rule, and the main tables' `chance / majority` row."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from kit.eval.baselines import BASELINE_ROW, baseline_sentence, blind_metrics, with_baseline_row
from kit.eval.benchmarks import mathv, mathvista, wemath

METADATA = {"language": "english", "source": "tiny", "category": "math-targeted-vqa", "task": "figure question answering",
            "context": "synthetic scene", "grade": "elementary school", "skills": ["arithmetic reasoning"]}


def _mathvista(pid: str, answer: str, choices=None, answer_type="integer") -> dict:
    precision = 1 if answer_type == "float" else None
    return {"pid": pid, "question": "q", "choices": choices, "unit": None, "precision": precision, "answer": answer,
            "question_type": "multi_choice" if choices else "free_form", "answer_type": answer_type,
            "metadata": METADATA}


def test_free_form_items_get_the_majority_answer_of_their_kind():
    records = [_mathvista("1", "2"), _mathvista("2", "2"), _mathvista("3", "5"), _mathvista("4", "1.5", None, "float"),
               _mathvista("5", "B", ["A", "B", "C", "D"], "text")]
    assert mathvista.blind_choices(records[2], records) == ["2"]
    assert mathvista.blind_choices(records[3], records) == ["1.5"]
    assert mathvista.blind_choices(records[4], records) == ["A", "B", "C", "D"]
    # two of three integer items answer 2, the float item its own answer, the 4-way item a quarter of the time
    expected = 100 * (2 + 1 + 0.25) / 5
    assert blind_metrics("mathvista", records, draws=400)["accuracy"] == pytest.approx(expected, abs=2.5)
    assert mathv.blind_choices({"options": ["1", "2", "3"], "answer": "B"}, []) == ["A", "B", "C"]
    assert mathv.blind_choices({"options": [], "answer": "7"}, [{"options": [], "answer": "7"},
                                                               {"options": ["x"], "answer": "A"}]) == ["7"]


def test_composite_metrics_get_their_true_chance_level():
    letters = wemath.blind_choices({"option": "A. 3, 3; B. 3, 1; C. 1, 3; D. 3, 0; E. No correct answer"}, [])
    assert letters == ["A", "B", "C", "D", "E"]
    records = [{"benchmark": "pope", "question_id": str(i), "image": "x.jpg", "text": "Is there a cat?",
                "label": "yes" if i % 2 else "no", "category": "random"} for i in range(200)]
    pope = blind_metrics("pope", records, draws=50)
    assert 45 < pope["accuracy"] < 55 and 40 < pope["f1"] < 60 and pope["draws"] == 50
    assert blind_metrics("pope", records, draws=50) == pope  # seeded
    assert blind_metrics("amber", records) is None  # AMBER: no blind guess


def test_the_baseline_row_has_numbers_but_no_gains():
    table = pd.DataFrame({"MathVista": [40.0, 20.0], "MathVista gain %": [100.0, float("nan")]},
                         index=["teacher", "base"])
    shaped = with_baseline_row(table, {"mathvista": {"benchmark": "mathvista", "accuracy": 27.0}})
    assert shaped.index.tolist() == ["teacher", "base", BASELINE_ROW]
    assert shaped.loc[BASELINE_ROW, "MathVista"] == 27.0 and math.isnan(shaped.loc[BASELINE_ROW, "MathVista gain %"])
    assert with_baseline_row(table, None) is table
    sentence = baseline_sentence(shaped, ["MathVista"], ["teacher", "base"])
    assert "scores MathVista 27.00" in sentence and "better than it: teacher on MathVista." in sentence
    lower = pd.DataFrame({"CHAIR": [5.0, 30.0, 20.0]}, index=["good", "bad", BASELINE_ROW])
    assert "good on CHAIR" in baseline_sentence(lower, ["CHAIR"], ["good", "bad"], ("CHAIR",))
