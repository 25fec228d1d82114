"""Perception gates for the tiny world's redesign (issue 17): ``kit models gate``.

The tiny models fail where they cannot perceive what a question asks. Before a recipe is spent on a whole
teacher (an hour of pre-training), a gate answers one narrow question cheaply: can a fresh tiny model of this
architecture, size and position layout learn to read *this* from a picture? It trains on one question kind
about freshly drawn objects (a new picture for every example, so nothing is learnt by heart), with the same
loop, loss mask and batching as ``kit models build``, and prints greedy exact-match accuracy on held-out
pictures every ``eval_every`` steps beside the rate of the most common answer (what a model that ignores the
picture gets). docs/tiny-models.md records what each gate measured.

What the gates ask (kinds, answers, traces) is in ``kit.tiny.perception``; mixed kinds are reported per kind
as well.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kit.errors import KitError
from kit.llm.models import LLAVA, QWEN2VL
from kit.tiny.models import MROPE_LAYOUTS, TinySize
from kit.tiny.perception import (
    KINDS,
    SINGLE,
    TRACES,
    GateSpec,
    final_answer,
    gate_texts,
    items,
    scan_accuracy,
    target,
    unbound_rate,
)
from kit.tiny.world.scenes import COLOR_NAMES, SIZES


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
    from kit.llm.generate import Chat, Sampling, TransformersEngine
    from kit.llm.models import count_parameters
    from kit.tiny.pretrain import loaded, train_perception
    from kit.tiny.world.scenes import render_objects

    started = time.time()
    tokenizer, model, processor = fresh_model(spec)
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
    longest = max(len(tokenizer(target(spec, objects, answer, text))["input_ids"])
                  for objects, text, answer, _ in held_out)

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

    curve = train_perception(model, processor, spec, evaluate=accuracy)
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
    gate.add_argument("--tally", action="store_true",
                      help="count-colour with --trace cells: write the asked colour's running count at the end of "
                           "each row of the scan before the answer")
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
    probe.set_defaults(func=_cmd_probe, objects=None, trace="", tally=False, warm_kind=None, warm_objects=None, warm_colors="", warm_sizes="", warm_steps=0,
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
                    colors=_names(args.colors), sizes=_names(args.sizes), trace=args.trace, tally=args.tally, size=size, mrope=args.mrope,
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
