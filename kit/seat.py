"""The SEAT output format: reading it (the parser every synthesis record goes through) and writing it (the
tiny teacher's pre-training targets).

The format is the one the authors' integrated prompt asks for (github.com/HelloZicky/Cas-SEAT, commit
6d80fb4, ``train/generate_data.py``; arXiv 2501.05662, Section 3)::

    Step 1: ...
    [self-evaluation-start:
    (a reflection, "let's verify step by step")
    Evaluation: Accept            <- or Refine, after which the step is redone
    self-evaluation-end]
    ...
    The answer is [final answer]

Cas-SEAT's cascaded prompts ask for the same pieces in two turns: a chain of thought that ends in a final
answer (``cas_cot``), then a reflection on it that also ends in one (``cas_reflection``).

``parse`` never drops an output: what is wrong with it goes into ``problems`` and the record is kept, so
the selection stage can count what each filter removes.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

BLOCK_START = "[self-evaluation-start:"
BLOCK_END = "self-evaluation-end]"

_ANSWER = re.compile(r"the (?:final )?answer is\s*:?\s*(.+)", re.IGNORECASE)
_VERDICT = re.compile(r"Evaluation\s*:\s*\[?\s*(Accept|Refine)\b", re.IGNORECASE)
_STEP = re.compile(r"^\s*Step\s*(\d+)\s*[:.]\s*(.*)$", re.IGNORECASE)


@dataclass
class Evaluation:
    """One ``[self-evaluation-start: ... self-evaluation-end]`` block."""

    text: str
    verdict: str | None  # Accept | Refine | None when the block names neither
    after_step: int  # how many steps precede it


@dataclass
class ParsedOutput:
    steps: list[str]
    evaluations: list[Evaluation]
    answer: str | None
    problems: list[str] = field(default_factory=list)

    @property
    def well_formed(self) -> bool:
        return not self.problems

    @property
    def verdicts(self) -> list[str | None]:
        return [e.verdict for e in self.evaluations]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "well_formed": self.well_formed}


def clean_answer(text: str) -> str:
    """The final answer as written after "The answer is", without the brackets the prompt's template
    ``[final answer]`` invites, a trailing full stop, or markdown emphasis."""
    answer = text.strip().splitlines()[0].strip() if text.strip() else ""
    answer = answer.strip("*").strip().rstrip(".").strip()
    if len(answer) > 2 and answer[0] == "[" and answer[-1] == "]":
        answer = answer[1:-1].strip()
    return answer.rstrip(".").strip()


def final_answer(text: str) -> str | None:
    """The last "The answer is X" in ``text`` (a reflection may quote an earlier answer before its own)."""
    matches = [m.group(1) for m in _ANSWER.finditer(text)]
    for candidate in reversed(matches):
        answer = clean_answer(candidate)
        if answer:
            return answer
    return None


def parse(text: str, expect_blocks: bool = True) -> ParsedOutput:
    """Steps, self-evaluation blocks with their verdicts, and the final answer of one output.

    Problems recorded (the output is kept either way): an unterminated block, a block end without a
    start, a block without an Accept/Refine verdict, a block naming both, no final answer, no reasoning
    before the answer. ``expect_blocks=False`` (chain-of-thought outputs) adds "self-evaluation block in a
    chain of thought" when a block appears anyway."""
    problems: list[str] = []
    evaluations: list[Evaluation] = []
    outside: list[str] = []
    position = 0
    steps_so_far = 0
    while True:
        start = text.find(BLOCK_START, position)
        stray_end = text.find(BLOCK_END, position)
        if stray_end != -1 and (start == -1 or stray_end < start):
            problems.append(f"'{BLOCK_END}' without a '{BLOCK_START}' at character {stray_end}")
            outside.append(text[position:stray_end])
            position = stray_end + len(BLOCK_END)
            continue
        if start == -1:
            outside.append(text[position:])
            break
        before = text[position:start]
        outside.append(before)
        steps_so_far += len(_step_lines(before))
        end = text.find(BLOCK_END, start + len(BLOCK_START))
        nested = text.find(BLOCK_START, start + len(BLOCK_START))
        if end == -1 or (nested != -1 and nested < end):
            problems.append(f"self-evaluation block {len(evaluations) + 1} is not closed with '{BLOCK_END}'")
            stop = nested if nested != -1 and (end == -1 or nested < end) else len(text)
            evaluations.append(Evaluation(text[start + len(BLOCK_START):stop].strip(), _verdict(
                text[start:stop], len(evaluations) + 1, problems), steps_so_far))
            position = stop
            if stop == len(text):
                break
            continue
        body = text[start + len(BLOCK_START):end].strip()
        evaluations.append(Evaluation(body, _verdict(body, len(evaluations) + 1, problems), steps_so_far))
        position = end + len(BLOCK_END)

    plain = "".join(outside)
    answer = final_answer(plain)
    if answer is None and evaluations:
        answer = final_answer(evaluations[-1].text)  # an answer written inside the last block still counts
    if answer is None:
        problems.append("no final answer ('The answer is ...')")
    steps = _step_lines(plain)
    if not steps:
        problems.append("no reasoning before the final answer")
    if evaluations and not expect_blocks:
        problems.append("self-evaluation block in a chain of thought")
    return ParsedOutput(steps, evaluations, answer, problems)


def problem_kind(problem: str) -> str:
    """A problem without its particulars ("self-evaluation block 3 ..." -> "self-evaluation block N ...",
    no character position), so that problems can be counted by kind."""
    return re.sub(r" at character \d+", "", re.sub(r"block \d+", "block N", problem))


def _verdict(body: str, number: int, problems: list[str]) -> str | None:
    found = {m.group(1).capitalize() for m in _VERDICT.finditer(body)}
    if not found:
        problems.append(f"self-evaluation block {number} has no 'Evaluation: Accept' or 'Evaluation: Refine'")
        return None
    if len(found) > 1:
        problems.append(f"self-evaluation block {number} says both Accept and Refine")
        return None
    return found.pop()


def _step_lines(text: str) -> list[str]:
    """Reasoning lines: every non-empty line that is not the final answer."""
    return [line.strip() for line in text.splitlines() if line.strip() and not _ANSWER.match(line.strip())]


# ---------------------------------------------------------------------------------------------------------
# Writing the format: the tiny teacher's pre-training targets, built from the tiny world's gold solutions.
# A real teacher (Qwen2-VL-7B) follows the prompt's instructions; the tiny one has to have seen the format.
# ---------------------------------------------------------------------------------------------------------
COLOURS = ("red", "green", "blue", "yellow")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")


def split_solution(solution: list[str]) -> tuple[list[str], str]:
    """Gold steps without their "Step k: " prefixes, and the final answer."""
    *steps, last = solution
    answer = final_answer(last)
    return [_STEP.match(s).group(2) if _STEP.match(s) else s for s in steps], answer or last


def corrupt(content: str, rng: random.Random) -> str | None:
    """A plausible misreading of one step: a number off by one or two, or another colour. ``None`` when
    the step has neither."""
    numbers = list(_NUMBER.finditer(content))
    if numbers:
        match = rng.choice(numbers)
        value = match.group(0)
        if "." in value:
            decimals = len(value.split(".")[1])
            step = 10 ** -decimals
            wrong = f"{max(0.0, float(value) + rng.choice([-1, 1]) * step):.{decimals}f}"
        else:
            wrong = str(max(0, int(value) + rng.choice([-2, -1, 1, 2])))
        if wrong == value:
            wrong = str(int(float(value)) + 1) if "." not in value else f"{float(value) + step:.{decimals}f}"
        return content[: match.start()] + wrong + content[match.end():]
    words = [c for c in COLOURS if re.search(rf"\b{c}\b", content)]
    if words:
        colour = rng.choice(words)
        other = rng.choice([c for c in COLOURS if c != colour])
        return re.sub(rf"\b{colour}\b", other, content, count=1)
    return None


def wrong_answer(answer: str, choices: list[str] | None, rng: random.Random) -> str:
    """Another answer of the same kind: another choice, or a nearby number."""
    if choices and len(choices) > 1:
        return rng.choice([c for c in choices if c != answer])
    mutated = corrupt(answer, rng)
    return mutated if mutated and mutated != answer else answer + "1"


def _steps_text(steps: list[str]) -> list[str]:
    return [f"Step {i}: {s}" for i, s in enumerate(steps, 1)]


def seat_target(solution: list[str], rng: random.Random, refine_rate: float = 0.3) -> str:
    """A SEAT-format answer for a gold solution: its steps with one self-evaluation block. With
    probability ``refine_rate`` a step is first misread, the block catches it (``Refine``) and the step
    is redone; otherwise a block re-checks one step against the image and accepts it."""
    steps, answer = split_solution(solution)
    lines: list[str] = []
    candidates = [i for i, s in enumerate(steps) if corrupt(s, random.Random(0)) is not None]
    refine_at = rng.choice(candidates) if candidates and rng.random() < refine_rate else None
    accept_at = rng.randrange(len(steps)) if steps else None
    for i, content in enumerate(steps):
        number = i + 1
        if i == refine_at:
            wrong = corrupt(content, rng)
            lines += [f"Step {number}: {wrong}", BLOCK_START,
                      f"Let's verify step by step. Looking at the image again for step {number}: "
                      f"{content.rstrip('.')}, not {wrong.rstrip('.')}.", "Evaluation: Refine", BLOCK_END,
                      f"Step {number}: {content}"]
            continue
        lines.append(f"Step {number}: {content}")
        if i == accept_at and refine_at is None:
            lines += [BLOCK_START, f"Let's verify step by step. Looking at the image again for step {number}: "
                      f"{content.rstrip('.')}. This is correct.", "Evaluation: Accept", BLOCK_END]
    lines.append(f"The answer is {answer}")
    return "\n".join(lines)


def cot_target(solution: list[str], wrong_step: int | None = None, wrong: str | None = None,
               rng: random.Random | None = None, choices: list[str] | None = None) -> str:
    """A chain of thought ending in a final answer; with ``wrong_step`` the step is misread and the answer
    is a wrong one (the kind of chain a reflection should catch)."""
    steps, answer = split_solution(solution)
    shown = list(steps)
    final = answer
    if wrong_step is not None and wrong is not None:
        shown[wrong_step] = wrong
        final = wrong_answer(answer, choices, rng or random.Random(0))
    return "\n".join(_steps_text(shown) + [f"The answer is {final}"])


def reflection_target(solution: list[str], wrong_step: int | None = None) -> str:
    """The follow-up turn: each step re-checked against the image, the mistake named if there was one,
    and the final answer."""
    steps, answer = split_solution(solution)
    lines = ["Let me check the previous reasoning step by step against the image."]
    for i, content in enumerate(steps):
        if i == wrong_step:
            lines.append(f"Step {i + 1} is wrong: {content}")
        else:
            lines.append(f"Step {i + 1} is correct.")
    lines.append("The previous answer is wrong." if wrong_step is not None else "There is no mistake.")
    lines.append(f"The answer is {answer}")
    return "\n".join(lines)

