"""Trained adapters served by name, the way ``vllm serve <base> --enable-lora`` serves them: ``kit serve``
stands in for vLLM on a loopback port, and the stages' ``openai`` engine (``EngineChoice``) gets the same
answers as the transformers engine on the adapter folder. Also the engine choice itself (labels, decodings,
stage keys without servers) and the errors a misconfigured server gives, against stub servers."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kit import REPO_DIR
from kit.errors import KitError
from kit.llm import models
from kit.llm.generate import (
    Chat,
    EngineChoice,
    OpenAIEngine,
    Sampling,
    TransformersEngine,
    engine_for,
    engine_key,
    make_engine,
    served_adapter_name,
)
from kit.llm.serve import lora_modules_option, make_server

STUDENT = REPO_DIR / "data" / "models" / "tiny-qwen2vl-student"
POLICY = REPO_DIR / "data" / "models" / "tiny-llava-policy"
TOKENS = 8

pytestmark = [pytest.mark.skipif(not (STUDENT.is_dir() and POLICY.is_dir()), reason="the shipped tiny models are needed"),
              pytest.mark.usefixtures("one_thread")]


def _adapter(base: Path, folder: Path, seed: int) -> Path:
    """A LoRA adapter on ``base`` in the layout ``kit.training.sft`` writes (PEFT files and the processor), on the
    modules the kit trains, with random weights on both LoRA matrices: unlike a freshly initialised adapter
    (B = 0) it changes the model's answers, as a trained one does, at no training cost."""
    import torch
    from peft import LoraConfig, get_peft_model

    from kit.training.sft import SFTSettings, lora_targets

    loaded = models.load(base, device="cpu")
    targets = lora_targets(loaded.model, SFTSettings(lora_r=4))
    torch.manual_seed(seed)
    model = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                    init_lora_weights=False))
    model.save_pretrained(folder)
    loaded.processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def student_adapter(tmp_path_factory) -> Path:
    return _adapter(STUDENT, tmp_path_factory.mktemp("run") / "adapter-0123456789ab", seed=1)


@pytest.fixture(scope="module")
def critic_adapter(tmp_path_factory) -> Path:
    return _adapter(POLICY, tmp_path_factory.mktemp("run") / "adapter-critic0000001", seed=2)


class Served:
    """``kit serve`` in a thread on a free loopback port."""

    def __init__(self, base: Path, **options) -> None:
        self.engine = TransformersEngine(models.load(base, device="cpu"), batch_size=1)  # the server's own model
        self.server = make_server(self.engine, str(base), port=0, **options)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def models(self) -> list[dict]:
        with urllib.request.urlopen(self.url + "/models") as response:
            return json.loads(response.read())["data"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def student_server():
    served = Served(STUDENT, enable_lora=True)  # adapters load at runtime
    yield served
    served.close()


@pytest.fixture(scope="module")
def policy_server():
    served = Served(POLICY, enable_lora=True)
    yield served
    served.close()


def _chats(world: Path) -> list[Chat]:
    images = sorted((world / "mathvista").rglob("*.png"))[:3]
    return [Chat(f"c{i}", ["How many red circles are there?"], str(path)) for i, path in enumerate(images)] + \
        [Chat("t", ["Is it blue?"])]


def _answers(engine, chats, sampling: Sampling | None = None) -> dict[str, str]:
    return {chat.id: text for chat, text in engine.generate(chats, sampling or Sampling(max_new_tokens=TOKENS))}


# ------------------------------------------------------------------------------------------ evaluation
def test_evaluation_through_the_served_adapter_equals_the_adapter_loaded_here(student_adapter, student_server,
                                                                               small_world, tmp_path):
    from kit.eval.evaluate import evaluate

    choice = EngineChoice("openai", {str(STUDENT): [student_server.url]})
    options = {"source": small_world / "mathvista", "limit": 3, "max_new_tokens": TOKENS, "progress": False}
    evaluate(student_adapter, "mathvista", predictions_path=tmp_path / "here.jsonl", **options)
    served = evaluate(student_adapter, "mathvista", predictions_path=tmp_path / "served.jsonl", engine=choice,
                      **options)
    here = [json.loads(line) for line in (tmp_path / "here.jsonl").read_text().splitlines()]
    there = [json.loads(line) for line in (tmp_path / "served.jsonl").read_text().splitlines()]
    assert served["generated"] == 3
    assert {line["id"]: line["response"] for line in there} == {line["id"]: line["response"] for line in here}

    # The adapter was loaded at runtime under its name, on its base model, as vLLM lists it.
    name = served_adapter_name(student_adapter)
    cards = {card["id"]: card for card in student_server.models()}
    assert cards[name]["parent"] == str(STUDENT) and cards[name]["root"] == str(student_adapter.resolve())
    assert {line["model"] for line in there} == {f"{STUDENT}+{name}"}
    assert {line["decoding"]["adapter"] for line in there} == {name}
    assert "adapter" not in here[0]["decoding"]  # the transformers lines stay as they were

    # The adapter changes the answers (else this test proves little), and a base request on the same server is
    # still the base model's (its adapters disabled).
    chats = _chats(small_world)
    base_here = _answers(TransformersEngine(str(STUDENT)), chats)
    base_there = _answers(make_engine("openai", str(STUDENT), base_url=student_server.url), chats)
    adapter_here = _answers(TransformersEngine(str(student_adapter)), chats)
    assert base_there == base_here and adapter_here != base_here


def test_a_resumed_served_evaluation_refuses_another_adapter(student_adapter, student_server, small_world, tmp_path):
    from kit.eval.evaluate import evaluate

    choice = EngineChoice("openai", {str(STUDENT): [student_server.url]})
    options = {"source": small_world / "mathvista", "limit": 2, "max_new_tokens": 4, "progress": False,
               "predictions_path": tmp_path / "p.jsonl", "engine": choice}
    evaluate(student_adapter, "mathvista", **options)
    assert evaluate(student_adapter, "mathvista", **options)["generated"] == 0
    with pytest.raises(KitError, match="was written with model="):
        evaluate(STUDENT, "mathvista", **options)  # the base model's answers do not go into the adapter's file


def test_prompting_measured_through_the_server_equals_prompting_here(student_adapter, student_server, small_world):
    from kit.casseat.prompting import compare_prompting
    from kit.eval.benchmarks import mathvista

    records = mathvista.load(small_world / "mathvista", limit=2)
    choice = EngineChoice("openai", {str(STUDENT): [student_server.url]})
    for model in (STUDENT, student_adapter):  # the base model, and a student's adapter asked for by name
        here = compare_prompting(model, records, label="student", max_new_tokens=TOKENS)
        there = compare_prompting(model, records, label="student", max_new_tokens=TOKENS, engine=choice)
        assert there.equals(here)  # the answers, and the lengths counted with the model's own processor


# ------------------------------------------------------------------------------------------ preference data
def test_preference_sampling_and_critic_scoring_through_the_servers_match(critic_adapter, policy_server, small_world,
                                                                          tmp_path):
    from kit.eaco.pipeline import preference_stage

    options = {"images": 2, "samples": 1, "temperature": 0.0, "max_new_tokens": TOKENS, "critic_max_new_tokens": 6,
               "progress": False}
    here = preference_stage(POLICY, critic_adapter, small_world / "eaco_images", None, tmp_path / "here", **options)
    choice = EngineChoice("openai", {str(POLICY): [policy_server.url]}, concurrency=2)
    there = preference_stage(POLICY, critic_adapter, small_world / "eaco_images", None, tmp_path / "there",
                             engine=choice, **options)
    assert Path(there["folder"]).name != Path(here["folder"]).name  # the backend is in the key
    for name, field in (("samples.jsonl", "response"), ("stic_generations.jsonl", "response"),
                        ("scores.jsonl", "judgement")):
        ours = [json.loads(line) for line in (Path(here["folder"]) / name).read_text().splitlines()]
        theirs = [json.loads(line) for line in (Path(there["folder"]) / name).read_text().splitlines()]
        assert len(ours) == len(theirs) > 0
        assert sorted(r[field] for r in theirs) == sorted(r[field] for r in ours), name
    # The policy (the base model) and the Critic (its adapter, by name) shared one server.
    critic = [json.loads(line) for line in (Path(there["folder"]) / "scores.jsonl").read_text().splitlines()]
    assert {r["critic"] for r in critic} == {f"{POLICY}+{served_adapter_name(critic_adapter)}"}
    assert {k: v for k, v in there["counts"].items() if k != "path"} == \
        {k: v for k, v in here["counts"].items() if k != "path"}


def test_the_dpo_tuned_policy_describes_through_the_server_as_here(critic_adapter, policy_server, small_world,
                                                                   tmp_path, monkeypatch):
    import kit.training.sft
    from kit.eaco.pipeline import extra_sft_stage
    from kit.eaco.preference import load_instructions

    monkeypatch.setattr(kit.training.sft, "train_stage", lambda *args, **kwargs: {"trained": True})  # descriptions only
    prompts, _ = load_instructions(None)
    options = {"rows": 2, "description_prompts": prompts, "temperature": 0.0, "max_new_tokens": TOKENS,
               "progress": False}
    choice = EngineChoice("openai", {str(POLICY): [policy_server.url]})
    described = {}
    for name, engine in (("here", None), ("there", choice)):  # critic_adapter stands in for the DPO adapter
        extra_sft_stage(POLICY, critic_adapter, small_world / "instructions", tmp_path / name, None, engine=engine,
                        **options)
        (path,) = (tmp_path / name).glob("described-*/descriptions.jsonl")
        described[name] = {r["id"]: r["description"] for r in map(json.loads, path.read_text().splitlines())}
    assert len(described["here"]) == 2 and described["there"] == described["here"]


# ------------------------------------------------------------------------------------------ preloaded adapters
def test_a_preloaded_adapter_is_used_under_the_name_it_was_given(student_adapter, small_world):
    served = Served(STUDENT, enable_lora=True, lora_modules={"student-sft": str(student_adapter)})
    try:
        assert [(card["id"], card["parent"]) for card in served.models()] == [(str(STUDENT), None),
                                                                              ("student-sft", str(STUDENT))]
        remote = make_engine("openai", STUDENT, base_url=served.url, adapter=student_adapter)
        chats = _chats(small_world)
        greedy = Sampling(max_new_tokens=TOKENS, temperature=0)
        assert _answers(remote, chats, greedy) == _answers(TransformersEngine(str(student_adapter)), chats, greedy)
        assert remote.served == {served.url: "student-sft"}  # found by its folder, not loaded a second time
        assert [card["id"] for card in served.models()] == [str(STUDENT), "student-sft"]
    finally:
        served.close()


def test_an_adapter_preloaded_under_the_kits_name_is_accepted_as_is(student_adapter, small_world, tmp_path):
    name = served_adapter_name(student_adapter)
    served = Served(STUDENT, enable_lora=True, lora_modules={name: str(student_adapter)})
    try:
        remote = OpenAIEngine(served.url, str(STUDENT), adapter=student_adapter)
        chats = _chats(small_world)[:1]
        assert _answers(remote, chats) == _answers(TransformersEngine(str(student_adapter)), chats)
        assert [card["id"] for card in served.models()] == [str(STUDENT), name]
    finally:
        served.close()


def test_one_server_switches_between_adapters_and_the_base_model(student_adapter, student_server, small_world,
                                                                  tmp_path):
    other = _adapter(STUDENT, tmp_path / "adapter-fedcba987654", seed=3)
    chats = _chats(small_world)[:2]
    engines = [OpenAIEngine(student_server.url, str(STUDENT), adapter=folder) for folder in (student_adapter, other)]
    engines.append(OpenAIEngine(student_server.url, str(STUDENT)))
    expected = [_answers(TransformersEngine(str(folder)), chats) for folder in (student_adapter, other)]
    expected.append(_answers(TransformersEngine(str(STUDENT)), chats))
    assert len({json.dumps(answers, sort_keys=True) for answers in expected}) == 3  # three different models
    for _ in range(2):  # interleaved requests each get their own adapter, or none
        assert [_answers(engine, chats) for engine in engines] == expected


# ------------------------------------------------------------------------------------------ errors
def test_a_server_without_enable_lora_is_a_clear_error(student_adapter, small_world):
    served = Served(STUDENT)  # as `vllm serve` without --enable-lora
    try:
        remote = OpenAIEngine(served.url, str(STUDENT), adapter=student_adapter)
        with pytest.raises(KitError) as err:
            list(remote.generate(_chats(small_world)[:1], Sampling(max_new_tokens=2)))
        message = str(err.value)
        assert served.url in message and served_adapter_name(student_adapter) in message
        assert str(student_adapter.resolve()) in message and "LoRA is not enabled" in message
        assert "--enable-lora" in message and "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in message
        assert "--lora-modules" in message
        request = urllib.request.Request(served.url + "/load_lora_adapter", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"lora_name": "x", "lora_path": str(student_adapter)}).encode())
        with pytest.raises(urllib.error.HTTPError) as http:
            urllib.request.urlopen(request)
        assert http.value.code == 400  # like vLLM's refusal
    finally:
        served.close()


def test_kit_serve_refuses_what_vllm_refuses(student_adapter, student_server, tmp_path):
    def load(name, path):
        request = urllib.request.Request(student_server.url + "/load_lora_adapter",
                                         headers={"Content-Type": "application/json"},
                                         data=json.dumps({"lora_name": name, "lora_path": path}).encode())
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    assert load("twice", str(student_adapter)) == (200, "Success: LoRA adapter 'twice' added successfully.")
    status, text = load("twice", str(student_adapter))
    assert status == 400 and "has already been loaded" in text
    status, text = load("nowhere", str(tmp_path / "missing"))
    assert status == 404 and "No adapter found for" in text
    status, text = load("", str(student_adapter))
    assert status == 400 and "must be provided" in text
    with pytest.raises(KitError, match="HTTP 404.*not served here"):
        list(OpenAIEngine(student_server.url, "not-loaded").generate([Chat("q", ["hi"])], Sampling(max_new_tokens=2)))
    with pytest.raises(KitError, match="--lora-modules needs --enable-lora"):
        make_server(TransformersEngine(models.load(STUDENT, device="cpu")), "s", port=0,
                    lora_modules={"a": str(student_adapter)})
    assert lora_modules_option(["a=/x", "b = /y"]) == {"a": "/x", "b": "/y"}
    for bad in (["a"], ["=/x"], ["a=/x", "a=/y"]):
        with pytest.raises(KitError, match="--lora-modules"):
            lora_modules_option(bad)


class StubServer:
    """A stand-in OpenAI-compatible server without a model: ``/v1/models`` lists ``cards``, ``/v1/load_lora_adapter``
    answers ``load`` (status, text) or, when None, adds the adapter to the cards; chat completions answer
    "<model>: <last user text>". Every request is recorded."""

    def __init__(self, base: str, cards: list[dict] | None = None, load: tuple[int, str] | None = None) -> None:
        self.cards = cards if cards is not None else [{"id": base, "root": base, "parent": None}]
        self.base, self.load, self.requests = base, load, []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                stub.requests.append(("GET", self.path, None))
                self._reply(200, json.dumps({"object": "list", "data": stub.cards}))

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(("POST", self.path, body))
                if self.path.endswith("/load_lora_adapter"):
                    if stub.load is not None:
                        self._reply(*stub.load)
                        return
                    stub.cards.append({"id": body["lora_name"], "root": body["lora_path"], "parent": stub.base})
                    self._reply(200, f"Success: LoRA adapter '{body['lora_name']}' added successfully.")
                    return
                question = body["messages"][-1]["content"][-1]["text"]
                self._reply(200, json.dumps({"choices": [{"message": {"content": f"{body['model']}: {question}"}}]}))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stubs():
    opened: list[StubServer] = []

    def start(*args, **kwargs) -> StubServer:
        opened.append(StubServer(*args, **kwargs))
        return opened[-1]

    yield start
    for stub in opened:
        stub.close()


def test_every_server_gets_the_adapter_and_is_asked_for_it_by_name(student_adapter, stubs):
    first, second = stubs("base-7b"), stubs("base-7b")
    engine = OpenAIEngine([first.url, second.url], "base-7b", adapter=student_adapter, concurrency=1, backoff=0.01)
    name = served_adapter_name(student_adapter)
    answers = [text for _, text in engine.generate([Chat(f"q{i}", [f"question {i}"]) for i in range(4)], Sampling())]
    assert answers == [f"{name}: question {i}" for i in range(4)]
    for stub in (first, second):
        loads = [body for method, path, body in stub.requests if path.endswith("/load_lora_adapter")]
        assert loads == [{"lora_name": name, "lora_path": str(student_adapter.resolve())}]
    # A second run finds the adapter listed and loads nothing.
    list(engine.generate([Chat("q", ["again"])], Sampling()))
    assert sum(path.endswith("/load_lora_adapter") for stub in (first, second) for _, path, _ in stub.requests) == 2


@pytest.mark.parametrize(("load", "expected"), [
    ((404, '{"detail":"Not Found"}'), r"cannot load adapters at runtime \(POST .*/load_lora_adapter: HTTP 404\).*"
                                      r"VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.*--lora-modules adapter-0123456789ab-"),
    ((404, '{"error": {"message": "Loading lora x failed: No adapter found for /p", "code": 404}}'),
     r"does not see adapter .* \(Loading lora x failed: No adapter found for /p\).*same machine or a shared"),
    ((500, '{"error": {"message": "LoRA is not enabled!", "code": 500}}'),
     r"refused to load adapter .*HTTP 500: LoRA is not enabled!.*--enable-lora"),
])
def test_a_server_that_cannot_load_the_adapter_says_what_to_start(student_adapter, stubs, load, expected):
    stub = stubs("base-7b", load=load)
    engine = OpenAIEngine(stub.url, "base-7b", adapter=student_adapter, retries=0)
    with pytest.raises(KitError, match=expected) as err:
        list(engine.generate([Chat("q", ["hi"])], Sampling()))
    assert stub.url in str(err.value)


def test_a_server_of_another_base_model_is_refused_before_loading(student_adapter, stubs):
    stub = stubs("other-model")
    engine = OpenAIEngine(stub.url, "base-7b", adapter=student_adapter)
    with pytest.raises(KitError, match=r"serves other-model, not base-7b, the base model of adapter"):
        list(engine.generate([Chat("q", ["hi"])], Sampling()))
    assert not any(path.endswith("/load_lora_adapter") for _, path, _ in stub.requests)


# ------------------------------------------------------------------------------------------ the engine choice
def test_engine_for_gives_each_backend_its_engine(student_adapter, tmp_path, monkeypatch):
    here = engine_for(None, STUDENT, adapter=student_adapter, batch_size=3)
    assert isinstance(here, TransformersEngine) and here.batch_size == 3
    assert here.model_label == TransformersEngine(str(student_adapter)).model_label  # as the stages built it
    assert engine_for(EngineChoice(), student_adapter).model_label == here.model_label

    choice = EngineChoice("openai", {"data/models/tiny-qwen2vl-student": "http://h1:8000/v1,http://h2:8000/v1"},
                          concurrency=3)
    name = served_adapter_name(student_adapter)
    served = engine_for(choice, STUDENT, adapter=student_adapter)  # an absolute path finds the relative key
    assert isinstance(served, OpenAIEngine) and served.servers == ("http://h1:8000/v1", "http://h2:8000/v1")
    assert served.concurrency == 3 and served.model_label == f"{STUDENT}+{name}"
    assert served.request_body(Chat("q", ["hi"]), Sampling())["model"] == name
    assert served.decoding(Sampling())["adapter"] == name
    # An adapter folder alone stands for its base model (its adapter_config's) plus itself.
    alone = engine_for(choice, student_adapter)
    assert (alone.model, alone.adapter_name) == (str(STUDENT), name)
    assert engine_for(choice, STUDENT).model_label == str(STUDENT)

    with pytest.raises(KitError, match=r"engine.servers names no server for model .*tiny-llava-policy"):
        engine_for(choice, POLICY)
    with pytest.raises(KitError, match=r"engine.api_key_env names KIT_TEST_NO_SUCH_KEY"):
        engine_for(EngineChoice("openai", choice.servers, api_key_env="KIT_TEST_NO_SUCH_KEY"), STUDENT)
    monkeypatch.setenv("KIT_TEST_KEY", "secret")
    assert engine_for(EngineChoice("openai", choice.servers, api_key_env="KIT_TEST_KEY"), STUDENT).api_key == "secret"
    with pytest.raises(KitError, match="no adapter_config.json"):
        OpenAIEngine("http://h1:8000/v1", "m", adapter=tmp_path)


@pytest.mark.parametrize(("options", "expected"), [
    ({"backend": "vllm"}, r"engine.backend: the in-process vllm backend is gone"),
    ({"backend": "tgi"}, r"engine.backend: unknown generation backend 'tgi'"),
    ({"backend": "openai"}, r"engine.backend openai needs engine.servers"),
    ({"backend": "openai", "servers": {"m": "ftp://h/v1"}}, r"engine.servers\[m\]: .*ftp://h/v1"),
    ({"servers": ["http://h:1/v1"]}, r"engine.servers\[0\] must be \[base model, server URL, ...\]"),
    ({"servers": [["m"]]}, r"engine.servers\[0\] must be \[base model, server URL"),
    ({"servers": 3}, r"engine.servers must map each base model"),
    ({"concurrency": 0}, r"engine.concurrency must be a whole number >= 1"),
    ({"api_key_env": ""}, r"engine.api_key_env must name an environment variable"),
])
def test_a_bad_engine_choice_names_the_profile_key(options, expected):
    with pytest.raises(KitError, match=expected):
        EngineChoice(**options)


def test_stage_keys_record_the_backend_never_the_servers():
    assert engine_key(None) == engine_key(EngineChoice()) == {}  # the transformers stages keep their folders
    one = EngineChoice("openai", {"m": "http://h1:8000/v1"})
    four = EngineChoice("openai", {"m": [f"http://h{i}:8000/v1" for i in range(4)]}, concurrency=16,
                        api_key_env="KEY")
    assert engine_key(one) == engine_key(four) == {"engine": "openai"}
    assert EngineChoice(servers=None) == EngineChoice()  # a profile's `servers: null`
