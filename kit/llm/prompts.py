"""Every prompt the pipeline sends, each with an id, its text and where it comes from.

Texts marked ``authors_code`` are the SEAT / Cas-SEAT authors' prompts (github.com/HelloZicky/Cas-SEAT,
commit 6d80fb4), kept word for word, typos and all, because a reproduction must ask what they asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.errors import KitError


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    provenance: str
    source: str  # paper | authors_code | benchmark | ours
    fields: tuple[str, ...] = ()

    def format(self, **values: str) -> str:
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise KitError(f"prompt {self.id!r} needs {', '.join(missing)}")
        return self.text.format(**{f: values[f] for f in self.fields})


_SELF_EVALUATION_INSTRUCTIONS = (
    " You are a reasoner tasked with solving problems step by step. You need to give the question's step by "
    "step reasoning. Each step needs to include objective information observed from the image and the "
    "corresponding reasoning process. Follow these instructions:\n"
    "1.Self-Evaluation:\n"
    "     Continuously monitor for any uncertainty or potential errors during reasoning, especially the parts "
    "related to the image. If you detect any doubt on reasoning process, computational steps, image "
    "observation, or the approach to complex questions, immediately enter a \u201cself-evaluation\u201d phase "
    "using this format:\n"
    "     [self-evaluation-start:\n"
    "     (Your detailed reflection here, let's verify step by step)\n"
    "     Evaluation: Accept/Refine\n"
    "     self-evaluation-end]\n"
    "     If the result is Evaluation: Refine, refine the reasoning as needed.\n"
    "     If the result is Evaluation: Accept, proceed with the current solution.\n\n"
    "2.Final Result:\n"
    "     Once the solution is complete, present the final result in this format:\n"
    "     The answer is [final answer]\n\n"
    # The authors' f-strings end in ``necessary.\\n'''``, an escape: the prompt ends in one real newline,
    # not in a backslash and an ``n``.
    "Ensure the reasoning process is accurate, and invoke self-evaluation whenever necessary.\n"
)

# The integrated prompt opens with the question; at synthesis time the gold answer follows it.
_SEAT_OPENING = "This is a mathematical question about an image and the direct answer to this question: \n {question} \n"
_SEAT_BODY = _SELF_EVALUATION_INSTRUCTIONS.replace("{", "{{").replace("}", "}}")

PROMPTS: dict[str, Prompt] = {
    p.id: p
    for p in (
        Prompt(
            id="seat_synthesis",
            text=_SEAT_OPENING + " Answer: {answer} \n" + _SEAT_BODY,
            provenance="train/generate_data.py, main(): the teacher's integrated SEAT prompt, which carries "
            "the question and its gold answer",
            source="authors_code",
            fields=("question", "answer"),
        ),
        Prompt(
            id="seat_inference",
            text=_SEAT_OPENING + _SEAT_BODY,
            provenance="self-evaluate/evaluation/generate_response.py, main(): the same prompt at inference, "
            "without the answer (its first sentence still mentions one, as in the authors' code)",
            source="authors_code",
            fields=("question",),
        ),
        Prompt(
            id="cas_cot",
            text="You are a reasoner tasked with solving problems step by step. You need to think about the "
            "questions comprehensively and give the question's detailed step by step reasoning. Your reasoning "
            "process should be related to the image. Remember that you need to give a final answer in the "
            "end. {question}",
            provenance="self-evaluate/evaluation/reflection.py, main(): Cas-SEAT stage 1, chain of thought",
            source="authors_code",
            fields=("question",),
        ),
        Prompt(
            id="cas_reflection",
            text="Please provide a detailed reflection on whether there were any mistakes in the previous "
            "reasoning process and give a final answer.",
            provenance="self-evaluate/evaluation/reflection.py, main(): Cas-SEAT stage 2, a follow-up turn",
            source="authors_code",
        ),
        Prompt(
            id="judge",
            text="Here is a question about the image, its correct answer and a step-by-step solution.\n"
            "Question: {question}\nCorrect answer: {answer}\nSolution:\n{response}\n"
            "Is every step of the solution correct and consistent with the image? Answer yes or no.",
            provenance="the optional MLLM judge of labelled-data filtering (kit.casseat.selection); the paper does not "
            "publish its filtering criteria",
            source="ours",
            fields=("question", "answer", "response"),
        ),
        Prompt(
            id="direct",
            text="{question}",
            provenance="the benchmark's own standard prompt (e.g. MathVista's zero-shot query)",
            source="benchmark",
            fields=("question",),
        ),
    )
}


def get(prompt_id: str) -> Prompt:
    try:
        return PROMPTS[prompt_id]
    except KeyError:
        raise KitError(f"unknown prompt id {prompt_id!r}; known: {', '.join(PROMPTS)}") from None


# -- EACO (arXiv 2412.04903) -------------------------------------------------------------------------
# The Critic's rubric, word for word from the authors' draft (github.com/yongxinwang-ai/EACO_draft @ dfac188,
# EACO/generate_pref_by_critic.py, __main__: ``Judge_prompt`` lines 199-205 and ``Rating_prompt`` lines
# 215-216), with the indentation and the stray closing quote that Python's triple-quoted strings kept.
# The draft sends ``Judge_prompt + output + Rating_prompt`` (line 256): the response, but not the question.
EACO_JUDGE = (
    "Review the user\u2019s question and the corresponding response using the additive 5-point "
    "scoring system described below. Points are added based on the satisfaction of each "
    "criterion:\n\n\n"
    "        - Add 1 point if the response is relevant and provides some information related "
    "to the user\u2019s inquiry and visual information, even if it is incomplete or contains some "
    "irrelevant content.\n\n"
    "        - Award another point if the response addresses a substantial portion of the "
    "user\u2019s question and visual information but does not completely resolve the query or "
    "provide a direct answer. \n\n"
    "        - Give a third point if the response answers the basic elements of the user\u2019s "
    "question and visual information in a useful way, regardless of whether it seems to have "
    "been written by an AI Assistant or if it has elements typically found in blogs or search "
    "results. \n\n"
    "        - Award a fourth point if the response is clearly written from an AI Assistant\u2019s "
    "perspective, addressing the user\u2019s question directly and summarize the visual information "
    "comprehensively, and is well-organized and helpful, even if there is slight room for "
    "improvement in clarity, conciseness or focus. \n\n"
    "        - Add a fifth point for a response that is impeccably tailored to the user\u2019s "
    "question by an AI Assistant, without extraneous information, reflecting expert knowledge, "
    "and demonstrating a high-quality, engaging, and insightful answer.\n\n"
    " After examining the user\u2019s instruction and the response:\n"
    "    "
)
EACO_RATING = (
    "\n"
    " Provide a concise assessment with a score from 1 to 5 for each criterion, and the scores "
    "of these criteria should be additive for a total score. Conclude with the score using the "
    "format: \u201cscore: <total points>\u201d\"\n"
    "    "
)
# STIC's prompt for the preferred description (yihedeng9/STIC @ 626484428be2, stic/generate_pref.py,
# __main__: ``full_prompt`` lines 173-179; EACO/generate_pref.py repeats it).
STIC_FULL_DESCRIPTION = (
    "Please provide a detailed description of the image, focusing on the following. \n"
    "    Identify the main subjects (people, animals, objects) in the image and describe what "
    "they are doing.\n"
    "    Describe the setting of the image. Is it indoors or outdoors? What kind of "
    "environment or location does it depict? \n"
    "    What mood does the image convey? Are there any specific elements (such as lighting, "
    "weather, expressions) that contribute to this atmosphere? \n"
    "    Describe the dominant colors and the overall composition. How do these elements "
    "affect the image's impact?\n"
    "    Point out any details or symbols that might be relevant to understanding the image's "
    "meaning or context.\n"
    "    If applicable, provide interpretations of what the image might represent or "
    "communicate."
)

PROMPTS.update({
    p.id: p
    for p in (
        Prompt(
            id="eaco_critic_draft",
            text=EACO_JUDGE + "{response}" + EACO_RATING,
            provenance="github.com/yongxinwang-ai/EACO_draft @ dfac188, EACO/generate_pref_by_critic.py, "
            "__main__ line 256: Judge_prompt + response + Rating_prompt, word for word; the critic is not "
            "shown the question (kit.core.deviations: eaco-critic-sees-no-question)",
            source="authors_code",
            fields=("response",),
        ),
        Prompt(
            id="eaco_critic_additive",
            text=EACO_JUDGE + "User\u2019s question: {instruction}\nResponse: {response}" + EACO_RATING,
            provenance="the authors' additive 5-point rubric and rating instruction word for word "
            "(EACO/generate_pref_by_critic.py lines 199-205, 215-216); the 'User\u2019s question:' and "
            "'Response:' lines are ours, so that the critic sees the question its rubric refers to, as the "
            "Self-Rewarding LLM-as-a-judge prompt it follows does (arXiv 2401.10020, Figure 2)",
            source="ours",
            fields=("instruction", "response"),
        ),
        Prompt(
            id="eaco_critic_dimension",
            text="Review the user\u2019s question and the corresponding response for one aspect only, "
            "{dimension}: {definition} Rate this aspect from 1 (very poor) to 5 (excellent).\n"
            "User\u2019s question: {instruction}\nResponse: {response}\n"
            "Briefly justify your rating, then conclude with the score using the format: "
            "\u201cscore: <points>\u201d",
            provenance="ours: one question per VLFeedback aspect (helpfulness, visual faithfulness, ethical "
            "considerations; arXiv 2312.10665), for the per-dimension critic variant, which the draft "
            "code does not have",
            source="ours",
            fields=("dimension", "definition", "instruction", "response"),
        ),
        Prompt(
            id="stic_full_description",
            text=STIC_FULL_DESCRIPTION,
            provenance="yihedeng9/STIC @ 626484428be2, stic/generate_pref.py, __main__: full_prompt (lines "
            "173-179), which elicits the preferred description of a STIC pair",
            source="authors_code",
        ),
    )
})


# The eight image-description prompts STIC samples for self-training, and its eight prompts for
# eliciting hallucinated descriptions; EACO builds on STIC's self-training. Source: yihedeng9/STIC,
# stic/generate_pref.py (``prompt_list`` and ``hallu_prompt_list``), commit 626484428be2.
DESCRIPTION_INSTRUCTIONS = [
    "Illustrate the details of the picture.",
    "Summarize the visual content presented.",
    "Explain what is depicted in the photograph.",
    "Outline the key elements captured in the image.",
    "Detail the composition and subjects within the frame.",
    "Convey the atmosphere and mood represented in the snapshot.",
    "Interpret the scene shown in the image.",
    "Identify and describe the main focal points in the visual.",
]
HALLUCINATION_INSTRUCTIONS = [
    "Describe the image with imaginative objects that may exist in the scene.",
    "Enrich the description by adding hypothetical objects or characters that could be part of the scene.",
    "Suggest and detail practical items or people that could logically inhabit the image's setting.",
    "Incorporate elements that, though absent, would seamlessly fit into the context of the picture.",
    "Imagine and describe additional everyday objects or activities taking place just out of frame.",
    "Augment the scene with details of potential events or items that are plausible.",
    "Conceive of and detail natural elements, such as weather or animals, that could realistically enter the "
    "scene. Make the description affirmative.",
    "Invent and incorporate details of practical tools, vehicles, or gadgets that could be expected in a similar "
    "scenario.",
]
STIC_SOURCE = "yihedeng9/STIC stic/generate_pref.py (prompt_list, hallu_prompt_list) @ 626484428be2"
