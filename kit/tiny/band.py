"""``kit models band MODEL``: does a tiny model score where a paper's effect can show?

A base model's score must leave room both ways: near the blind guess, a trained model's gain is noise around
chance; near 100 %, there is nothing left to gain. Issue 17 asks every evaluation family to score its base model at
least ``MARGIN`` points above the blind guess (``kit.eval.baselines``: a random option, or the most common gold answer
on free-form items, scored by the benchmark's own rule) and below ``CEILING``. This command evaluates a model on the
benchmarks its notebooks evaluate it on (notebook 05's for a Qwen2-VL, notebook 08's for a LLaVA), greedy and
rules-only as the notebooks do, and prints each headline number beside the blind guess and the band's verdict.

MME's totals are sums of sub-task scores of at most 200 each, so they are read as a share of their maximum. A metric
whose benchmark has no blind guess (AMBER: an empty caption would score a perfect CHAIR) gets no verdict. The blind
guess answers at random, so a model that answers POPE's questions "yes" every time scores an F1 of 66.67 and is "in
band" on it: read POPE's accuracy beside its F1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kit.errors import KitError
from kit.eval.baselines import MARGIN

CEILING = 85.0  # per cent: above it a base model leaves a paper's method too little room (issue 17)
MME_SUBTASK_MAX = 200.0  # an MME sub-task scores 100 accuracy + 100 accuracy+ at most
VERDICTS = ("below", "in band", "above")


def _percent(benchmark: str, keys: tuple[str, ...], value: float | None, metrics: Mapping[str, Any]) -> float | None:
    """``value`` as a percentage: MME's totals as a share of 200 per sub-task scored (``None`` when the items held
    none of the total's sub-tasks), the rest as they are."""
    if value is None or benchmark != "mme":
        return value
    subtasks = metrics.get(f"{keys[-1]}_subtasks") or []
    return 100.0 * value / (MME_SUBTASK_MAX * len(subtasks)) if subtasks else None


def band_rows(metrics: Mapping[str, Mapping[str, Any]], blind: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per headline number of each benchmark in ``metrics`` (``benchmark -> bench.score(...)``): ``score`` and
    ``blind`` (the blind guess) as the benchmark reports them, both as ``percent`` / ``blind_percent`` (each ``None``
    where there is no such number), and ``verdict``: "below" (less than ``MARGIN`` points above the blind guess), "in band" or
    "above" (``CEILING`` or more); ``None`` where there is no blind guess or lower is better."""
    from kit.eval.evaluate import HEADLINES, LOWER_IS_BETTER, _at_path

    rows = []
    for benchmark, scores in metrics.items():
        guessed = blind.get(benchmark)
        for label, keys in HEADLINES[benchmark]:
            # None where the items scored cannot give the number (AMBER's score needs both of its halves).
            value = _at_path(scores, keys)
            guess = _at_path(guessed, keys) if guessed is not None else None
            percent = _percent(benchmark, keys, value, scores)
            guess_percent = _percent(benchmark, keys, guess, scores)
            verdict = None
            if percent is not None and guess_percent is not None and label not in LOWER_IS_BETTER:
                verdict = ("below" if percent < guess_percent + MARGIN else "above" if percent >= CEILING
                           else "in band")
            rows.append({"benchmark": benchmark, "metric": label, "score": value, "blind": guess,
                         "percent": None if percent is None else round(percent, 2),
                         "blind_percent": None if guess_percent is None else round(guess_percent, 2),
                         "verdict": verdict})
    return rows


def default_benchmarks(profile: Any, family: str) -> dict[str, str]:
    """The benchmarks a model of ``family`` is evaluated on in the notebooks -> their datasets: notebook 05's
    (``casseat_eval``) for a Qwen2-VL, notebook 08's (``eaco_eval``) for a LLaVA."""
    from kit.casseat.pipeline import benchmarks
    from kit.eaco.pipeline import eval_benchmarks
    from kit.llm.models import LLAVA

    return eval_benchmarks(profile) if family == LLAVA else benchmarks(profile)


def band(model: str | Path, profile: Any, benchmarks: Sequence[str] | None = None, *, limit: int | None = None,
         batch_size: int = 64, progress: bool = True) -> list[dict[str, Any]]:
    """``band_rows`` for ``model`` (a folder) on ``benchmarks`` (default: ``default_benchmarks``), each scored as its
    notebook scores it: greedy, the rules extractor, the section's ``max_new_tokens`` and ``limit``."""
    from kit.eval import benchmarks as registry
    from kit.eval.baselines import blind_metrics
    from kit.eval.evaluate import evaluate
    from kit.llm.models import LLAVA, load_model

    loaded = load_model(str(model))
    sources = default_benchmarks(profile, loaded.family)
    if benchmarks:
        unknown = [name for name in benchmarks if name not in sources]
        if unknown:
            raise KitError(f"band: {', '.join(unknown)} is not among the benchmarks a {loaded.family} model is "
                           f"evaluated on here ({', '.join(sources)})")
        sources = {name: sources[name] for name in benchmarks}
    section = "eaco_eval" if loaded.family == LLAVA else "casseat_eval"
    max_new_tokens = profile.get(f"{section}.max_new_tokens")
    metrics, blind = {}, {}
    for name, source in sources.items():
        bench = registry.get(name)
        metrics[name] = evaluate(loaded, name, source=source, limit=limit, batch_size=batch_size,
                                 max_new_tokens=max_new_tokens, progress=progress)
        guess = blind_metrics(name, bench.load(source, split=bench.DEFAULT_SPLIT, limit=limit))
        if guess is not None:
            blind[name] = guess
    return band_rows(metrics, blind)


def report_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The rows as an aligned table, and how many headline numbers are in the band."""
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [f"{'metric':24s} {'score':>8s} {'blind':>8s} {'%':>7s} {'blind %':>8s}  verdict"]
    for row in rows:
        lines.append(f"{row['metric']:24s} {number(row['score']):>8s} {number(row['blind']):>8s} "
                     f"{number(row['percent']):>7s} {number(row['blind_percent']):>8s}  {row['verdict'] or '-'}")
    judged = [row for row in rows if row["verdict"] is not None]
    inside = sum(row["verdict"] == "in band" for row in judged)
    lines.append(f"{inside} of {len(judged)} judged numbers in the band: at least {MARGIN:g} points above the blind "
                 f"guess and below {CEILING:g} %")
    return lines


def register(sub) -> None:
    parser = sub.add_parser("band", help="a tiny model's score on each benchmark its notebooks evaluate it on, beside "
                                         "the blind guess: in the band where a paper's effect can show, or not")
    parser.add_argument("model", help="model folder (e.g. data/models/tiny-llava-policy)")
    parser.add_argument("--profile", default="tiny", help="profile whose datasets to evaluate on (default: tiny)")
    parser.add_argument("--benchmarks", default=None, help="comma-separated subset (default: the notebook's)")
    parser.add_argument("--limit", type=int, default=None, help="the first N items of each benchmark only")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    parser.add_argument("--threads", type=int, default=2)
    parser.set_defaults(func=_cmd_band)


def _cmd_band(args) -> int:
    import torch

    from kit.core.profile import load_profile

    torch.set_num_threads(args.threads)
    names = [name.strip() for name in args.benchmarks.split(",") if name.strip()] if args.benchmarks else None
    rows = band(args.model, load_profile(args.profile), names, limit=args.limit)
    print("\n".join(report_lines(rows)))
    if args.json is not None:
        from kit.core.artifacts import atomic_write_json

        atomic_write_json(args.json, rows)
    return 0
