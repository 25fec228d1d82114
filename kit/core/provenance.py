"""What a run was made with, written beside its tables by ``kit run`` (``provenance.json``): the kit's commit,
the hardware, the libraries' versions, the seeds, and a content hash of every model and dataset the profile
names (the commit for a hub id), so that a number in the report can be traced to exactly what produced it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kit import REPO_DIR
from kit.core.artifacts import atomic_write_json, content_hash, fingerprint
from kit.core.envcheck import installed_version

RESULTS_DIR = REPO_DIR / "results"
PROVENANCE_FILE = "provenance.json"
# Libraries whose versions a reader needs to rerun a number (those not installed are said to be so).
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "papermill", "numpy", "pandas",
             "seaborn", "unsloth", "vllm", "bitsandbytes")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def kit_commit() -> dict[str, Any]:
    """The checkout's commit and whether its code has uncommitted changes (None outside a git checkout).
    ``results/`` does not count: a run rewrites it."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def hardware() -> dict[str, Any]:
    """CPU, memory and GPUs of this machine."""
    import psutil
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "gpus": gpus,
            "cuda": torch.version.cuda if torch.cuda.is_available() else None}


def _listing_signature(path: Path) -> str:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return content_hash([(p.relative_to(path).as_posix() if path.is_dir() else p.name, p.stat().st_size,
                          p.stat().st_mtime_ns) for p in files if p.is_file()])


def content_fingerprint(source: str | Path, kind: str, cache_file: Path | None = None) -> str:
    """A content hash of a local model or dataset (``kit.core.artifacts.fingerprint``), or for a hub id the commit
    of its local snapshot (``hub:<id>@<commit>``), or ``hub:<id> (not in the local cache)``. Local hashes are
    cached in ``cache_file`` by the files' names, sizes and modification times, so a 13 GB image folder is
    read once."""
    from kit.core.paths import resolve_path

    path = resolve_path(source)
    if not isinstance(path, Path):
        try:
            from huggingface_hub import snapshot_download

            snapshot = Path(snapshot_download(str(source), repo_type=kind, local_files_only=True))
            return f"hub:{source}@{snapshot.name}"
        except Exception:  # noqa: BLE001 - any failure means the same thing here: not downloaded
            return f"hub:{source} (not in the local cache)"
    if not path.exists():
        return f"missing: {source}"
    cache: dict[str, Any] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            cache = {}
    signature = _listing_signature(path)
    entry = cache.get(str(path.resolve()))
    if entry and entry.get("signature") == signature:
        return entry["hash"]
    digest = fingerprint(path)
    if cache_file is not None:
        cache[str(path.resolve())] = {"signature": signature, "hash": digest}
        atomic_write_json(cache_file, cache)
    return digest


def _seeds(profile_data: Mapping[str, Any]) -> dict[str, Any]:
    from kit.core.profile import Profile

    flat = Profile(name="x", path=Path("."), data=dict(profile_data), assumptions={}, hash="").flatten()
    return {key: value for key, value in flat.items()
            if "seed" in key.split("_")[-1] and not key.startswith("datasets_")
            and (isinstance(value, int) or (isinstance(value, list) and all(isinstance(v, int) for v in value)))}


def collect_provenance(profile: Any, results_dir: str | Path = RESULTS_DIR) -> dict[str, Any]:
    """What ``kit run`` records in ``<run>/provenance.json`` before it executes a notebook: the kit's commit,
    the profile, library versions, hardware, seeds and a content hash of every model and dataset the profile
    names."""
    cache = Path(results_dir) / "cache" / "fingerprints.json"
    return {
        "kit": kit_commit(),
        "profile": {"name": profile.name, "reference": profile.reference, "hash": profile.hash},
        "python": platform.python_version(),
        "libraries": {name: installed_version(name) for name in LIBRARIES},
        "hardware": hardware(),
        "seeds": _seeds(profile.data),
        "models": {name: {"source": str(value), "hash": content_fingerprint(value, "model", cache)}
                   for name, value in profile.get("models", {}).items()},
        "datasets": {name: {"source": str(value), "hash": content_fingerprint(value, "dataset", cache)}
                     for name, value in profile.get("datasets", {}).items()},
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_provenance(run_dir: str | Path, profile: Any, results_dir: str | Path = RESULTS_DIR) -> Path:
    path = Path(run_dir) / PROVENANCE_FILE
    atomic_write_json(path, collect_provenance(profile, results_dir))
    return path
