from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kit.core import artifacts
from kit.core.artifacts import (
    JsonlAppender,
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    cached_stage,
    content_hash,
    file_hash,
    tree_hash,
)
from kit.errors import KitError

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)


@given(st.dictionaries(st.text(max_size=6), json_scalars, max_size=8))
def test_content_hash_ignores_key_order(mapping: dict) -> None:
    reordered = dict(reversed(list(mapping.items())))
    assert content_hash(mapping) == content_hash(reordered)


def test_content_hash_distinguishes_values_and_spells_paths_posix() -> None:
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    assert content_hash({"a": 1}) != content_hash({"a": "1"})
    assert content_hash(PureWindowsPath("data\\tiny")) == content_hash("data/tiny")
    assert content_hash(PurePosixPath("data/tiny")) == content_hash("data/tiny")
    assert content_hash({"x", "y"}) == content_hash({"y", "x"})
    with pytest.raises(TypeError, match="cannot hash a value of type object"):
        content_hash({"a": object()})


def test_file_hash_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one read chunk
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_hash(path) == hashlib.sha256(data).hexdigest()


def test_tree_hash_tracks_contents_and_names(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("a = 1\n")
    (tmp_path / "sub" / "b.py").write_text("b = 2\n")
    (tmp_path / "notes.txt").write_text("ignored by the pattern\n")
    first = tree_hash(tmp_path, "**/*.py")

    (tmp_path / "notes.txt").write_text("changed\n")
    assert tree_hash(tmp_path, "**/*.py") == first

    (tmp_path / "sub" / "b.py").write_text("b = 3\n")
    edited = tree_hash(tmp_path, "**/*.py")
    assert edited != first

    (tmp_path / "sub" / "b.py").rename(tmp_path / "sub" / "c.py")
    assert tree_hash(tmp_path, "**/*.py") != edited

    with pytest.raises(KitError, match="does not exist"):
        tree_hash(tmp_path / "missing")


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def test_atomic_writes(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "deep" / "a.txt", "héllo")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1, 2], "p": Path("x/y")})
    assert (tmp_path / "deep" / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "c.json").read_text()) == {"a": [1, 2], "b": 1, "p": "x/y"}
    assert leftovers(tmp_path) == []
    assert (tmp_path / "b.bin").stat().st_mode & 0o044, "atomic files must be readable like plain ones"


def test_failed_atomic_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "result.json"
    atomic_write_json(target, {"version": 1})

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}
    assert leftovers(tmp_path) == []


def test_atomic_dir_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "stage"
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        (tmp / "old.txt").write_text("old")
    assert (target / "old.txt").read_text() == "old"

    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(path.name for path in target.iterdir()) == ["new.txt"]
    assert leftovers(tmp_path) == []


def test_atomic_dir_failure_leaves_the_old_content_intact(tmp_path: Path) -> None:
    target = tmp_path / "stage"
    target.mkdir()
    (target / "kept.txt").write_text("precious")

    with pytest.raises(RuntimeError, match="build failed"), atomic_dir(target) as tmp:
        (tmp / "kept.txt").write_text("half-written")
        raise RuntimeError("build failed")

    assert sorted(path.name for path in target.iterdir()) == ["kept.txt"]
    assert (target / "kept.txt").read_text() == "precious"
    assert leftovers(tmp_path) == []


def test_cached_stage_builds_once_then_skips(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[Path] = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "out.txt").write_text("built")

    params = {"n": 3, "model": Path("data/models/x")}
    first = cached_stage(tmp_path, "synthesis", params, build)
    assert first == tmp_path / f"synthesis-{content_hash(params)[:12]}"
    assert (first / "out.txt").read_text() == "built"
    done = json.loads((first / "DONE.json").read_text())
    assert done["params"] == {"n": 3, "model": "data/models/x"}
    assert done["seconds"] >= 0

    with caplog.at_level(logging.INFO, logger="kit.core.artifacts"):
        again = cached_stage(tmp_path, "synthesis", dict(reversed(params.items())), build)
    assert again == first
    assert len(calls) == 1
    assert "skipped (up to date)" in caplog.text

    other = cached_stage(tmp_path, "synthesis", {**params, "n": 4}, build)
    assert other != first
    assert len(calls) == 2


def test_cached_stage_failure_leaves_nothing_that_looks_done(tmp_path: Path) -> None:
    def broken(folder: Path) -> None:
        (folder / "partial.txt").write_text("half")
        raise ValueError("out of memory")

    with pytest.raises(ValueError, match="out of memory"):
        cached_stage(tmp_path, "train", {"lr": 1e-4}, broken)
    assert list(tmp_path.iterdir()) == []

    folder = cached_stage(tmp_path, "train", {"lr": 1e-4}, lambda out: (out / "ok.txt").write_text("ok"))
    assert sorted(path.name for path in folder.iterdir()) == ["DONE.json", "ok.txt"]


def test_jsonl_appender_resumes(tmp_path: Path) -> None:
    path = tmp_path / "out" / "samples.jsonl"
    with JsonlAppender(path, ["id", "k"]) as appender:
        appender.append({"id": "a", "k": 0, "text": "x"})
        appender.append({"id": "a", "k": 1, "text": "y"})
        with pytest.raises(KitError, match=r"key \('a', 0\) is already stored"):
            appender.append({"id": "a", "k": 0, "text": "again"})
        with pytest.raises(KitError, match="no key field k"):
            appender.append({"id": "b"})
    with JsonlAppender(path, ["id", "k"]) as reopened:
        assert reopened.keys == {("a", 0), ("a", 1)}
        assert reopened.has(("a", 1)) and not reopened.has(("a", 2))
        assert [record["text"] for record in reopened.records()] == ["x", "y"]


def test_jsonl_appender_single_field_keys(tmp_path: Path) -> None:
    with JsonlAppender(tmp_path / "s.jsonl", ["id"]) as appender:
        appender.append({"id": 7})
        assert appender.has(7) and appender.has((7,)) and not appender.has(8)


def test_jsonl_partial_last_line_is_dropped_with_a_warning(tmp_path: Path, caplog) -> None:
    path = tmp_path / "samples.jsonl"
    with JsonlAppender(path, ["id"]) as appender:
        for index in range(3):
            appender.append({"id": index, "text": f"answer {index}"})
    with open(path, "ab") as handle:  # what a kill in the middle of a write leaves behind
        handle.write(b'{"id": 3, "text": "ans')

    with caplog.at_level(logging.WARNING, logger="kit.core.artifacts"), JsonlAppender(path, ["id"]) as appender:
        assert appender.keys == {(0,), (1,), (2,)}
        appender.append({"id": 3, "text": "answer 3"})
    assert str(path) in caplog.text and "partial last line" in caplog.text

    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [0, 1, 2, 3]


def test_jsonl_complete_record_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text('{"id": 0}\n{"id": 1}')
    with JsonlAppender(path, ["id"]) as appender:
        assert appender.keys == {(0,), (1,)}
        appender.append({"id": 2})
    assert path.read_text() == '{"id": 0}\n{"id": 1}\n{"id": 2}\n'


def test_jsonl_damage_before_the_last_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text('{"id": 0}\n{"id": \n{"id": 2}\n')
    with pytest.raises(KitError, match=r"samples\.jsonl line 2 is not valid JSON"):
        JsonlAppender(path, ["id"])
    path.write_text('{"id": 0}\n{"id": 0}\n')
    with pytest.raises(KitError, match=r"line 2: duplicate key \(0,\)"):
        JsonlAppender(path, ["id"])


WRITER = """
import sys
from kit.core.artifacts import JsonlAppender
with JsonlAppender(sys.argv[1], ["id"]) as appender:
    for index in range(int(sys.argv[2])):
        if not appender.has(index):
            appender.append({"id": index, "text": "x" * 2000})
"""


def test_jsonl_survives_a_real_kill(tmp_path: Path, repo_dir: Path) -> None:
    """SIGKILL a writer mid-loop, resume it, and find every record exactly once."""
    path = tmp_path / "samples.jsonl"
    total = 200_000
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_dir), os.environ.get("PYTHONPATH", "")])}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(total)], env=env)
    deadline = time.monotonic() + 60
    while (not path.exists() or path.read_bytes().count(b"\n") < 50) and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL, "the writer finished before it could be killed"
    with open(path, "ab") as handle:  # in case the kill landed between lines, make it land mid-line
        handle.write(b'{"id": 999999, "te')

    with JsonlAppender(path, ["id"]) as appender:
        done = len(appender)
    assert 50 <= done < total
    resumed = subprocess.run([sys.executable, "-c", WRITER, str(path), str(done + 20)], env=env, check=True)
    assert resumed.returncode == 0
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert ids == list(range(done + 20))


def test_resumable_stage_builds_in_place_once_and_resumes_after_a_failed_build(tmp_path):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "part.txt").write_text("kept")  # what a killed run leaves for the next one to resume
        if len(calls) == 1:
            raise RuntimeError("killed")
        return {"rows": 3}

    with pytest.raises(RuntimeError):
        artifacts.resumable_stage(tmp_path, "gen", {"a": 1}, build, done="summary.json")
    folder = artifacts.stage_dir(tmp_path, "gen", {"a": 1})
    assert (folder / "part.txt").is_file() and not (folder / "summary.json").exists()
    assert artifacts.resumable_stage(tmp_path, "gen", {"a": 1}, build, done="summary.json") == (folder, {"rows": 3})
    assert artifacts.resumable_stage(tmp_path, "gen", {"a": 1}, build, done="summary.json") == (folder, {"rows": 3})
    assert len(calls) == 2
    other, _ = artifacts.resumable_stage(tmp_path, "gen", {"a": 2}, build, done="summary.json")
    assert other != folder and len(calls) == 3
