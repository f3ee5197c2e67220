"""LLM backends against fake servers: what we send, what we assemble, how failures read."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

import rag.llm.backends
from rag.answering.prompts import answer_messages, render_evidence
from rag.llm.backends import (
    ChatModel,
    LlamaCppChatModel,
    OllamaChatModel,
    OpenAIChatModel,
    ScriptedChatModel,
    build_chat_model,
    complete,
)
from rag.settings import Settings
from rag.types import Evidence, RagError, Sentence

try:  # tests/ may or may not be a package depending on how pytest is configured
    from tests.fake_ollama import FakeOllama
except ImportError:
    from fake_ollama import FakeOllama

MODEL = "qwen2.5:7b"
REPLY = "Sofia has 1.2 million people [1]. It is the capital [2]."


def _settings(**kw: Any) -> Settings:
    base = {"num_ctx": 6144, "temperature": 0.2, "max_answer_tokens": 123, "llm_timeout": 5.0}
    return Settings(**{**base, **kw})


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connecting is refused at once
    return port


def _messages() -> list[dict[str, str]]:
    ev = [
        Evidence(n=i, score=1.0, sentence=Sentence(
            source=f"news{i}.txt", chunk_id=f"c{i}", text=text, start=0, end=len(text),
            line_start=i, line_end=i + 1, title=f"Story {i}"))
        for i, text in ((1, "Sofia has 1.2 million people."), (2, "Sofia is the capital."))
    ]
    return answer_messages(render_evidence(ev), "How many people live in Sofia?", "en")


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models=[MODEL, "llama3.2:latest"], replies=[REPLY]) as server:
        yield server


# --- Ollama ------------------------------------------------------------------------------------


def test_ollama_stream_sends_num_ctx_options_and_evidence(ollama):
    model = build_chat_model(_settings(ollama_url=ollama.url))
    assert isinstance(model, OllamaChatModel) and isinstance(model, ChatModel)
    assert model.backend.name == "ollama" and model.backend.model == MODEL

    deltas = list(model.stream(_messages()))

    assert "".join(deltas) == REPLY
    assert len(deltas) > 3  # really streamed, not one blob
    (body,) = ollama.chat_requests
    assert body["model"] == MODEL
    assert body["stream"] is True
    assert body["options"]["num_ctx"] == 6144
    assert body["options"]["num_predict"] == 123
    assert body["options"]["temperature"] == 0.2
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    user = body["messages"][1]["content"]
    assert "[1] Story 1 (news1.txt, lines 1–2)\nSofia has 1.2 million people." in user
    assert "[2] Story 2 (news2.txt, lines 2–3)\nSofia is the capital." in user
    # num_ctx is configured, so the client must not ask /api/show for the model's context.
    assert ollama.paths() == ["POST /api/chat"]


def test_ollama_usage_from_final_chunk(ollama):
    model = build_chat_model(_settings(ollama_url=ollama.url))
    messages = _messages()
    deltas = list(model.stream(messages))
    words = sum(len(m["content"].split()) for m in messages)
    assert model.last_usage["prompt_tokens"] == words
    assert model.last_usage["completion_tokens"] == len(deltas)
    assert model.last_usage["total_tokens"] == words + len(deltas)
    assert model.last_usage["tokens_per_s"] == pytest.approx(50.0)
    assert model.last_usage["finish_reason"] == "stop"


def test_ollama_model_override_and_second_call(ollama):
    ollama.replies = ["one", "two"]
    model = build_chat_model(_settings(ollama_url=ollama.url), backend="ollama",
                             model="llama3.2")
    assert model.backend.model == "llama3.2"
    assert complete(model, [{"role": "user", "content": "hi"}]) == "one"
    assert complete(model, [{"role": "user", "content": "hi again"}]) == "two"
    assert [b["model"] for b in ollama.chat_requests] == ["llama3.2", "llama3.2"]


def test_ollama_unknown_model_404_says_ollama_pull(ollama):
    model = build_chat_model(_settings(ollama_url=ollama.url), model="mistral:7b")
    with pytest.raises(RagError, match=r"ollama pull mistral:7b"):
        list(model.stream(_messages()))


def test_ollama_connection_refused_says_ollama_serve():
    url = f"http://127.0.0.1:{_closed_port()}"
    model = build_chat_model(_settings(ollama_url=url))
    with pytest.raises(RagError, match="ollama serve") as e:
        list(model.stream(_messages()))
    assert url in str(e.value) and "ollama.com" in str(e.value)
    with pytest.raises(RagError, match="ollama serve"):
        model.check()


def test_ollama_error_mid_stream_keeps_partial_text_then_raises():
    with FakeOllama(models=[MODEL], replies=[REPLY], stream_error="runner crashed") as server:
        model = build_chat_model(_settings(ollama_url=server.url))
        got: list[str] = []
        with pytest.raises(RagError, match="runner crashed"):
            for d in model.stream(_messages()):
                got.append(d)
        assert "".join(got) == REPLY[:5]


def test_ollama_request_timeout_is_applied():
    with FakeOllama(models=[MODEL], replies=[REPLY], chunk_delay=2.0) as server:
        model = build_chat_model(_settings(ollama_url=server.url, llm_timeout=0.3))
        started = time.monotonic()
        with pytest.raises(RagError, match="did not answer within 0.3 s"):
            list(model.stream(_messages()))
        assert time.monotonic() - started < 1.5


def test_ollama_check_ok_and_model_listed_as_latest(ollama):
    build_chat_model(_settings(ollama_url=ollama.url)).check()
    # "llama3.2" is what people type; Ollama lists it as "llama3.2:latest".
    build_chat_model(_settings(ollama_url=ollama.url, ollama_model="llama3.2")).check()
    assert ollama.paths() == ["GET /api/tags", "GET /api/tags"]


def test_ollama_check_missing_model_says_ollama_pull(ollama):
    model = build_chat_model(_settings(ollama_url=ollama.url, ollama_model="gemma3:4b"))
    with pytest.raises(RagError, match=r"`ollama pull gemma3:4b`") as e:
        model.check()
    assert "qwen2.5:7b" in str(e.value)  # tells what is installed


def test_ollama_check_is_fast_when_server_hangs(monkeypatch):
    monkeypatch.setattr(rag.llm.backends, "CHECK_TIMEOUT", 0.2)
    listener = socket.socket()  # accepts connections (backlog) but never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(RagError, match="not reachable"):
            build_chat_model(_settings(ollama_url=url)).check()
        assert time.monotonic() - started < 1.0
    finally:
        listener.close()


def test_ollama_url_without_scheme(ollama):
    model = build_chat_model(_settings(ollama_url=ollama.url.removeprefix("http://") + "/"))
    model.check()
    assert "".join(model.stream([{"role": "user", "content": "q"}])) == REPLY


def test_fake_ollama_non_streaming_and_show(ollama):
    r = httpx.post(f"{ollama.url}/api/chat", json={
        "model": MODEL, "stream": False, "messages": [{"role": "user", "content": "a b c"}]})
    assert r.status_code == 200
    assert r.json()["message"]["content"] == REPLY and r.json()["prompt_eval_count"] == 3
    r = httpx.post(f"{ollama.url}/api/show", json={"model": "nope"})
    assert r.status_code == 404
    assert r.json() == {"error": 'model "nope" not found, try pulling it first'}
    assert httpx.get(f"{ollama.url}/api/version").json()["version"]


# --- OpenAI-compatible -------------------------------------------------------------------------


class FakeOpenAI:
    """/v1/models and streaming /v1/chat/completions (SSE), as vLLM and llama-server speak."""

    def __init__(self, models: list[str], reply: str) -> None:
        self.models, self.reply, self.requests = models, reply, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path, dict(self.headers)))
                self._send(200, {"object": "list", "data": [{"id": m} for m in fake.models]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(("POST", self.path, body))
                if body["model"] not in fake.models:
                    self._send(404, {"error": {"message": "model not found", "code": 404}})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                base = {"id": "x", "object": "chat.completion.chunk", "created": 0,
                        "model": body["model"]}
                pieces = [fake.reply[i : i + 6] for i in range(0, len(fake.reply), 6)]
                events = [{**base, "choices": [{"index": 0, "delta": {"content": p},
                                                "finish_reason": None}]} for p in pieces]
                events.append({**base, "choices": [{"index": 0, "delta": {},
                                                    "finish_reason": "stop"}]})
                events.append({**base, "choices": [], "usage": {
                    "prompt_tokens": 42, "completion_tokens": len(pieces),
                    "total_tokens": 42 + len(pieces)}})
                for ev in [*(json.dumps(e) for e in events), "[DONE]"]:
                    data = f"data: {ev}\n\n".encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(["qwen2.5-7b-instruct"], REPLY)
    yield server
    server.close()


def test_openai_like_streams_and_reports_usage(openai_server):
    model = build_chat_model(_settings(backend="openai", openai_base_url=openai_server.url,
                                       openai_api_key="sk-test"))
    assert isinstance(model, OpenAIChatModel) and model.backend.name == "openai"
    model.check()
    deltas = list(model.stream(_messages()))
    assert "".join(deltas) == REPLY and len(deltas) > 3
    assert model.last_usage["prompt_tokens"] == 42
    assert model.last_usage["completion_tokens"] == len(deltas)
    (get, post) = openai_server.requests
    assert get[:2] == ("GET", "/v1/models")
    assert {k.lower(): v for k, v in get[2].items()}["authorization"] == "Bearer sk-test"
    assert post[1] == "/v1/chat/completions"
    body = post[2]
    assert body["model"] == "qwen2.5-7b-instruct" and body["stream"] is True
    assert body["max_tokens"] == 123 and body["temperature"] == 0.2
    assert body["stream_options"] == {"include_usage": True}
    assert "[1] Story 1 (news1.txt, lines 1–2)" in body["messages"][1]["content"]


def test_openai_like_unknown_model(openai_server):
    model = build_chat_model(_settings(backend="openai", openai_base_url=openai_server.url),
                             model="other")
    model.check()  # only warns: llama-server answers to any name
    with pytest.raises(RagError, match="no model 'other'"):
        list(model.stream(_messages()))
    assert len(openai_server.requests) == 2  # no retries


def test_openai_like_unreachable():
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    model = build_chat_model(_settings(backend="openai", openai_base_url=url))
    with pytest.raises(RagError, match="not reachable"):
        model.check()
    with pytest.raises(RagError, match="not reachable"):
        list(model.stream(_messages()))


# --- llama.cpp ---------------------------------------------------------------------------------


def test_llamacpp_needs_a_model_path(tmp_path, monkeypatch):
    # No path means the GGUF bundled by the extra; pretend its part packages are not installed.
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("rag.llm.gguf.PART_PACKAGE", "newsrag_test_no_such_part{n}")
    model = build_chat_model(_settings(backend="llamacpp"))
    assert model.backend.model == "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    assert isinstance(model, LlamaCppChatModel)
    with pytest.raises(RagError, match="llamacpp_model_path"):
        model.check()
    model = build_chat_model(_settings(llamacpp_model_path=tmp_path / "no.gguf"), "llamacpp")
    with pytest.raises(RagError, match="no.gguf does not exist"):
        list(model.stream(_messages()))


def test_llamacpp_missing_package_explains_install(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_index.llms.llama_cpp", None)  # import fails
    model = build_chat_model(_settings(llamacpp_model_path=gguf), "llamacpp")
    with pytest.raises(RagError) as e:
        model.check()
    assert "pip install -e '.[llamacpp]'" in str(e.value)
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF' in str(e.value)


def test_llamacpp_streams_through_the_gguf_chat_template(tmp_path, monkeypatch):
    seen: dict[str, Any] = {}

    class FakeLlama:
        def create_chat_completion(self, **kw: Any):
            seen["chat"] = kw
            for piece in ("Sofia ", "is big", " [1]."):
                yield {"choices": [{"delta": {"content": piece}, "finish_reason": None}]}
            yield {"choices": [{"delta": {}, "finish_reason": "stop"}]}

    class FakeLlamaCPP:
        def __init__(self, **kw: Any) -> None:
            seen["init"] = kw
            self._model = FakeLlama()

    module = types.ModuleType("llama_index.llms.llama_cpp")
    module.LlamaCPP = FakeLlamaCPP
    monkeypatch.setitem(sys.modules, "llama_index.llms.llama_cpp", module)
    gguf = tmp_path / "qwen.gguf"
    gguf.write_bytes(b"GGUF")
    model = build_chat_model(_settings(llamacpp_model_path=gguf, llamacpp_threads=3), "llamacpp")
    assert model.backend.model == "qwen.gguf"
    messages = _messages()
    assert complete(model, messages) == "Sofia is big [1]."
    assert seen["init"]["context_window"] == 6144
    assert seen["init"]["model_kwargs"] == {"n_threads": 3}
    assert seen["init"]["model_path"] == str(gguf)
    assert seen["chat"]["messages"] == messages and seen["chat"]["stream"] is True
    assert seen["chat"]["max_tokens"] == 123
    assert model.last_usage["completion_tokens"] == 3
    assert model.last_usage["finish_reason"] == "stop"


def test_unknown_backend():
    with pytest.raises(RagError, match="Unknown LLM backend 'gpt'"):
        build_chat_model(_settings(), backend="gpt")


# --- ScriptedChatModel -------------------------------------------------------------------------


def test_scripted_streams_pieces_and_records_calls():
    model = ScriptedChatModel(["Hello world [1].", "second"], chunk_size=3)
    assert isinstance(model, ChatModel) and model.backend.name == "scripted"
    msgs = [{"role": "user", "content": "hi there"}]
    pieces = list(model.stream(msgs))
    assert pieces == ["Hel", "lo ", "wor", "ld ", "[1]", "."]
    assert model.last_usage == {"prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8,
                                "usage_estimated": True}
    msgs[0]["content"] = "mutated later"
    assert complete(model, [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
                    ) == "second"
    assert model.calls[0] == [{"role": "user", "content": "hi there"}]
    assert [m["role"] for m in model.calls[1]] == ["system", "user"]
    with pytest.raises(RagError, match="ran out of replies after 2"):
        list(model.stream(msgs))


def test_scripted_failures_and_repeat():
    model = ScriptedChatModel(
        [RagError("down"), ("partial answ", RagError("died")), "ok"],
        chunk_size=4, repeat_last=True, check_error=RagError("not reachable"),
    )
    with pytest.raises(RagError, match="not reachable"):
        model.check()
    assert model.checks == 1
    with pytest.raises(RagError, match="down"):
        list(model.stream([{"role": "user", "content": "q"}]))
    got: list[str] = []
    with pytest.raises(RagError, match="died"):
        got.extend(model.stream([{"role": "user", "content": "q"}]))
    assert got == ["part", "ial ", "answ"]
    assert [complete(model, [{"role": "user", "content": "q"}]) for _ in range(2)] == ["ok"] * 2


def test_messages_are_validated():
    with pytest.raises(ValueError, match="role"):
        list(ScriptedChatModel(["x"]).stream([{"role": "robot", "content": "q"}]))


def test_ollama_stopping_early_drops_the_stream(ollama):
    ollama.replies = ["a" * 400, "next"]
    ollama.chunk_delay = 0.01
    model = build_chat_model(_settings(ollama_url=ollama.url))
    stream = model.stream([{"role": "user", "content": "q"}])
    assert next(stream) == "aaaaa"
    stream.close()
    assert model.last_usage == {}  # no final chunk was read
    deadline = time.monotonic() + 2
    while not ollama.streams_aborted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ollama.streams_aborted == 1 and ollama.streams_completed == 0
    assert complete(model, [{"role": "user", "content": "q"}]) == "next"
    # The server counts a stream as completed after its last write, which can land just after
    # the client has read that write: wait for it as for the abort above.
    deadline = time.monotonic() + 2
    while not ollama.streams_completed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ollama.streams_completed == 1
