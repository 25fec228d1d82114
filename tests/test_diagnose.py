"""``kit models diagnose``: templates recognised from question texts, and scans read attribute by attribute."""

from __future__ import annotations

import random

from kit.tiny import diagnose
from kit.tiny.world import questions as qs
from kit.tiny.world.scenes import SCENE_KINDS, Bar, Scene, Shape, sample_scene


def test_every_template_is_recognised_from_the_questions_it_asks() -> None:
    rng = random.Random(7)  # not the seed the recogniser learnt from
    seen = set()
    for kind in SCENE_KINDS:
        for _ in range(60):
            scene = sample_scene(rng, kind)
            for name in qs.templates_for(kind):
                question = qs.ask(name, scene, rng)
                if question is not None:
                    assert qs.template_of(question.question) == name, question.question
                    seen.add(name)
    assert seen == set(qs.TEMPLATES)
    assert qs.template_of("What is the capital of France?") is None


def test_sizes_stay_in_a_question_shape_so_counting_by_size_is_not_counting_by_colour() -> None:
    assert qs.question_shape("How many small shapes are there?") == "How many small shapes are there?"
    assert qs.question_shape("How many blue shapes are there?") == "How many _ shapes are there?"
    assert qs.question_shape("What is the total height of bars A and C?") == "What is the total height of bars _ and _?"


SCENE = Scene("shapes", objects=(Shape("square", "blue", "small", 0, 1), Shape("triangle", "red", "large", 2, 3)))


def test_a_cells_scan_is_scored_per_attribute_of_each_object() -> None:
    right = "Step 1: Read the cells: -, blue square, -, -; -, -, -, -; -, -, -, red triangle; -, -, -, -.\nThe answer is 2."
    assert diagnose.cells_reading(right, SCENE.objects) == {"objects": 2, "cell": 2, "colour": 2, "shape": 2}
    # Every colour and place right, every shape a circle, one object invented: what the tiny teachers do.
    circles = ("Step 1: Read the cells: -, blue circle, -, green circle; -, -, -, -; -, -, -, red circle; -, -, -, -.\n"
               "Step 2: Count.")
    assert diagnose.cells_reading(circles, SCENE.objects) == {"objects": 2, "cell": 2, "colour": 2,
                                                              "invented": 1}
    missed = "Step 1: Read the cells: -, -, -, -; -, -, -, -; -, -, -, red triangle; -, -, -, -."
    assert diagnose.cells_reading(missed, SCENE.objects) == {"objects": 2, "cell": 1, "colour": 1, "shape": 1}
    # No scan, or one cut short, scores nothing but says so.
    assert diagnose.cells_reading("Step 1: Count the red shapes: 1.", SCENE.objects) == {"unscanned": 1}
    assert diagnose.cells_reading("Step 1: Read the cells: -, blue square", SCENE.objects) == {"unscanned": 1}


def test_a_bars_scan_is_scored_per_bar_on_colour_and_height() -> None:
    bars = (Bar("A", 3, "green"), Bar("B", 5, "red"), Bar("C", 1, "blue"), Bar("D", 2, "yellow"))
    reply = "Step 1: Read the bars: A green 3, B red 4, C yellow 1, D yellow 2.\nStep 2: Bar B is red."
    assert diagnose.bars_reading(reply, bars) == {"bars": 4, "colour": 3, "height": 3}
    assert diagnose.bars_reading("Step 1: Read the heights: A is 3.", bars) == {"unscanned": 1}


def test_the_report_names_the_worst_template_first_and_the_scan_shares() -> None:
    result = {"accuracy": 50.0, "n": 4, "by_template": {"corners_total": {"accuracy": 0.0, "correct": 0, "total": 2},
                                                        "bar_height": {"accuracy": 100.0, "correct": 2, "total": 2}},
              "cells": {"objects": 4, "cell": 4, "colour": 4, "shape": 1}, "bars": {"unscanned": 2}}
    lines = diagnose.report_lines(result)
    assert lines[0] == "tiny MathVista: 50.00 % of 4 items"
    assert lines[3].endswith("corners_total") and lines[4].endswith("bar_height")
    assert "colour 100.0 %, shape  25.0 %" in lines[-2]
    assert lines[-1].startswith("bars scans of bar charts (2 answers without one): of 0 bars, colour     –")


def test_a_per_template_set_asks_every_template_equally_about_evaluation_side_scenes(tmp_path) -> None:
    import json
    from collections import Counter

    from kit.eval.benchmarks import mathvista
    from kit.tiny.world.scenes import scene_split

    scenes = diagnose.per_template_set(tmp_path, 2, image_size=112)
    records = mathvista.load(tmp_path / "mathvista")  # the real MathVista layout, read by the official loader
    assert Counter(qs.template_of(r["question"]) for r in records) == {name: 2 for name in qs.TEMPLATES}
    assert {scene_split(scene) for scene in scenes.values()} == {"eval"}
    assert set(scenes) == {f"mathvista/{r['image']}" for r in records}
    assert json.loads((tmp_path / "mathvista" / "testmini.json").read_text())["1"]["solution"]


def test_a_diagnosis_keeps_each_item_s_result_its_wrong_answers_and_compares_item_by_item(tmp_path) -> None:
    import json

    import pytest

    from kit.errors import KitError
    from kit.tiny.pretrain import MODELS_DIR

    # Four new tokens cut every gold solution short, so every item is wrong: each template keeps one wrong answer.
    result = diagnose.diagnose(MODELS_DIR / "tiny-qwen2vl-student", tmp_path, per_template=1, wrong=1,
                               max_new_tokens=4, batch_size=32)
    assert result["n"] == len(result["items"]) == len(qs.TEMPLATES) and not any(result["items"].values())
    assert set(result["wrong"]) == set(qs.TEMPLATES) and all(len(kept) == 1 for kept in result["wrong"].values())
    lines = diagnose.report_lines(result)
    assert sum(line.startswith("wrong answers, ") for line in lines) == len(qs.TEMPLATES)
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(result))
    assert diagnose.against_line(result, mine).endswith(
        f"+0.00 points on {result['n']} items; right only here 0, only there 0; McNemar p = 1")
    perfect = tmp_path / "perfect.json"
    perfect.write_text(json.dumps({**result, "items": {key: True for key in result["items"]}}))
    assert f"-100.00 points on {result['n']} items; right only here 0, only there {result['n']}" in (
        diagnose.against_line(result, perfect))
    with pytest.raises(KitError, match="not a kit models diagnose --json file"):
        diagnose.against_line(result, tmp_path / "missing.json")
