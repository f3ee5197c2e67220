"""Chat LLM backends behind one narrow interface: `check()` and `stream(messages)`.

Backends are llama-index LLM classes (Ollama, OpenAILike, LlamaCPP); every library or network
failure is turned into a `RagError` whose message tells the user what to do. The llama-index
modules are imported only when a backend is built, so `import rag.llm.backends` stays cheap for the
UI and
for tests that only need `ScriptedChatModel`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import httpx

from rag.llm.gguf import MODEL_FILE as DEFAULT_GGUF_FILE
from rag.types import Backend, RagError

if TYPE_CHECKING:
    from rag.settings import Settings

log = logging.getLogger(__name__)

Message = dict[str, str]

# check() runs before every answer in "auto" mode; it must not stall the UI when nothing listens.
CHECK_TIMEOUT = 2.0
ROLES = ("system", "user", "assistant")

LLAMACPP_INSTALL_HINT = (
    "The llamacpp backend needs llama-cpp-python, which is built from source. Install it with:\n"
    '  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
    "pip install -e '.[llamacpp]'\n"
    "(the build takes a few minutes; the flags keep the binary portable across x86-64 CPUs)"
)


@runtime_checkable
class ChatModel(Protocol):
    """What the answer pipeline needs from an LLM."""

    backend: Backend
    # Filled by each completed stream(): prompt_tokens, completion_tokens, total_tokens, and
    # tokens_per_s / finish_reason when the backend reports them. Empty before the first stream.
    last_usage: dict[str, Any]

    def check(self) -> None:
        """Raise RagError if the backend is unreachable or the model is missing. Fast."""
        ...

    def stream(self, messages: list[Message]) -> Iterator[str]:
        """Yield the reply's text deltas; raise RagError on failure (possibly mid-stream)."""
        ...


class _ThreadUsage:
    """`last_usage` per calling thread: one chat model serves many users at once, and each
    must read the usage of its own stream, not of whichever stream finished last."""

    @property
    def last_usage(self) -> dict[str, Any]:
        local = self.__dict__.get("_usage_local")
        return getattr(local, "value", {}) if local is not None else {}

    @last_usage.setter
    def last_usage(self, value: dict[str, Any]) -> None:
        # dict.setdefault is atomic: two first writers never end up with two locals.
        self.__dict__.setdefault("_usage_local", threading.local()).value = value


def complete(model: ChatModel, messages: list[Message]) -> str:
    """The whole reply as one string (for short internal calls such as condensing a question)."""
    return "".join(model.stream(messages))


def _validate(messages: Sequence[Message]) -> None:
    if not messages:
        raise ValueError("messages must not be empty")
    for m in messages:
        if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"bad chat message {m!r}: need role in {ROLES} and str content")


def _usage(prompt: int | None, completion: int | None, **extra: Any) -> dict[str, Any]:
    usage: dict[str, Any] = {}
    if prompt is not None:
        usage["prompt_tokens"] = int(prompt)
    if completion is not None:
        usage["completion_tokens"] = int(completion)
    if prompt is not None and completion is not None:
        usage["total_tokens"] = int(prompt) + int(completion)
    usage.update({k: v for k, v in extra.items() if v is not None})
    return usage


def _base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    # "localhost:11434" is how people write it (and how OLLAMA_HOST is often set).
    return url if urlsplit(url).scheme in ("http", "https") else f"http://{url}"


# --------------------------------------------------------------------------------------------
# llama-index backed models
# --------------------------------------------------------------------------------------------


class _LlamaIndexChatModel(_ThreadUsage):
    """Shared streaming loop over a llama-index LLM's `stream_chat`."""

    backend: Backend

    def __init__(self, llm: Any, backend: Backend) -> None:
        self.llm = llm  # the llama-index LLM, for callers that want to plug it in elsewhere
        self.backend = backend
        self.last_usage: dict[str, Any] = {}

    def stream(self, messages: list[Message]) -> Iterator[str]:
        _validate(messages)
        from llama_index.core.llms import ChatMessage

        chat = [ChatMessage(role=m["role"], content=m["content"]) for m in messages]
        self.last_usage = {}
        started = time.perf_counter()
        deltas = 0
        raw: Any = None
        responses: Any = None
        try:
            responses = self.llm.stream_chat(chat)
            for response in responses:
                raw = response.raw
                usage = self._usage_from(raw)
                if usage:
                    self.last_usage = usage
                if response.delta:
                    deltas += 1
                    yield response.delta
        except RagError:
            raise
        except Exception as e:  # the libraries raise many types; all mean "no answer"
            raise self._error(e) from e
        finally:
            # A caller that stops reading (the UI's stop button) closes us; closing the library's
            # generator now drops the HTTP stream, and the server stops generating tokens.
            if responses is not None and hasattr(responses, "close"):
                responses.close()
        if not self.last_usage:
            # Servers that report no usage still stream about one token per delta.
            self.last_usage = _usage(None, deltas, usage_estimated=True)
        self.last_usage.setdefault("seconds", round(time.perf_counter() - started, 3))
        log.debug("%s/%s usage %s (last raw %r)", self.backend.name, self.backend.model,
                  self.last_usage, type(raw).__name__)

    def _usage_from(self, raw: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _error(self, e: Exception) -> RagError:
        raise NotImplementedError


class OllamaChatModel(_LlamaIndexChatModel):
    def __init__(self, settings: Settings, model: str | None = None) -> None:
        from llama_index.llms.ollama import Ollama

        self.url = _base_url(settings.ollama_url)
        self.model = model or settings.ollama_model
        self.timeout = settings.llm_timeout
        llm = Ollama(
            model=self.model,
            base_url=self.url,
            temperature=settings.temperature,
            # llama-index sends context_window as options.num_ctx. It must always be explicit:
            # Ollama's own default (2048-4096) silently cuts the evidence off the prompt, and the
            # class's fallback (-1) would cost an /api/show round trip before every answer.
            context_window=settings.num_ctx,
            request_timeout=settings.llm_timeout,
            additional_kwargs={"num_predict": settings.max_answer_tokens},
        )
        super().__init__(llm, Backend("ollama", self.model))

    def check(self) -> None:
        try:
            r = httpx.get(f"{self.url}/api/tags", timeout=CHECK_TIMEOUT)
            r.raise_for_status()
            listed = r.json().get("models") or []
        except httpx.HTTPStatusError as e:
            raise RagError(
                f"Ollama at {self.url} answered /api/tags with HTTP {e.response.status_code}; "
                "is that really Ollama?"
            ) from e
        except (httpx.HTTPError, ValueError) as e:
            raise self._unreachable(e) from e
        names = {_ollama_name(m.get(k, "")) for m in listed for k in ("name", "model")}
        if _ollama_name(self.model) not in names:
            raise self._not_pulled(sorted(n for n in names if n))

    def _unreachable(self, e: Exception) -> RagError:
        return RagError(
            f"Ollama is not reachable at {self.url} — install it from ollama.com and run "
            f"`ollama serve` ({type(e).__name__}: {e})"
        )

    def _not_pulled(self, available: Sequence[str] = ()) -> RagError:
        have = f" (installed: {', '.join(available)})" if available else ""
        return RagError(
            f"Ollama has no model '{self.model}' — run `ollama pull {self.model}`{have}"
        )

    def _usage_from(self, raw: Any) -> dict[str, Any]:
        if not raw or not raw.get("done"):
            return {}
        prompt, completion = raw.get("prompt_eval_count"), raw.get("eval_count")
        duration_ns = raw.get("eval_duration") or 0
        rate = round(completion / (duration_ns / 1e9), 2) if completion and duration_ns else None
        return _usage(prompt, completion, tokens_per_s=rate, finish_reason=raw.get("done_reason"))

    def _error(self, e: Exception) -> RagError:
        from ollama import ResponseError

        if isinstance(e, ResponseError):
            if e.status_code == 404 or "not found" in str(e.error).lower():
                return self._not_pulled()
            return RagError(f"Ollama ({self.model}) failed: {e.error}")
        if isinstance(e, httpx.TimeoutException):
            return RagError(
                f"Ollama ({self.model}) did not answer within {self.timeout:g} s; "
                "raise llm_timeout or use a smaller model"
            )
        if isinstance(e, ConnectionError | httpx.TransportError):
            return self._unreachable(e)
        return RagError(f"Ollama ({self.model}) failed: {type(e).__name__}: {e}")


def _ollama_name(name: str) -> str:
    # Ollama lists "qwen2.5" as "qwen2.5:latest"; compare the canonical form.
    if not name:
        return ""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class OpenAIChatModel(_LlamaIndexChatModel):
    """Any OpenAI-compatible chat server: vLLM, llama.cpp's llama-server, LM Studio, ..."""

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        from llama_index.llms.openai_like import OpenAILike

        self.url = _base_url(settings.openai_base_url)
        self.model = model or settings.openai_model
        self.api_key = settings.openai_api_key
        self.timeout = settings.llm_timeout
        llm = OpenAILike(
            model=self.model,
            api_base=self.url,
            api_key=self.api_key,
            is_chat_model=True,
            context_window=settings.num_ctx,
            temperature=settings.temperature,
            max_tokens=settings.max_answer_tokens,
            timeout=settings.llm_timeout,
            # Retries with backoff would turn "server down" into a long silent wait.
            max_retries=0,
            # Without this OpenAI-style servers send no token counts when streaming.
            additional_kwargs={"stream_options": {"include_usage": True}},
        )
        super().__init__(llm, Backend("openai", self.model))

    def check(self) -> None:
        try:
            r = httpx.get(
                f"{self.url}/models",
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=CHECK_TIMEOUT,
            )
            r.raise_for_status()
            ids = [m.get("id") for m in r.json().get("data") or []]
        except httpx.HTTPStatusError as e:
            raise RagError(
                f"The OpenAI-compatible server at {self.url} answered /models with HTTP "
                f"{e.response.status_code}; check openai_base_url (it usually ends in /v1) "
                "and openai_api_key"
            ) from e
        except (httpx.HTTPError, ValueError) as e:
            raise self._unreachable(e) from e
        # llama-server answers to any model name, vLLM only to its served name: warn, not fail.
        if ids and self.model not in ids:
            log.warning("server at %s lists models %s, not %r", self.url, ids, self.model)

    def _unreachable(self, e: Exception) -> RagError:
        return RagError(
            f"The OpenAI-compatible server at {self.url} is not reachable — start it (e.g. "
            f"`llama-server -m model.gguf --port 8080` or `vllm serve <model>`) "
            f"({type(e).__name__}: {e})"
        )

    def _usage_from(self, raw: Any) -> dict[str, Any]:
        usage = getattr(raw, "usage", None)
        if usage is None:
            return {}
        return _usage(getattr(usage, "prompt_tokens", None),
                      getattr(usage, "completion_tokens", None))

    def _error(self, e: Exception) -> RagError:
        import openai

        if isinstance(e, openai.NotFoundError):
            return RagError(
                f"The server at {self.url} has no model '{self.model}' (HTTP 404); "
                "set openai_model to a name it serves (see GET /models)"
            )
        if isinstance(e, openai.APITimeoutError):
            return RagError(f"The server at {self.url} did not answer within {self.timeout:g} s")
        if isinstance(e, openai.APIConnectionError):
            return self._unreachable(e)
        if isinstance(e, openai.APIStatusError):
            return RagError(f"The server at {self.url} failed (HTTP {e.status_code}): {e.message}")
        return RagError(f"The server at {self.url} failed: {type(e).__name__}: {e}")


class LlamaCppChatModel(_ThreadUsage):
    """A GGUF file run in-process by llama-cpp-python (optional extra, imported on first use).

    Without a model path (argument or settings.llamacpp_model_path) it runs the GGUF shipped by
    the `llamacpp` extra, assembled into the cache dir on first load (see rag.llm.gguf).
    """

    def __init__(self, settings: Settings, model_path: str | Path | None = None) -> None:
        path = model_path or settings.llamacpp_model_path
        self.path = Path(path).expanduser() if path else None
        self.settings = settings
        self.backend = Backend("llamacpp", self.path.name if self.path else DEFAULT_GGUF_FILE)
        self.last_usage: dict[str, Any] = {}
        self._llm: Any = None
        # A llama.cpp context is not thread-safe; the UI may call from several threads.
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._llm is not None:
            return self._llm
        if self.path is None:
            from rag.llm.gguf import default_model_path

            # Raises a RagError naming the extra to install when the part packages are missing.
            self.path = default_model_path()
        if not self.path.is_file():
            raise RagError(f"GGUF model file {self.path} does not exist")
        try:
            from llama_index.llms.llama_cpp import LlamaCPP
        except ImportError as e:
            raise RagError(f"{LLAMACPP_INSTALL_HINT}\n({e})") from e
        s = self.settings
        log.info("loading GGUF %s (n_ctx=%d, threads=%d)", self.path, s.num_ctx, s.llamacpp_threads)
        try:
            self._llm = LlamaCPP(
                model_path=str(self.path),
                temperature=s.temperature,
                max_new_tokens=s.max_answer_tokens,
                context_window=s.num_ctx,
                model_kwargs={"n_threads": s.llamacpp_threads},
                verbose=False,
            )
        except Exception as e:
            raise RagError(f"llama.cpp could not load {self.path}: {e}") from e
        return self._llm

    def check(self) -> None:
        self._load()

    def stream(self, messages: list[Message]) -> Iterator[str]:
        _validate(messages)
        llm = self._load()
        self.last_usage = {}
        started = time.perf_counter()
        deltas = 0
        finish = None
        # LlamaCPP.stream_chat flattens messages with a generic "user: ..." prompt; the GGUF's own
        # chat template (applied by create_chat_completion) is what instruct models were tuned on.
        with self._lock:
            try:
                chunks = llm._model.create_chat_completion(
                    messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                    stream=True,
                    temperature=self.settings.temperature,
                    max_tokens=self.settings.max_answer_tokens,
                )
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    finish = choice.get("finish_reason") or finish
                    text = choice.get("delta", {}).get("content")
                    if text:
                        deltas += 1
                        yield text
            except Exception as e:
                raise RagError(f"llama.cpp failed while answering: {e}") from e
        seconds = time.perf_counter() - started
        # llama.cpp streams one token per chunk and reports no usage while streaming.
        self.last_usage = _usage(
            None, deltas, tokens_per_s=round(deltas / seconds, 2) if seconds else None,
            finish_reason=finish, seconds=round(seconds, 3),
        )


# --------------------------------------------------------------------------------------------
# Test double
# --------------------------------------------------------------------------------------------


class ScriptedChatModel(_ThreadUsage):
    """A fake ChatModel for tests and UI tests: streams the scripted replies in order.

    Each reply is a string (streamed in `chunk_size`-character pieces), an exception (raised before
    anything is streamed) or a (text, exception) pair (the text is streamed, then the exception is
    raised: a backend dying mid-answer). Every `messages` list received is recorded in `.calls`.
    """

    def __init__(
        self,
        replies: Sequence[str | BaseException | tuple[str, BaseException]],
        chunk_size: int = 4,
        *,
        delay: float = 0.0,
        repeat_last: bool = False,
        check_error: RagError | None = None,
        model: str = "scripted",
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.replies = list(replies)
        self.chunk_size = chunk_size
        self.delay = delay  # seconds before each piece, for UI tests that watch streaming
        self.repeat_last = repeat_last
        self.check_error = check_error
        self.backend = Backend("scripted", model)
        self.calls: list[list[Message]] = []
        self.checks = 0
        self.last_usage: dict[str, Any] = {}
        self._next = 0

    def check(self) -> None:
        self.checks += 1
        if self.check_error is not None:
            raise self.check_error

    def _take(self) -> str | BaseException | tuple[str, BaseException]:
        if self._next < len(self.replies):
            reply = self.replies[self._next]
            self._next += 1
            return reply
        if self.repeat_last and self.replies:
            return self.replies[-1]
        # Failing loudly beats inventing text: a test that calls the LLM more often than it
        # scripted has found a behaviour change.
        raise RagError(f"ScriptedChatModel ran out of replies after {len(self.replies)} call(s)")

    def stream(self, messages: list[Message]) -> Iterator[str]:
        _validate(messages)
        self.calls.append([dict(m) for m in messages])
        reply = self._take()
        self.last_usage = {}
        error: BaseException | None = None
        if isinstance(reply, BaseException):
            reply, error = "", reply
        elif isinstance(reply, tuple):
            reply, error = reply
        pieces = [reply[i : i + self.chunk_size] for i in range(0, len(reply), self.chunk_size)]
        for piece in pieces:
            if self.delay:
                time.sleep(self.delay)
            yield piece
        if error is not None:
            raise error
        self.last_usage = _usage(
            sum(len(m["content"].split()) for m in messages), len(pieces), usage_estimated=True
        )


# --------------------------------------------------------------------------------------------


def build_chat_model(
    settings: Settings, backend: str | None = None, model: str | None = None
) -> ChatModel:
    """The configured LLM backend (`backend`/`model` override the settings).

    Building does no I/O and does not load any model; call `check()` to find out whether the
    backend can answer. Only an unknown backend name raises here.
    """
    name = backend or settings.backend
    log.debug("building %s chat model (%s)", name, model or "model from settings")
    if name == "ollama":
        return OllamaChatModel(settings, model)
    if name == "openai":
        return OpenAIChatModel(settings, model)
    if name == "llamacpp":
        return LlamaCppChatModel(settings, model)
    raise RagError(f"Unknown LLM backend {name!r}: use ollama, openai or llamacpp")
