"""``kit models band``: each headline number beside the blind guess, and whether it leaves a paper's method room."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from kit.errors import KitError
from kit.tiny import band


def test_a_number_is_in_the_band_from_ten_points_above_the_blind_guess_to_just_under_the_ceiling() -> None:
    metrics = {
        "pope": {"accuracy": 59.9, "f1": 60.0},  # blind 50 / 48: just short of 10 points, then exactly 12 above
        "seed": {"accuracy": 85.0},  # at the ceiling
        "mme": {"perception": 400.0, "cognition": 0.0, "perception_subtasks": ["existence", "count", "position",
                                                                               "color"], "cognition_subtasks": []},
        "amber": {"amber_score": None, "generative": {"CHAIR": 12.0}, "discriminative": {"F1": 70.0}},
    }
    blind = {"pope": {"accuracy": 50.0, "f1": 48.0}, "seed": {"accuracy": 25.0},
             "mme": {"perception": 200.0, "cognition": 0.0}}
    rows = {row["metric"]: row for row in band.band_rows(metrics, blind)}
    assert rows["POPE accuracy"]["verdict"] == "below" and rows["POPE F1"]["verdict"] == "in band"
    assert rows["SEED-Bench image"]["verdict"] == "above"
    # MME's perception total of four sub-tasks is out of 800: 400 is 50 %, the blind 200 is 25 %.
    assert (rows["MME perception"]["percent"], rows["MME perception"]["blind_percent"]) == (50.0, 25.0)
    assert rows["MME perception"]["verdict"] == "in band"
    # No cognition sub-task was scored, so its total of 0 is no percentage and gets no verdict.
    assert rows["MME cognition"]["percent"] is None and rows["MME cognition"]["verdict"] is None
    # AMBER has no blind guess; its CHAIR is lower-is-better; its score needs both halves.
    assert all(rows[m]["verdict"] is None for m in ("AMBER score", "AMBER CHAIR", "AMBER F1"))
    assert rows["AMBER score"]["score"] is None and rows["AMBER CHAIR"]["score"] == 12.0
    lines = band.report_lines(list(rows.values()))
    assert lines[-1].startswith("2 of 4 judged numbers in the band")
    assert any(line.startswith("AMBER score") and line.split()[2:] == ["-"] * 5 for line in lines)


def test_a_policy_is_scored_on_notebook_08_s_benchmarks_beside_their_blind_guess(small_world, one_thread) -> None:
    from kit.core.profile import load_profile
    from kit.eval import benchmarks as registry
    from kit.eval.baselines import blind_metrics
    from kit.eval.evaluate import evaluate
    from kit.tiny.pretrain import MODELS_DIR

    tiny = load_profile("tiny")
    data = copy.deepcopy(tiny.data)
    data["datasets"] = {name: str(small_world / name) for name in data["datasets"]}
    profile = dataclasses.replace(tiny, data=data)
    policy = MODELS_DIR / "tiny-llava-policy"
    assert list(band.default_benchmarks(profile, "llava")) == tiny.get("eaco_eval.benchmarks")
    assert band.default_benchmarks(profile, "qwen2_vl") == {"mathvista": str(small_world / "mathvista"),
                                                            "mathv": str(small_world / "mathvision"),
                                                            "wemath": str(small_world / "wemath")}

    rows = band.band(policy, profile, ["pope", "scienceqa"], limit=24, batch_size=24, progress=False)
    assert [row["metric"] for row in rows] == ["POPE accuracy", "POPE F1", "ScienceQA-IMG"]
    pope = evaluate(str(policy), "pope", source=small_world / "pope", limit=24, batch_size=24, progress=False,
                    max_new_tokens=tiny.get("eaco_eval.max_new_tokens"))
    guess = blind_metrics("pope", registry.get("pope").load(small_world / "pope", limit=24))
    assert (rows[0]["score"], rows[0]["blind"]) == (pope["accuracy"], guess["accuracy"])
    assert all(row["verdict"] in band.VERDICTS for row in rows)

    with pytest.raises(KitError, match="mathv is not among the benchmarks a llava model is evaluated on"):
        band.band(policy, profile, ["mathv"])
