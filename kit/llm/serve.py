"""``kit serve``: an OpenAI-compatible chat server around the transformers backend, for local models.

    kit serve data/models/tiny-qwen2vl-teacher --port 8000
    # then: make_engine("openai", "tiny-qwen2vl-teacher", base_url="http://127.0.0.1:8000/v1")
    kit serve data/models/tiny-qwen2vl-student --enable-lora --lora-modules student=runs/x/adapter-1a2b
    # then: make_engine("openai", <base>, base_url=..., adapter="runs/x/adapter-1a2b")

vLLM and SGLang serve real checkpoints on GPUs; this server exists so that the ``openai`` backend can be
used and tested against a real HTTP endpoint with the tiny models on a CPU. ``transformers serve`` would
be the natural choice, but it loads processors through ``AutoProcessor``, and the tiny Qwen2-VL's processor
is a shim that needs no torchvision (``kit.llm.models``), so it cannot load them here.

It stands in for ``vllm serve <base model> --enable-lora`` where the kit talks to vLLM: LoRA adapters are
served by name on top of the base model, preloaded (``--lora-modules NAME=PATH``) or loaded at runtime
(``POST /v1/load_lora_adapter`` with ``{"lora_name", "lora_path"}``, what vLLM offers with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``; without ``--enable-lora`` it is refused with HTTP 400).
``GET /v1/models`` lists the base model and the adapters as vLLM does (an adapter's card has the base's
name as ``parent`` and its folder as ``root``). A request whose ``model`` is an adapter's name is answered
by the base model with that adapter (PEFT, as ``kit.llm.models.load(adapter)`` opens it: the same answers), any
other by the base model alone.

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (non-streaming; ``messages``
with text or content parts, one image as an ``image_url`` data URL in the first user message;
``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``), ``POST
/v1/load_lora_adapter``. Requests are served one at a time (the model is not thread-safe, and loading an
adapter changes it); bad requests get HTTP 400 with the reason.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kit.errors import KitError


class BadRequest(Exception):
    """A request the client must change: HTTP ``status`` (400 unless said) with the reason."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _decode_image(url: str):
    from PIL import Image

    if not url.startswith("data:") or ";base64," not in url:
        raise BadRequest("image_url must be a data: URL with base64 content (this server reads no files or URLs)")
    try:
        return Image.open(io.BytesIO(base64.b64decode(url.split(";base64,", 1)[1]))).convert("RGB")
    except Exception as err:  # noqa: BLE001 - any decoding failure is the client's
        raise BadRequest(f"image_url does not hold a readable image: {err}") from None


def chat_from_request(body: dict[str, Any]):
    """The ``kit.llm.generate.Chat`` and ``Sampling`` a chat-completions request asks for."""
    from kit.llm.generate import Chat, Sampling

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    turns: list[str] = []
    image = None
    for number, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        expected = "user" if number % 2 == 0 else "assistant"
        if role != expected:
            raise BadRequest(f"messages[{number}] has role {role!r}; this server takes user and assistant turns "
                             "alternating, user first and last (no system message)")
        content = message.get("content")
        if isinstance(content, str):
            turns.append(content)
            continue
        if not isinstance(content, list):
            raise BadRequest(f"messages[{number}].content must be a string or a list of parts")
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind == "image_url":
                if number != 0 or image is not None:
                    raise BadRequest("only one image, in the first user message, is supported")
                url = part.get("image_url", {})
                image = _decode_image(url.get("url", "") if isinstance(url, dict) else str(url))
            else:
                raise BadRequest(f"messages[{number}] has a content part of type {kind!r}")
        turns.append("".join(texts))
    if len(turns) % 2 == 0:
        raise BadRequest("the last message must be the user's")
    try:
        sampling = Sampling(
            max_new_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 256),
            temperature=float(body.get("temperature", 0.0) if body.get("temperature") is not None else 0.0),
            top_p=float(body.get("top_p", 1.0) if body.get("top_p") is not None else 1.0),
            seed=int(body.get("seed") or 0),
        )
    except (KitError, TypeError, ValueError) as err:
        raise BadRequest(str(err)) from None
    return Chat(f"request-{uuid.uuid4().hex[:12]}", turns, image), sampling


class ServedModels:
    """The base model a server answers as (``name``) and, with ``enable_lora``, the LoRA adapters it serves by
    name on top of it. The first adapter wraps the engine's model in a ``peft.PeftModel`` (the engine's model
    is this object's from then on: give the server a model of its own); a request for an adapter activates
    it, a request for the base model runs with every adapter disabled. Not thread-safe: the server holds its
    lock around every call."""

    def __init__(self, engine: Any, name: str, *, enable_lora: bool = False,
                 lora_modules: Mapping[str, str | Path] | None = None) -> None:
        self.engine, self.name, self.enable_lora = engine, name, enable_lora
        self.adapters: dict[str, str] = {}  # served name -> the adapter folder (absolute)
        loaded = getattr(engine, "loaded", None)
        self.root = str(getattr(loaded, "source", name))
        if lora_modules and not enable_lora:
            raise KitError("--lora-modules needs --enable-lora (as for vllm serve)")
        if enable_lora and (loaded is None or getattr(loaded, "adapter", None)):
            raise KitError(f"--enable-lora serves adapters on a base model; {name} is "
                           f"{'already an adapter (serve its base model)' if loaded is not None else 'not a loaded model'}")
        for lora_name, path in (lora_modules or {}).items():
            try:
                self.load_adapter(lora_name, str(path))
            except BadRequest as err:
                raise KitError(f"--lora-modules {lora_name}={path}: {err}") from None

    def cards(self) -> list[dict[str, Any]]:
        """``/v1/models``' list, as vLLM writes it: the base model, then each adapter with its ``parent``."""
        created = int(time.time())
        base = {"id": self.name, "object": "model", "created": created, "owned_by": "kit", "root": self.root,
                "parent": None}
        return [base] + [{"id": lora_name, "object": "model", "created": created, "owned_by": "kit", "root": path,
                          "parent": self.name} for lora_name, path in self.adapters.items()]

    def load_adapter(self, lora_name: Any, lora_path: Any) -> None:
        """Serve the adapter in folder ``lora_path`` as ``lora_name`` (vLLM's refusals, as ``BadRequest``)."""
        from kit.llm.generate import ADAPTER_CONFIG

        if not self.enable_lora:
            raise BadRequest("LoRA is not enabled on this server: start it with --enable-lora")
        if not isinstance(lora_name, str) or not lora_name or not isinstance(lora_path, str) or not lora_path:
            raise BadRequest("Both 'lora_name' and 'lora_path' must be provided.")
        if lora_name in self.adapters or lora_name == self.name:
            raise BadRequest(f"The lora adapter '{lora_name}' has already been loaded.")
        folder = Path(lora_path).expanduser()
        if not (folder / ADAPTER_CONFIG).is_file():
            raise BadRequest(f"Loading lora {lora_name} failed: No adapter found for {lora_path}", status=404)
        from peft import PeftModel

        model = self.engine.loaded.model
        device = next(model.parameters()).device
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(str(folder), adapter_name=lora_name)
            else:
                # What kit.llm.models.load does for an adapter folder, under the served name.
                model = PeftModel.from_pretrained(model, str(folder), adapter_name=lora_name)
        except Exception as err:  # noqa: BLE001 - an adapter that does not fit this model is the client's
            if isinstance(model, PeftModel) and lora_name in model.peft_config:
                model.delete_adapter(lora_name)  # what a failed load left half made; the others serve on
            # A size mismatch lists every tensor: the first lines say what is wrong.
            detail = " ".join(str(err).split("\n")[:2])[:400]
            raise BadRequest(f"Loading lora {lora_name} failed: {type(err).__name__}: {detail}") from None
        model.to(device)
        model.eval()
        self.engine.loaded.model = model
        self.adapters[lora_name] = str(folder.resolve())

    def generate(self, model_name: Any, chat: Any, sampling: Any) -> str:
        """The answer of ``model_name`` (the base model's name, an adapter's, or None for the base)."""
        if model_name is not None and model_name != self.name and model_name not in self.adapters:
            served = ", ".join([self.name, *self.adapters])
            raise BadRequest(f"The model `{model_name}` does not exist: it is not served here (this server serves "
                             f"{served})", status=404)
        model = self.engine.loaded.model
        if not self.adapters:
            (_, text), = list(self.engine.generate([chat], sampling))
            return text
        if model_name in self.adapters:
            model.set_adapter(model_name)
            (_, text), = list(self.engine.generate([chat], sampling))
            return text
        with model.disable_adapter():
            (_, text), = list(self.engine.generate([chat], sampling))
        return text


def make_server(engine: Any, name: str, host: str = "127.0.0.1", port: int = 8000, *, enable_lora: bool = False,
                lora_modules: Mapping[str, str | Path] | None = None) -> ThreadingHTTPServer:
    """A server (not yet serving: call ``serve_forever``, or run it in a thread) answering as model ``name``,
    and with ``enable_lora`` as each adapter it serves (``lora_modules``: name -> adapter folder, preloaded;
    more through ``POST /v1/load_lora_adapter``). With adapters the engine's model becomes the server's."""
    lock = threading.Lock()
    served = ServedModels(engine, name, enable_lora=enable_lora, lora_modules=lora_modules)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def _send(self, status: int, payload: dict[str, Any] | str) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload)
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8" if isinstance(payload, str)
                             else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str) -> None:
            self._send(status, {"error": {"message": message, "type": kind, "code": status}})

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            return body

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok"})
            elif self.path.rstrip("/") == "/v1/models":
                with lock:
                    cards = served.cards()
                self._send(200, {"object": "list", "data": cards})
            else:
                self._error(404, f"no route {self.path}", "not_found")

        def do_POST(self) -> None:  # noqa: N802
            route = self.path.rstrip("/")
            if route == "/v1/load_lora_adapter":
                self._load_adapter()
            elif route == "/v1/chat/completions":
                self._chat()
            else:
                self._error(404, f"no route {self.path}", "not_found")

        def _load_adapter(self) -> None:
            try:
                body = self._body()
                with lock:
                    served.load_adapter(body.get("lora_name"), body.get("lora_path"))
            except BadRequest as err:
                self._error(err.status, str(err), "NotFoundError" if err.status == 404 else "BadRequestError")
                return
            except (json.JSONDecodeError, ValueError) as err:
                self._error(400, str(err), "BadRequestError")
                return
            # vLLM answers a loaded adapter with this plain text.
            self._send(200, f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

        def _chat(self) -> None:
            try:
                body = self._body()
                if body.get("stream"):
                    raise BadRequest("streaming is not supported")
                chat, sampling = chat_from_request(body)
            except (BadRequest, json.JSONDecodeError, ValueError) as err:
                self._error(getattr(err, "status", 400), str(err), "invalid_request_error")
                return
            model_name = body.get("model")
            try:
                with lock:
                    text = served.generate(model_name, chat, sampling)
            except BadRequest as err:
                self._error(err.status, str(err), "not_found" if err.status == 404 else "invalid_request_error")
                return
            except Exception as err:  # noqa: BLE001 - reported to the client as a server error
                self._error(500, f"{type(err).__name__}: {err}", "server_error")
                return
            self._send(200, {
                "id": f"chatcmpl-{uuid.uuid4().hex[:16]}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name or name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            })

    return ThreadingHTTPServer((host, port), Handler)


def lora_modules_option(values: list[str] | None) -> dict[str, str]:
    """``--lora-modules NAME=PATH ...`` as ``{name: path}`` (vLLM's form); anything else is a ``KitError``."""
    modules: dict[str, str] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise KitError(f"--lora-modules takes NAME=PATH (an adapter folder served as NAME), not {value!r}")
        if name.strip() in modules:
            raise KitError(f"--lora-modules names {name.strip()!r} twice")
        modules[name.strip()] = path.strip()
    return modules


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="serve a local model over an OpenAI-compatible chat API")
    parser.add_argument("model", help="a model folder (or hub id) for kit.llm.models.load")
    parser.add_argument("--name", help="the model name clients ask for (default: the folder's name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--enable-lora", action="store_true",
                        help="serve LoRA adapters by name on top of MODEL (as vllm serve --enable-lora); adapters "
                             "load at runtime through POST /v1/load_lora_adapter")
    parser.add_argument("--lora-modules", nargs="+", metavar="NAME=PATH",
                        help="adapters to serve from the start, each as NAME (needs --enable-lora)")
    parser.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> int:
    from kit.llm.generate import TransformersEngine

    modules = lora_modules_option(args.lora_modules)
    if modules and not args.enable_lora:
        raise KitError("--lora-modules needs --enable-lora (as for vllm serve)")
    engine = TransformersEngine(args.model, batch_size=1)
    name = args.name or Path(str(args.model)).name
    server = make_server(engine, name, args.host, args.port, enable_lora=args.enable_lora, lora_modules=modules)
    adapters = f" with adapters {', '.join(modules)}" if modules else (" (LoRA enabled)" if args.enable_lora else "")
    print(f"serving {name}{adapters} on http://{args.host}:{server.server_address[1]}/v1 (Ctrl-C to stop)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
