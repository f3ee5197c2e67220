"""A real HTTP server on 127.0.0.1 that speaks enough of Ollama's API for our client.

    with FakeOllama(models=["qwen2.5:7b"], replies=["Sofia is the capital [1]."]) as ollama:
        settings = load_settings(ollama_url=ollama.url)
        ...
        ollama.chat_requests[-1]["options"]["num_ctx"]

Endpoints: GET /api/tags, GET /api/version, POST /api/show, POST /api/chat (NDJSON streaming,
the default as in Ollama, or one JSON object with "stream": false). Unknown models get Ollama's
404 `{"error": "model \"x\" not found, try pulling it first"}`. Every request is recorded.

Token counts are deterministic so tests can assert them: prompt_eval_count is the number of
whitespace-separated words in all messages, eval_count the number of streamed pieces.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

DEFAULT_REPLY = "The articles say so [1]."
EVAL_DURATION_NS_PER_TOKEN = 20_000_000  # 50 tokens/s


def not_found(model: str) -> dict[str, str]:
    return {"error": f'model "{model}" not found, try pulling it first'}


class FakeOllama:
    def __init__(
        self,
        models: Iterable[str] = ("qwen2.5:7b",),
        replies: Iterable[str] = (),
        *,
        chunk_size: int = 5,
        chunk_delay: float = 0.0,
        context_length: int = 32768,
        stream_error: str | None = None,
    ) -> None:
        self.models = list(models)
        self.replies = list(replies)
        self.chunk_size = chunk_size
        self.chunk_delay = chunk_delay
        self.context_length = context_length
        # When set, /api/chat streams one piece and then an {"error": ...} line, as Ollama does
        # when a runner crashes mid-generation.
        self.stream_error = stream_error
        self.requests: list[dict[str, Any]] = []  # {"method", "path", "body"}
        # Streams that ran to the end vs. streams whose client hung up before the end.
        self.streams_completed = 0
        self.streams_aborted = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeOllama:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Clients keep connections alive; don't let stop() wait for them to hang up.
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- what tests look at -----------------------------------------------------------------
    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"] == "/api/chat"]

    def paths(self) -> list[str]:
        return [f"{r['method']} {r['path']}" for r in self.requests]

    # --- behaviour ----------------------------------------------------------------------------
    def _record(self, method: str, path: str, body: Any) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "body": body})

    def _next_reply(self) -> str:
        with self._lock:
            return self.replies.pop(0) if self.replies else DEFAULT_REPLY

    def has(self, model: str) -> bool:
        canonical = model if ":" in model else f"{model}:latest"
        return canonical in self.models or model in self.models


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeOllama
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    # --- plumbing -----------------------------------------------------------------------------
    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            return {"_raw": raw.decode("utf-8", "replace")}

    def _chunk(self, obj: Any) -> None:
        data = (json.dumps(obj) + "\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # --- endpoints ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        fake = self.server_fake
        fake._record("GET", self.path, None)
        if self.path == "/api/tags":
            self._json(200, {"models": [_tag(m) for m in fake.models]})
        elif self.path == "/api/version":
            self._json(200, {"version": "0.12.6"})
        else:
            self._json(404, {"error": "404 page not found"})

    def do_POST(self) -> None:
        fake = self.server_fake
        body = self._body()
        fake._record("POST", self.path, body)
        if self.path == "/api/show":
            model = body.get("model") or body.get("name") or ""
            if not fake.has(model):
                self._json(404, not_found(model))
                return
            self._json(200, {
                "modelfile": "", "parameters": "", "template": "{{ .Prompt }}",
                "details": {"family": "qwen2", "parameter_size": "7.6B",
                            "quantization_level": "Q4_K_M"},
                "model_info": {"general.architecture": "qwen2",
                               "qwen2.context_length": fake.context_length},
                "capabilities": ["completion"],
            })
        elif self.path == "/api/chat":
            self._chat(body)
        else:
            self._json(404, {"error": "404 page not found"})

    def _chat(self, body: dict[str, Any]) -> None:
        fake = self.server_fake
        model = body.get("model", "")
        if not fake.has(model):
            self._json(404, not_found(model))
            return
        reply = fake._next_reply()
        pieces = [reply[i : i + fake.chunk_size] for i in range(0, len(reply), fake.chunk_size)]
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        final = {
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": 100_000_000,
            "eval_count": len(pieces),
            "eval_duration": len(pieces) * EVAL_DURATION_NS_PER_TOKEN,
        }
        head = {"model": model, "created_at": "2025-01-01T00:00:00Z"}
        if body.get("stream", True) is False:
            self._json(200, {**head, "message": {"role": "assistant", "content": reply}, **final})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i, piece in enumerate(pieces):
                if fake.chunk_delay:
                    time.sleep(fake.chunk_delay)
                if fake.stream_error is not None and i == 1:
                    self._chunk({"error": fake.stream_error})
                    break
                self._chunk({**head, "message": {"role": "assistant", "content": piece},
                             "done": False})
            else:
                self._chunk({**head, "message": {"role": "assistant", "content": ""}, **final})
            self.wfile.write(b"0\r\n\r\n")
            fake.streams_completed += 1
        except (BrokenPipeError, ConnectionResetError):  # the client gave up
            fake.streams_aborted += 1
            self.close_connection = True


def _tag(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-01-01T00:00:00Z",
        "size": 4_683_087_332,
        "digest": "0" * 64,
        "details": {"format": "gguf", "family": "qwen2", "parameter_size": "7.6B",
                    "quantization_level": "Q4_K_M"},
    }


@pytest.fixture
def fake_ollama():
    """A started FakeOllama with the default model; set `.replies` / `.models` in the test."""
    with FakeOllama() as server:
        yield server
