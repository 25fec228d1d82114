"""Writing the SEAT output format (``kit.eval.seat_format``): the tiny teacher's pre-training targets, built from
the tiny world's gold solutions. A real teacher (Qwen2-VL-7B) follows the prompt's instructions; the tiny one
has to have seen the format."""

from __future__ import annotations

import random
import re

from kit.eval.seat_format import BLOCK_END, BLOCK_START, STEP_LINE, final_answer
from kit.tiny.world.scenes import COLOR_NAMES

_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")


def split_solution(solution: list[str]) -> tuple[list[str], str]:
    """Gold steps without their "Step k: " prefixes, and the final answer."""
    *steps, last = solution
    answer = final_answer(last)
    return [STEP_LINE.match(s).group(2) if STEP_LINE.match(s) else s for s in steps], answer or last


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
    words = [c for c in COLOR_NAMES if re.search(rf"\b{c}\b", content)]
    if words:
        colour = rng.choice(words)
        other = rng.choice([c for c in COLOR_NAMES if c != colour])
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

