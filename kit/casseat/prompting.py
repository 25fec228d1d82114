"""Long against cascaded prompts, measured: Cas-SEAT's motivation (arXiv 2501.05662, Section 3.2).

The integrated SEAT prompt asks a small model for everything at once in one long instruction; Cas-SEAT
splits it into a short chain-of-thought prompt and a short reflection turn. ``compare_prompting`` runs
a model both ways on benchmark items and records, per item: the prompt length in the model's own tokens
(image tokens included), the output length, whether the output is malformed (``kit.eval.seat_format.parse``) and
whether its final answer is right (MathVista's normaliser). The answers come from any engine
(``engine``: a ``kit.llm.generate.EngineChoice``, e.g. vLLM servers); the lengths are always counted here with the
model's own processor, so they do not depend on where the answers were generated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kit.errors import KitError

LONG, CASCADED = "SEAT (one long prompt)", "Cas-SEAT (cascaded prompts)"


def _processor(engine: Any, model: Any) -> Any:
    """The processor that counts ``model``'s tokens: the loaded model's, or for a model served elsewhere its
    own, read from its folder or hub id (the base model's, under an adapter: ``kit.llm.models.load`` reads the
    adapter folder's processor when it has one, the base's otherwise). No weights are loaded."""
    from kit.llm.generate import split_adapter
    from kit.llm.models import _read_config, _resolve, family_of, load_processor

    loaded = getattr(engine, "loaded", None)
    if loaded is not None:
        return loaded.processor
    base, adapter = split_adapter(model, None)
    source = _resolve(base)
    family = family_of(_read_config(source, False))
    has_own = adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file()
    return load_processor(str(adapter) if has_own else source, family)


def compare_prompting(model: Any, records: list[dict], *, label: str, max_new_tokens: int = 256,
                      batch_size: int = 16, progress: bool = False, engine: Any = None):
    """One row per (item, way): ``model`` (``label``), ``way``, ``prompt_tokens`` (for the cascade: both
    turns' prompts, the first answer excluded), ``output_tokens`` (all turns), ``malformed``, ``problems``,
    ``has_answer``, ``correct``. ``records`` are MathVista-format problems (``kit.eval.benchmarks.mathvista.load``).
    ``engine``: a ``kit.llm.generate.EngineChoice`` (None: transformers, on ``model`` loaded here)."""
    import pandas as pd

    from kit.casseat.mathv360k import question_text
    from kit.eval import seat_format
    from kit.eval.benchmarks import mathvista
    from kit.llm.generate import Chat, Sampling, engine_for
    from kit.llm.generate import prompt_tokens as count_prompt
    from kit.llm.prompts import get

    if not records:
        raise KitError("compare_prompting: no records")
    generator = engine_for(engine, model, batch_size=batch_size)
    processor = _processor(generator, model)
    tokenizer = processor.tokenizer
    sampling = Sampling(max_new_tokens=max_new_tokens)

    def tokens(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    question = {r["pid"]: question_text(r) for r in records}
    long_chats = [Chat(r["pid"], [get("seat_inference").format(question=question[r["pid"]])], r["image_path"])
                  for r in records]
    cot_chats = [Chat(r["pid"], [get("cas_cot").format(question=question[r["pid"]])], r["image_path"]) for r in records]
    long_out = dict((c.id, t) for c, t in generator.generate(long_chats, sampling, progress=progress))
    cot_out = dict((c.id, t) for c, t in generator.generate(cot_chats, sampling, progress=progress))
    reflect_chats = [Chat(c.id, [c.turns[0], cot_out[c.id], get("cas_reflection").text], c.image) for c in cot_chats]
    reflect_out = dict((c.id, t) for c, t in generator.generate(reflect_chats, sampling, progress=progress))

    rows = []
    for record, long_chat, cot_chat in zip(records, long_chats, cot_chats, strict=True):
        pid = record["pid"]
        parsed_long = seat_format.parse(long_out[pid], expect_blocks=True)
        parsed_cot = seat_format.parse(cot_out[pid], expect_blocks=False)
        parsed_reflection = seat_format.parse(reflect_out[pid], expect_blocks=False)
        cascade_problems = [f"CoT: {p}" for p in parsed_cot.problems] + \
                           [f"reflection: {p}" for p in parsed_reflection.problems]
        for way, prompt_tokens, output_tokens, problems, answer in (
            (LONG, count_prompt(processor, long_chat), tokens(long_out[pid]), parsed_long.problems, parsed_long.answer),
            (CASCADED, count_prompt(processor, cot_chat) + tokens(get("cas_reflection").text),
             tokens(cot_out[pid]) + tokens(reflect_out[pid]), cascade_problems, parsed_reflection.answer),
        ):
            rows.append({"model": label, "way": way, "pid": pid, "prompt_tokens": prompt_tokens,
                         "output_tokens": output_tokens, "malformed": bool(problems), "problems": "; ".join(problems),
                         "has_answer": answer is not None,
                         "correct": answer is not None and mathvista.is_correct(answer, record)})
    return pd.DataFrame(rows)


def summary_table(rows):
    """Per model and way: mean prompt and output tokens, % malformed, % with a final answer, % correct."""
    grouped = rows.groupby(["model", "way"], sort=False)
    table = grouped.agg(items=("pid", "count"), prompt_tokens=("prompt_tokens", "mean"),
                        output_tokens=("output_tokens", "mean"), malformed=("malformed", "mean"),
                        has_answer=("has_answer", "mean"), correct=("correct", "mean")).reset_index()
    for column in ("malformed", "has_answer", "correct"):
        table[column] = (100 * table[column]).round(2)
    for column in ("prompt_tokens", "output_tokens"):
        table[column] = table[column].round(1)
    return table.rename(columns={"malformed": "malformed %", "has_answer": "final answer %", "correct": "accuracy %"})

