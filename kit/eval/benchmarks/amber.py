"""AMBER: an LLM-free hallucination benchmark on 1,004 images. The generative task asks "Describe this
image." of every image (ids 1-1004) and checks the objects the description names against the image's
annotated objects; the discriminative task asks yes/no questions about existence, attributes (state,
number, action) and relations (ids 1005-15220).

Every rule follows the official junyangwang0410/AMBER ``inference.py`` (commit 5e1fd52f8ea6), with its
data files ``data/annotations.json``, ``data/relation.json`` (the word association), ``data/safe_words.txt``
and ``data/metrics.txt`` (the counters' initial values):

Generative (``generative_counts`` is ``main``'s loop body for one response, line for line):

- the response's nouns: ``extract_nouns`` (nltk ``word_tokenize``, ``pos_tag``, the tags starting with
  ``NN``, each ``WordNetLemmatizer().lemmatize``d), kept only when they are "hallucination words" (a key
  or an associated word of relation.json);
- a noun in safe_words.txt is skipped; a noun equal to an annotated object ("truth") or to one of its
  associated words covers that object (the first match in the list "associated words of every truth
  object, then the truth objects" decides which object, a quirk kept as it is); a noun equal to a
  "hallu" object (or its associated word) marks that object, and then, without stopping, the noun is
  compared with every hallu word and every truth word by word-vector similarity (spaCy
  ``en_core_web_lg``, ``similarity > 0.8``): a similar hallu word marks its object, a similar truth word
  covers its object and clears the noun; a noun that no truth word cleared is a hallucinated mention;
- CHAIR = hallucinated mentions / kept nouns, Cover = covered truth objects / truth objects, Hal = 100 -
  responses without a hallucinated mention / responses, Cog = marked hallu objects / hallu objects.

Discriminative: the response must be exactly ``Yes`` or ``No`` (anything else is wrong and is no "No"
answer); "no" is the positive class: Accuracy = right / questions, Precision = (answered No and truth
no) / answered No, Recall = (answered No and truth no) / truth no, F1 = 2PR / (P + R + 0.0001) on the
percentages rounded to one decimal (+0.001 for existence, as the official code has it). Types:
``discriminative-hallucination`` is existence, ``discriminative-attribute-state|number|action`` the
attribute sub-dimensions, and every other type (``discriminative-relation`` and ``relation`` in the
released annotations) relation.

Every counter starts as in metrics.txt (each ``*_num`` at 0.001, so an empty dimension gives 0 rather
than a division by zero) and every reported number is rounded to one decimal, as printed. Dimensions
without questions are left out of the output instead of printed as 0.0.

AMBER Score = (100 - CHAIR + F1) / 2 with the overall discriminative F1: the AMBER paper's definition
(Wang et al., arXiv:2311.07397, "AMBER Score = 1/2 x (1 - CHAIR + F1)", here on percentages); it is not
computed by inference.py.

Noun extraction and synonym similarity, the explicit choice (``score(..., nouns=, similarity=)``, and
``noun_extractor`` / ``synonym_similarity`` in every result):

- ``nouns="nltk"``: the official ``extract_nouns``; needs the nltk package and its data (punkt,
  averaged_perceptron_tagger, wordnet), which nltk downloads from GitHub at run time: on an offline
  machine they are missing and ``"nltk"`` is a ``KitError``;
- ``nouns="vocabulary"``: the documented deterministic fallback. Tokens are runs of letters (with inner
  hyphens), case kept as nltk keeps it; a token is a noun when it, or one of WordNet's noun suffix
  rewrites (``morphy``: -s, -ses, -ves/-f, -xes, -zes, -ches, -shes, -men/-man, -ies/-y, plus a few
  irregular plurals), is a hallucination word, the shortest such form being its lemma (what
  ``lemmatize`` returns). It differs from nltk where a vocabulary word is used as a non-noun ("square"
  as an adjective) and where WordNet's lexicon picks another lemma ("leaves" -> "leaf");
- ``nouns="auto"`` (default): nltk when it and its data are installed, else the fallback;
- ``similarity="spacy"``: ``en_core_web_lg`` vectors (the official; the model comes from GitHub, so it is
  usually absent offline), ``"exact"``: 1.0 for the same word and 0.0 otherwise (what spaCy returns for
  identical words, and a lower bound on its synonym matches), ``"auto"``: spaCy when the model loads,
  else exact.

The tiny world's AMBER analogue names objects only with a closed vocabulary of nouns with regular
plurals (its own relation.json and safe_words.txt in AMBER's schema), for which the fallback and nltk
should find the same nouns and where no two distinct words are synonyms; it could not be checked
against nltk here because nltk's data cannot be installed offline.

Extraction and prompt (choices, not official rules): ``extract`` returns a generative response
unchanged and maps a discriminative response to ``Yes``/``No`` by POPE's official rule (first sentence;
``No``/``not``/``no`` -> No, else Yes; AMBER's README leaves that conversion to the user). The query is
sent as released ("Describe this image."; "Is there a cloud in this image?"), discriminative queries
followed by " Please answer yes or no.".

On-disk layout (the repository): ``<root>/data/annotations.json`` (a list whose item ``id - 1`` is
``{"id", "type", "truth", "hallu"}`` for generative and ``{"id", "type", "truth": "yes"|"no"}`` for
discriminative ids), ``<root>/data/query/query_<split>.json`` (``[{"id", "image", "query"}]``; split
``all``, ``generative``, ``discriminative``, ``discriminative-existence``, ``-attribute``, ``-relation``),
``relation.json``, ``safe_words.txt``; ``<root>`` may also be the ``data`` folder itself. Images
(``AMBER_<n>.jpg``) are looked up in ``<root>/image``, ``<root>/images`` and ``<root>``. There is no
Hugging Face copy with the annotations: ``HUB_ID`` names the repository, and loading it by that id is
a ``KitError`` saying to download it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.core.paths import is_hub_id
from kit.errors import KitError
from kit.eval.benchmarks import Metric, Outputs, _common
from kit.eval.benchmarks import pope as _pope

NAME = "amber"
HUB_ID = "junyangwang0410/AMBER"  # the GitHub repository: AMBER has no Hugging Face dataset copy
SPLITS = ("all", "generative", "discriminative", "discriminative-existence", "discriminative-attribute",
          "discriminative-relation")
DEFAULT_SPLIT = "all"
TITLE = "AMBER"  # the benchmark's name as the papers write it
# The numbers the papers' tables report (kit.eval.evaluate.metrics_table's columns, in this order).
HEADLINES = (Metric("AMBER score", ("amber_score",)),
             Metric("AMBER CHAIR", ("generative", "CHAIR"), higher_is_better=False),  # hallucinated objects
             Metric("AMBER F1", ("discriminative", "F1")))
# The one column that stands for the benchmark where a single number per benchmark is needed (EACO's
# "average over benchmarks"): AMBER's own overall score ((100 - CHAIR + F1) / 2).
HEADLINE_METRIC = "AMBER score"
GENERATIVE = "generative"
EXISTENCE = "discriminative-hallucination"
SIMILARITY_THRESHOLD = 0.8  # inference.py --similarity_score default
DISCRIMINATIVE_SUFFIX = " Please answer yes or no."
NOUN_EXTRACTORS = ("auto", "nltk", "vocabulary")
SIMILARITIES = ("auto", "spacy", "exact")
SPACY_MODEL = "en_core_web_lg"
# metrics.txt: every *_num counter starts at 0.001, every *_score counter at 0.
_NUM0 = 0.001
# annotation type -> inference.py's counter prefix
_PREFIX = {"discriminative-attribute-state": "as_qa", "discriminative-attribute-number": "an_qa",
           "discriminative-attribute-action": "aa_qa", EXISTENCE: "ha_qa"}


def record_id(record: Mapping[str, Any]) -> str:
    return str(record.get("id", "?"))


# ------------------------------------------------------------------------------------------- resources
@dataclass(frozen=True)
class Resources:
    """relation.json, safe_words.txt and annotations.json of one AMBER data folder."""

    data_dir: Path
    association: dict[str, list[str]]
    hallucination_words: frozenset[str]
    safe_words: frozenset[str]
    annotations: list[dict]


def data_dir(source: str | Path) -> Path:
    """The folder holding annotations.json: ``<source>/data`` or ``<source>`` itself."""
    root = _common.local_root(source, NAME, HUB_ID)
    for candidate in (root / "data", root):
        if (candidate / "annotations.json").is_file():
            return candidate
    raise KitError(f"amber: no annotations.json in {root / 'data'} or {root}")


@functools.lru_cache(maxsize=8)
def _read_resources(folder: str, stamp: tuple) -> Resources:
    path = Path(folder)
    association = _common.read_json(path / "relation.json")
    if not isinstance(association, Mapping) or not all(
            isinstance(v, list) and all(isinstance(w, str) for w in v) for v in association.values()):
        raise KitError(f"{path / 'relation.json'}: expected an object word -> list of associated words")
    words = set(association)
    for associated in association.values():
        words.update(associated)
    safe_path = path / "safe_words.txt"
    if not safe_path.is_file():
        raise KitError(f"{safe_path}: file not found")
    # inference.py: line.split('\n')[0] for every line of the file
    safe = frozenset(line.split("\n")[0] for line in safe_path.read_text(encoding="utf-8").splitlines(True))
    annotations = _common.read_json(path / "annotations.json")
    if not isinstance(annotations, list):
        raise KitError(f"{path / 'annotations.json'}: expected a list of annotations")
    return Resources(path, dict(association), frozenset(words), safe, annotations)


def read_resources(folder: str | Path) -> Resources:
    """The AMBER data files of ``folder`` (cached while the files are unchanged)."""
    path = Path(folder).resolve()
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(path.glob("*")) if p.is_file())
    return _read_resources(str(path), stamp)


def annotation(resources: Resources, item_id: Any, where: str | Path) -> dict:
    """inference.py's ``ground_truth[id - 1]``, checked to carry that id."""
    if isinstance(item_id, bool) or not isinstance(item_id, int) or not 1 <= item_id <= len(resources.annotations):
        raise KitError(f"{where}: id {item_id!r} is not one of the {len(resources.annotations)} annotated ids")
    entry = resources.annotations[item_id - 1]
    if not isinstance(entry, Mapping) or entry.get("id") != item_id:
        raise KitError(f"{resources.data_dir / 'annotations.json'}: item {item_id - 1} should annotate id "
                       f"{item_id}, holds {entry.get('id') if isinstance(entry, Mapping) else entry!r}")
    _common.require_fields(entry, ("type", "truth"), resources.data_dir / "annotations.json", str(item_id))
    if entry["type"] == GENERATIVE:
        _common.require_fields(entry, ("hallu",), resources.data_dir / "annotations.json", str(item_id))
    return dict(entry)


# ----------------------------------------------------------------------------------------------- loading
def load(
    source: str | Path,
    split: str = DEFAULT_SPLIT,
    limit: int | None = None,
    check_images: bool = True,
    cache_dir: Path | None = None,
) -> list[dict]:
    """The queries of ``split`` (``query_<split>.json``) joined with their annotations. Records: ``id``,
    ``image``, ``query``, ``type``, ``truth`` (and ``hallu`` for generative ids), ``data_dir`` (the data
    folder, read again by ``score``) and ``image_path``."""
    if split not in SPLITS:
        raise KitError(f"amber: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if is_hub_id(source):
        raise KitError(f"amber: {source!r} has no Hugging Face copy with annotations; download the "
                       "junyangwang0410/AMBER repository (data/) and its images, and pass that folder")
    data = data_dir(source)
    root = data.parent if data.name == "data" else data
    resources = read_resources(data)
    query_path = data / "query" / f"query_{split}.json"
    queries = _common.read_json(query_path)
    if not isinstance(queries, list):
        raise KitError(f"{query_path}: expected a list of queries, got {type(queries).__name__}")
    records = []
    for position, query in enumerate(queries):
        rid = record_id(query) if isinstance(query, Mapping) else f"#{position}"
        _common.require_fields(query, ("id", "image", "query"), query_path, rid)
        record = {**annotation(resources, query["id"], query_path), **query, "data_dir": str(data)}
        record["image_path"] = _common.resolve_image(root / "image", query["image"], query_path, rid, check_images,
                                                     root / "images", root)
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return _common.limited(records, limit)


# ------------------------------------------------------------------------------------------------ prompt
def build_prompt(record: Mapping[str, Any]) -> str:
    """The released query; discriminative queries ask for yes or no."""
    query = str(record["query"]).strip()
    if record.get("type") == GENERATIVE:
        return query
    return f"{query}{DISCRIMINATIVE_SUFFIX}"


# -------------------------------------------------------------------------------------------- extraction
def extract(response: str, record: Mapping[str, Any] | None = None) -> str:
    """A generative response unchanged; otherwise ``"Yes"`` or ``"No"`` by POPE's rule. Never raises."""
    text = response if isinstance(response, str) else ""
    if record is not None and record.get("type") == GENERATIVE:
        return text
    return "Yes" if _pope.extract(text) == "yes" else "No"


# ----------------------------------------------------------------------------------- nouns and synonyms
NounExtractor = Callable[[str], list[str]]
Similarity = Callable[[str, str], float]

# WordNet's noun rewrites (nltk.corpus.reader.wordnet MORPHOLOGICAL_SUBSTITUTIONS[NOUN]) and a few
# irregular plurals of WordNet's noun.exc.
_NOUN_SUFFIXES = (("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"),
                  ("shes", "sh"), ("men", "man"), ("ies", "y"))
_IRREGULAR = {"children": "child", "geese": "goose", "mice": "mouse", "feet": "foot", "teeth": "tooth",
              "oxen": "ox", "dice": "die", "lice": "louse"}
_TOKEN = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


def vocabulary_nouns(vocabulary: Iterable[str]) -> NounExtractor:
    """The deterministic fallback for ``extract_nouns`` (see the module docstring)."""
    words = frozenset(vocabulary)

    def nouns(text: str) -> list[str]:
        found = []
        for token in _TOKEN.findall(text):
            forms = {token}
            forms.update(token[: len(token) - len(old)] + new for old, new in _NOUN_SUFFIXES if token.endswith(old))
            if token in _IRREGULAR:
                forms.add(_IRREGULAR[token])
            known = sorted((f for f in forms if f in words), key=lambda f: (len(f), f))
            if known:
                found.append(known[0])
        return found

    return nouns


def nltk_nouns() -> NounExtractor | None:
    """inference.py's ``extract_nouns`` when nltk and its data (tokenizer, tagger, WordNet) are installed;
    ``None`` otherwise."""
    try:
        import nltk
        from nltk.stem import WordNetLemmatizer
    except ImportError:
        return None
    lemmatizer = WordNetLemmatizer()

    def nouns(text: str) -> list[str]:
        tokens = nltk.word_tokenize(text)
        tagged = nltk.pos_tag(tokens)
        return [lemmatizer.lemmatize(word) for word, pos in tagged if pos.startswith("NN")]

    try:
        nouns("A dog sits on the grass.")  # the data files load lazily: probe them once
    except LookupError:
        return None
    return nouns


def spacy_similarity() -> Similarity | None:
    """``nlp(word1).similarity(nlp(word2))`` with ``en_core_web_lg`` when it loads, else ``None``."""
    try:
        import spacy

        nlp = spacy.load(SPACY_MODEL)
    except (ImportError, OSError):
        return None
    doc = functools.lru_cache(maxsize=None)(nlp)

    def similarity(word1: str, word2: str) -> float:
        return float(doc(word1).similarity(doc(word2)))

    return similarity


def exact_similarity(word1: str, word2: str) -> float:
    """1.0 for the same word, else 0.0."""
    return 1.0 if word1 == word2 else 0.0


def _choose_nouns(nouns: str | NounExtractor, resources: Resources) -> tuple[NounExtractor, str]:
    if callable(nouns):
        return nouns, getattr(nouns, "__name__", "custom")
    if nouns not in NOUN_EXTRACTORS:
        raise KitError(f"amber: unknown noun extractor {nouns!r}; expected one of {', '.join(NOUN_EXTRACTORS)}")
    if nouns in ("auto", "nltk"):
        official = nltk_nouns()
        if official is not None:
            return official, "nltk"
        if nouns == "nltk":
            raise KitError("amber: nouns='nltk' needs the nltk package with its punkt, averaged_perceptron_tagger "
                           "and wordnet data (python -m nltk.downloader ...), which are not installed")
    return vocabulary_nouns(resources.hallucination_words), "vocabulary"


def _choose_similarity(similarity: str | Similarity) -> tuple[Similarity, str]:
    if callable(similarity):
        return similarity, getattr(similarity, "__name__", "custom")
    if similarity not in SIMILARITIES:
        raise KitError(f"amber: unknown similarity {similarity!r}; expected one of {', '.join(SIMILARITIES)}")
    if similarity in ("auto", "spacy"):
        official = spacy_similarity()
        if official is not None:
            return official, f"spacy:{SPACY_MODEL}"
        if similarity == "spacy":
            raise KitError(f"amber: similarity='spacy' needs spaCy with the {SPACY_MODEL} model "
                           f"(python -m spacy download {SPACY_MODEL}), which is not installed")
    return exact_similarity, "exact"


# ------------------------------------------------------------------------------------------------ scoring
def _mark(flags: list[int], j: int, tail: int) -> None:
    # An associated word (before the last ``tail`` entries) marks the object whose index it stores.
    if j < (len(flags) - tail):
        flags[flags[j] + len(flags) - tail] = 1
    else:
        flags[j] = 1


def generative_counts(nouns: list[str], truth: list[str], hallu: list[str], resources: Resources,
                      similar: Callable[[str, str], bool], where: str = "amber") -> tuple[list[int], list[int],
                                                                                         list[int]]:
    """inference.py's generative loop for one response: (flag per kept noun, 1 = hallucinated; covered
    flag per truth object; marked flag per hallu object)."""
    association = resources.association
    for word in list(truth) + list(hallu):
        if word not in association:
            raise KitError(f"{where}: annotated object {word!r} is not a key of relation.json")
    after_process_nouns = [noun for noun in nouns if noun in resources.hallucination_words]

    safe_words: list[str] = []
    safe_list: list[int] = []
    for idx, word in enumerate(truth):
        safe_words += association[word]
        safe_list += [idx] * len(association[word])
    ha_words: list[str] = []
    ha_list: list[int] = []
    for idx, word in enumerate(hallu):
        ha_words += association[word]
        ha_list += [idx] * len(association[word])
    safe_words += truth
    safe_len = len(truth)
    safe_list += [0] * safe_len
    safe_flag_list = [0] * len(after_process_nouns)
    ha_words += hallu
    ha_len = len(hallu)
    ha_list += [0] * ha_len

    for idx, noun in enumerate(after_process_nouns):
        if noun in resources.safe_words:
            continue
        if noun in safe_words:
            for j in range(len(safe_words)):
                if noun == safe_words[j]:
                    _mark(safe_list, j, safe_len)
                    break
            continue
        if noun in ha_words:
            for j in range(len(ha_words)):
                if noun == ha_words[j]:
                    _mark(ha_list, j, ha_len)
                    break
        for j, check_word in enumerate(ha_words):
            if similar(noun, check_word):
                _mark(ha_list, j, ha_len)
                break
        flag = False
        for j, check_word in enumerate(safe_words):
            if similar(noun, check_word):
                flag = True
                _mark(safe_list, j, safe_len)
                break
        if flag:
            continue
        safe_flag_list[idx] = 1
    # The official slices [-len:]; with len 0 that is the whole (then empty) list.
    return safe_flag_list, safe_list[-safe_len:], ha_list[-ha_len:]


def _precision_recall_f1(correct: float, num: float, ans_no_score: float, ans_no_num: float, no_score: float, no_num: float,
         epsilon: float) -> dict:
    accuracy = round(correct / num * 100, 1)
    precision = round(ans_no_score / ans_no_num * 100, 1)
    recall = round(no_score / no_num * 100, 1)
    f1 = round(2 * (precision / 100) * (recall / 100) / ((precision / 100) + (recall / 100) + epsilon) * 100, 1)
    return {"Accuracy": accuracy, "Precision": precision, "Recall": recall, "F1": f1}


def score(
    records: Iterable[Mapping[str, Any]],
    where: str = "amber records",
    nouns: str | NounExtractor = "auto",
    similarity: str | Similarity = "auto",
    data: str | Path | Resources | None = None,
    threshold: float = SIMILARITY_THRESHOLD,
) -> dict:
    """CHAIR, Cover, Hal, Cog (``generative``), Accuracy/Precision/Recall/F1 overall and per dimension
    (``discriminative``) and the AMBER score. Each record holds ``id``, ``type`` and ``truth`` (plus
    ``hallu`` for generative ids) and ``prediction`` (from ``extract``) or ``response``; ``data`` (or
    the records' ``data_dir``) is the folder with relation.json and safe_words.txt."""
    records = list(records)
    if not records:
        raise KitError(f"{where}: no records to score")
    if isinstance(data, Resources):
        resources = data
    else:
        folder = data if data is not None else next((r.get("data_dir") for r in records
                                                     if isinstance(r, Mapping) and r.get("data_dir")), None)
        if folder is None:
            raise KitError(f"{where}: no AMBER data folder (give data= or records with 'data_dir')")
        resources = read_resources(folder)

    counters = {name: (_NUM0 if name.endswith("_num") else 0) for name in (
        "chair_score", "chair_num", "safe_cover_score", "safe_cover_num", "hallu_cover_score", "hallu_cover_num",
        "non_hallu_score", "non_hallu_num")}
    prefixes = ("qa", "as_qa", "an_qa", "aa_qa", "ha_qa", "asso_qa")
    for prefix in prefixes:
        for name in ("correct", "no", "ans_no"):
            counters[f"{prefix}_{name}_score"] = 0
            counters[f"{prefix}_{name}_num"] = _NUM0
    extractor_name = similarity_name = None
    if any(isinstance(r, Mapping) and r.get("type") == GENERATIVE for r in records):
        # Chosen once, and only when there is a description to read (the discriminative part needs neither).
        extractor, extractor_name = _choose_nouns(nouns, resources)
        similar_fn, similarity_name = _choose_similarity(similarity)

        def similar(word1: str, word2: str) -> bool:
            return similar_fn(word1, word2) > threshold

    generative = discriminative = not_yes_no = 0
    seen: set[str] = set()
    for position, record in enumerate(records):
        rid = record_id(record) if isinstance(record, Mapping) else f"#{position}"
        _common.require_fields(record, ("id", "type", "truth"), where, rid)
        if rid in seen:
            raise KitError(f"{where}: id {rid} appears twice")
        seen.add(rid)
        if "prediction" in record:
            response = record["prediction"]
        elif "response" in record:
            response = record["response"]
        else:
            raise KitError(f"{where}: id {rid} has neither 'prediction' nor 'response'")
        kind = record["type"]
        if kind == GENERATIVE:
            _common.require_fields(record, ("hallu",), where, rid)
            if not isinstance(record["truth"], list) or not isinstance(record["hallu"], list):
                raise KitError(f"{where}: generative id {rid} needs lists 'truth' and 'hallu'")
            text = response if isinstance(response, str) else ""
            flags, covered, marked = generative_counts(extractor(text), record["truth"], record["hallu"], resources,
                                                       similar, f"{where}: id {rid}")
            counters["chair_score"] += sum(flags)
            counters["chair_num"] += len(flags)
            counters["safe_cover_score"] += sum(covered)
            counters["safe_cover_num"] += len(covered)
            counters["hallu_cover_score"] += sum(marked)
            counters["hallu_cover_num"] += len(marked)
            if sum(flags) == 0:
                counters["non_hallu_score"] += 1
            counters["non_hallu_num"] += 1
            generative += 1
            continue
        truth = record["truth"]
        if truth not in ("yes", "no"):
            raise KitError(f"{where}: discriminative id {rid} has truth {truth!r}, expected 'yes' or 'no'")
        discriminative += 1
        not_yes_no += response not in ("Yes", "No")
        prefix = _PREFIX.get(kind, "asso_qa")  # inference.py's final else: every other type is relation
        for p in ("qa", prefix):
            counters[f"{p}_correct_num"] += 1
            if truth == "yes":
                if response == "Yes":
                    counters[f"{p}_correct_score"] += 1
            else:
                counters[f"{p}_no_num"] += 1
                if response == "No":
                    counters[f"{p}_correct_score"] += 1
                    counters[f"{p}_no_score"] += 1
            if response == "No":
                counters[f"{p}_ans_no_num"] += 1
                if truth == "no":
                    counters[f"{p}_ans_no_score"] += 1

    result: dict[str, Any] = {"benchmark": NAME, "amber_score": None}
    if generative:
        c = counters
        result["generative"] = {
            "CHAIR": round(c["chair_score"] / c["chair_num"] * 100, 1),
            "Cover": round(c["safe_cover_score"] / c["safe_cover_num"] * 100, 1),
            "Hal": round(100 - c["non_hallu_score"] / c["non_hallu_num"] * 100, 1),
            "Cog": round(c["hallu_cover_score"] / c["hallu_cover_num"] * 100, 1),
            "responses": generative,
        }
        result["noun_extractor"] = extractor_name
        result["synonym_similarity"] = similarity_name
        result["similarity_threshold"] = threshold

    def dimension(prefixes_: tuple[str, ...], epsilon: float) -> dict:
        # Sums of the raw counters, initial 0.001s included, as the official attribute numbers are.
        c = {name: sum(counters[f"{p}_{name}"] for p in prefixes_)
             for name in ("correct_score", "correct_num", "ans_no_score", "ans_no_num", "no_score", "no_num")}
        metrics = _precision_recall_f1(c["correct_score"], c["correct_num"], c["ans_no_score"], c["ans_no_num"], c["no_score"],
                       c["no_num"], epsilon)
        metrics["questions"] = round(c["correct_num"] - _NUM0 * len(prefixes_))
        return metrics

    if discriminative:
        overall = dimension(("qa",), 0.0001)
        overall["not_yes_no"] = not_yes_no
        asked = {p: counters[f"{p}_correct_num"] > _NUM0 for p in prefixes}
        if asked["ha_qa"]:
            overall["existence"] = dimension(("ha_qa",), 0.001)
        attribute_prefixes = tuple(p for p in ("as_qa", "an_qa", "aa_qa") if asked[p])
        if attribute_prefixes:
            # the official sums the three sub-dimensions' counters, each starting at 0.001
            attribute = dimension(("as_qa", "an_qa", "aa_qa"), 0.0001)
            for p, sub in zip(("as_qa", "an_qa", "aa_qa"), ("state", "number", "action"), strict=True):
                if asked[p]:
                    attribute[sub] = dimension((p,), 0.0001)
            overall["attribute"] = attribute
        if asked["asso_qa"]:
            overall["relation"] = dimension(("asso_qa",), 0.0001)
        result["discriminative"] = overall
    if generative and discriminative:
        result["amber_score"] = round((100 - result["generative"]["CHAIR"] + result["discriminative"]["F1"]) / 2, 2)
    result["questions"] = generative + discriminative
    return result


def read_outputs(path: str | Path, *, data: str | Path, nouns: str = "auto", similarity: str = "auto",
                 extract_answers: bool = False) -> Outputs:
    """AMBER's response list (``[{'id', 'response'}]``, what the official ``inference.py`` reads) joined with the
    annotations of the AMBER repository (or its ``data/`` folder) ``data``, for ``score(..., data=<resources>,
    nouns=nouns, similarity=similarity)``. ``extract_answers`` (``kit score amber --extract``) first maps each
    response by ``extract`` (discriminative answers to Yes/No by POPE's rule); the official script counts
    anything but exactly ``Yes``/``No`` as wrong."""
    path = Path(path)
    items = _common.read_json(path)
    if not isinstance(items, list):
        raise KitError(f"{path}: expected AMBER's response list [{{'id', 'response'}}], got {type(items).__name__}")
    resources = read_resources(data_dir(data))
    records = []
    for position, item in enumerate(items):
        rid = record_id(item) if isinstance(item, Mapping) else f"#{position}"
        _common.require_fields(item, ("id", "response"), path, rid)
        record = {**annotation(resources, item["id"], path), "response": item["response"]}
        if extract_answers:
            record["prediction"] = extract(item["response"], record)
        records.append(record)
    return Outputs(records, str(path), {"data": resources, "nouns": nouns, "similarity": similarity})


# ----------------------------------------------------------------------------------------- foreign formats
# lmms-eval (tasks/amber_g, the generative task only): ``doc`` is the Kyunnilee/amber_g row without its image:
# question_id (the AMBER id), task_type, truth and hallu (the annotation's object lists). VLMEvalKit (AMBER, a Y/N
# dataset of the discriminative questions): columns index, question, answer (yes/no), category (the annotation
# type) and image_path. The word lists (relation.json, safe_words.txt) come from --data either way.
FOREIGN_RULES = {
    "lmms-eval": "inference.py's generative metrics (CHAIR, Cover, Hal, Cog) on filtered_resps[0] against the "
                 "doc's truth/hallu, with --data's relation.json and safe_words.txt",
    "vlmevalkit": "inference.py's discriminative metrics on the prediction column (exactly Yes/No unless --extract) "
                  "against the answer column, typed by the category column",
}


def from_lmms_eval(doc: Mapping[str, Any], response: str, sample: Mapping[str, Any], where: str) -> dict:
    from kit.eval.benchmarks import foreign

    _common.require_fields(doc, ("question_id", "truth", "hallu"), where, str(doc.get("question_id", "?")))
    kind = str(doc.get("task_type") or GENERATIVE)
    return {"id": foreign.whole(doc["question_id"], where, "question_id"), "type": kind, "truth": doc["truth"],
            "hallu": doc["hallu"], "response": response}


def from_vlmevalkit(row: Mapping[str, Any], where: str) -> dict:
    from kit.eval.benchmarks import foreign

    return {"id": foreign.whole(foreign.cell(row, "index", where), where, "index"),
            "type": str(foreign.cell(row, "category", where)),
            "truth": str(foreign.cell(row, "answer", where)).strip().lower(), "response": foreign.prediction(row)}


def foreign_options(fmt: str, records: list[dict], *, data: str | Path, nouns: str = "auto",
                    similarity: str = "auto", extract_answers: bool = False) -> dict:
    if extract_answers:
        for record in records:
            record["prediction"] = extract(record["response"], record)
    return {"data": read_resources(data_dir(data)), "nouns": nouns, "similarity": similarity}
