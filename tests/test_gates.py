"""The perception gates (`kit models gate`, issue 17): their questions are right, their curriculum is ordered,
their models carry the position layout asked for, and a short run trains and measures."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from kit.errors import KitError
from kit.llm.models import LLAVA, QWEN2VL
from kit.tiny import gates, perception
from kit.tiny.models import TinySize, mrope_section
from kit.tiny.world.scenes import (
    COLOR_NAMES,
    SHAPES,
    Scene,
    quadrant_of,
    render,
    render_objects,
    sample_scene,
)


@pytest.mark.parametrize("kind", sorted(perception.KINDS))
def test_every_answer_is_read_off_the_objects(kind):
    spec = perception.GateSpec(kind=kind, min_objects=1, max_objects=1) if kind in perception.SINGLE else \
        perception.GateSpec(kind=kind, min_objects=2, max_objects=3)
    for objects, text, answer, drawn_kind in perception.items(spec, 200, seed=5):
        assert drawn_kind == kind
        distinct = perception.KINDS[kind][1]
        if distinct:
            values = [getattr(o, distinct) for o in objects]
            assert len(set(values)) == len(values)
        if kind in perception.SINGLE:
            (target,) = objects
            assert answer == {"colour": target.color, "shape": target.shape,
                              "quadrant": quadrant_of(target.row, target.col)}[kind]
        elif kind == "count-colour":
            color = next(c for c in COLOR_NAMES if f" {c} " in text)
            assert answer == str(sum(o.color == color for o in objects))
        else:
            named = next(v for v in (*SHAPES, *COLOR_NAMES) if f" {v}" in text)
            (target,) = [o for o in objects if named in (o.shape, o.color)]
            assert answer == {"colour-of-shape": target.color, "shape-of-colour": target.shape,
                              "quadrant-of-shape": quadrant_of(target.row, target.col)}[kind]
        assert len({o.cell for o in objects}) == len(objects)


def test_narrowed_colours_and_sizes_are_the_only_ones_drawn():
    spec = perception.GateSpec(kind="count-colour", min_objects=1, max_objects=4, colors=("red", "blue"), sizes=("large",))
    drawn = [o for objects, *_ in perception.items(spec, 100, seed=2) for o in objects]
    assert {o.color for o in drawn} == {"red", "blue"} and {o.size for o in drawn} == {"large"}


def test_the_curriculum_narrows_colours_and_sizes_first():
    spec = perception.GateSpec(kind="shape", min_objects=1, max_objects=1, warm_steps=3, warm_colors=("red",),
                          warm_sizes=("large",))
    drawn = [objects[0] for objects, *_ in perception.items(spec, 40, seed=1, step_of=4)]
    assert {(o.color, o.size) for o in drawn[:12]} == {("red", "large")}
    assert len({o.color for o in drawn[12:]}) > 1 and len({o.size for o in drawn[12:]}) == 2


def test_the_curriculum_can_ask_another_kind_first():
    spec = perception.GateSpec(kind="colour-of-shape", min_objects=2, max_objects=3, warm_steps=2, warm_kind="shape",
                          warm_objects=1)
    drawn = perception.items(spec, 16, seed=3, step_of=4)
    assert [(len(o), k) for o, *_, k in drawn[:8]] == [(1, "shape")] * 8
    assert {k for *_, k in drawn[8:]} == {"colour-of-shape"} and min(len(o) for o, *_ in drawn[8:]) >= 2
    with pytest.raises(KitError, match="must be 1"):
        perception.GateSpec(kind="colour-of-shape", warm_steps=2, warm_kind="shape")


def test_mixed_kinds_draw_each_kind_and_keep_every_question_unambiguous():
    spec = perception.GateSpec(kind="colour-of-shape+shape-of-colour", min_objects=3, max_objects=3)
    assert spec.distinct == ("color", "shape")
    drawn = perception.items(spec, 300, seed=4)
    assert {kind for *_, kind in drawn} == {"colour-of-shape", "shape-of-colour"}
    for objects, *_ in drawn:
        assert len({o.shape for o in objects}) == len({o.color for o in objects}) == 3


def test_the_unbound_rate_is_what_naming_a_random_object_gives():
    from kit.tiny.world.scenes import Shape

    red_circle, blue_square = Shape("circle", "red", "large", 0, 0), Shape("square", "blue", "small", 3, 3)
    red_square = Shape("square", "red", "small", 3, 3)
    drawn = [((red_circle, blue_square), "What colour is the circle?", "red", "colour-of-shape"),
             ((red_circle, red_square), "What colour is the circle?", "red", "colour-of-shape")]
    assert perception.unbound_rate(drawn) == 75.0  # half right in the first picture, always right in the second
    assert perception.unbound_rate([((red_circle,), "Where is the object?", "top left", "quadrant")]) == 100.0
    assert perception.unbound_rate([((red_circle,), "How many red objects are there?", "1", "count-colour")]) is None
    # Two objects of distinct shapes and random colours: 1/4 + 3/4 x 1/2.
    spec = perception.GateSpec(kind="colour-of-shape", min_objects=2, max_objects=2)
    assert perception.unbound_rate(perception.items(spec, 4000, seed=0)) == pytest.approx(62.5, abs=1.5)


def test_a_traced_answer_lists_the_objects_in_reading_order_then_answers():
    from kit.tiny.world.scenes import Shape

    objects = (Shape("square", "blue", "small", 3, 3), Shape("circle", "red", "large", 0, 2))
    traced = perception.GateSpec(kind="colour-of-shape", trace="objects")
    assert perception.target(traced, objects, "red") == "red circle, blue square. red"
    assert perception.target(replace(traced, trace=""), objects, "red") == "red"
    assert perception.final_answer(" red circle, blue square. red\n") == perception.final_answer("red") == "red"
    assert perception.final_answer("top left") == "top left"


def test_a_cells_trace_reads_every_cell_in_reading_order_and_is_scored_cell_by_cell():
    from kit.tiny.world.scenes import Shape

    objects = (Shape("square", "blue", "small", 3, 3), Shape("circle", "red", "large", 0, 2))
    cells = perception.GateSpec(kind="count-colour", trace="cells")
    expected = "-, -, red circle, -; -, -, -, -; -, -, -, -; -, -, -, blue square"
    assert perception.target(cells, objects, "1") == f"{expected}. 1"
    assert perception.scan_accuracy(f"{expected}. 1", objects, "cells") == (2, 2)
    # One object misread, or cut off with the last row: scored on the objects only, never on the empty cells.
    assert perception.scan_accuracy(expected.replace("red circle", "red square") + ". 1", objects, "cells") == (1, 2)
    assert perception.scan_accuracy("-, -, red circle, -; -, -, -, -; -, -, -, -; -, -. 1", objects, "cells") == (1, 2)
    assert perception.scan_accuracy("-, -, -, -; -, -, -, -; -, -, -, -; -, -, -, -. 0", objects, "cells") == (0, 2)
    assert perception.scan_accuracy("red circle, blue circle. red", objects, "objects") == (1, 2)
    with pytest.raises(KitError, match="--trace"):
        replace(cells, trace="rows")


def test_a_row_tally_counts_the_asked_colour_row_by_row_between_the_scan_and_the_answer():
    from kit.tiny.world.scenes import Shape

    objects = (Shape("square", "red", "small", 3, 3), Shape("circle", "red", "large", 0, 2),
               Shape("circle", "blue", "large", 1, 0), Shape("triangle", "red", "small", 3, 0))
    tallied = perception.GateSpec(kind="count-colour", min_objects=1, max_objects=6, trace="cells", tally=True)
    scan = "-, -, red circle, -; blue circle, -, -, -; -, -, -, -; red triangle, -, -, red square"
    reply = perception.target(tallied, objects, "3", "How many red objects are there?")
    assert reply == f"{scan}. 1, 1, 1, 3. 3"
    assert perception.final_answer(reply) == "3"
    assert perception.scan_accuracy(reply, objects, "cells") == (4, 4)  # the tally is not read as scan entries
    assert perception.row_tally(objects, "green") == "0, 0, 0, 0"
    for wrong in (dict(trace="objects"), dict(kind="colour-of-shape", min_objects=2, max_objects=2)):
        with pytest.raises(KitError, match="--tally"):
            replace(tallied, **wrong)


def test_the_curriculum_draws_warm_objects_first():
    spec = perception.GateSpec(kind="colour-of-shape", min_objects=3, max_objects=3, warm_objects=1, warm_steps=2)
    drawn = [len(objects) for objects, *_ in perception.items(spec, 20, seed=1, step_of=4)]
    assert drawn == [1] * 8 + [3] * 12


@pytest.mark.parametrize(("changes", "message"), [
    ({"kind": "colour", "max_objects": 2}, "must be 1"),
    ({"kind": "colour-of-shape", "max_objects": 4}, "different shape"),
    ({"kind": "nothing"}, "unknown kind"),
    ({"mrope": "diagonal"}, "--mrope"),
    ({"warm_steps": 5, "warm_objects": 3}, "--warm-objects"),
    ({"colors": ("red", "mauve")}, "mauve"),
    ({"kind": "shape+colour-of-shape"}, "cannot hold one object and several"),
    ({"colors": ("red",), "max_objects": 2}, "different color"),
    ({"warm_steps": 5, "warm_colors": ("red",)}, "different color"),
    ({"steps": 0}, "--steps"),
])
def test_bad_settings_name_the_option(changes, message):
    with pytest.raises(KitError, match=message):
        perception.GateSpec(**{"kind": "shape-of-colour", **changes})


def test_objects_draw_as_the_world_draws_them():
    scene = sample_scene(random.Random(3), "shapes")
    assert isinstance(scene, Scene)
    assert render(scene).tobytes() == render_objects(scene.objects).tobytes()


@pytest.mark.parametrize(("layout", "expected"), [
    ("qwen2vl", [2, 3, 3]), ("interleaved", [1] * 8), ("spatial", [0, 1, 1] * 4)])
def test_mrope_layouts_reach_the_model(layout, expected):
    from kit.tiny.models import build_qwen2vl, train_tokenizer

    assert mrope_section(layout, 16) == expected
    tokenizer = train_tokenizer(perception.gate_texts(), QWEN2VL, 320)
    model, _ = build_qwen2vl(tokenizer, TinySize(hidden=32, layers=1, ffn=64, heads=2, kv_heads=1, vision_width=16,
                                                 vision_depth=1), mrope=layout, vision_rope_theta=100.0)
    assert model.config.text_config.rope_parameters["mrope_section"] == expected
    assert model.config.vision_config.rope_parameters["rope_theta"] == 100.0


def test_a_short_gate_trains_and_measures():
    spec = perception.GateSpec(kind="colour-of-shape+quadrant-of-shape", steps=4, batch_size=4, warmup=1, eval_every=2, eval_items=6,
                          warm_steps=2, size=TinySize(hidden=32, layers=1, ffn=64, heads=2, kv_heads=1,
                                                      vision_width=16, vision_depth=1))
    lines: list[str] = []
    report = gates.run_gate(spec, log=lines.append)
    assert [p["step"] for p in report.curve] == [2, 4]
    assert all(0 <= p["accuracy"] <= 100 for p in report.curve)
    assert report.majority >= 100 / len(COLOR_NAMES) and len(lines) == 2 and "unbound" in lines[0]
    assert 0 < report.unbound < 100
    assert report.spec["kind"] == "colour-of-shape+quadrant-of-shape" and report.parameters > 0
    assert "colour-of-shape " in lines[0] and "quadrant-of-shape " in lines[0]
    again = gates.run_gate(spec, log=lambda _: None)
    assert again.curve == report.curve  # seeded end to end
    assert report.scan == []  # untraced: no scan to score


def test_a_traced_gate_reports_how_much_of_its_scan_it_read():
    spec = perception.GateSpec(kind="count-colour", min_objects=1, max_objects=3, trace="cells", steps=2, batch_size=4,
                          warmup=1, eval_every=2, eval_items=4,
                          size=TinySize(hidden=32, layers=1, ffn=64, heads=2, kv_heads=1, vision_width=16,
                                        vision_depth=1))
    lines: list[str] = []
    report = gates.run_gate(spec, log=lines.append)
    assert len(report.scan) == 1 and 0 <= report.scan[0] <= 100 and "scan" in lines[0] and "objects" in lines[0]


def test_ordered_batching_needs_one_example_per_slot():
    from kit.tiny.pretrain import Example, PretrainSpec, train

    spec = PretrainSpec(name="short", family=QWEN2VL, size=TinySize(), corpus=(), steps=3, batch_size=4,
                        batching="ordered")
    with pytest.raises(KitError, match="needs 12 examples"):
        train(None, None, [Example(None, [("q", "a")])] * 11, spec)


def test_the_command_line_builds_the_spec():
    import argparse

    parser = argparse.ArgumentParser()
    gates.register(parser.add_subparsers())
    args = parser.parse_args(["gate", "colour-of-shape", "--objects", "2-3", "--hidden", "64", "--warm-steps", "100"])
    spec = gates.spec_from_args(args)
    assert (spec.min_objects, spec.max_objects, spec.size.hidden, spec.size.ffn) == (2, 3, 64, 192)
    assert spec.warm_steps == 100 and spec.trace == ""
    assert gates.spec_from_args(parser.parse_args(["gate", "count-colour", "--trace"])).trace == "objects"
    assert gates.spec_from_args(parser.parse_args(["gate", "count-colour", "--trace", "cells"])).trace == "cells"
    with pytest.raises(KitError, match="--objects"):
        gates.spec_from_args(parser.parse_args(["gate", "shape", "--objects", "two"]))


def test_the_probe_reads_colour_from_fresh_tokens_and_refuses_binding_kinds():
    small = TinySize(hidden=32, layers=1, ffn=64, heads=2, kv_heads=1, vision_width=16, vision_depth=1)
    lines: list[str] = []
    report = gates.probe_tokens(perception.GateSpec(kind="colour", min_objects=1, max_objects=1, size=small),
                                train_items=500, test_items=250, steps=300, log=lines.append)
    assert set(report["variance_share"]) == set(gates.ATTRIBUTES) and len(lines) == 1 + len(gates.PROBE_VIEWS)
    assert all(0 <= share <= 100 for share in report["variance_share"].values())
    # Colour is the picture's strongest signal: a fresh model's object token carries it (measured 99 % at full size).
    assert report["probe"]["object token"][300] >= 60
    with pytest.raises(KitError, match="lone object"):
        gates.probe_tokens(perception.GateSpec(kind="colour-of-shape", size=small))


def test_rotary_settings_are_refused_for_llava():
    from kit.tiny.models import build_tiny, train_tokenizer

    tokenizer = train_tokenizer(perception.gate_texts(), LLAVA, 320)
    with pytest.raises(KitError, match="rotary settings"):
        build_tiny(LLAVA, tokenizer, TinySize(hidden=32, layers=1, ffn=64, heads=2, kv_heads=1), mrope="spatial")
