"""Each tiny-world family against the official files in shared/fixtures: the same record keys (plus
documented extras), the same value types and conventions, the same linkage between records."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from kit import REPO_DIR
from kit.llm.prompts import DESCRIPTION_INSTRUCTIONS
from kit.tiny.world import Scene, WorldConfig, build_world, describe, read_scenes
from kit.tiny.world.families import MME_SUBTASKS, mathvista_query
from kit.tiny.world.readers import load_records

FIXTURES = REPO_DIR.parent / "shared" / "fixtures"
SMALL = WorldConfig(
    seed=11,
    train_pool=240,
    mathvista_testmini=150,
    mathvision_test=80,
    mathvision_testmini=20,
    wemath_problems=24,
    hallusionbench_sets=15,
    mme_images_per_subtask=8,
    eaco_images=12,
    vlfeedback_prompts=20,
    instructions=15,
    pope_images=12,
    seed_questions=35,
    scienceqa_problems=40,
    amber_images=12,
)
CORNERS = {"circle": 0, "triangle": 3, "square": 4}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world") / "tiny"
    build_world(root, SMALL, progress=False)
    return root


@pytest.fixture(scope="module")
def scenes(world: Path) -> dict[str, dict[str, Any]]:
    return {path: scene.to_dict() for path, scene in read_scenes(world).items()}


def fixture(relpath: str) -> Any:
    path = FIXTURES / relpath
    if not path.is_file():
        pytest.skip(f"official fixture {path} is not available")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return json.loads(path.read_text(encoding="utf-8"))


def type_names(records: list[dict[str, Any]], key: str) -> set[str]:
    return {type(r[key]).__name__ for r in records}


def assert_same_types(tiny: list[dict[str, Any]], official: list[dict[str, Any]], keys: set[str]) -> None:
    for key in keys:
        assert type_names(tiny, key) <= type_names(official, key), key


# -- MathVista ------------------------------------------------------------------------------------
def test_mathvista_matches_the_official_schema(world: Path) -> None:
    official = list(fixture("mathvista/testmini.json").values())
    data = json.loads((world / "mathvista/testmini.json").read_text())
    tiny = list(data.values())
    keys = set(official[0])
    assert all(set(r) == keys | {"query", "solution"} for r in tiny)
    assert all(set(r["metadata"]) == set(official[0]["metadata"]) for r in tiny)
    assert_same_types(tiny, official, keys)
    assert_same_types(
        [r["metadata"] for r in tiny], [r["metadata"] for r in official], set(official[0]["metadata"])
    )
    assert list(data) == [str(i) for i in range(1, len(data) + 1)] and all(
        k == r["pid"] for k, r in data.items()
    )
    official_pairs = {(r["question_type"], r["answer_type"]) for r in official}
    for r in tiny:
        assert (r["question_type"], r["answer_type"]) in official_pairs
        assert r["unit"] is None and r["image"] == f"images/{r['pid']}.png"
        assert (world / "mathvista" / r["image"]).is_file()
        assert (r["precision"] is not None) == (r["answer_type"] == "float")
        if (
            r["answer_type"] == "float"
        ):  # spelled as every official float answer is (and as the scorer rounds)
            assert r["answer"] == str(round(float(r["answer"]), r["precision"]))
        if r["question_type"] == "multi_choice":
            assert r["answer"] in r["choices"]
        else:
            assert r["choices"] is None
        for field in ("category", "task", "context", "grade"):
            assert r["metadata"][field] in {o["metadata"][field] for o in official}
        assert set(r["metadata"]["skills"]) <= {s for o in official for s in o["metadata"]["skills"]}
        assert r["query"] == mathvista_query(r) and r["query"].startswith("Hint: ")
        assert f"\nQuestion: {r['question']}" in r["query"]
        assert r["solution"][-1] == f"The answer is {r['answer']}."
    yes_no = [r for r in tiny if r["choices"] == ["Yes", "No"]]
    assert yes_no, "yes/no questions are multi_choice with choices ['Yes', 'No'], as in MathVista"
    assert {r["answer_type"] for r in tiny} == {"text", "integer", "float"}
    assert {r["precision"] for r in tiny if r["answer_type"] == "float"} == {1, 2}


def test_the_mathvista_query_follows_the_official_layout() -> None:
    problem = {
        "question": "Which bar is the tallest?",
        "choices": ["A", "B", "C", "D"],
        "unit": None,
        "precision": None,
        "question_type": "multi_choice",
        "answer_type": "text",
    }
    assert mathvista_query(problem) == (
        "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n"
        "Question: Which bar is the tallest?\nChoices:\n(A) A\n(B) B\n(C) C\n(D) D"
    )
    problem = {
        "question": "How tall?",
        "choices": None,
        "unit": "cm",
        "precision": 1,
        "question_type": "free_form",
        "answer_type": "float",
    }
    assert mathvista_query(problem) == (
        "Hint: Please answer the question requiring a floating-point number with one decimal place and provide the "
        "final value, e.g., 1.2, 1.3, 1.4, at the end.\nQuestion: How tall? (Unit: cm)"
    )


# -- MATH-Vision ----------------------------------------------------------------------------------
def test_mathvision_matches_the_official_schema(world: Path) -> None:
    official = fixture("mathv/test.jsonl")
    keys = list(official[0])
    test = [json.loads(line) for line in (world / "mathvision/test.jsonl").read_text().splitlines()]
    mini = [json.loads(line) for line in (world / "mathvision/testmini.jsonl").read_text().splitlines()]
    assert (len(test), len(mini)) == (SMALL.mathvision_test, SMALL.mathvision_testmini)
    tiny = test + mini
    assert all(list(r) == keys for r in tiny)
    assert_same_types(tiny, official, set(keys))
    assert not {r["id"] for r in test} & {r["id"] for r in mini}
    subjects = {r["subject"] for r in official}
    for r in tiny:
        assert r["question"].endswith("\n<image>".replace("<image>", "<image1>"))
        assert r["subject"] in subjects and 1 <= r["level"] <= 5
        assert r["image"] == f"images/{r['id']}.png" and (world / "mathvision" / r["image"]).is_file()
        if r["options"]:
            assert r["answer"] in "ABCDE"[: len(r["options"])]
        else:
            assert not re.fullmatch(r"[A-E]", r["answer"])
        assert r["solution"].endswith(f"The answer is {r['answer']}.")
    assert len({r["level"] for r in tiny}) >= 4


# -- We-Math --------------------------------------------------------------------------------------
def structure(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The linkage conventions of a We-Math file, computed the same way for the official and tiny data."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_id[row["ID"]].append(row)
    key_sets: Counter = Counter()
    joined = 0
    for problem_id, group in by_id.items():
        steps = problem_id.split("_")[0]
        keys = tuple(sorted(r["key"] for r in group))
        key_sets[keys] += 1
        assert keys == tuple(
            sorted([f"{steps}_{i}" for i in range(1, int(steps[0]) + 1)] + [f"{steps}_multi"])
        )
        number = problem_id.split("_")[1]
        for r in group:
            suffix = r["key"].split("_")[1]
            assert r["image_path"] == f"{steps}/image/{number}-{suffix}.png"
        multi = next(r for r in group if r["key"].endswith("multi"))
        parts = [r for r in sorted(group, key=lambda r: r["key"]) if not r["key"].endswith("multi")]
        joined += multi["knowledge concept"] == ";".join(r["knowledge concept"] for r in parts) and (
            multi["knowledge concept description"]
            == "\n".join(r["knowledge concept description"] for r in parts)
        )
    order = []
    for row in rows:
        if not order or order[-1] != row["key"]:
            order.append(row["key"])
    return {
        "key_sets": set(key_sets),
        "file_order": order,
        "numbers": [r["question number"] for r in rows] == list(range(1, len(rows) + 1)),
        "splits": {r["split"] for r in rows},
        # a composite's concepts are its sub-problems' joined by ';' (513 of the 525 official problems)
        "concepts_joined": joined / len(by_id) > 0.95,
    }


def test_wemath_matches_the_official_schema_and_linkage(world: Path) -> None:
    official = fixture("wemath/testmini.json")
    tiny = json.loads((world / "wemath/testmini.json").read_text())
    assert all(list(r) == list(official[0]) for r in tiny)
    assert_same_types(tiny, official, set(official[0]))
    assert structure(tiny) == structure(official)
    assert structure(tiny)["concepts_joined"]
    assert len({r["ID"] for r in tiny}) == SMALL.wemath_problems
    option = re.compile(r"A\. [^;]+; B\. [^;]+; C\. [^;]+; D\. [^;]+; E\. No correct answer")
    for r in tiny:
        assert option.fullmatch(r["option"]), r["option"]
        assert r["answer"] in "ABCD"
        assert (world / "wemath" / r["image_path"]).is_file()


def test_wemath_sub_problems_lead_to_the_composite_answer(world: Path, scenes: dict) -> None:
    rows = json.loads((world / "wemath/testmini.json").read_text())

    def chosen(row: dict[str, Any]) -> str:
        options = dict(part.strip().split(". ", 1) for part in row["option"].split(";"))
        return options[row["answer"]]

    by_id: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_id[r["ID"]][r["key"].split("_")[1]] = r
    for group in by_id.values():
        last = str(len(group) - 1)
        assert chosen(group[last]) == chosen(group["multi"])
        scene = scenes[f"wemath/{group['multi']['image_path']}"]
        sub1 = [int(v) for v in chosen(group["1"]).split(", ")]
        question = group["1"]["question"]
        if scene["kind"] == "bars":
            heights = {b["label"]: b["height"] for b in scene["bars"]}
            labels = re.findall(r"\b([A-D])\b", question.split("diagram, ")[1])
            assert sub1 == [heights[label] for label in labels]
        elif "triangles" in question:
            assert sub1 == [sum(o["shape"] == s for o in scene["objects"]) for s in ("triangle", "square")]
            total = sum(CORNERS[o["shape"]] for o in scene["objects"])
            assert chosen(group["multi"]) == str(total)
        else:
            colours = re.findall(r"(red|green|blue|yellow)", question)
            assert sub1 == [sum(o["color"] == c for o in scene["objects"]) for c in colours]
            a, b = sub1
            assert chosen(group["multi"]) == str(a - b if "more" in group["multi"]["question"] else a + b)


# -- HallusionBench -------------------------------------------------------------------------------
def test_hallusionbench_matches_the_official_schema(world: Path) -> None:
    official = fixture("hallusionbench/HallusionBench.json")
    tiny = json.loads((world / "hallusionbench/HallusionBench.json").read_text())
    assert all(list(r) == list(official[0]) for r in tiny)
    assert_same_types(tiny, official, set(official[0]))
    combos = {(r["category"], r["visual_input"], r["figure_id"]) for r in official}
    for r in tiny:
        assert (r["category"], r["visual_input"], r["figure_id"]) in combos
        assert r["gt_answer"] in ("0", "1")
        if r["visual_input"] == "0":
            assert r["filename"] is None
        else:
            expected = f"./{r['category']}/{r['subcategory']}/{r['set_id']}_{r['figure_id']}.png"
            assert r["filename"] == expected
            assert (world / "hallusionbench/hallusion_bench" / r["filename"][2:]).is_file()
    assert {r["category"] for r in tiny} == {"VD", "VS"}


def test_hallusionbench_pairs_questions_across_original_and_edited_figures(world: Path, scenes: dict) -> None:
    tiny = json.loads((world / "hallusionbench/HallusionBench.json").read_text())
    sets: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in tiny:
        sets[(r["category"], r["subcategory"], r["set_id"])].append(r)
    assert len(sets) == SMALL.hallusionbench_sets
    for (category, _, _), rows in sets.items():
        pairs: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for r in rows:
            pairs[r["question_id"]][r["figure_id"]] = r
        figures = {"VD": {"0", "1"}, "VS": {"0", "1", "2"}}[category]
        assert all(set(p) == figures for p in pairs.values())
        # the original is figure 0 in VD and figure 1 in VS (figure 0 there has no image)
        original, edited = ("0", "1") if category == "VD" else ("1", "2")
        flips = [p for p in pairs.values() if p[original]["gt_answer"] != p[edited]["gt_answer"]]
        assert flips, "every set has a question whose answer differs between the original and edited figure"
        if category == "VD":
            assert all(p["0"]["question"] == p["1"]["question"] for p in pairs.values())
            original = scenes[f"hallusionbench/hallusion_bench/{rows[0]['filename'][2:]}"]
            edited_row = next(r for r in rows if r["figure_id"] == "1")
            edited = scenes[f"hallusionbench/hallusion_bench/{edited_row['filename'][2:]}"]
            assert original != edited
        else:
            assert all(
                p["1"]["question"] == p["2"]["question"] and p["1"]["question"].startswith("According to")
                for p in pairs.values()
            )
            assert all(p["0"]["question"] != p["1"]["question"] for p in pairs.values())


def test_hallusionbench_answers_follow_the_figure_shown(world: Path, scenes: dict) -> None:
    tiny = json.loads((world / "hallusionbench/HallusionBench.json").read_text())
    checked = 0
    for r in tiny:
        if r["filename"] is None:
            shape, claimed = re.fullmatch(r"Does a (\w+) have (\d) corners\?", r["question"]).groups()
            assert r["gt_answer"] == ("1" if CORNERS[shape] == int(claimed) else "0")
            checked += 1
            continue
        scene = scenes[f"hallusionbench/hallusion_bench/{r['filename'][2:]}"]
        objects = scene.get("objects", [])
        heights = {b["label"]: b["height"] for b in scene.get("bars", [])}
        truth = None
        if m := re.fullmatch(r"Is there a (\w+) (\w+)\?", r["question"]):
            truth = any(o["color"] == m[1] and o["shape"] == m[2] for o in objects)
        elif m := re.fullmatch(r"Is bar ([A-D]) taller than bar ([A-D])\?", r["question"]):
            truth = heights[m[1]] > heights[m[2]]
        elif m := re.fullmatch(
            r"According to the image, does the (\w+) shape have (\d) corners\?", r["question"]
        ):
            shape = next(o["shape"] for o in objects if o["color"] == m[1])
            truth = CORNERS[shape] == int(m[2])
        if truth is not None:
            assert r["gt_answer"] == ("1" if truth else "0"), r
            checked += 1
    assert checked >= 20


# -- MME ------------------------------------------------------------------------------------------
def test_mme_has_two_questions_per_image_one_yes_one_no(world: Path, scenes: dict) -> None:
    checked: Counter = Counter()
    for subtask in MME_SUBTASKS:
        texts = sorted((world / "mme" / subtask).glob("*.txt"))
        images = sorted((world / "mme" / subtask).glob("*.png"))
        assert len(texts) == len(images) == SMALL.mme_images_per_subtask
        assert [t.stem for t in texts] == [i.stem for i in images]
        for text in texts:
            lines = text.read_text(encoding="utf-8").splitlines()
            assert len(lines) == 2
            (q1, a1), (q2, a2) = (line.split("\t") for line in lines)
            assert (a1, a2) == ("Yes", "No") and q1 != q2
            assert q1.endswith("? Please answer yes or no.") and q2.endswith("? Please answer yes or no.")
            scene = scenes[f"mme/{subtask}/{text.stem}.png"]
            for question, answer in ((q1, a1), (q2, a2)):
                truth = None
                if m := re.match(r"Is there a (\w+) (\w+) in this image\?", question):
                    truth = any(o["color"] == m[1] and o["shape"] == m[2] for o in scene["objects"])
                elif m := re.match(r"(?:Are|Is) there exactly (\d) (\w+) shapes? in this image\?", question):
                    truth = sum(o["color"] == m[2] for o in scene["objects"]) == int(m[1])
                elif m := re.match(r"(?:Are|Is) there exactly (\d) shapes? in this image\?", question):
                    truth = len(scene["objects"]) == int(m[1])
                elif m := re.match(r"Is the (\w+) (\w+) in the (\w+) (\w+) of this image\?", question):
                    obj = next(o for o in scene["objects"] if (o["color"], o["shape"]) == (m[1], m[2]))
                    vertical = "top" if obj["row"] < 2 else "bottom"
                    horizontal = "left" if obj["col"] < 2 else "right"
                    truth = (vertical, horizontal) == (m[3], m[4])
                elif m := re.match(
                    r"Is the height of bar ([A-D]) plus the height of bar ([A-D]) equal to (\d+)\?", question
                ):
                    heights = {b["label"]: b["height"] for b in scene["bars"]}
                    truth = heights[m[1]] + heights[m[2]] == int(m[3])
                if truth is not None:
                    assert answer == ("Yes" if truth else "No"), (question, scene)
                    checked[subtask] += 1
    assert set(checked) == {"existence", "count", "position", "numerical_calculation"}


# -- training families ----------------------------------------------------------------------------
def test_mathv360k_records_are_llava_conversations_with_gold_extras(world: Path, scenes: dict) -> None:
    records = json.loads((world / "mathv360k/train_samples_all_tuning.json").read_text())
    assert len(records) == SMALL.train_pool
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        assert list(r)[:3] == ["id", "image", "conversations"]
        human, gpt = r["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        assert human["value"] == "<image>\n" + r["question"] + (
            "\nChoices:\n" + "\n".join(f"({'ABCD'[i]}) {c}" for i, c in enumerate(r["choices"]))
            if r["choices"]
            else ""
        )
        assert gpt["value"] == r["answer"] and r["solution"][-1] == f"The answer is {r['answer']}."
        assert f"mathv360k/{r['image']}" in scenes
    per_image = Counter(r["image"] for r in records)
    assert max(per_image.values()) == 3


def test_vlfeedback_rates_corrupted_descriptions_below_the_faithful_one(world: Path, scenes: dict) -> None:
    rows = load_records(world, "vlfeedback")
    assert len(rows) == SMALL.vlfeedback_prompts
    for row in rows:
        assert list(row) == ["id", "prompt", "models", "completions", "img_path"]
        assert row["prompt"] in DESCRIPTION_INSTRUCTIONS and len(row["completions"]) == 4
        assert row["models"] == [c["model"] for c in row["completions"]]
        truth = describe(read_scenes(world)[f"vlfeedback/{row['img_path']}"])
        faithful = [c for c in row["completions"] if c["response"] == truth]
        assert len(faithful) == 1
        for c in row["completions"]:
            assert list(c) == ["annotations", "model", "response"]
            assert set(c["annotations"]) == {"Helpfulness", "Ethical Considerations", "Visual Faithfulness"}
            for aspect in c["annotations"].values():
                assert set(aspect) == {"Rating", "Rationale"} and aspect["Rating"] in list("12345")
            if c is not faithful[0]:
                worse = [
                    int(c["annotations"][a]["Rating"]) < 5 for a in ("Helpfulness", "Visual Faithfulness")
                ]
                assert any(worse)
        assert all(a["Rating"] == "5" for a in faithful[0]["annotations"].values())


def test_eaco_and_instruction_families(world: Path) -> None:
    meta = json.loads((world / "eaco_images/instructions.json").read_text())
    assert meta["instructions"] == DESCRIPTION_INSTRUCTIONS and len(meta["instructions"]) == 8
    assert "STIC" in meta["source"]
    assert len(list((world / "eaco_images/images").glob("*.png"))) == SMALL.eaco_images
    records = load_records(world, "instructions")
    assert len(records) == SMALL.instructions
    for r in records:
        assert list(r) == ["id", "image", "conversations"]
        turns = r["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n") and (world / "instructions" / r["image"]).is_file()
        assert sum("<image>" in t["value"] for t in turns) == 1


def test_answers_of_every_question_family_match_the_scene(world: Path, scenes: dict) -> None:
    from test_world_scenes import recompute

    checked = 0
    for r in json.loads((world / "mathvista/testmini.json").read_text()).values():
        expected = recompute(r["question"], scenes[f"mathvista/{r['image']}"])
        if expected is not None:
            assert r["answer"] == expected, r
            checked += 1
    for r in load_records(world, "mathvision"):
        expected = recompute(r["question"].removesuffix("\n<image1>"), scenes[f"mathvision/{r['image']}"])
        if expected is not None:
            answer = r["options"]["ABCDE".index(r["answer"])] if r["options"] else r["answer"]
            assert answer == expected, r
            checked += 1
    for r in load_records(world, "mathv360k"):
        expected = recompute(r["question"], scenes[f"mathv360k/{r['image']}"])
        if expected is not None:
            assert r["answer"] == expected, r
            checked += 1
    assert checked >= 200


# -- EACO's other benchmarks: POPE, SEED-Bench, ScienceQA-IMG, AMBER --------------------------------
# No official files of these are in shared/fixtures, so the official side is a small folder written here
# in each dataset's documented schema (field names and types as in the released files), read by the same
# loader as the tiny world's copy.
def _records_agree(tiny: list[dict[str, Any]], official: list[dict[str, Any]], ignore: set[str] = frozenset()) -> None:
    keys = set(official[0]) - ignore
    assert all(set(r) - ignore == keys for r in tiny), (set(tiny[0]) ^ keys)
    assert_same_types(tiny, official, keys - {"image_path"})


def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path, format="PNG")


def test_pope_matches_the_official_schema_and_the_scenes(world: Path, scenes: dict, tmp_path: Path) -> None:
    from kit.eval.benchmarks import pope

    official_root = tmp_path / "pope"
    line = {"question_id": 1, "image": "COCO_val2014_000000548882.jpg", "image_id": 548882,
            "text": "Is there a dining table in the image?", "label": "yes"}
    for split in pope.CATEGORIES:
        path = official_root / "coco" / f"coco_pope_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    _png(official_root / "val2014" / line["image"])
    tiny = pope.load(world / "pope")
    _records_agree(tiny, pope.load(official_root))
    assert len(tiny) == 3 * 6 * SMALL.pope_images
    by_split: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in tiny:
        by_split[r["category"]].append(r)
    assert list(by_split) == list(pope.CATEGORIES)
    images = [r["image"] for r in by_split["random"]]
    for rows in by_split.values():
        assert [r["image"] for r in rows] == images, "one set of images serves the three splits"
        assert [r["question_id"] for r in rows] == list(range(1, len(rows) + 1))
        for start in range(0, len(rows), 6):
            group = rows[start:start + 6]
            assert [r["label"] for r in group] == ["yes"] * 3 + ["no"] * 3
            assert len({r["text"] for r in group}) == 6
    for r in tiny:
        color, shape = re.fullmatch(r"Is there a (\w+) (\w+) in the image\?", r["text"]).groups()
        present = any(o["color"] == color and o["shape"] == shape for o in scenes[f"pope/val2014/{r['image']}"]["objects"])
        assert r["label"] == ("yes" if present else "no"), r
    # popular negatives: the most frequent categories of the whole set (ties by name) that the image lacks
    present = {image: {f"{o['color']} {o['shape']}" for o in scenes[f"pope/val2014/{image}"]["objects"]}
               for image in dict.fromkeys(images)}
    counts = Counter(c for categories in present.values() for c in categories)
    popular = sorted(counts, key=lambda c: (-counts[c], c))
    for start in range(0, len(by_split["popular"]), 6):
        rows = by_split["popular"][start:start + 6]
        asked = [r["text"].removeprefix("Is there a ").removesuffix(" in the image?") for r in rows[3:]]
        assert asked == [c for c in popular if c not in present[rows[0]["image"]]][:3]
    assert pope.score([dict(r, prediction="yes") for r in tiny])["accuracy"] == 50.0


def test_seed_matches_the_official_schema_and_the_scenes(world: Path, scenes: dict, tmp_path: Path) -> None:
    from kit.eval.benchmarks import seed

    official_root = tmp_path / "seed"
    question = {"answer": "A", "choice_a": "One", "choice_b": "Two", "choice_c": "Three", "choice_d": "Four",
                "data_id": "1454426_2591111986", "data_type": "image", "question": "How many towels are in the image?",
                "question_id": "101669", "question_type_id": 5}
    official_root.mkdir()
    (official_root / "SEED-Bench.json").write_text(json.dumps(
        {"questions": [question], "question_type": {n: i for i, n in seed.DIMENSIONS.items()}}), encoding="utf-8")
    _png(official_root / "SEED-Bench-image" / "1454426_2591111986")
    data = json.loads((world / "seed/SEED-Bench.json").read_text())
    assert list(data) == ["questions", "question_type"]
    assert data["question_type"] == {n: i for i, n in seed.DIMENSIONS.items()}
    tiny = seed.load(world / "seed")
    _records_agree(tiny, seed.load(official_root))
    assert all(list(q) == list(question) for q in data["questions"])
    assert len(tiny) == SMALL.seed_questions
    assert {r["question_type_id"] for r in tiny} == {1, 2, 3, 4, 5, 6, 8}
    assert set(Counter(r["answer"] for r in tiny)) == {"A", "B", "C", "D"}
    checked = 0
    for r in tiny:
        scene = scenes[f"seed/SEED-Bench-image/{r['data_id']}"]
        right = r[f"choice_{r['answer'].lower()}"]
        assert len({r[f"choice_{x}"] for x in "abcd"}) == 4
        if r["question_type_id"] == 1:
            assert right == ("a bar chart" if scene["kind"] == "bars" else "shapes on a grid")
        elif m := re.fullmatch(r"What colour is the (\w+)\?", r["question"]):
            assert [o["color"] for o in scene["objects"] if o["shape"] == m[1]] == [right]
        elif r["question"] == "How many shapes are there?":
            assert right == str(len(scene["objects"]))
        elif r["question"] == "Which bar is the tallest?":
            heights = {b["label"]: b["height"] for b in scene["bars"]}
            assert right == f"bar {max(heights, key=heights.get)}"
        else:
            continue
        checked += 1
    assert checked >= 10


def test_scienceqa_matches_the_official_schema_and_the_scenes(world: Path, scenes: dict, tmp_path: Path) -> None:
    from test_world_scenes import recompute

    from kit.eval.benchmarks import scienceqa

    official_root = tmp_path / "scienceqa"
    problem = {"question": "Which of these states is farthest north?", "choices": ["West Virginia", "Louisiana"],
               "answer": 0, "hint": "", "image": "image.png", "task": "closed choice", "grade": "grade2",
               "subject": "social science", "topic": "geography", "category": "Geography", "skill": "Read a map",
               "lecture": "Maps have four cardinal directions.", "solution": "To find the answer, look at the compass.",
               "split": "test"}
    official_root.mkdir()
    (official_root / "problems.json").write_text(json.dumps({"1": problem}), encoding="utf-8")
    (official_root / "pid_splits.json").write_text(json.dumps(
        {"train": [], "val": [], "test": ["1"], "trainval": [], "minitrain": [], "minival": [], "minitest": []}),
        encoding="utf-8")
    _png(official_root / "images" / "test" / "1" / "image.png")
    problems = json.loads((world / "scienceqa/problems.json").read_text())
    splits = json.loads((world / "scienceqa/pid_splits.json").read_text())
    assert set(splits) == {"train", "val", "test", "trainval", "minitrain", "minival", "minitest"}
    assert splits["test"] == list(problems) and len(problems) == SMALL.scienceqa_problems
    assert all(list(p) == list(problem) for p in problems.values())
    assert_same_types(list(problems.values()), [problem, dict(problem, image=None)], set(problem))
    tiny = scienceqa.load(world / "scienceqa")
    _records_agree(tiny, scienceqa.load(official_root))
    text_only = [p for p in problems.values() if p["image"] is None]
    assert text_only and len(tiny) == len(problems) - len(text_only)
    assert {p["subject"] for p in problems.values()} == set(scienceqa.SUBJECTS)
    checked = 0
    for p in text_only:
        assert p["choices"][p["answer"]] == min(p["choices"])
    for r in tiny:
        assert 2 <= len(r["choices"]) <= 5 and len(set(r["choices"])) == len(r["choices"])
        assert r["solution"].splitlines()[-1] == f"The answer is {r['choices'][r['answer']]}."
        expected = recompute(r["question"], scenes[f"scienceqa/images/test/{r['pid']}/image.png"])
        if expected is not None:
            assert r["choices"][r["answer"]] == expected, r
            checked += 1
    assert checked >= 10


def test_amber_matches_the_official_schema_and_the_scenes(world: Path, scenes: dict) -> None:
    from kit.eval.benchmarks import amber

    data = world / "amber" / "data"
    assert {p.name for p in data.iterdir()} == {"annotations.json", "query", "relation.json", "safe_words.txt",
                                                "metrics.txt"}
    assert sorted(p.name for p in (data / "query").iterdir()) == sorted(
        f"query_{split}.json" for split in amber.SPLITS)
    metrics = dict(line.split("=") for line in (data / "metrics.txt").read_text().splitlines())
    assert len(metrics) == 44 and metrics["chair_num"] == "0.001" and metrics["qa_correct_score"] == "0"
    annotations = json.loads((data / "annotations.json").read_text())
    assert [a["id"] for a in annotations] == list(range(1, len(annotations) + 1))
    records = amber.load(world / "amber")
    by_type = Counter(r["type"] for r in records)
    assert by_type["generative"] == SMALL.amber_images
    assert set(by_type) <= {"generative", "discriminative-hallucination", "discriminative-attribute-state",
                            "discriminative-attribute-number", "discriminative-relation", "relation"}
    # the official schema: generative {id, type, truth: [...], hallu: [...]}, discriminative {id, type, truth}
    for a in annotations:
        if a["type"] == "generative":
            assert list(a) == ["id", "type", "truth", "hallu"] and all(isinstance(w, str) for w in a["truth"] + a["hallu"])
        else:
            assert list(a) == ["id", "type", "truth"] and a["truth"] in ("yes", "no")
    # generative ids first, then the attribute, existence and relation blocks, as in AMBER
    order = [{"generative": 0, "discriminative-attribute-state": 1, "discriminative-attribute-number": 1,
              "discriminative-hallucination": 2}.get(a["type"], 3) for a in annotations]
    assert order == sorted(order)
    shapes = ("circle", "square", "triangle")
    for r in records:
        scene = scenes[f"amber/image/{r['image']}"]
        objects = scene["objects"]
        present = [s for s in dict.fromkeys(o["shape"] for o in objects)]
        if r["type"] == "generative":
            assert r["query"] == "Describe this image."
            assert r["truth"] == present and r["hallu"] == [s for s in shapes if s not in present] + ["bar"]
        elif m := re.fullmatch(r"Is there a (\w+) in this image\?", r["query"]):
            assert r["truth"] == "no" and m[1] not in present
        elif m := re.fullmatch(r"Is the (\w+) (\w+) in this image\?", r["query"]):
            assert r["truth"] == ("yes" if [o["color"] for o in objects if o["shape"] == m[1]] == [m[2]] else "no")
        elif m := re.fullmatch(r"Is the (\w+) (\w+) next to the (\w+) (\w+) in this image\?", r["query"]):
            a = next(o for o in objects if (o["color"], o["shape"]) == (m[1], m[2]))
            b = next(o for o in objects if (o["color"], o["shape"]) == (m[3], m[4]))
            adjacent = abs(a["row"] - b["row"]) + abs(a["col"] - b["col"]) == 1
            assert r["truth"] == ("yes" if adjacent else "no")
            assert r["type"] == ("discriminative-relation" if adjacent else "relation")
        else:
            m = re.fullmatch(r"(?:Is there one|Are there (\w+)) (\w+?)s? in this image\?", r["query"])
            words = ("zero", "one", "two", "three", "four", "five", "six", "seven")
            n = 1 if m[1] is None else words.index(m[1])
            assert r["truth"] == ("yes" if sum(o["shape"] == m[2] for o in objects) == n else "no"), r
    # the canonical description names exactly the shapes present: no hallucination, full cover
    answers = []
    for r in records:
        scene = scenes[f"amber/image/{r['image']}"]
        if r["type"] == "generative":
            answers.append(dict(r, response=describe(Scene.from_dict(scene))))
        else:
            answers.append(dict(r, response=r["truth"].capitalize()))
    result = amber.score(answers, nouns="vocabulary", similarity="exact")
    assert (result["generative"]["CHAIR"], result["generative"]["Cover"]) == (0.0, 100.0)
    assert result["discriminative"]["Accuracy"] == 100.0 and result["amber_score"] == 100.0
    # a description that adds a bar hallucinates it
    lying = [dict(r, response=r["response"] + " There is also a bar.") if r["type"] == "generative" else r
             for r in answers]
    assert amber.score(lying, nouns="vocabulary", similarity="exact")["generative"]["Hal"] == 100.0
