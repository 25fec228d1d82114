"""The LLM callables for answer extraction and judging: a local model, and an OpenAI-compatible server
(a real HTTP server on loopback), including server errors, timeouts and malformed answers."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kit.errors import KitError
from kit.eval.benchmarks import mathvista
from kit.llm import judges as llm
from kit.llm import models
from kit.tiny import models as tiny_models


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
    tokenizer = tiny_models.train_tokenizer(["The answer is 3."] * 20, models.QWEN2VL, 300)
    model, processor = tiny_models.build_tiny(models.QWEN2VL, tokenizer, tiny_models.TinySize(hidden=32, ffn=64))
    models.save(model, processor, tmp_path / "m")
    chat = llm.local_chat(str(tmp_path / "m"), max_new_tokens=4)
    answer = chat("Extract the answer")
    assert isinstance(answer, str) and answer == chat("Extract the answer")  # greedy: deterministic


# ------------------------------------------------------------------------------------------ the profile's judge
def _evaluation(profile_name: str) -> dict:
    from kit.core.profile import load_profile

    section = load_profile(profile_name).get("evaluation")
    return {"extractor": section["extractor"], "judge_url": section["judge_url"],
            "judge_model": section["judge_model"], "judge_api_key_env": section["judge_api_key_env"]}


def test_the_tiny_profile_reads_by_rules_and_the_paper_profile_asks_the_authors_extractor():
    assert llm.extraction_from_profile(**_evaluation("tiny"), profile="tiny").options() == {"extractor": "rules"}
    paper = _evaluation("paper")
    assert paper["extractor"] == "llm" and paper["judge_model"] == "Qwen/Qwen2.5-14B-Instruct"
    # The shipped paper profile names no endpoint: the run stops at once, naming the key to set.
    with pytest.raises(KitError, match=r"profile 'paper': evaluation.extractor is 'llm' but evaluation.judge_url is "
                                       r"not set.*vllm serve Qwen/Qwen2.5-14B-Instruct"):
        llm.extraction_from_profile(**paper, profile="paper")


def test_an_endpoint_is_checked_once_then_reads_answers():
    with ChatServer([("ok", "O"), ("ok", "B")]) as server:
        extraction = llm.extraction_from_profile("llm", server.url, "judge-model", profile="paper")
        options = extraction.options()
        assert options["extractor"] == "llm" and options["llm_name"] == "judge-model"
        assert options["llm"]("Extract the answer") == "B"
    (_, probe, _), (_, asked, _) = server.requests
    assert probe["max_tokens"] == 1 and probe["model"] == "judge-model"
    assert asked["max_tokens"] == llm.EXTRACTOR_MAX_TOKENS == 512  # extract_answer.py's max_new_tokens


def test_a_bad_setting_names_its_profile_key(monkeypatch):
    with pytest.raises(KitError, match="evaluation.extractor is 'gpt'"):
        llm.extraction_from_profile("gpt", None, None, profile="paper")
    with pytest.raises(KitError, match="evaluation.judge_model is not set"):
        llm.extraction_from_profile("llm", "http://127.0.0.1:9/v1", None, profile="paper")
    monkeypatch.delenv("SEAT_KIT_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(KitError, match="evaluation.judge_api_key_env names SEAT_KIT_TEST_JUDGE_KEY, which is not set"):
        llm.extraction_from_profile("llm", "http://127.0.0.1:9/v1", "m", "SEAT_KIT_TEST_JUDGE_KEY", profile="paper")
    monkeypatch.setenv("SEAT_KIT_TEST_JUDGE_KEY", "k3y")
    refused = r"judge at evaluation.judge_url \(.*\) with evaluation.judge_model 'm' failed its first request: .*HTTP 404"
    with ChatServer([("status", 404)]) as server, pytest.raises(KitError, match=refused):
        llm.extraction_from_profile("llm", server.url, "m", "SEAT_KIT_TEST_JUDGE_KEY", profile="paper")
    assert server.requests[0][2] == "Bearer k3y"


def test_evaluation_through_a_fake_endpoint_records_the_extractor(small_world, tmp_path):
    """Notebook 05's path on the paper profile, with a loopback server as the judge: MathVista answers no rule
    reads go to the endpoint, and the prediction lines, the metrics and the extraction table say which model
    read them."""
    from fakes import random_tiny_qwen2vl

    from kit.eval.evaluate import evaluate_stage, extraction_table

    records = mathvista.load(small_world / "mathvista")
    model = random_tiny_qwen2vl(tmp_path / "model", [mathvista.build_prompt(r) for r in records])
    with ChatServer([("ok", "O")] + [("ok", "A")] * 20) as server:
        extraction = llm.extraction_from_profile("llm", server.url, "Qwen/Qwen2.5-14B-Instruct", profile="paper")
        metrics = evaluate_stage(model, {"mathvista": small_world / "mathvista"}, "direct", tmp_path / "run", limit=3,
                                 max_new_tokens=4, batch_size=3, progress=False, **extraction.options())["mathvista"]
    asked = [body for _, body, _ in server.requests[1:]]
    assert asked and all("Extracted answer:" in body["messages"][0]["content"] for body in asked)
    assert metrics["extractor"] == "llm" and metrics["extractor_model"] == "Qwen/Qwen2.5-14B-Instruct"
    (predictions,) = (tmp_path / "run").glob("eval-*/predictions/mathvista.jsonl")
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert {line["extractor_model"] for line in lines} == {"Qwen/Qwen2.5-14B-Instruct"}
    table = extraction_table({"base": {"mathvista": metrics}})
    assert table.to_dict("records") == [{
        "benchmark": "MathVista", "extractor": "llm", "LLM": "Qwen/Qwen2.5-14B-Instruct",
        "answers read by": "MathVista's official LLM answer extractor (extract_answer.py prompt) through the LLM",
        "evaluations": 1}]
