"""Teacher synthesis: the teacher answers MathV360K questions under the SEAT and Cas-SEAT prompts, and every
answer is written, parsed, to a resumable JSONL file.

::

    from kit.casseat.mathv360k import load_source
    from kit.casseat.synthesis import synthesize
    from kit.llm.generate import Sampling, make_engine
    items = load_source("data/tiny/mathv360k", limit=600)
    engine = make_engine("transformers", "data/models/tiny-qwen2vl-teacher", batch_size=32)
    summary = synthesize(engine, items, ["seat_synthesis", "cas_cot", "cas_reflection"], "run/synthesis.jsonl",
                         sampling=Sampling(max_new_tokens=256))

The source is MathV360K (``Zhiqiang007/MathV360K``: ``train_samples_all_tuning.json``, rows with ``id``,
``image`` and ``conversations`` [human question with ``<image>``, gpt answer]; arXiv 2501.05662 and the
authors' ``train/generate_data.py``, which read the same fields). The authors used a subset of about 30k.

Prompts (``kit.llm.prompts``): ``seat_synthesis`` gives the teacher the question and the gold answer (SEAT's
integrated prompt); ``cas_cot`` asks for a chain of thought; ``cas_reflection`` is the follow-up turn
on that chain of thought, so it runs after ``cas_cot`` for the same item and sample, on every item (the
authors' code ran it on wrong items only: ``kit.core.deviations``).

One line per (item id, prompt id, sample index) holds the teacher, backend, prompt id, sampling settings
and the engine's effective decoding (``kit.llm.generate.decoding_settings``),
the conversation sent, the raw text and its parse (``kit.eval.seat_format.parse``: steps, self-evaluation blocks with
verdicts, final answer, problems). Lines are appended and fsynced one by one; a killed run started again
skips the keys already written, so nothing is lost or written twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from kit.casseat.mathv360k import SourceItem, answers_match, read_source, source_file
from kit.errors import KitError

logger = logging.getLogger(__name__)

SYNTHESIS_PROMPTS = ("seat_synthesis", "cas_cot", "cas_reflection")
KEY_FIELDS = ("item_id", "prompt_id", "sample")


# ------------------------------------------------------------------------------------------ synthesis
def chat_for(item: SourceItem, prompt_id: str, sample: int, cot_response: str | None = None):
    """The conversation a prompt sends for an item (``cas_reflection`` continues the CoT turn)."""
    from kit.llm.generate import Chat
    from kit.llm.prompts import get

    chat_id = f"{item.id}|{prompt_id}|{sample}"
    if prompt_id == "seat_synthesis":
        return Chat(chat_id, [get(prompt_id).format(question=item.question, answer=item.answer)], item.image)
    if prompt_id == "cas_cot":
        return Chat(chat_id, [get(prompt_id).format(question=item.question)], item.image)
    if prompt_id == "cas_reflection":
        if cot_response is None:
            raise KitError(f"item {item.id}: cas_reflection continues a cas_cot answer, and there is none")
        return Chat(chat_id, [get("cas_cot").format(question=item.question), cot_response, get(prompt_id).text],
                    item.image)
    raise KitError(f"synthesis: prompt {prompt_id!r} is not a synthesis prompt; choose from {', '.join(SYNTHESIS_PROMPTS)}")


def synthesize(
    engine: Any,
    items: list[SourceItem],
    prompt_ids: Iterable[str] = SYNTHESIS_PROMPTS,
    out_path: str | Path = "synthesis.jsonl",
    *,
    samples: int = 1,
    sampling: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate every (item, prompt, sample) not yet in ``out_path`` and append it there. Returns counts:
    ``written`` by this call, ``total`` lines, and per prompt the share well formed and answer-correct."""
    from kit.eval.seat_format import parse
    from kit.llm.generate import Sampling, engine_decoding, generate_into

    sampling = sampling or Sampling()
    prompt_ids = list(prompt_ids)
    unknown = [p for p in prompt_ids if p not in SYNTHESIS_PROMPTS]
    if unknown:
        raise KitError(f"synthesis: unknown prompt(s) {', '.join(unknown)}; choose from {', '.join(SYNTHESIS_PROMPTS)}")
    if "cas_reflection" in prompt_ids and "cas_cot" not in prompt_ids:
        raise KitError("synthesis: cas_reflection continues cas_cot; ask for both")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise KitError(f"synthesis: samples must be a whole number >= 1, not {samples!r}")
    if samples > 1 and sampling.temperature == 0:
        raise KitError("synthesis: samples > 1 with temperature 0 would repeat one greedy answer; raise the temperature")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise KitError(f"synthesis: item id {duplicate} appears twice in the source; run the duplicate filter first")

    # ``decoding``: what the engine sent (checkpoint defaults merged in), so files from two backends compare.
    settings = {"teacher": engine.model_label, "backend": engine.backend, "sampling": sampling.to_dict(),
                "decoding": engine_decoding(engine, sampling)}
    by_id = {item.id: item for item in items}
    stored: dict[tuple, dict] | None = None  # every line of the file, once the first group has read it
    written = 0
    for prompt_id in [p for p in SYNTHESIS_PROMPTS if p in prompt_ids]:  # cas_cot before cas_reflection
        for sample in range(samples):
            known = stored or {}
            chats = {}
            for item in items:
                key = (item.id, prompt_id, sample)
                if key in known:
                    continue
                cot = known.get((item.id, "cas_cot", sample), {}).get("response") \
                    if prompt_id == "cas_reflection" else None
                chats[key] = chat_for(item, prompt_id, sample, cot)

            def make_record(key: tuple, chat: Any, text: str, prompt_id: str = prompt_id) -> dict[str, Any]:
                item = by_id[key[0]]
                parsed = parse(text, expect_blocks=prompt_id == "seat_synthesis")
                return {"image": item.image, "question": item.question, "turns": chat.turns, "response": text,
                        "parsed": parsed.to_dict(), "gold": item.answer,
                        "answer_correct": answers_match(item, parsed.answer)}

            # Each sample index has its own seed, so that seeded servers do not repeat one answer.
            stored, count = generate_into(out_path, KEY_FIELDS, settings, engine, chats,
                                          replace(sampling, seed=sampling.seed + sample), make_record,
                                          progress=progress)
            written += count
    if stored is None:  # no prompt asked for: the file as it is
        stored = {tuple(r[f] for f in KEY_FIELDS): r for r in read_records(out_path)} if Path(out_path).is_file() else {}
    return {"written": written, **summarize(list(stored.values()))}


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The synthesis lines of ``path`` (a partial last line from a kill is skipped, as on resume)."""
    from kit.core.artifacts import JsonlAppender

    if not Path(path).is_file():
        raise KitError(f"{path} does not exist; run synthesis first")
    with JsonlAppender(path, KEY_FIELDS) as appender:
        return list(appender.records())


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per prompt: lines, the share well formed, the share whose final answer matches the gold answer, and
    the mean number of self-evaluation blocks and of Refine verdicts."""
    per_prompt: dict[str, dict[str, Any]] = {}
    for prompt_id in SYNTHESIS_PROMPTS:
        rows = [r for r in records if r["prompt_id"] == prompt_id]
        if not rows:
            continue
        n = len(rows)
        blocks = [len(r["parsed"]["evaluations"]) for r in rows]
        refines = [sum(e["verdict"] == "Refine" for e in r["parsed"]["evaluations"]) for r in rows]
        per_prompt[prompt_id] = {
            "n": n,
            "well_formed": round(100 * sum(r["parsed"]["well_formed"] for r in rows) / n, 2),
            "answer_correct": round(100 * sum(bool(r["answer_correct"]) for r in rows) / n, 2),
            "mean_blocks": round(sum(blocks) / n, 3),
            "mean_refine": round(sum(refines) / n, 3),
        }
    return {"total": len(records), "prompts": per_prompt}


# ------------------------------------------------------------------------------------------ the notebook stage
@dataclass(frozen=True)
class SynthesisConfig:
    """What notebook 01 synthesises (the profile's ``models.teacher``, ``datasets.mathv360k`` and
    ``synthesis:`` section). ``items``: the first N source rows, before the source filters. Where the teacher
    runs is ``engine_choice``: a ``kit.llm.generate.EngineChoice``, the profile's ``engine:`` section shared by every
    generation stage (in process by default; ``openai``: the servers it lists for ``teacher``).
    ``batch_size`` applies to the transformers backend."""

    teacher: str
    source: str
    items: int | None = None
    batch_size: int = 16
    samples: int = 1
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    prompts: tuple[str, ...] = SYNTHESIS_PROMPTS
    engine_choice: Any = None  # kit.llm.generate.EngineChoice | None (typed loosely: kit.llm.generate is imported lazily)

    @classmethod
    def from_profile(cls, profile: Any) -> SynthesisConfig:
        """The profile's ``models.teacher`` and ``datasets.mathv360k`` (``kit.core.paths.resolve_path``), its
        ``synthesis:`` section, ``seed`` and ``engine:`` section (``EngineChoice.from_profile``)."""
        from kit.core.paths import resolve_path
        from kit.llm.generate import EngineChoice

        section = profile.get("synthesis")
        return cls(teacher=str(resolve_path(profile.get("models.teacher"))),
                   source=str(resolve_path(profile.get("datasets.mathv360k"))),
                   items=section["items"], batch_size=section["batch_size"], samples=section["samples"],
                   max_new_tokens=section["max_new_tokens"], temperature=section["temperature"],
                   top_p=section["top_p"], seed=profile.get("seed"), prompts=tuple(section["prompts"]),
                   engine_choice=EngineChoice.from_profile(profile))

    def sampling(self):
        from kit.llm.generate import Sampling

        return Sampling(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                        seed=self.seed)

    def choice(self):
        """The ``EngineChoice`` the teacher runs on (the transformers backend when none was given)."""
        from kit.llm.generate import EngineChoice

        if self.engine_choice is None:
            return EngineChoice()
        if not isinstance(self.engine_choice, EngineChoice):
            raise KitError(f"synthesis: engine_choice must be a kit.llm.generate.EngineChoice, not "
                           f"{type(self.engine_choice).__name__}")
        return self.engine_choice

    def engine(self):
        from kit.llm.generate import engine_for

        return engine_for(self.choice(), self.teacher, batch_size=self.batch_size)

    def key(self) -> dict[str, Any]:
        """What the synthesis depends on: every setting but the servers, and the teacher's and source's
        content when local."""
        from kit.core.artifacts import file_hash, fingerprint, tree_hash

        teacher = Path(self.teacher)
        settings = {field: value for field, value in asdict(self).items() if field != "engine_choice"}
        # The servers are where the work runs, not what it computes (the engine's label leaves them out too):
        # a synthesis started on two servers resumes in the same folder on four. The key keeps the fields the
        # synthesis stage had before the engine choice (``backend``; ``base_url`` as null; the removed in-process
        # vllm backend's ``tensor_parallel_size`` at its default 1), so that earlier runs' folders keep their hash.
        # A hub id is keyed with the commit it resolves to (kit.core.artifacts.fingerprint), so that a new upload or
        # another pinned revision is a new synthesis; a local one by its content, as before.
        backend = self.choice().backend
        return {**settings, "backend": backend, "base_url": None, "tensor_parallel_size": 1,
                "teacher_hash": tree_hash(teacher) if teacher.is_dir() else fingerprint(self.teacher),
                "source_hash": file_hash(source_file(self.source)) if Path(self.source).exists()
                else fingerprint(self.source)}


def summary_table(summary: dict[str, Any]):
    """``summarize``'s per-prompt numbers as a ``pandas.DataFrame`` in prompt order, with readable columns."""
    import pandas as pd

    rows = [{"prompt": p, **summary["prompts"][p]} for p in SYNTHESIS_PROMPTS if p in summary["prompts"]]
    table = pd.DataFrame(rows, columns=["prompt", "n", "well_formed", "answer_correct", "mean_blocks", "mean_refine"])
    return table.rename(columns={
        "n": "answers", "well_formed": "well formed %", "answer_correct": "answer = gold %",
        "mean_blocks": "self-evaluation blocks per answer", "mean_refine": "Refine verdicts per answer"})


def run_synthesis(config: SynthesisConfig, run_dir: str | Path, answer_kinds: Iterable[str] | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Notebook 01's stage: load the source, apply the source filters, synthesise into
    ``run_dir/synthesis-<hash>/records.jsonl`` (resumable), and mark the folder done. A finished folder is
    reused as it is. Returns the folder, the source filter counts and the synthesis summary."""
    from kit.casseat.selection import DEFAULT_ANSWER_KINDS, filter_source
    from kit.core.artifacts import atomic_write_json, resumable_stage

    kinds = tuple(answer_kinds) if answer_kinds is not None else DEFAULT_ANSWER_KINDS
    params = {**config.key(), "answer_kinds": list(kinds)}

    def build(folder: Path) -> dict[str, Any]:
        atomic_write_json(folder / "PARAMS.json", params)
        # Damaged rows of the 360k-row download are counted by reason and recorded rather than stopping the run
        # (unless most are damaged, or most images are missing: read_source refuses those).
        loaded = read_source(config.source, config.items, skip_invalid=True)
        items, counts, removed_by = filter_source(loaded.items, kinds, progress=progress)
        atomic_write_json(folder / "source_filters.json", {"counts": [c.to_dict() for c in counts],
                                                           "removed": removed_by,
                                                           "source_rows": loaded.report.to_dict()})
        atomic_write_json(folder / "items.json", [item.to_dict() for item in items])
        summary = synthesize(config.engine(), items, config.prompts, folder / "records.jsonl",
                             samples=config.samples, sampling=config.sampling(), progress=progress)
        return {"folder": str(folder), "params": params, "source_filters": [c.to_dict() for c in counts],
                "source_rows": loaded.report.to_dict(),
                "summary": {k: v for k, v in summary.items() if k != "written"}}

    # Built in place (synthesis appends line by line, so a killed run resumes); DONE.json is written last.
    return resumable_stage(run_dir, "synthesis", params, build)[1]
