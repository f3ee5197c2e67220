"""A small stand-in for rag.pipeline.Pipeline, for UI unit tests: same methods, no models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rag.indexing.ingest import (
    EXTENSIONS,
    Skipped,
    content_hash,
    document_from_bytes,
    read_document,
)
from rag.pipeline import AddResult, safe_name
from rag.store import DocInfo
from rag.types import (
    Answer,
    Backend,
    Chunk,
    Citation,
    IndexReport,
    RagError,
    Retrieved,
    Timings,
)

ARTICLE = (
    "Северна Корея изпрати снаряди\n"
    "\n"
    "Почти 5 милиона артилерийски снаряда, както и балистични ракети, бяха изпратени.\n"
    "Министърът каза това пред Bloomberg. <script>alert(1)</script> <img src=x onerror=alert(2)>\n"
)


def make_doc(source: str, text: str, language: str = "bg") -> tuple[DocInfo, str, list]:
    kept = []
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        if body.strip():
            kept.append((pos, pos + len(body)))
        pos += len(line)
    info = DocInfo(source=source, sha256=content_hash(text.encode()),
                   title=text.splitlines()[0], language=language, language_guess=language,
                   chars=len(text), chunks=1, path=f"/seeds/{source}")
    return info, text, kept


def quote_citation(n: int, source: str, text: str, quote: str, language: str = "bg",
                   title: str = "") -> Citation:
    start = text.index(quote)
    end = start + len(quote)
    line = text.count("\n", 0, start) + 1
    return Citation(n=n, source=source, chunk_id=f"{source}#0", start=start, end=end,
                    lines=(line, line), quote=quote, support=0.9, title=title,
                    language=language)


def make_answer(text: str, citations: tuple[Citation, ...] = (), *, mode: str = "generate",
                insufficient: bool = False, question: str = "q?", notes: tuple[str, ...] = (),
                retrieved: tuple[Retrieved, ...] = ()) -> Answer:
    return Answer(
        question=question, answer=text, language="en", mode=mode,
        insufficient_context=insufficient, citations=citations, retrieved=retrieved,
        backend=Backend("scripted" if mode == "generate" else "extractive",
                        "scripted" if mode == "generate" else ""),
        timings=Timings(retrieve_ms=12.3, first_token_ms=45.0 if mode == "generate" else None,
                        total_ms=1234.0),
        notes=notes,
    )


def chunk_of(source: str, text: str, start: int, end: int, rank: int,
             score: float = 0.5) -> Retrieved:
    line = text.count("\n", 0, start) + 1
    ch = Chunk(id=f"{source}#{rank}", source=source, text=text[start:end], start=start, end=end,
               line_start=line, line_end=text.count("\n", 0, end) + 1, title="T", language="bg")
    return Retrieved(chunk=ch, rank=rank, score=score)


class FakePipeline:
    """Streams scripted (deltas, answer) pairs; documents come from an in-memory dict.

    Implements rag.pipeline.PipelineProtocol (checked in test_ui_handlers), so the UI is tested
    against the interface the real Pipeline has. `fail_next_add` makes the next add_document
    fail the way a failed index write does (the previous article stays)."""

    def __init__(self, docs: dict[str, tuple[DocInfo, str, list]] | None = None,
                 script: list | None = None, settings=None):
        from rag.settings import load_settings

        self.settings = settings or load_settings(mode="extractive")
        self.fail_next_add: str | None = None
        self.docs = dict(docs or {})
        self.script = list(script or [])  # items: Answer, RagError, or (deltas, Answer|RagError)
        self.calls: list[tuple[str, list, str | None]] = []
        self.indexed: list[Path] = []

    # --- the Pipeline contract ---------------------------------------------------------------
    def stream(self, question: str, history: list | None = None,
               mode: str | None = None) -> Iterator:
        self.calls.append((question, list(history or []), mode))
        item = self.script.pop(0)
        deltas: list[str] = []
        if isinstance(item, tuple):
            deltas, item = item
        for d in deltas:
            yield ("delta", d)
        if isinstance(item, BaseException):
            raise item
        yield ("answer", item)

    def ask(self, question: str, history: list | None = None, mode: str | None = None) -> Answer:
        answer = None
        for kind, payload in self.stream(question, history, mode):
            if kind == "answer":
                answer = payload
        assert answer is not None
        return answer

    def document(self, source: str):
        return self.docs.get(source)

    def documents(self) -> dict[str, DocInfo]:
        return {s: d[0] for s, d in self.docs.items()}

    def index(self, path: Path, *, rebuild: bool = False, progress=None) -> IndexReport:
        self.indexed.append(Path(path))
        doc = read_document(Path(path))
        if progress:
            progress(0, 1, Path(path).name)
        if not hasattr(doc, "text"):
            return IndexReport(files=1, indexed=0, unchanged=0, removed=0,
                               skipped=((doc.path, doc.reason),), chunks=0, total_chunks=0,
                               seconds=0.0)
        old = self.docs.get(doc.source)
        if old is not None and old[0].sha256 == doc.sha256:
            return IndexReport(1, 0, 1, 0, (), 0, 0, 0.0)
        info = DocInfo(source=doc.source, sha256=doc.sha256, title=doc.title,
                       language=doc.language, language_guess=doc.language_guess,
                       chars=doc.chars, chunks=2, path=doc.path)
        self.docs[doc.source] = (info, doc.text, list(doc.kept))
        if progress:
            progress(1, 1, "")
        return IndexReport(1, 1, 0, 0, (), 2, 2, 0.0)

    def add_document(self, name: str, data: bytes, progress=None) -> AddResult:
        """The real add_document's contract, in memory: checked, indexed, then saved."""
        name = safe_name(name)
        dest = Path(self.settings.index_dir) / "uploads" / name
        sha = content_hash(data)
        if Path(name).suffix.lower() not in EXTENSIONS:
            return AddResult(False, f"{name}: only .txt and .md articles can be added.")
        if len(data) > self.settings.max_upload_bytes:
            return AddResult(False, f"{name}: the limit is {self.settings.max_upload_bytes}")
        same = next((s for s, d in self.docs.items() if d[0].sha256 == sha), None)
        if same is not None:
            return AddResult(True, f"{same} is already indexed (same content): nothing to do.",
                             source=same, already=True)
        old = self.docs.get(name)
        if old is not None and Path(old[0].path) != dest:
            return AddResult(False, f"An article named {name} is already in the index. Rename "
                             "your file to add it as a new article.")
        doc = document_from_bytes(data, name, str(dest))
        if isinstance(doc, Skipped):
            return AddResult(False, f"{name} was not added: {doc.reason}.")
        if progress:
            progress(0, 1, name)
        self.indexed.append(dest)
        if self.fail_next_add:
            message, self.fail_next_add = self.fail_next_add, None
            return AddResult(False, f"{name} was not added: {message}")
        info = DocInfo(source=doc.source, sha256=doc.sha256, title=doc.title,
                       language=doc.language, language_guess=doc.language_guess,
                       chars=doc.chars, chunks=2, path=doc.path)
        self.docs[name] = (info, doc.text, list(doc.kept))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        if progress:
            progress(1, 1, "")
        verb = "Updated" if old is not None else "Added"
        return AddResult(True, f"{verb} “{doc.title}” ({name}). You can ask about it now.",
                         source=name, title=doc.title, chunks=2)

    def retrieve(self, question: str, k: int | None = None) -> list[Retrieved]:
        if not question.strip():
            raise RagError("empty")
        return []

    def ensure_index(self, progress=None):
        return None
