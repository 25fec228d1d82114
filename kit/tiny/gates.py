"""Perception gates for the tiny world's redesign (issue 17): ``kit models gate``.

The tiny models fail where they cannot perceive what a question asks. Before a recipe is spent on a whole
teacher (an hour of pre-training), a gate answers one narrow question cheaply: can a fresh tiny model of this
architecture, size and position layout learn to read *this* from a picture? It trains on one question kind
about freshly drawn objects (a new picture for every example, so nothing is learnt by heart), with the same
loop, loss mask and batching as ``kit models build``, and prints greedy exact-match accuracy on held-out
pictures every ``eval_every`` steps beside the rate of the most common answer (what a model that ignores the
picture gets). docs/tiny-models.md records what each gate measured.

The kinds go from reading one object to binding: naming the colour of *the circle* among other objects needs
the question to pick one image token by its shape and read another feature from it. Kinds joined by ``+``
(``quadrant+shape``) are mixed, each example drawing one, and accuracy is reported per kind as well.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

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


def trace(objects: tuple[Shape, ...], style: str = "objects") -> str:
    """The scan of ``objects`` in the given style (``TRACES``)."""
    if style == "objects":
        return ", ".join(f"{o.color} {o.shape}" for o in sorted(objects, key=lambda o: o.cell))
    by_cell = {o.cell: f"{o.color} {o.shape}" for o in objects}
    return "; ".join(", ".join(by_cell.get(row * GRID + col, EMPTY) for col in range(GRID)) for row in range(GRID))


def target(spec: GateSpec, objects: tuple[Shape, ...], answer: str) -> str:
    """What the model is trained to write: the answer, after the scan when the spec asks for traces."""
    return f"{trace(objects, spec.trace)}. {answer}" if spec.trace else answer


def scan_entries(text: str) -> list[str]:
    """A scan's entries, in order (both styles)."""
    return [entry.strip() for entry in text.replace(";", ",").split(",")]


def scan_accuracy(reply: str, objects: tuple[Shape, ...], style: str) -> tuple[int, int]:
    """(objects read right, objects) in a reply's scan, position by position. Empty cells are left out: writing "-"
    everywhere would read 13 of 16 cells of a three-object picture right. A scan cut short misses what it left out."""
    written, expected = scan_entries(reply.strip().rsplit(". ", 1)[0]), scan_entries(trace(objects, style))
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


@dataclass
class GateReport:
    spec: dict[str, Any]
    parameters: int
    seconds: float
    majority: float  # % of held-out items whose answer is the most common one (per kind)
    # % a model gets that names the asked attribute of a random object in the picture instead of the one the
    # question names: what reading without binding gives (100 for the single-object kinds, None for counting).
    unbound: float | None
    curve: list[dict[str, float]]
    # With a traced spec: % of the pictures' objects the scan read right, in their place, at each point of the curve.
    scan: list[float] = field(default_factory=list)

    @property
    def final(self) -> float:
        return self.curve[-1]["accuracy"] if self.curve else float("nan")


def fresh_model(spec: GateSpec):
    """(tokenizer, model, processor): a randomly initialised tiny model of the spec's family and size."""
    from kit.tiny.models import build_tiny, train_tokenizer

    tokenizer = train_tokenizer(gate_texts(), spec.family, 320)
    rotary = {"mrope": spec.mrope, "vision_rope_theta": spec.vision_rope_theta} if spec.family == QWEN2VL else {}
    model, processor = build_tiny(spec.family, tokenizer, spec.size, spec.seed, **rotary)
    return tokenizer, model, processor


def image_tokens(model, processor, pictures: list) -> Any:
    """The image tokens the language model receives, one (16, hidden) tensor per picture, without gradients."""
    import torch

    features = processor.image_processor(images=pictures, return_tensors="pt")
    with torch.no_grad():
        return torch.stack(list(model.model.get_image_features(**features).pooler_output))


# How a probe reads the tokens. "object token": the object's own token, RMS-normalised as the language model's
# first RMSNorm sees it (what attention can copy once it picks the object); "mean of tokens": the average of all
# sixteen, RMS-normalised (what attention spread evenly gives, before it learns to pick); "standardised": the
# object's token with every feature scaled to unit variance (the best a linear read-out can do).
PROBE_VIEWS = ("object token", "mean of tokens", "standardised")
ATTRIBUTES = ("shape", "color", "size", "cell")


def probe_tokens(spec: GateSpec, train_items: int = 4000, test_items: int = 500, steps: int = 1000,
                 log=print) -> dict[str, Any]:
    """Can the answer to a single-object question be read linearly from a *freshly built* model's image tokens,
    and how fast? A linear probe trains as the language model would (AdamW 2e-3, batches of 32) on each view
    of the tokens (``PROBE_VIEWS``); the report also gives each attribute's share of the object token's
    variance. Seconds, where a gate takes minutes: it separates "not in the tokens" from "not learnt yet"."""
    import torch

    if spec.kinds[0] not in SINGLE or len(spec.kinds) > 1:
        raise KitError(f"probe: takes one of {', '.join(SINGLE)} (a question about a lone object), not {spec.kind!r}")
    from kit.tiny.world.scenes import render_objects

    _, model, processor = fresh_model(spec)
    model.eval()

    def data(n: int, seed: int):
        drawn = items(spec, n, seed)
        tokens = torch.cat([image_tokens(model, processor, [render_objects(o) for o, *_ in drawn[i:i + 250]])
                            for i in range(0, n, 250)])
        cells = torch.tensor([objects[0].cell for objects, *_ in drawn])
        answers = sorted({answer for _, _, answer, _ in drawn})
        labels = torch.tensor([answers.index(answer) for _, _, answer, _ in drawn])
        groups = {attribute: [str(getattr(objects[0], attribute)) for objects, *_ in drawn] for attribute in ATTRIBUTES}
        return tokens, cells, labels, answers, groups

    torch.manual_seed(spec.seed)
    tokens, cells, labels, answers, groups = data(train_items, spec.seed + 17)
    test_tokens, test_cells, test_labels, test_answers, _ = data(test_items, spec.seed + 1_000_003)
    if test_answers != answers:
        raise KitError("probe: the held-out items have answers the training items lack; use more items")
    own = tokens[torch.arange(len(cells)), cells]
    centred = own - own.mean(0)
    total = float((centred ** 2).sum())
    shares = {}
    for attribute, values in groups.items():
        between = 0.0
        for value in set(values):
            rows = torch.tensor([v == value for v in values])
            between += float(rows.sum()) * float(((own[rows].mean(0) - own.mean(0)) ** 2).sum())
        shares[attribute] = round(100.0 * between / total, 1)
    log("  share of the object token's variance: " + ", ".join(f"{a} {v:.1f} %" for a, v in shares.items()))

    def rms(x):
        return x / x.pow(2).mean(-1, keepdim=True).sqrt()

    mean, scale = own.mean(0), own.std(0) + 1e-8
    views = {"object token": lambda t, c: rms(t[torch.arange(len(c)), c]),
             "mean of tokens": lambda t, c: rms(t.mean(1)),
             "standardised": lambda t, c: (t[torch.arange(len(c)), c] - mean) / scale}
    curves: dict[str, dict[int, float]] = {}
    for name, view in views.items():
        train_x, test_x = view(tokens, cells), view(test_tokens, test_cells)
        probe = torch.nn.Linear(train_x.shape[1], len(answers))
        optimizer = torch.optim.AdamW(probe.parameters(), lr=2e-3, weight_decay=0.01)
        generator = torch.Generator().manual_seed(spec.seed)
        curves[name] = {}
        for step in range(1, steps + 1):
            batch = torch.randint(0, len(train_x), (32,), generator=generator)
            loss = torch.nn.functional.cross_entropy(probe(train_x[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step in (100, steps):
                with torch.no_grad():
                    curves[name][step] = round(100.0 * float((probe(test_x).argmax(1) == test_labels).float().mean()), 1)
        log(f"  {name:15s} " + ", ".join(f"step {k}: {v:.1f} %" for k, v in curves[name].items()))
    return {"spec": asdict(spec), "variance_share": shares, "probe": curves}


def run_gate(spec: GateSpec, log=print) -> GateReport:
    """Train a fresh tiny model on ``spec`` and measure it (see the module docstring)."""
    import torch

    from kit.llm.generate import Chat, Sampling, TransformersEngine
    from kit.llm.models import count_parameters
    from kit.tiny.pretrain import Example, PretrainSpec, loaded, train
    from kit.tiny.world.scenes import render_objects

    started = time.time()
    tokenizer, model, processor = fresh_model(spec)
    examples = [Example(objects, [(text, target(spec, objects, answer))], kind)
                for objects, text, answer, kind in items(spec, spec.steps * spec.batch_size, spec.seed, spec.batch_size)]
    held_out = items(spec, spec.eval_items, spec.seed + 1_000_003)
    answers = [answer for _, _, answer, _ in held_out]
    kinds = [kind for *_, kind in held_out]
    # A blind model's best: the most common answer of each kind (the question says which kind it is).
    majority = 100.0 * sum(Counter(a for a, k in zip(answers, kinds, strict=True) if k == kind).most_common(1)[0][1]
                           for kind in set(kinds)) / len(answers)
    unbound = unbound_rate(held_out)
    chats = [Chat(id=str(i), turns=[text], image=render_objects(objects))
             for i, (objects, text, _, _) in enumerate(held_out)]
    engine = TransformersEngine(loaded(model, processor, spec.family), batch_size=100)
    longest = max(len(tokenizer(target(spec, objects, answer))["input_ids"]) for objects, _, answer, _ in held_out)

    measured: list[float] = []
    scans: list[float] = []

    def accuracy() -> float:
        sampling = Sampling(max_new_tokens=longest + 1)
        replies = {int(chat.id): reply for chat, reply in engine.generate(chats, sampling)}
        right = {i: final_answer(reply) == answers[i] for i, reply in replies.items()}
        measured.append(100.0 * sum(right.values()) / len(chats))
        scan_text = ""
        if spec.trace:
            read = [scan_accuracy(reply, held_out[i][0], spec.trace) for i, reply in replies.items()]
            scans.append(100.0 * sum(r for r, _ in read) / sum(n for _, n in read))
            scan_text = f"  scan {scans[-1]:5.1f} % of objects"
        per_kind = "" if len(spec.kinds) == 1 else "; " + ", ".join(
            f"{kind} {100.0 * sum(right[i] for i, k in enumerate(kinds) if k == kind) / kinds.count(kind):.1f} %"
            for kind in spec.kinds if kind in kinds)
        unbound_text = f", unbound {unbound:.1f} %" if unbound is not None and spec.max_objects > 1 else ""
        log(f"  step {min(len(measured) * (spec.eval_every or spec.steps), spec.steps):5d}  accuracy "
            f"{measured[-1]:5.1f} %{per_kind}{scan_text}  (most common answer {majority:.1f} %{unbound_text}, "
            f"{time.time() - started:.0f} s)")
        return measured[-1]

    pretrain = PretrainSpec(name=f"gate {spec.kind}", family=spec.family, size=spec.size, corpus=(),
                            steps=spec.steps, lr=spec.lr, vision_lr_scale=spec.vision_lr_scale,
                            batch_size=spec.batch_size, warmup=spec.warmup, seed=spec.seed,
                            eval_every=spec.eval_every, curve_items=spec.eval_items, batching="ordered")
    torch.manual_seed(spec.seed)
    _, _, curve = train(model, processor, examples, pretrain, log=lambda _: None,
                        evaluate=accuracy if spec.eval_every else None)
    if not curve or curve[-1]["step"] != spec.steps:
        curve.append({"step": spec.steps, "loss": float("nan"), "accuracy": accuracy()})
    return GateReport(spec=asdict(spec), parameters=count_parameters(model), seconds=round(time.time() - started, 1),
                      majority=round(majority, 2), unbound=None if unbound is None else round(unbound, 2), curve=curve,
                      scan=[round(value, 2) for value in scans])


# ---------------------------------------------------------------------------------------------
# Command line: `kit models gate KIND [options]`
# ---------------------------------------------------------------------------------------------
def _objects(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError as error:
        raise KitError(f"gate: --objects takes N or MIN-MAX, not {text!r}") from error


def _model_options(parser) -> None:
    parser.add_argument("--family", default=QWEN2VL, choices=[QWEN2VL, LLAVA])
    parser.add_argument("--colors", default=",".join(COLOR_NAMES), help="comma-separated colours to draw from")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated sizes to draw from")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--ffn", type=int, default=None, help="default: 3 x hidden")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vision-width", type=int, default=64)
    parser.add_argument("--vision-depth", type=int, default=2)
    parser.add_argument("--mrope", default="spatial", choices=MROPE_LAYOUTS)
    parser.add_argument("--vision-rope-theta", type=float, default=100.0)


def register(sub) -> None:
    gate = sub.add_parser("gate", help="train a fresh tiny model on one perception question and print its accuracy "
                                       "by step (minutes; issue 17's gates)")
    gate.add_argument("kind", help=f"one of {', '.join(KINDS)}, or several joined by '+' to mix them")
    gate.add_argument("--objects", default=None, help="objects per picture, N or MIN-MAX (default: 1 for the "
                                                      "single-object kinds, else 2)")
    gate.add_argument("--trace", nargs="?", const="objects", default="", choices=TRACES,
                      help="train scan-then-answer targets: 'objects' (the default with no value) lists every "
                           "object's colour and shape in reading order, 'cells' reads all 16 cells ('-' when "
                           "empty); then the answer")
    gate.add_argument("--warm-steps", type=int, default=0, help="length of the curriculum (0: none)")
    gate.add_argument("--warm-kind", default=None, help="the question kind(s) of the first --warm-steps steps")
    gate.add_argument("--warm-objects", type=int, default=None, help="objects during the first --warm-steps steps")
    gate.add_argument("--warm-colors", default="", help="comma-separated colours during the first --warm-steps steps")
    gate.add_argument("--warm-sizes", default="", help="comma-separated sizes during the first --warm-steps steps")
    _model_options(gate)
    gate.add_argument("--lr", type=float, default=2e-3)
    gate.add_argument("--vision-lr-scale", type=float, default=0.25)
    gate.add_argument("--steps", type=int, default=1000)
    gate.add_argument("--batch-size", type=int, default=32)
    gate.add_argument("--eval-every", type=int, default=250)
    gate.add_argument("--eval-items", type=int, default=200)
    gate.add_argument("--seed", type=int, default=0)
    gate.add_argument("--threads", type=int, default=2)
    gate.add_argument("--json", type=Path, default=None, help="append the report to this JSON-lines file")
    gate.set_defaults(func=_cmd_gate)


def register_probe(sub) -> None:
    probe = sub.add_parser("probe", help="read a lone object's colour, shape or quadrant linearly from a freshly "
                                         "built tiny model's image tokens (seconds; issue 17's first gate)")
    probe.add_argument("kind", choices=list(SINGLE))
    _model_options(probe)
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--threads", type=int, default=2)
    probe.set_defaults(func=_cmd_probe, objects=None, trace="", warm_kind=None, warm_objects=None, warm_colors="", warm_sizes="", warm_steps=0,
                       lr=2e-3, vision_lr_scale=0.25,
                       steps=1, batch_size=32, eval_every=0, eval_items=1)


def _cmd_probe(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    spec = spec_from_args(args)
    print(f"probe {spec.kind}: {spec.family}, hidden {spec.size.hidden}, vision {spec.size.vision_width} x "
          f"{spec.size.vision_depth}, colours {','.join(spec.colors)}, sizes {','.join(spec.sizes)}")
    probe_tokens(spec)
    return 0


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def spec_from_args(args) -> GateSpec:
    low, high = _objects(args.objects) if args.objects else ((1, 1) if args.kind.split("+")[0] in SINGLE else (2, 2))
    size = TinySize(hidden=args.hidden, layers=args.layers, ffn=args.ffn or 3 * args.hidden, heads=args.heads,
                    kv_heads=max(1, args.heads // 2), vision_width=args.vision_width, vision_depth=args.vision_depth)
    return GateSpec(kind=args.kind, family=args.family, min_objects=low, max_objects=high,
                    warm_steps=args.warm_steps, warm_kind=args.warm_kind, warm_objects=args.warm_objects,
                    warm_colors=_names(args.warm_colors), warm_sizes=_names(args.warm_sizes),
                    colors=_names(args.colors), sizes=_names(args.sizes), trace=args.trace, size=size, mrope=args.mrope,
                    vision_rope_theta=args.vision_rope_theta, lr=args.lr, vision_lr_scale=args.vision_lr_scale,
                    steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every,
                    eval_items=args.eval_items, seed=args.seed)


def _cmd_gate(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    spec = spec_from_args(args)
    print(f"gate {spec.kind}: {spec.min_objects}-{spec.max_objects} objects, {spec.family}, "
          f"hidden {spec.size.hidden} x {spec.size.layers} layers, mrope {spec.mrope}, "
          f"vision theta {spec.vision_rope_theta:g}, vision lr x{spec.vision_lr_scale:g}, {spec.steps} steps")
    report = run_gate(spec)
    unbound = f" and {report.unbound:.1f} % unbound" if report.unbound is not None and spec.max_objects > 1 else ""
    print(f"final {report.final:.1f} % against {report.majority:.1f} % for the most common answer{unbound}; "
          f"{report.parameters:,d} parameters, {report.seconds:.0f} s")
    if args.json:
        with open(args.json, "a") as handle:
            handle.write(json.dumps(asdict(report)) + "\n")
    return 0
