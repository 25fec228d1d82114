"""Independent stages side by side: ``run_stages(profile, stages)`` runs the stages that are not done yet in
``stage_workers`` worker processes (the profile's value), each with its share of ``torch_threads``.

Why processes and not threads: at the tiny profile's widths a second torch thread buys about 1.27x on one
training (docs/performance.md), while two one-thread trainings side by side do about twice the work of
one. The results do not depend on it: a stage's numbers are bit-identical at one and two threads (checked on
LoRA adapters and on generated predictions; the regenerated tables are compared in the same document).

A stage is any module-level function that writes its own folder atomically and returns quickly once that
folder is done (``kit.training.sft.train_stage``, ``kit.eval.evaluate.evaluate_stage``, ...). Callers run
them here first and then call the same functions in process as before, which now only read the finished
folders: the notebooks' tables come from one code path whether or not workers ran. A stage whose ``done`` file
exists is never sent to a worker, so a rerun with everything cached starts no process at all. Workers die with
the process that started them (Linux), and a stage interrupted in a worker resumes like any killed stage.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.core.profile import torch_threads
from kit.core.progress import progress_bars
from kit.errors import KitError

log = logging.getLogger("kit")


@dataclass(frozen=True)
class Stage:
    """One call of a stage function. ``done``: the file the stage writes last (its folder is finished when it
    exists); two stages with the same ``done`` are one stage. ``cost``: a rough size (e.g. the training set's
    bytes), so the longest stages start first."""

    label: str
    done: Path
    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    cost: float = 0.0


def stage_workers(profile: Any) -> tuple[int, int | None]:
    """The profile's ``stage_workers`` and the torch threads each worker gets (``torch_threads`` shared out;
    None when the profile leaves threads to torch)."""
    workers = profile.get("stage_workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise KitError(f"profile {profile.path}: stage_workers must be a positive integer, not {workers!r}")
    threads = torch_threads(profile)
    return workers, (max(1, threads // workers) if threads else None)


def run_stages(profile: Any, stages: Iterable[Stage], what: str = "stages") -> int:
    """Run every stage whose ``done`` file is missing, ``stage_workers`` at a time (in this process when the
    profile says 1); returns how many ran. A stage that fails stops the others and raises ``KitError``
    naming it."""
    pending: dict[Path, Stage] = {}
    for stage in stages:
        if not Path(stage.done).is_file():
            pending.setdefault(Path(stage.done), stage)
    todo = sorted(pending.values(), key=lambda stage: -stage.cost)
    if not todo:
        return 0
    workers, threads = stage_workers(profile)
    workers = min(workers, len(todo))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc=what, disable=not progress_bars())
    try:
        if workers == 1:
            for stage in todo:
                stage.function(*stage.args, **stage.kwargs)
                _finished(stage, bar)
            return len(todo)
        log.info(f"{what}: {len(todo)} to run, {workers} at a time with {threads or 'default'} thread(s) each")
        _in_workers(todo, workers, threads, what, bar)
        return len(todo)
    finally:
        bar.close()


# One pool per kernel, kept between calls: starting a worker (torch, transformers, TRL) takes about 8 s, and a
# notebook runs stages from several cells. Keyed by the environment too, which the workers inherit at start.
_POOLS: dict[tuple[Any, ...], Any] = {}


def _in_workers(todo: list[Stage], workers: int, threads: int | None, what: str, bar: Any) -> None:
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    executor = _pool(workers, threads)
    try:
        futures = {executor.submit(_run, stage): stage for stage in todo}
        for future in as_completed(futures):
            future.result()
            _finished(futures[future], bar)
    except BrokenProcessPool as error:
        _stop(executor)
        raise KitError(f"{what}: a worker process died before finishing its stage. Out of memory, or a script "
                       "that starts stages outside `if __name__ == '__main__':` (worker processes import the "
                       "script again); set the profile's stage_workers to 1 to run them in this process") from error
    except BaseException:
        _stop(executor)  # an interrupted cell must not leave a worker training a folder the next run trains again
        raise


def _pool(workers: int, threads: int | None) -> Any:
    from concurrent.futures import ProcessPoolExecutor

    key = (workers, threads, tuple(sorted(os.environ.items())))
    if key not in _POOLS:
        for stale in list(_POOLS.values()):
            _stop(stale)
        # spawn, not fork: a fork would copy a notebook kernel's threads and locks.
        _POOLS[key] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                          initializer=_worker_start, initargs=(threads,))
    return _POOLS[key]


def _stop(executor: Any) -> None:
    for key in [key for key, pool in _POOLS.items() if pool is executor]:
        del _POOLS[key]
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        process.terminate()
    executor.shutdown(wait=True, cancel_futures=True)


def _finished(stage: Stage, bar: Any) -> None:
    bar.update()
    log.info(f"{stage.label}: done")


def _run(stage: Stage) -> Stage:
    try:
        stage.function(*stage.args, **stage.kwargs)
    except Exception as error:  # the worker's traceback is lost in the pool: name the stage here
        raise KitError(f"{stage.label}: {type(error).__name__}: {error}") from error
    return stage


def _worker_start(threads: int | None) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a killed notebook leaves no worker behind
    os.environ["TQDM_DISABLE"] = "1"  # the parent draws one bar over the stages
    # A worker keeps the one thread it was given: the lane's share (kit run's threads file) is for the kernel.
    from kit.core.threads import THREADS_FILE_ENV

    os.environ.pop(THREADS_FILE_ENV, None)
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
