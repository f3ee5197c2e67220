"""The MCP server over a fake pipeline, with the MCP SDK's own client: in process, and over
streamable HTTP (a real uvicorn server) with and without the API key. The stdio transport with
the real models is tested in test_api_seeds.py."""

from __future__ import annotations

import anyio
import httpx
import pytest

from rag.api.mcp_server import build_mcp, http_app
from rag.types import Chunk, RagError, Retrieved
from tests.api_support import ServerThread
from tests.ui_fakes import ARTICLE, FakePipeline, make_answer, make_doc, quote_citation

QUOTE = "Почти 5 милиона артилерийски снаряда"
SOURCE = "003_shells.txt"
CYRILLIC = "статия_№1.txt"


class Pipe(FakePipeline):
    def __init__(self):
        super().__init__(docs={SOURCE: make_doc(SOURCE, ARTICLE),
                               CYRILLIC: make_doc(CYRILLIC, "Заглавие\n\nТекст.\n")})
        self.asked: list[str] = []

    def ask(self, question, history=None, mode=None):
        self.asked.append(question)
        if question == "fail":
            raise RagError("The index was built with another model: run `rag index --rebuild`.")
        return make_answer("Almost 5 million shells [1].",
                           (quote_citation(1, SOURCE, ARTICLE, QUOTE),), question=question)

    def retrieve(self, question, k=None):
        start = ARTICLE.index(QUOTE)
        chunk = Chunk(id=f"{SOURCE}#0", source=SOURCE, text=ARTICLE[start:start + 80],
                      start=start, end=start + 80, line_start=3, line_end=3, title="T",
                      language="bg")
        return [Retrieved(chunk=chunk, rank=1, score=0.9)][:k]


@pytest.fixture
def pipe():
    return Pipe()


def run(server_or_url, body, **kw):
    from mcp import Client

    out: dict = {}

    async def main():
        async with Client(server_or_url, **kw) as client:
            await body(client, out)

    anyio.run(main)
    return out


def test_tools_and_their_results(pipe, settings_factory):
    async def body(client, out):
        out["tools"] = {t.name: t for t in (await client.list_tools()).tools}
        out["search"] = await client.call_tool("search_articles", {"query": "shells", "k": 1})
        out["bad_k"] = await client.call_tool("search_articles", {"query": "shells", "k": 99})
        out["ask"] = await client.call_tool("ask", {"question": "How many shells?"})
        out["fail"] = await client.call_tool("ask", {"question": "fail"})
        out["list"] = await client.call_tool("list_articles", {})

    out = run(build_mcp(pipe, settings_factory()), body)
    assert set(out["tools"]) == {"search_articles", "ask", "list_articles"}
    schema = out["tools"]["search_articles"].input_schema
    assert set(schema["properties"]) == {"query", "k"} and schema["required"] == ["query"]

    [p] = out["search"].structured_content["passages"]
    assert (p["source"], p["lines"], p["uri"]) == (SOURCE, [3, 3], f"newsrag://articles/{SOURCE}")
    assert ARTICLE[p["start"]:p["end"]] == p["text"]
    assert out["bad_k"].is_error and "between 1 and 20" in out["bad_k"].content[0].text

    answer = out["ask"].structured_content
    assert answer["answer"].endswith("[1].") and answer["insufficient_context"] is False
    assert answer["citations"][0]["quote"] == QUOTE
    assert pipe.asked[0] == "How many shells?"
    assert out["fail"].is_error and "rag index --rebuild" in out["fail"].content[0].text

    articles = out["list"].structured_content["articles"]
    assert [a["source"] for a in articles] == [SOURCE, CYRILLIC]


def test_a_resource_per_article_with_its_exact_text(pipe, settings_factory):
    async def body(client, out):
        resources = (await client.list_resources()).resources
        out["uris"] = [str(r.uri) for r in resources]
        out["texts"] = [(await client.read_resource(r.uri)).contents[0].text for r in resources]
        pipe.docs["new.txt"] = make_doc("new.txt", "New\n\nArticle.\n")
        out["after"] = len((await client.list_resources()).resources)
        try:
            await client.read_resource("newsrag://articles/nope.txt")
        except Exception as e:  # noqa: BLE001 - the SDK raises its protocol error
            out["missing"] = str(e)

    out = run(build_mcp(pipe, settings_factory()), body)
    assert out["uris"][0] == f"newsrag://articles/{SOURCE}"
    assert out["uris"][1].startswith("newsrag://articles/%D1%81")  # percent-encoded Cyrillic
    assert out["texts"] == [ARTICLE, "Заглавие\n\nТекст.\n"]
    assert out["after"] == 3  # articles added while running are listed
    assert "not an indexed article" in out["missing"]


def test_streamable_http_with_and_without_the_key(pipe, settings_factory):
    settings = settings_factory(api_key="mcp-key")
    with ServerThread(http_app(build_mcp(pipe, settings), settings, "127.0.0.1")) as srv:
        url = f"{srv.url}/mcp"
        r = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                       headers={"Accept": "application/json, text/event-stream"})
        assert r.status_code == 401 and "RAG_API_KEY" in r.json()["error"]["message"]

        from mcp.client.streamable_http import streamable_http_client

        async def body(client, out):
            out["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
            out["ask"] = (await client.call_tool("ask", {"question": "q"})).structured_content

        import httpx2  # the MCP SDK's HTTP client

        http = httpx2.AsyncClient(headers={"Authorization": "Bearer mcp-key"})
        out = run(streamable_http_client(url, http_client=http), body)
        assert out["tools"] == ["ask", "list_articles", "search_articles"]
        assert out["ask"]["citations"][0]["source"] == SOURCE

    open_settings = settings_factory()
    with ServerThread(http_app(build_mcp(pipe, open_settings), open_settings,
                               "127.0.0.1")) as srv:
        async def body2(client, out):
            out["n"] = len((await client.list_tools()).tools)

        assert run(f"{srv.url}/mcp", body2)["n"] == 3
