"""MathV360K, the source of the teacher's questions: reading it (``Zhiqiang007/MathV360K``:
``train_samples_all_tuning.json``, rows with ``id``, ``image`` and ``conversations`` [human question with
``<image>``, gpt answer]; arXiv 2501.05662 and the authors' ``train/generate_data.py``, which read the same
fields), the ``Choices:`` block of its multiple-choice questions, and whether a predicted answer matches the
gold one."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kit.core.paths import is_hub_id
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


def question_text(record: dict) -> str:
    """The question with its choices in MathV360K's style ("Choices:\\n(A) ...")."""
    text = record["question"]
    return f"{text}\n{choices_block(record['choices'])}" if record.get("choices") else text


def choices_block(choices: list[str]) -> str:
    """The choice lines of MathV360K's (and MathVista's) multiple-choice questions: 'Choices:\n(A) x\n(B) y'.
    ``parse_choices`` reads them back."""
    return "\n".join(["Choices:"] + [f"({chr(ord('A') + i)}) {choice}" for i, choice in enumerate(choices)])


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
    if is_hub_id(text):
        return _download(text, revision)
    raise KitError(f"MathV360K source {text} is neither a folder, a file nor a hub id")


def _download(repo_id: str, revision: str | None = None) -> Path:
    """The hub dataset's question file, with its image archive unpacked beside it into data_images/ (once,
    resumably, dropping the archive's own top-level data_images/; paper profile only)."""
    from kit.eval.benchmarks._common import extract_archive, hub_snapshot

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
    report: Any  # kit.eval.benchmarks._common.RowReport


def read_source(source: str | Path, limit: int | None = None, *, skip_invalid: bool = False,
                revision: str | None = None) -> SourceLoad:
    """MathV360K rows as ``SourceItem``s, in file order, of the first ``limit`` rows when given, with a report.

    A row without an id, an image field, or a human question and a gpt answer is an error naming the file and
    row (the file is damaged, not the data noisy); ``skip_invalid`` counts such rows by reason instead and
    leaves them out. Unreadable images, duplicates and answer types are the source filters' business
    (``kit.casseat.selection``), but when the image files of more than half the rows are missing the images are not
    where the kit looks (``IMAGE_FOLDERS``): that is a ``KitError`` naming the folders and a missing path."""
    from kit.eval.benchmarks._common import BadRow, RowReport

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
    from kit.eval.benchmarks._common import BadRow

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
    (``kit.eval.benchmarks.mathvista.normalize_extracted_answer``). For a multiple-choice question the prediction
    must name an option (its letter, "(B)", or its text); MathVista's nearest-choice fallback is not used,
    because it would accept any text."""
    from kit.eval.benchmarks import mathvista

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
