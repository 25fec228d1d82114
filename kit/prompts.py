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
    "Ensure the reasoning process is accurate, and invoke self-evaluation whenever necessary.\\n"
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
            provenance="the optional MLLM judge of labelled-data filtering (kit.selection); the paper does not "
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
