"""The generation engine: one interface, three backends.

::

    from kit.generate import Chat, Sampling, make_engine
    engine = make_engine("transformers", "data/models/tiny-qwen2vl-teacher", batch_size=32)
    for chat, text in engine.generate([Chat("q1", ["How many circles?"], image="a.png")], Sampling()):
        ...

- ``transformers`` (the default, and the tiny profile's): batched, left-padded generation with the KV
  cache, prompts sorted by length so that a batch pads little.
- ``openai``: any OpenAI-compatible chat endpoint (a vLLM or SGLang server, ``kit serve``, a hosted API),
  or several servers serving the same model (``base_url`` a list, or URLs separated by commas): each
  request goes to the least busy server, ``concurrency`` requests at a time per server. Images travel as
  ``data:`` URLs; requests are retried with exponential back-off and have a timeout each.
- ``vllm``: offline ``vllm.LLM.generate`` with ``multi_modal_data``, for synthesis on several GPUs
  (``tensor_parallel_size``). Imported only when chosen; it is in the ``gpu`` extra.

Decoding is the same on every backend: ``decoding_settings`` merges the checkpoint's ``generation_config.json``
(``generation_defaults``) with the stage's ``Sampling`` into one plain dict (``do_sample``, ``temperature``,
``top_p``, ``top_k``, ``repetition_penalty``, ``max_new_tokens``), and each backend sends exactly that:
``generate`` keyword arguments, ``vllm.SamplingParams``, or request fields. Left to themselves the three
differ: transformers keeps the checkpoint's ``repetition_penalty`` (Qwen2-VL: 1.05), ``vllm serve`` fills
unset request fields from the checkpoint, offline vLLM uses its own defaults (1.0). ``engine.decoding(sampling)``
is the dict an engine uses; the stages write it with their outputs.

``generate`` yields ``(chat, text)`` as results arrive (batch by batch, or request by request; the
``openai`` backend in input order), so the caller can write each one at once and a killed run loses at most
what was in flight.

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
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from kit.errors import KitError

BACKENDS = ("transformers", "openai", "vllm")

logger = logging.getLogger(__name__)


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

    def decoding(self, sampling: Sampling) -> dict[str, Any]:
        ...


# ------------------------------------------------------------------------------------------ decoding
# What a checkpoint's generation_config may set that the kit carries to every backend.
CHECKPOINT_KEYS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")
# Settings transformers would apply from generation_config on its own but that the kit does not pass to vLLM
# or a server, with their neutral values: a checkpoint setting one otherwise makes the backends differ.
UNCARRIED_KEYS = {"min_p": 0.0, "typical_p": 1.0, "no_repeat_ngram_size": 0, "num_beams": 1, "min_new_tokens": 0,
                  "min_length": 0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}


def generation_defaults(source: Any) -> dict[str, Any]:
    """The decoding values a checkpoint's ``generation_config.json`` sets (``CHECKPOINT_KEYS``; unset ones are
    left out). ``source``: a ``transformers.GenerationConfig``, a model folder or a hub id. A folder without the
    file gives ``{}``; a hub id that cannot be read gives ``{}`` with a warning (the kit's neutral values then
    apply, on every backend alike). A setting among ``UNCARRIED_KEYS`` is warned about."""
    from transformers import GenerationConfig

    if isinstance(source, GenerationConfig):
        config = source
    else:
        folder = Path(str(source)).expanduser()
        if folder.is_dir() and not (folder / "generation_config.json").is_file():
            return {}
        try:
            config = GenerationConfig.from_pretrained(str(folder) if folder.is_dir() else str(source))
        except (OSError, ValueError) as err:
            logger.warning("cannot read the generation_config of %s (%s); decoding with the kit's defaults "
                           "(repetition_penalty 1.0)", source, err)
            return {}
    uncarried = {key: getattr(config, key, None) for key in UNCARRIED_KEYS}
    uncarried = {key: value for key, value in uncarried.items() if value is not None and value != UNCARRIED_KEYS[key]}
    if uncarried:
        logger.warning("the generation_config of %s sets %s, which only the transformers backend applies; "
                       "the backends will decode differently", source, uncarried)
    values = {key: getattr(config, key, None) for key in CHECKPOINT_KEYS}
    return {key: value for key, value in values.items() if value is not None}


def decoding_settings(defaults: Mapping[str, Any] | None, sampling: Sampling) -> dict[str, Any]:
    """The effective decoding of a request, one plain dict that every backend takes: ``do_sample``,
    ``temperature``, ``top_p``, ``top_k`` (0: off), ``repetition_penalty``, ``max_new_tokens``.

    ``defaults`` (``generation_defaults``) gives ``repetition_penalty`` (1.0 when unset): it shapes the
    answer at any temperature, and the authors' code decodes with it. ``sampling`` (the stage's settings)
    decides the rest. Temperature 0 is greedy on every backend. At a temperature above 0 the stage's
    ``top_p`` applies and top-k is off, whatever the checkpoint says: Qwen2-VL ships ``top_k 1,
    top_p 0.001`` (near-greedy), which would make every sample the same answer."""
    penalty = float((defaults or {}).get("repetition_penalty") or 1.0)
    if sampling.temperature > 0:
        return {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0,
                "repetition_penalty": penalty, "max_new_tokens": sampling.max_new_tokens}
    # Greedy ignores temperature, top_p and top_k: they are written neutral so the record says what applied.
    return {"do_sample": False, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": penalty,
            "max_new_tokens": sampling.max_new_tokens}


def transformers_options(decoding: Mapping[str, Any]) -> dict[str, Any]:
    """``decoding`` as ``model.generate`` keyword arguments."""
    options = {"max_new_tokens": decoding["max_new_tokens"], "do_sample": decoding["do_sample"],
               "repetition_penalty": decoding["repetition_penalty"]}
    if decoding["do_sample"]:
        options.update(temperature=decoding["temperature"], top_p=decoding["top_p"], top_k=decoding["top_k"])
    else:
        # None leaves the checkpoint's sampling values in place, unused when not sampling; neutral values
        # would only make transformers warn that sampling flags are set without do_sample.
        options.update(temperature=None, top_p=None, top_k=None)
    return options


def vllm_options(decoding: Mapping[str, Any]) -> dict[str, Any]:
    """``decoding`` as ``vllm.SamplingParams`` keyword arguments (the same names serve as vLLM's and
    SGLang's extra request fields). Top-k off is -1: older vLLM and SGLang refuse 0, newer vLLM takes both."""
    return {"max_tokens": decoding["max_new_tokens"], "temperature": decoding["temperature"],
            "top_p": decoding["top_p"], "top_k": decoding["top_k"] or -1,
            "repetition_penalty": decoding["repetition_penalty"]}


def engine_decoding(engine: Any, sampling: Sampling) -> dict[str, Any] | None:
    """``engine.decoding(sampling)``, or None for an engine that does not say (a test's scripted engine)."""
    decoding = getattr(engine, "decoding", None)
    return decoding(sampling) if callable(decoding) else None


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
    # The checkpoint's decoding values (``generation_defaults``), set per instance; this read-only empty one
    # serves an engine made without ``__init__`` (tests that never reach the model).
    defaults: Mapping[str, Any] = MappingProxyType({})

    def __init__(self, model: Any, batch_size: int = 16) -> None:
        from kit.evaluate import load_model, model_label

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise KitError(f"transformers engine: batch_size must be a whole number >= 1, not {batch_size!r}")
        self.loaded = load_model(model)
        self.model_label = model_label(self.loaded)
        self.batch_size = batch_size
        # The loaded model's generation_config is its checkpoint's file (the base model's, under an adapter).
        config = getattr(self.loaded.model, "generation_config", None)
        self.defaults = generation_defaults(config) if config is not None else {}

    def decoding(self, sampling: Sampling) -> dict[str, Any]:
        return decoding_settings(self.defaults, sampling)

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
        options = {**transformers_options(self.decoding(sampling)), "use_cache": True}
        if options["do_sample"]:
            # The batch's ids name its seed, so a resumed run samples a batch of the same items the same way.
            digest = hashlib.sha256(json.dumps([sampling.seed, [c.id for c in chats]]).encode()).digest()
            torch.manual_seed(int.from_bytes(digest[:8], "little"))
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


def server_urls(base_url: str | Sequence[str] | None) -> tuple[str, ...]:
    """The servers of an ``openai`` engine: one URL, a list or tuple of URLs, or URLs separated by commas
    (``"http://h1:8000/v1,http://h2:8000/v1"``), each without its trailing ``/``. A missing or empty value,
    a URL that is not ``http(s)://host...``, and a server listed twice are a ``KitError`` naming the value."""
    if base_url is None:
        raise KitError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1, or a list of servers)")
    if isinstance(base_url, str):
        parts: list[Any] = [part.strip() for part in base_url.split(",")]
    elif isinstance(base_url, list | tuple):
        parts = [part.strip() if isinstance(part, str) else part for part in base_url]
    else:
        raise KitError(f"openai engine: base_url must be a URL, a list of URLs or URLs separated by commas, "
                       f"not {type(base_url).__name__} {base_url!r}")
    if not parts:
        raise KitError(f"openai engine: base_url {base_url!r} names no server; name at least one")
    urls: list[str] = []
    for part in parts:
        if not isinstance(part, str) or not part:
            raise KitError(f"openai engine: base_url {base_url!r} holds an empty or non-text server "
                           f"{part!r}; give http(s) URLs such as http://127.0.0.1:8000/v1")
        split = urllib.parse.urlsplit(part)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise KitError(f"openai engine: server URL {part!r} (in base_url {base_url!r}) is not an http(s) URL "
                           "with a host, such as http://127.0.0.1:8000/v1")
        url = part.rstrip("/")
        if url in urls:
            raise KitError(f"openai engine: server {url} is listed twice in base_url {base_url!r}")
        urls.append(url)
    return tuple(urls)


def _checkpoint_name(model: str) -> str | None:
    """``model`` when it can name a checkpoint (an existing folder, or ``owner/name`` like a hub id); a served
    name such as ``gpt-4o`` or ``tiny-gen`` names none."""
    if Path(model).expanduser().is_dir():
        return model
    return model if model.count("/") == 1 and not model.startswith((".", "/")) else None


# How far ahead of the oldest unanswered request new requests may start, in multiples of the total
# concurrency: answers are yielded in input order, so this bounds the answers held back behind a slow one
# (what a kill would lose) while letting the other servers work on.
LOOKAHEAD = 8


class OpenAIEngine:
    """Chats sent to ``{base_url}/chat/completions`` on one server or several serving the same model.

    ``base_url``: one URL, a list or tuple of URLs, or URLs separated by commas (``server_urls``).
    ``concurrency`` counts per server: ``concurrency * len(servers)`` requests run at once, each sent to
    the server with the fewest requests in flight (round-robin among equals), so no server has more than
    ``concurrency``. Answers are yielded in input order and do not depend on the server count: every
    server receives the same request body for a chat. A request that still fails after its retries stops
    the run with a ``KitError`` naming the server and the request's index; the requests before it are
    yielded first, none after it is.

    Decoding: ``generation_config`` names the folder or hub id whose ``generation_config.json`` holds the
    model's decoding defaults (default: ``model`` when it is a folder or looks like a hub id; otherwise none).
    Every request carries the whole ``decoding_settings`` dict, so a vLLM server's own defaults never apply:
    ``max_tokens``, ``temperature``, ``top_p``, and, when ``extra_fields``, ``top_k`` and
    ``repetition_penalty`` as plain JSON keys (what the OpenAI client's ``extra_body`` sends; vLLM and SGLang
    read them, ``kit serve`` applies its model's own). OpenAI's own API refuses them: ``extra_fields=False``.
    """

    backend = "openai"

    def __init__(self, base_url: str | Sequence[str], model: str, api_key: str | None = None,
                 concurrency: int = 8, timeout: float = 120.0, retries: int = 3, backoff: float = 1.0,
                 generation_config: str | Path | None = None, extra_fields: bool = True) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise KitError(f"openai engine: concurrency must be a whole number >= 1, not {concurrency!r}")
        self.servers = server_urls(base_url)
        self.urls = tuple(server + "/chat/completions" for server in self.servers)
        self.url = self.urls[0]  # the first server's endpoint, as before there could be several
        self.model = model
        # The label is the model's name alone, written to every line a synthesis writes and compared when a
        # file is resumed. The servers are where the work runs, not what it computes: a synthesis started on
        # two servers must resume on four (or on one) serving the same model. Earlier versions wrote
        # ``model@base_url``; ``accepts_label`` lets a file written so be resumed.
        self.model_label = model
        self.api_key, self.concurrency, self.timeout = api_key, concurrency, timeout
        self.retries, self.backoff = retries, backoff
        self.extra_fields = extra_fields
        source = generation_config if generation_config is not None else _checkpoint_name(model)
        self.defaults = generation_defaults(source) if source is not None else {}

    def decoding(self, sampling: Sampling) -> dict[str, Any]:
        return decoding_settings(self.defaults, sampling)

    def request_body(self, chat: Chat, sampling: Sampling) -> dict[str, Any]:
        """The JSON body of the chat's request: the model, the messages, the seed and the decoding."""
        fields = vllm_options(self.decoding(sampling))
        if not self.extra_fields:
            fields = {key: value for key, value in fields.items() if key not in ("top_k", "repetition_penalty")}
        return {"model": self.model, "messages": openai_messages(chat), **fields, "seed": sampling.seed}

    def accepts_label(self, label: Any) -> bool:
        """Whether ``label``, read from a file being resumed, names this engine's model: today's label, or a
        ``model@http(s)://...`` one that earlier versions wrote, whichever server it named."""
        if label == self.model_label:
            return True
        prefix = f"{self.model}@"
        return isinstance(label, str) and label.startswith(prefix) \
            and label[len(prefix):].startswith(("http://", "https://"))

    @property
    def total_concurrency(self) -> int:
        """Requests in flight at most: ``concurrency`` per server."""
        return self.concurrency * len(self.servers)

    def _one(self, chat: Chat, sampling: Sampling, server: int, index: int, count: int) -> str:
        body = self.request_body(chat, sampling)
        url, where = self.urls[server], f"server {self.servers[server]}, request #{index} of {count}"
        try:
            answer = post_chat(url, body, api_key=self.api_key, timeout=self.timeout, retries=self.retries,
                               backoff=self.backoff, what=f"item {chat.id}")
        except KitError as err:
            raise KitError(f"{where}: {err}") from err
        try:
            return answer["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as err:
            raise KitError(f"{where}: {url} answered item {chat.id} without choices[0].message.content: "
                           f"{str(answer)[:200]}") from err

    def generate(self, chats: list[Chat], sampling: Sampling, progress: bool = False) -> Iterator[tuple[Chat, str]]:
        from tqdm.auto import tqdm

        _check_images(chats)
        bar = tqdm(total=len(chats), desc=f"generate ({self.backend})", disable=not progress, leave=False)
        total, count = self.total_concurrency, len(chats)
        busy = [0] * len(self.servers)
        running: dict[Future[str], tuple[int, int]] = {}  # future -> (request index, server index)
        answers: dict[int, str] = {}  # finished, waiting for the requests before them
        failure: tuple[int, BaseException] | None = None  # the earliest failed request
        started = head = turn = 0  # requests started; the next to yield; where the round-robin resumes
        with ThreadPoolExecutor(total) as pool:
            try:
                while head < count:
                    while (failure is None and started < count and len(running) < total
                           and started < head + LOOKAHEAD * total):
                        server = min(range(len(busy)), key=lambda s: (busy[s], (s - turn) % len(busy)))
                        turn = server + 1
                        busy[server] += 1
                        future = pool.submit(self._one, chats[started], sampling, server, started, count)
                        running[future] = (started, server)
                        started += 1
                    if failure is not None and head == failure[0]:
                        raise failure[1]
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        index, server = running.pop(future)
                        busy[server] -= 1
                        error = future.exception()
                        if error is None:
                            answers[index] = future.result()
                        elif failure is None or index < failure[0]:
                            failure = (index, error)
                    while head in answers:
                        yield chats[head], answers.pop(head)
                        bar.update(1)
                        head += 1
            finally:
                for future in running:
                    future.cancel()
        bar.close()


# ------------------------------------------------------------------------------------------ vllm
class VLLMEngine:
    """Offline vLLM: ``LLM(model, tensor_parallel_size=...)`` and ``generate`` with ``multi_modal_data``.

    ``SamplingParams`` are built from ``decoding_settings`` with every field set, so the checkpoint's
    ``repetition_penalty`` applies as on the other backends (vLLM applies generation_config offline only
    through ``get_default_sampling_params``)."""

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
        self.defaults = generation_defaults(model)
        self.llm = vllm.LLM(model=str(model), tensor_parallel_size=tensor_parallel_size,
                            limit_mm_per_prompt={"image": 1}, **llm_options)

    def decoding(self, sampling: Sampling) -> dict[str, Any]:
        return decoding_settings(self.defaults, sampling)

    def generate(self, chats: list[Chat], sampling: Sampling, progress: bool = False) -> Iterator[tuple[Chat, str]]:
        _check_images(chats)
        params = self._vllm.SamplingParams(**vllm_options(self.decoding(sampling)), seed=sampling.seed)
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
    """An engine by name: ``transformers`` (``batch_size``), ``openai`` (``base_url`` required: one server,
    a list of servers or URLs separated by commas; ``api_key``, ``concurrency`` per server, ``timeout``,
    ``retries``, ``backoff``, ``generation_config``, ``extra_fields``) or ``vllm`` (``tensor_parallel_size``,
    any ``vllm.LLM`` option). ``model`` is a ``LoadedModel``, a folder or a hub id (for ``openai``: the name the
    servers know the model by)."""
    if backend == "transformers":
        return TransformersEngine(model, **options)
    if backend == "openai":
        if options.get("base_url") is None:
            raise KitError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1, or a list of servers)")
        return OpenAIEngine(model=str(model), **options)
    if backend == "vllm":
        return VLLMEngine(str(model), **options)
    raise KitError(f"unknown generation backend {backend!r}; choose from {', '.join(BACKENDS)}")
