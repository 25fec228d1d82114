"""AMBER: the official generative loop (association words, safe words, the first-match quirk, synonym
similarity) and discriminative counters on hand-made responses with known results, the AMBER score, the
noun-extraction choice, the official layout and the CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kit.cli import main
from kit.errors import KitError
from kit.eval.benchmarks import amber

RELATION = {"dog": [], "cat": [], "person": ["man", "woman"], "man": ["person"], "grass": ["ground"], "ground": [],
            "sky": [], "light": [], "bed": ["puppy"], "child": ["kid", "person"]}
ANNOTATIONS = [
    {"id": 1, "type": "generative", "truth": ["dog", "grass"], "hallu": ["cat", "person"]},
    {"id": 2, "type": "generative", "truth": ["person", "man"], "hallu": ["sky"]},
    {"id": 3, "type": "discriminative-hallucination", "truth": "no"},
    {"id": 4, "type": "discriminative-attribute-state", "truth": "yes"},
    {"id": 5, "type": "discriminative-attribute-state", "truth": "no"},
    {"id": 6, "type": "discriminative-attribute-number", "truth": "no"},
    {"id": 7, "type": "relation", "truth": "no"},
    {"id": 8, "type": "discriminative-relation", "truth": "yes"},
]


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "AMBER" / "data"
    (folder / "query").mkdir(parents=True)
    (folder / "relation.json").write_text(json.dumps(RELATION), encoding="utf-8")
    (folder / "safe_words.txt").write_text("light\nindividual", encoding="utf-8")
    (folder / "annotations.json").write_text(json.dumps(ANNOTATIONS), encoding="utf-8")
    queries = [{"id": a["id"], "image": f"AMBER_{min(a['id'], 2)}.jpg",
                "query": "Describe this image." if a["type"] == "generative" else f"Question {a['id']}?"}
               for a in ANNOTATIONS]
    for split, keep in {"all": lambda a: True, "generative": lambda a: a["type"] == "generative",
                        "discriminative": lambda a: a["type"] != "generative"}.items():
        (folder / "query" / f"query_{split}.json").write_text(
            json.dumps([q for q, a in zip(queries, ANNOTATIONS, strict=True) if keep(a)]), encoding="utf-8")
    for n in (1, 2):
        image = tmp_path / "AMBER" / "image" / f"AMBER_{n}.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(image)
    return folder


def _generative(data: Path, item_id: int, response: str, **options) -> dict:
    record = {**ANNOTATIONS[item_id - 1], "response": response}
    return amber.score([record], data=data, nouns="vocabulary", similarity="exact", **options)["generative"]


def test_association_safe_words_and_hallucinations(data: Path) -> None:
    # kept nouns: dog (covers dog), man (associated with the hallu object person: marks it, and is a
    # hallucinated mention), ground (associated with grass: covers it), light (safe word: skipped, still
    # counted in CHAIR's denominator), cat (hallu object: marked, hallucinated). 2 of 5 mentions.
    result = _generative(data, 1, "A dog and a man on the ground under a light and a cat.")
    assert result == {"CHAIR": 40.0, "Cover": 100.0, "Hal": 100.0, "Cog": 100.0, "responses": 1}
    clean = _generative(data, 1, "A dog on the grass.")
    # Hal = 100 - 1/1.001 * 100 = 0.1: the official 0.001 starting count shows on a single response
    assert (clean["CHAIR"], clean["Cover"], clean["Hal"], clean["Cog"]) == (0.0, 100.0, 0.1, 0.0)
    # words outside relation.json ("table") are not object mentions at all
    assert _generative(data, 1, "A table.")["CHAIR"] == 0.0


def test_the_first_match_decides_which_object_is_covered(data: Path) -> None:
    # truth [person, man]: "man" is first found among person's associated words, so it covers person and
    # not man (inference.py's quirk, kept): Cover 1/2.
    assert _generative(data, 2, "A man.")["Cover"] == 50.0
    # "person" is first found among man's associated words, so it covers man: both covered
    assert _generative(data, 2, "A man and a person.")["Cover"] == 100.0
    assert _generative(data, 2, "A man and a woman.")["Cover"] == 50.0


def test_synonym_similarity_clears_a_noun(data: Path) -> None:
    # "puppy" is a hallucination word (associated with bed) but not annotated for image 1
    assert _generative(data, 1, "A puppy.")["CHAIR"] == 99.9  # 1 / 1.001

    def vectors(word1: str, word2: str) -> float:
        return 0.9 if {word1, word2} == {"puppy", "dog"} else float(word1 == word2)

    record = {**ANNOTATIONS[0], "response": "A puppy."}
    result = amber.score([record], data=data, nouns="vocabulary", similarity=vectors)
    assert (result["generative"]["CHAIR"], result["generative"]["Cover"]) == (0.0, 50.0)
    assert result["synonym_similarity"] == "vectors"
    # at the threshold (similarity > 0.8, not >=) it does not count
    result = amber.score([record], data=data, nouns="vocabulary", similarity=vectors, threshold=0.9)
    assert result["generative"]["CHAIR"] == 99.9


def test_discriminative_counters_and_amber_score(data: Path) -> None:
    responses = {1: "A dog and a man on the ground under a light and a cat.", 2: "A man.",
                 3: "No", 4: "Yes", 5: "Yes", 6: "No", 7: "No", 8: "maybe"}
    records = [{**a, "response": responses[a["id"]]} for a in ANNOTATIONS]
    result = amber.score(records, data=data, nouns="vocabulary", similarity="exact")
    generative, discriminative = result["generative"], result["discriminative"]
    # mentions: 5 (image 1, 2 hallucinated) + 1 (image 2, none): CHAIR 2/6; Cover (2 + 1)/4; Hal: 1 of 2;
    # Cog 2/3 = 2/3.001 with the initial 0.001, which rounds to 66.6
    assert (generative["CHAIR"], generative["Cover"], generative["Hal"], generative["Cog"]) == (33.3, 75.0, 50.0,
                                                                                                 66.6)
    # 6 questions: 3,4,6,7 right; 5 wrong; 8 ("maybe") wrong and not a No. No answers: 3,6,7 (all truth no);
    # truth no: 3,5,6,7. Precision 3/3, recall 3/4, F1 = 2PR/(P+R+0.0001) on the rounded percentages.
    assert (discriminative["Accuracy"], discriminative["Precision"], discriminative["Recall"],
            discriminative["F1"]) == (66.7, 100.0, 75.0, 85.7)
    assert (discriminative["questions"], discriminative["not_yes_no"]) == (6, 1)
    # every counter starts at 0.001 (metrics.txt): one right existence question gives 99.9, not 100
    assert discriminative["existence"]["Accuracy"] == 99.9
    assert discriminative["attribute"]["questions"] == 3 and set(discriminative["attribute"]) >= {"state", "number"}
    assert "action" not in discriminative["attribute"]
    assert discriminative["relation"]["Accuracy"] == 50.0
    assert result["amber_score"] == round((100 - 33.3 + 85.7) / 2, 2)


def test_official_yes_no_is_exact_and_extract_maps_free_text(data: Path) -> None:
    records = [{**ANNOTATIONS[2], "response": "no"}, {**ANNOTATIONS[3], "response": "Yes, it is."}]
    assert amber.score(records, data=data)["discriminative"]["Accuracy"] == 0.0
    extracted = [dict(r, prediction=amber.extract(r["response"], r)) for r in records]
    assert [r["prediction"] for r in extracted] == ["No", "Yes"]
    assert amber.score(extracted, data=data)["discriminative"]["Accuracy"] == 100.0
    assert amber.score(extracted, data=data)["amber_score"] is None  # no generative part


def test_vocabulary_noun_extractor() -> None:
    nouns = amber.vocabulary_nouns({"dog", "child", "man", "glass", "woman", "leave", "air-conditioning", "box"})
    text = "Two dogs, three children, men and women near glasses, boxes and air-conditioning. Dog leaves."
    # case is kept as nltk keeps it ("Dog" is no vocabulary word); the shortest known form is the lemma
    assert nouns(text) == ["dog", "child", "man", "woman", "glass", "box", "air-conditioning", "leave"]
    assert nouns("") == []


@pytest.mark.skipif(importlib.util.find_spec("nltk") is not None, reason="nltk is installed here")
def test_the_official_resources_are_an_explicit_choice(data: Path) -> None:
    record = {**ANNOTATIONS[0], "response": "A dog."}
    with pytest.raises(KitError, match="nouns='nltk' needs the nltk package"):
        amber.score([record], data=data, nouns="nltk", similarity="exact")
    result = amber.score([record], data=data)  # auto: the fallback, named in the result
    assert (result["noun_extractor"], result["synonym_similarity"]) in {("vocabulary", "exact"),
                                                                        ("vocabulary", "spacy:en_core_web_lg")}
    with pytest.raises(KitError, match="unknown noun extractor"):
        amber.score([record], data=data, nouns="spacy")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_extract_never_raises(text: str) -> None:
    assert amber.extract(text, {"type": "discriminative-relation"}) in ("Yes", "No")
    assert amber.extract(text, {"type": "generative"}) == text
    assert amber.extract(text) in ("Yes", "No")


def test_load_the_official_layout(data: Path) -> None:
    records = amber.load(data.parent)
    assert [r["id"] for r in records] == list(range(1, 9))
    assert records[0]["truth"] == ["dog", "grass"] and records[0]["image_path"].endswith("image/AMBER_1.jpg")
    assert amber.build_prompt(records[0]) == "Describe this image."
    assert amber.build_prompt(records[2]) == "Question 3? Please answer yes or no."
    assert [r["id"] for r in amber.load(data, "discriminative")] == list(range(3, 9))
    assert amber.load(data.parent, limit=1)[0]["data_dir"] == str(data)


def test_load_errors_name_the_file(data: Path, tmp_path: Path) -> None:
    with pytest.raises(KitError, match="no Hugging Face copy"):
        amber.load("junyangwang0410/AMBER")
    with pytest.raises(KitError, match="no annotations.json"):
        amber.load(tmp_path)
    broken = [dict(a) for a in ANNOTATIONS]
    broken[1]["id"] = 5
    (data / "annotations.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(KitError, match=r"annotations\.json: item 1 should annotate id 2, holds 5"):
        amber.load(data.parent)
    broken[1] = {**ANNOTATIONS[1], "truth": ["unicorn"]}
    (data / "annotations.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(KitError, match=r"id 2: annotated object 'unicorn' is not a key of relation\.json"):
        amber.score([{**broken[1], "response": "A man."}], data=data)


def test_cli_scores_the_official_response_file(data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    responses = [{"id": 1, "response": "A dog on the grass."}, {"id": 3, "response": "No"},
                 {"id": 4, "response": "yes"}]
    path = tmp_path / "responses.json"
    path.write_text(json.dumps(responses), encoding="utf-8")
    assert main(["score", "amber", str(path), "--data", str(data.parent), "--nouns", "vocabulary",
                 "--similarity", "exact"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["generative"]["CHAIR"] == 0.0 and result["discriminative"]["Accuracy"] == 50.0
    assert result["noun_extractor"] == "vocabulary"
    assert main(["score", "amber", str(path), "--data", str(data), "--extract"]) == 0
    assert json.loads(capsys.readouterr().out)["discriminative"]["Accuracy"] == 100.0
    path.write_text(json.dumps([{"id": 99, "response": "No"}]), encoding="utf-8")
    assert main(["score", "amber", str(path), "--data", str(data)]) == 2
    assert "id 99 is not one of the 8 annotated ids" in capsys.readouterr().err
