"""Training sets for the student, from selected synthesis lines, in the conversational format TRL's
``SFTTrainer`` and Unsloth's ``UnslothVisionDataCollator`` take: ``messages`` whose user turn opens with an
``{"type": "image"}`` part, and ``images`` (one path per example; ``to_hf_dataset`` opens them).

- SEAT (arXiv 2501.05662): the student learns the teacher's self-evaluating answer under the SEAT prompt
  *without* the gold answer (``seat_inference``), the prompt it is asked with at inference.
- Cas-SEAT: chain-of-thought examples (``cas_cot`` prompt, the teacher's CoT) mixed with self-evaluation
  examples (the CoT turn, then the ``cas_reflection`` turn and the teacher's reflection), "to keep the
  student's CoT ability". ``cot_per_reflection`` sets the mix (the paper studies it; default 1:1, ours).
  In a self-evaluation example the CoT turn is trained only when its own answer was right
  (``train_turns``): a wrong CoT is there to be reflected on, not imitated.
- ``quantity_subsets``: nested subsets for the data-quantity sweep (each larger set contains the smaller).

Each example: ``{"id", "kind" (seat | cot | reflection), "messages", "images", "train_turns"}`` where
``train_turns`` lists the assistant turns (0-based) that carry the loss.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from kit.errors import KitError
from kit.training.data import conversation, write_set

logger = logging.getLogger(__name__)

CAS_SEAT_DEFAULT_RATIO = 1.0


def _example(example_id: str, kind: str, turns: list[str], image: str, train_turns: list[int]) -> dict[str, Any]:
    return {"id": example_id, "kind": kind, "messages": conversation(turns, image), "images": [image],
            "train_turns": train_turns}


def seat_set(records: list[dict]) -> list[dict[str, Any]]:
    """One example per selected ``seat_synthesis`` line: the inference prompt, the teacher's answer."""
    from kit.llm.prompts import get

    examples = []
    for r in records:
        if r["prompt_id"] != "seat_synthesis":
            continue
        prompt = get("seat_inference").format(question=r["question"])
        examples.append(_example(f"{r['item_id']}|seat|{r['sample']}", "seat", [prompt, r["response"]], r["image"], [0]))
    return examples


def _cas_parts(records: list[dict], all_records: list[dict], seed: int) -> tuple[list[dict], list[dict], dict, random.Random]:
    cot_lines = {(r["item_id"], r["sample"]): r for r in all_records if r["prompt_id"] == "cas_cot"}
    cot = [r for r in records if r["prompt_id"] == "cas_cot"]
    reflections = [r for r in records if r["prompt_id"] == "cas_reflection"]
    rng = random.Random(seed)
    rng.shuffle(cot)
    rng.shuffle(reflections)
    return cot, reflections, cot_lines, rng


def _cas_examples(cot: list[dict], reflections: list[dict], cot_lines: dict, rng: random.Random) -> list[dict]:
    examples = []
    for r in cot:
        examples.append(_example(f"{r['item_id']}|cot|{r['sample']}", "cot", [r["turns"][0], r["response"]],
                                 r["image"], [0]))
    for r in reflections:
        first = cot_lines.get((r["item_id"], r["sample"]))
        train = [0, 1] if first is not None and first["answer_correct"] else [1]
        turns = [r["turns"][0], r["turns"][1], r["turns"][2], r["response"]]
        examples.append(_example(f"{r['item_id']}|reflection|{r['sample']}", "reflection", turns, r["image"], train))
    rng.shuffle(examples)
    return examples


def cas_seat_set(records: list[dict], all_records: list[dict], cot_per_reflection: float = CAS_SEAT_DEFAULT_RATIO,
                 seed: int = 0) -> list[dict[str, Any]]:
    """CoT and self-evaluation examples mixed at ``cot_per_reflection`` CoT examples per self-evaluation one,
    as many as the selected lines allow. ``records`` are the selected lines; ``all_records`` every
    synthesis line (a reflection's CoT turn may be a wrong one that selection removed)."""
    if cot_per_reflection < 0:
        raise KitError(f"cot_per_reflection must be >= 0, not {cot_per_reflection}")
    cot, reflections, cot_lines, rng = _cas_parts(records, all_records, seed)
    n_reflection = len(reflections)
    if cot_per_reflection > 0:
        n_reflection = min(n_reflection, int(len(cot) / cot_per_reflection))
    n_cot = min(len(cot), round(n_reflection * cot_per_reflection))
    return _cas_examples(cot[:n_cot], reflections[:n_reflection], cot_lines, rng)


def mixing_set(records: list[dict], all_records: list[dict], cot_fraction: float, size: int,
               seed: int = 0) -> list[dict[str, Any]]:
    """A Cas-SEAT set of exactly ``size`` examples of which ``cot_fraction`` are CoT and the rest
    self-evaluation (reflection) examples: the mixing ablation holds the size fixed so that only the mix
    changes (0 is self-evaluation data alone, 1 CoT data alone)."""
    if not 0 <= cot_fraction <= 1:
        raise KitError(f"trainsets.mixing_cot_fractions: {cot_fraction} is not between 0 and 1")
    cot, reflections, cot_lines, rng = _cas_parts(records, all_records, seed)
    n_cot = round(size * cot_fraction)
    if n_cot > len(cot) or size - n_cot > len(reflections):
        raise KitError(f"trainsets.mixing_size: {size} examples at CoT fraction {cot_fraction} need {n_cot} CoT and "
                       f"{size - n_cot} reflection examples; selection kept {len(cot)} and {len(reflections)}. "
                       "Lower trainsets.mixing_size or synthesise more items (synthesis.items)")
    return _cas_examples(cot[:n_cot], reflections[:size - n_cot], cot_lines, rng)


def mixing_name(cot_fraction: float) -> str:
    """The file stem of a mixing-ablation set: ``cas_seat_mix25`` holds 25 % CoT examples."""
    return f"cas_seat_mix{round(cot_fraction * 100)}"


def quantity_subsets(examples: list[dict], sizes: list[int], seed: int = 0) -> dict[int, list[dict]]:
    """Nested subsets of ``examples`` for the data-quantity sweep: prefixes of one seeded permutation, so
    every larger subset contains the smaller ones and only quantity changes between them."""
    too_big = [n for n in sizes if n > len(examples) or n < 1]
    if too_big:
        raise KitError(f"quantity sweep: sizes {too_big} are not between 1 and the {len(examples)} examples available")
    order = list(examples)
    random.Random(seed).shuffle(order)
    return {n: order[:n] for n in sorted(sizes)}


def build_trainsets(synthesis_folder: str | Path, run_dir: str | Path, filters: Any = None,
                    cot_per_reflection: float = CAS_SEAT_DEFAULT_RATIO, quantities: list[int] | None = None,
                    seed: int = 0, judge: Any = None, mixing_cot_fractions: list[float] | None = None,
                    mixing_size: int | None = None) -> dict[str, Any]:
    """Notebook 02's stage: the labelled filters over a finished synthesis, then the SEAT set, the
    Cas-SEAT set, the quantity subsets of each and the mixing-ablation sets (``mixing_size`` examples at each
    CoT fraction, ``cas_seat_mix<percent>.jsonl``), written to ``run_dir/trainsets-<hash>/`` (reused when
    done). Returns the folder, the filter counts and the size of every set.

    Raises ``KitError`` naming ``trainsets.quantities`` when a quantity exceeds what selection kept."""
    from kit.casseat.selection import LabelledFilters, filter_labelled
    from kit.casseat.synthesis import read_records
    from kit.core.artifacts import DONE_FILE, cached_stage, stage_dir

    synthesis_folder = Path(synthesis_folder)
    if not (synthesis_folder / DONE_FILE).is_file():
        raise KitError(f"{synthesis_folder} is not a finished synthesis; run notebook 01 (kit run --only 01) first")
    filters = filters or LabelledFilters()
    quantities = sorted(quantities or [])
    if any(isinstance(n, bool) or not isinstance(n, int) for n in quantities):
        raise KitError(f"trainsets.quantities must be whole numbers, not {quantities!r}")
    done = json.loads((synthesis_folder / DONE_FILE).read_text())
    fractions = sorted(mixing_cot_fractions or [])
    if fractions and (isinstance(mixing_size, bool) or not isinstance(mixing_size, int) or mixing_size < 1):
        raise KitError(f"trainsets.mixing_size must be a whole number >= 1, not {mixing_size!r}")
    params = {"synthesis": done["params"], "filters": filters.__dict__, "cot_per_reflection": cot_per_reflection,
              "quantities": quantities, "seed": seed}
    if fractions:
        params.update(mixing_cot_fractions=fractions, mixing_size=mixing_size)
    finished = stage_dir(run_dir, "trainsets", params)
    if (finished / DONE_FILE).is_file():
        # Done: nothing to filter or judge again (an MLLM judge would load its model for nothing).
        logger.info("trainsets: skipped (up to date) %s", finished)
        return {"folder": str(finished), **json.loads((finished / "selection.json").read_text())}
    records = read_records(synthesis_folder / "records.jsonl")
    kept, counts = filter_labelled(records, filters, judge)
    sets = {"seat": seat_set(kept), "cas_seat": cas_seat_set(kept, records, cot_per_reflection, seed)}
    for name, examples in sets.items():
        too_many = [n for n in quantities if n > len(examples)]
        if too_many:
            raise KitError(f"trainsets.quantities: {too_many} exceed the {len(examples)} {name} examples selection "
                           "kept; lower them or synthesise more items (synthesis.items)")
    mixes = {mixing_name(f): mixing_set(kept, records, f, mixing_size, seed) for f in fractions}

    def build(tmp: Path) -> None:
        from kit.core.artifacts import atomic_write_json

        sizes = {}
        for name, examples in sets.items():
            write_set(tmp / f"{name}.jsonl", examples)
            sizes[name] = len(examples)
            for n, subset in quantity_subsets(examples, quantities, seed).items():
                write_set(tmp / f"{name}_n{n}.jsonl", subset)
                sizes[f"{name}_n{n}"] = n
        for name, examples in mixes.items():
            write_set(tmp / f"{name}.jsonl", examples)
            sizes[name] = len(examples)
        atomic_write_json(tmp / "selection.json", {"counts": [c.to_dict() for c in counts], "sizes": sizes,
                                                   "kinds": {name: _kinds(examples) for name, examples in sets.items()}})

    folder = cached_stage(run_dir, "trainsets", params, build)
    return {"folder": str(folder), **json.loads((folder / "selection.json").read_text())}


def _kinds(examples: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for example in examples:
        out[example["kind"]] = out.get(example["kind"], 0) + 1
    return out
