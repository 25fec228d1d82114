"""Text-in, text-out chat callables for the steps that official evaluations give to an LLM: MathVista's
answer extractor and HallusionBench's judge. Either a local model through ``kit.models.load`` (greedy,
text only) or any OpenAI-compatible chat endpoint (a vLLM or SGLang server, or a hosted API).

Both return ``llm(prompt) -> str``, the signature ``kit.benchmarks`` and ``kit.evaluate`` take. The
tiny profile uses neither: its tables say "rules only".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kit.errors import KitError


def local_chat(model: Any, max_new_tokens: int = 64) -> Callable[[str], str]:
    """A greedy chat callable over a ``LoadedModel`` (or a name/path for ``kit.models.load``)."""
    import torch

    from kit.models import LoadedModel, load

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
    from kit.generate import post_chat

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
