"""The one factory: settings in, a ready pipeline out. The CLI, the UI and the tests use it."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rag.embed import CachedEmbedder, Embedder, build_embedder
from rag.indexing.chunking import chunk_document
from rag.indexing.indexer import Progress, _embed, index_path, merge_reports
from rag.indexing.ingest import EXTENSIONS, content_hash
from rag.retrieval.hybrid import HybridRetriever
from rag.settings import Settings
from rag.store import ChromaStore, DocInfo, LegacyIndexError, open_store
from rag.types import Answer, IndexReport, RagError, Retrieved

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AddResult:
    """What happened to an added article, in words for the user."""

    ok: bool
    message: str
    source: str | None = None
    already: bool = False
    language: str = ""
    title: str = ""
    chunks: int = 0


class PipelineProtocol(Protocol):
    """What the UI (and the HTTP API) need from a pipeline; tests' fakes implement it too."""

    settings: Settings

    def ask(self, question: str, history: list[dict] | None = None,
            mode: str | None = None) -> Answer: ...

    def stream(self, question: str, history: list[dict] | None = None,
               mode: str | None = None) -> Iterator: ...

    def retrieve(self, question: str, k: int | None = None) -> list[Retrieved]: ...

    def documents(self) -> dict[str, DocInfo]: ...

    def document(self, source: str) -> tuple[DocInfo, str, list[tuple[int, int]]] | None: ...

    def add_document(self, name: str, data: bytes,
                     progress: Progress | None = None) -> AddResult: ...

    def index(self, path: Path | None = None, *, rebuild: bool = False,
              progress: Progress | None = None) -> IndexReport: ...

    def ensure_index(self, progress: Progress | None = None) -> IndexReport | None: ...


def safe_name(name: str) -> str:
    """A plain file name: no directories, no odd characters, keeps letters of any script."""
    base = Path(name.replace("\\", "/")).name
    stem, ext = os.path.splitext(base)
    stem = re.sub(r"[^\w.\-]+", "_", stem).strip("._-")[:120] or "article"
    return f"{stem}{ext.lower()}"


def size_label(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n / 1000:.0f} kB"


def _resolve(p: Path) -> Path:
    try:
        return p.resolve()
    except OSError:
        return p.absolute()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class Pipeline:
    """Index, retrieve and answer over one collection. Models load once, on first use."""

    def __init__(self, settings: Settings, store: ChromaStore, embedder: Embedder,
                 retriever: HybridRetriever, chat_model: Any = None):
        self.settings = settings
        self.store = store
        self.embedder = embedder
        self.retriever = retriever
        self.chat_model = chat_model
        self._answerer = None
        # Indexing and answering share the Chroma client and the BM25 cache: one writer at a time.
        self._write_lock = threading.Lock()

    # --- indexing ------------------------------------------------------------------------------
    @property
    def upload_dir(self) -> Path:
        """Uploaded articles live beside the index, never in the seed folder (data_dir)."""
        return Path(self.settings.index_dir) / "uploads"

    def index(self, path: Path | None = None, *, rebuild: bool = False,
              progress: Progress | None = None) -> IndexReport:
        """Index `path` (default: settings.data_dir) incrementally, or with `rebuild` build a
        whole new index aside (from `path` and the uploads) and switch to it when complete.
        An index from an earlier release is rebuilt the same way, automatically."""
        path = Path(path or self.settings.data_dir)
        with self._write_lock:
            state = self.store.state()
            if rebuild or state == "legacy":
                if state == "legacy":
                    logger.warning("the index was built by an earlier release (articles keyed "
                                   "by file name): rebuilding it from %s", path)
                report = self._rebuild(path, progress)
            else:
                report = self._index(path, self.store, progress)
                # Generations left by a rebuild that was killed after its switch.
                self.store.collect_garbage(older_only=True)
            if report.indexed or report.removed or rebuild or state == "legacy":
                self.retriever.refresh()
        return report

    def _index(self, path: Path, store: ChromaStore, progress: Progress | None,
               prune: bool = True) -> IndexReport:
        return index_path(
            path, store, self.embedder,
            chunk_size=self.settings.chunk_size, chunk_overlap=self.settings.chunk_overlap,
            batch_size=self.settings.embed_batch_size, progress=progress, prune=prune,
        )

    def _rebuild(self, path: Path, progress: Progress | None) -> IndexReport:
        # The current index keeps serving until the pointer switches; a failure or a kill
        # leaves it as it was (the half-built generation is dropped by the next rebuild).
        aside = self.store.begin_rebuild()
        paths = [path]
        data_dir = Path(self.settings.data_dir)
        if path.is_file() and data_dir.is_dir():
            paths.insert(0, data_dir)  # a rebuild from one file must not drop the collection
        if self.upload_dir.is_dir() and _resolve(self.upload_dir) != _resolve(path):
            paths.append(self.upload_dir)  # uploads are articles too: carried over
        reports = [self._index(p, aside, progress, prune=False) for p in paths]
        self.store.commit_rebuild(aside)
        return merge_reports(reports)

    def ensure_index(self, progress: Progress | None = None) -> IndexReport | None:
        """Build the index from settings.data_dir when it is empty (the first run) or was built
        by an earlier release."""
        if self.store.exists():
            return None
        logger.info("no current index: building it from %s", self.settings.data_dir)
        return self.index(progress=progress)

    def add_document(self, name: str, data: bytes,
                     progress: Progress | None = None) -> AddResult:
        """Add (or update) one article given as bytes, e.g. an upload. Never raises for bad
        input or a failed write: the result says what happened. The file is moved into the
        uploads folder only after it was indexed, so a rejected or failed re-upload leaves the
        previous file and its index entry as they were."""
        from rag.indexing.ingest import Skipped, document_from_bytes

        name = safe_name(name)
        try:
            self._check_upload(name, data)
        except RagError as e:
            return AddResult(False, str(e))
        sha = content_hash(data)
        dest = self.upload_dir / name
        with self._write_lock:
            try:
                if self.store.state() == "legacy":
                    return AddResult(False, str(LegacyIndexError(
                        "The index was built by an earlier version of newsrag: restart the app "
                        "(or run `rag index`) to rebuild it, then add the article again.")))
                known = self.store.documents()
            except RagError as e:
                return AddResult(False, str(e))
            same = next((s for s, i in known.items() if i.sha256 == sha), None)
            if same is not None:
                return AddResult(True, f"{same} is already indexed (same content): nothing "
                                 "to do.", source=same, already=True)
            old = known.get(name)
            if old is not None and old.path and _resolve(Path(old.path)) != _resolve(dest):
                return AddResult(False, f"An article named {name} is already in the index "
                                 "(not an upload). Rename your file to add it as a new article.")
            doc = document_from_bytes(data, name, str(dest))
            if isinstance(doc, Skipped):
                return AddResult(False, f"{name} was not added: {doc.reason}.")
            chunks = chunk_document(doc, self.settings.chunk_size, self.settings.chunk_overlap)
            if progress:
                progress(0, len(chunks), name)
            tmp = self.upload_dir / f".{name}.part"
            try:
                vectors = _embed(self.embedder, [c.text for c in chunks],
                                 self.settings.embed_batch_size,
                                 (lambda d, t: progress(d, t, name)) if progress else None)
                # Written (and synced) beside its final place first: the index must never hold
                # a document whose file cannot be put in place afterwards (full disk).
                self.upload_dir.mkdir(parents=True, exist_ok=True)
                _write_synced(tmp, data)
                self.store.replace_document(doc, chunks, vectors)
                os.replace(tmp, dest)
            except Exception as e:  # noqa: BLE001 - every failure leaves the old article
                tmp.unlink(missing_ok=True)
                self._undo_add(doc.source, old)
                if isinstance(e, RagError):
                    return AddResult(False, f"{name} was not added: {e}")
                if isinstance(e, OSError):
                    return AddResult(False, f"{name} was not added: it could not be saved "
                                     f"({e.strerror or e}); the articles already indexed are "
                                     "unchanged.")
                logger.exception("indexing %s failed", name)
                return AddResult(False, f"{name} was not added: indexing failed "
                                 f"({type(e).__name__}: {e}); the articles already indexed "
                                 "are unchanged.")
            finally:
                self.retriever.refresh()
            if progress:
                progress(len(chunks), len(chunks), "")
        logger.info("uploaded and indexed %s (%d chunks)", dest, len(chunks))
        passages = "1 passage" if len(chunks) == 1 else f"{len(chunks)} passages"
        verb = "Updated" if old is not None else "Added"
        return AddResult(True, f"{verb} “{doc.title}” ({name}, {doc.language or '?'}, "
                         f"{passages}). You can ask about it now.", source=name,
                         language=doc.language, title=doc.title, chunks=len(chunks))

    def _undo_add(self, source: str, old: DocInfo | None) -> None:
        """After a failed write: put the index back to the previous version, which is still the
        file on disk (the new file was never moved into place). If Chroma is down this fails
        too; the next `rag index` or app start repairs it, since the document's chunks then
        disagree with its record."""
        try:
            if old is None:
                self.store.delete_document(source)
            elif old.path and Path(old.path).is_file():
                self._index(Path(old.path), self.store, None, prune=False)
        except Exception:  # noqa: BLE001 - repaired by the next index run
            logger.warning("could not undo the partial write of %s; the next `rag index` "
                           "repairs it", source, exc_info=True)

    def _check_upload(self, name: str, data: bytes) -> None:
        if Path(name).suffix.lower() not in EXTENSIONS:
            raise RagError(f"{name}: only .txt and .md articles can be added.")
        limit = self.settings.max_upload_bytes
        if len(data) > limit:
            raise RagError(f"{name} is {size_label(len(data))}; the limit is {size_label(limit)} "
                           "(RAG_MAX_UPLOAD_BYTES).")

    def documents(self) -> dict[str, DocInfo]:
        return self.store.documents()

    def document(self, source: str):
        """(DocInfo, full text, kept spans) of an indexed article, or None: only indexed
        documents can be opened, whatever name is asked for."""
        return self.store.document_text(source)

    def warm(self, *, sentences: bool = True, background: bool = True,
             max_chunks: int = 5000) -> threading.Thread | None:
        """Load what the first question would otherwise wait for: the embedder, the BM25 and
        hubness tables, the language identifier and (for corpora up to `max_chunks`, in a
        background thread) the sentence vectors evidence selection uses."""
        from rag.lang import detect as language
        from rag.types import Retrieved

        self.retrieve("warm up", 1)
        language.detect("warm up the language identifier")
        if not sentences:
            return None
        answerer = self.answerer

        def embed_sentences() -> None:
            try:
                answerer.dictionaries.all()  # read even when the corpus is too big to warm
                chunks = []
                for i, chunk in enumerate(self.store.iter_chunks()):
                    if i >= max_chunks:
                        return
                    chunks.append(Retrieved(chunk=chunk, rank=i + 1, score=0.0))
                n = answerer.warm(chunks)
                logger.info("pre-embedded %s evidence sentences", n)
            except Exception:  # noqa: BLE001 - warming is an optimisation, never fatal
                logger.exception("warming the evidence sentences failed")

        if not background:
            embed_sentences()
            return None
        t = threading.Thread(target=embed_sentences, name="warm-sentences", daemon=True)
        t.start()
        return t

    # --- questions -----------------------------------------------------------------------------
    def retrieve(self, question: str, k: int | None = None) -> list[Retrieved]:
        self._check_question(question)
        return self.retriever.retrieve(question, k or self.settings.top_k)

    @property
    def answerer(self):
        if self._answerer is None:
            from rag.answering.answer import Answerer
            from rag.answering.evidence import EvidenceSelector

            embedder = self.embedder
            if self.settings.sentence_cache and not isinstance(embedder, CachedEmbedder):
                embedder = CachedEmbedder(embedder, self.sentence_cache_path)
            self._answerer = Answerer(self.retriever, self.embedder, self.settings,
                                      chat_model=self.chat_model,
                                      selector=EvidenceSelector(embedder))
        return self._answerer

    @property
    def sentence_cache_path(self) -> Path:
        return Path(self.settings.index_dir) / "sentence-vectors.sqlite"

    def ask(self, question: str, history: list[dict] | None = None,
            mode: str | None = None) -> Answer:
        return self.answerer.ask(question, history=history, mode=mode)

    def stream(self, question: str, history: list[dict] | None = None,
               mode: str | None = None) -> Iterator:
        return self.answerer.stream(question, history=history, mode=mode)

    def _check_question(self, question: str) -> None:
        if not question or not question.strip():
            raise RagError("The question is empty: type a question about the articles.")
        if len(question) > self.settings.max_question_chars:
            raise RagError(
                f"The question is {len(question)} characters long; the limit is "
                f"{self.settings.max_question_chars} (RAG_MAX_QUESTION_CHARS)."
            )


def build_pipeline(settings: Settings, *, embedder: Embedder | None = None,
                   chat_model: Any = None, store: ChromaStore | None = None,
                   backend: str | None = None, model: str | None = None) -> Pipeline:
    """Wire the parts chosen by settings; tests inject fakes through the keyword arguments."""
    embedder = embedder or build_embedder(settings)
    store = store or open_store(settings, embed_id=embedder.id)
    bm25_dir = Path(settings.index_dir) / f"bm25-{settings.collection}"
    retriever = HybridRetriever(store, embedder, top_k=settings.top_k,
                                candidates=settings.candidates, bm25_dir=bm25_dir,
                                dense_weight=settings.dense_weight,
                                bm25_weight=settings.bm25_weight, rrf_k=settings.rrf_k,
                                hub_penalty=settings.hub_penalty,
                                dup_overlap=settings.dup_overlap, per_source=settings.per_source,
                                context_chunks=settings.context_chunks,
                                language_weight=settings.dense_language_weight,
                                exact_search=settings.exact_search)
    if chat_model is None and settings.mode != "extractive":
        from rag.llm.backends import build_chat_model

        chat_model = build_chat_model(settings, backend=backend, model=model)
    return Pipeline(settings, store, embedder, retriever, chat_model)
