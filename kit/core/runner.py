"""``kit run``: execute the numbered notebooks with papermill, in order, resuming where a run stopped.

Each notebook ``notebooks/NN_name.ipynb`` is one stage. Its executed copy lands in the run folder
``results/runs/<run-id>/NN_name.ipynb`` and ``stages.json`` records a key per stage: a hash of the
notebook's cell sources, the parameters it received, the profile, and the ``kit`` code and profiles.
A stage whose key is unchanged and whose executed notebook exists is skipped, so re-running after a
failure or an edit only executes what is stale. Editing a notebook re-runs that notebook only; the
notebooks after it are not invalidated (they read their inputs through cached stages of their own).

The parameters each notebook receives are kept beside it, ``params/NN_name.yaml``, and ``--dry-run`` prints
the plain ``papermill`` command (with the environment ``kit run`` gives the kernels) that executes the notebook
from that file, so a stage can be re-run or debugged without ``kit``. Before anything runs, the profile's
hand-supplied data (``kit.core.profile.missing_data``: local datasets outside the tiny world) is checked; a
real run refuses to start while a notebook it would execute reads data that is missing.

Lanes: a notebook whose metadata names a lane (``"kit": {"lane": "eaco"}``) reads nothing that a notebook of
another lane writes. Consecutive lane notebooks form a block; with the profile's ``notebook_lanes`` above 1 the
block's lanes run side by side (each lane's notebooks still in order, in their own kernels, each kernel with its
share of ``torch_threads``), and a notebook without a lane waits for everything before it. Numbers do not depend
on it: stages are seeded and bit-identical at any thread count (docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kit import PACKAGE_DIR, REPO_DIR
from kit.core.artifacts import atomic_write_json, atomic_write_text, content_hash, tree_hash
from kit.core.notebook import PAPERMILL_ENV
from kit.core.profile import (
    DATA_DOC,
    THREADS_SHARE_ENV,
    MissingData,
    Profile,
    apply_runtime,
    hand_supplied_data,
    load_profile,
    missing_data,
    notebook_parameters,
    runtime_environment,
    torch_threads,
)
from kit.core.threads import THREADS_FILE_ENV
from kit.errors import KitError

DEFAULT_NOTEBOOKS_DIR = REPO_DIR / "notebooks"
DEFAULT_RESULTS_DIR = REPO_DIR / "results"
STAGES_FILE = "stages.json"
PARAMS_DIR = "params"  # <run>/params/NN_name.yaml: the parameters papermill injected into each notebook
KERNEL = "python3"  # every notebook runs on this kernel, whatever its metadata names
# Set for the kernels kit run starts (they inherit the environment): kit.core.notebook.setup then prints one
# line per stage, and no progress bars.
KERNEL_ENVIRONMENT = {PAPERMILL_ENV: "1", "TQDM_DISABLE": "1"}
NOTEBOOK_PATTERN = re.compile(r"^(?P<number>\d{2})_(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)\.ipynb$")
_RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# papermill adds these cells to the executed copy; they are not cells of the notebook the user wrote.
_ADDED_CELL_TAGS = {"injected-parameters", "papermill-error-cell-tag"}


@dataclass(frozen=True)
class Notebook:
    number: str
    path: Path

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def lane(self) -> str | None:
        """The lane the notebook's metadata names (``"kit": {"lane": ...}``), or None: it waits for every
        notebook before it and every notebook after it waits for it."""
        import nbformat

        kit_metadata = nbformat.read(str(self.path), as_version=4).metadata.get("kit", {})
        if not isinstance(kit_metadata, dict):
            raise KitError(f"notebook {self.path}: metadata kit must be a mapping like {{\"lane\": \"eaco\"}}, "
                           f"not {kit_metadata!r}")
        lane = kit_metadata.get("lane")
        if lane is not None and not (isinstance(lane, str) and lane):
            raise KitError(f"notebook {self.path}: metadata kit.lane must be a name, not {lane!r}")
        return lane


@dataclass(frozen=True)
class StageOutcome:
    """What happened to one notebook: ``done``, ``skipped`` (up to date), or in a dry run
    ``would run`` / ``up to date``."""

    notebook: str
    status: str
    seconds: float | None = None
    output: Path | None = None
    command: str | None = None  # dry run: the papermill command that executes the notebook as kit run would


def discover_notebooks(notebooks_dir: str | Path) -> list[Notebook]:
    """The ``NN_name.ipynb`` notebooks of a folder, ordered by number."""
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise KitError(f"notebooks folder {notebooks_dir} does not exist")
    found: dict[str, Notebook] = {}
    for path in sorted(notebooks_dir.glob("*.ipynb")):
        match = NOTEBOOK_PATTERN.match(path.name)
        if not match:
            continue
        number = match["number"]
        if number in found:
            raise KitError(
                f"notebooks {found[number].path.name} and {path.name} in {notebooks_dir} share number {number}"
            )
        found[number] = Notebook(number=number, path=path)
    if not found:
        raise KitError(f"no notebooks named NN_name.ipynb in {notebooks_dir}")
    return [found[number] for number in sorted(found)]


def _normalise_number(value: str | int, option: str, notebooks: list[Notebook]) -> str:
    available = ", ".join(notebook.number for notebook in notebooks)
    text = str(value).strip()
    if not text.isdigit():
        raise KitError(f"{option} {value!r} is not a notebook number; available: {available}")
    number = f"{int(text):02d}"
    if number not in {notebook.number for notebook in notebooks}:
        raise KitError(f"{option} {value}: no notebook numbered {number}; available: {available}")
    return number


def select_notebooks(
    notebooks: list[Notebook], only: str | int | None = None, from_: str | int | None = None
) -> list[Notebook]:
    """The notebooks ``--only NN`` or ``--from NN`` pick (all of them when neither is given)."""
    if only is not None and from_ is not None:
        raise KitError("give either --only or --from, not both")
    if only is not None:
        number = _normalise_number(only, "--only", notebooks)
        return [notebook for notebook in notebooks if notebook.number == number]
    if from_ is not None:
        number = _normalise_number(from_, "--from", notebooks)
        return [notebook for notebook in notebooks if notebook.number >= number]
    return list(notebooks)


def kit_code_hash(package_dir: str | Path = PACKAGE_DIR) -> str:
    """Hash of the ``kit`` sources and shipped profiles: a change to either makes every stage stale."""
    package_dir = Path(package_dir)
    profiles_dir = package_dir / "profiles"
    profiles = tree_hash(profiles_dir, "*.yaml") if profiles_dir.is_dir() else None
    return content_hash({"code": tree_hash(package_dir, "**/*.py"), "profiles": profiles})


def notebook_source_hash(notebook_path: str | Path) -> str:
    """Hash of the cells as written (type and source), so executing or clearing outputs changes nothing."""
    import nbformat

    notebook = nbformat.read(str(notebook_path), as_version=4)
    return content_hash([(cell.cell_type, cell.source) for cell in notebook.cells])


def stage_key(notebook_path: Path, parameters: dict[str, Any], profile: Profile, code_hash: str) -> str:
    """The key under which ``stages.json`` records a notebook as done."""
    return content_hash(
        {
            "notebook": notebook_source_hash(notebook_path),
            "parameters": parameters,
            "profile": profile.hash,
            "code": code_hash,
        }
    )


def default_run_id(profile: Profile) -> str:
    """``NAME-<8 hex of the profile hash>``: the same profile always resumes the same run folder."""
    return f"{profile.name}-{profile.hash[:8]}"


def _load_stages(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        stages = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise KitError(
            f"{path} is not valid JSON (line {err.lineno}); delete it to re-run every stage"
        ) from None
    return stages.get("notebooks", {}) if isinstance(stages, dict) else {}


def _failing_cell(failed_notebook: Path) -> int | None:
    """1-based position, in the notebook as written, of the first cell with an error output."""
    import nbformat

    try:
        notebook = nbformat.read(str(failed_notebook), as_version=4)
    except (OSError, ValueError):
        return None
    position = 0
    for cell in notebook.cells:
        if _ADDED_CELL_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        position += 1
        for output in cell.get("outputs", []):
            is_clean_exit = output.get("ename") == "SystemExit" and output.get("evalue") in ("", "0")
            if output.get("output_type") == "error" and not is_clean_exit:
                return position
    return None


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line without a final full stop, so it can end a sentence of the message."""
    text = " ".join(str(text).split()).rstrip(".")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO_DIR).as_posix()
    except ValueError:
        return str(path)


class _RunContext:
    """The run folder, its ``stages.json`` and the command that resumes it."""

    def __init__(self, profile: Profile, notebooks_dir: Path, results_dir: Path, run_id: str | None) -> None:
        if run_id is not None and not _RUN_ID_PATTERN.match(run_id):
            raise KitError(f"--run-id {run_id!r} must be letters, digits, '_', '-' or '.'")
        self.profile = profile
        self.notebooks_dir = notebooks_dir
        self.results_dir = results_dir
        self.explicit_run_id = run_id
        self.run_id = run_id or default_run_id(profile)
        self.run_dir = results_dir / "runs" / self.run_id
        self.stages_path = self.run_dir / STAGES_FILE
        self.stages = _load_stages(self.stages_path)
        self.commit: dict[str, Any] = {}
        self.lock = threading.Lock()

    def resume_command(self, number: str) -> str:
        parts = ["kit run", f"--profile {self.profile.reference}", f"--from {number}"]
        if self.explicit_run_id:
            parts.append(f"--run-id {self.explicit_run_id}")
        if self.notebooks_dir.resolve() != DEFAULT_NOTEBOOKS_DIR.resolve():
            parts.append(f"--notebooks-dir {self.notebooks_dir}")
        if self.results_dir.resolve() != DEFAULT_RESULTS_DIR.resolve():
            parts.append(f"--results-dir {self.results_dir}")
        return " ".join(parts)

    def is_up_to_date(self, notebook: Notebook, key: str) -> bool:
        entry = self.stages.get(notebook.stem, {})
        return (
            entry.get("status") == "done"
            and entry.get("key") == key
            and (self.run_dir / notebook.path.name).is_file()
        )

    def record(self, notebook: Notebook, **entry: Any) -> None:
        entry["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        entry["kit_commit"] = self.commit
        with self.lock:  # lanes finish notebooks from their own threads
            self._record(notebook, entry)

    def _record(self, notebook: Notebook, entry: dict[str, Any]) -> None:
        self.stages[notebook.stem] = entry
        atomic_write_json(
            self.stages_path,
            {
                "run_id": self.run_id,
                "profile": self.profile.reference,
                "profile_hash": self.profile.hash,
                "notebooks": self.stages,
            },
        )


def _execute(context: _RunContext, notebook: Notebook, parameters: dict[str, Any], key: str,
             environment: dict[str, str]) -> float:
    """Execute one notebook into the run folder, its kernel started with ``environment`` on top of this
    process's; returns its wall time in seconds."""
    import papermill

    run_dir = context.run_dir
    running = run_dir / f".{notebook.stem}.running.ipynb"
    output = run_dir / notebook.path.name
    failed = run_dir / f"{notebook.stem}.failed.ipynb"
    # A failure left by an earlier attempt would be mistaken for this attempt's (or, after a success,
    # suggest the stage is still broken).
    with contextlib.suppress(FileNotFoundError):
        failed.unlink()
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook.path),
            str(running),
            parameters=parameters,
            kernel_name=KERNEL,
            language="python",
            cwd=str(REPO_DIR),
            progress_bar=True,
            log_output=False,
            kernel_manager_class=_kernel_manager_class(environment),
        )
    except BaseException as err:
        seconds = round(time.perf_counter() - started, 3)
        if running.exists():
            os.replace(running, failed)
        interrupted = not isinstance(err, Exception)
        context.record(
            notebook,
            status="interrupted" if interrupted else "failed",
            key=key,
            seconds=seconds,
            output=failed.name if failed.exists() else None,
        )
        if interrupted:
            raise
        raise _failure(context, notebook, err, failed) from err
    os.replace(running, output)
    seconds = round(time.perf_counter() - started, 3)
    context.record(notebook, status="done", key=key, seconds=seconds, output=output.name)
    return seconds


def _kernel_manager_class(environment: dict[str, str]) -> type:
    """A kernel manager whose kernel starts with ``environment`` on top of this process's environment
    (``start_kernel(env=...)``, jupyter_client's own way). Each notebook gets its own, so two lanes never
    change the environment of the process they share."""
    from jupyter_client.manager import AsyncKernelManager

    class KernelWithEnvironment(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:
            kw["env"] = {**os.environ, **kw.get("env", {}), **environment}
            await super().start_kernel(**kw)

    return KernelWithEnvironment


def _failure(context: _RunContext, notebook: Notebook, err: Exception, failed: Path) -> KitError:
    import papermill

    resume = f"Earlier stages are kept; fix and re-run `{context.resume_command(notebook.number)}`."
    if isinstance(err, papermill.PapermillExecutionError):
        cell = _failing_cell(failed) or err.cell_index + 1
        return KitError(
            f"notebook {notebook.path.name} failed in cell {cell} (execution count {err.exec_count}): "
            f"{err.ename}: {_one_line(err.evalue)}. "
            f"The executed notebook with the full traceback: {_shown(failed)}. {resume}"
        )
    where = f" The partly executed notebook: {_shown(failed)}." if failed.exists() else ""
    return KitError(
        f"notebook {notebook.path.name} could not be executed: {type(err).__name__}: "
        f"{_one_line(str(err))}.{where} {resume}"
    )


def params_path(run_dir: Path, notebook: Notebook) -> Path:
    """``<run>/params/NN_name.yaml``: the parameters papermill injects into ``notebook``."""
    return run_dir / PARAMS_DIR / f"{notebook.stem}.yaml"


def write_params(run_dir: Path, notebook: Notebook, parameters: dict[str, Any]) -> Path:
    """Write the notebook's parameters, exactly as papermill gets them, as YAML (what ``papermill -f`` reads)."""
    import yaml

    text = yaml.safe_dump(parameters, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return atomic_write_text(params_path(run_dir, notebook), text)


def papermill_command(profile: Profile, notebook: Notebook, run_dir: Path) -> str:
    """The plain ``papermill`` command that executes ``notebook`` as ``kit run`` does: the same parameters (its
    ``params/NN_name.yaml``), kernel, working directory and environment (``KERNEL_ENVIRONMENT`` and the
    profile's ``runtime_environment``; ``env -u`` removes what ``kit run`` removes). Paths are absolute, so it
    runs from any folder. It writes the executed copy straight to the run folder and leaves ``stages.json``
    alone."""
    environment: dict[str, str | None] = {**KERNEL_ENVIRONMENT, **runtime_environment(profile)}
    parts = ["env"]
    parts += [f"-u {name}" for name, value in environment.items() if value is None]
    parts += [f"{name}={shlex.quote(value)}" for name, value in environment.items() if value is not None]
    parts += ["papermill", shlex.quote(str(notebook.path.resolve())),
              shlex.quote(str((run_dir / notebook.path.name).resolve())),
              "-f", shlex.quote(str(params_path(run_dir, notebook).resolve())),
              "-k", KERNEL, "-l", "python", "--cwd", shlex.quote(str(REPO_DIR))]
    return " ".join(parts)


def _needed(missing: list[MissingData], numbers: set[str]) -> list[MissingData]:
    """The missing data a notebook among ``numbers`` reads (data whose readers are not known: all of it)."""
    return [entry for entry in missing if entry.read_by is None or numbers & set(entry.read_by)]


def _refuse_missing_data(context: _RunContext, missing: list[MissingData]) -> None:
    if not missing:
        return
    lines = "\n".join(f"  {entry.line()}" for entry in missing)
    raise KitError(
        f"profile {context.profile.reference}: hand-supplied data is missing, so the run does not start:\n{lines}\n"
        f"Put each in place as {DATA_DOC} describes (or point the profile key at it); "
        f"`kit run --profile {context.profile.reference} --dry-run` lists what is still missing."
    )


def _print_plan(context: _RunContext, outcomes: list[StageOutcome], missing: list[MissingData]) -> None:
    profile = context.profile
    print(f"profile {profile.reference} ({profile.path}), hash {profile.hash[:12]}")
    print(f"run folder {_shown(context.run_dir)}")
    print("notebooks:")
    width = max(len(outcome.notebook) for outcome in outcomes)
    for index, outcome in enumerate(outcomes, start=1):
        print(f"  [{index}/{len(outcomes)}] {outcome.notebook:<{width}}  {outcome.status}")
        if outcome.command:
            print(f"      {outcome.command}")
    print("hand-supplied data:" + ("" if missing else " nothing missing"))
    for entry in missing:
        readers = f"read by notebook {', '.join(entry.read_by)}" if entry.read_by else "read by any notebook"
        print(f"  MISSING {entry.line()}; {readers}")
    supplied = hand_supplied_data(profile)
    for section in ("models", "datasets"):
        entries = profile.get(section, {})
        print(f"{section}:")
        name_width = max((len(str(name)) for name in entries), default=0)
        for name, value in entries.items():
            resolved = profile.resolve_path(value)
            if isinstance(resolved, Path):
                absent = "  (missing)"
                if section == "datasets" and f"datasets.{name}" not in supplied:
                    absent = "  (not built yet: the tiny world, written by notebook 00)"
                where = f"{resolved}" + ("" if resolved.exists() else absent)
            else:
                where = f"{resolved}  (hub)"
            print(f"  {name:<{name_width}}  {where}")
    for section in ("world", "evaluation"):
        entries = profile.get(section, None)
        if not isinstance(entries, dict):
            continue
        print(f"{section}:")
        name_width = max((len(str(name)) for name in entries), default=0)
        for name, value in entries.items():
            print(f"  {name:<{name_width}}  {'null' if value is None else value}")


# A notebook reads answers when it declares evaluation_extractor (the old parameters cells) or when its code builds
# the answer reader: extraction_from_profile, or a pipeline's evaluation / extraction (kit.casseat.pipeline).
_READS_ANSWERS = re.compile(r"\bextraction_from_profile\(|\bpipeline\.(?:evaluation|extraction)\(")


def reads_answers(notebook_path: str | Path, parameters: dict[str, Any]) -> bool:
    """Whether a notebook reads answers with the profile's ``evaluation`` settings."""
    import nbformat

    if "evaluation_extractor" in parameters:
        return True
    notebook = nbformat.read(str(notebook_path), as_version=4)
    return any(cell.cell_type == "code" and _READS_ANSWERS.search(cell.source) for cell in notebook.cells)


def _check_answer_reader(profile: Profile, to_run: list[tuple[Path, dict[str, Any]]], contact: bool) -> None:
    """``kit.llm.judges.extraction_from_profile`` on the profile's ``evaluation`` settings when a notebook about to
    run reads answers with them (``reads_answers``); a missing or wrong value is a KitError."""
    from kit.llm.judges import extraction_from_profile

    if not any(reads_answers(path, parameters) for path, parameters in to_run):
        return
    extraction_from_profile(profile.get("evaluation.extractor", "rules"), profile.get("evaluation.judge_url", None),
                            profile.get("evaluation.judge_model", None),
                            profile.get("evaluation.judge_api_key_env", None), profile=profile.reference,
                            check=contact)


def run_notebooks(
    profile: Profile | str | Path,
    notebooks_dir: str | Path = DEFAULT_NOTEBOOKS_DIR,
    results_dir: str | Path = DEFAULT_RESULTS_DIR,
    only: str | int | None = None,
    from_: str | int | None = None,
    run_id: str | None = None,
    dry_run: bool = False,
    force: bool = False,
) -> list[StageOutcome]:
    """Execute the selected notebooks in order into ``results_dir/runs/<run-id>/``.

    Up-to-date notebooks are skipped unless ``force``. A failing notebook raises ``KitError`` naming
    the notebook, the cell and the error; the notebooks executed before it keep their outputs.
    """
    from tqdm.auto import tqdm

    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    notebooks_dir, results_dir = Path(notebooks_dir), Path(results_dir)
    selected = select_notebooks(discover_notebooks(notebooks_dir), only=only, from_=from_)
    context = _RunContext(profile, notebooks_dir, results_dir, run_id)
    code_hash = kit_code_hash()

    plan = []
    for notebook in selected:
        parameters = notebook_parameters(profile, notebook.path, context.run_dir, context.results_dir)
        key = stage_key(notebook.path, parameters, profile, code_hash)
        plan.append((notebook, parameters, key, not force and context.is_up_to_date(notebook, key)))

    # Hand-supplied data (COCO images, AMBER, ...) is checked before notebook 00 runs, not when notebook 07
    # needs it: the dry run lists all of it, a real run refuses while a notebook it would execute reads it.
    missing = missing_data(profile)
    if not dry_run:
        _refuse_missing_data(context, _needed(missing, {notebook.number for notebook, _, _, fresh in plan
                                                         if not fresh}))

    # The evaluation notebooks' answer reader is checked before notebook 01 runs, not after hours of training:
    # its settings always, and in a real run its endpoint with one request. A dry run prints its plan (and so
    # the missing data) first and then refuses as the real run would.
    reader_error = None
    try:
        _check_answer_reader(profile, [(notebook.path, parameters) for notebook, parameters, _, fresh in plan
                                       if not fresh], contact=not dry_run)
    except KitError as err:
        if not dry_run:
            raise
        reader_error = err

    if dry_run:
        # The params files are written so that each printed papermill command runs as it is.
        outcomes = []
        for notebook, parameters, _, fresh in plan:
            write_params(context.run_dir, notebook, parameters)
            outcomes.append(StageOutcome(notebook.stem, "up to date" if fresh else "would run",
                                         command=papermill_command(profile, notebook, context.run_dir)))
        _print_plan(context, outcomes, missing)
        if reader_error is not None:
            raise reader_error
        return outcomes

    from kit.core.provenance import kit_commit, write_provenance

    context.commit = kit_commit()
    context.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        context.run_dir / "profile.json",
        {
            "reference": profile.reference,
            "path": profile.path,
            "hash": profile.hash,
            "data": profile.data,
            "assumptions": profile.assumptions,
        },
    )
    # Recorded before anything runs, so that a report of a run (even a failed one) says what it ran on.
    write_provenance(context.run_dir, profile, context.results_dir)
    apply_runtime(profile)
    total = len(plan)
    finished: dict[int, StageOutcome] = {}
    with tqdm(total=total, unit="notebook", desc="kit run", leave=False) as bar:

        def run_one(index: int, threads_share: int | None = None, share_file: Path | None = None) -> None:
            """Run (or skip) the plan's notebook ``index``; ``threads_share``: the torch threads its kernel gets
            when lanes run beside it (None: the profile's torch_threads), and ``share_file`` the file that holds
            that share as it changes (``kit.core.profile.follow_thread_share``)."""
            notebook, parameters, key, fresh = plan[index - 1]
            prefix = f"[{index}/{total}] {notebook.stem} ..."
            # Up to date means run with these very parameters (they are part of the key): written either way.
            write_params(context.run_dir, notebook, parameters)
            if fresh:
                bar.write(f"{prefix} skipped (up to date)")
                finished[index] = StageOutcome(notebook.stem, "skipped", output=context.run_dir / notebook.path.name)
                bar.update()
                return
            bar.set_description(notebook.stem)
            environment = dict(KERNEL_ENVIRONMENT)
            if threads_share is not None:
                environment[THREADS_SHARE_ENV] = str(threads_share)
            if share_file is not None:
                environment[THREADS_FILE_ENV] = str(share_file)
            try:
                seconds = _execute(context, notebook, parameters, key, environment)
            except KitError:
                bar.write(f"{prefix} FAILED")
                raise
            bar.write(f"{prefix} done in {seconds:.1f} s")
            finished[index] = StageOutcome(notebook.stem, "done", seconds, context.run_dir / notebook.path.name)
            bar.update()

        up_to_date = {index for index, (_, _, _, fresh) in enumerate(plan, start=1) if fresh}
        for block in lane_blocks([notebook for notebook, _, _, _ in plan]):
            _run_block(profile, block, run_one, up_to_date)
    outcomes = [finished[index] for index in sorted(finished)]
    executed = sum(outcome.status == "done" for outcome in outcomes)
    print(f"run folder {_shown(context.run_dir)}: {executed} executed, {len(outcomes) - executed} up to date")
    return outcomes


def lane_blocks(notebooks: list[Notebook]) -> list[list[list[int]]]:
    """The run order: blocks, each a list of lanes, each a list of 1-based positions in ``notebooks``.
    Consecutive notebooks with a lane form one block (one list per lane, in order); a notebook without a lane
    is a block of its own."""
    blocks: list[dict[str | None, list[int]]] = []
    for index, notebook in enumerate(notebooks, start=1):
        lane = notebook.lane
        if lane is None or not blocks or None in blocks[-1]:
            blocks.append({})
        blocks[-1].setdefault(lane, []).append(index)
    return [list(block.values()) for block in blocks]


def notebook_lanes(profile: Profile) -> int:
    """The profile's ``notebook_lanes``: how many lanes of a block run side by side (1: one notebook at a time)."""
    lanes = profile.get("notebook_lanes", 1)
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise KitError(f"profile {profile.path}: notebook_lanes must be a positive integer, not {lanes!r}")
    return lanes


def _run_block(profile: Profile, block: list[list[int]], run_one: Any, up_to_date: set[int]) -> None:
    """Run one block: its lanes side by side when the profile allows and more than one has a notebook to run,
    else every notebook in number order. When a lane fails, the other lanes still finish theirs (nothing they
    would compute is lost, and resuming from the failed notebook skips them); then the first failure is
    raised."""
    lanes = notebook_lanes(profile)
    busy = [lane for lane in block if not set(lane) <= up_to_date]
    if lanes == 1 or len(busy) < 2:
        for index in sorted(index for lane in block for index in lane):
            run_one(index)
        return
    for lane in block:
        if lane not in busy:
            for index in lane:
                run_one(index)  # up to date: only recorded as skipped
    side_by_side = min(lanes, len(busy))
    threads = torch_threads(profile)
    running = [side_by_side]  # lanes started and not finished; counted before any starts, so none sees itself alone
    lock = threading.Lock()
    interrupted = threading.Event()
    scratch = tempfile.TemporaryDirectory(prefix="kit-lanes-")
    share_file = Path(scratch.name) / "threads" if threads is not None else None

    def share_now() -> int | None:
        """The threads each running lane's kernel gets; written for the kernels to follow. Called under ``lock``."""
        if threads is None:
            return None
        share = max(1, threads // max(1, running[0]))
        atomic_write_text(share_file, f"{share}\n")
        return share

    with lock:
        share_now()

    def run_lane(lane: list[int], queued: bool) -> None:
        if queued:  # it waited for a free thread: a lane before it has finished
            with lock:
                running[0] += 1
                share_now()
        try:
            for index in lane:
                if interrupted.is_set():
                    return
                with lock:  # a notebook that starts after the other lanes finished gets all the threads
                    share = share_now()
                run_one(index, share, share_file)
        finally:
            with lock:
                running[0] -= 1
                share_now()  # the kernels still running take the freed threads at their next step

    errors: list[Exception] = []
    with scratch, ThreadPoolExecutor(side_by_side, thread_name_prefix="kit-lane") as pool:
        futures = [pool.submit(run_lane, lane, queued=i >= side_by_side) for i, lane in enumerate(busy)]
        try:
            for future in futures:
                try:
                    future.result()
                except Exception as error:  # the other lanes go on; raised once they are done
                    errors.append(error)
        except BaseException:
            interrupted.set()  # Ctrl-C: the running notebooks end (their kernels got it too), no new ones start
            raise
    if errors:
        raise errors[0]


def _run_command(args: argparse.Namespace) -> int:
    run_notebooks(
        load_profile(args.profile),
        notebooks_dir=args.notebooks_dir,
        results_dir=args.results_dir,
        only=args.only,
        from_=args.from_,
        run_id=args.run_id,
        dry_run=args.dry_run,
        force=args.force,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kit run``."""
    parser = subparsers.add_parser(
        "run",
        help="execute the numbered notebooks with papermill",
        description="Execute notebooks/NN_name.ipynb in order with the profile's parameters into "
        "results/runs/<run-id>/, skipping notebooks that are up to date.",
    )
    parser.add_argument("--profile", required=True, help="profile name (kit/profiles/NAME.yaml) or YAML path")
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument("--only", metavar="NN", help="run only notebook NN")
    selection.add_argument("--from", dest="from_", metavar="NN", help="run notebook NN and the ones after it")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print the plan, each notebook's papermill command (writing its params file), the missing "
             "hand-supplied data and the profile; execute nothing"
    )
    parser.add_argument(
        "--force", action="store_true", help="execute the selected notebooks even if up to date"
    )
    parser.add_argument(
        "--run-id", help="run folder name under results/runs (default: PROFILE-<8 hex of the profile hash>)"
    )
    parser.add_argument(
        "--notebooks-dir", type=Path, default=DEFAULT_NOTEBOOKS_DIR, help="folder of NN_name.ipynb notebooks"
    )
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, help="folder holding runs/<run-id>/"
    )
    parser.set_defaults(func=_run_command)
