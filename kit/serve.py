"""``kit serve``: an OpenAI-compatible chat server around the transformers backend, for local models.

    kit serve data/models/tiny-qwen2vl-teacher --port 8000
    # then: make_engine("openai", "tiny-qwen2vl-teacher", base_url="http://127.0.0.1:8000/v1")

vLLM and SGLang serve real checkpoints on GPUs; this server exists so that the ``openai`` backend can be
used and tested against a real HTTP endpoint with the tiny models on a CPU. ``transformers serve`` would
be the natural choice, but it loads processors through ``AutoProcessor``, and the tiny Qwen2-VL's processor
is a shim that needs no torchvision (``kit.models``), so it cannot load them here.

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (non-streaming; ``messages``
with text or content parts, one image as an ``image_url`` data URL in the first user message;
``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``). Requests are served one at
a time (the model is not thread-safe); bad requests get HTTP 400 with the reason.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kit.errors import KitError


class BadRequest(Exception):
    pass


def _decode_image(url: str):
    from PIL import Image

    if not url.startswith("data:") or ";base64," not in url:
        raise BadRequest("image_url must be a data: URL with base64 content (this server reads no files or URLs)")
    try:
        return Image.open(io.BytesIO(base64.b64decode(url.split(";base64,", 1)[1]))).convert("RGB")
    except Exception as err:  # noqa: BLE001 - any decoding failure is the client's
        raise BadRequest(f"image_url does not hold a readable image: {err}") from None


def chat_from_request(body: dict[str, Any]):
    """The ``kit.generate.Chat`` and ``Sampling`` a chat-completions request asks for."""
    from kit.generate import Chat, Sampling

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


def make_server(engine: Any, name: str, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server (not yet serving: call ``serve_forever``, or run it in a thread) answering as model ``name``."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str) -> None:
            self._send(status, {"error": {"message": message, "type": kind}})

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok"})
            elif self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "kit"}]})
            else:
                self._error(404, f"no route {self.path}", "not_found")

        def do_POST(self) -> None:  # noqa: N802
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(404, f"no route {self.path}", "not_found")
                return
            try:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if body.get("stream"):
                    raise BadRequest("streaming is not supported")
                if body.get("model") not in (None, name):
                    self._error(404, f"model {body.get('model')!r} is not served here (this is {name!r})", "not_found")
                    return
                chat, sampling = chat_from_request(body)
            except (BadRequest, json.JSONDecodeError, ValueError) as err:
                self._error(400, str(err), "invalid_request_error")
                return
            try:
                with lock:
                    (_, text), = list(engine.generate([chat], sampling))
            except Exception as err:  # noqa: BLE001 - reported to the client as a server error
                self._error(500, f"{type(err).__name__}: {err}", "server_error")
                return
            self._send(200, {
                "id": f"chatcmpl-{uuid.uuid4().hex[:16]}", "object": "chat.completion", "created": int(time.time()),
                "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            })

    return ThreadingHTTPServer((host, port), Handler)


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="serve a local model over an OpenAI-compatible chat API")
    parser.add_argument("model", help="a model folder (or hub id) for kit.models.load")
    parser.add_argument("--name", help="the model name clients ask for (default: the folder's name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> int:
    from pathlib import Path

    from kit.generate import TransformersEngine

    engine = TransformersEngine(args.model, batch_size=1)
    name = args.name or Path(str(args.model)).name
    server = make_server(engine, name, args.host, args.port)
    print(f"serving {name} on http://{args.host}:{server.server_address[1]}/v1 (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
