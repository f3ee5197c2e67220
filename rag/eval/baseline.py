"""A naive llama-index pipeline to compare against: what you get from the defaults.

Raw files (no cleaning), llama-index's default SentenceSplitter, the same embedder, a dense
top-k over an in-memory VectorStoreIndex. Answers come from llama-index's CitationQueryEngine
when a llama-index LLM is available; offline, the "answer" is the top passage cited as [1],
which is what a naive extractive system would show.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from rag.embed import Embedder, as_llama_index
from rag.indexing.ingest import list_files
from rag.lang.text import line_number, line_starts
from rag.types import Answer, Backend, Chunk, Citation, Retrieved, Timings

logger = logging.getLogger(__name__)


def _relative(path: Path, root: Path) -> str:
    return path.name if root.is_file() else path.relative_to(root).as_posix()


class NaivePipeline:
    def __init__(self, settings, embedder: Embedder, chat_model: Any = None,
                 data_dir: Path | None = None):
        from llama_index.core import Document, VectorStoreIndex
        from llama_index.core.llms import MockLLM

        self.settings = settings
        root = Path(data_dir or settings.data_dir)
        files = list_files(root)
        # Sources are named as the product names them: the path relative to the data folder.
        self._texts = {_relative(f, root): f.read_text(encoding="utf-8", errors="replace")
                       for f in files}
        t0 = time.perf_counter()
        # What SimpleDirectoryReader gives for a .txt file, without its optional-reader warnings.
        docs = [Document(text=t, metadata={"file_name": name}) for name, t in self._texts.items()]
        self._embed = as_llama_index(embedder)
        self.index = VectorStoreIndex.from_documents(docs, embed_model=self._embed)
        self.build_seconds = time.perf_counter() - t0
        self._llm = getattr(chat_model, "llm", None)  # llama-index LLM behind our ChatModel
        self._mock = MockLLM()
        logger.info("naive baseline built over %d files in %.1f s", len(files), self.build_seconds)

    def retrieve(self, question: str, k: int | None = None) -> list[Retrieved]:
        k = k or self.settings.top_k
        hits = self.index.as_retriever(similarity_top_k=k, llm=self._mock).retrieve(question)
        return [Retrieved(chunk=self._chunk(h.node), rank=i + 1, score=float(h.score or 0.0))
                for i, h in enumerate(hits)]

    def _chunk(self, node) -> Chunk:
        source = node.metadata.get("file_name", "")
        text = node.get_content()
        full = self._texts.get(source, "")
        start = node.start_char_idx if node.start_char_idx is not None else full.find(text)
        start = max(start, 0)
        end = start + len(text)
        starts = line_starts(full)
        return Chunk(id=node.node_id, source=source, text=text, start=start, end=end,
                     line_start=line_number(starts, start),
                     line_end=line_number(starts, max(start, end - 1)))

    def ask(self, question: str, history: Any = None, mode: str | None = None) -> Answer:
        t0 = time.perf_counter()
        retrieved = self.retrieve(question)
        t1 = time.perf_counter()
        if self._llm is not None:
            from llama_index.core.query_engine import CitationQueryEngine

            engine = CitationQueryEngine.from_args(
                self.index, llm=self._llm, similarity_top_k=self.settings.top_k)
            response = engine.query(question)
            text, mode_name, backend = str(response), "generate", Backend(
                "llama-index", getattr(self._llm, "model", "llm"))
            nodes = [self._chunk(n.node) for n in response.source_nodes]
        else:
            nodes = [r.chunk for r in retrieved[:1]]
            text = f"{nodes[0].text} [1]" if nodes else ""
            mode_name, backend = "extractive", Backend("naive-top-passage", "")
        citations = tuple(
            Citation(n=i + 1, source=c.source, chunk_id=c.id, start=c.start, end=c.end,
                     lines=(c.line_start, c.line_end), quote=c.text, support=1.0)
            for i, c in enumerate(nodes)
        )
        from rag.lang import detect as language

        return Answer(
            question=question, answer=text, language=language.detect(text)[0] if text else "en",
            mode=mode_name, insufficient_context=not text, citations=citations,
            retrieved=tuple(retrieved), backend=backend,
            timings=Timings(retrieve_ms=(t1 - t0) * 1000, first_token_ms=None,
                            total_ms=(time.perf_counter() - t0) * 1000),
        )
