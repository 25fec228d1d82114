"""The generation engine: one interface, two backends, and one engine choice for every stage.

::

    from kit.llm.generate import Chat, Sampling, make_engine
    engine = make_engine("transformers", "data/models/tiny-qwen2vl-teacher", batch_size=32)
    for chat, text in engine.generate([Chat("q1", ["How many circles?"], image="a.png")], Sampling()):
        ...

- ``transformers`` (the default, and the tiny profile's): batched, left-padded generation with the KV
  cache, prompts sorted by length so that a batch pads little.
- ``openai``: any OpenAI-compatible chat endpoint (a vLLM or SGLang server, ``kit serve``, a hosted API),
  or several servers serving the same model (``base_url`` a list, or URLs separated by commas): each
  request goes to the least busy server, ``concurrency`` requests at a time per server. Images travel as
  ``data:`` URLs; requests are retried with exponential back-off and have a timeout each. A trained LoRA
  adapter is served by name on top of its base model (``adapter=``): the engine makes sure every server has
  it (``GET /v1/models``, else vLLM's ``POST /v1/load_lora_adapter``) and asks for it by that name, so a
  student is evaluated without merging.

vLLM is used only as a server (``vllm serve <base model> --enable-lora``): it lives in its own environment,
pinned to another torch than the kit's, so the kit never imports it. (An in-process ``vllm`` backend existed
until the servers could serve adapters; asking for it now says what to run instead.)

``EngineChoice`` is the profile's one choice of backend for every generation stage (synthesis, evaluation,
preference sampling, Critic scoring, descriptions, prompting), with the servers serving each base model;
``engine_for(choice, model, adapter=...)`` gives the engine a stage uses, and ``engine_key(choice)`` what a
stage key records of it (nothing for ``transformers``, so the keys of earlier runs stay as they were).

Decoding is the same on every backend: ``decoding_settings`` merges the checkpoint's ``generation_config.json``
(``generation_defaults``) with the stage's ``Sampling`` into one plain dict (``do_sample``, ``temperature``,
``top_p``, ``top_k``, ``repetition_penalty``, ``max_new_tokens``), and each backend sends exactly that:
``generate`` keyword arguments, or request fields. Left to themselves the two differ: transformers keeps the
checkpoint's ``repetition_penalty`` (Qwen2-VL: 1.05), ``vllm serve`` fills unset request fields from the
checkpoint, and other servers use their own defaults. ``engine.decoding(sampling)`` is the dict an engine
uses (the ``openai`` engine adds the adapter it asks for); the stages write it with their outputs.

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
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from kit.core.progress import progress_bars
from kit.errors import KitError

BACKENDS = ("transformers", "openai")

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


def generate_into(path: str | Path, key_fields: Sequence[str], settings: Mapping[str, Any], engine: Any,
                  chats: Mapping[tuple, Chat], sampling: Sampling,
                  make_record: Callable[[tuple, Chat, str], Mapping[str, Any]], *, progress: bool = True,
                  check_stored: Callable[[dict[tuple, dict]], None] | None = None) -> tuple[dict[tuple, dict], int]:
    """The resumable generation loop every generating stage shares: answer each chat of ``chats`` (key ->
    chat) whose key is not yet in the JSONL file ``path`` and append, for each answer, the key fields, then
    ``settings``, then ``make_record(key, chat, text)``. A file written with other ``settings`` is refused
    (``check_resumed_settings``); ``check_stored(stored)`` may refuse it for other reasons. Returns every stored
    record by key (this call's and earlier ones') and how many this call wrote."""
    from kit.core.artifacts import JsonlAppender, check_resumed_settings

    key_fields = tuple(key_fields)
    written = 0
    with JsonlAppender(path, key_fields) as appender:
        stored = {tuple(record[f] for f in key_fields): record for record in appender.records()}
        check_resumed_settings(appender.path, stored.values(), settings, key_fields[0])
        if check_stored is not None:
            check_stored(stored)
        key_of = {chat.id: key for key, chat in chats.items()}
        todo = [chat for key, chat in chats.items() if key not in stored]
        if todo:
            for chat, text in engine.generate(todo, sampling, progress=progress):
                key = key_of[chat.id]
                record = {**dict(zip(key_fields, key, strict=True)), **settings, **make_record(key, chat, text)}
                appender.append(record)
                stored[key] = record
                written += 1
    return stored, written


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
    """``decoding`` as the request fields of an OpenAI-compatible server (``top_k`` and ``repetition_penalty``
    are vLLM's and SGLang's extra fields, the names of ``vllm.SamplingParams``). Top-k off is -1: older vLLM
    and SGLang refuse 0, newer vLLM takes both."""
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


def prompt_text(processor: Any, chat: Chat) -> str:
    """The chat as the model's chat template renders it, ready for the assistant's answer."""
    return processor.apply_chat_template(chat.messages(), add_generation_prompt=True, tokenize=False)


def prompt_tokens(processor: Any, chat: Chat) -> int:
    """Length of the chat in the model's tokens, the image counted as its placeholder tokens. Needs only the
    processor, so a model served elsewhere is measured the same way as a loaded one."""
    if chat.image is None:
        return len(processor.tokenizer(prompt_text(processor, chat))["input_ids"])
    batch = processor(text=[prompt_text(processor, chat)], images=[open_image(chat.id, chat.image)],
                      return_tensors="pt")
    return int(batch["input_ids"].shape[1])


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
    """Batched generation with a ``kit.llm.models.load``-ed model (or a name/path to load)."""

    backend = "transformers"
    # The checkpoint's decoding values (``generation_defaults``), set per instance; this read-only empty one
    # serves an engine made without ``__init__`` (tests that never reach the model).
    defaults: Mapping[str, Any] = MappingProxyType({})

    def __init__(self, model: Any, batch_size: int = 16) -> None:
        from kit.llm.models import load_model, model_label

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
        return prompt_text(self.loaded.processor, chat)

    def prompt_tokens(self, chat: Chat) -> int:
        """Length of the chat in tokens, the image counted as its placeholder tokens."""
        return prompt_tokens(self.loaded.processor, chat)

    def generate(self, chats: list[Chat], sampling: Sampling, progress: bool = False) -> Iterator[tuple[Chat, str]]:
        from tqdm.auto import tqdm

        from kit.core.threads import follow_thread_share

        _check_images(chats)
        tokenizer = self.loaded.processor.tokenizer
        texts = {id(chat): self.prompt_text(chat) for chat in chats}
        bar = tqdm(total=len(chats), desc=f"generate ({self.backend})", disable=not progress_bars(progress), leave=False)
        # A batch either carries pixel values for every row or for none. Longest first: similar lengths share
        # a batch, and an out-of-memory error shows in the first batch instead of near the end.
        for group in ([c for c in chats if c.image is not None], [c for c in chats if c.image is None]):
            lengths = {id(c): len(tokenizer(texts[id(c)])["input_ids"]) for c in group}
            order = sorted(group, key=lambda c: -lengths[id(c)])
            for start in range(0, len(order), self.batch_size):
                follow_thread_share()  # all the threads once a notebook lane beside this one has finished
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
    """POST one chat completion. Server errors (5xx), rate limits (429), answers that are not JSON, refused
    connections and timeouts are retried ``retries`` times with exponential back-off (``http_request``); a
    client error (other 4xx) raises at once."""
    def worth_retrying(status: int, text: str) -> bool:
        return status == 429 or status >= 500 or (status < 400 and _json_or_none(text) is None)

    gave_up = f"{url} did not answer{' ' + what if what else ''} after {retries + 1} attempts"
    try:
        status, text = http_request(url, body, api_key=api_key, timeout=timeout, retries=retries, backoff=backoff,
                                    retry_if=worth_retrying)
    except OSError as err:
        raise KitError(f"{gave_up}: {err.__cause__ or err}") from err
    if status >= 400 and not worth_retrying(status, text):
        raise KitError(f"{url} refused {what or 'the request'}: HTTP {status} {text[:300]}")
    answer = _json_or_none(text)
    if worth_retrying(status, text) or not isinstance(answer, dict):
        raise KitError(f"{gave_up}: HTTP {status} {text[:300]}")
    return answer


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


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


# ------------------------------------------------------------------------------------------ adapters by name
ADAPTER_CONFIG = "adapter_config.json"  # what makes a folder a PEFT adapter


def is_adapter(path: Any) -> bool:
    """Whether ``path`` is a folder holding a PEFT adapter (``adapter_config.json``)."""
    return isinstance(path, str | Path) and (Path(path).expanduser() / ADAPTER_CONFIG).is_file()


def adapter_config(adapter: str | Path) -> dict[str, Any]:
    """The adapter folder's ``adapter_config.json``; a folder without one is a ``KitError`` naming it."""
    path = Path(adapter).expanduser() / ADAPTER_CONFIG
    if not path.is_file():
        raise KitError(f"adapter {adapter} is not a PEFT adapter folder: it has no {ADAPTER_CONFIG}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise KitError(f"{path} is not valid JSON: {err}") from None


def adapter_base(adapter: str | Path) -> str:
    """The base model an adapter was trained on (its ``base_model_name_or_path``)."""
    base = adapter_config(adapter).get("base_model_name_or_path")
    if not base:
        raise KitError(f"adapter {adapter}: {ADAPTER_CONFIG} names no base_model_name_or_path")
    return str(base)


def served_adapter_name(adapter: str | Path) -> str:
    """The name an adapter is served by: its folder's name (in the kit a content-keyed stage folder such as
    ``adapter-1a2b3c4d5e6f``) made safe for a URL and a log line, then 8 hex of its absolute path, so that two
    runs' folders of the same name on one server do not take each other's place. Deterministic: every engine
    on every machine that sees the folder at that path asks for the same name."""
    folder = Path(adapter).expanduser().resolve()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).strip("-.")[:48] or "adapter"
    return f"{stem}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}"


def _same_model(name: Any, model: str) -> bool:
    """Whether ``name`` (a served model's id or root, or a profile's key) names ``model``: the same text, or
    the same local folder (relative paths are the repository root's, as in profiles: ``kit.core.profile``)."""
    from kit.core.paths import resolve_path

    if not isinstance(name, str) or not name:
        return False
    if name == model:
        return True
    here, there = resolve_path(model), resolve_path(name)
    return isinstance(here, Path) and isinstance(there, Path) and here.resolve() == there.resolve()


def http_request(url: str, body: dict[str, Any] | None = None, *, api_key: str | None = None,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 1.0,
                 retry_if: Callable[[int, str], bool] | None = None) -> tuple[int, str]:
    """``GET url`` (or ``POST`` the JSON ``body``): the HTTP status and the answer's text, whatever the status.
    Refused connections and timeouts are retried ``retries`` times with exponential back-off (a server still
    starting up), then raise ``OSError`` (from the last error); so are answers ``retry_if(status, text)`` calls
    passing (the last one is returned). Every HTTP answer is the caller's to judge."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode() if body is not None else None
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            answer = err.code, err.read().decode(errors="replace")
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            last_error, answer = err, None
        if answer is not None:
            if retry_if is None or attempt == retries or not retry_if(*answer):
                return answer
            last_error = None
    raise OSError(f"{url} did not answer after {retries + 1} attempts: {last_error}") from last_error


def _error_text(text: str) -> str:
    """The message of an OpenAI-style error answer (``{"error": {"message": ...}}``, vLLM's ``{"message":
    ...}``), else the text itself, shortened."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()[:300]
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        if payload.get("message"):
            return str(payload["message"])[:300]
    return text.strip()[:300]


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

    Adapters: with ``adapter`` (a PEFT adapter folder trained on ``model``) every request asks for the
    adapter by its name (``served_adapter_name``, or ``adapter_name``) instead of the base model, the way
    ``vllm serve <model> --enable-lora`` serves LoRA adapters; ``model`` stays the base model's served name
    and its ``generation_config`` the decoding defaults (a transformers engine on the adapter folder decodes
    with its base's too). Before generating, ``prepare`` makes sure each server has the adapter: listed by
    ``GET /v1/models`` under that name, or under any name with the folder as its ``root`` (``vllm serve
    --lora-modules NAME=PATH`` preloads it so; that name is then used), or else loaded through vLLM's runtime
    API, ``POST /v1/load_lora_adapter`` with ``{"lora_name", "lora_path"}`` (the folder's absolute path,
    which the server must see: same machine or shared filesystem). A server that cannot is a ``KitError``
    naming it, the adapter and what to start instead.
    """

    backend = "openai"

    def __init__(self, base_url: str | Sequence[str], model: str, api_key: str | None = None,
                 concurrency: int = 8, timeout: float = 120.0, retries: int = 3, backoff: float = 1.0,
                 generation_config: str | Path | None = None, extra_fields: bool = True,
                 adapter: str | Path | None = None, adapter_name: str | None = None) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise KitError(f"openai engine: concurrency must be a whole number >= 1, not {concurrency!r}")
        self.servers = server_urls(base_url)
        self.urls = tuple(server + "/chat/completions" for server in self.servers)
        self.model = model
        self.adapter: str | None = None
        self.adapter_name: str | None = None
        if adapter is not None:
            adapter_config(adapter)  # a folder that is no adapter fails here, before any request
            self.adapter = str(Path(adapter).expanduser().resolve())
            self.adapter_name = adapter_name or served_adapter_name(self.adapter)
        elif adapter_name is not None:
            raise KitError(f"openai engine: adapter_name {adapter_name!r} given without an adapter folder")
        # The name each server knows the model by: the adapter's can differ per server (preloaded by another
        # name, ``prepare``); the body is otherwise the same on every server.
        self.served = {server: self.adapter_name or model for server in self.servers}
        # The label is the model's name alone (with the adapter's), written to every line a stage writes and
        # compared when a file is resumed. The servers are where the work runs, not what it computes: a
        # synthesis started on two servers must resume on four (or on one) serving the same model.
        self.model_label = f"{model}+{self.adapter_name}" if self.adapter_name else model
        self.api_key, self.concurrency, self.timeout = api_key, concurrency, timeout
        self.retries, self.backoff = retries, backoff
        self.extra_fields = extra_fields
        source = generation_config if generation_config is not None else _checkpoint_name(model)
        self.defaults = generation_defaults(source) if source is not None else {}

    def decoding(self, sampling: Sampling) -> dict[str, Any]:
        """``decoding_settings``, plus the adapter asked for (``adapter``) when there is one: the stages write
        this dict with every output and compare it on resume, so two adapters' outputs never share a file."""
        decoding = decoding_settings(self.defaults, sampling)
        return {**decoding, "adapter": self.adapter_name} if self.adapter_name else decoding

    def request_body(self, chat: Chat, sampling: Sampling, server: int = 0) -> dict[str, Any]:
        """The JSON body of the chat's request to server number ``server``: the model (the adapter's name
        when there is one), the messages, the seed and the decoding."""
        fields = vllm_options(self.decoding(sampling))
        if not self.extra_fields:
            fields = {key: value for key, value in fields.items() if key not in ("top_k", "repetition_penalty")}
        return {"model": self.served[self.servers[server]], "messages": openai_messages(chat), **fields,
                "seed": sampling.seed}

    @property
    def total_concurrency(self) -> int:
        """Requests in flight at most: ``concurrency`` per server."""
        return self.concurrency * len(self.servers)

    # ---------------------------------------------------------------- adapters on the servers
    def prepare(self) -> None:
        """Make sure every server serves this engine's adapter (see the class docstring); nothing to do
        without one. ``generate`` calls it first, so that a server restarted between two stages gets the
        adapter again."""
        if self.adapter is None:
            return
        for server in self.servers:
            self.served[server] = self._ensure_adapter(server)

    def _models(self, server: str) -> list[dict[str, Any]]:
        """The model cards a server lists (``GET {server}/models``)."""
        url = server + "/models"
        try:
            status, text = http_request(url, api_key=self.api_key, timeout=self.timeout, retries=self.retries,
                                        backoff=self.backoff)
        except OSError as err:
            raise KitError(f"server {server} is unreachable, so adapter {self.adapter} cannot be served there: "
                           f"{err}. Start `vllm serve {self.model} --enable-lora` there first") from None
        try:
            cards = json.loads(text).get("data") if status == 200 else None
        except (json.JSONDecodeError, AttributeError):
            cards = None
        if not isinstance(cards, list):
            raise KitError(f"server {server} did not list its models (GET {url}: HTTP {status} "
                           f"{_error_text(text)}), so adapter {self.adapter} cannot be checked there; an "
                           "OpenAI-compatible server such as `vllm serve` lists them")
        return [card for card in cards if isinstance(card, dict)]

    def _ensure_adapter(self, server: str) -> str:
        """The name ``server`` serves this engine's adapter by, loading it there when it serves it by none."""
        assert self.adapter is not None and self.adapter_name is not None
        name, path = self.adapter_name, self.adapter
        cards = self._models(server)
        if any(card.get("id") == name for card in cards):
            return name  # loaded earlier, or preloaded under the kit's name
        for card in cards:  # preloaded under a name of the user's choosing (vLLM's root is the adapter's path)
            if card.get("parent") and _same_model(card.get("root"), path):
                return str(card["id"])
        bases = [card for card in cards if not card.get("parent")]
        if not any(_same_model(card.get("id"), self.model) or _same_model(card.get("root"), self.model)
                   for card in bases):
            served = ", ".join(str(card.get("id")) for card in bases) or "no model"
            raise KitError(f"server {server} serves {served}, not {self.model}, the base model of adapter {path}; "
                           f"start `vllm serve {self.model} --enable-lora` there, or list under engine.servers "
                           f"the servers that serve {self.model}")
        rank = adapter_config(path).get("r")
        hint = (f"start `vllm serve {self.model} --enable-lora"
                f"{f' --max-lora-rank {rank}' if isinstance(rank, int) and rank > 16 else ''}` with "
                f"VLLM_ALLOW_RUNTIME_LORA_UPDATING=True in its environment, or preload the adapter with "
                f"`--lora-modules {name}={path}` (the server must see the folder at that path)")
        url = server + "/load_lora_adapter"
        try:
            status, text = http_request(url, {"lora_name": name, "lora_path": path}, api_key=self.api_key,
                                        timeout=self.timeout, retries=self.retries, backoff=self.backoff)
        except OSError as err:
            raise KitError(f"server {server} did not answer loading adapter {name} ({path}): {err}") from None
        if status == 200:
            return name
        message = _error_text(text)
        if status == 400 and "already been loaded" in message:
            return name  # another engine loaded it in the meantime
        if "no adapter found" in message.lower():  # vLLM's LoRAAdapterNotFoundError (HTTP 404)
            raise KitError(f"server {server} does not see adapter {name} at {path} ({message}): run it where that "
                           f"folder is (same machine or a shared filesystem), or preload the adapter with "
                           f"`--lora-modules {name}=<its path there>`")
        if status in (404, 405):  # vLLM adds the route only with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
            raise KitError(f"server {server} cannot load adapters at runtime (POST {url}: HTTP {status}), so "
                           f"adapter {name} ({path}) is not served there: {hint}") from None
        raise KitError(f"server {server} refused to load adapter {name} from {path} (HTTP {status}: {message}): "
                       f"{hint}")

    def _request(self, chat: Chat, sampling: Sampling, server: int, index: int, count: int) -> str:
        body = self.request_body(chat, sampling, server)
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
        if chats:
            self.prepare()
        bar = tqdm(total=len(chats), desc=f"generate ({self.backend})", disable=not progress_bars(progress), leave=False)
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
                        future = pool.submit(self._request, chats[started], sampling, server, started, count)
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


VLLM_REMOVED = ("the in-process vllm backend is gone: vLLM runs in its own environment (it pins another torch "
                "than the kit's) and serves the models. Start `vllm serve <base model> --enable-lora` (with "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True to serve trained adapters by name), then use the openai "
                "backend with its URL (profile: engine.backend: openai and engine.servers: {<base model>: "
                "[http://host:8000/v1]}; make_engine: base_url=...)")


def split_adapter(model: Any, adapter: str | Path | None) -> tuple[str, str | None]:
    """``(base model, adapter folder or None)`` for an engine that serves ``model``: a ``LoadedModel`` gives its
    source and adapter, an adapter folder (``adapter_config.json``) its recorded base and itself."""
    from kit.llm.models import LoadedModel

    if isinstance(model, LoadedModel):
        if adapter is not None and model.adapter is not None:
            raise KitError(f"model {model.source} already carries adapter {model.adapter}; give one adapter")
        return str(model.source), str(adapter) if adapter is not None else model.adapter
    if adapter is None and is_adapter(model):
        return adapter_base(model), str(model)
    return str(model), str(adapter) if adapter is not None else None


def make_engine(backend: str, model: Any, **options: Any) -> Engine:
    """An engine by name: ``transformers`` (``batch_size``) or ``openai`` (``base_url`` required: one server,
    a list of servers or URLs separated by commas; ``adapter``: a LoRA adapter folder to ask for by name;
    ``api_key``, ``concurrency`` per server, ``timeout``, ``retries``, ``backoff``, ``generation_config``,
    ``extra_fields``, ``adapter_name``). ``model`` is a ``LoadedModel``, a folder or a hub id (for ``openai``:
    the name the servers know the base model by; an adapter folder stands for its base model plus itself).
    ``vllm`` is no longer a backend of its own: ``VLLM_REMOVED`` says what replaces it."""
    if backend == "transformers":
        return TransformersEngine(model, **options)
    if backend == "openai":
        if options.get("base_url") is None:
            raise KitError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1, or a list of servers)")
        base, adapter = split_adapter(model, options.pop("adapter", None))
        return OpenAIEngine(model=base, adapter=adapter, **options)
    if backend == "vllm":
        raise KitError(VLLM_REMOVED)
    raise KitError(f"unknown generation backend {backend!r}; choose from {', '.join(BACKENDS)}")


# ------------------------------------------------------------------------------------------ one choice, every stage
def _servers_from_rows(rows: Sequence[Any]) -> dict[str, list[str]]:
    """``engine.servers`` as a profile writes it: notebook parameters are plain literals, so a list of
    ``[base model, server URL, ...]`` rows (a model in several rows gets all their servers)."""
    servers: dict[str, list[str]] = {}
    for number, row in enumerate(rows):
        if (not isinstance(row, list | tuple) or len(row) < 2
                or not all(isinstance(part, str) and part for part in row)):
            raise KitError(f"engine.servers[{number}] must be [base model, server URL, ...], e.g. "
                           f"[Qwen/Qwen2-VL-7B-Instruct, http://127.0.0.1:8000/v1], not {row!r}")
        servers.setdefault(row[0], []).extend(row[1:])
    return servers


@dataclass(frozen=True)
class EngineChoice:
    """How every generation stage generates (the profile's ``engine:`` section).

    ``backend``: ``transformers`` (each stage loads its model, with its adapter, in its own process) or
    ``openai`` (the stages talk to servers). ``servers``: base model (a hub id or folder, as the profile's
    ``models:`` names it) -> the URLs of the servers serving it (``server_urls``: one URL, a list, or URLs
    separated by commas), or the profile's list of ``[base model, URL, ...]`` rows; a stage asks them for the
    base model, or for an adapter trained on it by name (``vllm serve <base model> --enable-lora``). ``concurrency``: requests in flight per server (the openai
    engine's default when None). ``api_key_env``: the environment variable holding the servers' API key, if
    they want one (the key itself stays out of profiles and run records).

    Where the work runs is not what it computes: ``engine_key`` records the backend, never the servers, so a
    stage started on two servers resumes on four."""

    backend: str = "transformers"
    servers: Mapping[str, Any] = field(default_factory=dict)
    concurrency: int | None = None
    api_key_env: str | None = None

    @classmethod
    def from_profile(cls, profile: Any) -> EngineChoice:
        """The profile's ``engine:`` section (transformers when it has none)."""
        return cls(**profile.get("engine", {}))

    def __post_init__(self) -> None:
        if self.backend == "vllm":
            raise KitError(f"engine.backend: {VLLM_REMOVED}")
        if self.backend not in BACKENDS:
            raise KitError(f"engine.backend: unknown generation backend {self.backend!r}; choose from "
                           f"{', '.join(BACKENDS)}")
        servers = {} if self.servers is None else self.servers  # a profile's `servers: null`
        if isinstance(servers, list | tuple):
            servers = _servers_from_rows(servers)
        if not isinstance(servers, Mapping):
            raise KitError(f"engine.servers must map each base model to its server URLs, not "
                           f"{type(servers).__name__} {servers!r}")
        checked: dict[str, tuple[str, ...]] = {}
        for model, urls in servers.items():
            try:
                checked[str(model)] = server_urls(urls)
            except KitError as err:
                raise KitError(f"engine.servers[{model}]: {err}") from None
        # A plain dict of tuples: frozen, compared and copied like the other fields, and its repr readable.
        object.__setattr__(self, "servers", checked)
        if self.concurrency is not None and (isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int)
                                             or self.concurrency < 1):
            raise KitError(f"engine.concurrency must be a whole number >= 1 (or null), not {self.concurrency!r}")
        if self.api_key_env is not None and (not isinstance(self.api_key_env, str) or not self.api_key_env):
            raise KitError(f"engine.api_key_env must name an environment variable (or be null), not "
                           f"{self.api_key_env!r}")
        if self.backend == "openai" and not checked:
            raise KitError("engine.backend openai needs engine.servers: each base model the stages use -> the URLs "
                           "of the servers serving it, e.g. {Qwen/Qwen2-VL-7B-Instruct: [http://gpu1:8000/v1]}")

    def servers_for(self, model: str | Path) -> tuple[str, ...]:
        """The servers serving base model ``model``: its entry in ``servers``, found by its text or, for a
        local folder, by the folder it names (a relative and an absolute path name the same model)."""
        text = str(model)
        if text in self.servers:
            return self.servers[text]
        for key, urls in self.servers.items():
            if _same_model(key, text):
                return urls
        listed = ", ".join(self.servers) or "nothing"
        raise KitError(f"engine.servers names no server for model {text} (it lists {listed}); add "
                       f"`{text}: [http://host:8000/v1]` under engine.servers in the profile, served by "
                       f"`vllm serve {text} --enable-lora`")

    def api_key(self) -> str | None:
        """The API key, read from ``api_key_env`` now (an unset variable is a ``KitError`` naming it)."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise KitError(f"engine.api_key_env names {self.api_key_env}, which is not set in this environment")
        return key


def engine_for(choice: EngineChoice | None, model: Any, *, adapter: str | Path | None = None,
               batch_size: int = 16) -> Engine:
    """The engine a stage generates with: on ``transformers`` a ``TransformersEngine`` on the adapter folder
    when one is given (its base loaded with it), else on ``model``; on ``openai`` an ``OpenAIEngine`` on
    ``choice.servers_for(base model)`` asking for the adapter by name. ``model`` is the base model (a hub id,
    a folder or a ``LoadedModel``), or an adapter folder standing for its base plus itself. ``choice`` None is
    ``EngineChoice()``: transformers, as every stage generated before there was a choice."""
    choice = choice or EngineChoice()
    if choice.backend == "transformers":
        from kit.llm.models import LoadedModel

        target = adapter if adapter is not None else model
        return TransformersEngine(target if isinstance(target, LoadedModel) else str(target), batch_size=batch_size)
    base, adapter = split_adapter(model, adapter)
    options: dict[str, Any] = {"concurrency": choice.concurrency} if choice.concurrency is not None else {}
    return OpenAIEngine(choice.servers_for(base), base, api_key=choice.api_key(), adapter=adapter, **options)


def engine_key(choice: EngineChoice | None) -> dict[str, Any]:
    """What a stage key records of the engine choice: nothing for ``transformers`` (so the stage folders of runs
    made before there was a choice keep their hash), ``{"engine": backend}`` otherwise (a server's numerics
    differ from transformers', so its outputs get folders of their own). Never the servers, the concurrency or
    the key: they say where and how fast the work runs, not what it computes. The model and the adapter are in
    every stage's key already, by content."""
    choice = choice or EngineChoice()
    return {} if choice.backend == "transformers" else {"engine": choice.backend}
