"""Helpers shared by the benchmark modules: reading the official files with errors that name the file
and the record, resolving image paths, loading a Hugging Face hub copy (with its embedded images
written once to a cache folder so that every record can carry a plain ``image_path``), downloading a hub
repository's files and unpacking its image archive once (resumably), counting the bad rows of a large
source by reason, the answer text of a released answer line (``answer_text``, for the ``read_outputs`` of
POPE, SEED-Bench and ScienceQA) and the Levenshtein distance MathVista needs."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kit import REPO_DIR
from kit.errors import KitError

logger = logging.getLogger(__name__)

# Images embedded in hub datasets are written here once (data/cache/ is ignored by git).
HUB_IMAGE_CACHE = REPO_DIR / "data" / "cache" / "hub_images"

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def local_root(source: str | Path, benchmark: str, hub_example: str) -> Path:
    """The benchmark folder ``source`` as an absolute path, or a ``KitError`` saying what is wrong."""
    path = Path(source).expanduser()
    if not path.exists():
        raise KitError(
            f"{benchmark}: {source} is neither an existing folder nor a hub id like {hub_example!r}"
        )
    if not path.is_dir():
        raise KitError(f"{benchmark}: {path} is a file; expected the benchmark folder that holds it")
    return path.resolve()


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or broken file is a ``KitError`` naming it."""
    if not path.is_file():
        raise KitError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise KitError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from err
    except UnicodeDecodeError as err:
        raise KitError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err


def read_jsonl(path: Path) -> list[dict]:
    """Parse a JSON-lines file of objects (blank lines skipped); errors name the file and line."""
    if not path.is_file():
        raise KitError(f"{path}: file not found")
    records: list[dict] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise KitError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from err
                if not isinstance(record, dict):
                    raise KitError(f"{path}, line {lineno}: expected a JSON object, got {type(record).__name__}")
                records.append(record)
    except UnicodeDecodeError as err:
        raise KitError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    return records


def require_fields(record: Any, fields: Iterable[str], where: str | Path, record_id: str) -> None:
    """``KitError`` naming the file and the record when ``record`` is not an object holding ``fields``."""
    if not isinstance(record, Mapping):
        raise KitError(f"{where}: record {record_id} is a {type(record).__name__}, expected a JSON object")
    missing = [field for field in fields if field not in record]
    if missing:
        raise KitError(f"{where}: record {record_id} lacks the field(s) {', '.join(repr(m) for m in missing)}")


def answer_text(line: Mapping, where: str) -> str:
    """The model's answer in a released answer line: POPE's own answer files say ``answer``, LLaVA's ``text``,
    the kit's prediction files ``response`` (tried in the order text, answer, response). A line without one, or
    with one that is not text, is a ``KitError`` naming ``where``."""
    for key in ("text", "answer", "response"):
        if key in line:
            if not isinstance(line[key], str):
                raise KitError(f"{where}: '{key}' is a {type(line[key]).__name__}, expected text")
            return line[key]
    raise KitError(f"{where}: no answer text (a 'text', 'answer' or 'response' field)")


def resolve_image(
    root: Path, relative: str | None, where: Path, record_id: str, check: bool, *extra_roots: Path
) -> str | None:
    """Absolute path of an image given relative to ``root`` (or to one of ``extra_roots``, tried in
    turn); ``None`` stays ``None``. With ``check`` a missing image is a ``KitError`` naming the record."""
    if relative is None:
        return None
    if not isinstance(relative, str) or not relative:
        raise KitError(f"{where}: record {record_id} has an invalid image path {relative!r}")
    candidates = [base / relative for base in (root, *extra_roots)]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    if check:
        tried = ", ".join(str(c) for c in candidates)
        raise KitError(f"{where}: image of record {record_id} not found (looked for {tried})")
    return str(candidates[0].resolve())


def limited(records: list[dict], limit: int | None) -> list[dict]:
    if limit is None:
        return records
    if limit < 0:
        raise KitError(f"limit must be a non-negative number of records, got {limit}")
    return records[:limit]


def hub_rows(source: str, split: str, benchmark: str, *, revision: str | None = None,
             keep: tuple[str, Callable[[Any], bool]] | None = None) -> Iterator[dict]:
    """Rows of ``datasets.load_dataset(source, split=split)`` as dicts; failures become ``KitError``.

    ``revision``: the hub revision to read, by default the one the profile pins (``revisions:``).
    ``keep=(column, test)``: only the rows whose ``column`` passes ``test``, chosen from that column alone
    before any row is read, so that the images of the rows left out are never decoded."""
    from kit.core.artifacts import pinned_revision

    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a declared dependency
        raise KitError(f"{benchmark}: loading {source!r} from the hub needs the 'datasets' package") from err
    revision = revision or pinned_revision(source)
    # Passed only when set, so that a stand-in load_dataset(source, split) keeps working in tests.
    options = {"revision": revision} if revision else {}
    try:
        dataset = datasets.load_dataset(source, split=split, **options)
    except Exception as err:  # network, missing split, authentication: all reported in one line
        at = f" at revision {revision!r}" if revision else ""
        raise KitError(f"{benchmark}: could not load hub dataset {source!r} split {split!r}{at}: {err}") from err
    if keep is None:
        yield from dataset
        return
    column, test = keep
    if hasattr(dataset, "select") and column in getattr(dataset, "column_names", ()):
        # A datasets.Dataset decodes every feature of a row it yields; reading one column decodes none.
        wanted = [index for index, value in enumerate(dataset[column]) if test(value)]
        yield from dataset.select(wanted)
    else:
        yield from (row for row in dataset if test(row.get(column)))


def hub_snapshot(repo_id: str, patterns: Sequence[str], what: str, revision: str | None = None) -> Path:
    """The local folder of a hub dataset repository holding the files matching ``patterns``, downloaded once
    into the hub cache (``huggingface_hub.snapshot_download``) at ``revision`` (default: the profile's pin,
    else ``main``). While offline only the cache is read; a failure is a ``KitError`` naming the repository."""
    from huggingface_hub import snapshot_download

    from kit.core.artifacts import hub_cache_dir, hub_offline, pinned_revision

    revision = revision or pinned_revision(repo_id)
    offline = hub_offline()
    try:
        folder = snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=list(patterns),
                                   cache_dir=str(hub_cache_dir()), local_files_only=offline)
    except Exception as err:  # network, authentication, unknown repository or revision: one line
        at = f" at revision {revision!r}" if revision else ""
        hint = (" The hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and the files are not in the local "
                "cache; give a local folder instead." if offline else "")
        raise KitError(f"{what}: could not download {', '.join(patterns)} of hub dataset {repo_id}{at}: "
                       f"{err}.{hint}") from err
    return Path(folder)


EXTRACTED_MARKER = ".kit-extracted.json"
_JUNK = ("__MACOSX/",)  # macOS archive metadata, never data


def extract_archive(archive: Path, dest: Path, strip: str | None = None) -> Path:
    """Unpack the zip ``archive`` into the folder ``dest`` once and return ``dest``.

    ``strip``: when every file of the archive lies under one top-level folder of that name (``unzip`` would
    create ``dest/<strip>/...``), that folder is dropped, so the files land in ``dest`` whichever way the
    archive was made. An existing ``dest`` counts as unpacked (by an earlier run or by hand). Files are
    written to ``.<dest>.partial`` first, each through a temporary name; a killed run resumes there, skipping
    the files already complete, and the folder becomes ``dest`` (with ``.kit-extracted.json`` written last)
    only when every file is in."""
    import zipfile

    from kit.core.artifacts import _fsync_dir, atomic_write_json

    if dest.is_dir():
        return dest
    partial = dest.with_name(f".{dest.name}.partial")
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [info for info in zipped.infolist()
                       if not info.is_dir() and not info.filename.startswith(_JUNK)
                       and not PurePosixPath(info.filename).name.startswith("._")]
            names = [PurePosixPath(info.filename) for info in members]
            stripped = bool(strip) and bool(names) and all(len(n.parts) > 1 and n.parts[0] == strip for n in names)
            logger.info("unpacking %s (%d files) into %s", archive, len(members), dest)
            for info, name in zip(members, names, strict=True):
                parts = name.parts[1:] if stripped else name.parts
                if name.is_absolute() or ".." in parts or "\\" in info.filename or not parts:
                    raise KitError(f"{archive}: member {info.filename!r} would be written outside {dest}")
                target = partial.joinpath(*parts)
                if target.is_file() and target.stat().st_size == info.file_size:
                    continue  # unpacked before an interruption (each file appears only once complete)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                with zipped.open(info) as source, open(tmp, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                os.replace(tmp, target)
            atomic_write_json(partial / EXTRACTED_MARKER, {"archive": archive.name, "bytes": archive.stat().st_size,
                                                           "files": len(members), "stripped": strip if stripped else None})
    except zipfile.BadZipFile as err:
        raise KitError(f"{archive} is not a readable zip archive ({err}); delete it to download it again") from None
    except OSError as err:
        raise KitError(f"could not unpack {archive} into {partial}: {err}") from err
    os.replace(partial, dest)
    _fsync_dir(dest.parent)
    return dest


class BadRow(KitError):
    """A row of a large source that cannot be used; ``reason`` is a short name to count such rows by."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class RowReport:
    """What reading a large source found: rows ``read``, rows ``kept``, and ``problems`` counted by reason with
    the first few messages (file, row and id) as ``examples``; ``tried`` names the files and folders looked
    in. A stage records it, so that a run over 80k downloaded rows says which ones it left out and why."""

    source: str
    tried: list[str] = field(default_factory=list)
    read: int = 0
    kept: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    EXAMPLES = 3

    def note(self, reason: str, message: str) -> None:
        self.problems[reason] = self.problems.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.EXAMPLES:
            shown.append(message)

    def summary(self) -> str:
        parts = [f"{reason} {count} (e.g. {self.examples[reason][0]})" for reason, count in self.problems.items()]
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "tried": list(self.tried), "read": self.read, "kept": self.kept,
                "problems": dict(self.problems), "examples": {k: list(v) for k, v in self.examples.items()}}


def cache_image(image: Any, source: str, split: str, name: str, cache_dir: Path | None = None) -> str | None:
    """Write an image embedded in a hub row to ``<cache>/<source>/<split>/<name>`` once and return the
    absolute path. Accepts a PIL image, a ``{"bytes": ..., "path": ...}`` dict (an undecoded
    ``datasets.Image``), an existing file path, or ``None`` (no image)."""
    if image is None:
        return None
    if isinstance(image, str | Path):
        path = Path(image)
        return str(path.resolve()) if path.is_file() else None
    from kit.core.artifacts import atomic_write_bytes

    folder = (cache_dir or HUB_IMAGE_CACHE) / _SAFE_NAME.sub("_", source) / _SAFE_NAME.sub("_", split)
    stem = _SAFE_NAME.sub("_", name)
    if isinstance(image, Mapping):
        data = image.get("bytes")
        if data is None:
            original = image.get("path")
            return cache_image(original, source, split, name, cache_dir) if original else None
        suffix = Path(str(image.get("path") or "")).suffix or ".png"
        target = folder / f"{stem}{suffix}"
        if not target.is_file():
            atomic_write_bytes(target, bytes(data))
        return str(target.resolve())
    if hasattr(image, "save"):  # a PIL image
        target = folder / f"{stem}.png"
        if not target.is_file():
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            atomic_write_bytes(target, buffer.getvalue())
        return str(target.resolve())
    raise KitError(f"{source}: image of row {name} has an unsupported type {type(image).__name__}")


def levenshtein(a: str, b: str) -> int:
    """Edit distance with unit costs for insertion, deletion and substitution, on Unicode code points:
    the value ``Levenshtein.distance`` (python-Levenshtein, used by MathVista) returns for two str."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def most_common(values: Iterable[Any]) -> Any:
    """The most frequent value, the first seen among equals (a majority baseline's answer); None when empty."""
    counts: dict[Any, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None
