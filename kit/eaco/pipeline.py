"""EACO's stages (arXiv 2412.04903), and the one place notebooks 06-08 get them from: a profile in, the
Critic, the preference pairs, the DPO adapters and the extra SFT adapter out.

- ``EACOPlan.from_profile(profile, run)`` reads every setting of the EACO notebooks from the profile once:
  the Critic's recipe (``critic:``), the preference data (``preference:``), DPO (``dpo:``), the extra SFT
  (``extra_sft:``), the engine (``engine:``) and the seeds. Notebook 06 trains the Critic with it, notebook 07
  walks the stages after the Critic one call at a time, and notebook 08 asks the same plan for the same
  adapters, so a setting changed in the profile changes every notebook's models at once and none can drift.
- ``critic(profile, run)``, ``policy(profile, run, seed)`` and ``policies(profile, run)`` are the bundled calls.
- The additional SFT stage trains on an instruction set whose first question carries the model's own
  description of the image: ``describe_images`` has the DPO-tuned policy describe each instruction row's
  image under one of the eight description prompts, sampled at temperature 0.2 (the authors' draft code,
  github.com/yongxinwang-ai/EACO_draft @ dfac188, ``EACO/generate_des_stage2.py``), and
  ``description_sft_set`` inserts ``"Image description:\\n<description>\\n\\n"`` before the question
  (``EACO/add_des_to_data.py``). ``kit.training.sft.sft(..., adapter=<DPO adapter>)`` then continues the DPO adapter.

The tables and the radar figure are in ``kit.eaco.tables``.

Every generating stage here takes ``engine`` (a ``kit.llm.generate.EngineChoice``; None: transformers, as before):
on ``openai`` the policy, the Critic (its base model plus its adapter, asked for by name) and the DPO-tuned
policy are answered by the servers of ``engine.servers`` (``vllm serve <base> --enable-lora``), and the stage
keys record the backend (``engine_key``), never the servers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kit.errors import KitError

DESCRIPTION_PREFIX = "Image description:\n{description}\n\n"  # EACO/add_des_to_data.py
# Notebook 08's benchmarks -> the profile's dataset key each one reads.
EVAL_DATASETS = {"hallusionbench": "datasets.hallusionbench", "mme": "datasets.mme",
                 "mathvista": "datasets.mathvista", "pope": "datasets.pope", "seed": "datasets.seed",
                 "scienceqa": "datasets.scienceqa", "amber": "datasets.amber"}


# ------------------------------------------------------------------------------------------ settings
def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class CriticConfig:
    """How notebook 06 builds and measures the Critic, besides its training recipe (``critic:``)."""

    variant: str = field(default="additive", metadata=_help("scoring rubric: additive (EACO's) or per_dimension"))
    aggregate: str = field(default="mean", metadata=_help("how VLFeedback's three 1-5 ratings make one gold score"))
    heldout: float = field(default=0.2, metadata=_help("share of VLFeedback images kept out to measure the Critic"))
    rows: int | None = field(default=None, metadata=_help("VLFeedback rows to read (None: all)"))
    max_new_tokens: int = field(default=96, metadata=_help("a judgement's length, for every Critic call"))
    generation_batch_size: int = field(default=16, metadata=_help("batch size when a judge scores held-out rows"))

    @classmethod
    def from_profile(cls, profile: Any) -> CriticConfig:
        section = profile.get("critic")
        return cls(variant=section["variant"], aggregate=section["aggregate"], heldout=section["heldout"],
                   rows=section["rows"], max_new_tokens=section["max_new_tokens"],
                   generation_batch_size=section["generation_batch_size"])


@dataclass(frozen=True)
class PreferenceConfig:
    """``preference_stage``'s options (the profile's ``preference:`` section and the Critic's length)."""

    images: int | None = field(default=None, metadata=_help("images the policy answers (None: all)"))
    samples: int = field(default=5, metadata=_help("answers per image, the Critic picks best and worst"))
    temperature: float = field(default=0.2, metadata=_help("sampling temperature of the answers (the draft's 0.2)"))
    max_new_tokens: int = field(default=1024, metadata=_help("an answer's length"))
    # critic.max_new_tokens: the Critic judges the samples as it judged the held-out rows in notebook 06.
    critic_max_new_tokens: int = field(default=96, metadata=_help("a judgement's length (critic.max_new_tokens)"))
    batch_size: int = field(default=16, metadata=_help("generation batch size of the policy and the Critic"))

    @classmethod
    def from_profile(cls, profile: Any) -> PreferenceConfig:
        section = profile.get("preference")
        return cls(images=section["images"], samples=section["samples"], temperature=section["temperature"],
                   max_new_tokens=section["max_new_tokens"], critic_max_new_tokens=profile.get("critic.max_new_tokens"),
                   batch_size=section["batch_size"])


@dataclass(frozen=True)
class ExtraSFTConfig:
    """``extra_sft_stage``'s options besides its training recipe (the profile's ``extra_sft:`` section)."""

    rows: int | None = field(default=None, metadata=_help("instruction rows of the extra SFT set (None: all)"))
    # preference.temperature: the draft describes at the same 0.2 it samples the answers with.
    temperature: float = field(default=0.2, metadata=_help("sampling temperature of the descriptions"))
    max_new_tokens: int = field(default=1024, metadata=_help("a description's length"))
    # preference.batch_size: the same policy generating, so the same batch.
    batch_size: int = field(default=16, metadata=_help("generation batch size of the descriptions"))

    @classmethod
    def from_profile(cls, profile: Any) -> ExtraSFTConfig:
        return cls(rows=profile.get("extra_sft.rows"), temperature=profile.get("preference.temperature"),
                   max_new_tokens=profile.get("extra_sft.max_new_tokens"),
                   batch_size=profile.get("preference.batch_size"))


def critic_settings(profile: Any):
    """The Critic's training recipe: the ``critic:`` section (LoRA dropout and warm-up at the SFT defaults)."""
    from kit.training.sft import SFTSettings

    return SFTSettings.from_profile(profile, "critic")


def dpo_settings(profile: Any):
    """The DPO recipe of both DPO adapters (the Critic's pairs and STIC's): the ``dpo:`` section."""
    from kit.training.dpo import DPOSettings

    return DPOSettings.from_profile(profile, "dpo")


def extra_settings(profile: Any):
    """The extra SFT's recipe: the ``extra_sft:`` section, with the DPO adapter's LoRA rank and alpha, since it
    continues that adapter and its shape is the DPO one."""
    from kit.training.sft import SFTSettings

    return SFTSettings.from_profile(profile, "extra_sft", lora_r=profile.get("dpo.lora_r"),
                                    lora_alpha=profile.get("dpo.lora_alpha"))


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
    from kit.core.artifacts import content_hash
    from kit.eaco.preference import instruction_for
    from kit.llm.generate import Chat, engine_decoding, generate_into

    settings = {"policy": engine.model_label, "backend": engine.backend, "sampling": sampling.to_dict(),
                "decoding": engine_decoding(engine, sampling), "seed": seed,
                "instructions_hash": content_hash(list(instructions))}
    plan = {row["id"]: instruction_for(row["id"], instructions, seed) for row in rows}
    chats = {(row["id"],): Chat(row["id"], [plan[row["id"]][1]], row["image"]) for row in rows}
    stored, _ = generate_into(out_path, ("id",), settings, engine, chats, replace(sampling, seed=seed),
                              lambda key, chat, text: {"image": chat.image, "prompt": plan[key[0]][1],
                                                       "description": text.strip()},
                              progress=progress)
    return {row["id"]: stored[(row["id"],)]["description"] for row in rows}


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


# ------------------------------------------------------------------------------------------ stages
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


def judged_params(judge: str | Path, heldout: Sequence[Any], *, max_new_tokens: int = 96,
                  engine: Any = None) -> dict[str, Any]:
    """What ``judge_quality``'s ``judged-<hash>`` folder is keyed by."""
    from kit.core.artifacts import content_hash, fingerprint
    from kit.eaco.critic import critic_items
    from kit.llm.generate import engine_key

    items = critic_items(list(heldout))
    images = {i.image: fingerprint(i.image) for i in items}  # the pictures judged, by content (a blank-image control)
    return {"judge": fingerprint(judge), "max_new_tokens": max_new_tokens,
            "items": content_hash([(i.id, i.index, i.response, images[i.image]) for i in items]), **engine_key(engine)}


def judge_quality(judge: str | Path, heldout: Sequence[Any], run_dir: str | Path, *, aggregate: str = "mean",
                  batch_size: int = 16, max_new_tokens: int = 96, progress: bool = True,
                  engine: Any = None) -> dict[str, Any]:
    """A judge's (the Critic, an adapter folder; or an untrained model) quality on held-out VLFeedback ratings:
    it scores every held-out response greedily (``kit.eaco.critic.score_responses``, resumable, in
    ``run_dir/judged-<hash>/``) and ``kit.eaco.critic.critic_quality`` compares its scores with the gold ones
    (``quality.json``, written last). ``engine``: a ``kit.llm.generate.EngineChoice`` (None: transformers)."""
    from kit.core.artifacts import resumable_stage
    from kit.eaco.critic import critic_items, critic_quality, gold_scores, read_scores, score_responses
    from kit.llm.generate import Sampling, engine_for

    def build(folder: Path) -> dict[str, Any]:
        out = folder / "scores.jsonl"
        score_responses(engine_for(engine, judge, batch_size=batch_size), critic_items(list(heldout)), out,
                        Sampling(max_new_tokens=max_new_tokens), progress=progress)
        return critic_quality(read_scores(out), gold_scores(list(heldout), aggregate))

    params = judged_params(judge, heldout, max_new_tokens=max_new_tokens, engine=engine)
    return resumable_stage(run_dir, "judged", params, build, done="quality.json")[1]


def preference_params(policy: str | Path, critic: str | Path, images_dir: str | Path,
                      instructions: str | Path | None, *, images: int | None = None, samples: int = 5,
                      temperature: float = 0.2, max_new_tokens: int = 1024, critic_max_new_tokens: int = 96,
                      seed: int = 0, engine: Any = None) -> dict[str, Any]:
    """What ``preference_stage``'s ``preference-<hash>`` folder is keyed by (the batch size is not in it)."""
    from kit.core.artifacts import fingerprint
    from kit.eaco.preference import load_instructions
    from kit.llm.generate import engine_key

    prompts, hallucination = load_instructions(instructions)
    return {"policy": fingerprint(policy), "critic": fingerprint(critic), "images": fingerprint(images_dir),
            "limit": images, "instructions": [prompts, hallucination], "samples": samples,
            "temperature": temperature, "max_new_tokens": max_new_tokens,
            "critic_max_new_tokens": critic_max_new_tokens, "seed": seed, **engine_key(engine)}


@dataclass
class PreferenceSteps:
    """``preference_stage`` one step at a time, in its folder and with its files: ``sample_answers``
    (``samples.jsonl``), ``stic_pairs`` (``stic_generations.jsonl``, ``stic_pairs.jsonl``), ``score_answers``
    (``scores.jsonl``) and ``build_pairs`` (``pairs.jsonl``, then ``counts.json``, which marks the folder
    finished). Each step resumes what it finds; in a finished folder none of them loads a model."""

    policy: str | Path
    critic: str | Path
    images_dir: str | Path
    instructions: str | Path | None
    run_dir: str | Path
    config: PreferenceConfig
    seed: int = 0
    engine: Any = None
    progress: bool = True

    def __post_init__(self) -> None:
        from kit.core.artifacts import stage_dir
        from kit.eaco.preference import list_images, load_instructions

        self.params = preference_params(
            self.policy, self.critic, self.images_dir, self.instructions, images=self.config.images,
            samples=self.config.samples, temperature=self.config.temperature,
            max_new_tokens=self.config.max_new_tokens, critic_max_new_tokens=self.config.critic_max_new_tokens,
            seed=self.seed, engine=self.engine)
        self.folder = stage_dir(self.run_dir, "preference", self.params)
        self.images = list_images(self.images_dir, limit=self.config.images)
        self.prompts, self.hallucination = load_instructions(self.instructions)

    @property
    def done(self) -> bool:
        return (self.folder / "counts.json").is_file()

    def _engine(self, model: str | Path) -> Any:
        from kit.llm.generate import engine_for

        return engine_for(self.engine, model, batch_size=self.config.batch_size)

    def sample_answers(self) -> dict[str, Any]:
        """The policy answers every image ``config.samples`` times (``kit.eaco.preference.sample_responses``)."""
        from kit.eaco.preference import read_samples, sample_responses

        path = self.folder / "samples.jsonl"
        if self.done:
            return {"written": 0, "total": len(read_samples(path)), "images": len(self.images)}
        self.folder.mkdir(parents=True, exist_ok=True)
        return sample_responses(self._engine(self.policy), self.images, self.prompts, path, n=self.config.samples,
                                temperature=self.config.temperature, seed=self.seed,
                                max_new_tokens=self.config.max_new_tokens, progress=self.progress)

    def stic_pairs(self) -> list[dict[str, Any]]:
        """STIC's self-made pairs from the same policy and images (``kit.eaco.preference.stic_pairs``)."""
        from kit.eaco.preference import stic_pairs as make_stic_pairs
        from kit.llm.generate import Sampling
        from kit.training.data import read_pairs

        if self.done:
            return read_pairs(self.folder / "stic_pairs.jsonl")
        self.folder.mkdir(parents=True, exist_ok=True)
        return make_stic_pairs(
            self._engine(self.policy), self.images, self.folder / "stic_generations.jsonl",
            instructions=self.prompts, hallucination_instructions=self.hallucination, seed=self.seed,
            sampling=Sampling(max_new_tokens=self.config.max_new_tokens, temperature=self.config.temperature,
                              seed=self.seed),
            pairs_path=self.folder / "stic_pairs.jsonl", progress=self.progress)

    def score_answers(self) -> dict[str, Any]:
        """The Critic scores every sampled answer (``kit.eaco.critic.score_responses``, greedy)."""
        from kit.core.artifacts import JsonlAppender
        from kit.eaco.critic import KEY_FIELDS, score_responses, score_summary
        from kit.eaco.preference import items_from_samples
        from kit.llm.generate import Sampling

        path = self.folder / "scores.jsonl"
        if self.done:
            with JsonlAppender(path, KEY_FIELDS) as appender:
                return score_summary(appender.records(), written=0)
        return score_responses(self._engine(self.critic), items_from_samples(self.folder / "samples.jsonl"), path,
                               Sampling(max_new_tokens=self.config.critic_max_new_tokens), progress=self.progress)

    def build_pairs(self) -> dict[str, Any]:
        """The best- against the worst-scored answer of each image (``kit.eaco.preference.build_pairs``), its
        counts written last to ``counts.json``. Returns ``preference_stage``'s record."""
        from kit.core.artifacts import resumable_stage
        from kit.eaco.preference import build_pairs

        def build(folder: Path) -> dict[str, Any]:
            return build_pairs(folder / "samples.jsonl", folder / "scores.jsonl", folder / "pairs.jsonl")

        _, counts = resumable_stage(self.run_dir, "preference", self.params, build, done="counts.json")
        return self.record(counts)

    def run(self) -> dict[str, Any]:
        """Every step, in ``preference_stage``'s order (the policy's work before the Critic loads)."""
        if not self.done:
            self.sample_answers()
            self.stic_pairs()
            self.score_answers()
        return self.build_pairs()

    def record(self, counts: Mapping[str, Any]) -> dict[str, Any]:
        return {"folder": str(self.folder), "counts": dict(counts), "pairs": str(self.folder / "pairs.jsonl"),
                "stic_pairs": str(self.folder / "stic_pairs.jsonl")}


def preference_stage(policy: str | Path, critic: str | Path, images_dir: str | Path, instructions: str | Path | None,
                     run_dir: str | Path, *, images: int | None = None, samples: int = 5, temperature: float = 0.2,
                     max_new_tokens: int = 1024, critic_max_new_tokens: int = 96, batch_size: int = 16,
                     seed: int = 0, progress: bool = True, engine: Any = None) -> dict[str, Any]:
    """Notebook 07's data: the policy answers each image ``samples`` times (``kit.eaco.preference.sample_responses``),
    the Critic (``critic``: its adapter folder, on its base model) scores every answer, ``build_pairs`` keeps the
    best against the worst; and the STIC-style baseline pairs from the same policy. Everything lands in
    ``run_dir/preference-<hash>/``, each file resumable (``PreferenceSteps`` walks the same steps one at a
    time). ``instructions``: an ``instructions.json`` (or its folder) with the description and hallucination
    instructions, or None for STIC's lists (which the tiny world's file copies). ``engine``: a
    ``kit.llm.generate.EngineChoice`` (None: transformers). Returns the folder, the pair counts and the two pair
    files."""
    config = PreferenceConfig(images=images, samples=samples, temperature=temperature, max_new_tokens=max_new_tokens,
                              critic_max_new_tokens=critic_max_new_tokens, batch_size=batch_size)
    return PreferenceSteps(policy, critic, images_dir, instructions, run_dir, config, seed=seed, engine=engine,
                           progress=progress).run()


def described_params(dpo_adapter: str | Path, instructions: str | Path, *, rows: int | None,
                     description_prompts: Sequence[str], temperature: float, max_new_tokens: int, seed: int,
                     engine: Any = None) -> dict[str, Any]:
    """What ``extra_sft_stage``'s ``described-<hash>`` folder is keyed by."""
    from kit.core.artifacts import fingerprint
    from kit.llm.generate import engine_key

    return {"policy": fingerprint(dpo_adapter), "instructions": fingerprint(instructions), "rows": rows,
            "prompts": list(description_prompts), "temperature": temperature, "max_new_tokens": max_new_tokens,
            "seed": seed, **engine_key(engine)}


def extra_sft_stage(policy: str | Path, dpo_adapter: str | Path, instructions: str | Path, run_dir: str | Path,
                    settings: Any, *, rows: int | None = None, description_prompts: Sequence[str],
                    temperature: float = 0.2, max_new_tokens: int = 1024, batch_size: int = 16, seed: int = 0,
                    progress: bool = True, engine: Any = None) -> dict[str, Any]:
    """EACO's additional SFT: the DPO-tuned policy (``policy`` with ``dpo_adapter``) describes each instruction
    row's image (``describe_images``), the rows become ``description_sft_set`` examples in
    ``run_dir/described-<hash>/``, and ``kit.training.sft.train_stage`` continues the DPO adapter on them. ``engine``: a
    ``kit.llm.generate.EngineChoice`` for the descriptions (None: transformers; training stays here). Returns the
    adapter's ``kit_train.json``."""
    from kit.core.artifacts import stage_dir
    from kit.llm.generate import Sampling, engine_for
    from kit.training.data import write_set
    from kit.training.sft import train_stage

    table = load_instruction_rows(instructions, limit=rows)
    params = described_params(dpo_adapter, instructions, rows=rows, description_prompts=description_prompts,
                              temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, engine=engine)
    folder = stage_dir(run_dir, "described", params)
    # The training set itself marks the folder finished (written last), so it is not a resumable_stage, whose
    # done file is the JSON its build returns.
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
                  instruction_rows: str | Path, run_dir: str | Path, *, seed: int, preference: PreferenceConfig,
                  dpo_settings: Any, extra_settings: Any, extra_sft: ExtraSFTConfig,
                  progress: bool = True, engine: Any = None) -> dict[str, Any]:
    """Everything after the Critic, for one seed: sampled answers scored into pairs (``PreferenceSteps`` with
    ``preference``), DPO on the Critic's pairs and on the STIC pairs, and the extra SFT stage continuing the
    first (``extra_sft_stage`` with ``extra_sft``). ``seed`` replaces the settings' seeds, so that one call per
    seed measures how much the EACO rows move with sampling and training noise.
    ``engine`` (a ``kit.llm.generate.EngineChoice``; None: transformers) generates the samples, the Critic's scores
    and the descriptions; training runs here either way.
    Returns ``preference``, ``dpo_critic``, ``dpo_stic`` and ``eaco`` (each stage's record)."""
    from kit.eaco.preference import load_instructions
    from kit.training.dpo import dpo_stage

    pairs = PreferenceSteps(policy, critic, images_dir, instructions, run_dir, preference, seed=seed, engine=engine,
                            progress=progress).run()
    require_pairs(pairs)
    dpo_settings = replace(dpo_settings, seed=seed)
    dpo_critic = dpo_stage(policy, pairs["pairs"], run_dir, dpo_settings, progress=progress)
    dpo_stic = dpo_stage(policy, pairs["stic_pairs"], run_dir, dpo_settings, progress=progress)
    description_prompts, _ = load_instructions(instructions)
    eaco = extra_sft_stage(policy, dpo_critic["adapter_dir"], instruction_rows, run_dir,
                           replace(extra_settings, seed=seed), description_prompts=description_prompts, seed=seed,
                           progress=progress, engine=engine, rows=extra_sft.rows, temperature=extra_sft.temperature,
                           max_new_tokens=extra_sft.max_new_tokens, batch_size=extra_sft.batch_size)
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


# ------------------------------------------------------------------------------------------ from a profile
@dataclass(frozen=True)
class EACOPlan:
    """Every input and setting of notebooks 06-08, read from one profile (``from_profile``), and the stages
    built from them. The notebooks call its methods, never the stage functions with settings of their own, so
    notebook 08 evaluates exactly the adapters notebook 07 trained."""

    policy: str = field(metadata=_help("the policy EACO aligns (models.policy)"))
    critic_base: str = field(metadata=_help("the model the Critic's LoRA is trained on (models.critic_base)"))
    vlfeedback: str = field(metadata=_help("VLFeedback, the Critic's rated responses (datasets.vlfeedback)"))
    images_dir: Path = field(metadata=_help("the images the policy answers (datasets.eaco_images)"))
    # The tiny world ships the description prompts beside its images; for COCO they are STIC's lists (None).
    instructions: Path | None = field(metadata=_help("instructions.json beside the images, or None: STIC's lists"))
    instruction_rows: Path = field(metadata=_help("the extra SFT's instruction set (datasets.instructions)"))
    root: Path = field(metadata=_help("where every EACO stage folder lives: <run>/eaco"))
    seed: int = field(metadata=_help("the main run's seed (the profile's seed)"))
    spread_seeds: tuple[int, ...] = field(metadata=_help("seeds the stages after the Critic repeat under"))
    critic: CriticConfig
    critic_settings: Any  # kit.training.sft.SFTSettings
    preference: PreferenceConfig
    dpo_settings: Any  # kit.training.dpo.DPOSettings, with the profile's seed; each seed's run replaces it
    extra_sft: ExtraSFTConfig
    extra_settings: Any  # kit.training.sft.SFTSettings, as dpo_settings
    engine: Any  # kit.llm.generate.EngineChoice
    progress: bool = True
    profile: Any = None  # the profile it was read from: its stage_workers run independent judgements side by side

    @classmethod
    def from_profile(cls, profile: Any, run: str | Path, *, progress: bool = True) -> EACOPlan:
        from kit.core.paths import resolve_path
        from kit.llm.generate import EngineChoice

        images_dir = resolve_path(profile.get("datasets.eaco_images"))
        instructions = images_dir / "instructions.json" if (images_dir / "instructions.json").is_file() else None
        return cls(policy=str(resolve_path(profile.get("models.policy"))),
                   critic_base=str(resolve_path(profile.get("models.critic_base"))),
                   vlfeedback=str(resolve_path(profile.get("datasets.vlfeedback"))), images_dir=images_dir,
                   instructions=instructions, instruction_rows=resolve_path(profile.get("datasets.instructions")),
                   root=Path(run) / "eaco", seed=profile.get("seed"),
                   spread_seeds=tuple(profile.get("spread.seeds", [])), critic=CriticConfig.from_profile(profile),
                   critic_settings=critic_settings(profile), preference=PreferenceConfig.from_profile(profile),
                   dpo_settings=dpo_settings(profile), extra_sft=ExtraSFTConfig.from_profile(profile),
                   extra_settings=extra_settings(profile), engine=EngineChoice.from_profile(profile),
                   progress=progress, profile=profile)

    @property
    def seeds(self) -> list[int]:
        """The main seed, then the other spread seeds (each once)."""
        return list(dict.fromkeys([self.seed, *self.spread_seeds]))

    # -- notebook 06
    def train_critic(self) -> dict[str, Any]:
        """The Critic (``critic_stage``): scoring instructions from VLFeedback, LoRA on the critic base."""
        return critic_stage(self.critic_base, self.vlfeedback, self.root, self.critic_settings,
                            variant=self.critic.variant, aggregate=self.critic.aggregate, heldout=self.critic.heldout,
                            seed=self.seed, limit=self.critic.rows, progress=self.progress)

    def critic_adapter(self) -> str:
        return self.train_critic()["critic"]["adapter_dir"]

    def blank_image_rows(self, heldout: Sequence[Any]) -> list[Any]:
        """The held-out rows with every picture a blank grey one (``kit.eaco.critic.blank_image_rows``), written once
        into the plan's folder: judged by the Critic, they show whether it reads the image."""
        from kit.eaco.critic import blank_image_rows

        return blank_image_rows(heldout, self.root / "blank-images")

    def _judge_options(self) -> dict[str, Any]:
        return dict(aggregate=self.critic.aggregate, batch_size=self.critic.generation_batch_size,
                    max_new_tokens=self.critic.max_new_tokens, progress=self.progress, engine=self.engine)

    def judge(self, model: str | Path, heldout: Sequence[Any]) -> dict[str, Any]:
        """``judge_quality`` of ``model`` (the Critic's adapter or an untrained base) on held-out rows."""
        return judge_quality(model, heldout, self.root, **self._judge_options())

    def judge_many(self, judges: Mapping[str, tuple[str | Path, Sequence[Any]]]) -> dict[str, dict[str, Any]]:
        """``name -> (model, held-out rows)`` in, ``name -> judge(model, rows)`` out, in the order given; the
        judgements not yet done run first, side by side in the profile's ``stage_workers`` (``kit.core.parallel``)."""
        if self.profile is not None:
            from kit.core.artifacts import stage_dir
            from kit.core.parallel import Stage, run_stages

            options = self._judge_options()
            run_stages(self.profile, [
                Stage(f"judge {name}", stage_dir(self.root, "judged", judged_params(
                    model, rows, max_new_tokens=options["max_new_tokens"], engine=self.engine)) / "quality.json",
                    judge_quality, (model, list(rows), self.root), options)
                for name, (model, rows) in judges.items()], what="judging")
        return {name: self.judge(model, rows) for name, (model, rows) in judges.items()}

    # -- notebook 07, one stage at a time
    def preference_steps(self, seed: int, critic_adapter: str | Path | None = None) -> PreferenceSteps:
        """Sampling, STIC's pairs, the Critic's scores and the pairs for ``seed``, one call each."""
        return PreferenceSteps(self.policy, critic_adapter or self.critic_adapter(), self.images_dir,
                               self.instructions, self.root, self.preference, seed=seed, engine=self.engine,
                               progress=self.progress)

    def dpo_settings_for(self, seed: int) -> Any:
        return replace(self.dpo_settings, seed=seed)

    def extra_settings_for(self, seed: int) -> Any:
        return replace(self.extra_settings, seed=seed)

    def train_dpo(self, pairs: str | Path, seed: int) -> dict[str, Any]:
        """DPO of the policy on ``pairs`` (the Critic's or STIC's) with seed ``seed`` (``kit.training.dpo``)."""
        from kit.training.dpo import dpo_stage

        return dpo_stage(self.policy, pairs, self.root, self.dpo_settings_for(seed), progress=self.progress)

    def train_extra_sft(self, dpo_adapter: str | Path, seed: int) -> dict[str, Any]:
        """The extra SFT continuing ``dpo_adapter`` on the model's own image descriptions (``extra_sft_stage``)."""
        from kit.eaco.preference import load_instructions

        description_prompts, _ = load_instructions(self.instructions)
        return extra_sft_stage(self.policy, dpo_adapter, self.instruction_rows, self.root,
                               self.extra_settings_for(seed), description_prompts=description_prompts, seed=seed,
                               progress=self.progress, engine=self.engine, rows=self.extra_sft.rows,
                               temperature=self.extra_sft.temperature, max_new_tokens=self.extra_sft.max_new_tokens,
                               batch_size=self.extra_sft.batch_size)

    # -- bundled
    def policy_stages(self, seed: int, critic_adapter: str | Path | None = None) -> dict[str, Any]:
        """Everything after the Critic for ``seed`` in one call (``policy_stages``)."""
        return policy_stages(self.policy, critic_adapter or self.critic_adapter(), self.images_dir,
                             self.instructions, self.instruction_rows, self.root, seed=seed,
                             preference=self.preference, dpo_settings=self.dpo_settings,
                             extra_settings=self.extra_settings, extra_sft=self.extra_sft, progress=self.progress,
                             engine=self.engine)

    def all_seeds(self, critic_adapter: str | Path | None = None) -> dict[int, dict[str, Any]]:
        """``policy_stages`` for every seed of ``seeds`` (cached stages: notebook 07's are reused)."""
        critic_adapter = critic_adapter or self.critic_adapter()
        return {s: self.policy_stages(s, critic_adapter) for s in self.seeds}

    def launch_commands(self, stages: Mapping[str, Any], seed: int, *, processes: int = 2) -> dict[str, list[str]]:
        """``policy_launch_commands`` for ``stages`` (what ``policy_stages`` returned for ``seed``)."""
        return policy_launch_commands(self.policy, stages, self.root, self.dpo_settings, self.extra_settings,
                                      seed=seed, processes=processes)


def plan(profile: Any, run: str | Path, *, progress: bool = True) -> EACOPlan:
    """``EACOPlan.from_profile``."""
    return EACOPlan.from_profile(profile, run, progress=progress)


def critic(profile: Any, run: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Notebook 06's Critic for ``profile`` in ``run`` (``critic_stage``'s record)."""
    return plan(profile, run, progress=progress).train_critic()


def policy(profile: Any, run: str | Path, seed: int | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Everything after the Critic for ``seed`` (the profile's when None): notebook 07's adapters."""
    chosen = plan(profile, run, progress=progress)
    return chosen.policy_stages(chosen.seed if seed is None else seed)


def policies(profile: Any, run: str | Path, *, progress: bool = True) -> dict[int, dict[str, Any]]:
    """``policy`` for the profile's seed and each spread seed: what notebook 08 evaluates."""
    return plan(profile, run, progress=progress).all_seeds()


def eval_benchmarks(profile: Any, names: Sequence[str] | None = None) -> dict[str, str]:
    """Notebook 08's benchmarks (``eaco_eval.benchmarks`` unless ``names``) -> their dataset (the profile's
    ``datasets:`` entry, resolved). An unknown benchmark is a ``ValueError`` naming the choices."""
    from kit.core.paths import resolve_path

    names = list(profile.get("eaco_eval.benchmarks") if names is None else names)
    unknown = set(names) - set(EVAL_DATASETS)
    if unknown:
        raise ValueError(f"eaco_eval_benchmarks: unknown {sorted(unknown)}; choose from {sorted(EVAL_DATASETS)}")
    return {name: str(resolve_path(profile.get(EVAL_DATASETS[name]))) for name in names}


@dataclass
class EACOEvaluation:
    """Notebook 08's evaluations: a model (the policy or an adapter of ``plan``) on every ``eaco_eval`` benchmark
    under ``direct`` with the profile's ``eaco_eval`` limit, batch and answer length, answers read by
    ``extraction`` (``kit.llm.judges.extraction_from_profile``); each one a cached ``evaluate_stage`` in the
    plan's folder. ``measured`` keeps every result by model path, for the ``eaco_extraction`` table."""

    profile: Any
    plan: EACOPlan
    extraction: Any
    measured: dict[str, dict] = field(default_factory=dict)

    def baseline(self) -> dict[str, dict[str, Any]]:
        """A blind guesser's scores on the items these evaluations score (``kit.eval.baselines.blind_baseline``): the
        main table's ``chance / majority`` row."""
        from kit.eval.baselines import blind_baseline

        return blind_baseline(eval_benchmarks(self.profile), limit=self.profile.get("eaco_eval")["limit"])

    def measure(self, models: Mapping[Any, str | Path]) -> dict[Any, dict]:
        """``label -> model`` in, ``label -> metrics`` out; the evaluations not yet done run side by side (the
        profile's ``stage_workers``)."""
        from kit.eval.evaluate import evaluate_stages

        section = self.profile.get("eaco_eval")
        benchmarks = eval_benchmarks(self.profile)
        metrics = evaluate_stages(self.profile, {
            label: dict(model=model, benchmarks=benchmarks, strategy="direct", run_dir=self.plan.root,
                        limit=section["limit"], batch_size=section["batch_size"],
                        max_new_tokens=section["max_new_tokens"], engine=self.plan.engine,
                        **self.extraction.options())
            for label, model in models.items()})
        self.measured.update({models[label]: result for label, result in metrics.items()})
        return metrics
