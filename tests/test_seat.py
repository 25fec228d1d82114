"""The SEAT output parser on well-formed and broken outputs, and the pre-training targets it must read."""

from __future__ import annotations

import random

import pytest

from kit.eval import seat_format as seat
from kit.tiny import seat_targets

WELL_FORMED = """Step 1: Bar B has height 6.
Step 2: Bar D has height 1.
[self-evaluation-start:
Let's verify step by step. Bar D reaches one unit.
Evaluation: Accept
self-evaluation-end]
Step 3: Add: 6 + 1 = 7.
[self-evaluation-start:
Let's verify step by step. 6 + 1 is 7, not 8.
Evaluation: Refine
self-evaluation-end]
Step 3: Add: 6 + 1 = 7.
The answer is 7."""


def test_well_formed_output_gives_steps_blocks_verdicts_and_answer():
    parsed = seat.parse(WELL_FORMED)
    assert parsed.well_formed and parsed.problems == []
    assert parsed.answer == "7"
    assert parsed.verdicts == ["Accept", "Refine"]
    assert [e.after_step for e in parsed.evaluations] == [2, 3]
    assert parsed.steps == ["Step 1: Bar B has height 6.", "Step 2: Bar D has height 1.", "Step 3: Add: 6 + 1 = 7.",
                            "Step 3: Add: 6 + 1 = 7."]
    assert "verify" in parsed.evaluations[0].text
    assert parsed.to_dict()["well_formed"] is True


@pytest.mark.parametrize(("text", "problem"), [
    ("Step 1: x\n[self-evaluation-start:\nhmm\nEvaluation: Accept\nThe answer is 3", "not closed"),
    ("Step 1: x\nEvaluation: Accept\nself-evaluation-end]\nThe answer is 3", "without a"),
    ("Step 1: x\n[self-evaluation-start:\nI am not sure.\nself-evaluation-end]\nThe answer is 3", "no 'Evaluation"),
    ("Step 1: x\n[self-evaluation-start: Evaluation: Accept or Evaluation: Refine self-evaluation-end]\n"
     "The answer is 3", "both Accept and Refine"),
    ("Step 1: count the circles.\nStep 2: there are", "no final answer"),
    ("The answer is 4.", "no reasoning"),
    ("", "no final answer"),
])
def test_broken_outputs_are_kept_and_flagged(text, problem):
    parsed = seat.parse(text)
    assert not parsed.well_formed
    assert any(problem in p for p in parsed.problems), parsed.problems


def test_unclosed_block_followed_by_another_block_is_split_at_the_next_start():
    text = ("Step 1: a\n[self-evaluation-start:\nEvaluation: Accept\n"
            "[self-evaluation-start:\nEvaluation: Refine\nself-evaluation-end]\nThe answer is 2")
    parsed = seat.parse(text)
    assert parsed.verdicts == ["Accept", "Refine"]
    assert sum("not closed" in p for p in parsed.problems) == 1
    assert parsed.answer == "2"


def test_chain_of_thought_with_a_block_is_flagged_only_when_blocks_are_not_expected():
    assert seat.parse(WELL_FORMED, expect_blocks=True).well_formed
    assert "self-evaluation block in a chain of thought" in seat.parse(WELL_FORMED, expect_blocks=False).problems


@pytest.mark.parametrize(("text", "answer"), [
    ("The answer is 0.5.", "0.5"),
    ("The answer is [C].", "C"),
    ("so the final answer is: **12**", "12"),
    ("The answer is 3. Let me check.\nThe answer is 4", "4"),
    ("THE ANSWER IS yes", "yes"),
    ("no answer here", None),
])
def test_final_answer_is_the_last_one_cleaned(text, answer):
    assert seat.final_answer(text) == answer


@pytest.mark.parametrize("seed", range(20))
def test_written_targets_parse_back_well_formed(seed):
    rng = random.Random(seed)
    solution = ["Step 1: Bar B has height 6.", "Step 2: Bar C is red.", "Step 3: Add: 6 + 2 = 8.", "The answer is 8."]
    parsed = seat.parse(seat_targets.seat_target(solution, rng, refine_rate=0.5))
    assert parsed.well_formed, parsed.problems
    assert parsed.answer == "8"
    assert len(parsed.evaluations) == 1

    cot = seat.parse(seat_targets.cot_target(solution), expect_blocks=False)
    assert cot.well_formed and cot.answer == "8"
    reflection = seat.parse(seat_targets.reflection_target(solution, wrong_step=1), expect_blocks=False)
    assert reflection.well_formed and reflection.answer == "8"


def test_refine_target_shows_the_misread_step_then_the_right_one():
    solution = ["Step 1: Bar B has height 6.", "The answer is 6."]
    text = seat_targets.seat_target(solution, random.Random(0), refine_rate=1.0)
    assert seat.parse(text).verdicts == ["Refine"]
    lines = text.splitlines()
    assert lines[0] != "Step 1: Bar B has height 6." and lines[-2] == "Step 1: Bar B has height 6."


def test_corrupt_changes_a_number_or_a_colour_and_gives_none_otherwise():
    rng = random.Random(1)
    assert seat_targets.corrupt("Bar A has height 3.", rng) != "Bar A has height 3."
    assert seat_targets.corrupt("The circle is red.", rng) != "The circle is red."
    assert seat_targets.corrupt("The shape is in the top left.", rng) is None
    assert seat_targets.wrong_answer("Yes", ["Yes", "No"], rng) == "No"
    assert seat_targets.wrong_answer("0.5", None, rng) != "0.5"
