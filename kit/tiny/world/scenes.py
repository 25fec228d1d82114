"""Scenes of the tiny world: what is in a picture, how it is drawn, and how it is told in words.

A picture is a 4x4 grid of cells on a white canvas (112 px, so 28 px cells). With Qwen2-VL's 14 px
patches and 2x2 merge each cell becomes exactly one image token, so every object the questions ask
about lives in one token. Two kinds of scene exist:

* ``shapes``: 2-6 objects, each alone in its cell, with a shape, a colour and a size;
* ``bars``: four bars A-D, one per column, heights 1-7 in units of half a cell, each its own colour.

Everything is drawn with ``PIL.ImageDraw`` primitives: no fonts, no text, nothing downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw

GRID = 4
BASE_SIZE = 112
# Saturated, far-apart colours: a model that sees 16 tokens must tell them apart from one token each.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 0),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
SHAPE_PX = {"small": 12, "large": 22}  # at BASE_SIZE; scaled with the canvas
JITTER = 2
MIN_OBJECTS, MAX_OBJECTS = 2, 6
BAR_LABELS: tuple[str, ...] = ("A", "B", "C", "D")
BAR_WIDTH = 16
BAR_UNIT = 14  # half a cell, so the tallest bar (7) leaves the top half-cell white
MIN_BAR, MAX_BAR = 1, 7
QUADRANTS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
# The world's rules: known without looking at a picture (used by rule questions and HallusionBench VS).
CORNERS = {"circle": 0, "triangle": 3, "square": 4}
SCENE_KINDS: tuple[str, ...] = ("shapes", "bars")
# A quarter of all possible scenes (by hash) is reserved for evaluation, so training scenes can never
# coincide with evaluation scenes and the training pool does not depend on the evaluation sizes.
EVAL_SHARE = 4


@dataclass(frozen=True)
class Shape:
    """One object of a ``shapes`` scene. ``dx``/``dy`` are the drawing jitter in base pixels."""

    shape: str
    color: str
    size: str
    row: int
    col: int
    dx: int = 0
    dy: int = 0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES or self.color not in COLORS or self.size not in SIZES:
            raise ValueError(f"unknown shape/colour/size in {self}")
        if not (0 <= self.row < GRID and 0 <= self.col < GRID):
            raise ValueError(f"cell ({self.row}, {self.col}) is outside the {GRID}x{GRID} grid")
        if abs(self.dx) > JITTER or abs(self.dy) > JITTER:
            raise ValueError(f"jitter ({self.dx}, {self.dy}) exceeds {JITTER} px")

    @property
    def cell(self) -> int:
        return self.row * GRID + self.col

    @property
    def top(self) -> bool:
        return self.row < GRID // 2

    @property
    def left(self) -> bool:
        return self.col < GRID // 2

    @property
    def quadrant(self) -> str:
        return quadrant_of(self.row, self.col)

    def phrase(self) -> str:
        """'large red circle'."""
        return f"{self.size} {self.color} {self.shape}"


@dataclass(frozen=True)
class Bar:
    label: str
    height: int
    color: str

    def __post_init__(self) -> None:
        if self.label not in BAR_LABELS or self.color not in COLORS:
            raise ValueError(f"unknown label/colour in {self}")
        if not MIN_BAR <= self.height <= MAX_BAR:
            raise ValueError(f"bar height {self.height} is outside {MIN_BAR}-{MAX_BAR}")


@dataclass(frozen=True)
class Scene:
    """A picture's ground truth. Objects are kept in reading order (row, then column)."""

    kind: str
    objects: tuple[Shape, ...] = field(default=())
    bars: tuple[Bar, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind == "shapes":
            objects = tuple(sorted(self.objects, key=lambda o: (o.row, o.col)))
            object.__setattr__(self, "objects", objects)
            if not MIN_OBJECTS <= len(objects) <= MAX_OBJECTS or self.bars:
                raise ValueError(f"a shapes scene has {MIN_OBJECTS}-{MAX_OBJECTS} objects and no bars")
            if len({o.cell for o in objects}) != len(objects):
                raise ValueError("two objects share a cell")
        elif self.kind == "bars":
            bars = tuple(self.bars)
            object.__setattr__(self, "bars", bars)
            if tuple(b.label for b in bars) != BAR_LABELS or self.objects:
                raise ValueError("a bars scene has bars A-D in order and no objects")
            if len({b.color for b in bars}) != len(bars):
                raise ValueError("each bar has its own colour")
        else:
            raise ValueError(f"unknown scene kind {self.kind!r}; expected one of {SCENE_KINDS}")

    # -- counting helpers shared by the question templates ------------------------------------
    def count(self, color: str | None = None, shape: str | None = None, size: str | None = None) -> int:
        return len(self.select(color, shape, size))

    def select(
        self, color: str | None = None, shape: str | None = None, size: str | None = None
    ) -> list[Shape]:
        return [
            o
            for o in self.objects
            if (color is None or o.color == color)
            and (shape is None or o.shape == shape)
            and (size is None or o.size == size)
        ]

    def bar(self, label: str) -> Bar:
        for bar in self.bars:
            if bar.label == label:
                return bar
        raise KeyError(label)

    def bar_of_color(self, color: str) -> Bar | None:
        return next((b for b in self.bars if b.color == color), None)

    @property
    def heights(self) -> dict[str, int]:
        return {b.label: b.height for b in self.bars}

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "shapes":
            return {"kind": self.kind, "objects": [dataclasses.asdict(o) for o in self.objects]}
        return {"kind": self.kind, "bars": [dataclasses.asdict(b) for b in self.bars]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        if data["kind"] == "shapes":
            return cls("shapes", objects=tuple(Shape(**o) for o in data["objects"]))
        return cls("bars", bars=tuple(Bar(**b) for b in data["bars"]))


def quadrant_of(row: int, col: int) -> str:
    vertical = "top" if row < GRID // 2 else "bottom"
    horizontal = "left" if col < GRID // 2 else "right"
    return f"{vertical} {horizontal}"


def sample_scene(rng: random.Random, kind: str) -> Scene:
    """A random scene of ``kind`` drawn from ``rng`` alone."""
    if kind == "shapes":
        n = rng.randint(MIN_OBJECTS, MAX_OBJECTS)
        cells = rng.sample(range(GRID * GRID), n)
        objects = tuple(
            Shape(
                shape=rng.choice(SHAPES),
                color=rng.choice(COLOR_NAMES),
                size=rng.choice(SIZES),
                row=cell // GRID,
                col=cell % GRID,
                dx=rng.randint(-JITTER, JITTER),
                dy=rng.randint(-JITTER, JITTER),
            )
            for cell in cells
        )
        return Scene("shapes", objects=objects)
    if kind == "bars":
        colors = rng.sample(COLOR_NAMES, len(BAR_LABELS))
        bars = tuple(
            Bar(label, rng.randint(MIN_BAR, MAX_BAR), color)
            for label, color in zip(BAR_LABELS, colors, strict=True)
        )
        return Scene("bars", bars=bars)
    raise ValueError(f"unknown scene kind {kind!r}; expected one of {SCENE_KINDS}")


def scene_hash(scene: Scene) -> str:
    """sha256 of what the scene shows, ignoring the drawing jitter: two pictures whose objects differ
    only by a pixel or two of jitter count as the same scene (the stricter choice for overlap checks)."""
    data = scene.to_dict()
    for obj in data.get("objects", []):
        obj.pop("dx")
        obj.pop("dy")
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def scene_split(scene: Scene) -> str:
    """'eval' for the quarter of scene space reserved for evaluation families, else 'train'."""
    return "eval" if int(scene_hash(scene)[:8], 16) % EVAL_SHARE == 0 else "train"


# The background fades from white: red falls off top to bottom, blue left to right, by up to this
# many levels. Qwen2-VL's vision tower has only relative (rotary) positions, so on a uniform canvas
# identical patches are identical wherever they are; the gradient puts position into the content, as
# axes and backgrounds do in real figures. (It does not make position easy for the tiny models: see
# docs/tiny-models.md for what was measured.)
BACKGROUND_FADE = 48


def background(size: int) -> Image.Image:
    """The canvas: near-white with a faint vertical (red) and horizontal (blue) gradient."""
    down = Image.linear_gradient("L").resize((size, size))  # 0 at the top, 255 at the bottom
    across = down.transpose(Image.Transpose.TRANSPOSE)  # 0 at the left, 255 at the right
    red = down.point(lambda v: 255 - v * BACKGROUND_FADE // 255)
    blue = across.point(lambda v: 255 - v * BACKGROUND_FADE // 255)
    green = Image.new("L", (size, size), 255)
    return Image.merge("RGB", (red, green, blue))


def render(scene: Scene, size: int = BASE_SIZE) -> Image.Image:
    """Draw ``scene`` on a ``size`` x ``size`` RGB canvas (``size`` a multiple of 4)."""
    if size % GRID or size < 8 * GRID:
        raise ValueError(f"image size {size} must be a multiple of {GRID} and at least {8 * GRID}")
    if scene.kind == "shapes":
        return render_objects(scene.objects, size)
    image = background(size)
    draw = ImageDraw.Draw(image)
    scale = size / BASE_SIZE
    cell = size // GRID
    width = max(2, round(BAR_WIDTH * scale))
    unit = size / (2 * GRID)  # half a cell, BAR_UNIT px at the base size
    for col, bar in enumerate(scene.bars):
        left = col * cell + (cell - width) // 2
        top = size - round(bar.height * unit)
        draw.rectangle((left, top, left + width - 1, size - 1), fill=COLORS[bar.color])
    return image


def render_objects(objects: tuple[Shape, ...] | list[Shape], size: int = BASE_SIZE) -> Image.Image:
    """Draw any number of objects, each in its own cell, as a ``shapes`` scene draws them. The perception gates
    (``kit.tiny.gates``) draw single objects with it, which a ``Scene`` does not allow."""
    if size % GRID or size < 8 * GRID:
        raise ValueError(f"image size {size} must be a multiple of {GRID} and at least {8 * GRID}")
    image = background(size)
    draw = ImageDraw.Draw(image)
    scale = size / BASE_SIZE
    cell = size // GRID
    for obj in objects:
        side = max(2, round(SHAPE_PX[obj.size] * scale))
        cx = obj.col * cell + cell // 2 + round(obj.dx * scale)
        cy = obj.row * cell + cell // 2 + round(obj.dy * scale)
        left, top = cx - side // 2, cy - side // 2
        right, bottom = left + side - 1, top + side - 1
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse((left, top, right, bottom), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((left, top, right, bottom), fill=fill)
        else:
            draw.polygon([(left, bottom), (right, bottom), ((left + right) / 2, top)], fill=fill)
    return image


def join_phrases(parts: list[str]) -> str:
    if len(parts) <= 2:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + ", and " + parts[-1]


def shape_phrases(objects: list[Shape] | tuple[Shape, ...]) -> list[str]:
    """'a large red circle in the top left' for each object, grouped by quadrant (top left, top right,
    bottom left, bottom right) and in reading order within one, so a description never jumps back."""
    ordered = sorted(objects, key=lambda o: (QUADRANTS.index(o.quadrant), o.row, o.col))
    return [f"a {o.phrase()} in the {o.quadrant}" for o in ordered]


def bar_phrases(bars: list[tuple[str, str, int]]) -> list[str]:
    """'bar A is red with height 3' for each (label, colour, height); plain tuples so that a corrupted
    description may mention a bar the world cannot have (bar E)."""
    return [f"bar {label} is {color} with height {height}" for label, color, height in bars]


def describe_parts(parts: list[str], noun: str, count: int | None = None) -> str:
    """'There are N <noun>s: a, b, and c.'; ``count`` overrides N (for a deliberately wrong count)."""
    return f"There are {len(parts) if count is None else count} {noun}s: {join_phrases(parts)}."


def describe(scene: Scene) -> str:
    """The canonical, complete and faithful English description of ``scene``."""
    if scene.kind == "shapes":
        return describe_parts(shape_phrases(scene.objects), "shape")
    return describe_parts(bar_phrases([(b.label, b.color, b.height) for b in scene.bars]), "bar")


def edit_scene(scene: Scene, rng: random.Random) -> Scene:
    """A minimally edited variant: one object recoloured, removed or moved to another quadrant, or one
    bar's height changed. Used for HallusionBench's edited figure."""
    if scene.kind == "bars":
        index = rng.randrange(len(scene.bars))
        old = scene.bars[index]
        height = rng.choice([h for h in range(MIN_BAR, MAX_BAR + 1) if h != old.height])
        bars = list(scene.bars)
        bars[index] = dataclasses.replace(old, height=height)
        return Scene("bars", bars=tuple(bars))
    ops = ["recolour", "move"] + (["remove"] if len(scene.objects) > MIN_OBJECTS else [])
    op = rng.choice(ops)
    index = rng.randrange(len(scene.objects))
    target = scene.objects[index]
    objects = list(scene.objects)
    if op == "recolour":
        objects[index] = dataclasses.replace(
            target, color=rng.choice([c for c in COLOR_NAMES if c != target.color])
        )
    elif op == "remove":
        del objects[index]
    else:
        used = {o.cell for o in scene.objects}
        free = [
            c
            for c in range(GRID * GRID)
            if c not in used and quadrant_of(c // GRID, c % GRID) != target.quadrant
        ]
        cell = rng.choice(free)
        objects[index] = dataclasses.replace(target, row=cell // GRID, col=cell % GRID)
    return Scene("shapes", objects=tuple(objects))


def edit_kind(before: Scene, after: Scene) -> str:
    """Name the single edit that turns ``before`` into ``after`` (HallusionBench's sample_note)."""
    if before.kind == "bars":
        changed = [a.label for a, b in zip(before.bars, after.bars, strict=True) if a != b]
        return f"bar {changed[0]} height" if len(changed) == 1 else "bars"
    if len(after.objects) < len(before.objects):
        return "remove"
    by_cell = {o.cell: o for o in before.objects}
    if all(o.cell in by_cell for o in after.objects):
        changed = [o for o in after.objects if by_cell[o.cell] != o]
        if changed and changed[0].shape != by_cell[changed[0].cell].shape:
            return "reshape"
        return "recolour"
    return "move"
