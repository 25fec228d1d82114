"""The prompt registry: the authors' texts word for word, each with its provenance."""

import pytest

from kit import prompts
from kit.errors import KitError


def test_every_prompt_names_where_it_comes_from():
    for prompt in prompts.PROMPTS.values():
        assert prompt.provenance and prompt.source in {"paper", "authors_code", "benchmark", "ours"}


def test_seat_synthesis_carries_the_answer_and_inference_does_not():
    synthesis = prompts.get("seat_synthesis").format(question="How many red shapes?", answer="3")
    inference = prompts.get("seat_inference").format(question="How many red shapes?")
    assert "How many red shapes?" in synthesis and "\n Answer: 3 \n" in synthesis
    assert "Answer: 3" not in inference
    for text in (synthesis, inference):
        assert "[self-evaluation-start:" in text and "self-evaluation-end]" in text
        assert "Evaluation: Accept/Refine" in text and "The answer is [final answer]" in text


def test_cascaded_prompts_are_the_authors_short_ones():
    cot = prompts.get("cas_cot").format(question="Q?")
    assert cot.startswith("You are a reasoner tasked with solving problems step by step.") and cot.endswith(" Q?")
    assert prompts.get("cas_reflection").format().startswith("Please provide a detailed reflection")
    # the cascade's point: each stage is far shorter than the integrated prompt
    assert len(cot) < len(prompts.get("seat_inference").format(question="Q?")) / 2


def test_missing_field_and_unknown_id_are_named():
    with pytest.raises(KitError, match="needs answer"):
        prompts.get("seat_synthesis").format(question="Q?")
    with pytest.raises(KitError, match="unknown prompt id 'seat_long'"):
        prompts.get("seat_long")


def test_the_authors_code_defects_are_recorded_as_deviations():
    from kit.deviations import DEVIATIONS, get

    ids = {d.id for d in DEVIATIONS}
    assert {"seat-teacher-128-tokens", "cas-seat-reflection-label-leak", "cas-seat-first-43-skipped"} <= ids
    assert "max_new_tokens=128" in get("seat-teacher-128-tokens").source
    for deviation in DEVIATIONS:
        assert deviation.paper in ("SEAT", "EACO") and deviation.authors and deviation.kit and deviation.affects


def test_judge_prompt_is_ours_and_shows_all_it_judges():
    judge = prompts.get("judge")
    assert judge.source == "ours"
    text = judge.format(question="How many?", answer="3", response="Step 1: count.")
    assert "How many?" in text and "Correct answer: 3" in text and "Step 1: count." in text
    assert text.endswith("Answer yes or no.")
