"""OpenAI chat-completion shapes ⇄ the pipeline's records. Pure translation: no HTTP, no I/O.

A chat client sends the whole conversation; the last user message is the question and the earlier
user/assistant turns become the history that follow-up condensing reads. The reply's text is the
answer with its [n] markers, then a compact sources list (file, lines, quote) so that a client
that knows nothing of newsrag still shows a readable, cited answer; the structured citations and
`insufficient_context` travel in the extra `newsrag` field of the response (and of the final
stream chunk).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rag.types import Answer, Citation

# The answer modes, offered as models.
MODEL_MODES: dict[str, str] = {
    "newsrag": "auto",
    "newsrag-generate": "generate",
    "newsrag-extractive": "extractive",
}
EXTRA_FIELD = "newsrag"
SOURCES_HEADER = "Sources:"
NOTE_PREFIX = "Note: "
QUOTE_CHARS = 200  # a source line quotes at most this much of its passage
# What this API appends to an answer; cut off again when the client sends the turn back.
_SUFFIX = re.compile(r"\n\n(?:Sources:\n|Note: )")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_TEXT_PARTS = ("text", "input_text")
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


class ApiError(Exception):
    """An error to return in OpenAI's shape: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass(frozen=True)
class Limits:
    max_messages: int = 200
    history_messages: int = 10
    max_question_chars: int = 2000

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(max_messages=settings.api_max_messages,
                   history_messages=settings.api_history_messages,
                   max_question_chars=settings.max_question_chars)


@dataclass(frozen=True)
class ChatRequest:
    model: str
    mode: str  # auto | generate | extractive
    question: str
    history: tuple[dict[str, str], ...]  # earlier turns, [{"role", "content"}], oldest first
    stream: bool = False
    include_usage: bool = False

    @property
    def prompt_text(self) -> str:
        """What the client sent that was read (for the usage estimate without an LLM)."""
        return "\n".join([*(m["content"] for m in self.history), self.question])


# --- requests -------------------------------------------------------------------------------


def mode_of(model: Any) -> str:
    """The answer mode of a model id, or ApiError 404 with the ids there are."""
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "`model` is required: use one of " + _model_names() + ".",
                       param="model", code="missing_model")
    mode = MODEL_MODES.get(model.strip())
    if mode is None:
        raise ApiError(404, f"The model {model!r} does not exist: use one of {_model_names()} "
                       "(GET /v1/models lists them).", param="model", code="model_not_found")
    return mode


def parse_chat_request(body: Any, limits: Limits) -> ChatRequest:
    """Check a /v1/chat/completions body and turn it into a ChatRequest (or raise ApiError).

    Sampling options (temperature, max_tokens, ...) are accepted and ignored: answers are
    written by the configured backend with its own settings, and system messages are ignored
    because the answer prompt is the product's own (it is what keeps answers cited)."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object with `model` and `messages`.")
    mode = mode_of(body.get("model"))
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ApiError(400, "`stream` must be true or false.", param="stream")
    n = body.get("n")
    if n not in (None, 1):
        raise ApiError(400, "Only one choice per request is supported: leave `n` out or set 1.",
                       param="n")
    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "`messages` must be a non-empty list of {role, content} messages, "
                       "the last one the user's question.", param="messages")
    if len(messages) > limits.max_messages:
        raise ApiError(413, f"The conversation has {len(messages)} messages; the limit is "
                       f"{limits.max_messages} (RAG_API_MAX_MESSAGES). Start a new chat.",
                       param="messages", code="too_many_messages")
    turns = [_message(m, i) for i, m in enumerate(messages)]
    role, question = turns[-1]
    if role != "user":
        raise ApiError(400, "The last message must be the user's question (role \"user\").",
                       param=f"messages[{len(turns) - 1}].role")
    question = question.strip()
    if not question:
        raise ApiError(400, "The question is empty: type a question about the articles.",
                       param=f"messages[{len(turns) - 1}].content")
    if len(question) > limits.max_question_chars:
        raise ApiError(413, f"The question is {len(question)} characters long; the limit is "
                       f"{limits.max_question_chars} (RAG_MAX_QUESTION_CHARS). Ask something "
                       "shorter.", param=f"messages[{len(turns) - 1}].content",
                       code="question_too_long")
    history = [{"role": r, "content": strip_suffix(t) if r == "assistant" else t.strip()}
               for r, t in turns[:-1] if r in ("user", "assistant") and t.strip()]
    keep = history[-limits.history_messages:] if limits.history_messages else []
    return ChatRequest(model=body["model"].strip(), mode=mode, question=question,
                       history=tuple(keep), stream=stream, include_usage=include_usage)


def _message(m: Any, i: int) -> tuple[str, str]:
    if not isinstance(m, dict):
        raise ApiError(400, f"messages[{i}] must be an object with `role` and `content`.",
                       param=f"messages[{i}]")
    role = m.get("role")
    if role not in _ROLES:
        raise ApiError(400, f"messages[{i}].role must be one of {', '.join(_ROLES)}.",
                       param=f"messages[{i}].role")
    return role, _content_text(m.get("content"), i)


def _content_text(content: Any, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in _TEXT_PARTS:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(400, f"messages[{i}].content has a {kind!r} part: only text "
                               "is supported.", param=f"messages[{i}].content")
            texts.append(str(part.get("text") or ""))
        return "\n".join(texts)
    raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts.",
                   param=f"messages[{i}].content")


def strip_suffix(text: str) -> str:
    """An assistant turn as the history should see it: without the sources list and notes
    this API appended (the condensing step wants the answer, not the bibliography)."""
    m = _SUFFIX.search(text)
    return (text[:m.start()] if m else text).strip()


# --- responses ------------------------------------------------------------------------------


def answer_text(answer: Answer) -> str:
    """The reply's content: the answer with its [n] markers, the sources list, any notes."""
    parts = [answer.answer.strip()]
    if answer.citations:
        parts.append(sources_block(answer.citations))
    parts += [NOTE_PREFIX + note for note in answer.notes]
    return "\n\n".join(p for p in parts if p)


def sources_block(citations: Sequence[Citation]) -> str:
    lines = [SOURCES_HEADER]
    for c in citations:
        lines.append(f"- [{c.n}] {c.source}, {lines_label(c.lines)}: “{short_quote(c.quote)}”")
    return "\n".join(lines)


def lines_label(lines: Sequence[int]) -> str:
    a, b = lines
    return f"line {a}" if a == b else f"lines {a}–{b}"


def short_quote(quote: str, limit: int = QUOTE_CHARS) -> str:
    flat = " ".join(quote.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0] or flat[:limit]
    return cut + "…"


def extra(answer: Answer, *, usage_estimated: bool) -> dict[str, Any]:
    """The newsrag field: what a client that knows newsrag needs to render citations itself."""
    data = answer.to_json()
    return {
        "answer": data["answer"],
        "insufficient_context": data["insufficient_context"],
        "citations": data["citations"],
        "mode": data["mode"],
        "language": data["language"],
        "backend": data["backend"],
        "standalone_question": data["standalone_question"],
        "notes": data["notes"],
        "unsupported_claims": data["unsupported_claims"],
        "timings": data["timings"],
        "usage_estimated": usage_estimated,
    }


def count_tokens(text: str) -> int:
    """A rough token count (words and punctuation) for answers no LLM counted."""
    return len(_TOKEN.findall(text))


def usage(answer: Answer, request: ChatRequest, content: str) -> tuple[dict[str, int], bool]:
    """(usage, estimated): the LLM's own counts when it reported them, else an estimate from
    the text read (the conversation) and the text sent back."""
    u = answer.usage or {}
    if (isinstance(u.get("prompt_tokens"), int) and isinstance(u.get("completion_tokens"), int)
            and not u.get("usage_estimated")):
        p, c, estimated = u["prompt_tokens"], u["completion_tokens"], False
    else:
        p, c, estimated = count_tokens(request.prompt_text), count_tokens(content), True
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}, estimated


def completion(answer: Answer, request: ChatRequest, cid: str, created: int) -> dict[str, Any]:
    """A complete `chat.completion` object."""
    content = answer_text(answer)
    used, estimated = usage(answer, request, content)
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "system_fingerprint": None,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": used,
        EXTRA_FIELD: extra(answer, usage_estimated=estimated),
    }


def chunk(cid: str, created: int, model: str, delta: dict[str, Any], *,
          finish_reason: str | None = None, **more: Any) -> dict[str, Any]:
    """One `chat.completion.chunk`."""
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None,
                     "finish_reason": finish_reason}],
        **more,
    }


def first_chunk(request: ChatRequest, cid: str, created: int) -> dict[str, Any]:
    return chunk(cid, created, request.model, {"role": "assistant", "content": ""})


def final_chunks(answer: Answer, request: ChatRequest, cid: str,
                 created: int) -> Iterable[dict[str, Any]]:
    """The chunks that carry a finished answer: the answer text, the sources list and notes,
    then the closing chunk with finish_reason, usage and the newsrag field (and, when the
    client asked with stream_options.include_usage, OpenAI's usage-only chunk)."""
    content = answer_text(answer)
    used, estimated = usage(answer, request, content)
    body = answer.answer.strip()
    yield chunk(cid, created, request.model, {"content": body})
    if content != body:
        yield chunk(cid, created, request.model, {"content": content[len(body):]})
    yield chunk(cid, created, request.model, {}, finish_reason="stop", usage=used,
                **{EXTRA_FIELD: extra(answer, usage_estimated=estimated)})
    if request.include_usage:
        last = chunk(cid, created, request.model, {}, usage=used)
        last["choices"] = []
        yield last


def model_card(model_id: str, created: int, info: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of /v1/models. `info`: backend name and model, embedding model, articles."""
    mode = MODEL_MODES[model_id]
    extractive = mode == "extractive"
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "newsrag",
        "metadata": {
            "mode": mode,
            "backend": "extractive" if extractive else info.get("backend"),
            "llm_model": None if extractive else info.get("llm_model"),
            "embedding_model": info.get("embedding_model"),
            "articles": info.get("articles"),
        },
    }


def model_list(created: int, info: Mapping[str, Any]) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(m, created, info) for m in MODEL_MODES]}


def _model_names() -> str:
    return ", ".join(MODEL_MODES)
