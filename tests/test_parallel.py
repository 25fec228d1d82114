"""kit.core.parallel: stages not yet done run in spawned workers with their share of the threads, done ones
never start a worker, duplicates run once, and a failing stage stops the run naming itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kit.core import parallel
from kit.core.parallel import Stage, run_stages, stage_workers
from kit.errors import KitError


class Profile:
    path = "test.yaml"

    def __init__(self, **values) -> None:
        self.values = values

    def get(self, key, default=None):
        return self.values.get(key, default)


def write_record(done: str) -> None:
    # A stage as the kit's are: its work, then the done file written last.
    import torch

    from kit.core.threads import follow_thread_share

    followed = follow_thread_share()
    Path(done).write_text(json.dumps({"pid": os.getpid(), "threads": torch.get_num_threads(), "followed": followed}))


def fail(message: str) -> None:
    raise ValueError(message)


def stage(tmp_path: Path, name: str, cost: float = 0.0) -> Stage:
    done = tmp_path / f"{name}.json"
    return Stage(name, done, write_record, (str(done),), cost=cost)


@pytest.fixture(autouse=True)
def no_pool_left():
    yield
    for pool in list(parallel._POOLS.values()):
        parallel._stop(pool)


def test_pending_stages_run_in_workers_with_their_share_of_threads(tmp_path, monkeypatch):
    from kit.core.threads import THREADS_FILE_ENV

    # Inside a notebook lane that now runs alone: the kernel may take both threads, its workers keep one each.
    (tmp_path / "share").write_text("2\n")
    monkeypatch.setenv(THREADS_FILE_ENV, str(tmp_path / "share"))
    stages = [stage(tmp_path, f"s{i}", cost=i) for i in range(4)]
    ran = run_stages(Profile(stage_workers=2, torch_threads=2), stages + stages[:1])  # a duplicate runs once
    assert ran == 4
    records = [json.loads(s.done.read_text()) for s in stages]
    assert {r["threads"] for r in records} == {1} and {r["followed"] for r in records} == {None}
    assert os.getpid() not in {r["pid"] for r in records}
    # The pool stays for the next cell: a second call starts no new process.
    (pool,) = parallel._POOLS.values()
    workers = set(pool._processes)
    more = [stage(tmp_path, f"t{i}") for i in range(2)]
    run_stages(Profile(stage_workers=2, torch_threads=2), more)
    assert {json.loads(s.done.read_text())["pid"] for s in more} <= workers


def test_done_stages_start_no_worker(tmp_path, monkeypatch):
    stages = [stage(tmp_path, f"s{i}") for i in range(3)]
    for s in stages:
        s.done.write_text("{}")
    monkeypatch.setattr(parallel, "_pool", lambda *a: pytest.fail("a pool was started for finished stages"))
    assert run_stages(Profile(stage_workers=2, torch_threads=2), stages) == 0


def test_one_worker_runs_in_this_process_and_errors_pass_unchanged(tmp_path):
    stages = [stage(tmp_path, "a"), Stage("broken", tmp_path / "b.json", fail, ("bad row 3",))]
    with pytest.raises(ValueError, match="bad row 3"):
        run_stages(Profile(stage_workers=1, torch_threads=2), stages)
    assert json.loads((tmp_path / "a.json").read_text())["pid"] == os.getpid()


def test_a_failing_stage_in_a_worker_names_itself(tmp_path):
    stages = [Stage("adapter seat", tmp_path / "b.json", fail, ("bad row 3",), cost=1), stage(tmp_path, "a")]
    with pytest.raises(KitError, match=r"adapter seat: ValueError: bad row 3"):
        run_stages(Profile(stage_workers=2, torch_threads=2), stages)
    assert not parallel._POOLS  # the failed pool is gone; the next call starts a fresh one
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_stage_workers_must_be_a_positive_integer(workers):
    with pytest.raises(KitError, match=r"test.yaml: stage_workers must be a positive integer"):
        stage_workers(Profile(stage_workers=workers))


def test_threads_are_shared_out():
    assert stage_workers(Profile(stage_workers=2, torch_threads=2)) == (2, 1)
    assert stage_workers(Profile(stage_workers=4, torch_threads=2)) == (4, 1)
    assert stage_workers(Profile(torch_threads=2)) == (1, 2)
    assert stage_workers(Profile(stage_workers=1, torch_threads=None)) == (1, None)
