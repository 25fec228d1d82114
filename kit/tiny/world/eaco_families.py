"""Tiny-world analogues of the rest of EACO's benchmark radar: POPE, SEED-Bench, ScienceQA-IMG and AMBER,
each written in the real dataset's on-disk layout so that ``kit.eval.benchmarks.<name>.load`` reads them
unchanged. Like every evaluation family they draw scenes from the evaluation quarter of scene space
(``SceneSource(rng, "eval")``) with their own generator (``family_rng(seed, family)``), so adding them
changed no other family's files.

Layouts (relative to the world root):

* ``pope/coco/coco_pope_<random|popular|adversarial>.json`` + ``pope/val2014/``: POPE's JSON-lines label
  files ``{"question_id", "image", "image_id", "text", "label"}``. One set of images serves the three
  splits, as in POPE; the "objects" are the twelve colour-shape categories ("red circle"), and each
  image gets its first three objects as yes-questions and three absent ones as no-questions, drawn by
  AoiDragon/POPE ``utils.py`` ``pope``'s three negative strategies (random; the most frequent objects
  overall; the objects that co-occur most with the positive one).
* ``seed/SEED-Bench.json`` + ``seed/SEED-Bench-image/``: ``{"questions": [...], "question_type": {...}}``
  with four-option image questions in SEED-Bench dimensions 1-6 and 8 (scene, identity, attributes,
  location, counting, spatial relation, visual reasoning); the tiny world has no text (9) and no
  interaction (7).
* ``scienceqa/problems.json``, ``scienceqa/pid_splits.json`` + ``scienceqa/images/test/<pid>/image.png``:
  test problems only (the other splits are empty lists); most have an image (natural science: shapes,
  social science: bar charts), a fifth are text-only language problems (alphabetical order) that the
  ScienceQA-IMG loader leaves out, as the real loader does.
* ``amber/data/annotations.json``, ``amber/data/query/query_<split>.json``, ``amber/data/relation.json``,
  ``amber/data/safe_words.txt``, ``amber/data/metrics.txt`` + ``amber/image/AMBER_<n>.png``: a
  generative query per image (truth: the shape types present; hallu: the absent ones and "bar") and
  discriminative questions in AMBER's id blocks (attribute state/number, existence of the hallu
  objects, relation "next to"). The association and safe-word files use AMBER's schema over the tiny
  vocabulary (circle, square, triangle, bar, shape), whose nouns have regular plurals: the documented
  vocabulary noun extractor reads them without nltk data.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from kit.tiny.world.families import Context, SceneSource
from kit.tiny.world.questions import TEMPLATES, ask
from kit.tiny.world.scenes import BAR_LABELS, COLOR_NAMES, QUADRANTS, SHAPES, Scene, Shape

FAMILIES = ("pope", "seed", "scienceqa", "amber")

# -- POPE -----------------------------------------------------------------------------------------
POPE_SPLITS = ("random", "popular", "adversarial")
POPE_TEMPLATE = "Is there a {} in the image?"  # POPE main.py --template default
POPE_SAMPLES = 3  # POPE main.py --sample_num default: positive (and negative) objects per image


def _pope_objects(scene: Scene, rng: random.Random) -> list[str]:
    names = sorted({f"{o.color} {o.shape}" for o in scene.objects})
    rng.shuffle(names)
    return names


def _sorted_co_occurrence(images: list[list[str]]) -> dict[str, list[str]]:
    """POPE utils.py ``compute_co_occurrence``: per object, the others by co-occurrence count (ties by name,
    for a deterministic order)."""
    co: dict[str, Counter] = {}
    for objects in images:
        for o in objects:
            co.setdefault(o, Counter())
            for other in objects:
                if other != o:
                    co[o][other] += 1
    return {o: [k for k, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))] for o, c in co.items()}


def _pope_negative(strategy: str, positive: str, objects: list[str], history: list[str], everything: list[str],
                   popular: list[str], co_occur: dict[str, list[str]], rng: random.Random) -> str:
    """One absent object by POPE utils.py ``pope``'s strategy for ``strategy``."""
    ranked = {"popular": popular, "adversarial": co_occur.get(positive, [])}.get(strategy, [])
    for candidate in ranked:
        if candidate not in history and candidate not in objects:
            return candidate
    while True:  # random, and the fallback of the other two
        candidate = rng.choice(everything)
        if candidate not in history and candidate not in objects:
            return candidate


def write_pope(ctx: Context, rng: random.Random, n_images: int) -> int:
    source = SceneSource(rng, "eval")
    images: list[tuple[str, int, list[str]]] = []
    for i in range(1, n_images + 1):
        while True:
            scene = source.draw("shapes")
            objects = _pope_objects(scene, rng)
            if len(objects) >= POPE_SAMPLES:
                break
        name = f"tiny_pope_{i:06d}.png"
        ctx.save_image(f"pope/val2014/{name}", scene)
        images.append((name, i, objects))
    counts = Counter(o for _, _, objects in images for o in objects)
    everything = list(counts)  # gt_objects_list: every object that occurs, in first-seen order
    popular = [o for o, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    co_occur = _sorted_co_occurrence([objects for _, _, objects in images])
    written = 0
    for strategy in POPE_SPLITS:
        lines: list[dict[str, Any]] = []
        for name, image_id, objects in images:
            history: list[str] = []
            positives, negatives = [], []
            for positive in objects[:POPE_SAMPLES]:
                history.append(positive)
                positives.append(positive)
                negative = _pope_negative(strategy, positive, objects, history, everything, popular, co_occur, rng)
                history.append(negative)
                negatives.append(negative)
            # The released files list an image's three yes-questions, then its three no-questions.
            for obj, label in [(p, "yes") for p in positives] + [(n, "no") for n in negatives]:
                lines.append({"question_id": len(lines) + 1, "image": name, "image_id": image_id,
                              "text": POPE_TEMPLATE.format(obj), "label": label})
        ctx.write_jsonl(f"pope/coco/coco_pope_{strategy}.json", lines)
        written += len(lines)
    return written


# -- SEED-Bench -----------------------------------------------------------------------------------
SEED_QUESTION_TYPES = {
    "Scene Understanding": 1, "Instance Identity": 2, "Instance Attributes": 3, "Instance Location": 4,
    "Instances Counting": 5, "Spatial Relation": 6, "Instance Interaction": 7, "Visual Reasoning": 8,
    "Text Understanding": 9, "Action Recognition": 10, "Action Prediction": 11, "Procedure Understanding": 12,
}
SEED_DIMENSIONS = (1, 2, 3, 4, 5, 6, 8)  # the ones the tiny world can ask
SEED_KINDS = ("a bar chart", "shapes on a grid", "a photograph of a street", "a page of text")


def _unique(scene: Scene, key) -> list[Shape]:
    keys = [key(o) for o in scene.objects]
    return [o for o in scene.objects if keys.count(key(o)) == 1]


def _seed_question(dimension: int, scene: Scene, rng: random.Random) -> tuple[str, str, list[str]] | None:
    """(question, right option, three wrong options) of one SEED dimension, or None when the scene
    cannot carry it."""
    if dimension == 1:
        right = "a bar chart" if scene.kind == "bars" else "shapes on a grid"
        return "What does this picture show?", right, [k for k in SEED_KINDS if k != right]
    if dimension == 8:
        heights = scene.heights
        top = max(heights.values())
        tallest = [k for k, v in heights.items() if v == top]
        if len(tallest) != 1:
            return None
        return "Which bar is the tallest?", f"bar {tallest[0]}", [f"bar {k}" for k in BAR_LABELS if k != tallest[0]]
    if dimension == 2:
        candidates = _unique(scene, lambda o: (o.color, o.quadrant))
        if not candidates:
            return None
        obj = rng.choice(candidates)
        return (f"What is the {obj.color} object in the {obj.quadrant}?", obj.shape,
                [s for s in SHAPES + ("star",) if s != obj.shape])
    if dimension == 3:
        candidates = _unique(scene, lambda o: o.shape)
        if not candidates:
            return None
        obj = rng.choice(candidates)
        return f"What colour is the {obj.shape}?", obj.color, [c for c in COLOR_NAMES if c != obj.color]
    if dimension == 4:
        candidates = _unique(scene, lambda o: (o.color, o.shape))
        if not candidates:
            return None
        obj = rng.choice(candidates)
        return (f"Where is the {obj.color} {obj.shape}?", f"in the {obj.quadrant}",
                [f"in the {q}" for q in QUADRANTS if q != obj.quadrant])
    if dimension == 5:
        if rng.random() < 0.5:
            n, text = len(scene.objects), "How many shapes are there?"
        else:
            color = rng.choice(sorted({o.color for o in scene.objects}))
            n, text = scene.count(color=color), f"How many {color} shapes are there?"
        wrong = rng.sample([k for k in range(max(0, n - 3), n + 4) if k != n], 3)
        return text, str(n), [str(k) for k in wrong]
    if dimension == 6:
        unique = _unique(scene, lambda o: (o.color, o.shape))
        pairs = [(a, b) for a in unique for b in unique if a != b and (a.row == b.row or a.col == b.col)]
        if not pairs:
            return None
        a, b = rng.choice(pairs)
        if a.row == b.row:
            right = "to the left of it" if a.col < b.col else "to the right of it"
        else:
            right = "above it" if a.row < b.row else "below it"
        options = ["above it", "below it", "to the left of it", "to the right of it"]
        return (f"Where is the {a.color} {a.shape} relative to the {b.color} {b.shape}?", right,
                [o for o in options if o != right])
    raise ValueError(f"no tiny SEED-Bench question for dimension {dimension}")


def write_seed(ctx: Context, rng: random.Random, n: int) -> int:
    source = SceneSource(rng, "eval")
    questions = []
    for i in range(1, n + 1):
        dimension = SEED_DIMENSIONS[(i - 1) % len(SEED_DIMENSIONS)]
        kind = {1: None, 8: "bars"}.get(dimension, "shapes")
        while True:
            scene = source.draw(kind)
            asked = _seed_question(dimension, scene, rng)
            if asked is not None:
                break
        text, right, wrong = asked
        options = [right] + wrong
        rng.shuffle(options)
        data_id = f"tiny_seed_{i:06d}.png"
        ctx.save_image(f"seed/SEED-Bench-image/{data_id}", scene)
        questions.append({
            "answer": "ABCD"[options.index(right)],
            "choice_a": options[0],
            "choice_b": options[1],
            "choice_c": options[2],
            "choice_d": options[3],
            "data_id": data_id,
            "data_type": "image",
            "question": text,
            "question_id": str(i),
            "question_type_id": dimension,
        })
    ctx.write_json("seed/SEED-Bench.json", {"questions": questions, "question_type": SEED_QUESTION_TYPES})
    return len(questions)


# -- ScienceQA ------------------------------------------------------------------------------------
SQA_SPLITS = ("train", "val", "test", "trainval", "minitrain", "minival", "minitest")
SQA_TEXT_ONLY_SHARE = 0.2
SQA_LECTURES = {
    "natural science": "Shapes are told apart by their corners: a circle has none, a triangle three and a square four.",
    "social science": "A bar chart shows amounts as bars; a taller bar stands for a larger amount.",
    "language science": "Words in alphabetical order are sorted by their first letter, then by the next letter.",
}
SQA_WORDS = tuple(sorted(set(COLOR_NAMES) | set(SHAPES) | {"bar", "chart", "corner", "grid"}))
# Templates whose answers are exact choices or whole numbers (float answers would need rounding rules).
SQA_TEMPLATES = {kind: [n for n, t in TEMPLATES.items() if t.kind == kind and n not in
                        ("fraction_color", "bar_ratio", "bar_mean")] for kind in ("shapes", "bars")}


def _grade(n_steps: int, rng: random.Random) -> str:
    if n_steps <= 1:
        return rng.choice(("grade2", "grade3", "grade4"))
    if n_steps == 2:
        return rng.choice(("grade5", "grade6"))
    return rng.choice(("grade7", "grade8"))


def _sqa_image_problem(scene: Scene, rng: random.Random) -> dict[str, Any] | None:
    names = list(SQA_TEMPLATES[scene.kind])
    rng.shuffle(names)
    for name in names:
        q = ask(name, scene, rng)
        if q is not None:
            break
    else:
        return None
    if q.choices:
        choices = list(q.choices)
    else:
        value = int(q.answer)
        choices = [str(k) for k in rng.sample([k for k in range(max(0, value - 3), value + 4) if k != value], 3)]
        choices.append(q.answer)
        rng.shuffle(choices)
    natural = scene.kind == "shapes"
    subject = "natural science" if natural else "social science"
    hint = ""
    if rng.random() < 0.3:
        hint = "Look at the shapes in the picture." if natural else "The chart shows four bars, A to D."
    return {
        "question": q.question,
        "choices": choices,
        "answer": choices.index(q.answer),
        "hint": hint,
        "image": "image.png",
        "task": "closed choice",
        "grade": _grade(q.n_steps, rng),
        "subject": subject,
        "topic": q.subject,
        "category": q.template.replace("_", " "),
        "skill": (q.skills or [q.template])[0],
        "lecture": SQA_LECTURES[subject],
        "solution": "\n".join(q.steps),
        "split": "test",
    }


def _sqa_text_problem(rng: random.Random) -> dict[str, Any]:
    words = rng.sample(SQA_WORDS, 3)
    first = min(words)
    return {
        "question": "Which word comes first in alphabetical order?",
        "choices": words,
        "answer": words.index(first),
        "hint": "",
        "image": None,
        "task": "closed choice",
        "grade": "grade2",
        "subject": "language science",
        "topic": "reference-skills",
        "category": "Alphabetical order",
        "skill": "Order words alphabetically",
        "lecture": SQA_LECTURES["language science"],
        "solution": f"Compare the words letter by letter: {first} comes first.\nThe answer is {first}.",
        "split": "test",
    }


def write_scienceqa(ctx: Context, rng: random.Random, n: int) -> int:
    source = SceneSource(rng, "eval")
    problems: dict[str, dict[str, Any]] = {}
    for i in range(1, n + 1):
        pid = str(i)
        if rng.random() < SQA_TEXT_ONLY_SHARE:
            problems[pid] = _sqa_text_problem(rng)
            continue
        kind = "shapes" if rng.random() < 0.6 else "bars"
        while True:
            scene = source.draw(kind)
            problem = _sqa_image_problem(scene, rng)
            if problem is not None:
                break
        ctx.save_image(f"scienceqa/images/test/{pid}/image.png", scene)
        problems[pid] = problem
    ctx.write_json("scienceqa/problems.json", problems)
    ctx.write_json("scienceqa/pid_splits.json", {split: list(problems) if split == "test" else []
                                                for split in SQA_SPLITS})
    return len(problems)


# -- AMBER ----------------------------------------------------------------------------------------
AMBER_RELATION = {"circle": [], "square": [], "triangle": [], "bar": [], "shape": []}
AMBER_SAFE_WORDS = ("shape",)  # a generic word, like "individual" in AMBER's own list
AMBER_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven")
AMBER_QUERY_SPLITS = {
    "all": lambda t: True,
    "generative": lambda t: t == "generative",
    "discriminative": lambda t: t != "generative",
    "discriminative-existence": lambda t: t == "discriminative-hallucination",
    "discriminative-attribute": lambda t: t.startswith("discriminative-attribute"),
    "discriminative-relation": lambda t: t in ("discriminative-relation", "relation"),
}
# The counters of AMBER's data/metrics.txt with their initial values.
AMBER_METRICS = ["chair_num=0.001", "chair_score=0", "safe_cover_num=0.001", "safe_cover_score=0",
                 "hallu_cover_num=0.001", "hallu_cover_score=0", "non_hallu_score=0", "non_hallu_num=0.001"] + [
    f"{p}_{name}" for p in ("qa", "as_qa", "an_qa", "aa_qa", "asso_qa", "ha_qa")
    for name in ("correct_score=0", "correct_num=0.001", "no_score=0", "no_num=0.001", "ans_no_score=0",
                 "ans_no_num=0.001")]


def _adjacent(a: Shape, b: Shape) -> bool:
    return abs(a.row - b.row) + abs(a.col - b.col) == 1


def _amber_questions(scene: Scene, rng: random.Random) -> dict[str, list[tuple[str, str, str]]]:
    """(type, query, truth) per block: attribute, existence, relation."""
    present = list(dict.fromkeys(o.shape for o in scene.objects))
    absent = [s for s in SHAPES if s not in present] + ["bar"]
    attribute: list[tuple[str, str, str]] = []
    single = [s for s in present if scene.count(shape=s) == 1]
    if single:
        shape = rng.choice(single)
        color = scene.select(shape=shape)[0].color
        wrong = rng.choice([c for c in COLOR_NAMES if c != color])
        pair = [(color, "yes"), (wrong, "no")]
        rng.shuffle(pair)
        attribute += [("discriminative-attribute-state", f"Is the {shape} {c} in this image?", t) for c, t in pair]
    shape = rng.choice(present)
    n = scene.count(shape=shape)
    wrong = rng.choice([k for k in (n - 1, n + 1) if k >= 1])
    pair = [(n, "yes"), (wrong, "no")]
    rng.shuffle(pair)
    attribute += [("discriminative-attribute-number",
                   f"Is there one {shape} in this image?" if k == 1
                   else f"Are there {AMBER_NUMBERS[k]} {shape}s in this image?", t) for k, t in pair]
    existence = [("discriminative-hallucination", f"Is there a {s} in this image?", "no") for s in absent]
    relation: list[tuple[str, str, str]] = []
    unique = _unique(scene, lambda o: (o.color, o.shape))
    pairs = [(a, b) for i, a in enumerate(unique) for b in unique[i + 1:]]
    for want in (True, False):
        chosen = [(a, b) for a, b in pairs if _adjacent(a, b) == want]
        if chosen:
            a, b = rng.choice(chosen)
            # the released annotations type yes-relations "discriminative-relation" and no-ones "relation"
            relation.append(("discriminative-relation" if want else "relation",
                             f"Is the {a.color} {a.shape} next to the {b.color} {b.shape} in this image?",
                             "yes" if want else "no"))
    return {"attribute": attribute, "existence": existence, "relation": relation}


def write_amber(ctx: Context, rng: random.Random, n: int) -> int:
    source = SceneSource(rng, "eval")
    annotations: list[dict[str, Any]] = []
    queries: list[dict[str, Any]] = []
    blocks: dict[str, list[tuple[str, str, str, str]]] = {"attribute": [], "existence": [], "relation": []}
    for i in range(1, n + 1):
        scene = source.draw("shapes")
        image = f"AMBER_{i}.png"
        ctx.save_image(f"amber/image/{image}", scene)
        present = list(dict.fromkeys(o.shape for o in scene.objects))
        annotations.append({"id": i, "type": "generative", "truth": present,
                            "hallu": [s for s in SHAPES if s not in present] + ["bar"]})
        queries.append({"id": i, "image": image, "query": "Describe this image."})
        for block, items in _amber_questions(scene, rng).items():
            blocks[block] += [(image, kind, text, truth) for kind, text, truth in items]
    # AMBER numbers the discriminative questions after the images: attribute, existence, relation.
    for block in ("attribute", "existence", "relation"):
        for image, kind, text, truth in blocks[block]:
            item_id = len(annotations) + 1
            annotations.append({"id": item_id, "type": kind, "truth": truth})
            queries.append({"id": item_id, "image": image, "query": text})
    kinds = {a["id"]: a["type"] for a in annotations}
    for split, keep in AMBER_QUERY_SPLITS.items():
        ctx.write_json(f"amber/data/query/query_{split}.json", [q for q in queries if keep(kinds[q["id"]])])
    ctx.write_json("amber/data/annotations.json", annotations)
    ctx.write_json("amber/data/relation.json", AMBER_RELATION)
    (ctx.root / "amber/data/safe_words.txt").write_text("\n".join(AMBER_SAFE_WORDS), encoding="utf-8")
    (ctx.root / "amber/data/metrics.txt").write_text("\n".join(AMBER_METRICS), encoding="utf-8")
    return len(annotations)


# -- reading a built world back -------------------------------------------------------------------
def load_records(root: Path, family: str) -> list[dict[str, Any]]:
    """The records of one of these families as written: POPE lines (with ``split``), SEED questions,
    ScienceQA problems (with ``pid``), AMBER queries joined with their annotations."""
    base = Path(root) / family
    if family == "pope":
        return [{**json.loads(line), "split": split}
                for split in POPE_SPLITS
                for line in (base / "coco" / f"coco_pope_{split}.json").read_text(encoding="utf-8").splitlines()]
    if family == "seed":
        return json.loads((base / "SEED-Bench.json").read_text(encoding="utf-8"))["questions"]
    if family == "scienceqa":
        problems = json.loads((base / "problems.json").read_text(encoding="utf-8"))
        return [{**problem, "pid": pid} for pid, problem in problems.items()]
    if family == "amber":
        annotations = json.loads((base / "data/annotations.json").read_text(encoding="utf-8"))
        queries = json.loads((base / "data/query/query_all.json").read_text(encoding="utf-8"))
        return [{**annotations[q["id"] - 1], **q} for q in queries]
    raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")


def image_questions(root: Path, family: str) -> list[tuple[str, str]]:
    """(image path relative to the world root, question text) for every question of ``family``."""
    pairs = []
    for r in load_records(root, family):
        if family == "pope":
            pairs.append((f"pope/val2014/{r['image']}", r["text"]))
        elif family == "seed":
            pairs.append((f"seed/SEED-Bench-image/{r['data_id']}", r["question"]))
        elif family == "scienceqa":
            image = f"scienceqa/images/test/{r['pid']}/{r['image']}" if r["image"] else ""
            pairs.append((image, r["question"]))
        elif family == "amber":
            pairs.append((f"amber/image/{r['image']}", r["query"]))
    return pairs

