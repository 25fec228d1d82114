"""What the perception gates ask: question kinds about freshly drawn objects, their answers, and the scans a traced
answer starts with (``kit models gate`` measures them in ``kit.tiny.gates``; ``kit models build`` can start a model on
them, a perception warm-up, through ``PretrainSpec.perception``). Pure data: nothing here trains a model.

The kinds go from reading one object to binding: naming the colour of *the circle* among other objects needs
the question to pick one image token by its shape and read another feature from it. Kinds joined by ``+``
(``quadrant+shape``) are mixed, each example drawing one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from kit.errors import KitError
from kit.llm.models import LLAVA, QWEN2VL
from kit.tiny.models import MROPE_LAYOUTS, TinySize
from kit.tiny.world.scenes import COLOR_NAMES, GRID, JITTER, SHAPES, SIZES, Shape, quadrant_of

# kind: (question, the attribute every object must differ in so the question names one object, or None)
KINDS: dict[str, tuple[str, str | None]] = {
    "colour": ("What colour is the object?", None),
    "shape": ("What shape is the object?", None),
    "quadrant": ("Where is the object?", None),
    "colour-of-shape": ("What colour is the {shape}?", "shape"),
    "shape-of-colour": ("What shape is the {color} object?", "color"),
    "quadrant-of-shape": ("Where is the {shape}?", "shape"),
    "count-colour": ("How many {color} objects are there?", None),
}
SINGLE = ("colour", "shape", "quadrant")  # about "the object": one object per picture


@dataclass(frozen=True)
class GateSpec:
    """One gate run. Every field is a command-line option of ``kit models gate``."""

    kind: str  # one of KINDS, or several joined by "+"
    family: str = QWEN2VL
    # Objects per picture, drawn uniformly (the single-object kinds need 1; binding needs at least 2).
    min_objects: int = 2
    max_objects: int = 2
    # A curriculum: the first `warm_steps` steps ask `warm_kind` (None: as after) about `warm_objects` objects
    # (None: as after) drawn from `warm_colors` and `warm_sizes` (empty: as after), so that a feature can be
    # learnt before what hides it is added.
    warm_steps: int = 0
    warm_kind: str | None = None
    warm_objects: int | None = None
    warm_colors: tuple[str, ...] = ()
    warm_sizes: tuple[str, ...] = ()
    # The colours and sizes objects are drawn from (default: all the world's): narrowing them shows which
    # of a picture's variations hides the feature a question asks about.
    colors: tuple[str, ...] = COLOR_NAMES
    sizes: tuple[str, ...] = SIZES
    # Scan-then-answer targets (TRACES; "": the answer alone), so that binding and counting become copying from
    # the model's own text; accuracy is on the answer after the scan, and the scan's own accuracy is reported.
    trace: str = ""
    # count-colour with a cells scan only: between the scan and the answer, the running count of the asked colour at
    # the end of each row of the scan ("0, 1, 1, 3"), so that the answer is a copy of the last and each step adds one
    # row's few matches to the step before.
    tally: bool = False
    size: TinySize = field(default_factory=lambda: TinySize(hidden=128, layers=3, ffn=384))
    mrope: str = "spatial"
    vision_rope_theta: float = 100.0
    lr: float = 2e-3
    vision_lr_scale: float = 0.25
    steps: int = 1000
    batch_size: int = 32
    warmup: int = 50
    eval_every: int = 250
    eval_items: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.kinds if kind not in KINDS]
        if unknown:
            raise KitError(f"gate: unknown kind {unknown[0]!r}; choose one of {', '.join(KINDS)}, or several "
                           "joined by '+'")
        if len({kind in SINGLE for kind in self.kinds}) > 1:
            raise KitError(f"gate: {self.kind!r} mixes kinds about 'the object' ({', '.join(SINGLE)}) with kinds "
                           "about several objects; a picture cannot hold one object and several")
        if self.family not in (QWEN2VL, LLAVA):
            raise KitError(f"gate: family must be {QWEN2VL} or {LLAVA}, not {self.family!r}")
        if self.mrope not in MROPE_LAYOUTS:
            raise KitError(f"gate: --mrope must be one of {', '.join(MROPE_LAYOUTS)}, not {self.mrope!r}")
        unknown = sorted(set(self.colors) - set(COLOR_NAMES)) + sorted(set(self.sizes) - set(SIZES))
        if unknown or not self.colors or not self.sizes:
            raise KitError(f"gate: --colors takes some of {', '.join(COLOR_NAMES)} and --sizes some of "
                           f"{', '.join(SIZES)}; got {', '.join(unknown) or 'none'}")
        most = min([len(self.values(d)) for d in self.distinct] + [GRID * GRID])
        if self.kinds[0] in SINGLE and (self.min_objects, self.max_objects) != (1, 1):
            raise KitError(f"gate: {self.kind!r} asks about 'the object', so --objects must be 1")
        if not 1 <= self.min_objects <= self.max_objects <= most:
            raise KitError(f"gate: --objects {self.min_objects}-{self.max_objects} must lie in 1-{most} for "
                           f"{self.kind!r}" + (f" (each object a different {' and '.join(self.distinct)})"
                                              if self.distinct else ""))
        if self.steps < 1 or self.eval_items < 1 or self.eval_every < 0:
            raise KitError("gate: --steps and --eval-items must be at least 1 and --eval-every at least 0")
        if self.trace not in ("",) + TRACES:
            raise KitError(f"gate: --trace must be one of {', '.join(TRACES)}, not {self.trace!r}")
        if self.tally and (self.kinds != ("count-colour",) or self.trace != "cells"):
            raise KitError("gate: --tally counts one colour row by row in a cells scan: it needs the kind "
                           "count-colour and --trace cells")
        if self.warm_steps:
            if self.warm_objects is not None and not 1 <= self.warm_objects <= self.max_objects:
                raise KitError(f"gate: --warm-objects {self.warm_objects} must lie in 1-{self.max_objects}")
            self.warm()  # its own checks: narrowed colours must still give every object its own colour

    def warm(self) -> GateSpec:
        """The spec the curriculum's first steps draw from."""
        low, high = (self.min_objects, self.max_objects) if self.warm_objects is None else (self.warm_objects,) * 2
        return replace(self, kind=self.warm_kind or self.kind, min_objects=low, max_objects=high,
                       colors=self.warm_colors or self.colors, sizes=self.warm_sizes or self.sizes, warm_steps=0,
                       warm_kind=None, warm_objects=None, warm_colors=(), warm_sizes=())

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.kind.split("+"))

    @property
    def distinct(self) -> tuple[str, ...]:
        """The attributes every object of a picture must differ in, so that each question names one object."""
        return tuple(sorted({KINDS[kind][1] for kind in self.kinds if kind in KINDS} - {None}))

    def values(self, attribute: str) -> tuple[str, ...]:
        return self.colors if attribute == "color" else SHAPES


def draw_objects(spec: GateSpec, rng: random.Random, n: int) -> tuple[Shape, ...]:
    """``n`` objects in distinct cells, each with a different attribute where the spec's kind needs one."""
    cells = rng.sample(range(GRID * GRID), n)
    unique = {attribute: rng.sample(spec.values(attribute), n) for attribute in spec.distinct}
    objects = []
    for i, cell in enumerate(cells):
        attrs = {"shape": rng.choice(SHAPES), "color": rng.choice(spec.colors)}
        attrs.update({attribute: values[i] for attribute, values in unique.items()})
        objects.append(Shape(shape=attrs["shape"], color=attrs["color"], size=rng.choice(spec.sizes),
                             row=cell // GRID, col=cell % GRID,
                             dx=rng.randint(-JITTER, JITTER), dy=rng.randint(-JITTER, JITTER)))
    return tuple(objects)


# The attribute each kind's answer names (counting names none).
ANSWERED = {"colour": "color", "shape": "shape", "quadrant": "quadrant", "colour-of-shape": "color",
            "shape-of-colour": "shape", "quadrant-of-shape": "quadrant"}


def attribute(obj: Shape, name: str) -> str:
    """An object's colour, shape or quadrant: what a question's answer reads off it."""
    return quadrant_of(obj.row, obj.col) if name == "quadrant" else getattr(obj, name)


def question(kind: str, objects: tuple[Shape, ...], rng: random.Random,
             colors: tuple[str, ...] = COLOR_NAMES) -> tuple[str, str]:
    """(question, answer) of ``kind`` about ``objects``; the answer is read off the objects, never guessed."""
    template = KINDS[kind][0]
    target = rng.choice(objects)
    if kind == "count-colour":
        color = rng.choice(colors)
        return template.format(color=color), str(sum(o.color == color for o in objects))
    return template.format(shape=target.shape, color=target.color), attribute(target, ANSWERED[kind])


# The scans a traced answer starts with. "objects": every object's colour and shape in reading order (row, then
# column), "red circle, blue square"; "cells": every cell of the grid in reading order, "-" where it is empty, rows
# joined by "; ". Each picture's 16 merged image tokens are its 16 cells, so the k-th entry of a cells scan always
# reads the k-th image token: a fixed alignment, where an objects scan must find the next occupied cell first.
TRACES = ("objects", "cells")
EMPTY = "-"


def scan_opening(style: str) -> str:
    """How a solution's scan step opens for ``style`` (``TRACES``, or "bars" for a bar chart): what ``kit.tiny.pretrain``
    writes and ``kit.tiny.diagnose`` looks for."""
    return f"Read the {style}: "


def trace(objects: tuple[Shape, ...], style: str = "objects") -> str:
    """The scan of ``objects`` in the given style (``TRACES``)."""
    if style == "objects":
        return ", ".join(f"{o.color} {o.shape}" for o in sorted(objects, key=lambda o: o.cell))
    by_cell = {o.cell: f"{o.color} {o.shape}" for o in objects}
    return "; ".join(", ".join(by_cell.get(row * GRID + col, EMPTY) for col in range(GRID)) for row in range(GRID))


def row_tally(objects: tuple[Shape, ...], color: str) -> str:
    """The running count of ``color`` at the end of each row of the grid, top to bottom: "0, 1, 1, 3"."""
    totals, count = [], 0
    for row in range(GRID):
        count += sum(o.color == color and o.row == row for o in objects)
        totals.append(str(count))
    return ", ".join(totals)


def target(spec: GateSpec, objects: tuple[Shape, ...], answer: str, question: str = "") -> str:
    """What the model is trained to write about ``objects`` when asked ``question``: the answer, after the scan when
    the spec asks for traces (and the row tally with ``tally``)."""
    if not spec.trace:
        return answer
    if spec.tally:
        color = next(word for word in question.split() if word in COLOR_NAMES)
        return f"{trace(objects, spec.trace)}. {row_tally(objects, color)}. {answer}"
    return f"{trace(objects, spec.trace)}. {answer}"


def scan_entries(text: str) -> list[str]:
    """A scan's entries, in order (both styles)."""
    return [entry.strip() for entry in text.replace(";", ",").split(",")]


def scan_accuracy(reply: str, objects: tuple[Shape, ...], style: str) -> tuple[int, int]:
    """(objects read right, objects) in a reply's scan, position by position. Empty cells are left out: writing "-"
    everywhere would read 13 of 16 cells of a three-object picture right. A scan cut short misses what it left out."""
    written, expected = scan_entries(reply.strip().split(". ", 1)[0]), scan_entries(trace(objects, style))
    return sum(w == e for w, e in zip(written, expected, strict=False) if e != EMPTY), len(objects)


def final_answer(reply: str) -> str:
    """The answer a (possibly traced) reply ends with."""
    return reply.strip().rsplit(". ", 1)[-1]


def items(spec: GateSpec, n: int, seed: int, step_of: int | None = None) -> list[tuple[tuple[Shape, ...], str, str, str]]:
    """``n`` (objects, question, answer, kind) items. With ``step_of`` (training), item i belongs to step
    i // step_of, so the curriculum's first ``warm_steps`` steps draw from ``spec.warm()``."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        now = spec.warm() if step_of is not None and i // step_of < spec.warm_steps else spec
        objects = draw_objects(now, rng, rng.randint(now.min_objects, now.max_objects))
        kind = rng.choice(now.kinds)
        text, answer = question(kind, objects, rng, spec.colors)
        out.append((objects, text, answer, kind))
    return out


def unbound_rate(drawn: list[tuple[tuple[Shape, ...], str, str, str]]) -> float | None:
    """Expected % right for a model that answers with the asked attribute of a random object of the picture: the
    level a binding question shows before the model binds (two objects of distinct shapes and random colours: 62.5
    %). None when a kind is counting, whose answer is no object's attribute."""
    if any(kind not in ANSWERED for *_, kind in drawn):
        return None
    total = 0.0
    for objects, _, answer, kind in drawn:
        values = [attribute(o, ANSWERED[kind]) for o in objects]
        total += values.count(answer) / len(values)
    return 100.0 * total / len(drawn)


def gate_texts() -> list[str]:
    """Every question and answer a gate can ask, for its tokenizer."""
    texts = [KINDS[k][0].format(shape=s, color=c) for k in KINDS for s in SHAPES for c in COLOR_NAMES]
    texts += list(SHAPES) + list(COLOR_NAMES) + [str(i) for i in range(GRID * GRID + 1)]
    texts += [quadrant_of(r, c) for r in range(GRID) for c in range(GRID)]
    return texts * 20  # enough repetitions for the BPE trainer to merge whole words


# Perception warm-ups a `kit models build` spec can start with (`PretrainSpec.perception`): gate runs, trained in
# order on the model before its corpus, each with its own schedule. The spec's family, size and rotary settings
# replace the gate's own. Each is a gate docs/tiny-models.md measured.
WARM_UPS: dict[str, tuple[dict, ...]] = {
    # A lone object's shape: 100 % from step 750 with this curriculum, at chance through 1,000 steps without it.
    "shape": ({"kind": "shape", "min_objects": 1, "max_objects": 1, "steps": 750, "warm_steps": 300,
               "warm_colors": ("red",), "warm_sizes": ("large",)},),
    # Then a lone object's quadrant, which the shape curriculum took to 100 % by step 500.
    "shape-quadrant": ({"kind": "shape", "min_objects": 1, "max_objects": 1, "steps": 750, "warm_steps": 300,
                        "warm_colors": ("red",), "warm_sizes": ("large",)},
                       {"kind": "quadrant", "min_objects": 1, "max_objects": 1, "steps": 500}),
    # The cells scan on pictures of 1-6 objects, in red and large for the first 300 steps: every cell's colour and
    # shape. The full mixture with cells scans reads colours and places right but calls almost every shape a circle.
    "cells-scan": ({"kind": "count-colour", "min_objects": 1, "max_objects": 6, "trace": "cells", "steps": 1500,
                    "warm_steps": 300, "warm_colors": ("red",), "warm_sizes": ("large",)},),
}


def warm_up(name: str, **model: object) -> list[GateSpec]:
    """The gate specs of warm-up ``name`` (``WARM_UPS``), with the model settings (family, size, mrope,
    vision_rope_theta, seed) of the model they start."""
    if name not in WARM_UPS:
        raise KitError(f"perception warm-up {name!r} is not one of {', '.join(WARM_UPS)}")
    return [GateSpec(**{**stage, **model}) for stage in WARM_UPS[name]]
