"""Artifacts that survive a kill: content hashes, atomic writes, cached stage folders and resumable
JSONL files.

A pipeline stage is interrupted sooner or later (Ctrl-C, an out-of-memory kill, a closed laptop).
Everything here is written so that a reader afterwards sees either the old complete content or the
new complete content, never a half-written file, and so that a re-run picks up where the last one
stopped instead of starting over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any

from kit.core.paths import resolve_path
from kit.errors import KitError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def _json_default(obj: Any) -> Any:
    # Paths hash by their posix spelling so that a hash computed on Windows and on Linux agree.
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=lambda item: json.dumps(item, sort_keys=True, default=_json_default))
    raise TypeError(f"cannot hash a value of type {type(obj).__name__}: {obj!r}")


def canonical_json(obj: Any) -> str:
    """The one JSON spelling of ``obj`` used for hashing: sorted keys, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def content_hash(obj: Any) -> str:
    """sha256 hex digest of the canonical JSON of ``obj`` (dict key order does not matter)."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def file_hash(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read in chunks so large checkpoints do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_hash(directory: str | Path, pattern: str = "**/*") -> str:
    """sha256 over the sorted (relative posix path, file hash) pairs of the files matching ``pattern``.

    Renaming a file changes the hash as much as editing it does; folders alone do not count.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise KitError(f"cannot hash folder {directory}: it does not exist")
    entries = sorted(
        (path.relative_to(directory).as_posix(), file_hash(path))
        for path in directory.glob(pattern)
        if path.is_file()
    )
    return content_hash(entries)


def fingerprint(source: str | Path) -> str:
    """What a stage that reads ``source`` depends on: the content hash of a local file or folder, or for a hub
    id ``<id>@<commit>`` with the commit ``hub_commit`` resolves (the id alone when none can be resolved), so
    that a stage built from one version of a hub repository is not reused for the next."""
    path = Path(source)
    if path.is_dir():
        return tree_hash(path)
    if path.is_file():
        return file_hash(path)
    text = str(source)
    if not isinstance(resolve_path(text), str):  # a local path that does not exist (yet): nothing to resolve
        return text
    # A pinned tag that neither the hub nor the cache can resolve still keys the stage by the tag.
    version = hub_commit(text) or pinned_revision(text)
    return f"{text}@{version}" if version else text


# ------------------------------------------------------------------------------------------ hub revisions
# A profile's ``revisions:`` (hub id -> commit, tag or branch) reaches every notebook kernel through this
# variable (``kit.core.profile.apply_runtime`` sets it; kernels inherit the environment), so that loaders and
# stage keys agree on the version without each notebook passing it along.
HUB_REVISIONS_ENV = "KIT_HUB_REVISIONS"
HUB_TIMEOUT_S = 10.0
_COMMIT = re.compile(r"[0-9a-f]{40}")
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
# Hub answers per (id, revision, repo type) for this process: a run fingerprints the same ids many times.
_hub_answers: dict[tuple[str, str, str | None], str | None] = {}


def pinned_revisions() -> dict[str, str]:
    """The revisions the profile pins (``revisions:``), read from ``KIT_HUB_REVISIONS`` (JSON)."""
    text = os.environ.get(HUB_REVISIONS_ENV, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise KitError(f"environment variable {HUB_REVISIONS_ENV} is not JSON ({err.msg}); expected "
                       '{"<hub id>": "<commit, tag or branch>"}') from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                              for k, v in value.items()):
        raise KitError(f"environment variable {HUB_REVISIONS_ENV} must map hub ids to revision strings")
    return value


def pinned_revision(repo_id: str | Path) -> str | None:
    """The revision the profile pins for ``repo_id``, or ``None`` (the hub's ``main``)."""
    return pinned_revisions().get(str(repo_id))


def hub_offline() -> bool:
    """Whether an offline variable is set now (huggingface_hub reads its own only once, at import)."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in _OFFLINE_VARIABLES)


def hub_cache_dir() -> Path:
    """The hub cache folder: ``HF_HUB_CACHE`` as set now, else huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_commit(repo_id: str, revision: str = "main", repo_type: str | None = None) -> str | None:
    """The commit of ``revision`` in the local hub cache (``<kind>s--<org>--<name>/refs/<revision>`` naming a
    folder under ``snapshots/``), or ``None`` when it was never downloaded. Reads files only."""
    for kind in (repo_type,) if repo_type else ("model", "dataset"):
        folder = hub_cache_dir() / f"{kind}s--{repo_id.replace('/', '--')}"
        if _COMMIT.fullmatch(revision):
            commit: str | None = revision
        else:
            ref = folder / "refs" / revision
            commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else None
        if commit and (folder / "snapshots" / commit).is_dir():
            return commit
    return None


def _ask_hub(repo_id: str, revision: str, repo_type: str | None) -> str | None:
    key = (repo_id, revision, repo_type)
    if key in _hub_answers:
        return _hub_answers[key]
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    answer = None
    for kind in (repo_type,) if repo_type else ("model", "dataset"):
        try:
            answer = HfApi().repo_info(repo_id, repo_type=kind, revision=revision, timeout=HUB_TIMEOUT_S).sha
            break
        except RevisionNotFoundError:
            raise KitError(f"hub {kind} {repo_id} has no revision {revision!r} (the profile's revisions: "
                           f"pins it; {HUB_REVISIONS_ENV})") from None
        except RepositoryNotFoundError:  # also gated or private without a token: try the next kind
            continue
        except Exception as err:  # noqa: BLE001 - no network, proxy, server error: the cache decides instead
            logger.warning("could not ask the hub for %s's commit (%s); using the local cache", repo_id, err)
            break
    _hub_answers[key] = answer
    return answer


def hub_commit(repo_id: str, repo_type: str | None = None) -> str | None:
    """The commit a loader of ``repo_id`` will read: a pinned full commit as it is; otherwise the pinned tag
    or branch (default ``main``) resolved by the hub when online (what a download fetches), else by the local
    cache (what an offline load reads). ``None`` when neither knows it. Offline, no network call is made."""
    pinned = pinned_revision(repo_id)
    if pinned and _COMMIT.fullmatch(pinned):
        return pinned
    revision = pinned or "main"
    if not hub_offline():
        commit = _ask_hub(repo_id, revision, repo_type)
        if commit:
            return commit
    return cached_commit(repo_id, revision, repo_type)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a folder be opened, hence best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it and ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file readable by its owner only; give it the permissions a plain open() would.
        os.chmod(tmp_name, 0o666 & ~_current_umask())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """``atomic_write_bytes`` for text."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as readable JSON (sorted keys, trailing newline) atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False, default=_json_default)
    return atomic_write_text(path, text + "\n")


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; when the block succeeds it becomes ``target``.

    If the block raises, the temporary folder is removed and an existing ``target`` is left exactly as
    it was. Replacing an existing folder takes two renames (old aside, new in); a kill between them
    leaves the old content in a ``.NAME.old-*`` folder beside the target rather than losing it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old / target.name)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    _fsync_dir(target.parent)


DONE_FILE = "DONE.json"


def stage_dir(root: str | Path, name: str, params: Any) -> Path:
    """The folder a stage with these parameters lives in: ``root/NAME-<first 12 hex of the params hash>``."""
    return Path(root) / f"{name}-{content_hash(params)[:12]}"


def cached_stage(root: str | Path, name: str, params: Any, build_fn: Callable[[Path], Any]) -> Path:
    """Return the stage folder for ``params``, building it with ``build_fn(tmp_dir)`` unless it is done.

    A stage is done when its folder holds ``DONE.json``; because the folder only appears once
    ``build_fn`` returned (see ``atomic_dir``), a killed build leaves nothing that looks finished.
    Different parameters get different folders, so changing a setting never reuses a stale result.
    """
    folder = stage_dir(root, name, params)
    if (folder / DONE_FILE).is_file():
        logger.info("%s: skipped (up to date) %s", name, folder)
        return folder
    started = time.perf_counter()
    with atomic_dir(folder) as tmp:
        build_fn(tmp)
        atomic_write_json(
            tmp / DONE_FILE,
            {
                "name": name,
                "params": params,
                "params_hash": content_hash(params),
                "seconds": round(time.perf_counter() - started, 3),
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
    logger.info("%s: built in %.1f s %s", name, time.perf_counter() - started, folder)
    return folder


def resumable_stage(root: str | Path, name: str, params: Any, build_fn: Callable[[Path], Any], *,
                    done: str = DONE_FILE) -> tuple[Path, Any]:
    """The stage folder for ``params`` and what its ``done`` file holds, building it in place with
    ``build_fn(folder)`` unless that file exists.

    The companion of ``cached_stage`` for stages that write as they go (generation appended line by line,
    training checkpoints): ``build_fn`` works in the final folder, so a killed build resumes from what it left
    there, and returns a JSON-able summary that is written atomically to ``done`` last. Only a folder holding
    ``done`` counts as finished; different parameters get different folders."""
    folder = stage_dir(root, name, params)
    marker = folder / done
    if marker.is_file():
        logger.info("%s: skipped (up to date) %s", name, folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, build_fn(folder))
    return folder, json.loads(marker.read_text(encoding="utf-8"))


def check_resumed_settings(path: str | Path, records: Iterable[Mapping[str, Any]], settings: Mapping[str, Any],
                           id_field: str) -> None:
    """Refuse to extend a resumable file written with other settings: mixing two runs in one file would make
    its numbers describe neither. ``KitError`` names the file, the record and the setting."""
    for record in records:
        for name, value in settings.items():
            if record.get(name) != value:
                raise KitError(f"{path}: {id_field} {record.get(id_field)} was written with {name}="
                               f"{record.get(name)!r}, this run has {value!r}; use another file rather than mixing "
                               "two runs")


class JsonlAppender:
    """An append-only JSONL file of records identified by ``key_fields``, safe to resume after a kill.

    Each ``append`` writes one whole line, flushes and fsyncs it, so a kill loses at most the line being
    written. Opening the file again reads what is there, drops a partial last line (with a warning
    naming the file) and exposes the keys already done, so a generation loop can skip them.
    """

    def __init__(self, path: str | Path, key_fields: Sequence[str]) -> None:
        if not key_fields:
            raise ValueError("JsonlAppender needs at least one key field")
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self._records: list[dict[str, Any]] = []
        self.keys: set[tuple[Any, ...]] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._handle = open(self.path, "ab")  # noqa: SIM115 - closed by close() / __exit__

    def _key(self, record: Mapping[str, Any], where: str) -> tuple[Any, ...]:
        missing = [field for field in self.key_fields if field not in record]
        if missing:
            raise KitError(f"{where}: record has no key field {', '.join(missing)}: {record!r}")
        key = tuple(record[field] for field in self.key_fields)
        try:
            hash(key)
        except TypeError:
            raise KitError(f"{where}: key fields {self.key_fields} must be scalars, got {key!r}") from None
        return key

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        # A file written only by append() ends with a newline, so the last element is b"" unless a
        # kill interrupted a write; that trailing fragment is the only line allowed to be damaged.
        complete, tail = lines[:-1], lines[-1]
        good_bytes = 0
        for number, line in enumerate(complete, start=1):
            where = f"{self.path} line {number}"
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise KitError(f"{where} is not valid JSON ({err.msg}); the file is damaged") from None
                self._add_loaded(record, where)
            good_bytes += len(line) + 1
        if not tail:
            return
        where = f"{self.path} line {len(complete) + 1}"
        record = self._parse_tail(tail)
        if record is not None and self._is_new_complete_record(record):
            # The kill struck between the record and its newline: the record is whole, keep it.
            with open(self.path, "ab") as handle:
                handle.write(b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._add_loaded(record, where)
            return
        logger.warning(
            "%s: dropped a partial last line (%d bytes) left by an interrupted write",
            self.path,
            len(tail),
        )
        os.truncate(self.path, good_bytes)

    @staticmethod
    def _parse_tail(tail: bytes) -> dict[str, Any] | None:
        try:
            record = json.loads(tail)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return record if isinstance(record, dict) else None

    def _is_new_complete_record(self, record: dict[str, Any]) -> bool:
        if any(field not in record for field in self.key_fields):
            return False
        key = tuple(record[field] for field in self.key_fields)
        try:
            return key not in self.keys
        except TypeError:
            return False

    def _add_loaded(self, record: Any, where: str) -> None:
        if not isinstance(record, dict):
            raise KitError(f"{where}: expected a JSON object, got {type(record).__name__}")
        key = self._key(record, where)
        if key in self.keys:
            raise KitError(f"{where}: duplicate key {key!r} (fields {', '.join(self.key_fields)})")
        self.keys.add(key)
        self._records.append(record)

    def _as_key(self, key: Any) -> tuple[Any, ...]:
        return key if isinstance(key, tuple) else (key,)

    def has(self, key: Any) -> bool:
        """Whether a record with this key is stored; a single-field key may be given without a tuple."""
        return self._as_key(key) in self.keys

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record durably; a record whose key is already stored is refused."""
        line = json.dumps(dict(record), ensure_ascii=False, default=_json_default)
        # Keep the record as a reader of the file will see it (tuples become lists), so that the keys
        # seen now and after a reopen are the same.
        stored = json.loads(line)
        key = self._key(stored, str(self.path))
        if key in self.keys:
            raise KitError(f"{self.path}: a record with key {key!r} is already stored")
        self._handle.write((line + "\n").encode("utf-8"))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.keys.add(key)
        self._records.append(stored)

    def records(self) -> list[dict[str, Any]]:
        """All stored records in file order."""
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
