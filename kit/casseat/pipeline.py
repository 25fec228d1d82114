"""The Cas-SEAT pipeline: one profile in, every stage of notebooks 01-05 out, each a cached stage.

Notebooks 01-05 each teach one stage; a later notebook gets the earlier stages' outputs from here, never by
building their settings again, so a setting lives in one place, the profile::

    from kit.casseat import pipeline
    from kit.core.profile import load_profile

    profile = load_profile("tiny")
    run = "results/runs/tiny-interactive"
    pipeline.synthesis(profile, run)           # notebook 01: kit.casseat.synthesis.run_synthesis
    pipeline.trainsets(profile, run)           # notebook 02: kit.casseat.trainsets.build_trainsets
    students = pipeline.students(profile, run) # notebook 04: kit.training.sft.train_stage per training set
    evaluation = pipeline.evaluation(profile, run, students)  # notebook 05: kit.eval.evaluate.evaluate_stage

Every function is cheap when its stage is done (the stage folder under ``run/casseat/`` is found by the hash
of its parameters) and computes it otherwise. The settings come from the profile's sections through the
settings classes' ``from_profile``: ``SynthesisConfig`` (``models.teacher``, ``datasets.mathv360k``,
``synthesis:``, ``seed``, ``engine:``), ``LabelledFilters`` (``selection:``), ``SFTSettings`` (``finetune:``),
``EngineChoice`` (``engine:``); the training sets' and evaluation's own values are read here
(``trainsets:``, ``casseat_eval:``, ``evaluation:``, ``spread:``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kit.errors import KitError

STAGE_FOLDER = "casseat"  # the Cas-SEAT stages live in run/casseat/
# The main table's rows -> the model each row evaluates (notebook 05's tables and notebook 09's report use
# these names); TRAINED_ROWS are the rows whose model is a student trained here.
MAIN_ROWS: dict[str, str] = {"teacher": "teacher", "base": "base", "SEAT": "seat", "Cas-SEAT": "cas_seat"}
TRAINED_ROWS = ("SEAT", "Cas-SEAT")
# Each main row's strategy: the casseat_eval key that names it.
ROW_STRATEGY_KEYS = {"teacher": "strategy_teacher", "base": "strategy_base", "SEAT": "strategy_seat",
                     "Cas-SEAT": "strategy_cas_seat"}
SPREAD_STUDENTS = ("seat", "cas_seat")  # trained again under every seed of spread.seeds
# casseat_eval.benchmarks name -> the profile's dataset key it is read from.
BENCHMARK_DATASETS = {"mathvista": "mathvista", "mathv": "mathvision", "wemath": "wemath"}


def stage_root(run: str | Path) -> Path:
    """Where the Cas-SEAT stages of a run folder live."""
    return Path(run) / STAGE_FOLDER


def _path(profile: Any, key: str) -> str:
    from kit.core.paths import resolve_path

    return str(resolve_path(profile.get(key)))


# ------------------------------------------------------------------------------------------ 01 · synthesis
def engine(profile: Any):
    """Where every generation of the pipeline runs (the profile's ``engine:`` section)."""
    from kit.llm.generate import EngineChoice

    return EngineChoice.from_profile(profile)


def synthesis_config(profile: Any):
    """Notebook 01's ``SynthesisConfig``."""
    from kit.casseat.synthesis import SynthesisConfig

    return SynthesisConfig.from_profile(profile)


def synthesis(profile: Any, run: str | Path, progress: bool = True) -> dict[str, Any]:
    """Notebook 01's stage (``run_synthesis``): the folder, the source filter counts and the summary."""
    from kit.casseat.synthesis import run_synthesis

    return run_synthesis(synthesis_config(profile), stage_root(run), answer_kinds=profile.get("selection.answer_kinds"),
                         progress=progress)


# ------------------------------------------------------------------------------------------ 02 · selection
def filters(profile: Any):
    """Notebook 02's ``LabelledFilters``."""
    from kit.casseat.selection import LabelledFilters

    return LabelledFilters.from_profile(profile)


def judge(profile: Any, progress: bool = False):
    """The MLLM judge of ``selection.judge`` (the teacher, on the synthesis engine), or None when it is off."""
    from kit.casseat.selection import mllm_judge

    if not profile.get("selection.judge"):
        return None
    return mllm_judge(synthesis_config(profile).engine(), progress=progress)


def trainsets(profile: Any, run: str | Path, progress: bool = True) -> dict[str, Any]:
    """Notebook 02's stage (``build_trainsets`` over ``synthesis``): the folder, the filter counts, the sets'
    sizes and kinds. The judge, when ``selection.judge`` is on, runs only when the stage is built."""
    from kit.casseat.trainsets import build_trainsets

    folder = Path(synthesis(profile, run, progress)["folder"])
    section = profile.get("trainsets")
    return build_trainsets(folder, stage_root(run), filters(profile), cot_per_reflection=section["cot_per_reflection"],
                           quantities=section["quantities"], seed=profile.get("seed"),
                           judge=_LazyJudge(profile) if profile.get("selection.judge") else None,
                           mixing_cot_fractions=section["mixing_cot_fractions"], mixing_size=section["mixing_size"])


class _LazyJudge:
    """``judge(profile)``, built (the teacher loaded) only when ``build_trainsets`` calls it."""

    def __init__(self, profile: Any) -> None:
        self.profile = profile

    def __call__(self, records: list[dict]) -> dict[tuple, bool]:
        return judge(self.profile)(records)


def training_sets(profile: Any, run: str | Path) -> dict[str, Path]:
    """Student name -> training set file: ``seat``, ``cas_seat``, ``cas_seat_n<N>``, ``cas_seat_mix<P>``."""
    from kit.casseat.tables import student_sets

    return student_sets(trainsets(profile, run)["folder"], profile.get("trainsets.quantities"),
                        profile.get("trainsets.mixing_cot_fractions"))


# ------------------------------------------------------------------------------------------ 04 · fine-tuning
def recipe(profile: Any):
    """Notebook 04's ``SFTSettings``: the profile's ``finetune:`` section with its ``seed``."""
    from kit.training.sft import SFTSettings

    return SFTSettings.from_profile(profile, "finetune")


@dataclass(frozen=True)
class Students:
    """Notebook 04's students. ``trained``: name -> ``kit_train.json`` (``adapter_dir``, ``train_loss``, ...)
    for every training set; ``seeds``: (name, seed) -> the same for the ``SPREAD_STUDENTS`` under each seed
    (the run with the profile's ``seed`` is the one in ``trained``)."""

    settings: Any
    training_sets: dict[str, Path]
    trained: dict[str, dict[str, Any]]
    seeds: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    @staticmethod
    def seed_name(name: str, seed: int) -> str:
        return f"{name} (seed {seed})"

    def adapters(self) -> dict[str, str]:
        """Model name -> adapter folder: every student, then ``<name> (seed <s>)`` for each spread seed."""
        return {**{name: r["adapter_dir"] for name, r in self.trained.items()},
                **{self.seed_name(name, s): r["adapter_dir"] for (name, s), r in self.seeds.items()}}

    def table_rows(self) -> dict[str, dict[str, Any]]:
        """What notebook 04's training table lists: every student, and the spread runs not already there."""
        return {**self.trained, **{self.seed_name(name, s): r for (name, s), r in self.seeds.items()
                                   if s != self.settings.seed}}


def students(profile: Any, run: str | Path, seeds: Iterable[int] | None = None, progress: bool = True) -> Students:
    """Notebook 04's stage: a LoRA adapter (``train_stage``) for every training set, then ``SPREAD_STUDENTS``
    again under each of ``seeds`` (the profile's ``spread.seeds`` when None; the seed sets the LoRA
    initialisation and the data order, the training sets do not change)."""
    from kit.core.parallel import Stage, run_stages
    from kit.training.sft import stage_folder, train_stage

    settings = recipe(profile)
    student = _path(profile, "models.student")
    sets = training_sets(profile, run)
    root = stage_root(run)
    seeds = list(profile.get("spread.seeds", []) if seeds is None else seeds)
    runs = {name: (path, settings) for name, path in sets.items()}
    runs.update({Students.seed_name(name, s): (sets[name], replace(settings, seed=s))
                 for name in SPREAD_STUDENTS for s in seeds})
    # The adapters are independent: train those not yet done side by side (the profile's stage_workers), then
    # read every one back through train_stage below.
    run_stages(profile, [Stage(f"adapter {name}", stage_folder(student, path, root, recipe_) / "kit_train.json",
                               train_stage, (student, path, root, recipe_), {"progress": progress},
                               cost=Path(path).stat().st_size * recipe_.epochs)
                         for name, (path, recipe_) in runs.items()], what="training students")
    trained = {name: train_stage(student, path, root, settings, progress=progress) for name, path in sets.items()}
    spread = {(name, s): train_stage(student, sets[name], root, replace(settings, seed=s), progress=progress)
              for name in SPREAD_STUDENTS for s in seeds}
    return Students(settings, sets, trained, spread)


# ------------------------------------------------------------------------------------------ 05 · evaluation
def extraction(profile: Any, check: bool = True):
    """How answers are read (``evaluation.*``, ``kit.llm.judges.extraction_from_profile``): a paper run without
    its judge endpoint stops here, naming the profile key."""
    from kit.llm.judges import extraction_from_profile

    return extraction_from_profile(profile.get("evaluation.extractor", "rules"),
                                   profile.get("evaluation.judge_url", None),
                                   profile.get("evaluation.judge_model", None),
                                   profile.get("evaluation.judge_api_key_env", None), profile=profile.reference,
                                   check=check)


def benchmarks(profile: Any) -> dict[str, str]:
    """``casseat_eval.benchmarks`` -> their data (the profile's ``datasets:``), in the profile's order."""
    names = profile.get("casseat_eval.benchmarks")
    unknown = sorted(set(names) - set(BENCHMARK_DATASETS))
    if unknown:
        raise KitError(f"casseat_eval.benchmarks: unknown {unknown}; choose from {sorted(BENCHMARK_DATASETS)}")
    return {name: _path(profile, f"datasets.{BENCHMARK_DATASETS[name]}") for name in names}


def strategies(profile: Any) -> dict[str, str]:
    """Main row -> the strategy it answers with (``casseat_eval.strategy_*``)."""
    return {row: profile.get(f"casseat_eval.{key}") for row, key in ROW_STRATEGY_KEYS.items()}


class Evaluation:
    """Notebook 05's evaluations: ``measure(model, strategy)`` is one ``evaluate_stage`` (cached) of a model
    (``teacher``, ``base``, a student's name or ``<name> (seed <s>)``) on every benchmark; ``measured`` keeps
    each result for the extraction table."""

    def __init__(self, profile: Any, run: str | Path, students: Students, reader: Any = None) -> None:
        self.profile = profile
        self.root = stage_root(run)
        self.students = students
        self.extraction = reader if reader is not None else extraction(profile)
        self.benchmarks = benchmarks(profile)
        self.strategies = strategies(profile)
        self.engine = engine(profile)
        self.models: dict[str, str] = {"teacher": _path(profile, "models.teacher"),
                                       "base": _path(profile, "models.student"), **students.adapters()}
        self.measured: dict[str, dict] = {}

    def _run(self, model: str, strategy: str) -> dict[str, Any]:
        """``evaluate_stage``'s arguments for one model under one strategy."""
        if model not in self.models:
            raise KitError(f"evaluation: no model {model!r}; the pipeline has {', '.join(self.models)}")
        section = self.profile.get("casseat_eval")
        return dict(model=self.models[model], benchmarks=self.benchmarks, strategy=strategy, run_dir=self.root,
                    limit=section["limit"], batch_size=section["batch_size"],
                    max_new_tokens=section["max_new_tokens"], engine=self.engine, **self.extraction.options())

    def measure(self, model: str, strategy: str) -> dict[str, dict]:
        """The model's metrics on every benchmark under one strategy (a cached stage)."""
        return self.measure_many({None: (model, strategy)})[None]

    def measure_many(self, requests: Mapping[Any, tuple[str, str]]) -> dict[Any, dict[str, dict]]:
        """``label -> (model, strategy)`` in, ``label -> measure(model, strategy)`` out; the evaluations not yet
        done run side by side (the profile's ``stage_workers``)."""
        from kit.eval.evaluate import evaluate_stages

        results = evaluate_stages(self.profile, {label: self._run(*request) for label, request in requests.items()})
        for label, (model, strategy) in requests.items():
            self.measured[f"{model} / {strategy}"] = results[label]
        return results

    def baseline(self) -> dict[str, dict[str, Any]]:
        """A blind guesser's scores on the items these evaluations score (``kit.eval.baselines.blind_baseline``): the
        main table's ``chance / majority`` row."""
        from kit.eval.baselines import blind_baseline

        return blind_baseline(self.benchmarks, limit=self.profile.get("casseat_eval")["limit"])

    def outcomes(self, model: str, strategy: str) -> dict[str, dict[str, Any]]:
        """Item by item, the finished evaluation of ``model`` under ``strategy``
        (``kit.eval.evaluate.item_outcomes``): what the paired tests and the reflection flips are counted from."""
        from kit.eval.evaluate import item_outcomes

        return item_outcomes(**self._run(model, strategy))

    def reflections(self) -> dict[str, dict[str, Any]]:
        """``outcomes`` under ``cas_seat`` of the teacher and of each main-table student (``base``, ``SEAT``,
        ``Cas-SEAT``): what ``kit.casseat.tables.reflection_table`` counts the reflection turn's flips from."""
        return {row: self.outcomes(model, "cas_seat") for row, model in MAIN_ROWS.items()}

    def comparisons(self, seeds: Iterable[int]) -> dict[tuple[str, str, int], tuple[dict, dict]]:
        """For each seed, each trained row's student against the base and the Cas-SEAT student against the SEAT one,
        each under its row's strategy: ``(model, against, seed) -> (its outcomes, the other's)``, what
        ``kit.casseat.tables.paired_table`` tests."""
        seeds = list(seeds)
        base = self.outcomes("base", self.strategies["base"])
        trained = {(row, s): self.outcomes(Students.seed_name(MAIN_ROWS[row], s), self.strategies[row])
                   for row in TRAINED_ROWS for s in seeds}
        return {**{(row, "base", s): (trained[(row, s)], base) for row in TRAINED_ROWS for s in seeds},
                **{("Cas-SEAT", "SEAT", s): (trained[("Cas-SEAT", s)], trained[("SEAT", s)]) for s in seeds}}

    def main(self, seed: int | None = None) -> dict[str, dict[str, dict]]:
        """Main row -> metrics, each row under its strategy; with ``seed`` the trained rows are the students
        trained with that spread seed (teacher and base do not depend on it)."""
        requests = {}
        for row, model in MAIN_ROWS.items():
            if seed is not None and row in TRAINED_ROWS:
                model = Students.seed_name(model, seed)
            requests[row] = (model, self.strategies[row])
        return self.measure_many(requests)


def evaluation(profile: Any, run: str | Path, students_: Students | None = None, *, check: bool = True,
               progress: bool = True) -> Evaluation:
    """Notebook 05's evaluator over ``students`` (those of ``students(profile, run)`` when None). The answer
    reader is checked first, so a missing judge endpoint stops before any training."""
    reader = extraction(profile, check=check)
    return Evaluation(profile, run, students_ if students_ is not None else students(profile, run, progress=progress),
                      reader)

