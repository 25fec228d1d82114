"""Teacher synthesis: the teacher answers MathV360K questions under the SEAT and Cas-SEAT prompts, and every
answer is written, parsed, to a resumable JSONL file.

::

    from kit.synthesis import load_source, synthesize
    from kit.generate import Sampling, make_engine
    items = load_source("data/tiny/mathv360k", limit=600)
    engine = make_engine("transformers", "data/models/tiny-qwen2vl-teacher", batch_size=32)
    summary = synthesize(engine, items, ["seat_synthesis", "cas_cot", "cas_reflection"], "run/synthesis.jsonl",
                         sampling=Sampling(max_new_tokens=256))

The source is MathV360K (``Zhiqiang007/MathV360K``: ``train_samples_all_tuning.json``, rows with ``id``,
``image`` and ``conversations`` [human question with ``<image>``, gpt answer]; arXiv 2501.05662 and the
authors' ``train/generate_data.py``, which read the same fields). The authors used a subset of about 30k.

Prompts (``kit.prompts``): ``seat_synthesis`` gives the teacher the question and the gold answer (SEAT's
integrated prompt); ``cas_cot`` asks for a chain of thought; ``cas_reflection`` is the follow-up turn
on that chain of thought, so it runs after ``cas_cot`` for the same item and sample, on every item (the
authors' code ran it on wrong items only: ``kit.deviations``).

One line per (item id, prompt id, sample index) holds the teacher, backend, prompt id, sampling settings
and the engine's effective decoding (``kit.generate.decoding_settings``),
the conversation sent, the raw text and its parse (``kit.seat.parse``: steps, self-evaluation blocks with
verdicts, final answer, problems). Lines are appended and fsynced one by one; a killed run started again
skips the keys already written, so nothing is lost or written twice.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from kit.errors import KitError

logger = logging.getLogger(__name__)

SOURCE_FILE = "train_samples_all_tuning.json"  # MathV360K's file name on the hub
IMAGE_ARCHIVE = "data_images.zip"  # MathV360K's images on the hub (5.84 GB)
# Image paths are relative to the folder or to its unzipped data_images/. The archive holds a top-level
# data_images/ (LLaVA-NeXT's data_convert_stage2_MathV360K.py unzips it inside MathV360K/ and reads
# MathV360K/data_images/<image>); the kit's own unpacking drops that folder, an unzip into data_images/ by
# hand (or by kit versions before it) does not: hence data_images/data_images/.
IMAGE_FOLDERS = ("", "data_images", "data_images/data_images")
MOST_MISSING = 0.5  # above this share of rows without an image file the layout, not the data, is wrong
SYNTHESIS_PROMPTS = ("seat_synthesis", "cas_cot", "cas_reflection")
KEY_FIELDS = ("item_id", "prompt_id", "sample")

_CHOICES = re.compile(r"\n?Choices:\s*\n?(.*)$", re.DOTALL)
_OPTION = re.compile(r"\(([A-H])\)\s*(.*?)(?=\s*\([A-H]\)|\n|$)", re.DOTALL)
_INTEGER = re.compile(r"^-?\d+$")
_FLOAT = re.compile(r"^-?\d+\.(\d+)$")


@dataclass
class SourceItem:
    """One MathV360K question, with what answer checking needs inferred from its text: the choices
    (MathV360K writes them into the question as "Choices:\\n(A) ..."), the answer type and precision."""

    id: str
    row: int  # 1-based position in the source file, for messages
    image: str
    question: str
    answer: str
    choices: list[str] | None
    answer_type: str  # integer | float | text
    precision: int | None

    @property
    def answer_kind(self) -> str:
        """multi_choice | integer | float | short_text (at most 3 words) | long_text."""
        if self.choices:
            return "multi_choice"
        if self.answer_type != "text":
            return self.answer_type
        return "short_text" if len(self.answer.split()) <= 3 else "long_text"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_choices(question: str) -> list[str] | None:
    """The options of a question that lists them after "Choices:" as "(A) ...", else ``None``."""
    match = _CHOICES.search(question)
    if not match:
        return None
    options = [text.strip() for _, text in _OPTION.findall(match.group(1))]
    return options or None


def _answer_type(answer: str) -> tuple[str, int | None]:
    if _INTEGER.match(answer):
        return "integer", None
    match = _FLOAT.match(answer)
    if match:
        return "float", len(match.group(1))
    return "text", None


def source_file(source: str | Path, revision: str | None = None) -> Path:
    """The MathV360K JSON file for a folder, a file, or a hub id (downloaded once to the hub cache, at
    ``revision``, by default the profile's pin)."""
    text = str(source)
    path = Path(text)
    if path.is_file():
        return path
    if path.is_dir():
        if not (path / SOURCE_FILE).is_file():
            raise KitError(f"{path} has no {SOURCE_FILE} (MathV360K's question file)")
        return path / SOURCE_FILE
    if text.count("/") == 1 and not text.startswith((".", "/")):
        return _download(text, revision)
    raise KitError(f"MathV360K source {text} is neither a folder, a file nor a hub id")


def _download(repo_id: str, revision: str | None = None) -> Path:
    """The hub dataset's question file, with its image archive unpacked beside it into data_images/ (once,
    resumably, dropping the archive's own top-level data_images/; paper profile only)."""
    from kit.benchmarks._common import extract_archive, hub_snapshot

    folder = hub_snapshot(repo_id, (SOURCE_FILE, IMAGE_ARCHIVE), "mathv360k", revision)
    if not (folder / SOURCE_FILE).is_file():
        raise KitError(f"mathv360k: hub dataset {repo_id} has no {SOURCE_FILE} (looked in {folder})")
    archive = folder / IMAGE_ARCHIVE
    if archive.is_file():
        extract_archive(archive, folder / "data_images", strip="data_images")
    return folder / SOURCE_FILE


@dataclass
class SourceLoad:
    """What ``read_source`` returns: the items, and a ``RowReport`` of the rows left out (``skip_invalid``) and of
    the items whose image file is missing (kept: the ``image_readable`` source filter removes and counts them)."""

    items: list[SourceItem]
    report: Any  # kit.benchmarks._common.RowReport


def read_source(source: str | Path, limit: int | None = None, *, skip_invalid: bool = False,
                revision: str | None = None) -> SourceLoad:
    """MathV360K rows as ``SourceItem``s, in file order, of the first ``limit`` rows when given, with a report.

    A row without an id, an image field, or a human question and a gpt answer is an error naming the file and
    row (the file is damaged, not the data noisy); ``skip_invalid`` counts such rows by reason instead and
    leaves them out. Unreadable images, duplicates and answer types are the source filters' business
    (``kit.selection``), but when the image files of more than half the rows are missing the images are not
    where the kit looks (``IMAGE_FOLDERS``): that is a ``KitError`` naming the folders and a missing path."""
    from kit.benchmarks._common import BadRow, RowReport

    path = source_file(source, revision)
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise KitError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(rows, list):
        raise KitError(f"{path}: expected a list of rows, found {type(rows).__name__}")
    folders = [path.parent / sub for sub in IMAGE_FOLDERS]
    report = RowReport(str(source), tried=[str(path), *(str(f) for f in folders)])
    items: list[SourceItem] = []
    missing = 0
    for number, row in enumerate(rows[: limit if limit is not None else len(rows)], start=1):
        report.read += 1
        try:
            item = _item(row, number, path)
        except BadRow as err:
            if not skip_invalid:
                raise
            report.note(err.reason, str(err))
            continue
        if not Path(item.image).is_file():
            missing += 1
            report.note("image_not_found", f"{path} row {number} (id {item.id}): {item.image}")
        items.append(item)
    report.kept = len(items)
    if report.read > report.kept or missing:
        logger.warning("mathv360k: %d of %d rows left out, %d without an image file: %s", report.read - report.kept,
                       report.read, missing, report.summary())
    if report.read - report.kept > MOST_MISSING * report.read:
        raise KitError(f"mathv360k: {report.read - report.kept} of the {report.read} rows of {path} are damaged: "
                       f"{report.summary()}")
    if items and missing > MOST_MISSING * len(items):
        example = report.examples["image_not_found"][0]
        raise KitError(f"mathv360k: the image files of {missing} of {len(items)} rows are missing, so the images "
                       f"are not where the kit looks ({', '.join(str(f) for f in folders)}); e.g. {example}. "
                       f"Unpack {IMAGE_ARCHIVE} so that the rows' image paths lie under one of those folders")
    return SourceLoad(items, report)


def load_source(source: str | Path, limit: int | None = None, *, skip_invalid: bool = False,
                revision: str | None = None) -> list[SourceItem]:
    """MathV360K rows as ``SourceItem``s: ``read_source(...).items`` (see there for what is checked)."""
    return read_source(source, limit, skip_invalid=skip_invalid, revision=revision).items


def _item(row: Any, number: int, path: Path) -> SourceItem:
    from kit.benchmarks._common import BadRow

    where = f"{path} row {number}"
    if not isinstance(row, dict) or "id" not in row:
        raise BadRow("no_id", f"{where}: no 'id'")
    where += f" (id {row['id']})"
    if not row.get("image"):
        raise BadRow("no_image", f"{where}: no 'image'")
    turns = row.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, dict) for t in turns[:2]):
        raise BadRow("no_conversation", f"{where}: 'conversations' needs a human question and a gpt answer")
    question = str(turns[0].get("value", "")).replace("<image>", "").strip()
    answer = str(turns[1].get("value", "")).strip()
    if not question:
        raise BadRow("no_question", f"{where}: the question (conversations[0].value) is empty")
    if not answer:
        raise BadRow("no_answer", f"{where}: no answer (conversations[1].value is empty)")
    answer_type, precision = _answer_type(answer)
    return SourceItem(str(row["id"]), number, _image_path(path.parent, str(row["image"])), question, answer,
                      parse_choices(question), answer_type, precision)


def _image_path(folder: Path, image: str) -> str:
    for sub in IMAGE_FOLDERS:
        candidate = folder / sub / image
        if candidate.is_file():
            return str(candidate)
    return str(folder / image)


# ------------------------------------------------------------------------------------------ answer checking
def answers_match(item: SourceItem, predicted: str | None) -> bool:
    """Whether ``predicted`` (a final answer) equals the item's gold answer through MathVista's normaliser
    (``kit.benchmarks.mathvista.normalize_extracted_answer``). For a multiple-choice question the prediction
    must name an option (its letter, "(B)", or its text); MathVista's nearest-choice fallback is not used,
    because it would accept any text."""
    from kit.benchmarks import mathvista

    if predicted is None or not str(predicted).strip():
        return False
    predicted = str(predicted).strip()
    if item.choices:
        chosen = _choice_named(predicted, item.choices)
        gold = _choice_named(item.answer, item.choices)
        return chosen is not None and chosen == gold
    if item.answer_type == "text":
        return _plain(predicted) == _plain(item.answer)
    normal = mathvista.normalize_extracted_answer(predicted, None, "free_form", item.answer_type, item.precision)
    gold = mathvista.normalize_extracted_answer(item.answer, None, "free_form", item.answer_type, item.precision)
    return normal is not None and normal == gold


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip(".").lower())


def _choice_named(text: str, choices: list[str]) -> str | None:
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    text = text.strip()
    match = re.fullmatch(r"\(?([A-Ha-h])\)?(?:[.:]?\s+(.*))?", text)
    if match and match.group(1).upper() in letters:
        named = choices[letters.index(match.group(1).upper())]
        if match.group(2) is None or _plain(match.group(2)) == _plain(named):
            return named
    for choice in choices:
        if _plain(choice) == _plain(text):
            return choice
    return None


# ------------------------------------------------------------------------------------------ synthesis
def chat_for(item: SourceItem, prompt_id: str, sample: int, cot_response: str | None = None):
    """The conversation a prompt sends for an item (``cas_reflection`` continues the CoT turn)."""
    from kit.generate import Chat
    from kit.prompts import get

    chat_id = f"{item.id}|{prompt_id}|{sample}"
    if prompt_id == "seat_synthesis":
        return Chat(chat_id, [get(prompt_id).format(question=item.question, answer=item.answer)], item.image)
    if prompt_id == "cas_cot":
        return Chat(chat_id, [get(prompt_id).format(question=item.question)], item.image)
    if prompt_id == "cas_reflection":
        if cot_response is None:
            raise KitError(f"item {item.id}: cas_reflection continues a cas_cot answer, and there is none")
        return Chat(chat_id, [get("cas_cot").format(question=item.question), cot_response, get(prompt_id).text],
                    item.image)
    raise KitError(f"synthesis: prompt {prompt_id!r} is not a synthesis prompt; choose from {', '.join(SYNTHESIS_PROMPTS)}")


def synthesize(
    engine: Any,
    items: list[SourceItem],
    prompt_ids: Iterable[str] = SYNTHESIS_PROMPTS,
    out_path: str | Path = "synthesis.jsonl",
    *,
    samples: int = 1,
    sampling: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate every (item, prompt, sample) not yet in ``out_path`` and append it there. Returns counts:
    ``written`` by this call, ``total`` lines, and per prompt the share well formed and answer-correct."""
    from kit.artifacts import JsonlAppender, check_resumed_settings
    from kit.generate import Sampling, engine_decoding
    from kit.seat import parse

    sampling = sampling or Sampling()
    prompt_ids = list(prompt_ids)
    unknown = [p for p in prompt_ids if p not in SYNTHESIS_PROMPTS]
    if unknown:
        raise KitError(f"synthesis: unknown prompt(s) {', '.join(unknown)}; choose from {', '.join(SYNTHESIS_PROMPTS)}")
    if "cas_reflection" in prompt_ids and "cas_cot" not in prompt_ids:
        raise KitError("synthesis: cas_reflection continues cas_cot; ask for both")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise KitError(f"synthesis: samples must be a whole number >= 1, not {samples!r}")
    if samples > 1 and sampling.temperature == 0:
        raise KitError("synthesis: samples > 1 with temperature 0 would repeat one greedy answer; raise the temperature")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise KitError(f"synthesis: item id {duplicate} appears twice in the source; run the duplicate filter first")

    # ``decoding``: what the engine sent (checkpoint defaults merged in), so files from two backends compare.
    settings = {"teacher": engine.model_label, "backend": engine.backend, "sampling": sampling.to_dict(),
                "decoding": engine_decoding(engine, sampling)}
    by_id = {item.id: item for item in items}
    written = 0
    with JsonlAppender(out_path, KEY_FIELDS) as appender:
        stored = {(r["item_id"], r["prompt_id"], r["sample"]): r for r in appender.records()}
        # An engine may recognise an older label of its own model (the openai engine's ``model@base_url``,
        # from before it dropped the server from its label): the file then goes on with the label it has.
        accepts_label = getattr(engine, "accepts_label", None)
        if stored and accepts_label is not None:
            written_label = next(iter(stored.values())).get("teacher")
            if written_label != settings["teacher"] and accepts_label(written_label):
                settings["teacher"] = written_label
        check_resumed_settings(appender.path, stored.values(), settings, "item_id")
        for prompt_id in [p for p in SYNTHESIS_PROMPTS if p in prompt_ids]:  # cas_cot before cas_reflection
            for sample in range(samples):
                chats = []
                for item in items:
                    if (item.id, prompt_id, sample) in stored:
                        continue
                    cot = stored.get((item.id, "cas_cot", sample), {}).get("response") \
                        if prompt_id == "cas_reflection" else None
                    chats.append(chat_for(item, prompt_id, sample, cot))
                if not chats:
                    continue
                # Each sample index has its own seed, so that seeded servers do not repeat one answer.
                settings_k = replace(sampling, seed=sampling.seed + sample)
                for chat, text in engine.generate(chats, settings_k, progress=progress):
                    item = by_id[chat.id.rsplit("|", 2)[0]]
                    parsed = parse(text, expect_blocks=prompt_id == "seat_synthesis")
                    record = {
                        "item_id": item.id, "prompt_id": prompt_id, "sample": sample, **settings,
                        "image": item.image, "question": item.question, "turns": chat.turns, "response": text, "parsed": parsed.to_dict(),
                        "gold": item.answer, "answer_correct": answers_match(item, parsed.answer),
                    }
                    appender.append(record)
                    stored[(item.id, prompt_id, sample)] = record
                    written += 1
    return {"written": written, **summarize(list(stored.values()))}


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The synthesis lines of ``path`` (a partial last line from a kill is skipped, as on resume)."""
    from kit.artifacts import JsonlAppender

    if not Path(path).is_file():
        raise KitError(f"{path} does not exist; run synthesis first")
    with JsonlAppender(path, KEY_FIELDS) as appender:
        return list(appender.records())


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per prompt: lines, the share well formed, the share whose final answer matches the gold answer, and
    the mean number of self-evaluation blocks and of Refine verdicts."""
    per_prompt: dict[str, dict[str, Any]] = {}
    for prompt_id in SYNTHESIS_PROMPTS:
        rows = [r for r in records if r["prompt_id"] == prompt_id]
        if not rows:
            continue
        n = len(rows)
        blocks = [len(r["parsed"]["evaluations"]) for r in rows]
        refines = [sum(e["verdict"] == "Refine" for e in r["parsed"]["evaluations"]) for r in rows]
        per_prompt[prompt_id] = {
            "n": n,
            "well_formed": round(100 * sum(r["parsed"]["well_formed"] for r in rows) / n, 2),
            "answer_correct": round(100 * sum(bool(r["answer_correct"]) for r in rows) / n, 2),
            "mean_blocks": round(sum(blocks) / n, 3),
            "mean_refine": round(sum(refines) / n, 3),
        }
    return {"total": len(records), "prompts": per_prompt}


# ------------------------------------------------------------------------------------------ the notebook stage
@dataclass(frozen=True)
class SynthesisConfig:
    """What notebook 01 synthesises (the profile's ``models.teacher``, ``datasets.mathv360k`` and
    ``synthesis:`` section). ``items``: the first N source rows, before the source filters. Where the teacher
    runs is ``engine_choice``: a ``kit.generate.EngineChoice``, the profile's ``engine:`` section shared by every
    generation stage (in process by default; ``openai``: the servers it lists for ``teacher``).
    ``batch_size`` applies to the transformers backend."""

    teacher: str
    source: str
    items: int | None = None
    batch_size: int = 16
    samples: int = 1
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    prompts: tuple[str, ...] = SYNTHESIS_PROMPTS
    engine_choice: Any = None  # kit.generate.EngineChoice | None (typed loosely: kit.generate is imported lazily)

    def sampling(self):
        from kit.generate import Sampling

        return Sampling(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                        seed=self.seed)

    def choice(self):
        """The ``EngineChoice`` the teacher runs on (the transformers backend when none was given)."""
        from kit.generate import EngineChoice

        if self.engine_choice is None:
            return EngineChoice()
        if not isinstance(self.engine_choice, EngineChoice):
            raise KitError(f"synthesis: engine_choice must be a kit.generate.EngineChoice, not "
                           f"{type(self.engine_choice).__name__}")
        return self.engine_choice

    def engine(self):
        from kit.generate import engine_for

        return engine_for(self.choice(), self.teacher, batch_size=self.batch_size)

    def key(self) -> dict[str, Any]:
        """What the synthesis depends on: every setting but the servers, and the teacher's and source's
        content when local."""
        from kit.artifacts import file_hash, fingerprint, tree_hash

        teacher = Path(self.teacher)
        settings = {field: value for field, value in asdict(self).items() if field != "engine_choice"}
        # The servers are where the work runs, not what it computes (the engine's label leaves them out too):
        # a synthesis started on two servers resumes in the same folder on four. The key keeps the fields the
        # synthesis stage had before the engine choice (``backend``; ``base_url`` as null; the removed in-process
        # vllm backend's ``tensor_parallel_size`` at its default 1), so that earlier runs' folders keep their hash.
        # A hub id is keyed with the commit it resolves to (kit.artifacts.fingerprint), so that a new upload or
        # another pinned revision is a new synthesis; a local one by its content, as before.
        backend = self.choice().backend
        return {**settings, "backend": backend, "base_url": None, "tensor_parallel_size": 1,
                "teacher_hash": tree_hash(teacher) if teacher.is_dir() else fingerprint(self.teacher),
                "source_hash": file_hash(source_file(self.source)) if Path(self.source).exists()
                else fingerprint(self.source)}


def summary_table(summary: dict[str, Any]):
    """``summarize``'s per-prompt numbers as a ``pandas.DataFrame`` in prompt order, with readable columns."""
    import pandas as pd

    rows = [{"prompt": p, **summary["prompts"][p]} for p in SYNTHESIS_PROMPTS if p in summary["prompts"]]
    table = pd.DataFrame(rows, columns=["prompt", "n", "well_formed", "answer_correct", "mean_blocks", "mean_refine"])
    return table.rename(columns={
        "n": "answers", "well_formed": "well formed %", "answer_correct": "answer = gold %",
        "mean_blocks": "self-evaluation blocks per answer", "mean_refine": "Refine verdicts per answer"})


def run_synthesis(config: SynthesisConfig, run_dir: str | Path, answer_kinds: Iterable[str] | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Notebook 01's stage: load the source, apply the source filters, synthesise into
    ``run_dir/synthesis-<hash>/records.jsonl`` (resumable), and mark the folder done. A finished folder is
    reused as it is. Returns the folder, the source filter counts and the synthesis summary."""
    from kit.artifacts import DONE_FILE, atomic_write_json, stage_dir
    from kit.selection import DEFAULT_ANSWER_KINDS, filter_source

    kinds = tuple(answer_kinds) if answer_kinds is not None else DEFAULT_ANSWER_KINDS
    params = {**config.key(), "answer_kinds": list(kinds)}
    folder = stage_dir(run_dir, "synthesis", params)
    if (folder / DONE_FILE).is_file():
        return json.loads((folder / DONE_FILE).read_text())
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "PARAMS.json", params)
    # Damaged rows of the 360k-row download are counted by reason and recorded rather than stopping the run
    # (unless most are damaged, or most images are missing: read_source refuses those).
    loaded = read_source(config.source, config.items, skip_invalid=True)
    items, counts, removed_by = filter_source(loaded.items, kinds, progress=progress)
    atomic_write_json(folder / "source_filters.json", {"counts": [c.to_dict() for c in counts],
                                                       "removed": removed_by, "source_rows": loaded.report.to_dict()})
    atomic_write_json(folder / "items.json", [item.to_dict() for item in items])
    summary = synthesize(config.engine(), items, config.prompts, folder / "records.jsonl", samples=config.samples,
                         sampling=config.sampling(), progress=progress)
    done = {"folder": str(folder), "params": params, "source_filters": [c.to_dict() for c in counts],
            "source_rows": loaded.report.to_dict(), "summary": {k: v for k, v in summary.items() if k != "written"}}
    atomic_write_json(folder / DONE_FILE, done)
    return json.loads((folder / DONE_FILE).read_text())  # as a later call reads it back


def load_items(folder: str | Path) -> list[SourceItem]:
    """The filtered source items a synthesis folder was run on."""
    path = Path(folder) / "items.json"
    if not path.is_file():
        raise KitError(f"{path} is missing; run the synthesis stage (notebook 01) first")
    return [SourceItem(**row) for row in json.loads(path.read_text())]
