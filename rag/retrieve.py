"""Hybrid retrieval: dense (Chroma, e5) + BM25, fused by weighted reciprocal rank fusion.

Three choices, each measured on the seed questions (benchmarks/results/retrieval.md):

* BM25 compares words by a script-neutral key (`rag.text.bm25_tokens`): most questions are
  about an article in another language or alphabet, and the lexical evidence that crosses that
  gap is names, numbers and shared Slavic roots. With raw words, BM25 only ever matched the
  articles written in the question's own language and made the hybrid worse than dense alone.
* Dense scores are corrected for hubness (CSLS, Conneau et al. 2018): a passage that is close to
  many other passages (a headline-only chunk, a generic summary paragraph) is close to almost
  every question too, and won rank 1 for questions it does not answer. Its similarity is reduced
  by `hub_penalty` times its mean similarity to its nearest neighbours in the corpus.
* Fusion is plain reciprocal rank fusion with per-retriever weights (llama-index's
  QueryFusionRetriever, whose RRF takes no weights, with that one method overridden).

The BM25 index and the hubness table are built once from the stored chunks and persisted next
to the Chroma index, keyed by a fingerprint of the chunk ids, the tokeniser and the embedding
model, so they are rebuilt only when the collection (or the way they are computed) changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from llama_index.core.retrievers import BaseRetriever, QueryFusionRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from .embed import Embedder
from .store import ChromaStore
from .text import BM25_PREFIX, bm25_tokens
from .types import Chunk, RagError, Retrieved

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")

# Bump when `bm25_tokens` or the hubness computation changes: persisted caches then rebuild.
CACHE_VERSION = f"bm25-latinkey{BM25_PREFIX}+hub1"
# Neighbours averaged for a passage's hubness, and the reference sample size above which the
# neighbours are looked for in a fixed random sample instead of the whole corpus (O(N·S), not N²).
HUB_NEIGHBOURS = 10
HUB_SAMPLE = 4096


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


# --------------------------------------------------------------------------------------------
# Hubness
# --------------------------------------------------------------------------------------------

def hubness(vectors: np.ndarray, neighbours: int = HUB_NEIGHBOURS,
            sample: int = HUB_SAMPLE) -> np.ndarray:
    """Mean cosine similarity of each (L2-normalised) row to its `neighbours` nearest other
    rows: the r(p) term of CSLS. Above `sample` rows, neighbours come from a fixed random
    sample of rows, which estimates the same local density at a bounded cost."""
    n = len(vectors)
    if n < 2:
        return np.zeros(n, dtype=np.float32)
    v = np.asarray(vectors, dtype=np.float32)
    ref_idx = np.arange(n)
    if n > sample:
        ref_idx = np.sort(np.random.default_rng(0).choice(n, sample, replace=False))
    # Where each row sits in the reference set (-1: not in it), so that a passage is never
    # counted as its own neighbour.
    pos = np.full(n, -1)
    pos[ref_idx] = np.arange(len(ref_idx))
    ref = v[ref_idx]
    k = min(neighbours, len(ref_idx) - 1)
    out = np.empty(n, dtype=np.float32)
    for lo in range(0, n, 1024):  # bounded memory: one 1024 × |ref| block at a time
        hi = min(lo + 1024, n)
        sims = v[lo:hi] @ ref.T
        own = pos[lo:hi]
        rows = np.nonzero(own >= 0)[0]
        sims[rows, own[rows]] = -np.inf
        top = -np.partition(-sims, k - 1, axis=1)[:, :k]
        out[lo:hi] = top.mean(axis=1)
    return out


def _fingerprint(ids: Sequence[str], *extra: str) -> str:
    h = hashlib.sha256("\n".join([CACHE_VERSION, *extra, *sorted(ids)]).encode())
    return h.hexdigest()[:16]


def load_hubness(store: ChromaStore, cache_dir: Path | None,
                 ids: Sequence[str] | None = None) -> dict[str, float]:
    """chunk id → hubness, from `cache_dir/hubness.json` if it matches the collection."""
    ids = sorted(ids if ids is not None else store.chunk_ids())
    fp = _fingerprint(ids, store.embed_id, str(HUB_NEIGHBOURS), str(HUB_SAMPLE))
    path = cache_dir / "hubness.json" if cache_dir is not None else None
    if path is not None:
        try:
            data = json.loads(path.read_text())
            if data["fingerprint"] == fp:
                return dict(zip(data["ids"], data["hubness"], strict=True))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or stale: rebuild below
    t0 = time.perf_counter()
    got_ids, vecs = store.vectors()
    table = dict(zip(got_ids, hubness(vecs).tolist(), strict=True)) if got_ids else {}
    logger.info("computed hubness of %d chunks in %.0f ms", len(table),
                (time.perf_counter() - t0) * 1000)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"fingerprint": fp, "ids": list(table),
                                       "hubness": list(table.values())}))
            tmp.replace(path)
        except OSError as e:
            logger.warning("could not persist the hubness table to %s: %s", path, e)
    return table


# --------------------------------------------------------------------------------------------
# Retrievers
# --------------------------------------------------------------------------------------------

class DenseRetriever(BaseRetriever):
    """Chroma nearest neighbours for the e5 query embedding, re-scored as
    cos(q, p) − hub_penalty · hubness(p)."""

    def __init__(self, store: ChromaStore, embedder: Embedder, top_k: int,
                 hub: dict[str, float] | None = None, hub_penalty: float = 0.0):
        super().__init__()
        self.store, self.embedder, self.top_k = store, embedder, top_k
        self.hub = hub or {}
        self.hub_penalty = hub_penalty if self.hub else 0.0

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        vec = self.embedder.embed_queries([query_bundle.query_str])[0]
        scored = hub_rescore(self.store.query(vec, dense_depth(self.top_k, self.hub_penalty)),
                             self.hub, self.hub_penalty, self.top_k)
        return [NodeWithScore(node=chunk_to_node(c), score=s) for c, s in scored]


def dense_depth(top_k: int, hub_penalty: float) -> int:
    """How many nearest neighbours to fetch: the penalty reorders them, so look deeper."""
    return top_k * 2 if hub_penalty else top_k


def hub_rescore(hits: Sequence[tuple[Chunk, float]], hub: dict[str, float], penalty: float,
                top_k: int) -> list[tuple[Chunk, float]]:
    """cos(q, p) − penalty · hubness(p), best first, the first `top_k`."""
    scored = [(c, s - penalty * hub.get(c.id, 0.0)) for c, s in hits]
    scored.sort(key=lambda cs: cs[1], reverse=True)
    return scored[:top_k]


class LexicalRetriever(BaseRetriever):
    """BM25 (bm25s) over `bm25_tokens`, the same tokeniser for passages and questions.

    Hits with score 0 are dropped: a question that shares no word with a passage must not get
    an arbitrary rank for it in the fusion.
    """

    def __init__(self, bm25, chunks: list[Chunk], top_k: int, from_cache: bool = False):
        super().__init__()
        self.bm25 = bm25
        self.chunks = chunks  # row i of the BM25 matrix is chunks[i]
        self.top_k = top_k
        self.from_cache = from_cache  # for tests and logs: was the persisted index reused?

    def scores(self, question: str) -> np.ndarray:
        vocab = self.bm25.vocab_dict
        # Each question word counts once; BM25's tf saturation is for documents.
        ids = list(dict.fromkeys(vocab[t] for t in bm25_tokens(question) if t in vocab))
        if not ids:
            return np.zeros(len(self.chunks), dtype=np.float32)
        return np.asarray(self.bm25.get_scores_from_ids(ids), dtype=np.float32)

    def top(self, question: str, k: int) -> list[tuple[Chunk, float]]:
        """The `k` best-scoring passages with a score above 0, best first."""
        s = self.scores(question)
        if not s.any():
            return []
        k = min(k, len(s))
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.argsort(-s[top], kind="stable")]
        return [(self.chunks[i], float(s[i])) for i in top if s[i] > 0]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [NodeWithScore(node=chunk_to_node(c), score=sc)
                for c, sc in self.top(query_bundle.query_str, self.top_k)]


def load_bm25(store: ChromaStore, cache_dir: Path | None, top_k: int,
              ids: Sequence[str] | None = None) -> LexicalRetriever | None:
    """Load the persisted BM25 index if it matches the collection, else build (and persist) it."""
    import bm25s

    # bm25s sets its own logger to DEBUG when imported; let it follow ours instead.
    bm25_log = logging.getLogger("bm25s")
    if bm25_log.level == logging.DEBUG:
        bm25_log.setLevel(logging.NOTSET)

    ids = sorted(ids if ids is not None else store.chunk_ids())
    if not ids:
        return None
    fp = _fingerprint(ids)
    if cache_dir is not None:
        try:
            if json.loads((cache_dir / "fingerprint.json").read_text())["fingerprint"] == fp:
                bm = bm25s.BM25.load(str(cache_dir), show_progress=False)
                rows = json.loads((cache_dir / "chunks.json").read_text())
                chunks = [Chunk(**r) for r in rows]
                # The fingerprint only says which index was meant; the files must also agree
                # with it (a truncated or emptied chunks.json would crash every question).
                if sorted(c.id for c in chunks) != ids or bm.scores["num_docs"] != len(chunks):
                    raise ValueError("the cached chunks do not match the index")
                logger.debug("loaded BM25 index from %s", cache_dir)
                return LexicalRetriever(bm, chunks, top_k, from_cache=True)
        except FileNotFoundError:
            pass  # not built yet
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            logger.warning("the BM25 cache in %s is damaged (%s): rebuilding it", cache_dir, e)
    t0 = time.perf_counter()
    chunks = sorted(store.iter_chunks(), key=lambda c: c.id)
    bm = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    bm.index([bm25_tokens(c.text) for c in chunks], show_progress=False)
    if cache_dir is not None:
        try:
            # The folder is shared with the hubness table: replace only BM25's own files, and
            # drop the marker first so that a half-written index is never taken as current.
            cache_dir.mkdir(parents=True, exist_ok=True)
            (cache_dir / "fingerprint.json").unlink(missing_ok=True)
            bm.save(str(cache_dir), show_progress=False)
            (cache_dir / "chunks.json").write_text(
                json.dumps([asdict(c) for c in chunks], ensure_ascii=False))
            # Written last: a half-written cache has no marker and is rebuilt next time.
            (cache_dir / "fingerprint.json").write_text(json.dumps({"fingerprint": fp}))
        except OSError as e:
            logger.warning("could not persist the BM25 index to %s: %s", cache_dir, e)
    logger.info("built BM25 index over %d chunks in %.0f ms", len(chunks),
                (time.perf_counter() - t0) * 1000)
    return LexicalRetriever(bm, chunks, top_k)


class WeightedRRFRetriever(QueryFusionRetriever):
    """QueryFusionRetriever whose reciprocal rank fusion weighs each retriever:
    score(d) = Σ_i w_i / (k + rank_i(d)). Nodes are identified by id (the upstream method keys
    on a hash of content and metadata), and ties keep the first retriever's order."""

    def __init__(self, retrievers: list[BaseRetriever], weights: Sequence[float],
                 rrf_k: float = 60.0, **kwargs):
        super().__init__(retrievers, retriever_weights=list(weights), **kwargs)
        self.rrf_k = rrf_k

    def _reciprocal_rerank_fusion(self, results: dict) -> list[NodeWithScore]:
        first: dict[str, NodeWithScore] = {}
        lists: list[list[str]] = []
        weights: list[float] = []
        for (_query, idx), hits in results.items():
            ranked = sorted(hits, key=lambda h: h.score or 0.0, reverse=True)
            for rank, hit in enumerate(ranked, 1):
                first.setdefault(hit.node.node_id, hit)
                # Each query builds fresh nodes, so the per-retriever rank can ride along.
                first[hit.node.node_id].node.metadata[f"rank_{idx}"] = rank
            lists.append([h.node.node_id for h in ranked])
            weights.append(self._retriever_weights[idx])
        return [NodeWithScore(node=first[nid].node, score=score)
                for nid, score in weighted_rrf(lists, weights, self.rrf_k)]

    def retrieve_top(self, question: str, top: int) -> list[NodeWithScore]:
        """The fused hits, at most `top`: the cut is made here rather than by setting
        `similarity_top_k` on an object that concurrent queries share."""
        results = self._run_sync_queries([QueryBundle(question)])
        return self._reciprocal_rerank_fusion(results)[:top]


def weighted_rrf(ranked: Sequence[Sequence[str]], weights: Sequence[float],
                 rrf_k: float) -> list[tuple[str, float]]:
    """score(d) = Σ_i w_i / (k + rank_i(d)) over ranked id lists; best first, ties in the
    order first met (so the first list wins them)."""
    fused: dict[str, float] = {}
    for ids, w in zip(ranked, weights, strict=True):
        for rank, nid in enumerate(ids, 1):
            fused[nid] = fused.get(nid, 0.0) + w / (rrf_k + rank)
    return sorted(fused.items(), key=lambda kv: kv[1], reverse=True)


@dataclass
class RetrieverState:
    """Everything a query reads, built together for one version of the collection and then
    swapped in with one assignment: a query holds one state from start to end, so a refresh
    (an upload, a `rag index` in another process) never shows it half of each."""

    version: str
    fusion: WeightedRRFRetriever
    lexical: LexicalRetriever | None


class HybridRetriever:
    """Dense + BM25, fused with weighted reciprocal rank fusion, de-duplicated."""

    def __init__(self, store: ChromaStore, embedder: Embedder, *, top_k: int = 5,
                 candidates: int = 20, bm25_dir: Path | None = None, use_bm25: bool = True,
                 dense_weight: float = 1.0, bm25_weight: float = 1.0, rrf_k: float = 60.0,
                 hub_penalty: float = 0.5, dup_overlap: float = 0.6, per_source: int = 0):
        self.store = store
        self.dup_overlap = dup_overlap
        self.per_source = per_source
        self.embedder = embedder
        self.top_k = top_k
        self.candidates = candidates
        self.bm25_dir = bm25_dir
        self.use_bm25 = use_bm25
        self.dense_weight = dense_weight
        self.bm25_weight = bm25_weight
        self.rrf_k = rrf_k
        self.hub_penalty = hub_penalty
        self._state: RetrieverState | None = None
        # One build at a time. Queries wait on it only when the collection changed, and then
        # would have to wait for the new state anyway.
        self._build_lock = threading.Lock()

    @property
    def lexical(self) -> LexicalRetriever | None:
        state = self._state
        return state.lexical if state is not None else None

    def refresh(self) -> None:
        """Forget the current state so the next query builds one for the changed collection."""
        self._state = None

    def _build(self, version: str) -> RetrieverState:
        from llama_index.core.llms import MockLLM

        if self.store.count() == 0:
            raise RagError("The index is empty: run `rag index` to add articles.")
        ids = self.store.chunk_ids()
        hub = (load_hubness(self.store, self.bm25_dir, ids) if self.hub_penalty else None)
        retrievers: list[BaseRetriever] = [
            DenseRetriever(self.store, self.embedder, self.candidates, hub, self.hub_penalty)
        ]
        weights = [self.dense_weight]
        lexical = None
        if self.use_bm25 and self.bm25_weight > 0:
            lexical = load_bm25(self.store, self.bm25_dir, self.candidates, ids)
            if lexical is not None:
                retrievers.append(lexical)
                weights.append(self.bm25_weight)
        fusion = WeightedRRFRetriever(
            retrievers, weights, rrf_k=self.rrf_k, llm=MockLLM(), mode="reciprocal_rerank",
            num_queries=1, use_async=False, similarity_top_k=self.candidates,
        )
        return RetrieverState(version=version, fusion=fusion, lexical=lexical)

    def current(self) -> RetrieverState:
        """The state for the collection as it is now. The version stamp is read per query (one
        small Chroma read), so writes by another process are seen by the next question."""
        version = self.store.version()
        state = self._state
        if state is not None and state.version == version:
            return state
        with self._build_lock:
            state = self._state
            if state is None or state.version != version:
                state = self._build(version)
                self._state = state  # the one reference readers see
        return state

    def retrieve(self, question: str, k: int | None = None) -> list[Retrieved]:
        k = k or self.top_k
        question = question.strip()
        if not question:
            raise RagError("The question is empty.")
        t0 = time.perf_counter()
        state = self.current()
        fused = state.fusion.retrieve_top(question, max(k, self.candidates))
        out = collapse_duplicates(
            [(node_to_chunk(h.node), float(h.score or 0.0), h.node.metadata) for h in fused],
            k, overlap=self.dup_overlap, per_source=self.per_source,
        )
        logger.debug("retrieved %d in %.1f ms", len(out), (time.perf_counter() - t0) * 1000)
        return out


# --------------------------------------------------------------------------------------------
# Near-duplicate passages and diversity
# --------------------------------------------------------------------------------------------

_SHINGLE = 4  # words per shingle: long enough that two unrelated passages rarely share one


def shingles(text: str) -> frozenset[int]:
    """Hashed word 4-grams of the passage, case- and punctuation-insensitive."""
    words = _WORD.findall(text.casefold())
    if len(words) < _SHINGLE:
        return frozenset({hash(" ".join(words))}) if words else frozenset()
    return frozenset(hash(" ".join(words[i : i + _SHINGLE]))
                     for i in range(len(words) - _SHINGLE + 1))


def overlap_ratio(a: frozenset[int], b: frozenset[int]) -> float:
    """Share of the smaller passage's shingles found in the other (containment): two outlets'
    copies of a wire story are cut into chunks at different places, so one chunk is often a
    part of the other's text rather than equal to it."""
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))


def collapse_duplicates(hits: Sequence[tuple[Chunk, float, dict]], k: int, *,
                        overlap: float = 0.6, per_source: int = 0) -> list[Retrieved]:
    """The first `k` hits (best first) with near-duplicate passages collapsed into the first
    one of their group, whose `also` lists the other articles that carry it. `per_source` > 0
    keeps at most that many passages of one article in the top k (diversity); passages passed
    over for it fill the list only if nothing else is left."""
    kept: list[tuple[Chunk, float, dict, frozenset[int], list[str]]] = []
    deferred: list[tuple[Chunk, float, dict, frozenset[int], list[str]]] = []
    per: dict[str, int] = {}
    for chunk, score, meta in hits:
        sh = shingles(chunk.text)
        twin = next((kp for kp in (*kept, *deferred) if overlap_ratio(sh, kp[3]) >= overlap),
                    None)
        if twin is not None:
            if chunk.source != twin[0].source and chunk.source not in twin[4]:
                twin[4].append(chunk.source)
            continue
        entry = (chunk, score, meta, sh, [])
        if per_source and per.get(chunk.source, 0) >= per_source:
            deferred.append(entry)
            continue
        if len(kept) < k:
            kept.append(entry)
            per[chunk.source] = per.get(chunk.source, 0) + 1
    for entry in deferred:
        if len(kept) >= k:
            break
        kept.append(entry)
    return [
        Retrieved(chunk=c, rank=i + 1, score=s, dense_rank=m.get("rank_0"),
                  bm25_rank=m.get("rank_1"), also=tuple(also))
        for i, (c, s, m, _sh, also) in enumerate(kept)
    ]
