"""The LLM callables for answer extraction and judging: a local model, and an OpenAI-compatible server
(a real HTTP server on loopback), including server errors, timeouts and malformed answers."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kit import llm, models
from kit.benchmarks import mathvista
from kit.errors import KitError


class ChatServer:
    """A loopback chat-completions server whose behaviour per request is scripted."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body, self.headers.get("Authorization")))
                action = outer.script.pop(0) if outer.script else ("ok", "")
                kind, value = action
                if kind == "sleep":
                    threading.Event().wait(value)
                    kind, value = "ok", "late"
                if kind == "status":
                    self.send_response(value)
                    self.end_headers()
                    return
                payload = {"choices": [{"message": {"role": "assistant", "content": value}}]} if kind == "ok" else value
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_openai_chat_sends_the_prompt_and_reads_the_answer():
    with ChatServer([("ok", "42")]) as server:
        chat = llm.openai_chat(server.url, "judge-model", api_key="secret")
        assert chat("Extract the answer") == "42"
    path, body, auth = server.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer secret"
    assert body["model"] == "judge-model" and body["messages"] == [{"role": "user", "content": "Extract the answer"}]
    assert body["temperature"] == 0.0


def test_server_errors_are_retried_then_succeed():
    with ChatServer([("status", 503), ("status", 500), ("ok", "B")]) as server:
        assert llm.openai_chat(server.url, "m", backoff=0.01)("q") == "B"
    assert len(server.requests) == 3


def test_timeout_is_retried_and_finally_reported():
    with ChatServer([("sleep", 1.0), ("sleep", 1.0)]) as server:
        chat = llm.openai_chat(server.url, "m", timeout=0.2, retries=1, backoff=0.01)
        with pytest.raises(KitError, match="did not answer after 2 attempts"):
            chat("q")


def test_client_error_and_malformed_answer_fail_at_once():
    with ChatServer([("status", 401), ("raw", {"error": "nope"})]) as server:
        chat = llm.openai_chat(server.url, "m", backoff=0.01)
        with pytest.raises(KitError, match="HTTP 401"):
            chat("q")
        with pytest.raises(KitError, match="without choices"):
            chat("q")
    assert len(server.requests) == 2


def test_mathvista_extractor_through_the_endpoint():
    record = {"question_type": "free_form", "answer_type": "integer", "choices": None, "precision": None,
              "answer": "7", "query": "How many?", "pid": "1"}
    with ChatServer([("ok", "7")]) as server:
        extraction = mathvista.extract("I think there are seven of them.", record, llm=llm.openai_chat(server.url, "m"))
    assert extraction == "7" and mathvista.is_correct(extraction, record)
    assert "Extracted answer:" in server.requests[0][1]["messages"][0]["content"]


def test_local_chat_on_a_tiny_model(tmp_path):
    tokenizer = models.train_tokenizer(["The answer is 3."] * 20, models.QWEN2VL, 300)
    model, processor = models.build_tiny(models.QWEN2VL, tokenizer, models.TinySize(hidden=32, ffn=64))
    models.save(model, processor, tmp_path / "m")
    chat = llm.local_chat(str(tmp_path / "m"), max_new_tokens=4)
    answer = chat("Extract the answer")
    assert isinstance(answer, str) and answer == chat("Extract the answer")  # greedy: deterministic
