"""The tiny world's scenes, renderer and question templates, checked against the pixels and against
answers recomputed here from the raw scene, independently of the templates' own helpers."""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction

import PIL.ImageDraw
import PIL.ImageFont
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.tiny.world import questions as qs
from kit.tiny.world.scenes import (
    BAR_LABELS,
    COLORS,
    GRID,
    JITTER,
    MAX_OBJECTS,
    MIN_OBJECTS,
    Bar,
    Scene,
    Shape,
    background,
    describe,
    edit_kind,
    edit_scene,
    render,
    sample_scene,
    scene_hash,
    scene_split,
)

KINDS = ("shapes", "bars")


def scenes(seed: int, n: int) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng, KINDS[i % 2]) for i in range(n)]


# -- scenes -------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.sampled_from(KINDS))
def test_sampled_scenes_are_valid_and_roundtrip(seed: int, kind: str) -> None:
    scene = sample_scene(random.Random(seed), kind)
    if kind == "shapes":
        assert MIN_OBJECTS <= len(scene.objects) <= MAX_OBJECTS
        assert len({(o.row, o.col) for o in scene.objects}) == len(scene.objects)
        assert all(abs(o.dx) <= JITTER and abs(o.dy) <= JITTER for o in scene.objects)
    else:
        assert [b.label for b in scene.bars] == list(BAR_LABELS)
        assert len({b.color for b in scene.bars}) == 4
        assert all(1 <= b.height <= 7 for b in scene.bars)
    assert Scene.from_dict(scene.to_dict()) == scene


def test_invalid_scenes_are_refused() -> None:
    with pytest.raises(ValueError, match="share a cell"):
        Scene(
            "shapes", objects=(Shape("circle", "red", "small", 0, 0), Shape("square", "blue", "large", 0, 0))
        )
    with pytest.raises(ValueError, match="height"):
        Bar("A", 8, "red")
    with pytest.raises(ValueError, match="own colour"):
        Scene("bars", bars=tuple(Bar(label, 3, "red") for label in BAR_LABELS))


def _cell_pixels(image, row: int, col: int, rgb: tuple[int, int, int]) -> list[tuple[int, int]]:
    cell = image.width // GRID
    return [
        (x, y)
        for y in range(row * cell, (row + 1) * cell)
        for x in range(col * cell, (col + 1) * cell)
        if image.getpixel((x, y)) == rgb
    ]


@pytest.mark.parametrize("seed", range(8))
def test_shapes_are_drawn_centred_in_their_cells_with_their_colour_and_size(seed: int) -> None:
    scene = sample_scene(random.Random(seed), "shapes")
    image = render(scene, 112)
    assert image.size == (112, 112) and image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)  # the background's white corner
    for obj in scene.objects:
        pixels = _cell_pixels(image, obj.row, obj.col, COLORS[obj.color])
        xs, ys = [p[0] for p in pixels], [p[1] for p in pixels]
        width, height = max(xs) - min(xs) + 1, max(ys) - min(ys) + 1
        assert width == height == (12 if obj.size == "small" else 22)
        # the box of an even-sided shape centred on pixel 14 of its cell spans 14 - side/2 .. 13 + side/2
        assert abs((max(xs) + min(xs)) / 2 - (obj.col * 28 + 13.5)) <= JITTER
        assert abs((max(ys) + min(ys)) / 2 - (obj.row * 28 + 13.5)) <= JITTER
        filled = len(pixels) / width**2
        # a square fills its box, a circle about pi/4 of it, a triangle about half
        expected = {"square": (0.95, 1.01), "circle": (0.7, 0.85), "triangle": (0.4, 0.65)}[obj.shape]
        assert expected[0] <= filled <= expected[1], (obj, filled)


@pytest.mark.parametrize("seed", range(6))
def test_bars_are_drawn_with_their_heights_in_half_cells(seed: int) -> None:
    scene = sample_scene(random.Random(seed), "bars")
    image = render(scene, 112)
    for col, bar in enumerate(scene.bars):
        x = col * 28 + 14
        column = [image.getpixel((x, y)) for y in range(112)]
        assert column.count(COLORS[bar.color]) == 14 * bar.height
        assert column[111 - 14 * bar.height] == background(112).getpixel((x, 111 - 14 * bar.height))
        row = [image.getpixel((xx, 111)) for xx in range(col * 28, (col + 1) * 28)]
        assert row.count(COLORS[bar.color]) == 16


def test_render_scales_with_the_image_size() -> None:
    scene = sample_scene(random.Random(3), "bars")
    big = render(scene, 224)
    assert big.size == (224, 224)
    bar = scene.bars[0]
    assert [big.getpixel((28, y)) for y in range(224)].count(COLORS[bar.color]) == 28 * bar.height
    with pytest.raises(ValueError, match="multiple of 4"):
        render(scene, 113)


def test_rendering_uses_no_font(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fonts(*args: object, **kwargs: object) -> None:
        raise AssertionError("the tiny world must not draw text")

    for name in ("load_default", "truetype", "load", "load_path"):
        monkeypatch.setattr(PIL.ImageFont, name, no_fonts)
    monkeypatch.setattr(PIL.ImageDraw.ImageDraw, "text", no_fonts)
    for scene in scenes(11, 10):
        render(scene, 112)


def test_describe_is_canonical_and_grouped_by_quadrant() -> None:
    scene = Scene(
        "shapes",
        objects=(
            Shape("square", "blue", "small", 3, 3),
            Shape("circle", "red", "large", 0, 0),
            Shape("triangle", "green", "small", 1, 3),
            Shape("circle", "yellow", "small", 0, 1, dx=2),
        ),
    )
    assert describe(scene) == (
        "There are 4 shapes: a large red circle in the top left, a small yellow circle in the top left, "
        "a small green triangle in the top right, and a small blue square in the bottom right."
    )
    bars = Scene(
        "bars", bars=(Bar("A", 3, "red"), Bar("B", 7, "blue"), Bar("C", 1, "green"), Bar("D", 5, "yellow"))
    )
    assert describe(bars) == (
        "There are 4 bars: bar A is red with height 3, bar B is blue with height 7, bar C is green with height 1, "
        "and bar D is yellow with height 5."
    )


def test_scene_hash_ignores_jitter_but_not_content() -> None:
    a = Scene(
        "shapes", objects=(Shape("circle", "red", "large", 0, 0), Shape("square", "blue", "small", 2, 2))
    )
    jittered = Scene(
        "shapes",
        objects=(Shape("circle", "red", "large", 0, 0, dx=1, dy=-2), Shape("square", "blue", "small", 2, 2)),
    )
    recoloured = Scene(
        "shapes", objects=(Shape("circle", "green", "large", 0, 0), Shape("square", "blue", "small", 2, 2))
    )
    assert scene_hash(a) == scene_hash(jittered) != scene_hash(recoloured)


def test_the_evaluation_split_is_about_a_quarter_of_scene_space() -> None:
    splits = Counter(scene_split(s) for s in scenes(5, 2000))
    assert 0.2 < splits["eval"] / 2000 < 0.3


@pytest.mark.parametrize("seed", range(30))
def test_edit_scene_makes_exactly_one_small_change(seed: int) -> None:
    rng = random.Random(seed)
    scene = sample_scene(rng, KINDS[seed % 2])
    edited = edit_scene(scene, rng)
    assert scene_hash(edited) != scene_hash(scene)
    kind = edit_kind(scene, edited)
    if scene.kind == "bars":
        changed = [(a, b) for a, b in zip(scene.bars, edited.bars, strict=True) if a != b]
        assert len(changed) == 1 and changed[0][0].color == changed[0][1].color
        assert kind == f"bar {changed[0][0].label} height"
        return
    before, after = Counter(scene.objects), Counter(edited.objects)
    gone, new = before - after, after - before
    if kind == "remove":
        assert len(gone) == 1 and not new
    else:
        assert len(gone) == 1 and len(new) == 1
        old, now = next(iter(gone)), next(iter(new))
        if kind == "recolour":
            assert (old.shape, old.size, old.row, old.col) == (now.shape, now.size, now.row, now.col)
            assert old.color != now.color
        else:
            assert kind == "move" and (old.shape, old.color, old.size) == (now.shape, now.color, now.size)
            assert old.quadrant != now.quadrant


def test_edit_kind_names_a_change_of_shape() -> None:
    before = Scene(
        "shapes", objects=(Shape("triangle", "red", "small", 0, 0), Shape("circle", "blue", "large", 3, 3))
    )
    after = Scene(
        "shapes", objects=(Shape("square", "red", "small", 0, 0), Shape("circle", "blue", "large", 3, 3))
    )
    assert edit_kind(before, after) == "reshape"


# -- questions: answers recomputed from the raw scene ---------------------------------------------
COLOR = "(red|green|blue|yellow)"
SHAPE = "(circle|square|triangle)"


def recompute(question: str, scene: dict) -> str | None:
    """The answer to ``question`` computed from the scene's plain dict, or None for a question this
    independent checker does not know."""
    objects, bars = scene.get("objects", []), {b["label"]: b for b in scene.get("bars", [])}
    heights = {k: b["height"] for k, b in bars.items()}
    if m := re.fullmatch(rf"How many {COLOR} shapes are there\?", question):
        return str(sum(o["color"] == m[1] for o in objects))
    if m := re.fullmatch(rf"How many {SHAPE}s are there\?", question):
        return str(sum(o["shape"] == m[1] for o in objects))
    if question == "How many shapes are there?":
        return str(len(objects))
    if m := re.fullmatch(rf"How many shapes are {COLOR} or {COLOR}\?", question):
        return str(sum(o["color"] in (m[1], m[2]) for o in objects))
    if m := re.fullmatch(
        rf"Subtract all {COLOR} shapes\. Subtract all {SHAPE}s\. How many shapes are left\?", question
    ):
        return str(sum(o["color"] != m[1] and o["shape"] != m[2] for o in objects))
    if question == "How many corners do all the shapes have in total?":
        return str(sum({"circle": 0, "triangle": 3, "square": 4}[o["shape"]] for o in objects))
    if m := re.fullmatch(rf"Is there a {COLOR} {SHAPE}\?", question):
        return "Yes" if any(o["color"] == m[1] and o["shape"] == m[2] for o in objects) else "No"
    if m := re.fullmatch(
        rf"What fraction of the shapes are {COLOR}\? Round to one decimal place\.", question
    ):
        return str(round(sum(o["color"] == m[1] for o in objects) / len(objects), 1))
    if m := re.fullmatch(r"What is the height of bar ([A-D])\?", question):
        return str(heights[m[1]])
    if m := re.fullmatch(rf"What is the height of the {COLOR} bar\?", question):
        return str(next(b["height"] for b in bars.values() if b["color"] == m[1]))
    if m := re.fullmatch(r"How much taller is bar ([A-D]) than bar ([A-D])\?", question):
        return str(heights[m[1]] - heights[m[2]])
    if m := re.fullmatch(r"What is the total height of bars ([A-D]) and ([A-D])\?", question):
        return str(heights[m[1]] + heights[m[2]])
    if question == "What is the average height of the four bars? Round to two decimal places.":
        return str(round(sum(heights.values()) / 4, 2))
    if m := re.fullmatch(r"Which bar is the (tallest|shortest)\?", question):
        pick = max if m[1] == "tallest" else min
        return pick(heights, key=heights.get)
    if m := re.fullmatch(r"Is bar ([A-D]) taller than bar ([A-D])\?", question):
        return "Yes" if heights[m[1]] > heights[m[2]] else "No"
    return None


def asked(seed: int, n: int, rng_seed: int):
    """(scene, template, question) for every template each of ``n`` sampled scenes can carry."""
    rng = random.Random(rng_seed)
    for scene in scenes(seed, n):
        for name in qs.templates_for(scene.kind):
            q = qs.ask(name, scene, rng)
            if q is not None:
                yield scene, name, q


def test_every_template_answers_correctly_with_a_consistent_solution() -> None:
    checked = Counter()
    for scene, name, q in asked(1, 400, rng_seed=0):
        assert q.steps[-1] == f"The answer is {q.answer}.", q
        assert q.n_steps >= 1 and all(s.startswith(f"Step {i}: ") for i, s in enumerate(q.steps[:-1], 1))
        if q.choices:
            assert q.answer in q.choices and len(set(q.choices)) == len(q.choices)
            assert q.answer_type == "text" and q.precision is None
        if q.answer_type == "float":
            # MathVista's spelling: what its scorer's str(round(float(x), precision)) gives
            assert q.answer == str(round(float(q.answer), q.precision))
        elif q.answer_type == "integer":
            assert q.answer.isdigit() and q.precision is None
        expected = recompute(q.question, scene.to_dict())
        if expected is not None:
            assert q.answer == expected, (q.question, describe(scene))
            checked[name] += 1
    # the independent checker covered most templates many times over
    assert len(checked) >= 14 and min(checked.values()) >= 20, checked


def test_templates_refuse_ambiguous_scenes() -> None:
    tie = Scene(
        "bars", bars=(Bar("A", 5, "red"), Bar("B", 5, "blue"), Bar("C", 1, "green"), Bar("D", 2, "yellow"))
    )
    assert qs.ask("bar_tallest", tie, random.Random(0)) is None
    same = Scene(
        "shapes", objects=(Shape("circle", "red", "small", 0, 0), Shape("circle", "blue", "small", 1, 1))
    )
    assert qs.ask("most_common_color", same, random.Random(0)) is None
    quarter = Scene(
        "shapes",
        objects=tuple(
            Shape("circle", c, "small", 0, i) for i, c in enumerate(("red", "blue", "blue", "blue"))
        ),
    )
    assert qs.ask("fraction_color", quarter, random.Random(0)) is None  # 0.25 / 0.75: a rounding tie
    assert qs.round_to(Fraction(2, 3), 1) == "0.7" and qs.round_to(Fraction(1, 4), 1) is None
    assert qs.round_to(Fraction(2), 1) == "2.0" and qs.round_to(Fraction(7, 2), 2) == "3.5"


def test_yes_no_templates_are_balanced_and_probes_agree_with_recomputation() -> None:
    rng = random.Random(4)
    answers = Counter()
    for scene in scenes(2, 300):
        for name in qs.templates_for(scene.kind, yes_no=True):
            q = qs.ask(name, scene, rng)
            if q is not None:
                assert q.is_yes_no and q.question_type == "multi_choice"
                answers[q.answer] += 1
        for probe in qs.probes_for(scene):
            expected = recompute(probe.text(), scene.to_dict())
            if expected is not None:
                assert ("Yes" if probe.truth(scene) else "No") == expected
    assert 0.4 < answers["Yes"] / sum(answers.values()) < 0.6


@pytest.mark.parametrize("name", [n for names in qs.COMPOSITE_KINDS.values() for n in names])
def test_composites_chain_their_one_step_sub_problems(name: str) -> None:
    rng = random.Random(9)
    built = 0
    for _ in range(200):
        scene = sample_scene(rng, qs.composite_scene_kind(name))
        composite = qs.ask_composite(scene, rng, name)
        if composite is None:
            continue
        built += 1
        assert len(composite.subs) == len(composite.concepts) in (2, 3)
        for q in composite.subs + [composite.composite]:
            assert q.choices and len(q.choices) == 4 and q.answer in q.choices
        # the last sub-problem states the earlier results and asks for the composite's answer
        assert composite.subs[-1].answer == composite.composite.answer
        first = [int(v) for v in composite.subs[0].answer.split(", ")]
        truth = scene.to_dict()
        asked = composite.subs[0].question.split("diagram, ")[1]
        if name.startswith("bar"):
            heights = {b["label"]: b["height"] for b in truth["bars"]}
            assert first == [heights[label] for label in re.findall(r"\b([A-D])\b", asked)]
        elif name == "corners":
            assert first == [sum(o["shape"] == s for o in truth["objects"]) for s in ("triangle", "square")]
        else:
            assert first == [sum(o["color"] == c for o in truth["objects"]) for c in re.findall(COLOR, asked)]
    assert built >= 50


def test_background_gives_every_cell_a_distinct_colour() -> None:
    # Qwen2-VL's vision tower has only relative positions: the gradient is what tells cells apart.
    canvas = background(112)
    corners = {canvas.getpixel((x, y)) for x in (0, 111) for y in (0, 111)}
    assert len(corners) == 4
    cells = {canvas.getpixel((col * 28 + 14, row * 28 + 14)) for row in range(GRID) for col in range(GRID)}
    assert len(cells) == GRID * GRID
    assert min(min(c) for c in cells) >= 255 - 48  # faint: never mistaken for a shape's colour


def _checked_arithmetic(step: str) -> list[int]:
    """The results of every "a + b = c" / "a - b = c" in ``step``, each checked, each one operation."""
    results = []
    for a, op, b, c in re.findall(r"(\d+) ([+-]) (\d+) = (\d+)", step):
        assert int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b)), step
        results.append(int(c))
    assert not re.search(r"\d+ [+-] \d+ [+-] \d+", step), f"two operations in one: {step}"
    return results


def test_local_steps_copy_forwards_and_add_two_numbers_at_a_time() -> None:
    rewritten = Counter()
    for scene, name, q in asked(5, 300, rng_seed=3):
        local = qs.local_steps(q, scene)
        assert local[-1] == q.steps[-1] == f"The answer is {q.answer}."
        assert all(s.startswith(f"Step {i}: ") for i, s in enumerate(local[:-1], 1))
        if local == q.steps:
            continue
        rewritten[name] += 1
        body = " ".join(local[:-1])
        if name in ("bar_tallest", "bar_shortest"):
            # each comparison: the running extreme against the next bar, both with their own heights, and the winner
            pick = max if name == "bar_tallest" else min
            heights, best = scene.heights, scene.bars[0].label
            turns = re.findall(r"([A-D]) (\d) or ([A-D]) (\d): ([A-D]) (\d)", local[0])
            assert [t[2] for t in turns] == ["B", "C", "D"]
            for left, a, right, b, winner, w in turns:
                assert (left, int(a), int(b)) == (best, heights[left], heights[right])
                best = pick((left, right), key=heights.get)  # a tie keeps the bar already held
                assert (winner, int(w)) == (best, heights[best])
            assert best == q.answer and local[1] == f"Step 2: Bar {q.answer} is the {name[4:]}."
        elif name == "bar_color_height":
            assert local[0] == f"Step 1: The {q.question.split()[-2]} bar has height {q.answer}."
        if name in ("bar_sum_all", "bar_mean", "bar_sum_minus", "subtract_two"):
            results = [r for s in local[:-1] for r in _checked_arithmetic(s)]
            total = sum(b.height for b in scene.bars) if scene.kind == "bars" else None
            assert str(results[-1]) == q.answer or (name == "bar_mean" and results[-1] == total), body
        counts = [m for s in local for m in [re.fullmatch(r"Step \d+: Count the (\w+ )?(\w+)s: (.+), so (\d)\.", s)] if m]
        assert (len(counts) > 0) == (name in COUNTED_IN_TURN), body
        for m in counts:
            # every object of the asked colour and shape in the scan's reading order, numbered from 1, and nothing else
            color, shape = m[1] and m[1].strip(), None if m[2] == "shape" else m[2]
            wanted = [f"{o.color} {o.shape}" for o in sorted(scene.objects, key=lambda o: (o.row, o.col))
                      if color in (None, o.color) and shape in (None, o.shape)]
            assert m[3] == (", ".join(f"{entry} {i}" for i, entry in enumerate(wanted, 1)) or "none"), body
            assert int(m[4]) == len(wanted) == scene.count(color, shape), body
    assert set(rewritten) == {"bar_tallest", "bar_shortest", "bar_color_height", "bar_sum_all", "bar_mean",
                              "bar_sum_minus", "subtract_two", *COUNTED_IN_TURN}, rewritten


# The templates with a step that counts one colour or one shape ("Count the red shapes: 2."): rewritten as counts in
# turn. Counting every shape, a size ("small shapes") or "circles that are not red" stays as written.
COUNTED_IN_TURN = {"count_color", "count_shape", "count_color_shape", "compare_yes_no", "subtract_color",
                   "subtract_two", "sum_colors", "diff_colors", "fraction_color", "corners_total"}
