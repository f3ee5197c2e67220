"""Typed records passed between modules: frozen dataclasses, no Chroma or llama-index shapes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One article as read from disk. `text` is the file's exact content (offsets point into it)."""

    source: str  # file name, the citation's name for the article
    path: str
    text: str
    title: str
    language: str  # normalised ISO 639-1 code (bs/hr guesses map to "sr")
    language_guess: str  # what the language identifier actually said
    sha256: str
    chars: int
    # (start, end) spans of `text` that are article body; everything else is page boilerplate.
    kept: tuple[tuple[int, int], ...] = ()

    @property
    def clean_text(self) -> str:
        return "\n".join(self.text[s:e] for s, e in self.kept)


@dataclass(frozen=True)
class Chunk:
    """A passage of one document: `document.text[start:end] == text` always holds."""

    id: str
    source: str
    text: str
    start: int
    end: int
    line_start: int  # 1-based, inclusive
    line_end: int
    title: str = ""
    language: str = ""
    doc_sha256: str = ""
    ordinal: int = 0

    @property
    def lines(self) -> tuple[int, int]:
        return (self.line_start, self.line_end)


@dataclass(frozen=True)
class Retrieved:
    """A chunk with its fused rank and score for one question."""

    chunk: Chunk
    rank: int  # 1-based
    score: float
    dense_rank: int | None = None
    bm25_rank: int | None = None
    # Other articles that carry the same passage (a wire story copied by several outlets):
    # collapsed into this hit so that copies do not crowd the top k, kept as extra sources.
    also: tuple[str, ...] = ()
    # The passages just before and after it in its article (file order), read with it as
    # context: the sentence that answers is often next to the one that matched.
    context: tuple[Chunk, ...] = ()

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.chunk.source, *self.also)

    @property
    def window(self) -> tuple[Chunk, ...]:
        """The passage and its context, in file order."""
        return tuple(sorted((self.chunk, *self.context), key=lambda c: c.start))

    def to_json(self) -> dict[str, Any]:
        c = self.chunk
        return {
            "rank": self.rank,
            "score": round(self.score, 6),
            "source": c.source,
            "also": list(self.also),
            "chunk_id": c.id,
            "start": c.start,
            "end": c.end,
            "lines": [c.line_start, c.line_end],
            "text": c.text,
            "title": c.title,
            "language": c.language,
            "context": [{"chunk_id": x.id, "start": x.start, "end": x.end,
                         "lines": [x.line_start, x.line_end], "text": x.text}
                        for x in self.context],
        }


@dataclass(frozen=True)
class Sentence:
    """A sentence of a retrieved chunk, with its exact span in the source file."""

    source: str
    chunk_id: str
    text: str
    start: int
    end: int
    line_start: int
    line_end: int
    title: str = ""
    language: str = ""


@dataclass(frozen=True)
class Evidence:
    """A numbered piece of evidence shown to the LLM (or quoted verbatim in extractive mode)."""

    n: int
    sentence: Sentence
    score: float
    # Neighbouring text added for context only; the citation span stays `sentence`.
    context_before: str = ""
    context_after: str = ""


@dataclass(frozen=True)
class Citation:
    n: int
    source: str
    chunk_id: str
    start: int
    end: int
    lines: tuple[int, int]
    quote: str  # == source file text[start:end]
    support: float  # 0..1, how well the quote supports the claim that cites it
    title: str = ""
    language: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["lines"] = list(self.lines)
        d["support"] = round(self.support, 4)
        return d


@dataclass(frozen=True)
class Backend:
    name: str  # "extractive", "ollama", "openai", "llamacpp", "scripted", ...
    model: str


@dataclass(frozen=True)
class Timings:
    retrieve_ms: float = 0.0
    first_token_ms: float | None = None
    total_ms: float = 0.0


@dataclass(frozen=True)
class Answer:
    question: str
    answer: str
    language: str
    mode: str  # "generate" | "extractive"
    insufficient_context: bool
    citations: tuple[Citation, ...]
    retrieved: tuple[Retrieved, ...]
    backend: Backend
    timings: Timings = field(default_factory=Timings)
    usage: dict[str, Any] = field(default_factory=dict)
    standalone_question: str | None = None  # the condensed question when history was used
    notes: tuple[str, ...] = ()  # user-facing notes, e.g. "Ollama not reachable: ..."
    unsupported_claims: tuple[str, ...] = ()  # claims left uncited because no evidence backed them

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "language": self.language,
            "mode": self.mode,
            "insufficient_context": self.insufficient_context,
            "citations": [c.to_json() for c in self.citations],
            "retrieved": [r.to_json() for r in self.retrieved],
            "backend": {"name": self.backend.name, "model": self.backend.model},
            "timings": {
                "retrieve_ms": round(self.timings.retrieve_ms, 2),
                "first_token_ms": None
                if self.timings.first_token_ms is None
                else round(self.timings.first_token_ms, 2),
                "total_ms": round(self.timings.total_ms, 2),
            },
            "usage": self.usage,
            "standalone_question": self.standalone_question,
            "notes": list(self.notes),
            "unsupported_claims": list(self.unsupported_claims),
        }


@dataclass(frozen=True)
class IndexReport:
    files: int
    indexed: int
    unchanged: int
    removed: int
    skipped: tuple[tuple[str, str], ...]  # (file, reason)
    chunks: int  # chunks written in this run
    total_chunks: int  # chunks in the collection afterwards
    seconds: float
    encode_seconds: float = 0.0


class RagError(Exception):
    """An error with a message meant for the user: what went wrong and what to do."""
