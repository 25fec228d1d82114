"""Writers for each dataset family of the tiny world, each in its real dataset's on-disk layout.

Every writer takes the build ``Context`` (the folder being built, the image size and the register of
written images) and its own ``random.Random``; it returns the number of records it wrote. Evaluation
families draw scenes from the evaluation quarter of scene space, training families from the rest
(see ``scenes.scene_split``), and training families also refuse any scene hash an evaluation family
used, so that no picture is ever both trained on and evaluated.

Layouts (relative to the world root; extras beyond the real schema are listed per family):

* ``mathv360k/train_samples_all_tuning.json`` + ``images/``: MathV360K's LLaVA-style records; extras
  question, answer, choices, answer_type, precision, solution (gold steps), template, scene_kind.
* ``mathvista/testmini.json`` + ``images/``: pid -> problem as in MathVista; extras query (the
  official zero-shot query: hint, question, choices) and solution (gold steps).
* ``mathvision/test.jsonl``, ``testmini.jsonl`` + ``images/``: MATH-Vision records (no extras); the
  gold steps are the ``solution`` string. Here test and testmini are disjoint.
* ``wemath/testmini.json`` + ``<n>steps/image/``: We-Math rows (no extras).
* ``hallusionbench/HallusionBench.json`` + ``hallusion_bench/<VD|VS>/<subcategory>/<set>_<figure>.png``
  (``filename`` is relative to ``hallusion_bench/``, as in the official release; no extras).
* ``mme/<subtask>/<name>.png`` + ``<name>.txt`` (``question<TAB>Yes|No``, Yes first): the official
  flat layout of these six subtasks.
* ``eaco_images/images/`` + ``instructions.json``; ``vlfeedback/data.jsonl`` + ``images/``;
  ``instructions/llava_instruct.json`` + ``images/``.
* ``pope/``, ``seed/``, ``scienceqa/``, ``amber/``: the rest of EACO's benchmarks, written by
  ``kit.tiny.world.eaco_families`` (layouts there).
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.casseat.mathv360k import choices_block
from kit.llm.prompts import DESCRIPTION_INSTRUCTIONS, HALLUCINATION_INSTRUCTIONS, STIC_SOURCE
from kit.tiny.world.questions import (
    COMPOSITE_KINDS,
    CONCEPT_DESCRIPTIONS,
    TEMPLATES,
    Probe,
    Question,
    ask,
    ask_any,
    ask_composite,
    ask_rule,
    composite_scene_kind,
    probes_for,
    templates_for,
)
from kit.tiny.world.scenes import (
    BAR_LABELS,
    COLOR_NAMES,
    CORNERS,
    GRID,
    QUADRANTS,
    SCENE_KINDS,
    SHAPES,
    SIZES,
    Scene,
    Shape,
    bar_phrases,
    describe,
    describe_parts,
    edit_kind,
    edit_scene,
    join_phrases,
    render,
    sample_scene,
    scene_hash,
    scene_split,
    shape_phrases,
)

# The EACO benchmark families (pope ... amber) come last and have their own generators, so that adding
# them left every earlier family's files byte-identical (the shipped tiny models were trained on those).
EVAL_FAMILIES = ("mathvista", "mathvision", "wemath", "hallusionbench", "mme", "pope", "seed", "scienceqa", "amber")
EACO_FAMILIES = ("pope", "seed", "scienceqa", "amber")
TRAIN_FAMILIES = ("mathv360k", "eaco_images", "vlfeedback", "instructions")
FAMILIES = EVAL_FAMILIES + TRAIN_FAMILIES

MME_SUBTASKS = ("existence", "count", "position", "color", "numerical_calculation", "commonsense_reasoning")
MME_SUFFIX = " Please answer yes or no."
WEMATH_THREE_STEP_SHARE = (165, 525)  # 3-step problems among We-Math testmini's 525 composite problems
POOL_QUESTIONS_PER_IMAGE = 3  # MathV360K asks several questions of each image
VLF_MODELS = tuple(f"tiny-lvlm-{c}" for c in "abcdef")


@dataclass
class Context:
    """One build: the (temporary) world folder, the image size and every image written so far."""

    root: Path
    image_size: int
    scenes: dict[str, Scene] = field(default_factory=dict)

    def save_image(self, relpath: str, scene: Scene) -> None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        render(scene, self.image_size).save(path, format="PNG")
        self.scenes[relpath] = scene

    def write_json(self, relpath: str, obj: Any) -> None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def write_jsonl(self, relpath: str, rows: list[dict[str, Any]]) -> None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


class SceneSource:
    """Fresh scenes of one split for one family: never the same scene twice within the family, and for
    training families never a scene an evaluation family used."""

    def __init__(self, rng: random.Random, split: str, reject: set[str] | None = None) -> None:
        self.rng = rng
        self.split = split
        self.reject = reject if reject is not None else set()
        self.seen: set[str] = set()

    def accept(self, scene: Scene) -> bool:
        digest = scene_hash(scene)
        if scene_split(scene) != self.split or digest in self.seen or digest in self.reject:
            return False
        self.seen.add(digest)
        return True

    def draw(self, kind: str | None = None) -> Scene:
        kind = kind or self.rng.choice(SCENE_KINDS)
        while True:
            scene = sample_scene(self.rng, kind)
            if self.accept(scene):
                return scene


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def mathvista_query(problem: dict[str, Any]) -> str:
    """The zero-shot query of the official MathVista release (``query`` in AI4Math/MathVista): the hint
    for the answer type, the question (with its unit) and the choices, as lupantech/MathVista's
    evaluation/build_query.py assembles them."""
    if problem["question_type"] == "multi_choice":
        hint = "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
    elif problem["answer_type"] == "integer":
        hint = (
            "Hint: Please answer the question requiring an integer answer and provide the final value, "
            "e.g., 1, 2, 3, at the end."
        )
    elif problem["answer_type"] == "float" and problem["precision"] == 1:
        hint = (
            "Hint: Please answer the question requiring a floating-point number with one decimal place and "
            "provide the final value, e.g., 1.2, 1.3, 1.4, at the end."
        )
    elif problem["answer_type"] == "float" and problem["precision"] == 2:
        hint = (
            "Hint: Please answer the question requiring a floating-point number with two decimal places and "
            "provide the final value, e.g., 1.23, 1.34, 1.45, at the end."
        )
    else:
        hint = (
            "Hint: Please answer the question requiring a Python list as an answer and provide the final list, "
            "e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end."
        )
    question = f"Question: {problem['question']}"
    if problem["unit"]:
        question += f" (Unit: {problem['unit']})"
    parts = [hint, question] + ([choices_block(problem["choices"])] if problem["choices"] else [])
    return "\n".join(parts)


# -- MathVista ------------------------------------------------------------------------------------
def write_mathvista(ctx: Context, rng: random.Random, n: int, templates: list[str] | None = None) -> int:
    """MathVista testmini: ``n`` problems, each about a fresh evaluation-side scene. ``templates``: problem i asks
    ``templates[i % len(templates)]``, about the first fresh scene it applies to (``kit models diagnose
    --per-template``); None: any template the scene carries (the world's own testmini)."""
    source = SceneSource(rng, "eval")
    problems: dict[str, dict[str, Any]] = {}
    for i in range(1, n + 1):
        pid = str(i)
        if templates is None:
            scene = source.draw()
            q = ask_any(scene, rng)
        else:
            name = templates[(i - 1) % len(templates)]
            q = None
            while q is None:
                scene = source.draw(TEMPLATES[name].kind)
                q = ask(name, scene, rng)
        image = f"images/{pid}.png"
        ctx.save_image(f"mathvista/{image}", scene)
        problem = {
            "question": q.question,
            "image": image,
            "choices": q.choices,
            "unit": None,
            "precision": q.precision,
            "answer": q.answer,
            "question_type": q.question_type,
            "answer_type": q.answer_type,
            "pid": pid,
            "metadata": {
                "split": "testmini",
                "language": "english",
                "img_width": ctx.image_size,
                "img_height": ctx.image_size,
                "source": "tiny-world",
                "category": q.category,
                "task": q.task,
                "context": "synthetic scene" if scene.kind == "shapes" else "bar chart",
                "grade": "elementary school" if q.category == "math-targeted-vqa" else "not applicable",
                "skills": list(q.skills),
            },
        }
        problem["query"] = mathvista_query(problem)
        problem["solution"] = list(q.steps)
        problems[pid] = problem
    ctx.write_json("mathvista/testmini.json", problems)
    return len(problems)


# -- MATH-Vision ----------------------------------------------------------------------------------
def _mathvision_rows(
    ctx: Context, source: SceneSource, rng: random.Random, ids: range
) -> list[dict[str, Any]]:
    rows = []
    for i in ids:
        scene = source.draw()
        q = ask_any(scene, rng, templates_for(scene.kind, yes_no=False))
        image = f"images/{i}.png"
        ctx.save_image(f"mathvision/{image}", scene)
        steps = list(q.steps)
        if q.choices:
            answer = _letters(len(q.choices))[q.choices.index(q.answer)]
            steps[-1] = f"The answer is {answer}."
        else:
            answer = q.answer
        rows.append(
            {
                "id": str(i),
                "question": f"{q.question}\n<image1>",
                "options": list(q.choices or []),
                "answer": answer,
                "solution": "\n".join(steps),
                "level": min(5, max(1, q.n_steps)),
                "subject": q.subject,
                "image": image,
            }
        )
    return rows


def write_mathvision(
    ctx: Context, rng_test: random.Random, rng_mini: random.Random, n_test: int, n_mini: int
) -> int:
    test_source = SceneSource(rng_test, "eval")
    test = _mathvision_rows(ctx, test_source, rng_test, range(1, n_test + 1))
    # testmini refuses test's scenes so that the two splits are disjoint.
    mini_source = SceneSource(rng_mini, "eval", reject=set(test_source.seen))
    mini = _mathvision_rows(ctx, mini_source, rng_mini, range(n_test + 1, n_test + n_mini + 1))
    ctx.write_jsonl("mathvision/test.jsonl", test)
    ctx.write_jsonl("mathvision/testmini.jsonl", mini)
    return len(test) + len(mini)


# -- We-Math --------------------------------------------------------------------------------------
def wemath_option(choices: list[str]) -> str:
    """We-Math's option string: 'A. 3; B. 4; C. 2; D. 5; E. No correct answer'."""
    return "; ".join(f"{letter}. {c}" for letter, c in zip(_letters(len(choices)), choices, strict=True)) + (
        "; E. No correct answer"
    )


def write_wemath(ctx: Context, rng: random.Random, n: int) -> int:
    three = round(n * WEMATH_THREE_STEP_SHARE[0] / WEMATH_THREE_STEP_SHARE[1])
    plan = [(2, k) for k in range(1, n - three + 1)] + [(3, k) for k in range(1, three + 1)]
    source = SceneSource(rng, "eval")
    # key -> rows, in the fixture's file order: all first sub-problems, then all second ones, ...
    groups: dict[str, list[dict[str, Any]]] = {}
    for steps, k in plan:
        name = rng.choice(COMPOSITE_KINDS[steps])
        while True:
            scene = source.draw(composite_scene_kind(name))
            composite = ask_composite(scene, rng, name)
            if composite is not None:
                break
        problem_id = f"{steps}steps_{k}"
        parts = [
            (str(j), q, [c])
            for j, (q, c) in enumerate(zip(composite.subs, composite.concepts, strict=True), 1)
        ]
        parts.append(("multi", composite.composite, composite.concepts))
        for suffix, q, concepts in parts:
            image_path = f"{steps}steps/image/{k}-{suffix}.png"
            ctx.save_image(f"wemath/{image_path}", scene)
            assert q.choices is not None
            key = f"{steps}steps_{suffix}"
            groups.setdefault(key, []).append(
                {
                    "ID": problem_id,
                    "split": "testmini",
                    "knowledge concept": ";".join(concepts),
                    "question": q.question,
                    "option": wemath_option(q.choices),
                    "answer": _letters(len(q.choices))[q.choices.index(q.answer)],
                    "image_path": image_path,
                    "key": key,
                    "question number": 0,  # numbered below, in file order
                    "knowledge concept description": "\n".join(CONCEPT_DESCRIPTIONS[c] for c in concepts),
                }
            )
    order = sorted(groups, key=lambda key: (key.split("_")[0], key.split("_")[1] == "multi", key))
    rows = [row for key in order for row in groups[key]]
    for number, row in enumerate(rows, 1):
        row["question number"] = number
    ctx.write_json("wemath/testmini.json", rows)
    return len(rows)


# -- HallusionBench -------------------------------------------------------------------------------
def _hallusion_row(
    category: str,
    subcategory: str,
    set_id: int,
    figure_id: int,
    visual_input: str,
    note: str,
    question_id: int,
    question: str,
    truth: bool,
    details: str,
    filename: str | None,
) -> dict[str, Any]:
    return {
        "category": category,
        "subcategory": subcategory,
        "visual_input": visual_input,
        "set_id": str(set_id),
        "figure_id": str(figure_id),
        "sample_note": note,
        "question_id": str(question_id),
        "question": question,
        "gt_answer_details": details,
        "gt_answer": "1" if truth else "0",
        "filename": filename,
    }


def _visual_supplement_set(ctx: Context, source: SceneSource, rng: random.Random, set_id: int) -> list[dict[str, Any]]:
    """A visual-supplement set: figure 0 has no image and is answered from the world's rules (corners),
    figure 1 agrees with the rules, figure 2 is edited so that the image contradicts what the rules
    alone would suggest about the named shape."""
    while True:
        scene = source.draw("shapes")
        colours = [o.color for o in scene.objects]
        targets = [
            o for o in scene.objects if o.shape in ("triangle", "square") and colours.count(o.color) == 1
        ]
        if not targets:
            continue
        target = rng.choice(targets)
        other = "square" if target.shape == "triangle" else "triangle"
        objects = [dataclasses.replace(o, shape=other) if o == target else o for o in scene.objects]
        edited = Scene("shapes", objects=tuple(objects))
        if source.accept(edited):
            break
    paths = {}
    for figure, shown in ((1, scene), (2, edited)):
        paths[figure] = f"./VS/figure/{set_id}_{figure}.png"
        ctx.save_image(f"hallusionbench/hallusion_bench/{paths[figure][2:]}", shown)
    first, second = target.shape, other
    rows = []
    for figure, shown in ((0, None), (1, scene), (2, edited)):
        for qid, claimed in enumerate((CORNERS[first], CORNERS[second])):
            if shown is None:
                text = f"Does a {first} have {claimed} corners?"
                truth = claimed == CORNERS[first]
                details = f"A {first} has {CORNERS[first]} corners."
            else:
                actual = shown.select(color=target.color)[0].shape
                text = f"According to the image, does the {target.color} shape have {claimed} corners?"
                truth = claimed == CORNERS[actual]
                details = f"The {target.color} shape is a {actual}, which has {CORNERS[actual]} corners."
            rows.append(
                _hallusion_row(
                    "VS",
                    "figure",
                    set_id,
                    figure,
                    str(figure),
                    "corners",
                    qid,
                    text,
                    truth,
                    details,
                    paths.get(figure),
                )
            )
    return rows


def _visual_dependent_set(
    ctx: Context, source: SceneSource, rng: random.Random, set_id: int, kind: str
) -> list[dict[str, Any]]:
    """A visual-dependent set: an original figure and a minimally edited one, asked the same yes/no
    questions; at least one answer flips between the two figures."""
    subcategory = "figure" if kind == "shapes" else "chart"
    while True:
        scene = source.draw(kind)
        edited = edit_scene(scene, rng)
        if not source.accept(edited):
            continue
        candidates = list(dict.fromkeys(probes_for(scene) + probes_for(edited)))
        flips = [p for p in candidates if p.truth(scene) != p.truth(edited)]
        keeps = [p for p in candidates if p.truth(scene) == p.truth(edited)]
        if flips:
            break
    n_flip = min(len(flips), rng.choice((1, 2)))
    chosen: list[Probe] = rng.sample(flips, n_flip) + rng.sample(keeps, min(len(keeps), 3 - n_flip))
    rng.shuffle(chosen)
    note = edit_kind(scene, edited)
    rows = []
    for figure, shown in ((0, scene), (1, edited)):
        filename = f"./VD/{subcategory}/{set_id}_{figure}.png"
        ctx.save_image(f"hallusionbench/hallusion_bench/{filename[2:]}", shown)
        for qid, probe in enumerate(chosen):
            rows.append(
                _hallusion_row(
                    "VD",
                    subcategory,
                    set_id,
                    figure,
                    str(figure + 1),
                    note,
                    qid,
                    probe.text(),
                    probe.truth(shown),
                    probe.statement(shown),
                    filename,
                )
            )
    return rows


def write_hallusionbench(ctx: Context, rng: random.Random, n: int) -> int:
    source = SceneSource(rng, "eval")
    n_vs = n // 5
    rows: list[dict[str, Any]] = []
    for set_id in range(n_vs):
        rows += _visual_supplement_set(ctx, source, rng, set_id)
    counters = {"shapes": 0, "bars": 0}
    for i in range(n - n_vs):
        kind = SCENE_KINDS[i % 2]
        rows += _visual_dependent_set(ctx, source, rng, counters[kind], kind)
        counters[kind] += 1
    ctx.write_json("hallusionbench/HallusionBench.json", rows)
    return len(rows)


# -- MME ------------------------------------------------------------------------------------------
def _there_are(n: int, what: str) -> str:
    return f"Is there exactly 1 {what}" if n == 1 else f"Are there exactly {n} {what}s"


def _mme_pair(subtask: str, source: SceneSource, rng: random.Random) -> tuple[Scene, str, str] | None:
    """(scene, question whose answer is Yes, question whose answer is No), or None to draw again."""
    if subtask == "existence":
        scene = source.draw("shapes")
        present = sorted({(o.color, o.shape) for o in scene.objects})
        absent = [(c, s) for c in COLOR_NAMES for s in SHAPES if (c, s) not in present]
        yes, no = rng.choice(present), rng.choice(absent)
        return (
            scene,
            f"Is there a {yes[0]} {yes[1]} in this image?",
            f"Is there a {no[0]} {no[1]} in this image?",
        )
    if subtask == "count":
        scene = source.draw("shapes")
        if rng.random() < 0.5:
            color = rng.choice(sorted({o.color for o in scene.objects}))
            n = scene.count(color=color)
            wrong = n + 1 if n == 1 else n + rng.choice((-1, 1))
            what = f"{color} shape"
        else:
            n = len(scene.objects)
            wrong = n + rng.choice((-1, 1)) if 2 < n < 6 else (3 if n == 2 else 5)
            what = "shape"
        return scene, f"{_there_are(n, what)} in this image?", f"{_there_are(wrong, what)} in this image?"
    if subtask == "position":
        scene = source.draw("shapes")
        pairs = [(o.color, o.shape) for o in scene.objects]
        unique = [o for o in scene.objects if pairs.count((o.color, o.shape)) == 1]
        if not unique:
            return None
        obj = rng.choice(unique)
        wrong = rng.choice([q for q in QUADRANTS if q != obj.quadrant])
        text = f"Is the {obj.color} {obj.shape} in the {{}} of this image?"
        return scene, text.format(obj.quadrant), text.format(wrong)
    if subtask == "color":
        if rng.random() < 0.5:
            scene = source.draw("bars")
            bar = rng.choice(scene.bars)
            wrong = rng.choice([c for c in COLOR_NAMES if c != bar.color])
            return scene, f"Is bar {bar.label} {bar.color}?", f"Is bar {bar.label} {wrong}?"
        scene = source.draw("shapes")
        lonely = [o for o in scene.objects if scene.count(shape=o.shape) == 1]
        if not lonely:
            return None
        obj = rng.choice(lonely)
        wrong = rng.choice([c for c in COLOR_NAMES if c != obj.color])
        return (
            scene,
            f"Is the {obj.shape} in this image {obj.color}?",
            f"Is the {obj.shape} in this image {wrong}?",
        )
    if subtask == "numerical_calculation":
        scene = source.draw("bars")
        x, y = sorted(rng.sample(BAR_LABELS, 2))
        total = scene.bar(x).height + scene.bar(y).height
        wrong = total + rng.choice((-2, -1, 1, 2))
        text = f"Is the height of bar {x} plus the height of bar {y} equal to {{}}?"
        return scene, text.format(total), text.format(wrong)
    if subtask == "commonsense_reasoning":
        scene = source.draw("shapes")
        if rng.random() < 0.5:
            total = sum(CORNERS[o.shape] for o in scene.objects)
            wrong = total + rng.choice((-1, 1)) if total > 0 else 3
            text = "Do the shapes in this image have {} corners in total?"
            return scene, text.format(total), text.format(wrong)
        colours = [o.color for o in scene.objects]
        lonely = [o for o in scene.objects if colours.count(o.color) == 1]
        if not lonely:
            return None
        obj = rng.choice(lonely)
        wrong = rng.choice([k for k in (0, 3, 4) if k != CORNERS[obj.shape]])
        text = f"Does the {obj.color} shape in this image have {{}} corners?"
        return scene, text.format(CORNERS[obj.shape]), text.format(wrong)
    raise ValueError(f"unknown MME subtask {subtask!r}")


def write_mme(ctx: Context, rng: random.Random, n_per_subtask: int) -> int:
    source = SceneSource(rng, "eval")
    written = 0
    for subtask in MME_SUBTASKS:
        for i in range(1, n_per_subtask + 1):
            pair = None
            while pair is None:
                pair = _mme_pair(subtask, source, rng)
            scene, yes, no = pair
            name = f"{i:04d}"
            ctx.save_image(f"mme/{subtask}/{name}.png", scene)
            text = f"{yes}{MME_SUFFIX}\tYes\n{no}{MME_SUFFIX}\tNo\n"
            (ctx.root / f"mme/{subtask}/{name}.txt").write_text(text, encoding="utf-8")
            written += 2
    return written


# -- training families ----------------------------------------------------------------------------
def human_turn(q: Question) -> str:
    """The question as a MathV360K/LLaVA human turn: '<image>\\n' + question (+ MathVista choices)."""
    text = q.question if not q.choices else f"{q.question}\n{choices_block(q.choices)}"
    return f"<image>\n{text}"


def write_mathv360k(ctx: Context, rng: random.Random, n: int, reject: set[str]) -> int:
    source = SceneSource(rng, "train", reject)
    records: list[dict[str, Any]] = []
    image_index = 0
    while len(records) < n:
        scene = source.draw()
        image = f"images/{image_index}.png"
        ctx.save_image(f"mathv360k/{image}", scene)
        image_index += 1
        names = templates_for(scene.kind)
        rng.shuffle(names)
        asked = 0
        for name in names:
            if asked == POOL_QUESTIONS_PER_IMAGE or len(records) == n:
                break
            q = ask(name, scene, rng)
            if q is None:
                continue
            asked += 1
            records.append(
                {
                    "id": f"tiny_{len(records)}",
                    "image": image,
                    "conversations": [
                        {"from": "human", "value": human_turn(q)},
                        {"from": "gpt", "value": q.answer},
                    ],
                    "question": q.question,
                    "answer": q.answer,
                    "choices": q.choices,
                    "answer_type": q.answer_type,
                    "precision": q.precision,
                    "solution": list(q.steps),
                    "template": q.template,
                    "scene_kind": scene.kind,
                }
            )
    ctx.write_json("mathv360k/train_samples_all_tuning.json", records)
    return len(records)


def write_eaco_images(ctx: Context, rng: random.Random, n: int, reject: set[str]) -> int:
    source = SceneSource(rng, "train", reject)
    for i in range(n):
        ctx.save_image(f"eaco_images/images/{i}.png", source.draw())
    ctx.write_json(
        "eaco_images/instructions.json",
        {
            "source": STIC_SOURCE,
            "instructions": DESCRIPTION_INSTRUCTIONS,
            "hallucination_instructions": HALLUCINATION_INSTRUCTIONS,
        },
    )
    return n


@dataclass
class Corruption:
    kind: str
    response: str
    false_claims: int
    omitted: int
    problem: str


def _corrupt(scene: Scene, kind: str, rng: random.Random) -> Corruption:
    """A description with one kind of defect, and what exactly is wrong with it (for the rationale)."""
    if scene.kind == "shapes":
        objects = list(scene.objects)
        if kind == "wrong_number":
            wrong = len(objects) + rng.choice((-1, 1))
            text = describe_parts(shape_phrases(objects), "shape", count=wrong)
            return Corruption(
                kind, text, 1, 0, f"it says there are {wrong} shapes, but the image shows {len(objects)}"
            )
        if kind == "hallucination":
            used = {o.cell for o in objects}
            cell = rng.choice([c for c in range(GRID * GRID) if c not in used])
            ghost = Shape(
                rng.choice(SHAPES), rng.choice(COLOR_NAMES), rng.choice(SIZES), cell // GRID, cell % GRID
            )
            text = describe_parts(shape_phrases(objects + [ghost]), "shape")
            return Corruption(
                kind,
                text,
                2,
                0,
                f"it mentions a {ghost.phrase()} in the {ghost.quadrant}, which is not "
                f"in the image, and so miscounts the shapes",
            )
        if kind == "wrong_color":
            index = rng.randrange(len(objects))
            old = objects[index]
            objects[index] = dataclasses.replace(
                old, color=rng.choice([c for c in COLOR_NAMES if c != old.color])
            )
            text = describe_parts(shape_phrases(objects), "shape")
            return Corruption(
                kind,
                text,
                1,
                0,
                f"it calls the {old.color} {old.shape} in the {old.quadrant} {objects[index].color}",
            )
        keep = rng.randint(1, len(objects) - 1)
        text = f"The picture shows {join_phrases(shape_phrases(objects[:keep]))}."
        missing = len(objects) - keep
        return Corruption(kind, text, 0, missing, f"it leaves out {missing} of the {len(objects)} shapes")
    bars = [(b.label, b.color, b.height) for b in scene.bars]
    if kind == "wrong_number":
        index = rng.randrange(len(bars))
        label, color, height = bars[index]
        wrong = rng.choice([h for h in range(1, 8) if h != height])
        bars[index] = (label, color, wrong)
        return Corruption(
            kind,
            describe_parts(bar_phrases(bars), "bar"),
            1,
            0,
            f"it gives bar {label} height {wrong}, but its height is {height}",
        )
    if kind == "hallucination":
        ghost = ("E", rng.choice(COLOR_NAMES), rng.randint(1, 7))
        return Corruption(
            kind,
            describe_parts(bar_phrases(bars + [ghost]), "bar"),
            2,
            0,
            "it mentions a bar E, but the chart has only bars A to D",
        )
    if kind == "wrong_color":
        index = rng.randrange(len(bars))
        label, color, height = bars[index]
        wrong = rng.choice([c for c in COLOR_NAMES if c != color])
        bars[index] = (label, wrong, height)
        return Corruption(
            kind,
            describe_parts(bar_phrases(bars), "bar"),
            1,
            0,
            f"it calls bar {label} {wrong}, but bar {label} is {color}",
        )
    keep = rng.randint(1, len(bars) - 1)
    return Corruption(
        kind,
        f"The chart shows {join_phrases(bar_phrases(bars[:keep]))}.",
        0,
        len(bars) - keep,
        f"it leaves out {len(bars) - keep} of the 4 bars",
    )


CORRUPTIONS = ("wrong_number", "hallucination", "wrong_color", "incomplete")


def _annotations(c: Corruption | None) -> dict[str, dict[str, str]]:
    """VLFeedback's three aspects, rated 1-5 (as strings) from the scene's ground truth."""
    if c is None:
        helpful = (
            "5",
            "The response describes every object in the image with its colour, size and position.",
        )
        faithful = ("5", "Everything the response states matches the image.")
    else:
        h = max(1, 5 - c.false_claims - 2 * (c.omitted > 0))
        f = max(1, 5 - 2 * c.false_claims - (c.omitted > 0))
        helpful = (str(h), f"The response is less useful because {c.problem}.")
        if c.false_claims:
            faithful = (str(f), f"The response is not faithful to the image: {c.problem}.")
        else:
            faithful = (str(f), f"What the response states is true, but {c.problem}.")
    return {
        "Helpfulness": {"Rating": helpful[0], "Rationale": helpful[1]},
        "Ethical Considerations": {
            "Rating": "5",
            "Rationale": "The response describes simple shapes and bars and "
            "contains nothing harmful or biased.",
        },
        "Visual Faithfulness": {"Rating": faithful[0], "Rationale": faithful[1]},
    }


def write_vlfeedback(ctx: Context, rng: random.Random, n: int, reject: set[str]) -> int:
    source = SceneSource(rng, "train", reject)
    rows = []
    for i in range(n):
        scene = source.draw()
        image = f"images/{i}.png"
        ctx.save_image(f"vlfeedback/{image}", scene)
        corruptions: list[Corruption | None] = [None] + [
            _corrupt(scene, k, rng) for k in rng.sample(CORRUPTIONS, 3)
        ]
        rng.shuffle(corruptions)
        models = rng.sample(VLF_MODELS, len(corruptions))
        completions = [
            {
                "annotations": _annotations(c),
                "model": model,
                "response": describe(scene) if c is None else c.response,
            }
            for c, model in zip(corruptions, models, strict=True)
        ]
        rows.append(
            {
                "id": f"tiny-vlf-{i}",
                "prompt": rng.choice(DESCRIPTION_INSTRUCTIONS),
                "models": models,
                "completions": completions,
                "img_path": image,
            }
        )
    ctx.write_jsonl("vlfeedback/data.jsonl", rows)
    return len(rows)


def write_instructions(ctx: Context, rng: random.Random, n: int, reject: set[str]) -> int:
    source = SceneSource(rng, "train", reject)
    records = []
    for i in range(n):
        scene = source.draw()
        image = f"images/{i}.png"
        ctx.save_image(f"instructions/{image}", scene)
        conversations = [
            {"from": "human", "value": f"<image>\n{rng.choice(DESCRIPTION_INSTRUCTIONS)}"},
            {"from": "gpt", "value": describe(scene)},
        ]
        asked: set[str] = set()
        for _ in range(2):
            q = ask_any(scene, rng, [t for t in templates_for(scene.kind) if t not in asked])
            asked.add(q.template)
            conversations += [
                {"from": "human", "value": human_turn(q)[len("<image>\n") :]},
                {"from": "gpt", "value": "\n".join(q.steps)},
            ]
        if rng.random() < 0.3:
            rule = ask_rule(rng)
            conversations += [
                {"from": "human", "value": rule.question},
                {"from": "gpt", "value": "\n".join(rule.steps)},
            ]
        records.append({"id": f"tiny-instruct-{i}", "image": image, "conversations": conversations})
    ctx.write_json("instructions/llava_instruct.json", records)
    return len(records)
