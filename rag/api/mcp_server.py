"""The MCP server (official `mcp` SDK): the pipeline as tools and resources for MCP clients.

Tools: `search_articles(query, k)` → passages with source and span, `ask(question)` → the cited
answer (Answer.to_json()), `list_articles()`. Resources: one per indexed article,
`newsrag://articles/<file>`, whose text is the file exactly as indexed, so a citation's
start/end offsets apply to it. Transports: stdio (`rag mcp`) and streamable HTTP
(`rag mcp --http`, at http://127.0.0.1:<port>/mcp, with RAG_API_KEY as bearer token when set).
"""

from __future__ import annotations

import hmac
import logging
import threading
from typing import Any
from urllib.parse import quote

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import Resource

from rag.api.openai_compat import error_body
from rag.types import RagError

logger = logging.getLogger(__name__)

URI_PREFIX = "newsrag://articles/"
MAX_K = 20
INSTRUCTIONS = (
    "Search and answer questions over a local collection of news articles (several "
    "languages). Use `ask` for a short answer whose claims cite exact passages ([n] markers; "
    "`citations` give file, offsets, lines and the quote); it says the articles don't say when "
    "they don't (insufficient_context). Use `search_articles` for raw passages and "
    "`list_articles` or the article resources to read whole articles."
)


def article_uri(source: str) -> str:
    return URI_PREFIX + quote(source, safe="")


class NewsMCP(MCPServer):
    """MCPServer whose resource list is the index's articles, read fresh on every listing
    (articles can be added while it runs)."""

    def __init__(self, pipeline: Any, **kw: Any):
        super().__init__(**kw)
        self.pipeline = pipeline

    async def list_resources(self) -> list[Resource]:
        static = await super().list_resources()
        docs = await anyio.to_thread.run_sync(self.pipeline.documents)
        return static + [
            Resource(uri=article_uri(source), name=source, title=info.title or source,
                     description=f"News article ({info.language}), {info.chars} characters, "
                     f"{info.chunks} passages.", mime_type="text/plain")
            for source, info in sorted(docs.items())
        ]


def build_mcp(pipeline: Any, settings: Any) -> NewsMCP:
    """The MCP server over a pipeline (tests pass fakes). Answers run in worker threads, at
    most settings.api_concurrency at once; a call that cannot get a slot within
    settings.api_wait_seconds fails with a 'busy' tool error."""
    server = NewsMCP(pipeline, name="newsrag", instructions=INSTRUCTIONS,
                     log_level="WARNING")
    slots = threading.BoundedSemaphore(settings.api_concurrency)

    def guarded(fn, *args: Any) -> Any:
        if not slots.acquire(timeout=settings.api_wait_seconds):
            raise ToolError(f"The server is busy ({settings.api_concurrency} answers running); "
                            "try again shortly.")
        try:
            return fn(*args)
        except RagError as e:
            raise ToolError(str(e)) from e
        finally:
            slots.release()

    @server.tool(description="Find the passages of the indexed news articles that best match "
                 "a query (any language). Returns each passage's text with its file (source), "
                 "character span (start, end) and line range.")
    def search_articles(query: str, k: int = 5) -> dict[str, Any]:
        if not 1 <= k <= MAX_K:
            raise ToolError(f"k must be between 1 and {MAX_K}.")
        hits = guarded(pipeline.retrieve, query, k)
        return {"query": query, "passages": [
            {**h.to_json(), "uri": article_uri(h.chunk.source)} for h in hits]}

    @server.tool(description="Answer a question from the news articles, with every claim "
                 "cited: `answer` carries [n] markers and `citations` give each one's file, "
                 "offsets, lines and exact quote. When the articles do not answer it, "
                 "`insufficient_context` is true and there are no citations.")
    def ask(question: str) -> dict[str, Any]:
        answer = guarded(pipeline.ask, question)
        return answer.to_json()

    @server.tool(description="List the indexed news articles: file name, title, language, "
                 "size and resource URI.")
    def list_articles() -> dict[str, Any]:
        docs = guarded(pipeline.documents)
        return {"articles": [
            {"source": s, "title": i.title, "language": i.language, "chars": i.chars,
             "passages": i.chunks, "uri": article_uri(s)} for s, i in sorted(docs.items())]}

    @server.resource(URI_PREFIX + "{source}", name="article", mime_type="text/plain",
                     description="An indexed news article, exactly as indexed (citation "
                     "offsets point into this text).")
    def article(source: str) -> str:
        got = pipeline.document(source)
        if got is None:
            raise ResourceNotFoundError(f"{source} is not an indexed article; list_articles "
                                        "shows the ones there are.")
        _info, text, _kept = got
        return text

    return server


def run_stdio(server: NewsMCP) -> None:
    server.run("stdio")


def http_app(server: NewsMCP, settings: Any, host: str) -> Any:
    """The streamable-HTTP ASGI app at /mcp; behind a bearer-token check when RAG_API_KEY is
    set (and closed when only the chat login is set, as for the OpenAI API)."""
    app = server.streamable_http_app(streamable_http_path="/mcp", host=host)
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    closed = not key and bool(settings.auth_user or settings.auth_password)
    if not key and not closed:
        return app
    expected = key.encode()

    async def guarded_app(scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if closed or scheme.lower() != "bearer" or not hmac.compare_digest(
                    token.strip().encode(), expected):
                from starlette.responses import JSONResponse

                message = ("Set RAG_API_KEY to use MCP over HTTP when the chat has a login."
                           if closed else "Missing or wrong API key: send RAG_API_KEY as "
                           "`Authorization: Bearer <key>`.")
                response = JSONResponse(error_body(message, code="invalid_api_key"),
                                        status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return guarded_app


def run_http(server: NewsMCP, settings: Any, host: str, port: int) -> None:
    import uvicorn

    logger.info("serving MCP (streamable HTTP) at http://%s:%d/mcp", host, port)
    uvicorn.run(http_app(server, settings, host), host=host, port=port, log_level="warning")
