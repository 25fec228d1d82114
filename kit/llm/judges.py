"""Text-in, text-out chat callables for the steps that official evaluations give to an LLM: MathVista's
answer extractor and HallusionBench's judge. Either a local model through ``kit.llm.models.load`` (greedy,
text only) or any OpenAI-compatible chat endpoint (a vLLM or SGLang server, or a hosted API).

Both return ``llm(prompt) -> str``, the signature ``kit.eval.benchmarks`` and ``kit.eval.evaluate`` take.

``extraction_from_profile`` turns a profile's ``evaluation.extractor`` / ``judge_url`` / ``judge_model`` /
``judge_api_key_env`` into the options notebooks 05 and 08 pass to ``kit.eval.evaluate``: ``rules`` (the tiny
profile; a documented deviation) or ``llm`` through an OpenAI-compatible endpoint (the paper profile). It is
called at the start of those notebooks, so that a paper run without its judge stops before any training.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kit.errors import KitError

EXTRACTORS = ("rules", "llm")
# Cas-SEAT's extract_answer.py (self-evaluate/evaluation/extract_answer.py, extract_answer) generates the
# extraction with max_new_tokens=512.
EXTRACTOR_MAX_TOKENS = 512


def local_chat(model: Any, max_new_tokens: int = 64) -> Callable[[str], str]:
    """A greedy chat callable over a ``LoadedModel`` (or a name/path for ``kit.llm.models.load``)."""
    import torch

    from kit.llm.models import LoadedModel, load

    loaded = model if isinstance(model, LoadedModel) else load(model)
    tokenizer = loaded.processor.tokenizer

    def chat(prompt: str) -> str:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        batch = tokenizer([text], return_tensors="pt").to(loaded.model.device)
        with torch.no_grad():
            out = loaded.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        return tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    return chat


def openai_chat(
    base_url: str,
    model: str,
    api_key: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    timeout: float = 60.0,
    retries: int = 3,
    backoff: float = 1.0,
) -> Callable[[str], str]:
    """A chat callable over ``POST {base_url}/chat/completions`` (OpenAI's wire format).

    Server errors (5xx), rate limits (429) and timeouts are retried ``retries`` times with exponential
    back-off; a client error (other 4xx) or an answer without ``choices`` raises ``KitError`` at once."""
    from kit.llm.generate import post_chat

    url = base_url.rstrip("/") + "/chat/completions"

    def chat(prompt: str) -> str:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "temperature": temperature}
        answer = post_chat(url, body, api_key=api_key, timeout=timeout, retries=retries, backoff=backoff)
        try:
            return answer["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as err:
            raise KitError(f"{url} answered without choices[0].message.content: {str(answer)[:200]}") from err

    return chat


@dataclass(frozen=True)
class Extraction:
    """How a notebook's evaluations read answers: ``extractor`` (``rules`` | ``llm``) and, for ``llm``, the
    chat callable and the name of the model behind it (recorded in every prediction line and metrics)."""

    extractor: str
    llm: Callable[[str], str] | None = None
    model: str | None = None

    def options(self) -> dict[str, Any]:
        """The keyword arguments of ``kit.eval.evaluate.evaluate`` / ``evaluate_stage`` for this extraction."""
        if self.extractor == "rules":
            return {"extractor": "rules"}
        return {"extractor": "llm", "llm": self.llm, "llm_name": self.model}


def extraction_from_profile(
    extractor: str,
    judge_url: str | None,
    judge_model: str | None,
    judge_api_key_env: str | None = None,
    *,
    profile: str = "the profile",
    check: bool = True,
    timeout: float = 60.0,
) -> Extraction:
    """The ``Extraction`` a profile's ``evaluation`` section names (its values as notebook parameters).

    ``llm`` needs ``judge_url`` (an OpenAI-compatible ``.../v1`` endpoint, e.g. a vLLM server of
    ``judge_model``) and ``judge_model``; ``judge_api_key_env`` names the environment variable that holds the
    endpoint's key, when it needs one. A missing value is a ``KitError`` naming the profile key; with ``check``
    one one-token request is sent at once, so that a wrong URL, model name or key stops the run now rather
    than after its training stages (MathVista's extractor turns a failed request into an empty answer)."""
    where = f"profile {profile!r}"
    if extractor not in EXTRACTORS:
        raise KitError(f"{where}: evaluation.extractor is {extractor!r}; expected one of {', '.join(EXTRACTORS)}")
    if extractor == "rules":
        return Extraction("rules")
    if not judge_url:
        raise KitError(
            f"{where}: evaluation.extractor is 'llm' but evaluation.judge_url is not set. Start an "
            f"OpenAI-compatible server for evaluation.judge_model ({judge_model or 'not set either'}), e.g. "
            f"`vllm serve {judge_model or '<model>'} --port 8000`, and set evaluation.judge_url: "
            "http://127.0.0.1:8000/v1; or set evaluation.extractor: rules (MathVista read by rules and "
            "HallusionBench by its rule judge instead of the official LLM steps)")
    if not judge_model:
        raise KitError(f"{where}: evaluation.extractor is 'llm' but evaluation.judge_model is not set (the model "
                       f"name {judge_url} serves, e.g. Qwen/Qwen2.5-14B-Instruct)")
    api_key = None
    if judge_api_key_env:
        api_key = os.environ.get(judge_api_key_env)
        if not api_key:
            raise KitError(f"{where}: evaluation.judge_api_key_env names {judge_api_key_env}, which is not set "
                           "in the environment")
    chat = openai_chat(judge_url, judge_model, api_key=api_key, max_tokens=EXTRACTOR_MAX_TOKENS, timeout=timeout)
    if check:
        from kit.llm.generate import post_chat

        url = judge_url.rstrip("/") + "/chat/completions"
        body = {"model": judge_model, "messages": [{"role": "user", "content": "Reply with OK."}], "max_tokens": 1,
                "temperature": 0.0}
        try:
            post_chat(url, body, api_key=api_key, timeout=timeout, retries=1, backoff=0.5, what="the judge check")
        except KitError as err:
            raise KitError(f"{where}: the judge at evaluation.judge_url ({judge_url}) with evaluation.judge_model "
                           f"{judge_model!r} failed its first request: {err}") from None
    return Extraction("llm", chat, judge_model)
