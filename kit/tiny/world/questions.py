"""Question templates: every question is computed from a scene's ground truth, with its exact answer
and a gold step-by-step solution whose last line is "The answer is X.".

``TEMPLATES`` maps a name to a template whose ``ask(scene, rng)`` returns a ``Question`` or ``None``
when the scene cannot carry that question (a tie for "most common", no unique object to point at,
a rounding tie at the asked precision). Yes/no questions are built from ``Probe``s, statements that
can be evaluated on any scene, so that HallusionBench can ask one question of an original and an
edited figure. ``ask_composite`` builds We-Math's multi-step problems with their one-step
sub-problems, and ``ask_rule`` asks about the world's rules, answerable without a picture.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from kit.tiny.world.scenes import BAR_LABELS, COLOR_NAMES, CORNERS, QUADRANTS, SHAPES, SIZES, Scene

YES_NO = ["Yes", "No"]


@dataclass
class Question:
    """One question about one scene. ``answer`` is exact: for a multiple-choice question it is the text
    of the right choice (MathVista's convention); ``steps`` is the gold solution."""

    question: str
    answer: str
    answer_type: str  # integer | float | text
    choices: list[str] | None
    precision: int | None
    steps: list[str]
    template: str
    skills: list[str] = field(default_factory=list)
    task: str = "visual question answering"
    category: str = "general-vqa"
    subject: str = "counting"

    @property
    def n_steps(self) -> int:
        """Reasoning steps in the gold solution, not counting the closing "The answer is X."."""
        return len(self.steps) - 1

    @property
    def question_type(self) -> str:
        return "multi_choice" if self.choices else "free_form"

    @property
    def is_yes_no(self) -> bool:
        return self.choices == YES_NO


@dataclass(frozen=True)
class Template:
    name: str
    kind: str  # the scene kind it asks about
    ask: Callable[[Scene, random.Random], Question | None]
    yes_no: bool = False


TEMPLATES: dict[str, Template] = {}


def _template(name: str, kind: str, yes_no: bool = False) -> Callable:
    def register(fn: Callable[[Scene, random.Random], Question | None]) -> Callable:
        TEMPLATES[name] = Template(name, kind, fn, yes_no)
        return fn

    return register


def templates_for(kind: str, yes_no: bool | None = None) -> list[str]:
    """Template names asking about scenes of ``kind``; ``yes_no`` filters yes/no templates in or out."""
    return [t.name for t in TEMPLATES.values() if t.kind == kind and (yes_no is None or t.yes_no == yes_no)]


def ask(name: str, scene: Scene, rng: random.Random) -> Question | None:
    template = TEMPLATES[name]
    if template.kind != scene.kind:
        return None
    return template.ask(scene, rng)


def ask_any(scene: Scene, rng: random.Random, names: list[str] | None = None) -> Question:
    """A question from one of ``names`` (default: every template for the scene's kind), tried in random
    order until one applies. Every scene carries at least its count/height questions."""
    names = list(names if names is not None else templates_for(scene.kind))
    rng.shuffle(names)
    for name in names:
        question = ask(name, scene, rng)
        if question is not None:
            return question
    raise ValueError(f"no template in {sorted(names)} applies to this {scene.kind} scene")


def question_shape(question: str) -> str:
    """``question`` with what varies between scenes (colours, shapes, places, bar labels, numbers) replaced
    by ``_``: the text every question of one template shares."""
    import re

    words = [*COLOR_NAMES, *SHAPES, *(f"{s}s" for s in SHAPES), *QUADRANTS, "top", "bottom", "left", "right"]
    pattern = r"\b(?:" + "|".join(sorted(map(re.escape, words), key=len, reverse=True)) + r")\b"
    shape = re.sub(r"\bbar [A-Z]\b", "bar _", re.sub(pattern, "_", question))
    return re.sub(r"\bbars [A-Z] and [A-Z]\b", "bars _ and _", re.sub(r"\d+", "_", shape))


def template_of(question: str) -> str | None:
    """The template (``TEMPLATES``) that asks ``question``, recognised by its ``question_shape``; None for a text no
    template writes. Evaluation records keep only the question (MathVista's layout), so per-template accuracy
    starts here."""
    return _template_shapes().get(question_shape(question))


def _template_shapes() -> dict[str, str]:
    """``question_shape`` -> template, learnt once from questions every template asks about sampled scenes."""
    global _SHAPES
    if _SHAPES is None:
        from kit.tiny.world.scenes import SCENE_KINDS, sample_scene

        rng, shapes = random.Random(0), {}
        for kind in SCENE_KINDS:
            for _ in range(300):
                scene = sample_scene(rng, kind)
                for name in templates_for(kind):
                    question = ask(name, scene, rng)
                    if question is not None:
                        shapes.setdefault(question_shape(question.question), set()).add(name)
        shared = {shape: names for shape, names in shapes.items() if len(names) > 1}
        if shared:  # a world change that makes two templates read alike must change question_shape too
            raise ValueError(f"templates share a question shape: {shared}")
        _SHAPES = {shape: names.pop() for shape, names in shapes.items()}
    return _SHAPES


_SHAPES: dict[str, str] | None = None


# -- small helpers --------------------------------------------------------------------------------
def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _final(answer: str) -> str:
    return f"The answer is {answer}."


def _numbered(steps: list[str], answer: str) -> list[str]:
    return [f"Step {i}: {s}" for i, s in enumerate(steps, 1)] + [_final(answer)]


def round_to(value: Fraction, precision: int) -> str | None:
    """``value`` rounded to ``precision`` decimals and spelled as MathVista spells float answers,
    ``str(round(x, precision))`` ("0.7", "2.0", "3.5" at precision 2), which is what its scorer compares
    a normalised prediction with; None on an exact tie (0.25 to one decimal), which a reader could
    fairly round either way."""
    scaled = value * 10**precision
    if scaled.denominator == 2:
        return None
    quantum = Decimal(1).scaleb(-precision)
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return str(float(exact.quantize(quantum, rounding=ROUND_HALF_UP)))


def _count_step(
    scene: Scene, color: str | None = None, shape: str | None = None, size: str | None = None
) -> str:
    noun = shape or "shape"
    adjectives = " ".join(a for a in (size, color) if a)
    what = f"{adjectives} {noun}s".strip()
    return f"Count the {what}: {scene.count(color, shape, size)}."


def _present_colors(scene: Scene, rng: random.Random) -> str:
    """A colour that is usually in the scene: counting questions about absent colours (answer 0) are
    kept, but rarer, so that most counts are informative."""
    present = sorted({o.color for o in scene.objects})
    return rng.choice(present) if rng.random() < 0.8 else rng.choice(COLOR_NAMES)


def _unique_objects(scene: Scene) -> list[tuple[str, str]]:
    """(colour, shape) pairs that name exactly one object of the scene."""
    pairs = [(o.color, o.shape) for o in scene.objects]
    return [p for p in pairs if pairs.count(p) == 1]


def _heights_step(scene: Scene) -> str:
    return "Read the heights: " + ", ".join(f"{b.label} is {b.height}" for b in scene.bars) + "."


def _mc(choices: list[str], rng: random.Random) -> list[str]:
    choices = list(choices)
    rng.shuffle(choices)
    return choices


# -- shapes: counting -----------------------------------------------------------------------------
@_template("count_color", "shapes")
def _count_color(scene: Scene, rng: random.Random) -> Question:
    color = _present_colors(scene, rng)
    n = scene.count(color=color)
    return Question(
        f"How many {color} shapes are there?",
        str(n),
        "integer",
        None,
        None,
        _numbered([_count_step(scene, color=color)], str(n)),
        "count_color",
        skills=["arithmetic reasoning"],
    )


@_template("count_shape", "shapes")
def _count_shape(scene: Scene, rng: random.Random) -> Question:
    shape = rng.choice(sorted({o.shape for o in scene.objects})) if rng.random() < 0.8 else rng.choice(SHAPES)
    n = scene.count(shape=shape)
    return Question(
        f"How many {shape}s are there?",
        str(n),
        "integer",
        None,
        None,
        _numbered([_count_step(scene, shape=shape)], str(n)),
        "count_shape",
        skills=["arithmetic reasoning"],
    )


@_template("count_size", "shapes")
def _count_size(scene: Scene, rng: random.Random) -> Question:
    size = rng.choice(SIZES)
    n = scene.count(size=size)
    return Question(
        f"How many {size} shapes are there?",
        str(n),
        "integer",
        None,
        None,
        _numbered([_count_step(scene, size=size)], str(n)),
        "count_size",
        skills=["arithmetic reasoning"],
    )


@_template("count_all", "shapes")
def _count_all(scene: Scene, rng: random.Random) -> Question:
    n = len(scene.objects)
    return Question(
        "How many shapes are there?",
        str(n),
        "integer",
        None,
        None,
        _numbered([_count_step(scene)], str(n)),
        "count_all",
        skills=["arithmetic reasoning"],
    )


@_template("count_color_shape", "shapes")
def _count_color_shape(scene: Scene, rng: random.Random) -> Question:
    obj = rng.choice(scene.objects)
    color = obj.color if rng.random() < 0.8 else rng.choice(COLOR_NAMES)
    n = scene.count(color=color, shape=obj.shape)
    return Question(
        f"How many {color} {obj.shape}s are there?",
        str(n),
        "integer",
        None,
        None,
        _numbered([_count_step(scene, color=color, shape=obj.shape)], str(n)),
        "count_color_shape",
        skills=["arithmetic reasoning"],
    )


# -- shapes: arithmetic ---------------------------------------------------------------------------
def _two_colors(scene: Scene, rng: random.Random) -> tuple[str, str]:
    first = _present_colors(scene, rng)
    second = rng.choice([c for c in COLOR_NAMES if c != first])
    return first, second


@_template("sum_colors", "shapes")
def _sum_colors(scene: Scene, rng: random.Random) -> Question:
    c1, c2 = _two_colors(scene, rng)
    a, b = scene.count(color=c1), scene.count(color=c2)
    steps = [_count_step(scene, color=c1), _count_step(scene, color=c2), f"Add: {a} + {b} = {a + b}."]
    return Question(
        f"How many shapes are {c1} or {c2}?",
        str(a + b),
        "integer",
        None,
        None,
        _numbered(steps, str(a + b)),
        "sum_colors",
        skills=["arithmetic reasoning"],
        task="math word problem",
        category="math-targeted-vqa",
        subject="arithmetic",
    )


@_template("diff_colors", "shapes")
def _diff_colors(scene: Scene, rng: random.Random) -> Question:
    c1, c2 = _two_colors(scene, rng)
    if scene.count(color=c1) < scene.count(color=c2):
        c1, c2 = c2, c1
    a, b = scene.count(color=c1), scene.count(color=c2)
    steps = [_count_step(scene, color=c1), _count_step(scene, color=c2), f"Subtract: {a} - {b} = {a - b}."]
    return Question(
        f"How many more {c1} shapes than {c2} shapes are there?",
        str(a - b),
        "integer",
        None,
        None,
        _numbered(steps, str(a - b)),
        "diff_colors",
        skills=["arithmetic reasoning"],
        task="math word problem",
        category="math-targeted-vqa",
        subject="arithmetic",
    )


@_template("subtract_color", "shapes")
def _subtract_color(scene: Scene, rng: random.Random) -> Question:
    color = _present_colors(scene, rng)
    total, removed = len(scene.objects), scene.count(color=color)
    steps = [
        _count_step(scene),
        _count_step(scene, color=color),
        f"Subtract: {total} - {removed} = {total - removed}.",
    ]
    return Question(
        f"Subtract all {color} shapes. How many shapes are left?",
        str(total - removed),
        "integer",
        None,
        None,
        _numbered(steps, str(total - removed)),
        "subtract_color",
        skills=["arithmetic reasoning"],
        task="math word problem",
        category="math-targeted-vqa",
        subject="arithmetic",
    )


@_template("subtract_two", "shapes")
def _subtract_two(scene: Scene, rng: random.Random) -> Question:
    color = _present_colors(scene, rng)
    shape = rng.choice(SHAPES)
    total, first = len(scene.objects), scene.count(color=color)
    second = len([o for o in scene.objects if o.shape == shape and o.color != color])
    left = total - first - second
    steps = [
        _count_step(scene),
        _count_step(scene, color=color),
        f"Count the {shape}s that are not {color}: {second}.",
        f"Subtract: {total} - {first} - {second} = {left}.",
    ]
    return Question(
        f"Subtract all {color} shapes. Subtract all {shape}s. How many shapes are left?",
        str(left),
        "integer",
        None,
        None,
        _numbered(steps, str(left)),
        "subtract_two",
        skills=["arithmetic reasoning"],
        task="math word problem",
        category="math-targeted-vqa",
        subject="arithmetic",
    )


@_template("corners_total", "shapes")
def _corners_total(scene: Scene, rng: random.Random) -> Question:
    t, s = scene.count(shape="triangle"), scene.count(shape="square")
    total = t * CORNERS["triangle"] + s * CORNERS["square"]
    steps = [
        _count_step(scene, shape="triangle"),
        _count_step(scene, shape="square"),
        f"A triangle has 3 corners: {t} x 3 = {3 * t}.",
        f"A square has 4 corners: {s} x 4 = {4 * s}.",
        f"Circles have no corners, so add: {3 * t} + {4 * s} = {total}.",
    ]
    return Question(
        "How many corners do all the shapes have in total?",
        str(total),
        "integer",
        None,
        None,
        _numbered(steps, str(total)),
        "corners_total",
        skills=["geometry reasoning", "arithmetic reasoning"],
        task="math word problem",
        category="math-targeted-vqa",
        subject="combinatorial geometry",
    )


@_template("fraction_color", "shapes")
def _fraction_color(scene: Scene, rng: random.Random) -> Question | None:
    color = rng.choice(sorted({o.color for o in scene.objects}))
    a, total = scene.count(color=color), len(scene.objects)
    value = round_to(Fraction(a, total), 1)
    if value is None:
        return None
    steps = [
        _count_step(scene, color=color),
        _count_step(scene),
        f"Divide: {a} / {total} = {value} to one decimal place.",
    ]
    return Question(
        f"What fraction of the shapes are {color}? Round to one decimal place.",
        value,
        "float",
        None,
        1,
        _numbered(steps, value),
        "fraction_color",
        skills=["arithmetic reasoning", "statistical reasoning"],
        task="math word problem",
        category="math-targeted-vqa",
        subject="statistics",
    )


# -- shapes: choice questions ---------------------------------------------------------------------
@_template("most_common_color", "shapes")
def _most_common_color(scene: Scene, rng: random.Random) -> Question | None:
    counts = {c: scene.count(color=c) for c in COLOR_NAMES}
    best = max(counts.values())
    winners = [c for c, n in counts.items() if n == best]
    if len(winners) != 1:
        return None
    steps = [
        "Count each colour: " + ", ".join(f"{c} {n}" for c, n in counts.items()) + ".",
        f"The largest count is {best}, for {winners[0]}.",
    ]
    return Question(
        "Which colour is the most common among the shapes?",
        winners[0],
        "text",
        _mc(list(COLOR_NAMES), rng),
        None,
        _numbered(steps, winners[0]),
        "most_common_color",
        skills=["statistical reasoning"],
        subject="statistics",
    )


@_template("quadrant_of", "shapes")
def _quadrant_of(scene: Scene, rng: random.Random) -> Question | None:
    unique = _unique_objects(scene)
    if not unique:
        return None
    color, shape = rng.choice(unique)
    obj = scene.select(color=color, shape=shape)[0]
    half = "top" if obj.top else "bottom"
    side = "left" if obj.left else "right"
    steps = [f"The {color} {shape} is in the {half} half and the {side} half of the picture."]
    return Question(
        f"Where is the {color} {shape}?",
        obj.quadrant,
        "text",
        _mc(list(QUADRANTS), rng),
        None,
        _numbered(steps, obj.quadrant),
        "quadrant_of",
        skills=["logical reasoning"],
        subject="combinatorial geometry",
    )


@_template("color_of_shape", "shapes")
def _color_of_shape(scene: Scene, rng: random.Random) -> Question | None:
    obj = rng.choice(scene.objects)
    if scene.count(shape=obj.shape) == 1:
        name = f"the {obj.shape}"
    elif len([o for o in scene.objects if o.shape == obj.shape and o.quadrant == obj.quadrant]) == 1:
        name = f"the {obj.shape} in the {obj.quadrant}"
    else:
        return None
    steps = [f"Find {name}: it is {obj.color}."]
    return Question(
        f"What colour is {name}?",
        obj.color,
        "text",
        _mc(list(COLOR_NAMES), rng),
        None,
        _numbered(steps, obj.color),
        "color_of_shape",
        skills=["logical reasoning"],
        subject="logic",
    )


# -- probes: yes/no statements that can be checked on any scene ------------------------------------
@dataclass(frozen=True)
class Probe:
    """A yes/no statement about a scene, e.g. ("exists", "red", "circle")."""

    kind: str
    args: tuple

    def text(self) -> str:
        a = self.args
        if self.kind == "exists":
            return f"Is there a {a[0]} {a[1]}?"
        if self.kind == "exists_in":
            return f"Is there a {a[0]} {a[1]} in the {a[2]}?"
        if self.kind == "more":
            return f"Are there more {a[0]} shapes than {a[1]} shapes?"
        if self.kind == "count_is":
            return (
                f"Is there exactly 1 {a[0]} shape?"
                if a[1] == 1
                else f"Are there exactly {a[1]} {a[0]} shapes?"
            )
        if self.kind == "bar_taller":
            return f"Is bar {a[0]} taller than bar {a[1]}?"
        if self.kind == "bar_height_is":
            return f"Is the height of bar {a[0]} equal to {a[1]}?"
        if self.kind == "bar_tallest":
            return f"Is bar {a[0]} the tallest bar?"
        raise ValueError(self.kind)

    def truth(self, scene: Scene) -> bool:
        a = self.args
        if self.kind == "exists":
            return scene.count(color=a[0], shape=a[1]) > 0
        if self.kind == "exists_in":
            return any(o.quadrant == a[2] for o in scene.select(color=a[0], shape=a[1]))
        if self.kind == "more":
            return scene.count(color=a[0]) > scene.count(color=a[1])
        if self.kind == "count_is":
            return scene.count(color=a[0]) == a[1]
        h = scene.heights
        if self.kind == "bar_taller":
            return h[a[0]] > h[a[1]]
        if self.kind == "bar_height_is":
            return h[a[0]] == a[1]
        if self.kind == "bar_tallest":
            return all(h[a[0]] > v for k, v in h.items() if k != a[0])
        raise ValueError(self.kind)

    def steps(self, scene: Scene) -> list[str]:
        a = self.args
        answer = "Yes" if self.truth(scene) else "No"
        if self.kind in ("exists", "exists_in"):
            found = scene.select(color=a[0], shape=a[1])
            where = [o.quadrant for o in found]
            seen = f"there is one in the {' and the '.join(where)}" if where else "there is none"
            steps = [f"Look for a {a[0]} {a[1]}: {seen}."]
            if self.kind == "exists_in":
                steps.append(f"{'One is' if a[2] in where else 'None is'} in the {a[2]}.")
        elif self.kind in ("more", "count_is"):
            steps = [_count_step(scene, color=a[0])]
            if self.kind == "more":
                x, y = scene.count(color=a[0]), scene.count(color=a[1])
                steps += [
                    _count_step(scene, color=a[1]),
                    f"{x} is {'more' if x > y else 'not more'} than {y}.",
                ]
            else:
                steps.append(f"{scene.count(color=a[0])} is {'' if self.truth(scene) else 'not '}{a[1]}.")
        elif self.kind == "bar_taller":
            x, y = scene.bar(a[0]).height, scene.bar(a[1]).height
            steps = [
                f"Bar {a[0]} has height {x}.",
                f"Bar {a[1]} has height {y}.",
                f"{x} is {'more' if x > y else 'not more'} than {y}.",
            ]
        elif self.kind == "bar_height_is":
            steps = [f"Bar {a[0]} has height {scene.bar(a[0]).height}."]
        else:
            steps = [_heights_step(scene), f"Bar {a[0]} is {'' if self.truth(scene) else 'not '}the tallest."]
        return _numbered(steps, answer)

    def statement(self, scene: Scene) -> str:
        """The true fact behind the answer on ``scene`` (HallusionBench's gt_answer_details)."""
        a, true = self.args, self.truth(scene)
        if self.kind == "exists":
            return f"There is {'a' if true else 'no'} {a[0]} {a[1]} in the picture."
        if self.kind == "exists_in":
            return f"There is {'a' if true else 'no'} {a[0]} {a[1]} in the {a[2]} of the picture."
        if self.kind == "more":
            x, y = scene.count(color=a[0]), scene.count(color=a[1])
            return f"There are {_plural(x, a[0] + ' shape')} and {_plural(y, a[1] + ' shape')}."
        if self.kind == "count_is":
            return f"There are {_plural(scene.count(color=a[0]), a[0] + ' shape')}."
        h = scene.heights
        if self.kind == "bar_taller":
            return f"Bar {a[0]} has height {h[a[0]]} and bar {a[1]} has height {h[a[1]]}."
        if self.kind == "bar_height_is":
            return f"Bar {a[0]} has height {h[a[0]]}."
        top = max(h.values())
        tallest = [k for k, v in h.items() if v == top]
        return f"The tallest {'bar is' if len(tallest) == 1 else 'bars are'} {' and '.join(tallest)}, with height {top}."

    def question(self, scene: Scene, template: str) -> Question:
        answer = "Yes" if self.truth(scene) else "No"
        bars = self.kind.startswith("bar")
        return Question(
            self.text(),
            answer,
            "text",
            list(YES_NO),
            None,
            self.steps(scene),
            template,
            skills=["statistical reasoning"] if bars else ["arithmetic reasoning"],
            task="figure question answering" if bars else "visual question answering",
            subject="statistics" if bars else "logic",
        )


def probes_for(scene: Scene) -> list[Probe]:
    """Every probe worth asking about a scene of this kind (true and false ones alike)."""
    if scene.kind == "bars":
        probes = [Probe("bar_taller", (x, y)) for x in BAR_LABELS for y in BAR_LABELS if x != y]
        probes += [
            Probe("bar_height_is", (b.label, h))
            for b in scene.bars
            for h in (b.height - 1, b.height, b.height + 1)
            if 1 <= h <= 7
        ]
        probes += [Probe("bar_tallest", (x,)) for x in BAR_LABELS]
        return probes
    probes = [Probe("exists", (c, s)) for c in COLOR_NAMES for s in SHAPES]
    probes += [Probe("exists_in", (o.color, o.shape, q)) for o in scene.objects for q in QUADRANTS]
    probes += [Probe("more", (x, y)) for x in COLOR_NAMES for y in COLOR_NAMES if x != y]
    probes += [Probe("count_is", (c, n)) for c in COLOR_NAMES for n in range(1, 4)]
    return probes


def _yes_no(scene: Scene, rng: random.Random, kinds: tuple[str, ...], template: str) -> Question | None:
    """A balanced yes/no question: the answer is drawn first, then a probe with that answer."""
    want = rng.random() < 0.5
    candidates = [p for p in probes_for(scene) if p.kind in kinds and p.truth(scene) == want]
    if not candidates:
        return None
    return rng.choice(candidates).question(scene, template)


@_template("exists_yes_no", "shapes", yes_no=True)
def _exists_yes_no(scene: Scene, rng: random.Random) -> Question | None:
    return _yes_no(scene, rng, ("exists",), "exists_yes_no")


@_template("compare_yes_no", "shapes", yes_no=True)
def _compare_yes_no(scene: Scene, rng: random.Random) -> Question | None:
    return _yes_no(scene, rng, ("more",), "compare_yes_no")


@_template("half_yes_no", "shapes", yes_no=True)
def _half_yes_no(scene: Scene, rng: random.Random) -> Question | None:
    unique = _unique_objects(scene)
    if not unique:
        return None
    color, shape = rng.choice(unique)
    obj = scene.select(color=color, shape=shape)[0]
    half = rng.choice(("top", "bottom", "left", "right"))
    truth = half in obj.quadrant.split()
    answer = "Yes" if truth else "No"
    steps = _numbered([f"The {color} {shape} is in the {obj.quadrant}."], answer)
    return Question(
        f"Is the {color} {shape} in the {half} half of the picture?",
        answer,
        "text",
        list(YES_NO),
        None,
        steps,
        "half_yes_no",
        skills=["logical reasoning"],
        subject="logic",
    )


# -- bars -----------------------------------------------------------------------------------------
_BAR_KW = {"skills": ["statistical reasoning"], "task": "figure question answering", "subject": "statistics"}
_BAR_MATH_KW = {
    "skills": ["arithmetic reasoning", "statistical reasoning"],
    "task": "figure question answering",
    "category": "math-targeted-vqa",
    "subject": "arithmetic",
}


@_template("bar_height", "bars")
def _bar_height(scene: Scene, rng: random.Random) -> Question:
    bar = rng.choice(scene.bars)
    steps = _numbered([f"Bar {bar.label} has height {bar.height}."], str(bar.height))
    return Question(
        f"What is the height of bar {bar.label}?",
        str(bar.height),
        "integer",
        None,
        None,
        steps,
        "bar_height",
        **{**_BAR_KW, "subject": "metric geometry - length"},
    )


@_template("bar_color_height", "bars")
def _bar_color_height(scene: Scene, rng: random.Random) -> Question:
    bar = rng.choice(scene.bars)
    steps = _numbered(
        [f"The {bar.color} bar is bar {bar.label}.", f"Bar {bar.label} has height {bar.height}."],
        str(bar.height),
    )
    return Question(
        f"What is the height of the {bar.color} bar?",
        str(bar.height),
        "integer",
        None,
        None,
        steps,
        "bar_color_height",
        **{**_BAR_KW, "subject": "metric geometry - length"},
    )


@_template("bar_color", "bars")
def _bar_color(scene: Scene, rng: random.Random) -> Question:
    bar = rng.choice(scene.bars)
    steps = _numbered([f"Bar {bar.label} is {bar.color}."], bar.color)
    return Question(
        f"What colour is bar {bar.label}?",
        bar.color,
        "text",
        _mc(list(COLOR_NAMES), rng),
        None,
        steps,
        "bar_color",
        **{**_BAR_KW, "subject": "logic"},
    )


def _extreme(scene: Scene, tallest: bool, name: str) -> Question | None:
    heights = scene.heights
    best = max(heights.values()) if tallest else min(heights.values())
    winners = [k for k, v in heights.items() if v == best]
    if len(winners) != 1:
        return None
    word = "tallest" if tallest else "shortest"
    steps = _numbered(
        [
            _heights_step(scene),
            f"The {'largest' if tallest else 'smallest'} height is {best}, so bar {winners[0]} is the {word}.",
        ],
        winners[0],
    )
    return Question(
        f"Which bar is the {word}?", winners[0], "text", list(BAR_LABELS), None, steps, name, **_BAR_KW
    )


@_template("bar_tallest", "bars")
def _bar_tallest(scene: Scene, rng: random.Random) -> Question | None:
    return _extreme(scene, True, "bar_tallest")


@_template("bar_shortest", "bars")
def _bar_shortest(scene: Scene, rng: random.Random) -> Question | None:
    return _extreme(scene, False, "bar_shortest")


@_template("bar_diff", "bars")
def _bar_diff(scene: Scene, rng: random.Random) -> Question | None:
    x, y = rng.sample(BAR_LABELS, 2)
    a, b = scene.bar(x).height, scene.bar(y).height
    if a == b:
        return None
    if a < b:
        (x, a), (y, b) = (y, b), (x, a)
    steps = _numbered(
        [f"Bar {x} has height {a}.", f"Bar {y} has height {b}.", f"Subtract: {a} - {b} = {a - b}."],
        str(a - b),
    )
    return Question(
        f"How much taller is bar {x} than bar {y}?",
        str(a - b),
        "integer",
        None,
        None,
        steps,
        "bar_diff",
        **_BAR_MATH_KW,
    )


@_template("bar_sum_two", "bars")
def _bar_sum_two(scene: Scene, rng: random.Random) -> Question:
    x, y = sorted(rng.sample(BAR_LABELS, 2))
    a, b = scene.bar(x).height, scene.bar(y).height
    steps = _numbered(
        [f"Bar {x} has height {a}.", f"Bar {y} has height {b}.", f"Add: {a} + {b} = {a + b}."], str(a + b)
    )
    return Question(
        f"What is the total height of bars {x} and {y}?",
        str(a + b),
        "integer",
        None,
        None,
        steps,
        "bar_sum_two",
        **_BAR_MATH_KW,
    )


@_template("bar_sum_all", "bars")
def _bar_sum_all(scene: Scene, rng: random.Random) -> Question:
    heights = [b.height for b in scene.bars]
    total = sum(heights)
    steps = [f"Bar {b.label} has height {b.height}." for b in scene.bars]
    steps.append("Add: " + " + ".join(map(str, heights)) + f" = {total}.")
    return Question(
        "What is the sum of the heights of all four bars?",
        str(total),
        "integer",
        None,
        None,
        _numbered(steps, str(total)),
        "bar_sum_all",
        **_BAR_MATH_KW,
    )


@_template("bar_sum_minus", "bars")
def _bar_sum_minus(scene: Scene, rng: random.Random) -> Question | None:
    x, y, z = rng.sample(BAR_LABELS, 3)
    x, y = sorted((x, y))
    a, b, c = scene.bar(x).height, scene.bar(y).height, scene.bar(z).height
    if a + b < c:
        return None
    steps = [
        f"Bar {x} has height {a}.",
        f"Bar {y} has height {b}.",
        f"Bar {z} has height {c}.",
        f"Compute: {a} + {b} - {c} = {a + b - c}.",
    ]
    return Question(
        f"What is the total height of bars {x} and {y} minus the height of bar {z}?",
        str(a + b - c),
        "integer",
        None,
        None,
        _numbered(steps, str(a + b - c)),
        "bar_sum_minus",
        **_BAR_MATH_KW,
    )


@_template("bar_count_taller", "bars")
def _bar_count_taller(scene: Scene, rng: random.Random) -> Question:
    k = rng.randint(1, 6)
    taller = [b.label for b in scene.bars if b.height > k]
    steps = _numbered(
        [
            _heights_step(scene),
            f"Bars taller than {k}: {', '.join(taller) if taller else 'none'}, so {len(taller)}.",
        ],
        str(len(taller)),
    )
    return Question(
        f"How many bars are taller than {k}?",
        str(len(taller)),
        "integer",
        None,
        None,
        steps,
        "bar_count_taller",
        **{**_BAR_KW, "subject": "counting"},
    )


@_template("bar_ratio", "bars")
def _bar_ratio(scene: Scene, rng: random.Random) -> Question | None:
    x, y = rng.sample(BAR_LABELS, 2)
    a, b = scene.bar(x).height, scene.bar(y).height
    value = round_to(Fraction(a, b), 1)
    if value is None:
        return None
    steps = _numbered(
        [
            f"Bar {x} has height {a}.",
            f"Bar {y} has height {b}.",
            f"Divide: {a} / {b} = {value} to one decimal place.",
        ],
        value,
    )
    return Question(
        f"What is the ratio of the height of bar {x} to the height of bar {y}? Round to one decimal place.",
        value,
        "float",
        None,
        1,
        steps,
        "bar_ratio",
        **{**_BAR_MATH_KW, "subject": "algebra"},
    )


@_template("bar_mean", "bars")
def _bar_mean(scene: Scene, rng: random.Random) -> Question:
    total = sum(b.height for b in scene.bars)
    # A mean of four integers has at most two decimals, so the answer is exact at precision 2.
    value = round_to(Fraction(total, 4), 2)
    assert value is not None
    heights = " + ".join(str(b.height) for b in scene.bars)
    steps = _numbered(
        [_heights_step(scene), f"Add: {heights} = {total}.", f"Divide by 4: {total} / 4 = {value}."], value
    )
    return Question(
        "What is the average height of the four bars? Round to two decimal places.",
        value,
        "float",
        None,
        2,
        steps,
        "bar_mean",
        **{**_BAR_MATH_KW, "subject": "statistics"},
    )


@_template("bar_compare_yes_no", "bars", yes_no=True)
def _bar_compare_yes_no(scene: Scene, rng: random.Random) -> Question | None:
    return _yes_no(scene, rng, ("bar_taller",), "bar_compare_yes_no")


@_template("bar_tallest_yes_no", "bars", yes_no=True)
def _bar_tallest_yes_no(scene: Scene, rng: random.Random) -> Question | None:
    return _yes_no(scene, rng, ("bar_tallest",), "bar_tallest_yes_no")


# -- local steps ----------------------------------------------------------------------------------
# The gold steps of some questions ask a tiny model to look a value up backwards: "The largest height is 7, so
# bar B" must find the 7 in "A is 7, B is 4, ..." and copy the label before it, and "The blue bar is bar C" the label
# before "blue". A tiny Qwen2-VL copies forwards (a bar's height or colour from its label: 100 % on fresh problems)
# but not backwards (the tallest bar 27 %, the blue bar's height 37 %; docs/tiny-models.md), adds four numbers in
# one step only half the time, and counts one colour in a right cells scan a third of the time ("Count the blue
# shapes: 1." for three). These solutions reach the same answers in steps that each copy forwards or combine two
# numbers written just before. (A first running comparison, "B 6, keep A 5", wrote "keep" at every bar, and a
# search, "Find the red bar: A blue, B red.", never stopped: both measured in docs/tiny-models.md.)
def _compare_in_turn(scene: Scene, tallest: bool) -> str:
    """"Compare in turn: A 3 or B 7: B 7; B 7 or C 5: B 7; ...": each comparison writes its two bars side by side
    and copies the winner, so that the running extreme is never more than a few tokens back."""
    best, parts = scene.bars[0], []
    for bar in scene.bars[1:]:
        pair = f"{best.label} {best.height} or {bar.label} {bar.height}"
        best = bar if (bar.height > best.height if tallest else bar.height < best.height) else best
        parts.append(f"{pair}: {best.label} {best.height}")
    return "Compare in turn: " + "; ".join(parts) + "."


def _add_in_turn(values: list[int]) -> str:
    """"Add in turn: 7 + 4 = 11, 11 + 6 = 17.": one addition of two numbers per step."""
    total, sums = values[0], []
    for value in values[1:]:
        sums.append(f"{total} + {value} = {total + value}")
        total += value
    return "Add in turn: " + ", ".join(sums) + "."


def _count_in_turn(scene: Scene, what: str) -> str | None:
    """"Count the red shapes: red circle 1, red square 2, so 2.": each matching object copied from the cells scan in
    its reading order with the count so far, the answer the last number. None where ``what`` names something a scan
    does not write (a size) or every shape (counting all of them is already right on fresh problems)."""
    *adjectives, noun = what.split()
    shape = noun.removesuffix("s")
    color = adjectives[0] if adjectives else None
    if len(adjectives) > 1 or (color is not None and color not in COLOR_NAMES) or shape not in (*SHAPES, "shape") \
            or (color is None and shape == "shape"):
        return None
    found = sorted(scene.select(color, None if shape == "shape" else shape), key=lambda o: (o.row, o.col))
    entries = ", ".join(f"{o.color} {o.shape} {i}" for i, o in enumerate(found, 1)) or "none"
    return f"Count the {what}: {entries}, so {len(found)}."


def local_steps(q: Question, scene: Scene) -> list[str]:
    """``q``'s gold solution, with the steps that look a value up backwards, add more than two numbers at once or
    count in one go rewritten as forward copies, two-number additions and counts in turn; other steps as written."""
    plain = [line.split(": ", 1)[1] for line in q.steps[:-1]]
    word = {"bar_tallest": "tallest", "bar_shortest": "shortest"}.get(q.template)
    if word:
        plain = [_compare_in_turn(scene, word == "tallest"), f"Bar {q.answer} is the {word}."]
    elif q.template == "bar_color_height":
        # a bars scan reads "B red 6": the height follows the colour, as the colour follows the letter
        color = q.question.removeprefix("What is the height of the ").removesuffix(" bar?")
        plain = [f"The {color} bar has height {q.answer}."]
    elif q.template in ("bar_sum_all", "bar_mean"):
        at = next(i for i, step in enumerate(plain) if step.startswith("Add: "))
        plain[at] = _add_in_turn([b.height for b in scene.bars])
    elif q.template in ("bar_sum_minus", "subtract_two"):
        # the last step combines three numbers ("Compute: 5 + 3 - 2 = 6.", "Subtract: 6 - 2 - 1 = 3.")
        a, op1, b, op2, c = plain[-1].split(": ", 1)[1].split(" = ")[0].split()
        first = int(a) + int(b) if op1 == "+" else int(a) - int(b)
        plain[-1:] = [f"{'Add' if op1 == '+' else 'Subtract'}: {a} {op1} {b} = {first}.",
                      f"Subtract: {first} {op2} {c} = {q.answer}."]
    if scene.kind == "shapes":
        counted = [re.fullmatch(r"Count the (.+): \d+\.", step) for step in plain]
        plain = [(_count_in_turn(scene, m[1]) if m else None) or step for m, step in zip(counted, plain, strict=True)]
    return _numbered(plain, q.answer)


# -- the world's rules ----------------------------------------------------------------------------
# (question, answer, reason): facts that hold for every picture of the tiny world.
RULE_FACTS: list[tuple[str, str, str]] = [
    *[
        (
            f"Does a {s} have {n} corners?",
            "Yes" if n == CORNERS[s] else "No",
            f"A {s} has {CORNERS[s]} corners.",
        )
        for s in ("triangle", "square")
        for n in (3, 4)
    ],
    ("Does a circle have any corners?", "No", "A circle has no corners."),
    (
        "Does a square have more corners than a triangle?",
        "Yes",
        "A square has 4 corners and a triangle has 3.",
    ),
    (
        "Does a triangle have more corners than a square?",
        "No",
        "A triangle has 3 corners and a square has 4.",
    ),
    ("Can two shapes share one cell of the grid?", "No", "Each cell of the grid holds at most one shape."),
    (
        "Is bar A the leftmost bar of a bar chart?",
        "Yes",
        "The bars are labelled A, B, C and D from left to right.",
    ),
    (
        "Is bar D the leftmost bar of a bar chart?",
        "No",
        "The bars are labelled A, B, C and D from left to right.",
    ),
    ("Can a bar be taller than 7?", "No", "Bar heights are whole numbers from 1 to 7."),
    ("Does a bar chart have four bars?", "Yes", "Every bar chart has the four bars A, B, C and D."),
]


def ask_rule(rng: random.Random) -> Question:
    """A yes/no question about the world's rules, answerable without any picture."""
    text, answer, reason = rng.choice(RULE_FACTS)
    return Question(
        text,
        answer,
        "text",
        list(YES_NO),
        None,
        [f"Step 1: {reason}", _final(answer)],
        "rule",
        skills=["numeric commonsense"],
        subject="logic",
    )


# -- We-Math composites ---------------------------------------------------------------------------
CONCEPT_DESCRIPTIONS = {
    "Counting Objects": "Counting Objects:\n1. Look at every cell of the grid and count the shapes that match.\n"
    "2. Each cell holds at most one shape.",
    "Reading Bar Charts": "Reading Bar Charts:\n1. The bars are labelled A, B, C and D from left to right.\n"
    "2. A bar's height is a whole number from 1 to 7, in units of half a grid cell.",
    "Addition": "Addition:\n1. The total of two amounts is found by adding them.",
    "Subtraction": "Subtraction:\n1. How many more one amount is than another is found by subtracting the smaller "
    "from the larger.",
    "Corners of Shapes": "Corners of Shapes:\n1. A triangle has 3 corners.\n2. A square has 4 corners.\n"
    "3. A circle has no corners.",
    "Multiplication and Addition": "Multiplication and Addition:\n1. The corners of several equal shapes are the "
    "number of shapes times the corners of one shape.\n2. Add the corners of each kind of shape.",
}


@dataclass
class Composite:
    """A multi-step problem and its one-step sub-problems, each a 4-option choice question."""

    subs: list[Question]
    composite: Question
    concepts: list[str]
    name: str


def _numeric_options(answer: int, rng: random.Random) -> list[str]:
    pool = [v for v in range(answer - 3, answer + 4) if v >= 0 and v != answer]
    return _mc([str(answer)] + [str(v) for v in rng.sample(pool, 3)], rng)


def _tuple_options(values: tuple[int, ...], rng: random.Random, low: int = 0) -> list[str]:
    def show(vs: tuple[int, ...]) -> str:
        return ", ".join(map(str, vs))

    wrong: set[tuple[int, ...]] = set()
    if len(set(values)) > 1:
        wrong.add(tuple(reversed(values)))
    while len(wrong) < 3:
        i = rng.randrange(len(values))
        changed = list(values)
        changed[i] = max(low, changed[i] + rng.choice((-2, -1, 1, 2)))
        if tuple(changed) != values:
            wrong.add(tuple(changed))
    return _mc([show(values)] + [show(w) for w in sorted(wrong)[:3]], rng)


def _choice_question(text: str, answer: str, options: list[str], steps: list[str], name: str) -> Question:
    return Question(
        text,
        answer,
        "text",
        options,
        None,
        _numbered(steps, answer),
        name,
        skills=["arithmetic reasoning"],
        category="math-targeted-vqa",
        subject="arithmetic",
    )


COMPOSITE_KINDS = {2: ("count_diff", "count_sum", "bar_diff", "bar_sum"), 3: ("corners", "bar_sum_minus")}
_COMPOSITE_SCENE = {
    "count_diff": "shapes",
    "count_sum": "shapes",
    "bar_diff": "bars",
    "bar_sum": "bars",
    "corners": "shapes",
    "bar_sum_minus": "bars",
}


def composite_scene_kind(name: str) -> str:
    return _COMPOSITE_SCENE[name]


def ask_composite(scene: Scene, rng: random.Random, name: str) -> Composite | None:
    """We-Math problem ``name`` on ``scene``: the composite question and its one-step sub-problems, where
    (as in We-Math) a later sub-problem states the results of the earlier ones."""
    if _COMPOSITE_SCENE[name] != scene.kind:
        return None
    lead = "As shown in the diagram, "
    if name in ("count_diff", "count_sum"):
        c1, c2 = _two_colors(scene, rng)
        if name == "count_diff" and scene.count(color=c1) < scene.count(color=c2):
            c1, c2 = c2, c1
        a, b = scene.count(color=c1), scene.count(color=c2)
        value, op = (a - b, "Subtract") if name == "count_diff" else (a + b, "Add")
        ask_text = (
            f"how many more {c1} shapes than {c2} shapes are there?"
            if name == "count_diff"
            else f"how many shapes are {c1} or {c2}?"
        )
        arithmetic = f"{op}: {a} {'-' if name == 'count_diff' else '+'} {b} = {value}."
        pair = f"{a}, {b}"
        sub1 = _choice_question(
            f"{lead}how many {c1} shapes and how many {c2} shapes are there? ( ), ( )",
            pair,
            _tuple_options((a, b), rng),
            [_count_step(scene, color=c1), _count_step(scene, color=c2)],
            name + "_1",
        )
        given = f"There are {_plural(a, c1 + ' shape')} and {_plural(b, c2 + ' shape')}. "
        sub2 = _choice_question(
            given + ask_text[0].upper() + ask_text[1:],
            str(value),
            _numeric_options(value, rng),
            [arithmetic],
            name + "_2",
        )
        whole = _choice_question(
            lead + ask_text,
            str(value),
            _numeric_options(value, rng),
            [_count_step(scene, color=c1), _count_step(scene, color=c2), arithmetic],
            name,
        )
        concepts = ["Counting Objects", "Subtraction" if name == "count_diff" else "Addition"]
        return Composite([sub1, sub2], whole, concepts, name)
    if name in ("bar_diff", "bar_sum"):
        x, y = sorted(rng.sample(BAR_LABELS, 2))
        a, b = scene.bar(x).height, scene.bar(y).height
        if name == "bar_diff":
            if a == b:
                return None
            if a < b:
                (x, a), (y, b) = (y, b), (x, a)
        value = a - b if name == "bar_diff" else a + b
        ask_text = (
            f"how much taller is bar {x} than bar {y}?"
            if name == "bar_diff"
            else f"what is the total height of bars {x} and {y}?"
        )
        arithmetic = f"{'Subtract' if name == 'bar_diff' else 'Add'}: {a} {'-' if name == 'bar_diff' else '+'} {b} = {value}."
        reads = [f"Bar {x} has height {a}.", f"Bar {y} has height {b}."]
        sub1 = _choice_question(
            f"{lead}what are the heights of bar {x} and bar {y}? ( ), ( )",
            f"{a}, {b}",
            _tuple_options((a, b), rng, low=1),
            reads,
            name + "_1",
        )
        given = f"Bar {x} has height {a} and bar {y} has height {b}. "
        sub2 = _choice_question(
            given + ask_text[0].upper() + ask_text[1:],
            str(value),
            _numeric_options(value, rng),
            [arithmetic],
            name + "_2",
        )
        whole = _choice_question(
            lead + ask_text, str(value), _numeric_options(value, rng), reads + [arithmetic], name
        )
        concepts = ["Reading Bar Charts", "Subtraction" if name == "bar_diff" else "Addition"]
        return Composite([sub1, sub2], whole, concepts, name)
    if name == "corners":
        t, s = scene.count(shape="triangle"), scene.count(shape="square")
        if t + s == 0:
            return None
        total = 3 * t + 4 * s
        counts = [_count_step(scene, shape="triangle"), _count_step(scene, shape="square")]
        rule = ["A triangle has 3 corners and a square has 4 corners."]
        arithmetic = [f"Compute: {t} x 3 + {s} x 4 = {total}."]
        sub1 = _choice_question(
            f"{lead}how many triangles and how many squares are there? ( ), ( )",
            f"{t}, {s}",
            _tuple_options((t, s), rng),
            counts,
            name + "_1",
        )
        sub2 = _choice_question(
            "How many corners does a triangle have, and how many corners does a square have? ( ), ( )",
            "3, 4",
            _tuple_options((3, 4), rng),
            rule,
            name + "_2",
        )
        sub3 = _choice_question(
            f"There are {_plural(t, 'triangle')} and {_plural(s, 'square')}. A triangle has 3 corners and a square "
            "has 4 corners. How many corners do they have in total?",
            str(total),
            _numeric_options(total, rng),
            arithmetic,
            name + "_3",
        )
        whole = _choice_question(
            f"{lead}how many corners do all the triangles and squares have in total?",
            str(total),
            _numeric_options(total, rng),
            counts + rule + arithmetic,
            name,
        )
        return Composite(
            [sub1, sub2, sub3],
            whole,
            ["Counting Objects", "Corners of Shapes", "Multiplication and Addition"],
            name,
        )
    if name == "bar_sum_minus":
        x, y, z = rng.sample(BAR_LABELS, 3)
        x, y = sorted((x, y))
        a, b, c = scene.bar(x).height, scene.bar(y).height, scene.bar(z).height
        if a + b < c:
            return None
        reads = [f"Bar {x} has height {a}.", f"Bar {y} has height {b}.", f"Bar {z} has height {c}."]
        sub1 = _choice_question(
            f"{lead}what are the heights of bars {x}, {y} and {z}? ( ), ( ), ( )",
            f"{a}, {b}, {c}",
            _tuple_options((a, b, c), rng, low=1),
            reads,
            name + "_1",
        )
        sub2 = _choice_question(
            f"Bar {x} has height {a} and bar {y} has height {b}. What is their total height?",
            str(a + b),
            _numeric_options(a + b, rng),
            [f"Add: {a} + {b} = {a + b}."],
            name + "_2",
        )
        sub3 = _choice_question(
            f"The total height of bars {x} and {y} is {a + b}, and bar {z} has height {c}. How much greater is the "
            f"total than the height of bar {z}?",
            str(a + b - c),
            _numeric_options(a + b - c, rng),
            [f"Subtract: {a + b} - {c} = {a + b - c}."],
            name + "_3",
        )
        whole = _choice_question(
            f"{lead}how much greater is the total height of bars {x} and {y} than the height of bar {z}?",
            str(a + b - c),
            _numeric_options(a + b - c, rng),
            reads + [f"Compute: {a} + {b} - {c} = {a + b - c}."],
            name,
        )
        return Composite([sub1, sub2, sub3], whole, ["Reading Bar Charts", "Addition", "Subtraction"], name)
    raise ValueError(f"unknown composite {name!r}")
