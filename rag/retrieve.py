"""Hybrid retrieval: dense (Chroma) + BM25, fused by reciprocal rank fusion (llama-index).

The BM25 index is built once from the stored chunks and persisted next to the Chroma index,
keyed by a fingerprint of the chunk ids, so it is rebuilt only when the collection changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from llama_index.core.retrievers import BaseRetriever, QueryFusionRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from .embed import Embedder
from .store import ChromaStore
from .text import STEM_PREFIX, STOPWORDS
from .types import Chunk, RagError, Retrieved

logger = logging.getLogger(__name__)

_TOKEN_PATTERN = r"(?u)\b\w\w+\b"


class PrefixStemmer:
    """bm25s stemmer interface. No English stemmer is applied to Cyrillic or Serbian Latin:
    a fixed-length prefix conflates Slavic inflections (снаряда/снаряди) in any language."""

    def stemWords(self, words: list[str]) -> list[str]:  # noqa: N802 - bm25s' name
        return [w.replace("’", "'")[:STEM_PREFIX] for w in words]


def chunk_to_node(chunk: Chunk) -> TextNode:
    return TextNode(
        id_=chunk.id,
        text=chunk.text,
        metadata={
            "source": chunk.source, "start": chunk.start, "end": chunk.end,
            "line_start": chunk.line_start, "line_end": chunk.line_end, "title": chunk.title,
            "language": chunk.language, "doc_sha256": chunk.doc_sha256, "ordinal": chunk.ordinal,
        },
        # Only the passage text is embedded/matched; metadata would skew BM25 and the e5 vector.
        excluded_embed_metadata_keys=["source", "start", "end", "line_start", "line_end", "title",
                                      "language", "doc_sha256", "ordinal"],
        excluded_llm_metadata_keys=["start", "end", "doc_sha256", "ordinal"],
    )


def node_to_chunk(node) -> Chunk:
    m = node.metadata
    return Chunk(
        id=node.node_id, source=m["source"], text=node.get_content(), start=int(m["start"]),
        end=int(m["end"]), line_start=int(m["line_start"]), line_end=int(m["line_end"]),
        title=m.get("title", ""), language=m.get("language", ""),
        doc_sha256=m.get("doc_sha256", ""), ordinal=int(m.get("ordinal", 0)),
    )


class DenseRetriever(BaseRetriever):
    """Chroma nearest neighbours for the e5 query embedding."""

    def __init__(self, store: ChromaStore, embedder: Embedder, top_k: int):
        super().__init__()
        self.store, self.embedder, self.top_k = store, embedder, top_k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        vec = self.embedder.embed_queries([query_bundle.query_str])[0]
        return [
            NodeWithScore(node=chunk_to_node(c), score=s)
            for c, s in self.store.query(vec, self.top_k)
        ]


class LexicalRetriever(BaseRetriever):
    """llama-index's BM25 retriever, minus zero-score hits: an English question shares no words
    with a Bulgarian article, and rank fusion must not reward such arbitrary "matches"."""

    def __init__(self, bm25):
        super().__init__()
        self.bm25 = bm25

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        try:
            hits = self.bm25.retrieve(query_bundle)
        except (ValueError, KeyError, IndexError):  # no query token in the vocabulary
            return []
        return [h for h in hits if (h.score or 0.0) > 0.0]


def _fingerprint(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def load_bm25(store: ChromaStore, cache_dir: Path | None, top_k: int):
    """Load the persisted BM25 index if it matches the collection, else build (and persist) it."""
    from llama_index.retrievers.bm25 import BM25Retriever

    ids = store.chunk_ids()
    if not ids:
        return None
    fp = _fingerprint(ids)
    stemmer = PrefixStemmer()
    if cache_dir is not None:
        marker = cache_dir / "fingerprint.json"
        try:
            if json.loads(marker.read_text())["fingerprint"] == fp:
                import bm25s

                bm = bm25s.BM25.load(str(cache_dir), load_corpus=True)
                logger.debug("loaded BM25 index from %s", cache_dir)
                return BM25Retriever(existing_bm25=bm, stemmer=stemmer, similarity_top_k=top_k,
                                     token_pattern=_TOKEN_PATTERN)
        except (OSError, ValueError, KeyError):
            pass  # absent or stale: rebuild below
    nodes = [chunk_to_node(c) for c in store.iter_chunks()]
    bm = BM25Retriever(nodes=nodes, stemmer=stemmer, language=sorted(STOPWORDS),
                       similarity_top_k=top_k, token_pattern=_TOKEN_PATTERN)
    if cache_dir is not None:
        try:
            if cache_dir.exists():
                shutil.rmtree(cache_dir)
            cache_dir.mkdir(parents=True)
            bm.bm25.save(str(cache_dir), corpus=bm.corpus)
            (cache_dir / "fingerprint.json").write_text(json.dumps({"fingerprint": fp}))
        except OSError as e:
            logger.warning("could not persist the BM25 index to %s: %s", cache_dir, e)
    logger.info("built BM25 index over %d chunks", len(nodes))
    return bm


class HybridRetriever:
    """Dense + BM25, fused with llama-index's reciprocal-rank fusion, de-duplicated."""

    def __init__(self, store: ChromaStore, embedder: Embedder, *, top_k: int = 5,
                 candidates: int = 20, bm25_dir: Path | None = None, use_bm25: bool = True):
        self.store = store
        self.embedder = embedder
        self.top_k = top_k
        self.candidates = candidates
        self.bm25_dir = bm25_dir
        self.use_bm25 = use_bm25
        self._fusion: QueryFusionRetriever | None = None
        self._fusion_k = None

    def refresh(self) -> None:
        """Forget the fused retriever so the next query sees a changed collection."""
        self._fusion = None

    def _get(self, k: int) -> QueryFusionRetriever:
        if self._fusion is None:
            from llama_index.core.llms import MockLLM

            if self.store.count() == 0:
                raise RagError("The index is empty: run `rag index` to add articles.")
            dense = DenseRetriever(self.store, self.embedder, self.candidates)
            retrievers: list[BaseRetriever] = [dense]
            if self.use_bm25:
                bm = load_bm25(self.store, self.bm25_dir, self.candidates)
                if bm is not None:
                    retrievers.append(LexicalRetriever(bm))
            self._fusion = QueryFusionRetriever(
                retrievers, llm=MockLLM(), mode="reciprocal_rerank", num_queries=1,
                use_async=False, similarity_top_k=max(k, self.candidates),
            )
        return self._fusion

    def retrieve(self, question: str, k: int | None = None) -> list[Retrieved]:
        k = k or self.top_k
        question = question.strip()
        if not question:
            raise RagError("The question is empty.")
        t0 = time.perf_counter()
        fused = self._get(k).retrieve(question)
        out: list[Retrieved] = []
        seen_text: set[str] = set()
        for hit in fused:
            chunk = node_to_chunk(hit.node)
            key = " ".join(chunk.text.split()).casefold()
            if key in seen_text:  # the same passage in two files (syndicated copy)
                continue
            seen_text.add(key)
            out.append(Retrieved(chunk=chunk, rank=len(out) + 1, score=float(hit.score or 0.0)))
            if len(out) == k:
                break
        logger.debug("retrieved %d in %.1f ms", len(out), (time.perf_counter() - t0) * 1000)
        return out
