"""The generation engine: batched transformers generation, the openai backend against a real loopback
server (``kit serve``) with server errors and timeouts injected, the openai backend over several servers,
the removed in-process vllm backend's pointer to ``vllm serve``, one decoding configuration across the
backends, ``kit bench generation``. Adapters served by name: ``tests/test_served_adapters.py``."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fakes import random_tiny_qwen2vl
from PIL import Image

from kit.errors import KitError
from kit.llm import models
from kit.llm.generate import (
    Chat,
    OpenAIEngine,
    Sampling,
    TransformersEngine,
    data_url,
    decoding_settings,
    generation_defaults,
    make_engine,
    openai_messages,
    server_urls,
)
from kit.llm.serve import make_server

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


def test_unknown_backend_and_the_removed_vllm_backend_are_clear_errors(model_dir):
    with pytest.raises(KitError, match="unknown generation backend"):
        make_engine("tgi", model_dir)
    with pytest.raises(KitError, match="base_url"):
        make_engine("openai", "m")
    # vLLM is a server now, in its own environment: asking for it in process says what to run instead.
    with pytest.raises(KitError, match=r"vllm backend is gone.*`vllm serve <base model> --enable-lora`.*openai"):
        make_engine("vllm", model_dir)


# ------------------------------------------------------------------------------------------ loopback server
def _serve(server: ThreadingHTTPServer) -> str:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def _reply(handler, status: int, data: bytes = b"{}") -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


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
                    _reply(self, 500)
                    return
                forwarded = urllib.request.Request(proxy.target + "/chat/completions", data=body,
                                                   headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(forwarded) as response:
                    _reply(self, 200, response.read())

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


# ------------------------------------------------------------------------------------------ several servers
class ReplyServer:
    """A stand-in OpenAI-compatible server: ``/chat/completions`` answers "<name>: <last user text>" after
    ``delay`` seconds, or HTTP 500 every time when ``fail``. It counts requests, and the most in flight."""

    def __init__(self, name: str, delay: float = 0.0, fail: bool = False) -> None:
        self.name, self.delay, self.fail = name, delay, fail
        self.requests = self.in_flight = self.most_in_flight = 0
        self.bodies: list[dict] = []  # every request body received, in arrival order
        self.lock = threading.Lock()
        replier = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with replier.lock:
                    replier.bodies.append(body)
                    replier.requests += 1
                    replier.in_flight += 1
                    replier.most_in_flight = max(replier.most_in_flight, replier.in_flight)
                time.sleep(replier.delay)
                with replier.lock:
                    replier.in_flight -= 1
                if replier.fail or not self.path.endswith("/v1/chat/completions"):
                    _reply(self, 500 if replier.fail else 404)
                    return
                question = body["messages"][-1]["content"][-1]["text"]
                _reply(self, 200, json.dumps({"choices": [{"message": {"content": f"{replier.name}: {question}"}}]}).encode())

        class QuietServer(ThreadingHTTPServer):
            daemon_threads = True

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = _serve(self.server)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def reply_servers():
    opened: list[ReplyServer] = []

    def start(name: str, **options) -> ReplyServer:
        opened.append(ReplyServer(name, **options))
        return opened[-1]

    yield start
    for server in opened:
        server.close()


def _questions(n: int) -> list[Chat]:
    return [Chat(f"q{i}", [f"question {i}"]) for i in range(n)]


def test_requests_are_spread_over_the_servers_and_answered_in_input_order(reply_servers):
    slow, fast = reply_servers("slow", delay=0.2), reply_servers("fast", delay=0.01)
    engine = OpenAIEngine([slow.url, fast.url], "m", concurrency=2, backoff=0.01)
    assert engine.total_concurrency == 4  # concurrency counts per server
    chats = _questions(16)
    answers = list(engine.generate(chats, Sampling()))
    assert [chat.id for chat, _ in answers] == [chat.id for chat in chats]  # input order, whoever answered
    assert [text.split(": ", 1)[1] for _, text in answers] == [f"question {i}" for i in range(16)]
    names = [text.split(":")[0] for _, text in answers]
    assert slow.requests == names.count("slow") > 0 and fast.requests == names.count("fast") > slow.requests
    assert slow.requests + fast.requests == 16  # nothing dropped, nothing sent twice
    assert slow.most_in_flight <= 2 and fast.most_in_flight <= 2 and slow.most_in_flight == 2


def test_several_servers_answer_as_one_does(chats, server_url):
    greedy = Sampling(max_new_tokens=TOKENS)
    one = [(c.id, t) for c, t in OpenAIEngine(server_url, "tiny-gen", concurrency=2).generate(chats, greedy)]
    first, second = FaultyProxy(server_url), FaultyProxy(server_url)
    try:
        both = OpenAIEngine(f"{first.url}, {second.url}", "tiny-gen", concurrency=1)
        assert [(c.id, t) for c, t in both.generate(chats, greedy)] == one
        assert first.requests > 0 and second.requests > 0 and first.requests + second.requests == len(chats)
    finally:
        first.close()
        second.close()


def test_a_failing_server_stops_the_run_naming_it_and_the_request(reply_servers):
    good, bad = reply_servers("good"), reply_servers("bad", fail=True)
    engine = OpenAIEngine([good.url, bad.url], "m", concurrency=1, retries=1, backoff=0.01)
    yielded = []
    with pytest.raises(KitError, match=re.escape(f"server {bad.url}, request #1 of 4: ") +
                       r".*did not answer item q1 after 2 attempts.*500"):
        for chat, _ in engine.generate(_questions(4), Sampling()):
            yielded.append(chat.id)
    assert yielded == ["q0"]  # the request before the failed one is kept, none after it is yielded
    assert bad.requests == 2


@pytest.mark.parametrize("bad", ["", "   ", [], ["http://127.0.0.1:8000/v1", ""], "http://127.0.0.1:8000/v1,,http://h/v1",
                                 "ftp://127.0.0.1/v1", "127.0.0.1:8000/v1", "http://", [8000], 8000,
                                 ["http://h:1/v1", "http://h:1/v1/"]])
def test_bad_server_urls_are_refused_naming_the_value(bad):
    with pytest.raises(KitError, match="base_url|server URL") as err:
        OpenAIEngine(bad, "m")
    assert str(bad).strip() in str(err.value)


def test_server_urls_accept_one_a_list_a_tuple_or_commas():
    both = ("http://h1:8000/v1", "https://h2/v1")
    assert server_urls(" http://h1:8000/v1/ , https://h2/v1") == both
    assert server_urls(list(both)) == server_urls(both) == both
    assert server_urls("http://h1:8000/v1") == both[:1]
    with pytest.raises(KitError, match="needs base_url"):
        make_engine("openai", "m", base_url=None)


def test_the_model_label_does_not_depend_on_the_servers():
    servers = [f"http://h{i}:8000/v1" for i in range(4)]
    labels = {OpenAIEngine(urls, "tiny-gen").model_label
              for urls in (servers[0], servers[:2], servers, ",".join(servers[1:]))}
    assert labels == {"tiny-gen"}


def test_bench_generation_reports_a_speedup(model_dir, tmp_path):
    from fakes import row, write_source

    from kit.tools.speed import bench_generation

    source = write_source(tmp_path / "src", [row(f"q{i}", "a.png", f"How many red circles are there? {i}", "3")
                                             for i in range(6)], {"a.png": (9, 9, 9)})
    lines: list[str] = []
    result = bench_generation(model_dir, source=source, n=6, batch_size=3, max_new_tokens=4, log=lines.append)
    assert result["sequences"] == 6 and result["speedup"] > 0 and result["outputs_differ"] == 0
    assert [line.split("(")[0].strip() for line in lines] == ["batched", "one-at-a-time"]


# ------------------------------------------------------------------------------------------ decoding parity
# Qwen/Qwen2-VL-7B-Instruct's generation_config.json as published on the hub.
QWEN2VL_GENERATION_CONFIG = {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                             "eos_token_id": [151645, 151643], "repetition_penalty": 1.05, "temperature": 0.1,
                             "top_p": 0.001, "top_k": 1}
DECODING_FIELDS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")


@pytest.fixture(scope="module")
def qwen_dir(model_dir, tmp_path_factory):
    """The tiny model with Qwen2-VL-7B-Instruct's decoding values in its generation_config (its own token ids
    kept: the real ones lie outside the tiny vocabulary)."""
    folder = tmp_path_factory.mktemp("qwen-decoding") / "tiny-qwen-decoding"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    config.update({k: v for k, v in QWEN2VL_GENERATION_CONFIG.items() if not k.endswith("token_id")})
    (folder / "generation_config.json").write_text(json.dumps(config))
    return folder


def test_decoding_settings_merge_qwen2vl_generation_config_with_the_stage(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps(QWEN2VL_GENERATION_CONFIG))
    defaults = generation_defaults(tmp_path)
    assert defaults == {"do_sample": True, "temperature": 0.1, "top_p": 0.001, "top_k": 1, "repetition_penalty": 1.05}
    # Greedy: the checkpoint's repetition penalty kept (its top_k 1 after the penalty picks the same tokens).
    assert decoding_settings(defaults, Sampling(max_new_tokens=64)) == {
        "do_sample": False, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.05,
        "max_new_tokens": 64}
    # Sampling: the stage's temperature and top_p; the checkpoint's near-greedy top_k 1 / top_p 0.001 do not apply.
    assert decoding_settings(defaults, Sampling(max_new_tokens=32, temperature=0.7, top_p=0.9)) == {
        "do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0, "repetition_penalty": 1.05,
        "max_new_tokens": 32}
    # A folder without generation_config.json: neutral values.
    (tmp_path / "bare").mkdir()
    assert generation_defaults(tmp_path / "bare") == {}
    assert decoding_settings(generation_defaults(tmp_path / "bare"), Sampling())["repetition_penalty"] == 1.0


def test_every_backend_sends_the_same_decoding(qwen_dir, chats, reply_servers, monkeypatch):
    local = TransformersEngine(models.load(qwen_dir, device="cpu"), batch_size=4)
    generate_calls: list[dict] = []
    real_generate = local.loaded.model.generate

    def recording_generate(**kwargs):
        generate_calls.append(kwargs)
        return real_generate(**kwargs)

    monkeypatch.setattr(local.loaded.model, "generate", recording_generate)
    server = reply_servers("vllm-serve")
    remote = OpenAIEngine(server.url, str(qwen_dir))  # the served name is the folder, as `vllm serve <folder>`

    for sampling in (Sampling(max_new_tokens=4, temperature=0.7, top_p=0.9, seed=3), Sampling(max_new_tokens=4)):
        decoding = local.decoding(sampling)
        assert decoding["repetition_penalty"] == 1.05 and decoding["max_new_tokens"] == 4
        assert remote.decoding(sampling) == decoding
        generate_calls.clear()
        server.bodies.clear()
        for engine in (local, remote):
            assert len(list(engine.generate(chats[:2], sampling))) == 2
        sent = {key: generate_calls[0][key] for key in DECODING_FIELDS}
        wire = {"max_tokens": 4, "temperature": decoding["temperature"], "top_p": decoding["top_p"], "top_k": -1,
                "repetition_penalty": 1.05}
        assert all({key: body[key] for key in (*wire, "seed")} == {**wire, "seed": sampling.seed}
                   for body in server.bodies) and len(server.bodies) == 2
        if sampling.temperature:
            assert sent == decoding
        else:  # greedy everywhere: no sampling in transformers, temperature 0 for the server
            assert sent["do_sample"] is False and sent["repetition_penalty"] == 1.05 and wire["temperature"] == 0.0
    # A hosted OpenAI API refuses vLLM's extra fields: they can be left out.
    bare = OpenAIEngine(server.url, str(qwen_dir), extra_fields=False).request_body(chats[4], Sampling())
    assert "top_k" not in bare and "repetition_penalty" not in bare and bare["temperature"] == 0.0


def test_a_served_name_that_names_no_checkpoint_decodes_with_neutral_values():
    engine = OpenAIEngine("http://127.0.0.1:1/v1", "tiny-gen")
    assert engine.defaults == {} and engine.decoding(Sampling())["repetition_penalty"] == 1.0


def test_synthesis_records_the_engine_decoding(engine, chats, tmp_path):
    from kit.casseat.mathv360k import SourceItem
    from kit.casseat.synthesis import synthesize

    items = [SourceItem(id=f"i{n}", row=n + 1, image=str(chats[n].image), question="How many red circles?",
                        answer="3", choices=None, answer_type="integer", precision=None) for n in range(2)]
    sampling = Sampling(max_new_tokens=4)
    synthesize(engine, items, ["cas_cot"], tmp_path / "out.jsonl", sampling=sampling, progress=False)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["decoding"] == engine.decoding(sampling) for r in records)
    assert records[0]["decoding"]["repetition_penalty"] == 1.0  # the tiny model's generation_config sets none



def test_generate_into_appends_resumes_and_refuses_other_settings(tmp_path):
    from fakes import ScriptedEngine

    from kit.llm.generate import generate_into

    chats = {(f"q{i}", 0): Chat(f"q{i}|0", [f"question {i}"]) for i in range(3)}
    out = tmp_path / "answers.jsonl"
    settings = {"model": "scripted", "temperature": 0.0}

    def record(key, chat, text):
        return {"turns": chat.turns, "response": text}

    crashing = ScriptedEngine(lambda chat: "an answer", fail_after=2)
    with pytest.raises(RuntimeError):
        generate_into(out, ("item_id", "sample"), settings, crashing, chats, Sampling(), record, progress=False)
    engine = ScriptedEngine(lambda chat: "an answer")
    stored, written = generate_into(out, ("item_id", "sample"), settings, engine, chats, Sampling(), record,
                                    progress=False)
    assert written == 1 and engine.calls == ["q2|0"] and len(stored) == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["item_id"], r["sample"]) for r in lines] == [("q0", 0), ("q1", 0), ("q2", 0)]
    assert list(lines[0])[:4] == ["item_id", "sample", "model", "temperature"]
    with pytest.raises(KitError, match="temperature"):
        generate_into(out, ("item_id", "sample"), {**settings, "temperature": 0.7}, engine, chats, Sampling(),
                      record, progress=False)
