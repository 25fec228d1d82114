"""Helpers shared by the benchmark modules: reading the official files with errors that name the file
and the record, resolving image paths, loading a Hugging Face hub copy (with its embedded images
written once to a cache folder so that every record can carry a plain ``image_path``), and the
Levenshtein distance MathVista needs."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from kit import REPO_DIR
from kit.errors import KitError

logger = logging.getLogger(__name__)

# Images embedded in hub datasets are written here once (data/cache/ is ignored by git).
HUB_IMAGE_CACHE = REPO_DIR / "data" / "cache" / "hub_images"

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def is_hub_id(source: str | Path) -> bool:
    """A hub id has exactly one ``/``, does not start like a path and names no existing local path
    (the convention of docs/ARCHITECTURE.md)."""
    text = str(source)
    if Path(text).expanduser().exists():
        return False
    owner, _, name = text.partition("/")
    return text.count("/") == 1 and bool(owner) and bool(name) and not text.startswith((".", "~"))


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


def hub_rows(source: str, split: str, benchmark: str) -> Iterator[dict]:
    """Rows of ``datasets.load_dataset(source, split=split)`` as dicts; failures become ``KitError``."""
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a declared dependency
        raise KitError(f"{benchmark}: loading {source!r} from the hub needs the 'datasets' package") from err
    try:
        dataset = datasets.load_dataset(source, split=split)
    except Exception as err:  # network, missing split, authentication: all reported in one line
        raise KitError(f"{benchmark}: could not load hub dataset {source!r} split {split!r}: {err}") from err
    yield from dataset


def cache_image(image: Any, source: str, split: str, name: str, cache_dir: Path | None = None) -> str | None:
    """Write an image embedded in a hub row to ``<cache>/<source>/<split>/<name>`` once and return the
    absolute path. Accepts a PIL image, a ``{"bytes": ..., "path": ...}`` dict (an undecoded
    ``datasets.Image``), an existing file path, or ``None`` (no image)."""
    if image is None:
        return None
    if isinstance(image, str | Path):
        path = Path(image)
        return str(path.resolve()) if path.is_file() else None
    from kit.artifacts import atomic_write_bytes

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
