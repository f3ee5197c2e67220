"""The one factory: settings in, a ready pipeline out. The CLI, the UI and the tests use it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .embed import Embedder, build_embedder
from .indexer import Progress, index_path
from .retrieve import HybridRetriever
from .settings import Settings
from .store import ChromaStore, DocInfo, open_store
from .types import Answer, IndexReport, RagError, Retrieved

logger = logging.getLogger(__name__)


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
    def index(self, path: Path | None = None, *, rebuild: bool = False,
              progress: Progress | None = None) -> IndexReport:
        path = Path(path or self.settings.data_dir)
        with self._write_lock:
            if rebuild:
                self.store.reset()
            report = index_path(
                path, self.store, self.embedder,
                chunk_size=self.settings.chunk_size, chunk_overlap=self.settings.chunk_overlap,
                batch_size=self.settings.embed_batch_size, progress=progress,
            )
            if report.indexed or report.removed or rebuild:
                self.retriever.refresh()
        return report

    def ensure_index(self, progress: Progress | None = None) -> IndexReport | None:
        """Build the index from settings.data_dir when it is empty (the first run)."""
        if self.store.exists():
            return None
        logger.info("no index yet: building it from %s", self.settings.data_dir)
        return self.index(progress=progress)

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
        from . import language
        from .types import Retrieved

        self.retrieve("warm up", 1)
        language.detect("warm up the language identifier")
        if not sentences:
            return None
        answerer = self.answerer

        def embed_sentences() -> None:
            try:
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
            from .answer import Answerer

            self._answerer = Answerer(self.retriever, self.embedder, self.settings,
                                      chat_model=self.chat_model)
        return self._answerer

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
                                dup_overlap=settings.dup_overlap, per_source=settings.per_source)
    if chat_model is None and settings.mode != "extractive":
        from .llm import build_chat_model

        chat_model = build_chat_model(settings, backend=backend, model=model)
    return Pipeline(settings, store, embedder, retriever, chat_model)
