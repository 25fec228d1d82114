"""EACO's last stage and its tables (arXiv 2412.04903).

- The additional SFT stage trains on an instruction set whose first question carries the model's own
  description of the image: ``describe_images`` has the DPO-tuned policy describe each instruction row's
  image under one of the eight description prompts, sampled at temperature 0.2 (the authors' draft code,
  github.com/yongxinwang-ai/EACO_draft @ dfac188, ``EACO/generate_des_stage2.py``), and
  ``description_sft_set`` inserts ``"Image description:\\n<description>\\n\\n"`` before the question
  (``EACO/add_des_to_data.py``). ``kit.training.sft.sft(..., adapter=<DPO adapter>)`` then continues the DPO adapter.
- ``main_table``: the base policy, + DPO with Critic pairs, + the extra SFT (= EACO) and the STIC-style
  baseline on HallusionBench, MME, MathVista and the radar benchmarks, with the relative improvements
  beside the paper's; ``critic_table`` the Critic's quality; ``radar_figure`` the paper's Figure 1 kind.
  Its ``average gain %``, set beside the paper's "8.5% improvement ... across multiple benchmarks", averages
  one number per benchmark (``average_columns``), not every column.

Every generating stage here takes ``engine`` (a ``kit.llm.generate.EngineChoice``; None: transformers, as before):
on ``openai`` the policy, the Critic (its base model plus its adapter, asked for by name) and the DPO-tuned
policy are answered by the servers of ``engine.servers`` (``vllm serve <base> --enable-lora``), and the stage
keys record the backend (``engine_key``), never the servers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from kit.core.tables import relative_gain
from kit.errors import KitError

MAIN_ROWS = ("base", "DPO (critic)", "EACO", "STIC")
# The paper's relative improvements of EACO over its base policy, in % (arXiv 2412.04903 v2, abstract:
# "reduces the overall hallucinations by 65.6% on HallusionBench and improves the reasoning ability by 21.8% on
# MME-Cognition. EACO achieves an 8.5% improvement over LLaVA-v1.6-Mistral-7B across multiple benchmarks").
# Which HallusionBench accuracy the 65.6 % is for is not said there, nor which benchmarks and metrics the
# 8.5 % averages: most likely the axes of its radar chart (Figure 1), so the kit averages one headline number
# per benchmark measured (kit.eval.evaluate.HEADLINE_METRIC; kit.core.deviations: eaco-average-basis).
PAPER_GAINS: dict[str, float] = {"HallusionBench": 65.6, "MME-C": 21.8, "average": 8.5}
PAPER_GAINS_SOURCE = "arXiv 2412.04903 v2, abstract"
# kit.eval.evaluate.HEADLINES labels -> the names the EACO tables use.
RENAME = {"MME perception": "MME-P", "MME cognition": "MME-C"}
FIRST_COLUMNS = ("HallusionBench aAcc", "HallusionBench fAcc", "HallusionBench qAcc", "MME-C", "MME-P", "MathVista")
# Columns where lower is better; their gain is computed with the sign flipped so that + always means better.
LOWER_IS_BETTER = ("AMBER CHAIR",)
DESCRIPTION_PREFIX = "Image description:\n{description}\n\n"  # EACO/add_des_to_data.py


# ------------------------------------------------------------------------------------------ the extra SFT data
def load_instruction_rows(source: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """LLaVA-instruct rows (``llava_instruct.json`` in a folder, or the file): ``id``, ``image`` (resolved
    against the file's folder) and ``conversations`` alternating human/gpt, starting with the human."""
    path = Path(source)
    if path.is_dir():
        found = sorted(path.glob("*.json"))
        if len(found) != 1:
            raise KitError(f"{path}: expected one instruction file (*.json), found {len(found)}")
        path = found[0]
    if not path.is_file():
        raise KitError(f"instruction set {source} does not exist")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise KitError(f"{path} is not valid JSON: {err.msg} (line {err.lineno})") from None
    rows = []
    for number, row in enumerate(raw[:limit] if limit else raw, start=1):
        where = f"{path} row {number} ({row.get('id', 'no id') if isinstance(row, dict) else 'not an object'})"
        if not isinstance(row, dict) or not isinstance(row.get("conversations"), list) or not row["conversations"]:
            raise KitError(f"{where}: needs an id, an image and a non-empty conversations list")
        turns = row["conversations"]
        roles = [turn.get("from") for turn in turns]
        if roles != ["human", "gpt"] * (len(turns) // 2) or len(turns) % 2:
            raise KitError(f"{where}: conversations must alternate human and gpt, starting with human")
        image = (path.parent / row["image"]) if not Path(row.get("image", "")).is_absolute() else Path(row["image"])
        if not image.is_file():
            raise KitError(f"{where}: image {image} not found")
        rows.append({"id": str(row.get("id", number)), "image": str(image),
                     "turns": [turn["value"].replace("<image>\n", "").replace("<image>", "") for turn in turns]})
    return rows


def describe_images(engine: Any, rows: Sequence[Mapping[str, Any]], out_path: str | Path,
                    instructions: Sequence[str], sampling: Any, seed: int = 0, *, progress: bool = False) -> dict:
    """The policy's description of each row's image under one of ``instructions`` (a seeded choice per row,
    recorded), one line per row id in ``out_path``, appended as they arrive; a re-run generates only what is
    missing and a file written with other settings is refused. Returns ``row id -> description``."""
    from kit.core.artifacts import JsonlAppender, check_resumed_settings, content_hash
    from kit.eaco.preference import instruction_for
    from kit.llm.generate import Chat, engine_decoding

    settings = {"policy": engine.model_label, "backend": engine.backend, "sampling": sampling.to_dict(),
                "decoding": engine_decoding(engine, sampling), "seed": seed,
                "instructions_hash": content_hash(list(instructions))}
    with JsonlAppender(out_path, ("id",)) as appender:
        check_resumed_settings(appender.path, appender.records(), settings, "id")
        stored = {r["id"]: r for r in appender.records()}
        plan = {row["id"]: instruction_for(row["id"], instructions, seed) for row in rows}
        chats = [Chat(row["id"], [plan[row["id"]][1]], row["image"]) for row in rows if row["id"] not in stored]
        if chats:
            for chat, text in engine.generate(chats, replace(sampling, seed=seed), progress=progress):
                record = {"id": chat.id, **settings, "image": chat.image, "prompt": plan[chat.id][1],
                          "description": text.strip()}
                appender.append(record)
                stored[chat.id] = record
    return {row["id"]: stored[row["id"]]["description"] for row in rows}


def description_sft_set(rows: Sequence[Mapping[str, Any]], descriptions: Mapping[str, str]) -> list[dict[str, Any]]:
    """``kit.casseat.trainsets`` rows of the extra SFT stage: each instruction row's conversation with its first
    question prefixed by the model's own description (``DESCRIPTION_PREFIX``), the loss on every answer. A
    row without a description, or with an empty one, is an error naming it."""
    from kit.training.data import conversation

    examples = []
    for row in rows:
        description = descriptions.get(row["id"], "")
        if not description.strip():
            raise KitError(f"extra SFT set: row {row['id']} has no image description")
        turns = list(row["turns"])
        turns[0] = DESCRIPTION_PREFIX.format(description=description) + turns[0]
        examples.append({"id": row["id"], "kind": "described_instruction", "images": [row["image"]],
                         "messages": conversation(turns, row["image"]),
                         "train_turns": list(range(len(turns) // 2))})
    return examples


# ------------------------------------------------------------------------------------------ tables
def average_columns(columns: Sequence[str]) -> list[str]:
    """The headline columns ``average gain %`` averages, in the order given: one per benchmark, its
    ``kit.eval.evaluate.HEADLINE_METRIC`` as this table names it (HallusionBench aAcc, MME-P, MathVista, POPE F1,
    SEED-Bench image, ScienceQA-IMG, AMBER score when all are measured). Averaging every column instead would
    count HallusionBench three times, AMBER three times and POPE and MME twice."""
    from kit.eval.evaluate import HEADLINE_METRIC

    chosen = {RENAME.get(column, column) for column in HEADLINE_METRIC.values()}
    return [column for column in columns if column in chosen]


def average_sentence(table) -> str:
    """What a main table's ``average gain %`` averages, in words (for its note and the report)."""
    columns = average_columns([c for c in table.columns if "gain" not in c])
    return (f"`average gain %` is the mean of the {len(columns)} benchmarks' headline gains ({', '.join(columns)}; "
            "one number per benchmark; the paper does not say which benchmarks and metrics its average takes)")


def main_table(metrics: Mapping[str, Mapping[str, Mapping[str, Any]]]):
    """Rows ``base``, ``DPO (critic)``, ``EACO``, ``STIC`` (those given); columns ``HallusionBench aAcc``,
    ``HallusionBench fAcc``, ``HallusionBench qAcc``, ``MME-C``, ``MME-P``, ``MathVista``, then the other
    benchmarks measured (the radar ones), then ``<column> gain %`` over ``base`` for each, ``average gain %``
    (the mean over one headline gain per benchmark, ``average_columns``), and the paper's reported EACO
    gains on the EACO row (``HallusionBench gain % (paper)``:
    the paper does not say which HallusionBench accuracy; ``MME-C gain % (paper)``, ``average gain %
    (paper)``)."""
    from kit.eval.evaluate import metrics_table

    unknown = [label for label in metrics if label not in MAIN_ROWS]
    if unknown:
        raise KitError(f"EACO main table: unknown row(s) {unknown}; expected {', '.join(MAIN_ROWS)}")
    if "base" not in metrics:
        raise KitError("EACO main table: the relative improvements need the `base` row")
    table = metrics_table({label: metrics[label] for label in MAIN_ROWS if label in metrics}).rename(columns=RENAME)
    first = [c for c in FIRST_COLUMNS if c in table.columns]
    table = table[first + [c for c in table.columns if c not in first]]
    headline = list(table.columns)
    for column in headline:
        table[f"{column} gain %"] = [relative_gain(v, table.loc["base", column], column in LOWER_IS_BETTER)
                                     for v in table[column]]
    gains = table[[f"{c} gain %" for c in average_columns(headline)]]
    table["average gain %"] = gains.mean(axis=1, skipna=True).round(2)
    table.loc["base", [f"{c} gain %" for c in headline] + ["average gain %"]] = float("nan")
    on_eaco = {"HallusionBench gain % (paper)": PAPER_GAINS["HallusionBench"], "MME-C gain % (paper)":
               PAPER_GAINS["MME-C"], "average gain % (paper)": PAPER_GAINS["average"]}
    for column, value in on_eaco.items():
        table[column] = [value if label == "EACO" else float("nan") for label in table.index]
    table.index.name = "model"
    return table


def critic_table(quality: Mapping[str, Mapping[str, Any]]):
    """One row per judge (e.g. the untrained base and the trained Critic) with ``kit.eaco.critic.critic_quality``'s
    numbers on the held-out ratings, accuracies in %."""
    import pandas as pd

    columns = {"n": "responses", "exact_accuracy": "exact score accuracy %", "spearman": "Spearman",
               "pairwise_accuracy": "pairwise preference accuracy %", "pairs": "pairs",
               "unparseable": "unparseable judgements"}
    rows = []
    for judge, numbers in quality.items():
        missing = [k for k in columns if k not in numbers]
        if missing:
            raise KitError(f"critic table: {judge} lacks {', '.join(missing)}")
        row = {"judge": judge, **{label: numbers[key] for key, label in columns.items()}}
        for key in ("exact_accuracy", "pairwise_accuracy"):  # critic_quality gives fractions
            row[columns[key]] = None if numbers[key] is None else round(100 * numbers[key], 2)
        rows.append(row)
    return pd.DataFrame(rows)


def radar_figure(table, title: str = "EACO: methods over benchmarks"):
    """A radar chart of the main table's rows over its headline columns, each axis scaled to the best row
    (1.0) so that benchmarks on different scales share the chart, as the paper's Figure 1 does. Columns where
    lower is better are inverted first. Returns the matplotlib figure."""
    import numpy as np
    from matplotlib import pyplot as plt

    headline = [c for c in table.columns if "gain" not in c and not table[c].isna().all()]
    if len(headline) < 3:
        raise KitError(f"radar figure: needs at least 3 benchmark columns, the table has {headline}")
    values = table[headline].astype(float).copy()
    for column in headline:
        if column in LOWER_IS_BETTER:
            values[column] = values[column].max() - values[column]
        top = values[column].max()
        values[column] = values[column] / top if top and top > 0 else 0.0
    angles = np.linspace(0, 2 * np.pi, len(headline), endpoint=False).tolist()
    figure, axis = plt.subplots(figsize=(6.5, 6.5), subplot_kw={"polar": True})
    for label, row in values.iterrows():
        points = row.tolist()
        axis.plot(angles + angles[:1], points + points[:1], marker="o", label=label)
        axis.fill(angles + angles[:1], points + points[:1], alpha=0.08)
    axis.set_xticks(angles)
    axis.set_xticklabels(headline, fontsize=8)
    axis.set_yticklabels([])
    axis.set_title(title)
    axis.legend(loc="upper right", bbox_to_anchor=(1.25, 1.1), fontsize=8)
    figure.tight_layout()
    return figure


# ------------------------------------------------------------------------------------------ pipeline stages
def critic_stage(critic_base: str | Path, vlfeedback: str | Path, run_dir: str | Path, settings: Any, *,
                 variant: str = "additive", aggregate: str = "mean", heldout: float = 0.2, seed: int = 0,
                 limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Notebook 06's stage: VLFeedback split by image into training and held-out rows, the training rows as
    scoring instructions (``kit.eaco.critic.scoring_instructions``) in ``run_dir/critic-data-<hash>/``, and the
    Critic trained on them from ``critic_base`` with ``kit.training.sft.train_stage``. Returns the data folder, the
    adapter's ``kit_train.json``, the held-out rows and ``vlfeedback_rows`` (``kit.eaco.critic.read_vlfeedback``'s
    report: rows read, kept, and left out by reason; also ``vlfeedback_rows.json`` in the data folder)."""
    from kit.core.artifacts import cached_stage, fingerprint
    from kit.eaco.critic import read_vlfeedback, scoring_instructions, split_heldout
    from kit.training.data import write_set
    from kit.training.sft import train_stage

    # The 80k downloaded rows are not all complete: unusable ones are counted by reason and recorded, not fatal
    # (unless most are, which means the images or files are not where the kit looks).
    loaded = read_vlfeedback(vlfeedback, limit=limit, skip_invalid=True)
    rows = loaded.rows
    train, held = split_heldout(rows, heldout, seed)
    params = {"vlfeedback": fingerprint(vlfeedback), "limit": limit, "variant": variant, "aggregate": aggregate,
              "heldout": heldout, "seed": seed}

    def build(tmp: Path) -> None:
        from kit.core.artifacts import atomic_write_json

        write_set(tmp / "train.jsonl", scoring_instructions(train, variant, aggregate))
        atomic_write_json(tmp / "split.json", {"train": [r.id for r in train], "heldout": [r.id for r in held]})
        atomic_write_json(tmp / "vlfeedback_rows.json", loaded.report.to_dict())

    folder = cached_stage(run_dir, "critic-data", params, build)
    adapter = train_stage(critic_base, folder / "train.jsonl", run_dir, settings, progress=progress)
    return {"data": str(folder), "critic": adapter, "heldout": held, "train": train, "train_rows": len(train),
            "vlfeedback_rows": loaded.report.to_dict()}


def judge_quality(judge: str | Path, heldout: Sequence[Any], run_dir: str | Path, *, aggregate: str = "mean",
                  batch_size: int = 16, max_new_tokens: int = 96, progress: bool = True,
                  engine: Any = None) -> dict[str, Any]:
    """A judge's (the Critic, an adapter folder; or an untrained model) quality on held-out VLFeedback ratings:
    it scores every held-out response greedily (``kit.eaco.critic.score_responses``, resumable, in
    ``run_dir/judged-<hash>/``) and ``kit.eaco.critic.critic_quality`` compares its scores with the gold ones.
    ``engine``: a ``kit.llm.generate.EngineChoice`` (None: transformers)."""
    from kit.core.artifacts import content_hash, fingerprint, stage_dir
    from kit.eaco.critic import critic_items, critic_quality, gold_scores, read_scores, score_responses
    from kit.llm.generate import Sampling, engine_for, engine_key

    items = critic_items(list(heldout))
    folder = stage_dir(run_dir, "judged", {"judge": fingerprint(judge), "max_new_tokens": max_new_tokens,
                                            "items": content_hash([(i.id, i.index, i.response) for i in items]),
                                            **engine_key(engine)})
    out = folder / "scores.jsonl"
    done = folder / "quality.json"
    if not done.is_file():
        from kit.core.artifacts import atomic_write_json

        score_responses(engine_for(engine, judge, batch_size=batch_size), items, out,
                        Sampling(max_new_tokens=max_new_tokens), progress=progress)
        atomic_write_json(done, critic_quality(read_scores(out), gold_scores(list(heldout), aggregate)))
    return json.loads(done.read_text())


def preference_stage(policy: str | Path, critic: str | Path, images_dir: str | Path, instructions: str | Path | None,
                     run_dir: str | Path, *, images: int | None = None, samples: int = 5, temperature: float = 0.2,
                     max_new_tokens: int = 1024, critic_max_new_tokens: int = 96, batch_size: int = 16,
                     seed: int = 0, progress: bool = True, engine: Any = None) -> dict[str, Any]:
    """Notebook 07's data: the policy answers each image ``samples`` times (``kit.eaco.preference.sample_responses``),
    the Critic (``critic``: its adapter folder, on its base model) scores every answer, ``build_pairs`` keeps the
    best against the worst; and the STIC-style baseline pairs from the same policy. Everything lands in
    ``run_dir/preference-<hash>/``, each file resumable. ``instructions``: an ``instructions.json`` (or its
    folder) with the description and hallucination instructions, or None for STIC's lists (which the tiny
    world's file copies). ``engine``: a ``kit.llm.generate.EngineChoice`` (None: transformers). Returns the folder,
    the pair counts and the two pair files."""
    from kit.core.artifacts import atomic_write_json, fingerprint, stage_dir
    from kit.eaco.critic import score_responses
    from kit.eaco.preference import (
        build_pairs,
        items_from_samples,
        list_images,
        load_instructions,
        sample_responses,
    )
    from kit.eaco.preference import stic_pairs as make_stic_pairs
    from kit.llm.generate import Sampling, engine_for, engine_key

    table = list_images(images_dir, limit=images)
    prompts, hallucination = load_instructions(instructions)
    params = {"policy": fingerprint(policy), "critic": fingerprint(critic), "images": fingerprint(images_dir),
              "limit": images, "instructions": [prompts, hallucination], "samples": samples,
              "temperature": temperature, "max_new_tokens": max_new_tokens,
              "critic_max_new_tokens": critic_max_new_tokens, "seed": seed, **engine_key(engine)}
    folder = stage_dir(run_dir, "preference", params)
    done = folder / "counts.json"
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        policy_engine = engine_for(engine, policy, batch_size=batch_size)
        sample_responses(policy_engine, table, prompts, folder / "samples.jsonl", n=samples, temperature=temperature,
                         seed=seed, max_new_tokens=max_new_tokens, progress=progress)
        make_stic_pairs(policy_engine, table, folder / "stic_generations.jsonl", instructions=prompts,
                        hallucination_instructions=hallucination, seed=seed,
                        sampling=Sampling(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed),
                        pairs_path=folder / "stic_pairs.jsonl", progress=progress)
        del policy_engine  # on transformers, the policy leaves memory before the Critic loads
        score_responses(engine_for(engine, critic, batch_size=batch_size), items_from_samples(folder / "samples.jsonl"),
                        folder / "scores.jsonl", Sampling(max_new_tokens=critic_max_new_tokens), progress=progress)
        counts = build_pairs(folder / "samples.jsonl", folder / "scores.jsonl", folder / "pairs.jsonl")
        atomic_write_json(done, counts)
    return {"folder": str(folder), "counts": json.loads(done.read_text()), "pairs": str(folder / "pairs.jsonl"),
            "stic_pairs": str(folder / "stic_pairs.jsonl")}


def extra_sft_stage(policy: str | Path, dpo_adapter: str | Path, instructions: str | Path, run_dir: str | Path,
                    settings: Any, *, rows: int | None = None, description_prompts: Sequence[str],
                    temperature: float = 0.2, max_new_tokens: int = 1024, batch_size: int = 16, seed: int = 0,
                    progress: bool = True, engine: Any = None) -> dict[str, Any]:
    """EACO's additional SFT: the DPO-tuned policy (``policy`` with ``dpo_adapter``) describes each instruction
    row's image (``describe_images``), the rows become ``description_sft_set`` examples in
    ``run_dir/described-<hash>/``, and ``kit.training.sft.train_stage`` continues the DPO adapter on them. ``engine``: a
    ``kit.llm.generate.EngineChoice`` for the descriptions (None: transformers; training stays here). Returns the
    adapter's ``kit_train.json``."""
    from kit.core.artifacts import fingerprint, stage_dir
    from kit.llm.generate import Sampling, engine_for, engine_key
    from kit.training.data import write_set
    from kit.training.sft import train_stage

    table = load_instruction_rows(instructions, limit=rows)
    params = {"policy": fingerprint(dpo_adapter), "instructions": fingerprint(instructions), "rows": rows,
              "prompts": list(description_prompts), "temperature": temperature, "max_new_tokens": max_new_tokens,
              "seed": seed, **engine_key(engine)}
    folder = stage_dir(run_dir, "described", params)
    data = folder / "extra_sft.jsonl"
    if not data.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        descriptions = describe_images(engine_for(engine, policy, adapter=dpo_adapter, batch_size=batch_size), table,
                                       folder / "descriptions.jsonl", description_prompts,
                                       Sampling(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed),
                                       seed, progress=progress)
        write_set(data, description_sft_set(table, descriptions))
    return train_stage(policy, data, run_dir, settings, adapter=dpo_adapter, progress=progress)


def policy_stages(policy: str | Path, critic: str | Path, images_dir: str | Path, instructions: str | Path | None,
                  instruction_rows: str | Path, run_dir: str | Path, *, seed: int, preference: Mapping[str, Any],
                  dpo_settings: Any, extra_settings: Any, extra_sft: Mapping[str, Any],
                  progress: bool = True, engine: Any = None) -> dict[str, Any]:
    """Everything after the Critic, for one seed: sampled answers scored into pairs (``preference_stage`` with
    the ``preference`` options), DPO on the Critic's pairs and on the STIC pairs, and the extra SFT stage
    continuing the first (``extra_sft_stage`` with the ``extra_sft`` options). ``seed`` replaces the settings'
    seeds, so that one call per seed measures how much the EACO rows move with sampling and training noise.
    ``engine`` (a ``kit.llm.generate.EngineChoice``; None: transformers) generates the samples, the Critic's scores
    and the descriptions; training runs here either way.
    Returns ``preference``, ``dpo_critic``, ``dpo_stic`` and ``eaco`` (each stage's record)."""
    from kit.eaco.preference import load_instructions
    from kit.training.dpo import dpo_stage

    pairs = preference_stage(policy, critic, images_dir, instructions, run_dir, seed=seed, progress=progress,
                             engine=engine, **preference)
    require_pairs(pairs)
    dpo_settings = replace(dpo_settings, seed=seed)
    dpo_critic = dpo_stage(policy, pairs["pairs"], run_dir, dpo_settings, progress=progress)
    dpo_stic = dpo_stage(policy, pairs["stic_pairs"], run_dir, dpo_settings, progress=progress)
    description_prompts, _ = load_instructions(instructions)
    eaco = extra_sft_stage(policy, dpo_critic["adapter_dir"], instruction_rows, run_dir,
                           replace(extra_settings, seed=seed), description_prompts=description_prompts, seed=seed,
                           progress=progress, engine=engine, **extra_sft)
    return {"preference": pairs, "dpo_critic": dpo_critic, "dpo_stic": dpo_stic, "eaco": eaco}


def policy_launch_commands(policy: str | Path, stages: Mapping[str, Any], run_dir: str | Path, dpo_settings: Any,
                           extra_settings: Any, *, seed: int, processes: int = 2) -> dict[str, list[str]]:
    """The ``accelerate launch`` commands (``kit.training.dpo.launch_command``, ``kit.training.sft.launch_command``) that train
    ``policy_stages``' three adapters on several GPUs: DPO on the Critic's pairs and on STIC's, and the extra SFT
    continuing the first. ``stages`` is what ``policy_stages`` returned for ``seed``; each command's output folder
    is checked to be the adapter that call used, so a command run before the notebook is reused by it."""
    from kit.training import dpo, sft

    dpo_settings, extra_settings = replace(dpo_settings, seed=seed), replace(extra_settings, seed=seed)
    pairs, dpo_adapter = stages["preference"], stages["dpo_critic"]["adapter_dir"]
    extra_data = stages["eaco"]["data"]  # the extra SFT's training set, as its kit_train.json records it
    plans = {
        "DPO on the Critic's pairs": (
            dpo.launch_command(policy, pairs["pairs"], run_dir, dpo_settings, processes=processes),
            dpo.stage_folder(policy, pairs["pairs"], run_dir, dpo_settings), dpo_adapter),
        "DPO on STIC's pairs": (
            dpo.launch_command(policy, pairs["stic_pairs"], run_dir, dpo_settings, processes=processes),
            dpo.stage_folder(policy, pairs["stic_pairs"], run_dir, dpo_settings), stages["dpo_stic"]["adapter_dir"]),
        "the extra SFT, continuing the DPO adapter": (
            sft.launch_command(policy, extra_data, run_dir, extra_settings, adapter=dpo_adapter, processes=processes),
            sft.stage_folder(policy, extra_data, run_dir, extra_settings, adapter=dpo_adapter),
            stages["eaco"]["adapter_dir"]),
    }
    for label, (_, folder, used) in plans.items():
        if Path(folder).resolve() != Path(used).resolve():
            raise KitError(f"{label}: the launch command would train into {folder}, but the stage used {used}")
    return {label: command for label, (command, _, _) in plans.items()}


def constant_judge_quality(train_rows: Sequence[Any], heldout: Sequence[Any], aggregate: str = "mean") -> dict:
    """The reference a Critic has to beat: a judge that gives every held-out response the most common training
    score. It never orders two responses, so its pairwise accuracy is 0 and its Spearman undefined."""
    from collections import Counter

    from kit.eaco.critic import critic_quality, gold_scores

    common = Counter(gold_scores(list(train_rows), aggregate).values()).most_common(1)[0][0]
    gold = gold_scores(list(heldout), aggregate)
    return {**critic_quality({key: common for key in gold}, gold), "score": common}


def require_pairs(preference: Mapping[str, Any]) -> None:
    """Stop with a clear message when the Critic made no preference pair (DPO has nothing to learn from):
    every image's scores were equal or unreadable, which an undertrained Critic does."""
    counts = preference["counts"]
    if counts.get("pairs", 0) == 0:
        raise KitError(
            f"the Critic made no preference pair from {counts.get('images')} images (skipped: {counts.get('skipped')}, "
            f"unparseable scores: {counts.get('unparseable_scores')}; see {preference['folder']}/scores.jsonl). "
            "Train the Critic longer (critic.epochs) or on more rows (critic.rows), or use more images "
            "(preference.images)")


def training_table(dpo_critic: Mapping[str, Any], dpo_stic: Mapping[str, Any], eaco: Mapping[str, Any]):
    """Notebook 07's record of the three training runs: examples, steps, loss, the implicit rewards DPO logged
    at its first and last step, and seconds (``kit_dpo.json`` and ``kit_train.json`` contents)."""
    import pandas as pd

    def dpo_row(stage: str, r: Mapping[str, Any]) -> dict[str, Any]:
        return {"stage": stage, "examples": r["pairs"], "steps": r["steps"], "loss": r["train_loss"],
                "reward chosen (first, last)": r["rewards_chosen"], "reward rejected (first, last)": r["rewards_rejected"],
                "margin (first, last)": r["reward_margin"], "seconds": r["seconds"]}

    return pd.DataFrame([
        dpo_row("DPO (critic pairs)", dpo_critic), dpo_row("DPO (STIC pairs)", dpo_stic),
        {"stage": "extra SFT (continues DPO critic)", "examples": eaco["examples"], "steps": eaco["steps"],
         "loss": eaco["train_loss"], "seconds": eaco["seconds"]},
    ])


def describe_main(table, profile: str, seeds_table=None) -> str:
    """Plain sentences about an EACO ``main_table``: each method's average gain and its largest and smallest
    one, and with ``seeds_table`` (``kit.core.tables.spread_table`` over seeds) how far the average gain and the
    paper's two headline gains move with the seed. Every number comes from the tables."""
    gains = [c for c in table.columns if c.endswith(" gain %") and c != "average gain %"]
    lines = [f"Measured on the `{profile}` profile; {average_sentence(table)}."]
    for label in ("DPO (critic)", "EACO", "STIC"):
        if label not in table.index:
            continue
        row = table.loc[label, gains].dropna()
        if row.empty:
            lines.append(f"- **{label}**: no benchmark has a relative gain (every base score is 0).")
            continue
        lines.append(f"- **{label}**: average gain {table.loc[label, 'average gain %']:+.2f} % over the base; largest "
                     f"on {row.idxmax().removesuffix(' gain %')} ({row.max():+.2f} %), smallest on "
                     f"{row.idxmin().removesuffix(' gain %')} ({row.min():+.2f} %).")
    if seeds_table is not None:
        from kit.core.tables import spread_sentence

        spread = [spread_sentence(seeds_table, label, metric) for label in ("DPO (critic)", "EACO", "STIC")
                  for metric in ("average gain %", "HallusionBench aAcc gain %", "MME-C gain %")]
        lines.extend(f"- {sentence}." for sentence in spread if sentence)
    return "\n".join(lines)
