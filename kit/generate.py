"""The generation engine: one interface, three backends.

::

    from kit.generate import Chat, Sampling, make_engine
    engine = make_engine("transformers", "data/models/tiny-qwen2vl-teacher", batch_size=32)
    for chat, text in engine.generate([Chat("q1", ["How many circles?"], image="a.png")], Sampling()):
        ...

- ``transformers`` (the default, and the tiny profile's): batched, left-padded generation with the KV
  cache, prompts sorted by length so that a batch pads little.
- ``openai``: any OpenAI-compatible chat endpoint (a vLLM or SGLang server, ``kit serve``, a hosted API).
  Images travel as ``data:`` URLs; requests run ``concurrency`` at a time with retries, exponential
  back-off and a timeout per request.
- ``vllm``: offline ``vllm.LLM.generate`` with ``multi_modal_data``, for synthesis on several GPUs
  (``tensor_parallel_size``). Imported only when chosen; it is in the ``gpu`` extra.

``generate`` yields ``(chat, text)`` as results arrive (batch by batch, or request by request), so the
caller can write each one at once and a killed run loses at most what was in flight.

A ``Chat`` is a conversation to continue: user and assistant texts alternating, starting and ending with a
user turn, with at most one image, shown in the first user turn (the way the authors' Cas-SEAT reflection
continues the CoT turn, ``self-evaluate/evaluation/reflection.py``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from kit.errors import KitError

BACKENDS = ("transformers", "openai", "vllm")


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. ``temperature=0`` is greedy. ``seed`` makes sampling repeatable: the
    transformers backend seeds each batch from it and the batch's ids, the others pass it per request."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise KitError(f"sampling: max_new_tokens must be a whole number >= 1, not {self.max_new_tokens!r}")
        if not 0 <= self.temperature <= 5:
            raise KitError(f"sampling: temperature must be between 0 and 5, not {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise KitError(f"sampling: top_p must be in (0, 1], not {self.top_p!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Chat:
    id: str
    turns: list[str]
    image: Any = None  # a file path, a PIL image, or None for a text-only chat

    def __post_init__(self) -> None:
        if not self.turns or len(self.turns) % 2 == 0:
            raise KitError(f"chat {self.id}: turns must alternate user/assistant and end with a user turn "
                           f"(an odd number), got {len(self.turns)}")

    def messages(self, image_parts: bool = True) -> list[dict[str, Any]]:
        """Chat-template messages; the image placeholder leads the first user turn."""
        out = []
        for i, text in enumerate(self.turns):
            role = "user" if i % 2 == 0 else "assistant"
            content: list[dict[str, Any]] = []
            if i == 0 and self.image is not None and image_parts:
                content.append({"type": "image"})
            content.append({"type": "text", "text": text})
            out.append({"role": role, "content": content})
        return out


class Engine(Protocol):
    backend: str
    model_label: str

    def generate(self, chats: list[Chat], sampling: Sampling, progress: bool = False) -> Iterator[tuple[Chat, str]]:
        ...


def open_image(chat_id: str, image: Any):
    """The chat's image as RGB; a missing or unreadable file is a ``KitError`` naming the chat."""
    from PIL import Image

    if not isinstance(image, str | Path):
        return image.convert("RGB")
    try:
        with Image.open(image) as opened:
            return opened.convert("RGB")
    except FileNotFoundError:
        raise KitError(f"item {chat_id}: image file {image} not found") from None
    except OSError as err:
        raise KitError(f"item {chat_id}: cannot read image file {image}: {err}") from None


def _check_images(chats: list[Chat]) -> None:
    # Fail before generating anything rather than after hours of it.
    for chat in chats:
        if isinstance(chat.image, str | Path) and not Path(chat.image).is_file():
            raise KitError(f"item {chat.id}: image file {chat.image} not found")


# ------------------------------------------------------------------------------------------ transformers
@contextlib.contextmanager
def _left_padding(tokenizer) -> Iterator[None]:
    # Rows of a batch grow at their right end during generation, so padding must sit on the left.
    before = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = before


class TransformersEngine:
    """Batched generation with a ``kit.models.load``-ed model (or a name/path to load)."""

    backend = "transformers"

    def __init__(self, model: Any, batch_size: int = 16) -> None:
        from kit.evaluate import load_model, model_label

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise KitError(f"transformers engine: batch_size must be a whole number >= 1, not {batch_size!r}")
        self.loaded = load_model(model)
        self.model_label = model_label(self.loaded)
        self.batch_size = batch_size

    def prompt_text(self, chat: Chat) -> str:
        return self.loaded.processor.apply_chat_template(chat.messages(), add_generation_prompt=True, tokenize=False)

    def prompt_tokens(self, chat: Chat) -> int:
        """Length of the chat in tokens, the image counted as its placeholder tokens."""
        processor = self.loaded.processor
        if chat.image is None:
            return len(processor.tokenizer(self.prompt_text(chat))["input_ids"])
        batch = processor(text=[self.prompt_text(chat)], images=[open_image(chat.id, chat.image)], return_tensors="pt")
        return int(batch["input_ids"].shape[1])

    def generate(self, chats: list[Chat], sampling: Sampling, progress: bool = False) -> Iterator[tuple[Chat, str]]:
        from tqdm.auto import tqdm

        _check_images(chats)
        tokenizer = self.loaded.processor.tokenizer
        texts = {id(chat): self.prompt_text(chat) for chat in chats}
        bar = tqdm(total=len(chats), desc=f"generate ({self.backend})", disable=not progress, leave=False)
        # A batch either carries pixel values for every row or for none. Longest first: similar lengths share
        # a batch, and an out-of-memory error shows in the first batch instead of near the end.
        for group in ([c for c in chats if c.image is not None], [c for c in chats if c.image is None]):
            lengths = {id(c): len(tokenizer(texts[id(c)])["input_ids"]) for c in group}
            order = sorted(group, key=lambda c: -lengths[id(c)])
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                outputs = self._generate_batch(batch, [texts[id(c)] for c in batch], sampling)
                yield from zip(batch, outputs, strict=True)
                bar.update(len(batch))
        bar.close()

    def _generate_batch(self, chats: list[Chat], texts: list[str], sampling: Sampling) -> list[str]:
        import torch

        processor = self.loaded.processor
        images = [open_image(c.id, c.image) for c in chats] if chats[0].image is not None else None
        with _left_padding(processor.tokenizer):
            batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
        device = next(self.loaded.model.parameters()).device
        batch = batch.to(device)
        options: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "use_cache": True}
        if sampling.temperature > 0:
            # The batch's ids name its seed, so a resumed run samples a batch of the same items the same way.
            digest = hashlib.sha256(json.dumps([sampling.seed, [c.id for c in chats]]).encode()).digest()
            torch.manual_seed(int.from_bytes(digest[:8], "little"))
            options.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = self.loaded.model.generate(**batch, **options)
        return processor.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


# ------------------------------------------------------------------------------------------ openai
def data_url(chat_id: str, image: Any) -> str:
    """The image as a ``data:image/png;base64,...`` URL (what OpenAI-compatible servers accept inline)."""
    if isinstance(image, str | Path) and str(image).startswith(("http://", "https://", "data:")):
        return str(image)
    buffer = io.BytesIO()
    open_image(chat_id, image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def openai_messages(chat: Chat) -> list[dict[str, Any]]:
    """The chat in OpenAI's wire format: content parts for the user turns, the image as ``image_url``."""
    out = []
    for i, text in enumerate(chat.turns):
        if i % 2:
            out.append({"role": "assistant", "content": text})
            continue
        parts: list[dict[str, Any]] = []
        if i == 0 and chat.image is not None:
            parts.append({"type": "image_url", "image_url": {"url": data_url(chat.id, chat.image)}})
        parts.append({"type": "text", "text": text})
        out.append({"role": "user", "content": parts})
    return out


def post_chat(url: str, body: dict[str, Any], *, api_key: str | None = None, timeout: float = 60.0,
              retries: int = 3, backoff: float = 1.0, what: str = "") -> dict[str, Any]:
    """POST one chat completion. Server errors (5xx), rate limits (429), refused connections and timeouts
    are retried ``retries`` times with exponential back-off; a client error (other 4xx) raises at once."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode()
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            if err.code == 429 or err.code >= 500:
                last_error = err
                continue
            detail = err.read()[:300].decode(errors="replace")
            raise KitError(f"{url} refused {what or 'the request'}: HTTP {err.code} {err.reason} {detail}") from err
        except (urllib.error.URLError, TimeoutError, OSError, json.JSONDecodeError) as err:
            last_error = err
            continue
    raise KitError(f"{url} did not answer{' ' + what if what else ''} after {retries + 1} attempts: {last_error}")


class OpenAIEngine:
    """Chats sent to ``{base_url}/chat/completions``, ``concurrency`` at a time."""

    backend = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 120.0, retries: int = 3, backoff: float = 1.0) -> None:
        if concurrency < 1:
            raise KitError(f"openai engine: concurrency must be >= 1, not {concurrency!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.model_label = f"{model}@{base_url}"
        self.api_key, self.concurrency, self.timeout = api_key, concurrency, timeout
        self.retries, self.backoff = retries, backoff

    def _one(self, chat: Chat, sampling: Sampling) -> str:
        body = {"model": self.model, "messages": openai_messages(chat), "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed}
        answer = post_chat(self.url, body, api_key=self.api_key, timeout=self.timeout, retries=self.retries,
                           backoff=self.backoff, what=f"item {chat.id}")
        try:
            return answer["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as err:
            raise KitError(f"{self.url} answered item {chat.id} without choices[0].message.content: "
                           f"{str(answer)[:200]}") from err

    def generate(self, chats: list[Chat], sampling: Sampling, progress: bool = False) -> Iterator[tuple[Chat, str]]:
        from tqdm.auto import tqdm

        _check_images(chats)
        bar = tqdm(total=len(chats), desc=f"generate ({self.backend})", disable=not progress, leave=False)
        pending = iter(chats)
        with ThreadPoolExecutor(self.concurrency) as pool:
            running = {}
            for chat in _take(pending, self.concurrency):
                running[pool.submit(self._one, chat, sampling)] = chat
            try:
                while running:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        chat = running.pop(future)
                        text = future.result()  # a KitError here stops the run; finished items were yielded
                        for following in _take(pending, 1):
                            running[pool.submit(self._one, following, sampling)] = following
                        bar.update(1)
                        yield chat, text
            finally:
                for future in running:
                    future.cancel()
        bar.close()


def _take(iterator: Iterator[Chat], n: int) -> list[Chat]:
    out = []
    for _ in range(n):
        try:
            out.append(next(iterator))
        except StopIteration:
            break
    return out


# ------------------------------------------------------------------------------------------ vllm
class VLLMEngine:
    """Offline vLLM: ``LLM(model, tensor_parallel_size=...)`` and ``generate`` with ``multi_modal_data``."""

    backend = "vllm"

    def __init__(self, model: str, tensor_parallel_size: int = 1, chunk: int = 256, **llm_options: Any) -> None:
        try:
            import vllm
        except ImportError:
            raise KitError("the vllm backend needs vLLM on a CUDA machine: pip install -e '.[gpu]'") from None
        from transformers import AutoProcessor

        self.model_label = str(model)
        self.chunk = chunk
        self._vllm = vllm
        self.processor = AutoProcessor.from_pretrained(model, trust_remote_code=False)
        self.llm = vllm.LLM(model=str(model), tensor_parallel_size=tensor_parallel_size,
                            limit_mm_per_prompt={"image": 1}, **llm_options)

    def generate(self, chats: list[Chat], sampling: Sampling, progress: bool = False) -> Iterator[tuple[Chat, str]]:
        _check_images(chats)
        params = self._vllm.SamplingParams(max_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                                           top_p=sampling.top_p, seed=sampling.seed)
        # Chunks, so that a killed run keeps every finished chunk.
        for start in range(0, len(chats), self.chunk):
            part = chats[start:start + self.chunk]
            requests = []
            for chat in part:
                prompt = self.processor.apply_chat_template(chat.messages(), add_generation_prompt=True, tokenize=False)
                request: dict[str, Any] = {"prompt": prompt}
                if chat.image is not None:
                    request["multi_modal_data"] = {"image": open_image(chat.id, chat.image)}
                requests.append(request)
            outputs = self.llm.generate(requests, params, use_tqdm=progress)
            for chat, output in zip(part, outputs, strict=True):
                yield chat, output.outputs[0].text


def make_engine(backend: str, model: Any, **options: Any) -> Engine:
    """An engine by name: ``transformers`` (``batch_size``), ``openai`` (``base_url`` required, ``api_key``,
    ``concurrency``, ``timeout``, ``retries``, ``backoff``) or ``vllm`` (``tensor_parallel_size``, any
    ``vllm.LLM`` option). ``model`` is a ``LoadedModel``, a folder or a hub id (for ``openai``: the name
    the server knows the model by)."""
    if backend == "transformers":
        return TransformersEngine(model, **options)
    if backend == "openai":
        if "base_url" not in options:
            raise KitError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return OpenAIEngine(model=str(model), **options)
    if backend == "vllm":
        return VLLMEngine(str(model), **options)
    raise KitError(f"unknown generation backend {backend!r}; choose from {', '.join(BACKENDS)}")
