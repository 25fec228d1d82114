"""Pre-train the tiny models on the tiny world: ``kit models build``.

The tiny profile needs models with real, imperfect skill: a Qwen2-VL teacher clearly stronger than a
Qwen2-VL student, and a LLaVA policy that describes images and answers yes/no questions, mistakes
included. They are trained from scratch here with a plain loop (nanoGPT style: one file, no trainer
framework needed for pre-training), loss on the assistant's tokens only, and written with
``save_pretrained`` plus a manifest that names the command, seed, config, world and the measured
accuracy. The shipped checkpoints in ``data/models/`` come from exactly this command.
"""

from __future__ import annotations

import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from kit import REPO_DIR
from kit.casseat.mathv360k import question_text
from kit.errors import KitError
from kit.llm.models import LLAVA, QWEN2VL
from kit.tiny.models import TinySize
from kit.training.common import turn_mask

MODELS_DIR = REPO_DIR / "data" / "models"
MANIFEST_NAME = "MANIFEST.json"

# How a user turn asks for an answer. `cot` is the step-by-step style the Cas-SEAT student is trained
# towards; `direct` is LLaVA's standard short-answer instruction.
DIRECT_SUFFIX = "\nAnswer the question using a single word or phrase."
# Dense perception: the canonical description names every object's colour, shape, size and place.
# No shipped spec trains on it (measured: it made the teacher weaker, see docs/tiny-models.md), but its
# texts stay in the tokenizer's corpus so that `kit models build` reproduces the shipped tokenizers.
DESCRIBE_PROMPT = "Describe the image in detail."


@dataclass(frozen=True)
class PretrainSpec:
    """One tiny model: its architecture, size, training corpus and budget."""

    name: str
    family: str
    size: TinySize
    corpus: tuple[str, ...]
    steps: int
    lr: float = 2e-3
    # The vision tower's learning rate is lr * vision_lr_scale. On one isolated task (a lone square's
    # colour) Qwen2-VL's tower at 2e-3 reached 53 % after 300 steps and 100 % at a tenth of the rate,
    # but on the full mixture 0.1 trained a worse teacher (32 % vs 53 %), so the shipped models use 1.
    vision_lr_scale: float = 1.0
    # Qwen2-VL's rotary positions (kit.tiny.models.MROPE_LAYOUTS). The defaults are Qwen2-VL's own; the perception
    # gates learn quadrants only with "spatial" and a vision theta near 100 (docs/tiny-models.md).
    mrope: str = "qwen2vl"
    vision_rope_theta: float = 10000.0
    # A perception warm-up (kit.tiny.perception.WARM_UPS) trained before the corpus: the perception gates found a
    # lone object's shape learnable only after a curriculum, and quadrants only after shape.
    perception: str = ""
    # Scan-then-reason solutions on the fresh scenes (kit.tiny.perception.TRACES, "+bars" to read bar charts too;
    # "": the world's gold steps as written): a shapes scene's solution starts with "Step 1: Read the cells: ...",
    # every cell in reading order, a bar chart's with "Step 1: Read the bars: A blue 3, ...".
    # The perception gates count one colour 88 % right after 2,000 steps with it. The pool's 2,000 images are files
    # whose objects the records do not keep, so their solutions stay as written.
    scan: str = ""
    # The fresh scenes' solutions: "" as the world writes them, "local" rewritten so that each step copies forwards or
    # adds two numbers (kit.tiny.world.questions.local_steps): "the largest height is 7, so bar B" becomes a running
    # comparison, because a tiny model finds the 7 in its scan but not the label before it, and "Count the red shapes:
    # 2." lists the red objects with the count so far, because it reads every colour in its scan but miscounts them.
    solutions: str = ""
    batch_size: int = 32
    warmup: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    # Fraction of the training pool this model sees. The student sees less and trains shorter so
    # that it sits past the take-off point but well below the teacher.
    pool_fraction: float = 1.0
    # Freshly sampled training-split scenes on top of the pool: the pool's 2000 images are learnt by
    # heart long before counting generalises, fresh scenes remove that ceiling.
    fresh_scenes: int = 0
    # Measure tiny-MathVista accuracy on `curve_items` items every `eval_every` steps (0: never): the
    # learning curve recorded in the manifest.
    eval_every: int = 0
    curve_items: int = 100
    # Continue from another spec's checkpoint (built first, its tokenizer kept) instead of from scratch.
    init_from: str | None = None
    # "mixed": every batch samples all styles; "by_style": each batch holds one style, drawn in proportion
    # to its examples, so that the ~850-token SEAT prompts do not pad every short batch to their length;
    # "ordered": batches in the examples' own order, once through (a curriculum, as the gates use).
    batching: str = "mixed"
    # With "by_style": (style, weight) pairs for how often each style's batches are drawn; styles left out
    # weigh 1, and none given draws in proportion to each style's examples.
    style_weights: tuple[tuple[str, float], ...] = ()


SPECS: dict[str, PretrainSpec] = {
    # The teacher's perception and reasoning: chain-of-thought, MathVista queries, short answers.
    "tiny-qwen2vl-teacher-base": PretrainSpec(
        name="tiny-qwen2vl-teacher-base", family=QWEN2VL,
        size=TinySize(hidden=128, layers=3, ffn=384),
        corpus=("cot", "query", "direct"), steps=3000, seed=1, fresh_scenes=60000,
        eval_every=500, curve_items=100,
    ),
    # The teacher proper: the base taught the SEAT and Cas-SEAT output formats, which a real teacher
    # (Qwen2-VL-7B) follows from the prompt's instructions alone. Earlier styles are replayed so that it
    # keeps its skill; batches are by style because the SEAT prompt alone is ~690 tokens.
    "tiny-qwen2vl-teacher": PretrainSpec(
        name="tiny-qwen2vl-teacher", family=QWEN2VL,
        size=TinySize(hidden=128, layers=3, ffn=384),
        corpus=("cot", "query", "direct", "seat", "cas"), steps=1200, lr=2e-3, warmup=50, seed=4,
        fresh_scenes=20000, eval_every=300, curve_items=100,
        init_from="tiny-qwen2vl-teacher-base", batching="by_style",
        # 600 steps in proportion to the examples (each new style a sixth) left the SEAT and reflection
        # formats garbled (well formed 86 % / 81 % but blocks in 8 % of SEAT answers); the new formats get
        # most of the batches, the replayed styles enough to keep the base's accuracy.
        style_weights=(("cot", 1.0), ("query", 1.0), ("direct", 0.5), ("seat", 2.5), ("cas_cot", 1.0),
                       ("cas_reflection", 2.0)),
    ),
    # A quarter of the teacher's budget on a smaller model and half the pool: clearly weaker, and its
    # learning curve (recorded every 100 steps) is still rising when it stops.
    "tiny-qwen2vl-student": PretrainSpec(
        name="tiny-qwen2vl-student", family=QWEN2VL,
        size=TinySize(hidden=96, layers=2, heads=4, ffn=192),
        corpus=("cot", "query", "direct"), steps=800, seed=2, pool_fraction=0.5, fresh_scenes=15000,
        eval_every=100, curve_items=100,
    ),
    "tiny-llava-policy": PretrainSpec(
        name="tiny-llava-policy", family=LLAVA, size=TinySize(hidden=128, layers=2, ffn=256),
        corpus=("instructions", "direct", "yesno"), steps=900, seed=3,
    ),
}


@dataclass
class Example:
    """One training conversation: an image (a file, or a scene rendered when batched) and
    (user text, assistant text) turns."""

    image: Any
    turns: list[tuple[str, str]]
    source: str = ""
    # Assistant turns that carry the loss (None: all). A reflection example shows a wrong chain of thought
    # in its first turn; the model must learn to reflect on it, not to write it.
    loss_turns: tuple[int, ...] | None = None


@dataclass
class PretrainReport:
    name: str
    seconds: float
    steps: int
    final_loss: float
    parameters: int
    accuracy: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------
def _read_json(path: Path):
    if not path.is_file():
        raise KitError(f"{path} is missing; build the tiny world first with `kit world build`")
    return json.loads(path.read_text())


def _letter_answer(record: dict) -> str:
    if record.get("choices"):
        return "ABCDEFGH"[record["choices"].index(record["answer"])]
    return str(record["answer"])


def query_prompt(record: dict) -> str:
    """MathVista's zero-shot query (hint, question, choices) for a pool record, built by the benchmark's
    own prompt function so that training and evaluation prompts agree."""
    from kit.eval.benchmarks import mathvista

    problem = {
        "question": record["question"], "choices": record.get("choices"), "unit": record.get("unit"),
        "precision": record.get("precision"), "question_type": "multi_choice" if record.get("choices") else "free_form",
        "answer_type": record["answer_type"],
    }
    return mathvista.build_prompt(problem)


def fresh_records(n: int, seed: int, scan: str = "", solutions: str = "") -> list[dict]:
    """``n`` pool-like records over freshly sampled training-split scenes (the ``image`` is the scene).

    Drawn by the world's own ``SceneSource("train")``, so no scene of an evaluation family can occur. With ``scan``
    (``PretrainSpec.scan``), each shapes scene's solution starts by reading its cells; ``solutions`` is
    ``PretrainSpec.solutions``."""
    from kit.tiny.world.families import SceneSource
    from kit.tiny.world.questions import ask_any, local_steps

    if solutions not in ("", "local"):
        raise KitError(f"solutions must be '' (the world's gold steps) or 'local', not {solutions!r}")

    rng = random.Random(seed)
    source = SceneSource(rng, "train")
    records = []
    for _ in range(n):
        scene = source.draw()
        q = ask_any(scene, rng)
        steps = local_steps(q, scene) if solutions else list(q.steps)
        solution = scanned(steps, scene, scan) if scan else steps
        records.append({"image": scene, "question": q.question, "answer": q.answer, "choices": q.choices,
                        "answer_type": q.answer_type, "precision": q.precision, "solution": solution})
    return records


def scanned(solution: list[str], scene, scan: str) -> list[str]:
    """``solution`` with a first step that reads the scene, the world's steps renumbered after it. ``scan`` names a
    style for the shapes scenes (``kit.tiny.perception.TRACES``), and ``+bars`` also reads each bar chart's bars, colour
    and height ("A blue 3, B red 5, ..."); without it bar charts stay as written (some of their solutions start by
    reading the heights)."""
    import re

    from kit.tiny.perception import TRACES, scan_opening, trace

    style, _, bars = scan.partition("+")
    if style not in TRACES or bars not in ("", "bars"):
        raise KitError(f"scan must be one of {', '.join(TRACES)}, optionally with +bars, not {scan!r}")
    if scene.kind == "shapes":
        first = f"Step 1: {scan_opening(style)}{trace(scene.objects, style)}."
    elif bars:
        first = f"Step 1: {scan_opening('bars')}" + ", ".join(f"{b.label} {b.color} {b.height}" for b in scene.bars) + "."
    else:
        return solution
    renumbered = [re.sub(r"^Step (\d+):", lambda m: f"Step {int(m[1]) + 1}:", line) for line in solution]
    return [first] + renumbered


def corpus_examples(world_root: Path, styles: tuple[str, ...], pool_fraction: float, seed: int,
                    fresh_scenes: int = 0, scan: str = "", solutions: str = "") -> list[Example]:
    """Training conversations for the given styles, from the world's training families only (plus
    ``fresh_scenes`` newly sampled training-split scenes)."""
    rng = random.Random(seed)
    pool_dir = world_root / "mathv360k"
    pool = _read_json(pool_dir / "train_samples_all_tuning.json")
    pool = pool[: max(1, int(len(pool) * pool_fraction))]
    for record in pool:
        record["image"] = str(pool_dir / record["image"])
    pool += fresh_records(fresh_scenes, seed + 1, scan, solutions) if fresh_scenes else []
    examples: list[Example] = []
    for record in pool:
        image = record["image"]
        solution = "\n".join(record["solution"])
        if "cot" in styles:
            examples.append(Example(image, [(question_text(record), solution)], "cot"))
        if "query" in styles:
            examples.append(Example(image, [(query_prompt(record), solution)], "query"))
        if "direct" in styles:
            examples.append(Example(image, [(question_text(record) + DIRECT_SUFFIX, _letter_answer(record))],
                                    "direct"))
        if "describe" in styles and not isinstance(image, str):
            from kit.tiny.world.scenes import describe

            examples.append(Example(image, [(DESCRIBE_PROMPT, describe(image))], "describe"))
        if "yesno" in styles and record["answer"] in ("Yes", "No"):
            examples.append(Example(image, [(record["question"] + " Please answer yes or no.", record["answer"])],
                                    "yesno"))
    if "instructions" in styles:
        inst = world_root / "instructions"
        for row in _read_json(inst / "llava_instruct.json"):
            conv = row["conversations"]
            turns = [(conv[i]["value"].replace("<image>\n", "").replace("<image>", ""), conv[i + 1]["value"])
                     for i in range(0, len(conv) - 1, 2)]
            examples.append(Example(str(inst / row["image"]), turns, "instructions"))
    if "seat" in styles or "cas" in styles:
        examples += _seat_examples(pool, styles, seed)
    rng.shuffle(examples)
    return examples


# Share of SEAT targets whose self-evaluation catches a misread step, and of Cas-SEAT reflection examples
# whose chain of thought is wrong (ours: the tiny teacher needs both verdicts and both reflections).
SEAT_REFINE_RATE = 0.3
CAS_WRONG_RATE = 0.5


def _seat_examples(pool: list[dict], styles: tuple[str, ...], seed: int) -> list[Example]:
    """The SEAT and Cas-SEAT formats (``kit.eval.seat_format``) under the authors' prompts (``kit.llm.prompts``). Its own
    random stream, so adding these styles leaves the other styles' examples unchanged."""
    from kit.llm.prompts import get
    from kit.tiny import seat_targets

    rng = random.Random(seed + 7919)
    examples: list[Example] = []
    for record in pool:
        image, question, solution = record["image"], question_text(record), record["solution"]
        if "seat" in styles:
            prompt = get("seat_synthesis").format(question=question, answer=str(record["answer"]))
            examples.append(Example(image, [(prompt, seat_targets.seat_target(solution, rng, SEAT_REFINE_RATE))], "seat"))
        if "cas" in styles:
            cot_prompt = get("cas_cot").format(question=question)
            examples.append(Example(image, [(cot_prompt, seat_targets.cot_target(solution))], "cas_cot"))
            steps, _ = seat_targets.split_solution(solution)
            wrong_step = wrong = None
            if rng.random() < CAS_WRONG_RATE:
                candidates = [(i, seat_targets.corrupt(s, rng)) for i, s in enumerate(steps)]
                candidates = [(i, w) for i, w in candidates if w is not None]
                if candidates:
                    wrong_step, wrong = rng.choice(candidates)
            first = seat_targets.cot_target(solution, wrong_step, wrong, rng, record.get("choices"))
            examples.append(Example(image, [(cot_prompt, first),
                                            (get("cas_reflection").text, seat_targets.reflection_target(solution, wrong_step))],
                                    "cas_reflection", loss_turns=(1,)))
    return examples


def corpus_texts(world_root: Path, scan: str = "", solutions: str = "") -> list[str]:
    """Every text the tokenizer should know: questions, solutions (with their ``scan`` and ``solutions``), descriptions,
    prompts."""
    texts = []
    for styles in (("cot", "query", "direct", "yesno", "instructions", "describe"),):
        examples = corpus_examples(world_root, styles, 1.0, seed=0, fresh_scenes=200, scan=scan, solutions=solutions)
        for example in examples:
            for user, assistant in example.turns:
                texts += [user, assistant]
    return texts


# ---------------------------------------------------------------------------------------------
# Batching with the loss on assistant tokens only
# ---------------------------------------------------------------------------------------------
def _messages(example: Example) -> list[dict]:
    messages = []
    for i, (user, assistant) in enumerate(example.turns):
        content = [{"type": "image"}, {"type": "text", "text": user}] if i == 0 else [{"type": "text", "text": user}]
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": assistant}]})
    return messages


def collate(processor, examples: list[Example], images_cache: dict | None = None):
    """Tokenise conversations; labels are -100 everywhere but the assistant's tokens.

    The mask comes from the chat template's ``{% generation %}`` spans
    (``return_assistant_tokens_mask``), the same mechanism TRL uses for ``assistant_only_loss``, and keeps each
    example's ``loss_turns`` only (``kit.training.common.turn_mask``, the rule fine-tuning masks by too)."""
    import torch
    from PIL import Image

    texts, images, masks = [], [], []
    tokenizer = processor.tokenizer
    for example in examples:
        rendered = tokenizer.apply_chat_template(
            _messages(example), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        texts.append(processor.apply_chat_template(_messages(example), tokenize=False))
        masks.append(turn_mask(rendered["assistant_masks"], example.loss_turns))
        if not isinstance(example.image, str):
            from kit.tiny.world.scenes import Scene, render, render_objects

            # A world scene, or the bare objects of a perception gate (kit.tiny.gates).
            images.append(render(example.image) if isinstance(example.image, Scene) else render_objects(example.image))
        elif images_cache is not None and example.image in images_cache:
            images.append(images_cache[example.image])
        else:
            image = Image.open(example.image).convert("RGB")
            if images_cache is not None:
                images_cache[example.image] = image
            images.append(image)
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    labels = torch.full_like(batch["input_ids"], -100)
    for row, mask in enumerate(masks):
        # The template's text has one image placeholder; the processor expanded it, so align masks
        # from the right end (both sequences end with the same assistant tokens).
        attn = batch["attention_mask"][row]
        length = int(attn.sum())
        mask_t = torch.tensor(mask, dtype=torch.bool)
        tail = min(len(mask_t), length)
        ids = batch["input_ids"][row]
        start = ids.shape[0] - tail if processor.tokenizer.padding_side == "left" else length - tail
        span = slice(start, start + tail)
        keep = mask_t[-tail:]
        labels[row, span][keep] = ids[span][keep]
    batch["labels"] = labels
    return batch


# ---------------------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------------------
def train(model, processor, examples: list[Example], spec: PretrainSpec, log=print,
          evaluate=None) -> tuple[float, int, list[dict[str, float]]]:
    """AdamW with linear warm-up and cosine decay. ``evaluate()`` (an accuracy in percent) runs every
    ``spec.eval_every`` steps. Returns the final smoothed loss, the steps taken and the curve."""
    import torch

    if spec.batching not in ("mixed", "by_style", "ordered"):
        raise KitError(f"{spec.name}: batching must be 'mixed', 'by_style' or 'ordered', not {spec.batching!r}")
    if spec.batching == "ordered" and len(examples) < spec.steps * spec.batch_size:
        raise KitError(f"{spec.name}: ordered batching needs {spec.steps * spec.batch_size} examples "
                       f"({spec.steps} steps of {spec.batch_size}), got {len(examples)}")
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        is_vision = ".visual." in f".{name}" or "vision_tower" in name
        groups.setdefault((is_vision, param.ndim >= 2), []).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": params, "weight_decay": spec.weight_decay if decays else 0.0,
          "lr_scale": spec.vision_lr_scale if is_vision else 1.0}
         for (is_vision, decays), params in groups.items()],
        lr=spec.lr, betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        if step < spec.warmup:
            return spec.lr * (step + 1) / spec.warmup
        progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
        return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    from tqdm.auto import tqdm

    model.train()
    by_style: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        by_style.setdefault(example.source if spec.batching == "by_style" else "", []).append(i)
    styles = sorted(by_style)
    queues: dict[str, list[int]] = {style: [] for style in styles}
    chosen = dict(spec.style_weights)
    unknown = sorted(set(chosen) - set(styles)) if spec.batching == "by_style" else sorted(chosen)
    if unknown:
        raise KitError(f"{spec.name}: style_weights name {', '.join(unknown)}, which the corpus "
                       f"({', '.join(styles)}) has no batches of")
    weights = [chosen.get(s, 1.0) for s in styles] if chosen else [len(by_style[s]) for s in styles]
    smoothed = float("nan")
    cache: dict = {}
    curve: list[dict[str, float]] = []
    steps_taken = 0
    bar = tqdm(range(spec.steps), desc=f"pretrain {spec.name}", leave=False)
    for step in bar:
        if spec.batching == "ordered":
            idx = list(range(step * spec.batch_size, (step + 1) * spec.batch_size))
        else:
            style = styles[0] if len(styles) == 1 else rng.choices(styles, weights)[0]
            if len(queues[style]) < spec.batch_size:
                more = list(by_style[style])
                rng.shuffle(more)
                queues[style] += more
            idx, queues[style] = queues[style][: spec.batch_size], queues[style][spec.batch_size:]
        batch = collate(processor, [examples[i] for i in idx], cache)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step) * group["lr_scale"]
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = loss.item()
        smoothed = value if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * value
        if step % 25 == 0:
            bar.set_postfix(loss=f"{smoothed:.3f}")
        steps_taken = step + 1
        if step % 200 == 0:
            log(f"  step {step:5d}  loss {smoothed:.4f}  lr {lr_at(step):.2e}")
        if evaluate is not None and spec.eval_every and steps_taken % spec.eval_every == 0:
            model.eval()
            accuracy = evaluate()
            model.train()
            curve.append({"step": steps_taken, "loss": round(smoothed, 4), "accuracy": accuracy})
            log(f"  step {steps_taken:5d}  tiny-MathVista accuracy {accuracy:.1f} % ({spec.curve_items} items)")
    model.eval()
    return smoothed, steps_taken, curve


def train_perception(model, processor, gate, evaluate=None) -> list[dict[str, float]]:
    """Train ``model`` on a perception gate's questions (``kit.tiny.perception.GateSpec``): fresh objects for every
    example, in the curriculum's order, on the gate's own schedule. Returns the curve ``evaluate`` measured."""
    import torch

    from kit.tiny.perception import items, target

    examples = [Example(objects, [(text, target(gate, objects, answer, text))], kind)
                for objects, text, answer, kind in items(gate, gate.steps * gate.batch_size, gate.seed, gate.batch_size)]
    spec = PretrainSpec(name=f"perception {gate.kind}", family=gate.family, size=gate.size, corpus=(),
                        steps=gate.steps, lr=gate.lr, vision_lr_scale=gate.vision_lr_scale, batch_size=gate.batch_size,
                        warmup=gate.warmup, seed=gate.seed, eval_every=gate.eval_every, curve_items=gate.eval_items,
                        batching="ordered")
    torch.manual_seed(gate.seed)
    _, _, curve = train(model, processor, examples, spec, log=lambda _: None,
                        evaluate=evaluate if gate.eval_every else None)
    return curve


# ---------------------------------------------------------------------------------------------
# Quick skill check (the full evaluator lives in kit.eval.evaluate)
# ---------------------------------------------------------------------------------------------
def loaded(model, processor, family: str, source: str = "(in memory)"):
    from kit.llm.models import LoadedModel

    return LoadedModel(model=model, processor=processor, source=source, family=family)


def mathvista_score(model, processor, world_root: Path, limit: int | None = None, batch_size: int = 64,
                    max_new_tokens: int = 96) -> dict:
    """The tiny MathVista testmini through ``kit.eval.evaluate`` (greedy, rules-only extraction)."""
    from kit.eval.evaluate import evaluate
    from kit.llm.models import family_of

    return evaluate(loaded(model, processor, family_of(model.config.to_dict())), "mathvista",
                    source=world_root / "mathvista", limit=limit, batch_size=batch_size, progress=False,
                    max_new_tokens=max_new_tokens)


def answer_budget(processor, examples: list[Example], sample: int = 5000, seed: int = 0) -> int:
    """New tokens enough for the longest assistant turn among ``sample`` of ``examples``, with a margin: scanned and
    local solutions outgrow the 96 tokens the world's own gold solutions fit in, and a cut answer scores as wrong
    (the bars-scan teacher's "corners in total" went from 0 of 30 at 96 tokens to 8 of 30 at 256)."""
    chosen = random.Random(seed).sample(examples, min(sample, len(examples)))
    texts = [assistant for example in chosen for _, assistant in example.turns]
    longest = max(len(ids) for ids in processor.tokenizer(texts)["input_ids"])
    return max(96, longest + 16)


# ---------------------------------------------------------------------------------------------
# Build command
# ---------------------------------------------------------------------------------------------
def build_tokenizer(world_root: Path, family: str, vocab: int, scan: str = "", solutions: str = ""):
    from kit.tiny.models import train_tokenizer

    return train_tokenizer(corpus_texts(world_root, scan, solutions), family, vocab)


def build_one(spec: PretrainSpec, world_root: Path, out_dir: Path, log=print) -> PretrainReport:
    import torch

    from kit.llm.models import count_parameters, save
    from kit.tiny.models import build_tiny

    started = time.time()
    torch.manual_seed(spec.seed)
    if spec.init_from:
        from kit.llm.models import load

        start = out_dir / spec.init_from
        if not (start / "config.json").is_file():
            raise KitError(f"{spec.name} continues from {start}, which is not built; build {spec.init_from} first")
        base = load(start)
        model, processor = base.model, base.processor
    else:
        tokenizer = build_tokenizer(world_root, spec.family, spec.size.vocab, spec.scan, spec.solutions)
        model, processor = build_tiny(spec.family, tokenizer, spec.size, seed=spec.seed, mrope=spec.mrope,
                                      vision_rope_theta=spec.vision_rope_theta)
    if spec.perception:
        from kit.tiny.perception import warm_up

        rotary = {"mrope": spec.mrope, "vision_rope_theta": spec.vision_rope_theta} if spec.family == QWEN2VL else {}
        for stage in warm_up(spec.perception, family=spec.family, size=spec.size, seed=spec.seed, **rotary):
            log(f"{spec.name}: perception warm-up, {stage.kind}, {stage.steps} steps")
            train_perception(model, processor, stage)
    examples = corpus_examples(world_root, spec.corpus, spec.pool_fraction, spec.seed, spec.fresh_scenes, spec.scan,
                                 spec.solutions)
    log(f"{spec.name}: {count_parameters(model):,} parameters, {len(examples):,} examples, {spec.steps} steps")
    budget = answer_budget(processor, examples, seed=spec.seed)

    def curve_point() -> float:
        return mathvista_score(model, processor, world_root, limit=spec.curve_items, max_new_tokens=budget)["accuracy"]

    loss, steps_taken, curve = train(model, processor, examples, spec, log=log, evaluate=curve_point)
    accuracy = {}
    if spec.family == QWEN2VL:
        scores = mathvista_score(model, processor, world_root, max_new_tokens=budget)
        accuracy["mathvista_testmini"] = scores["accuracy"]
        accuracy["mathvista_by_context"] = {k: v["accuracy"] for k, v in scores["context"].items()}
        accuracy["mathvista_by_answer_type"] = {k: v["accuracy"] for k, v in scores["answer_type"].items()}
    if spec.family == LLAVA:
        from kit.eval.evaluate import evaluate

        policy = loaded(model, processor, LLAVA)
        mme = evaluate(policy, "mme", source=world_root / "mme", batch_size=64, progress=False)
        hallusion = evaluate(policy, "hallusionbench", source=world_root / "hallusionbench", batch_size=64,
                             progress=False)
        accuracy["mme_perception"] = mme["perception"]
        accuracy["mme_cognition"] = mme["cognition"]
        accuracy.update({f"hallusionbench_{k}": hallusion[k] for k in ("aAcc", "fAcc", "qAcc")})
    report = PretrainReport(spec.name, round(time.time() - started, 1), steps_taken, round(loss, 4),
                            count_parameters(model), accuracy, curve)
    save(model, processor, out_dir / spec.name, manifest={"spec": _spec_dict(spec), "report": asdict(report)})
    log(f"{spec.name}: loss {loss:.4f}, accuracy {accuracy}, {report.seconds} s")
    return report


def _spec_dict(spec: PretrainSpec) -> dict:
    """The spec as it reads back from a manifest (tuples become lists)."""
    return json.loads(json.dumps(asdict(spec)))


# The world families pre-training reads (the pool and instruction set it trains on, the benchmarks it
# measures), so that adding another benchmark family to the world does not orphan the shipped models.
PRETRAIN_FAMILIES = ("mathv360k", "instructions", "mathvista", "mme", "hallusionbench")


def world_text_hash(world_root: Path) -> str:
    """Hash of the questions, answers and scenes of ``PRETRAIN_FAMILIES`` (every JSON, JSONL and text file
    in their folders), leaving out the PNG bytes, which depend on the Pillow/zlib build while the pixels
    do not."""
    from kit.core.artifacts import content_hash, file_hash

    root = Path(world_root)
    files = sorted(p for family in PRETRAIN_FAMILIES for p in (root / family).rglob("*")
                   if p.suffix in (".json", ".jsonl", ".txt"))
    return content_hash({p.relative_to(root).as_posix(): file_hash(p) for p in files})


def build_models(names: list[str] | None, world_root: Path, out_dir: Path = MODELS_DIR, threads: int = 2,
                 log=print, specs: dict[str, PretrainSpec] | None = None) -> dict:
    """Build the named tiny models (all by default) and update ``out_dir/MANIFEST.json``."""
    import torch


    specs = specs or SPECS
    unknown = sorted(set(names or []) - set(specs))
    if unknown:
        raise KitError(f"unknown tiny model(s) {', '.join(unknown)}; choose from {', '.join(specs)}")
    world_manifest = world_root / "MANIFEST.json"
    if not world_manifest.is_file():
        raise KitError(f"{world_manifest} is missing; build the tiny world first with `kit world build`")
    torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict = {}
    wanted = names or list(specs)
    for name in wanted:
        start = specs[name].init_from
        if start and start not in wanted and not (out_dir / start / "config.json").is_file():
            raise KitError(f"{name} continues from {start}, which is not in {out_dir}; build it too "
                           f"(`kit models build --only {start} --only {name}`)")
    # A model another one continues from is built first (SPECS lists them in that order).
    for name in sorted(wanted, key=list(specs).index):
        build_one(specs[name], world_root, out_dir, log=log)
        manifest = record_in_manifest(out_dir / name, world_root, threads)
    return manifest


def record_in_manifest(folder: Path, world_root: Path, threads: int = 2) -> dict:
    """Add a built model (its ``kit_model.json``, file hashes and the world it was trained on) to
    ``MANIFEST.json`` beside it."""
    import torch
    import transformers

    from kit.core.artifacts import atomic_write_json, file_hash

    folder = Path(folder)
    built = json.loads((folder / "kit_model.json").read_text())
    world = json.loads((Path(world_root) / "MANIFEST.json").read_text())
    manifest_path = folder.parent / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"models": {}}
    manifest["models"][folder.name] = {
        "command": f"kit models build --only {folder.name}",
        "spec": built["spec"],
        "report": built["report"],
        "world_config": world["config"],
        "world_version": world.get("version"),
        "world_text_hash": world_text_hash(world_root),
        "files": {p.name: file_hash(p) for p in sorted(folder.iterdir()) if p.is_file()},
        "built_with": {"torch": torch.__version__, "transformers": transformers.__version__,
                       "python": platform.python_version(), "threads": threads},
    }
    atomic_write_json(manifest_path, manifest)
    return manifest


def register(subparsers):
    """Add ``kit models`` with ``build`` and ``list``; returns its sub-parsers (``kit.tiny.commands`` adds the gates)."""
    parser = subparsers.add_parser("models", help="build, list or gate the tiny models")
    sub = parser.add_subparsers(dest="models_command", required=True)
    build = sub.add_parser("build", help="pre-train the tiny models on the tiny world (minutes on 2 CPU cores)")
    build.add_argument("--only", action="append", choices=sorted(SPECS), help="build only this model (repeatable)")
    build.add_argument("--profile", default="tiny", help="profile whose world section to use (default: tiny)")
    build.add_argument("--out", type=Path, default=MODELS_DIR, help="output folder (default: data/models)")
    build.add_argument("--threads", type=int, default=2)
    build.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                       help="change one PretrainSpec field of the --only model(s), e.g. --set mrope=spatial, or one field "
                            "of its size, e.g. --set size.layers=5 (an experiment: pair it with --out, since the "
                            "shipped manifest records SPECS as written)")
    build.set_defaults(func=_cmd_build)
    show = sub.add_parser("list", help="list the shipped tiny models and their measured skill")
    show.add_argument("--out", type=Path, default=MODELS_DIR)
    show.set_defaults(func=_cmd_list)
    return sub


def _cmd_build(args) -> int:
    from kit.core.profile import load_profile
    from kit.tiny.world import WorldConfig, build_world

    profile = load_profile(args.profile)
    root = Path(profile.resolve_path(profile.get("world.root")))
    build_world(root, WorldConfig.from_profile(profile.get("world")))
    specs = with_overrides(SPECS, args.only, args.overrides)
    if args.overrides and Path(args.out).resolve() == MODELS_DIR.resolve():
        raise KitError("kit models build --set: write the experiment elsewhere with --out; data/models holds the "
                       "models SPECS describes")
    build_models(args.only, root, args.out, threads=args.threads, specs=specs)
    return 0


def with_overrides(specs: dict[str, PretrainSpec], names: list[str] | None,
                   overrides: list[str]) -> dict[str, PretrainSpec]:
    """``specs`` with ``FIELD=VALUE`` changes applied to the named models (each value parsed as its field's type);
    ``size.FIELD=VALUE`` changes one field of the model's ``TinySize`` (``size.layers=5``)."""
    if not overrides:
        return specs
    if not names:
        raise KitError("kit models build --set changes the models named by --only; name at least one")
    from kit.tiny.models import TinySize

    # The model's identity and its tuple-valued fields are not one value on a command line.
    types = {f.name: str(f.type) for f in fields(PretrainSpec)
             if f.name not in ("name", "family", "size", "corpus", "style_weights")}
    types.update({f"size.{f.name}": str(f.type) for f in fields(TinySize)})
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise KitError(f"kit models build --set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(types)}")
        kind = types[key]
        try:
            changes[key] = (int(value) if kind == "int" else float(value) if kind == "float"
                            else None if value in ("", "None") and "None" in kind else value)
        except ValueError as error:
            raise KitError(f"kit models build --set {item!r}: {key} takes a number of type {kind}") from error
    size = {key.removeprefix("size."): changes.pop(key) for key in list(changes) if key.startswith("size.")}

    def changed(spec: PretrainSpec) -> PretrainSpec:
        return replace(spec, **changes, **({"size": replace(spec.size, **size)} if size else {}))

    return {name: changed(spec) if name in names else spec for name, spec in specs.items()}


def _cmd_list(args) -> int:
    manifest_path = Path(args.out) / MANIFEST_NAME
    if not manifest_path.is_file():
        raise KitError(f"{manifest_path} is missing; run `kit models build`")
    for name, entry in json.loads(manifest_path.read_text())["models"].items():
        report = entry["report"]
        print(f"{name:24s} {report['parameters']:>9,d} params  {report['seconds']:>7.1f} s  {report['accuracy']}")
    return 0
