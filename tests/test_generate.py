"""The generation engine: batched transformers generation, the openai backend against a real loopback
server (``kit serve``) with server errors and timeouts injected, the vllm guard, ``kit bench generation``."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fakes import random_tiny_qwen2vl
from PIL import Image

from kit import models
from kit.errors import KitError
from kit.generate import (
    Chat,
    OpenAIEngine,
    Sampling,
    TransformersEngine,
    data_url,
    make_engine,
    openai_messages,
)
from kit.serve import make_server

TOKENS = 10


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    texts = ["How many red circles are there?", "Step 1: count them.", "The answer is 3.", "Is it blue? yes no"]
    return random_tiny_qwen2vl(tmp_path_factory.mktemp("model") / "tiny-gen", texts * 20, vocab=300)


@pytest.fixture(scope="module")
def engine(model_dir):
    return TransformersEngine(models.load(model_dir, device="cpu"), batch_size=4)


@pytest.fixture(scope="module")
def chats(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        path = folder / f"{i}.png"
        Image.new("RGB", (112, 112), colour).save(path)
        paths.append(str(path))
    return [
        Chat("a", ["How many red circles are there?"], paths[0]),
        Chat("b", ["Is it blue?"], paths[1]),
        Chat("c", ["How many red circles are there? Step 1"], paths[2]),
        Chat("d", ["How many red circles are there?", "Step 1: count them.", "Is it blue?"], paths[0]),
        Chat("e", ["Is it blue? yes no"]),  # text only
        Chat("f", ["The answer is"], paths[1]),
    ]


def test_chat_turns_must_end_with_the_user():
    with pytest.raises(KitError, match="odd number"):
        Chat("x", ["q", "a"])
    messages = Chat("x", ["q", "a", "r"], image="i.png").messages()
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"][0] == {"type": "image"} and len(messages[2]["content"]) == 1


def test_sampling_values_are_checked():
    for bad in ({"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}):
        with pytest.raises(KitError, match="sampling"):
            Sampling(**bad)


def test_batched_generation_equals_one_at_a_time(engine, chats):
    greedy = Sampling(max_new_tokens=TOKENS)
    batched = dict((c.id, t) for c, t in engine.generate(chats, greedy))
    single_engine = TransformersEngine(engine.loaded, batch_size=1)
    single = dict((c.id, t) for c, t in single_engine.generate(chats, greedy))
    assert batched.keys() == {c.id for c in chats}
    assert batched == single
    assert len(set(batched.values())) > 2  # the outputs depend on the input


def test_sampling_is_repeatable_by_seed(engine, chats):
    hot = Sampling(max_new_tokens=TOKENS, temperature=1.5, seed=1)
    first = dict((c.id, t) for c, t in engine.generate(chats, hot))
    again = dict((c.id, t) for c, t in engine.generate(chats, hot))
    other = dict((c.id, t) for c, t in engine.generate(chats, Sampling(max_new_tokens=TOKENS, temperature=1.5, seed=2)))
    assert first == again
    assert first != other


def test_a_missing_image_is_refused_before_generating(engine, tmp_path):
    with pytest.raises(KitError, match=r"item z: image file .*nope.png not found"):
        list(engine.generate([Chat("z", ["q"], str(tmp_path / "nope.png"))], Sampling()))


def test_openai_messages_carry_the_image_as_a_data_url(chats):
    messages = openai_messages(chats[3])
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    url = messages[0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and url == data_url("a", chats[3].image)
    assert messages[1]["content"] == "Step 1: count them."
    assert openai_messages(chats[4]) == [{"role": "user", "content": [{"type": "text", "text": "Is it blue? yes no"}]}]


def test_unknown_backend_and_missing_vllm_are_clear_errors(model_dir):
    with pytest.raises(KitError, match="unknown generation backend"):
        make_engine("tgi", model_dir)
    with pytest.raises(KitError, match="base_url"):
        make_engine("openai", "m")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(KitError, match=r"pip install -e '\.\[gpu\]'"):
            make_engine("vllm", model_dir)


# ------------------------------------------------------------------------------------------ loopback server
def _serve(server: ThreadingHTTPServer) -> str:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


@pytest.fixture(scope="module")
def server_url(engine):
    server = make_server(TransformersEngine(engine.loaded, batch_size=1), "tiny-gen", port=0)
    url = _serve(server)
    yield url
    server.shutdown()
    server.server_close()


class FaultyProxy:
    """A proxy in front of the real server: the first ``fail`` requests get HTTP 500, every request waits
    ``delay`` seconds first; the rest are forwarded."""

    def __init__(self, target: str, fail: int = 0, delay: float = 0.0) -> None:
        self.target, self.fail, self.delay, self.requests = target, fail, delay, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                proxy.requests += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(proxy.delay)
                if proxy.requests <= proxy.fail:
                    self.send_response(500)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                    return
                forwarded = urllib.request.Request(proxy.target + "/chat/completions", data=body,
                                                   headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(forwarded) as response:
                    data = response.read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class QuietServer(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that timed out hangs up on the delayed answer: expected here

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = _serve(self.server)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_openai_backend_against_the_loopback_server_matches_local_generation(engine, chats, server_url):
    greedy = Sampling(max_new_tokens=TOKENS)
    remote = OpenAIEngine(server_url, "tiny-gen", concurrency=3, timeout=60)
    answers = dict((c.id, t) for c, t in remote.generate(chats, greedy))
    local = dict((c.id, t) for c, t in TransformersEngine(engine.loaded, batch_size=1).generate(chats, greedy))
    assert answers == local


def test_server_errors_are_retried_with_backoff(chats, server_url):
    proxy = FaultyProxy(server_url, fail=2)
    try:
        remote = OpenAIEngine(proxy.url, "tiny-gen", concurrency=1, retries=3, backoff=0.01)
        ((_, text),) = list(remote.generate(chats[:1], Sampling(max_new_tokens=TOKENS)))
        assert proxy.requests == 3 and text
    finally:
        proxy.close()


def test_persistent_server_errors_stop_the_run_naming_the_item(chats, server_url):
    proxy = FaultyProxy(server_url, fail=100)
    try:
        remote = OpenAIEngine(proxy.url, "tiny-gen", concurrency=1, retries=2, backoff=0.01)
        with pytest.raises(KitError, match=r"did not answer item a after 3 attempts.*500"):
            list(remote.generate(chats[:1], Sampling(max_new_tokens=TOKENS)))
        assert proxy.requests == 3
    finally:
        proxy.close()


def test_a_timeout_is_retried_then_reported(chats, server_url):
    proxy = FaultyProxy(server_url, delay=1.0)
    try:
        remote = OpenAIEngine(proxy.url, "tiny-gen", concurrency=1, timeout=0.2, retries=1, backoff=0.01)
        with pytest.raises(KitError, match=r"did not answer item a after 2 attempts.*timed out"):
            list(remote.generate(chats[:1], Sampling(max_new_tokens=TOKENS)))
        assert proxy.requests == 2
    finally:
        proxy.close()


def test_client_errors_are_not_retried(chats, server_url):
    with pytest.raises(KitError, match="HTTP 404.*not served here"):
        list(OpenAIEngine(server_url, "another-model").generate(chats[:1], Sampling(max_new_tokens=TOKENS)))
    request = urllib.request.Request(server_url + "/chat/completions", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"messages": [{"role": "system", "content": "hi"}]}).encode())
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request)
    assert err.value.code == 400 and b"no system message" in err.value.read()
    with urllib.request.urlopen(server_url + "/models") as response:
        assert json.loads(response.read())["data"][0]["id"] == "tiny-gen"


def test_bench_generation_reports_a_speedup(model_dir, tmp_path):
    from fakes import row, write_source

    from kit.bench import bench_generation

    source = write_source(tmp_path / "src", [row(f"q{i}", "a.png", f"How many red circles are there? {i}", "3")
                                             for i in range(6)], {"a.png": (9, 9, 9)})
    lines: list[str] = []
    result = bench_generation(model_dir, source=source, n=6, batch_size=3, max_new_tokens=4, log=lines.append)
    assert result["sequences"] == 6 and result["speedup"] > 0 and result["outputs_differ"] == 0
    assert [line.split("(")[0].strip() for line in lines] == ["batched", "one-at-a-time"]
