"""The SEAT output format and its parser, which every synthesis record and every SEAT-style answer goes through
(the tiny teacher's pre-training targets in this format are written by ``kit.tiny.seat_targets``).

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

import re
from dataclasses import asdict, dataclass, field
from typing import Any

BLOCK_START = "[self-evaluation-start:"
BLOCK_END = "self-evaluation-end]"

_ANSWER = re.compile(r"the (?:final )?answer is\s*:?\s*(.+)", re.IGNORECASE)
_VERDICT = re.compile(r"Evaluation\s*:\s*\[?\s*(Accept|Refine)\b", re.IGNORECASE)
STEP_LINE = re.compile(r"^\s*Step\s*(\d+)\s*[:.]\s*(.*)$", re.IGNORECASE)


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
