"""The prompt registry: the authors' texts byte for byte, each with its provenance.

The ``_authors_*`` helpers below hold verbatim copies of the authors' prompt literals, pasted line for line
from their files (each cited with its commit and lines) so that this test needs no copy of their
repositories. Python evaluates them exactly as it evaluates the authors' code: escapes such as ``\\n`` inside
the literals, the real line breaks and the indentation inside triple-quoted strings all count. Each kit prompt
is formatted with the placeholders filled the way the authors fill them and compared byte for byte.

Where the kit knowingly differs, the test says so and checks that ``kit.core.deviations`` records it:
- the MathV360K question and answer are ``.strip()``ped before formatting (``seat-question-stripped``);
- ``eaco_critic_additive`` adds the question and response lines (``eaco-critic-sees-no-question``); the
  draft's exact text is ``eaco_critic_draft``.
"""

import pytest

from kit.errors import KitError
from kit.llm import prompts

# ------------------------------------------------------------------------------------------------ the authors'
# github.com/HelloZicky/Cas-SEAT @ 6d80fb4 (HEAD 15dbbf2 has the same files). The statements are re-indented to
# sit in a function; every continuation line of a literal is the authors' line, unchanged.


def _authors_seat_synthesis(query: str, answer: str) -> str:
    # train/generate_data.py, main(), lines 289-303 (query = conversations[0]["value"].replace("<image>", ""),
    # answer = conversations[1]["value"], lines 283-287)
    system_prompt = f'''This is a mathematical question about an image and the direct answer to this question: \n {query} \n Answer: {answer} \n You are a reasoner tasked with solving problems step by step. You need to give the question's step by step reasoning. Each step needs to include objective information observed from the image and the corresponding reasoning process. Follow these instructions:
1.Self-Evaluation:
     Continuously monitor for any uncertainty or potential errors during reasoning, especially the parts related to the image. If you detect any doubt on reasoning process, computational steps, image observation, or the approach to complex questions, immediately enter a “self-evaluation” phase using this format:
     [self-evaluation-start:
     (Your detailed reflection here, let's verify step by step)
     Evaluation: Accept/Refine
     self-evaluation-end]
     If the result is Evaluation: Refine, refine the reasoning as needed.
     If the result is Evaluation: Accept, proceed with the current solution.

2.Final Result:
     Once the solution is complete, present the final result in this format:
     The answer is [final answer]

Ensure the reasoning process is accurate, and invoke self-evaluation whenever necessary.\n'''
    return system_prompt


def _authors_seat_inference(query: str) -> str:
    # self-evaluate/evaluation/generate_response.py, main(), lines 288-302 (query = query_data[problem_id],
    # MathVista's zero-shot query, line 287)
    system_prompt = f'''This is a mathematical question about an image and the direct answer to this question: \n {query} \n You are a reasoner tasked with solving problems step by step. You need to give the question's step by step reasoning. Each step needs to include objective information observed from the image and the corresponding reasoning process. Follow these instructions:
1.Self-Evaluation:
     Continuously monitor for any uncertainty or potential errors during reasoning, especially the parts related to the image. If you detect any doubt on reasoning process, computational steps, image observation, or the approach to complex questions, immediately enter a “self-evaluation” phase using this format:
     [self-evaluation-start:
     (Your detailed reflection here, let's verify step by step)
     Evaluation: Accept/Refine
     self-evaluation-end]
     If the result is Evaluation: Refine, refine the reasoning as needed.
     If the result is Evaluation: Accept, proceed with the current solution.

2.Final Result:
     Once the solution is complete, present the final result in this format:
     The answer is [final answer]

Ensure the reasoning process is accurate, and invoke self-evaluation whenever necessary.\n'''
    return system_prompt


def _authors_cascade(query: str) -> tuple[str, str]:
    # self-evaluate/evaluation/reflection.py, main(), lines 223-224 (query = item['query'], line 218)
    system_prompt = "You are a reasoner tasked with solving problems step by step. You need to think about the questions comprehensively and give the question's detailed step by step reasoning. Your reasoning process should be related to the image. Remember that you need to give a final answer in the end. " + query
    system_prompt1 = f"Please provide a detailed reflection on whether there were any mistakes in the previous reasoning process and give a final answer."  # noqa: F541 (verbatim)
    return system_prompt, system_prompt1


# github.com/yongxinwang-ai/EACO_draft @ dfac188 (byte-identical at HEAD 23ac840),
# EACO/generate_pref_by_critic.py, __main__.
def _authors_eaco_critic_query(output: str) -> str:
    # Judge_prompt: lines 199-205
    Judge_prompt = """Review the user’s question and the corresponding response using the additive 5-point scoring system described below. Points are added based on the satisfaction of each criterion:\n\n
        - Add 1 point if the response is relevant and provides some information related to the user’s inquiry and visual information, even if it is incomplete or contains some irrelevant content.\n
        - Award another point if the response addresses a substantial portion of the user’s question and visual information but does not completely resolve the query or provide a direct answer. \n
        - Give a third point if the response answers the basic elements of the user’s question and visual information in a useful way, regardless of whether it seems to have been written by an AI Assistant or if it has elements typically found in blogs or search results. \n
        - Award a fourth point if the response is clearly written from an AI Assistant’s perspective, addressing the user’s question directly and summarize the visual information comprehensively, and is well-organized and helpful, even if there is slight room for improvement in clarity, conciseness or focus. \n
        - Add a fifth point for a response that is impeccably tailored to the user’s question by an AI Assistant, without extraneous information, reflecting expert knowledge, and demonstrating a high-quality, engaging, and insightful answer.\n\n After examining the user’s instruction and the response:
    """
    # Rating_prompt: lines 215-216
    Rating_prompt = """\n Provide a concise assessment with a score from 1 to 5 for each criterion, and the scores of these criteria should be additive for a total score. Conclude with the score using the format: “score: <total points>”"
    """
    # line 256
    return Judge_prompt + f"{output}" + Rating_prompt


# github.com/yihedeng9/STIC @ 626484428be2, stic/generate_pref.py, __main__ lines 164-188 (the EACO draft's
# EACO/generate_pref.py lines 164-188 and EACO/generate_pref_by_critic.py lines 172-179 repeat them).
def _authors_stic() -> tuple[list[str], str, list[str]]:
    prompt_list = ["Illustrate the details of the picture.",
                   "Summarize the visual content presented.",
                   "Explain what is depicted in the photograph.",
                   "Outline the key elements captured in the image.",
                   "Detail the composition and subjects within the frame.",
                   "Convey the atmosphere and mood represented in the snapshot.",
                   "Interpret the scene shown in the image.",
                   "Identify and describe the main focal points in the visual."]
    full_prompt = """Please provide a detailed description of the image, focusing on the following. 
    Identify the main subjects (people, animals, objects) in the image and describe what they are doing.
    Describe the setting of the image. Is it indoors or outdoors? What kind of environment or location does it depict? 
    What mood does the image convey? Are there any specific elements (such as lighting, weather, expressions) that contribute to this atmosphere? 
    Describe the dominant colors and the overall composition. How do these elements affect the image's impact?
    Point out any details or symbols that might be relevant to understanding the image's meaning or context.
    If applicable, provide interpretations of what the image might represent or communicate."""  # noqa: W291 (the authors' trailing spaces are part of the prompt)
    hallu_prompt_list = ["Describe the image with imaginative objects that may exist in the scene.",
                         "Enrich the description by adding hypothetical objects or characters that could be part of the scene.",
                         "Suggest and detail practical items or people that could logically inhabit the image's setting.",
                         "Incorporate elements that, though absent, would seamlessly fit into the context of the picture.",
                         "Imagine and describe additional everyday objects or activities taking place just out of frame.",
                         "Augment the scene with details of potential events or items that are plausible.",
                         "Conceive of and detail natural elements, such as weather or animals, that could realistically enter the scene. Make the description affirmative.",
                         "Invent and incorporate details of practical tools, vehicles, or gadgets that could be expected in a similar scenario."]
    return prompt_list, full_prompt, hallu_prompt_list


# MathV360K rows open with "<image>\n"; the authors only remove the tag, so their query keeps the newline.
MATHV360K_QUERIES = [("<image>\nWhat is the value of x in the figure?", "5"),
                     ("<image>\nHow many {red} shapes?\nChoices: (A) 2 (B) 3", "B"), ("Plain question", " 7.5 ")]
MATHVISTA_RECORD = {"pid": "1", "question_type": "multi_choice", "answer_type": "text", "choices": ["2", "3"],
                    "precision": None, "question": "How many shapes are there?", "unit": None, "answer": "3"}


@pytest.mark.parametrize(("raw", "answer"), MATHV360K_QUERIES)
def test_seat_synthesis_is_the_authors_prompt_byte_for_byte(raw: str, answer: str) -> None:
    query = raw.replace("<image>", "")  # as generate_data.py line 286 fills it
    kit = prompts.get("seat_synthesis").format(question=query, answer=answer)
    assert kit == _authors_seat_synthesis(query, answer)
    assert kit.endswith("whenever necessary.\n") and not kit.endswith("\\n")  # a real newline, not "\\n"


def test_seat_inference_and_the_cascade_are_the_authors_prompts_byte_for_byte() -> None:
    from kit.eval import strategies as infer
    from kit.eval.benchmarks import mathvista

    query = mathvista.build_prompt(MATHVISTA_RECORD)  # MathVista's zero-shot query, as query_data holds it
    assert infer.first_prompt("seat", mathvista, MATHVISTA_RECORD) == _authors_seat_inference(query)
    cot, reflection = _authors_cascade(query)
    assert infer.first_prompt("cot", mathvista, MATHVISTA_RECORD) == cot
    assert infer.first_prompt("cas_seat", mathvista, MATHVISTA_RECORD) == cot
    assert infer.reflection_prompt() == prompts.get("cas_reflection").format() == reflection
    assert prompts.get("seat_inference").format(question="Q") == _authors_seat_inference("Q")


@pytest.mark.parametrize("response", ["A dog on a red sofa.", "", "Braces {stay} as they are.\n"])
def test_the_eaco_critic_prompt_is_the_drafts_byte_for_byte(response: str) -> None:
    assert prompts.get("eaco_critic_draft").format(response=response) == _authors_eaco_critic_query(response)
    # The default variant adds the question and the response lines between the draft's two texts, nothing else.
    judge, rating = _authors_eaco_critic_query("\0").split("\0")
    additive = prompts.get("eaco_critic_additive").format(instruction="What is on the sofa?", response=response)
    assert additive == judge + f"User\u2019s question: What is on the sofa?\nResponse: {response}" + rating
    assert (judge, rating) == (prompts.EACO_JUDGE, prompts.EACO_RATING)


def test_stic_prompts_and_instruction_lists_are_the_authors() -> None:
    from kit.eaco.preference import load_instructions
    from kit.llm.prompts import DESCRIPTION_INSTRUCTIONS, HALLUCINATION_INSTRUCTIONS

    prompt_list, full_prompt, hallu_prompt_list = _authors_stic()
    assert prompts.get("stic_full_description").format() == prompts.STIC_FULL_DESCRIPTION == full_prompt
    assert (prompt_list, hallu_prompt_list) == (DESCRIPTION_INSTRUCTIONS, HALLUCINATION_INSTRUCTIONS)
    assert load_instructions(None) == (prompt_list, hallu_prompt_list)  # what the paper profile samples from


def test_where_the_kit_knowingly_differs_is_recorded(tmp_path) -> None:
    """kit.casseat.synthesis strips the question and the answer (the authors keep the row's leading newline and any
    outer spaces): the prompt differs in whitespace only, and kit.core.deviations says so."""
    from fakes import row, write_source

    from kit.casseat.mathv360k import load_source
    from kit.casseat.synthesis import chat_for
    from kit.core.deviations import get

    raw, answer = MATHV360K_QUERIES[0]
    folder = write_source(tmp_path, [row("1", "a.png", raw.removeprefix("<image>\n"), answer)], {"a.png": (1, 2, 3)})
    item = load_source(folder)[0]
    kit = chat_for(item, "seat_synthesis", 0).turns[0]
    authors = _authors_seat_synthesis(raw.replace("<image>", ""), answer)
    assert kit != authors and kit.split() == authors.split()
    assert kit == _authors_seat_synthesis(raw.replace("<image>", "").strip(), answer.strip())
    assert ".strip()" in get("seat-question-stripped").kit
    assert "eaco_critic_draft" in get("eaco-critic-sees-no-question").kit


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
    from kit.core.deviations import DEVIATIONS, get

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
