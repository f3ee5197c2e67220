"""The OpenAI-compatible HTTP API: GET /v1/models, POST /v1/chat/completions, GET /health.

Served alone by `rag serve`, or mounted on the chat's server (rag/app/ui.py passes `api_routes()` to
Gradio's FastAPI app). This layer does HTTP only: bearer auth, body size, a bounded wait for a
free answer slot (429 / 503 instead of an unbounded queue), SSE framing, and errors in OpenAI's
shape; shapes come from `openai_compat`, answers from the pipeline.

Streaming: a generated answer's citation numbers are final only after rag.answering.cite has
verified
them (it drops and renumbers markers), so the stream sends the answer once it is checked; while
the LLM writes, SSE comment lines keep the connection alive. Errors found before the answer
starts (mode, backend, index) get a real HTTP status; later ones arrive as an `error` event.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Mount, Route

from rag.api import openai_compat as oa
from rag.api.openai_compat import ApiError
from rag.types import RagError

logger = logging.getLogger(__name__)

KEEPALIVE_S = 2.0  # an SSE comment at most this often while an answer is being written
RETRY_AFTER_S = 2


class Gate:
    """At most `running` answers at once; at most `waiting` more wait, each for at most
    `timeout` seconds. Anything beyond is refused at once (429), a wait that runs out gets 503:
    a busy server says so instead of queueing without bound."""

    def __init__(self, running: int, waiting: int, timeout: float):
        self.running = running
        self.max_waiting = waiting
        self.timeout = timeout
        self.active = 0
        self.waiting = 0
        self._sem: asyncio.Semaphore | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.running)
        return self._sem

    async def enter(self) -> Callable[[], None]:
        """Wait for a slot; returns the (idempotent) function that frees it."""
        sem = self._semaphore()
        # Places are counted, not the semaphore's state: a request woken for a freed slot
        # still counts as waiting until it runs (wait_for adds a hop), and meanwhile the
        # semaphore looks taken, so `locked() and waiting >= max` refused requests while a
        # place was free (18 clients got 429s from 2 + 16 places).
        if self.active + self.waiting >= self.running + self.max_waiting:
            raise ApiError(429, f"The server is busy: {self.active} answers are being written "
                           f"and {self.waiting} are waiting (RAG_API_CONCURRENCY, "
                           "RAG_API_MAX_WAITING). Try again in a few seconds.",
                           type="rate_limit_error", code="rate_limit_exceeded",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        self.waiting += 1
        try:
            await asyncio.wait_for(sem.acquire(), self.timeout)
        except TimeoutError:
            raise ApiError(503, f"The server stayed busy for {self.timeout:.0f} s "
                           "(RAG_API_WAIT_SECONDS). Try again later.", type="server_error",
                           code="server_busy",
                           headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        finally:
            self.waiting -= 1
        self.active += 1
        lock = threading.Lock()
        done = False

        def leave() -> None:
            nonlocal done
            with lock:
                if done:
                    return
                done = True
            self.active -= 1
            sem.release()

        return leave


class _Job:
    """One streamed answer: the pipeline's event iterator, pulled in a worker thread, and the
    gate slot it holds. close() is idempotent: called when the stream ends, fails, or the
    client hangs up (closing the iterator also closes the LLM's HTTP stream)."""

    def __init__(self, events: Iterator, release: Callable[[], None]):
        self.events = events
        self.release = release
        self._closed = False

    async def next(self) -> tuple[str, Any]:
        item = await anyio.to_thread.run_sync(next, self.events, None)
        if item is None:
            raise RagError("The answer ended without a result; try again.")
        return item

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self.events, "close", None)
            if close is not None:
                close()
        except Exception:  # noqa: BLE001 - closing must never keep the slot
            logger.exception("closing an answer stream failed")
        finally:
            self.release()


class _ClosingStream(StreamingResponse):
    """A StreamingResponse that runs `on_close` however it ends, even when the body was never
    iterated (a client gone before the headers were sent)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None], **kw: Any):
        super().__init__(content, **kw)
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[override]
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _json_error(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _answer_error(e: BaseException) -> ApiError:
    """What a failure while answering becomes for the client."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, RagError):
        # RagError messages are written for users: what went wrong and what to run.
        return ApiError(500, str(e), type="server_error", code="answer_failed")
    logger.error("answer crashed", exc_info=e)
    return ApiError(500, f"Internal error ({type(e).__name__}: {e}). The server is still "
                    "running: try again, and if it keeps failing check the server's log.",
                    type="server_error", code="internal_error")


class OpenAIApi:
    """The API's handlers over one pipeline (anything with ask/stream/documents, and
    optionally `chat_model` for the backend's name and reachability)."""

    def __init__(self, pipeline: Any, settings: Any):
        self.pipeline = pipeline
        self.settings = settings
        self.limits = oa.Limits.from_settings(settings)
        self.gate = Gate(settings.api_concurrency, settings.api_max_waiting,
                         settings.api_wait_seconds)
        self.created = int(time.time())
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        self._key = key.encode() if key else None
        # With a chat login but no API key the API stays closed rather than open to anyone.
        self._closed = self._key is None and bool(settings.auth_user or settings.auth_password)
        if self._closed:
            logger.warning("the chat has a login but RAG_API_KEY is not set: the API at /v1 "
                           "refuses every request until it is")
        elif self._key is None and settings.host not in ("127.0.0.1", "localhost", "::1"):
            logger.warning("the API is served on %s without RAG_API_KEY: anyone who can reach "
                           "it can use it", settings.host)

    # --- plumbing ------------------------------------------------------------------------------
    def authorize(self, request: Request) -> None:
        if self._closed:
            raise ApiError(401, "The chat has a login (RAG_AUTH_USER), so the API needs its "
                           "own key: set RAG_API_KEY on the server and send it as "
                           "`Authorization: Bearer <key>`.", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        if self._key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 self._key):
            raise ApiError(401, "Missing or wrong API key: send the server's RAG_API_KEY as "
                           "`Authorization: Bearer <key>` (the `api_key` of an OpenAI client).",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def read_json(self, request: Request) -> Any:
        limit = self.settings.api_max_request_bytes
        too_big = ApiError(413, f"The request is larger than {limit} bytes "
                           "(RAG_API_MAX_REQUEST_BYTES): send a shorter conversation.",
                           code="request_too_large")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        data = bytearray()
        async for part in request.stream():
            data += part
            if len(data) > limit:
                raise too_big
        try:
            return json.loads(bytes(data))
        except ValueError:
            raise ApiError(400, "The request body is not valid JSON.") from None

    def _info(self) -> dict[str, Any]:
        model = getattr(self.pipeline, "chat_model", None)
        backend = getattr(model, "backend", None)
        try:
            articles: int | None = len(self.pipeline.documents())
        except Exception:  # noqa: BLE001 - the model list must not fail on a store hiccup
            logger.exception("could not count the indexed articles")
            articles = None
        return {"backend": backend.name if backend else None,
                "llm_model": backend.model if backend else None,
                "embedding_model": getattr(self.settings, "embed_id", None),
                "articles": articles}

    # --- handlers ------------------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        self.authorize(request)
        info = await anyio.to_thread.run_sync(self._info)
        return JSONResponse(oa.model_list(self.created, info))

    async def model(self, request: Request) -> Response:
        self.authorize(request)
        model_id = request.path_params["model_id"]
        oa.mode_of(model_id)
        info = await anyio.to_thread.run_sync(self._info)
        return JSONResponse(oa.model_card(model_id, self.created, info))

    async def chat_completions(self, request: Request) -> Response:
        self.authorize(request)
        req = oa.parse_chat_request(await self.read_json(request), self.limits)
        leave = await self.gate.enter()
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        history = [dict(m) for m in req.history]
        if not req.stream:
            try:
                answer = await anyio.to_thread.run_sync(
                    lambda: self.pipeline.ask(req.question, history=history, mode=req.mode))
            except Exception as e:  # noqa: BLE001 - every failure becomes an OpenAI error
                raise _answer_error(e) from e
            finally:
                leave()
            return JSONResponse(oa.completion(answer, req, cid, created))
        try:
            events = await anyio.to_thread.run_sync(
                lambda: self.pipeline.stream(req.question, history=history, mode=req.mode))
        except Exception as e:  # noqa: BLE001
            leave()
            raise _answer_error(e) from e
        job = _Job(iter(events), leave)
        try:
            first = await job.next()
        except BaseException as e:
            job.close()
            if isinstance(e, Exception):
                raise _answer_error(e) from e
            raise
        return _ClosingStream(self._sse(job, first, req, cid, created), job.close,
                              media_type="text/event-stream",
                              headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _sse(self, job: _Job, first: tuple[str, Any], req: oa.ChatRequest, cid: str,
                   created: int) -> AsyncIterator[str]:
        try:
            yield _sse(oa.first_chunk(req, cid, created))
            event = first
            pinged = time.monotonic()
            while event[0] != "answer":
                if time.monotonic() - pinged >= KEEPALIVE_S:
                    pinged = time.monotonic()
                    yield ": writing the answer\n\n"
                event = await job.next()
            for c in oa.final_chunks(event[1], req, cid, created):
                yield _sse(c)
            yield "data: [DONE]\n\n"
        except Exception as e:  # noqa: BLE001 - mid-stream failures become an error event
            yield _sse(_answer_error(e).body())
        finally:
            job.close()

    async def health(self, request: Request) -> Response:
        try:
            self.authorize(request)
        except ApiError as e:
            return _json_error(e)
        report = await anyio.to_thread.run_sync(self._health)
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    def _health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "ok"}
        try:
            docs = self.pipeline.documents()
            out["index"] = {"articles": len(docs),
                            "passages": sum(getattr(d, "chunks", 0) for d in docs.values())}
            if not docs:
                out["status"] = "empty"
                out["message"] = "No articles are indexed: run `rag index` (or add articles)."
        except Exception as e:  # noqa: BLE001 - health reports, never raises
            out["status"] = "error"
            out["message"] = f"The index cannot be read: {e}"
        model = getattr(self.pipeline, "chat_model", None)
        backend: dict[str, Any] = {"name": None, "model": None, "reachable": False,
                                   "error": "no LLM configured: answers are extractive"}
        if model is not None:
            backend = {"name": model.backend.name, "model": model.backend.model,
                       "reachable": True, "error": None}
            try:
                model.check()
            except Exception as e:  # noqa: BLE001
                backend.update(reachable=False, error=str(e))
        out["backend"] = backend
        out["answers"] = {"running": self.gate.active, "waiting": self.gate.waiting,
                          "concurrency": self.gate.running}
        return out


def _v1_app(api: OpenAIApi) -> FastAPI:
    app = FastAPI(title="newsrag OpenAI-compatible API", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_api_route("/models", api.models, methods=["GET"])
    app.add_api_route("/models/{model_id}", api.model, methods=["GET"])
    app.add_api_route("/chat/completions", api.chat_completions, methods=["POST"])

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _json_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            err = ApiError(404, f"No such endpoint: {request.method} /v1{request.url.path}. "
                           "This server offers GET /v1/models and POST /v1/chat/completions.",
                           code="unknown_url")
        elif exc.status_code == 405:
            err = ApiError(405, f"{request.method} is not allowed on /v1{request.url.path}.",
                           code="method_not_allowed")
        else:
            err = ApiError(exc.status_code, str(exc.detail))
        return _json_error(err)

    return app


def api_routes(pipeline: Any, settings: Any) -> list[BaseRoute]:
    """/v1 and /health as routes, to serve alone or to add to another app (the chat's)."""
    api = OpenAIApi(pipeline, settings)
    return [Mount("/v1", app=_v1_app(api)), Route("/health", api.health, methods=["GET"])]


def build_app(pipeline: Any, settings: Any) -> FastAPI:
    """The API alone (what `rag serve` runs)."""
    return FastAPI(title="newsrag", routes=api_routes(pipeline, settings), docs_url=None,
                   redoc_url=None, openapi_url=None)


def serve(pipeline: Any, settings: Any) -> None:
    """Serve the API on settings.host:settings.port until interrupted."""
    import uvicorn

    logger.info("serving the OpenAI-compatible API at http://%s:%d/v1", settings.host,
                settings.port)
    uvicorn.run(build_app(pipeline, settings), host=settings.host, port=settings.port,
                log_level="warning")
