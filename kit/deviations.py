"""Where the kit knowingly does not do what the authors' released code does, and why.

Each entry names the paper, the file of the authors' code, what that code does, what the kit does instead
and which tables it affects. The report (``results/ASSUMPTIONS.md``) lists them beside the profiles'
assumptions, so a reader can tell a reproduction choice from a paper setting.
"""

from __future__ import annotations

from dataclasses import dataclass

CAS_SEAT_CODE = "github.com/HelloZicky/Cas-SEAT @ 6d80fb4"


@dataclass(frozen=True)
class Deviation:
    id: str
    paper: str  # SEAT | EACO
    source: str  # the authors' file (and function) that does it
    authors: str  # what the released code does
    kit: str  # what the kit does instead, and why
    affects: tuple[str, ...]


DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        id="seat-teacher-128-tokens",
        paper="SEAT",
        source=f"{CAS_SEAT_CODE}, train/generate_data.py, main(): model.generate(**inputs, max_new_tokens=128)",
        authors="The Qwen2-VL teacher's SEAT answers are cut at 128 new tokens (the --max_new_tokens flag, "
        "default 512, is not used), so long reasoning loses its self-evaluation blocks and final answer.",
        kit="The budget is the profile's synthesis.max_new_tokens (tiny 256, paper 1024); an output that "
        "still runs out has no final answer and is flagged malformed by kit.seat.parse, then removed by "
        "selection and counted.",
        affects=("casseat_synthesis", "casseat_selection", "casseat_main"),
    ),
    Deviation(
        id="cas-seat-reflection-label-leak",
        paper="SEAT",
        source=f"{CAS_SEAT_CODE}, self-evaluate/evaluation/reflection.py, main(): "
        "`if item['true_false'] == True: new_items.append(item); continue`",
        authors="The reflection turn runs only on items already scored wrong against the gold answer, so "
        "reflection never sees a correct chain of thought and evaluation uses the labels.",
        kit="Synthesis and the cas_seat inference strategy run the reflection turn on every item. The "
        "authors' behaviour is kept only as the separately labelled cas_seat_oracle strategy, never in a "
        "main table.",
        affects=("casseat_synthesis", "casseat_main"),
    ),
    Deviation(
        id="cas-seat-first-43-skipped",
        paper="SEAT",
        source=f"{CAS_SEAT_CODE}, self-evaluate/evaluation/reflection.py, main(): `if cnt < 44: continue`",
        authors="The first 43 items of the input file are skipped (and dropped from the output).",
        kit="Every item is processed.",
        affects=("casseat_synthesis", "casseat_main"),
    ),
    Deviation(
        id="seat-sampling-defaults",
        paper="SEAT",
        source=f"{CAS_SEAT_CODE}, train/generate_data.py, main(): generate() without sampling arguments",
        authors="The teacher decodes with the checkpoint's generation_config (Qwen2-VL-7B-Instruct: top_k 1, "
        "near-greedy); the --temperature 0.2 flag is parsed but not passed.",
        kit="Decoding is explicit in the profile (synthesis.temperature, default 0: greedy, the effective "
        "behaviour of the authors' run), with synthesis.samples > 1 allowed at temperature > 0.",
        affects=("casseat_synthesis",),
    ),
)


def get(deviation_id: str) -> Deviation:
    from kit.errors import KitError

    for deviation in DEVIATIONS:
        if deviation.id == deviation_id:
            return deviation
    raise KitError(f"unknown deviation {deviation_id!r}; known: {', '.join(d.id for d in DEVIATIONS)}")
