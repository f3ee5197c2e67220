"""Hybrid retrieval: dense (Chroma, e5) + BM25, fused by weighted reciprocal rank fusion.

Three choices, each measured on the seed questions (benchmarks/results/retrieval.md):

* BM25 compares words by a script-neutral key (`rag.lang.text.bm25_tokens`): most questions are
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

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from llama_index.core.retrievers import BaseRetriever, QueryFusionRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag.embed import Embedder
from rag.lang import centroids as language_centroids
from rag.lang.centroids import LanguageCentroids
from rag.lang.text import BM25_PREFIX, bm25_tokens, says_something
from rag.store import ChromaStore
from rag.types import Chunk, RagError, Retrieved

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")

# Bump when `bm25_tokens` or the hubness computation changes: persisted caches then rebuild.
CACHE_VERSION = f"bm25-latinkey{BM25_PREFIX}+marks+hub1"
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

def _hub_rows(v: np.ndarray, ref: np.ndarray, own: np.ndarray | None, k: int) -> np.ndarray:
    """Mean of each row's `k` highest similarities to `ref`; `own[i]` ≥ 0 is row i's own
    position in `ref` (never its own neighbour)."""
    out = np.empty(len(v), dtype=np.float32)
    for lo in range(0, len(v), 1024):  # bounded memory: one 1024 × |ref| block at a time
        hi = min(lo + 1024, len(v))
        sims = v[lo:hi] @ ref.T
        if own is not None:
            o = own[lo:hi]
            rows = np.nonzero(o >= 0)[0]
            sims[rows, o[rows]] = -np.inf
        top = -np.partition(-sims, k - 1, axis=1)[:, :k]
        out[lo:hi] = top.mean(axis=1)
    return out


def _hub_reference(n: int, sample: int) -> np.ndarray:
    """Rows of the reference set: all of them, or a fixed random sample above `sample`."""
    if n > sample:
        return np.sort(np.random.default_rng(0).choice(n, sample, replace=False))
    return np.arange(n)


def hubness(vectors: np.ndarray, neighbours: int = HUB_NEIGHBOURS,
            sample: int = HUB_SAMPLE) -> np.ndarray:
    """Mean cosine similarity of each (L2-normalised) row to its `neighbours` nearest other
    rows: the r(p) term of CSLS. Above `sample` rows, neighbours come from a fixed random
    sample of rows, which estimates the same local density at a bounded cost."""
    n = len(vectors)
    if n < 2:
        return np.zeros(n, dtype=np.float32)
    v = np.asarray(vectors, dtype=np.float32)
    ref_idx = _hub_reference(n, sample)
    # Where each row sits in the reference set (-1: not in it), so that a passage is never
    # counted as its own neighbour.
    pos = np.full(n, -1)
    pos[ref_idx] = np.arange(len(ref_idx))
    return _hub_rows(v, v[ref_idx], pos, min(neighbours, len(ref_idx) - 1))


def _fingerprint(ids: Sequence[str], *extra: str) -> str:
    h = hashlib.sha256("\n".join([CACHE_VERSION, *extra, *sorted(ids)]).encode())
    return h.hexdigest()[:16]


# Persisted caches are content-addressed: a file or folder named by the fingerprint of the chunk
# ids it was built from is complete once it has that name (written aside, then renamed), and
# never changes afterwards. Several processes sharing one index folder (two app servers on one
# Chroma server) thus read and write them without locks: each loads the one for the collection
# it sees, and a writer never changes what another is reading. The newest few are kept.
_KEEP_CACHES = 3


def _prune(cache_dir: Path, pattern: str, keep: Path) -> None:
    old = sorted((p for p in cache_dir.glob(pattern) if p != keep),
                 key=lambda p: p.stat().st_mtime if p.exists() else 0.0, reverse=True)
    for p in old[_KEEP_CACHES - 1:]:
        _remove(p)


def _remove(p: Path) -> None:
    try:
        if p.is_dir():
            for f in p.iterdir():
                f.unlink(missing_ok=True)
            p.rmdir()
        else:
            p.unlink(missing_ok=True)
    except OSError:
        pass  # another process removed it first, or is writing into it


def _newest(cache_dir: Path | None, pattern: str) -> Path | None:
    if cache_dir is None or not cache_dir.is_dir():
        return None
    found = [p for p in cache_dir.glob(pattern) if not p.name.startswith(".")]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


@dataclass
class HubTable:
    """chunk id → hubness, with the reference vectors it was measured against, so that new
    chunks can be scored against the same reference without reading the whole collection."""

    fingerprint: str
    values: dict[str, float]
    ref_ids: list[str]
    ref: np.ndarray  # (len(ref_ids), dim), L2-normalised

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, ids=np.array(list(self.values), dtype=str),
                     hub=np.array(list(self.values.values()), dtype=np.float32),
                     ref_ids=np.array(self.ref_ids, dtype=str),
                     ref=np.asarray(self.ref, dtype=np.float32),
                     fingerprint=np.array(self.fingerprint))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> HubTable:
        with np.load(path) as z:
            return cls(fingerprint=str(z["fingerprint"]),
                       values=dict(zip(z["ids"].tolist(), z["hub"].tolist(), strict=True)),
                       ref_ids=z["ref_ids"].tolist(), ref=z["ref"])


def refresh_hubness(store: ChromaStore, cache_dir: Path | None,
                    ids: Sequence[str] | None = None,
                    previous: HubTable | None = None, background: bool = False,
                    vectors: tuple[Sequence[str], np.ndarray] | None = None) -> HubTable:
    """The hubness table for the collection as it is: from its persisted file if there is one;
    else, when the corpus is larger than the reference sample and an earlier table is at hand
    (`previous`, or the newest on disk), incrementally: removed chunks dropped, added ones
    scored against the earlier reference (reading only their vectors); else in full."""
    ids = sorted(ids if ids is not None else store.chunk_ids())
    fp = _fingerprint(ids, store.embed_id, str(HUB_NEIGHBOURS), str(HUB_SAMPLE))
    path = cache_dir / f"hubness-{fp}.npz" if cache_dir is not None else None
    if previous is not None and previous.fingerprint == fp:
        return previous
    if path is not None and path.exists():
        try:
            return HubTable.load(path)
        except (OSError, ValueError, KeyError, EOFError) as e:
            logger.warning("the hubness cache %s is damaged (%s): recomputing it", path, e)
            _remove(path)
    if previous is None and (newest := _newest(cache_dir, "hubness-*.npz")) is not None:
        try:
            previous = HubTable.load(newest)
        except (OSError, ValueError, KeyError, EOFError):
            previous = None
    t0 = time.perf_counter()
    table = _hub_incremental(store, ids, previous, fp) if previous is not None else None
    how = "incrementally"
    if table is None:
        how = "in full"
        # Every vector, as the caller already read them (the exact search's matrix) or now.
        got_ids, vecs = vectors if vectors is not None else store.vectors()
        if len(got_ids) < 2:
            table = HubTable(fp, dict.fromkeys(got_ids, 0.0), list(got_ids),
                             np.zeros((len(got_ids), 0), np.float32))
        else:
            ref_idx = _hub_reference(len(got_ids), HUB_SAMPLE)
            table = HubTable(fp, dict(zip(got_ids, hubness(vecs).tolist(), strict=True)),
                             [got_ids[i] for i in ref_idx], vecs[ref_idx])
    logger.info("computed hubness of %d chunks %s in %.0f ms", len(table.values), how,
                (time.perf_counter() - t0) * 1000)
    if path is not None:
        if background:
            _write_later(_persist_hub, table, path)
        else:
            _persist_hub(table, path)
    return table


def _persist_hub(table: HubTable, path: Path) -> None:
    try:
        table.save(path)
        _prune(path.parent, "hubness-*.npz", path)
    except OSError as e:
        logger.warning("could not persist the hubness table to %s: %s", path, e)


def _hub_incremental(store: ChromaStore, ids: list[str], previous: HubTable,
                     fp: str) -> HubTable | None:
    """None when a full computation is due: a corpus within the reference sample (where every
    passage is everyone's reference, and the full computation is cheap), or a reference that
    lost more than a tenth of its members."""
    idset = set(ids)
    if len(ids) <= HUB_SAMPLE or len(previous.ref_ids) < HUB_SAMPLE:
        return None
    alive = np.array([r in idset for r in previous.ref_ids], dtype=bool)
    if alive.sum() < 0.9 * len(previous.ref_ids):
        return None
    values = {i: h for i, h in previous.values.items() if i in idset}
    added = [i for i in ids if i not in values]
    if added:
        got_ids, vecs = store.vectors_of(added)
        ref = previous.ref[alive]
        values.update(zip(got_ids, _hub_rows(vecs, ref, None,
                                             min(HUB_NEIGHBOURS, len(ref))).tolist(),
                          strict=True))
    return HubTable(fp, values, previous.ref_ids, previous.ref)


def load_hubness(store: ChromaStore, cache_dir: Path | None,
                 ids: Sequence[str] | None = None) -> dict[str, float]:
    """chunk id → hubness (see `refresh_hubness`)."""
    return refresh_hubness(store, cache_dir, ids).values


# --------------------------------------------------------------------------------------------
# Exact nearest neighbours
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VectorMatrix:
    """Every passage vector of the collection, searched exactly. Chroma's HNSW graph is
    approximate (at search breadth 500 it lost 22-25 passages of the exact top 40 and 80 over
    52 questions on a 4,526-passage folder) and each process that loads it may build it
    differently, so one question could retrieve differently in two processes or two runs.
    A matrix product over a few thousand vectors takes a fraction of a millisecond."""

    ids: tuple[str, ...]
    vectors: np.ndarray  # (len(ids), dim), L2-normalised rows

    def top(self, question_vector: np.ndarray, n: int) -> list[tuple[str, float]]:
        """The n most similar passages, best first. Ties (copies of one wire story have one
        vector) go by id, at the cut too, so neither the order of the rows nor the process
        changes the result; scores are compared to 6 decimals, below which a product's
        rounding may differ from row to row."""
        if not self.ids or n <= 0:
            return []
        sims = np.round(self.vectors @ np.asarray(question_vector, dtype=np.float32), 6)
        n = min(n, len(sims))
        kth = np.partition(sims, len(sims) - n)[len(sims) - n]  # the n-th best score
        idx = np.flatnonzero(sims >= kth)
        return sorted(((self.ids[i], float(sims[i])) for i in idx),
                      key=lambda t: (-t[1], t[0]))[:n]


def refresh_matrix(store: ChromaStore, ids: Sequence[str],
                   previous: VectorMatrix | None = None) -> VectorMatrix:
    """The vectors of the collection as it is: from `previous`, dropping removed passages and
    reading only the added ones, or else read in full."""
    wanted = set(ids)
    if previous is None:
        got_ids, vecs = store.vectors()
        # Read page by page: a write by another process meanwhile may repeat a row or add one
        # that `ids` does not have yet. Keep each passage of `ids` once.
        seen: set[str] = set()
        rows = [i for i, cid in enumerate(got_ids)
                if cid in wanted and not (cid in seen or seen.add(cid))]
        return _frozen(tuple(got_ids[i] for i in rows),
                       np.asarray(vecs, dtype=np.float32)[rows] if rows else None)
    keep = [i for i, cid in enumerate(previous.ids) if cid in wanted]
    have = {previous.ids[i] for i in keep}
    added = [cid for cid in ids if cid not in have]
    new_ids, new_vecs = store.vectors_of(added) if added else ([], None)
    parts = [previous.vectors[keep]] if keep else []
    if new_ids:
        parts.append(np.asarray(new_vecs, dtype=np.float32))
    return _frozen(tuple(previous.ids[i] for i in keep) + tuple(new_ids),
                   np.vstack(parts) if parts else None, previous.vectors.shape[1])


def _frozen(ids: tuple[str, ...], vectors: np.ndarray | None, dim: int = 0) -> VectorMatrix:
    """A matrix no one can change: queries of several threads read it at once."""
    vectors = vectors if vectors is not None else np.zeros((0, dim), np.float32)
    vectors.flags.writeable = False
    return VectorMatrix(ids, vectors)


# --------------------------------------------------------------------------------------------
# Retrievers
# --------------------------------------------------------------------------------------------

class DenseRetriever(BaseRetriever):
    """Nearest neighbours for the e5 query embedding (exact over `matrix` when given, else
    Chroma's HNSW search), re-scored as
    cos(q, p) − hub_penalty · hubness(p) + language_weight · lean(q, language of p)."""

    def __init__(self, store: ChromaStore, embedder: Embedder, top_k: int,
                 hub: dict[str, float] | None = None, hub_penalty: float = 0.0,
                 language_weight: float = 0.0, centroids: LanguageCentroids | None = None,
                 matrix: VectorMatrix | None = None):
        super().__init__()
        self.store, self.embedder, self.top_k = store, embedder, top_k
        self.matrix = matrix
        self.hub = hub or {}
        self.hub_penalty = hub_penalty if self.hub else 0.0
        self.centroids = centroids
        self.language_weight = language_weight if centroids is not None else 0.0

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        vec = self.embedder.embed_queries([query_bundle.query_str])[0]
        hits = self.nearest(vec, dense_depth(self.top_k, self.hub_penalty, self.language_weight))
        scored = hub_rescore(language_rescore(hits, self.centroids, vec, self.language_weight),
                             self.hub, self.hub_penalty, self.top_k)
        return [NodeWithScore(node=chunk_to_node(c), score=s) for c, s in scored]

    def nearest(self, vec: np.ndarray, n: int) -> list[tuple[Chunk, float]]:
        """The n passages nearest to the question vector, with their cosine, best first."""
        if self.matrix is None:
            return self.store.query(vec, n)
        top = self.matrix.top(vec, n)
        chunks = {c.id: c for c in self.store.get_chunks([cid for cid, _ in top])}
        return [(chunks[cid], s) for cid, s in top if cid in chunks]


def dense_depth(top_k: int, hub_penalty: float, language_weight: float = 0.0) -> int:
    """How many nearest neighbours to fetch: a correction reorders them, so look deeper."""
    return top_k * 2 if hub_penalty or language_weight else top_k


def language_rescore(hits: Sequence[tuple[Chunk, float]], centroids: LanguageCentroids | None,
                     question_vector: np.ndarray, weight: float) -> list[tuple[Chunk, float]]:
    """cos(q, p) + weight · the embedder's lean from q to p's language (rag.lang.centroids; the
    weight is negative and undoes it), in the order given."""
    if not weight or centroids is None or not hits:
        return list(hits)
    lean = centroids.bias(question_vector, [c.language or None for c, _ in hits])
    return [(c, s + weight * float(b)) for (c, s), b in zip(hits, lean, strict=True)]


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

    def __init__(self, bm25, chunks: list[Chunk], top_k: int, from_cache: bool = False,
                 corpus: TokenizedCorpus | None = None, fingerprint: str = ""):
        super().__init__()
        self.bm25 = bm25
        self.chunks = chunks  # row i of the BM25 matrix is chunks[i]
        self.top_k = top_k
        self.from_cache = from_cache  # for tests and logs: was the persisted index reused?
        self.corpus = corpus  # the base of the next incremental refresh
        self.fingerprint = fingerprint

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


@dataclass
class TokenizedCorpus:
    """The chunks BM25 indexes, in row order, with their token ids: kept so that a change to
    the collection tokenises only the chunks that are new."""

    chunks: list[Chunk]
    tokens: list[np.ndarray]  # int32 token ids per chunk, same order
    vocab: dict[str, int]  # token → id, ids 0..len-1

    def save(self, folder: Path) -> None:
        flat = (np.concatenate(self.tokens) if self.tokens else np.zeros(0, np.int32))
        offsets = np.cumsum([0] + [len(t) for t in self.tokens]).astype(np.int64)
        with open(folder / "tokens.npz", "wb") as f:
            np.savez(f, flat=flat.astype(np.int32), offsets=offsets,
                     vocab=np.array(list(self.vocab), dtype=str))
        # vars(), not asdict(): asdict deep-copies every field, and this runs per refresh.
        (folder / "chunks.json").write_text(
            json.dumps([vars(c) for c in self.chunks], ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> TokenizedCorpus:
        chunks = [Chunk(**r) for r in json.loads((folder / "chunks.json").read_text())]
        with np.load(folder / "tokens.npz") as z:
            flat, offsets, words = z["flat"], z["offsets"], z["vocab"].tolist()
        if len(offsets) != len(chunks) + 1:
            raise ValueError("the cached tokens do not match the cached chunks")
        tokens = [flat[offsets[i]:offsets[i + 1]] for i in range(len(chunks))]
        return cls(chunks, tokens, {w: i for i, w in enumerate(words)})


def _tokenize_into(texts: Sequence[str], vocab: dict[str, int]) -> list[np.ndarray]:
    out = []
    for text in texts:
        out.append(np.fromiter((vocab.setdefault(t, len(vocab)) for t in bm25_tokens(text)),
                               dtype=np.int32))
    return out


K1, B = 1.5, 0.75


def _bm25_from(corpus: TokenizedCorpus):
    """A bm25s index (Lucene BM25) over the tokenised corpus, its score matrix computed with
    whole-array operations: bm25s's own `index` loops over the documents in Python, which
    made a refresh of a 100k-passage index take most of a minute. Same scores (a test
    compares them with bm25s's own build)."""
    import bm25s
    import scipy.sparse as sp

    n = len(corpus.tokens)
    n_vocab = len(corpus.vocab) + 1  # + the empty token bm25s keeps for token-less questions
    lengths = np.fromiter((len(t) for t in corpus.tokens), dtype=np.int64, count=n)
    flat = (np.concatenate(corpus.tokens).astype(np.int64) if lengths.sum()
            else np.zeros(0, np.int64))
    doc = np.repeat(np.arange(n, dtype=np.int64), lengths)
    counts = sp.coo_matrix((np.ones(len(flat), np.float32), (doc, flat)),
                           shape=(n, n_vocab)).tocsr()
    counts.sum_duplicates()
    counts = counts.tocoo()
    rows, cols, tf = counts.row, counts.col, counts.data
    df = np.bincount(cols, minlength=n_vocab).astype(np.float64)
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
    avg = lengths.mean() if n else 1.0
    score = (idf[cols] * tf / (K1 * ((1 - B) + B * lengths[rows] / avg) + tf)).astype(np.float32)
    matrix = sp.csc_matrix((score, (rows, cols)), shape=(n, n_vocab), dtype=np.float32)
    bm = bm25s.BM25(k1=K1, b=B, method="lucene")
    bm.scores = {"data": matrix.data, "indices": matrix.indices.astype(np.int32),
                 "indptr": matrix.indptr, "num_docs": n}
    bm.vocab_dict = {**corpus.vocab, "": n_vocab - 1}
    bm.unique_token_ids_set = set(bm.vocab_dict.values())
    bm.nonoccurrence_array = None  # Lucene BM25 has none (bm25s sets it in its own index())
    return bm


# Cache files are written by one background thread: a refresh (an upload) returns once the new
# state is in memory, not after rewriting tens of megabytes. Interpreter exit waits for it.
_writer: ThreadPoolExecutor | None = None
_writer_lock = threading.Lock()


def _write_later(fn, *args) -> Future:
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rag-cache-write")
        return _writer.submit(fn, *args)


def wait_for_cache_writes() -> None:
    """Block until the cache files queued so far are written (tests, benchmarks)."""
    _write_later(lambda: None).result()


def load_bm25(store: ChromaStore, cache_dir: Path | None, top_k: int,
              ids: Sequence[str] | None = None,
              previous: LexicalRetriever | None = None,
              background: bool = False) -> LexicalRetriever | None:
    """The BM25 index for the collection as it is: the persisted one for exactly these chunks
    if there is one; else built from an earlier tokenised corpus (`previous`, or the newest
    persisted one) plus the chunks added since, so a change re-reads and re-tokenises only
    those; else built in full. Scores are the same whichever way it was built."""
    # bm25s sets its own logger to DEBUG when imported; let it follow ours instead.
    import bm25s

    bm25_log = logging.getLogger("bm25s")
    if bm25_log.level == logging.DEBUG:
        bm25_log.setLevel(logging.NOTSET)

    ids = sorted(ids if ids is not None else store.chunk_ids())
    if not ids:
        return None
    fp = _fingerprint(ids)
    folder = cache_dir / f"bm25-{fp}" if cache_dir is not None else None
    if previous is not None and previous.fingerprint == fp:
        return previous
    if folder is not None and folder.is_dir():
        try:
            corpus = TokenizedCorpus.load(folder)
            bm = bm25s.BM25.load(str(folder), show_progress=False)
            # The name only says which index was meant; the files must also agree with it (a
            # truncated or emptied chunks.json would crash every question).
            if (sorted(c.id for c in corpus.chunks) != ids
                    or bm.scores["num_docs"] != len(corpus.chunks)):
                raise ValueError("the cached chunks do not match the index")
            logger.debug("loaded BM25 index from %s", folder)
            return LexicalRetriever(bm, corpus.chunks, top_k, from_cache=True, corpus=corpus,
                                    fingerprint=fp)
        except FileNotFoundError:
            pass  # being written by another process, or pruned: build below
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError) as e:
            logger.warning("the BM25 cache in %s is damaged (%s): rebuilding it", folder, e)
            _remove(folder)  # so that the rebuilt index can take its name
    base = previous.corpus if previous is not None else None
    if base is None and (newest := _newest(cache_dir, "bm25-*")) is not None:
        try:
            base = TokenizedCorpus.load(newest)
        except (OSError, ValueError, KeyError, TypeError, EOFError):
            base = None  # no usable base: full build
    t0 = time.perf_counter()
    if base is not None:
        idset = set(ids)
        keep = [i for i, c in enumerate(base.chunks) if c.id in idset]
        known = {base.chunks[i].id for i in keep}
        added_ids = [i for i in ids if i not in known]
        added: list[Chunk] = []
        for lo in range(0, len(added_ids), 1000):
            added.extend(store.get_chunks(added_ids[lo : lo + 1000]))
        vocab = dict(base.vocab)
        corpus = TokenizedCorpus([base.chunks[i] for i in keep] + added,
                                 [base.tokens[i] for i in keep]
                                 + _tokenize_into([c.text for c in added], vocab), vocab)
        how = f"incrementally (+{len(added)} −{len(base.chunks) - len(keep)})"
    else:
        chunks = sorted(store.iter_chunks(), key=lambda c: c.id)
        vocab = {}
        corpus = TokenizedCorpus(chunks, _tokenize_into([c.text for c in chunks], vocab), vocab)
        how = "in full"
    bm = _bm25_from(corpus)
    logger.info("built BM25 index over %d chunks %s in %.0f ms", len(corpus.chunks), how,
                (time.perf_counter() - t0) * 1000)
    if folder is not None:
        if background:
            _write_later(_persist_bm25, bm, corpus, folder)
        else:
            _persist_bm25(bm, corpus, folder)
    return LexicalRetriever(bm, corpus.chunks, top_k, corpus=corpus, fingerprint=fp)


def _persist_bm25(bm, corpus: TokenizedCorpus, folder: Path) -> None:
    """Written into a hidden folder beside, then renamed: the folder is complete once named."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        bm.save(str(tmp), show_progress=False)
        corpus.save(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():  # not "another process got there first"
                raise
            _remove(tmp)
        _prune(folder.parent, "bm25-*", folder)
    except OSError as e:
        logger.warning("could not persist the BM25 index to %s: %s", folder, e)
        _remove(tmp)


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
    hub: HubTable | None = None
    matrix: VectorMatrix | None = None


class HybridRetriever:
    """Dense + BM25, fused with weighted reciprocal rank fusion, de-duplicated."""

    def __init__(self, store: ChromaStore, embedder: Embedder, *, top_k: int = 5,
                 candidates: int = 20, bm25_dir: Path | None = None, use_bm25: bool = True,
                 dense_weight: float = 1.0, bm25_weight: float = 1.0, rrf_k: float = 60.0,
                 hub_penalty: float = 0.5, dup_overlap: float = 0.6, per_source: int = 0,
                 context_chunks: int = 0, language_weight: float = 0.0,
                 centroids: LanguageCentroids | None = None, exact_search: bool = True):
        self.store = store
        # Dense search over the vectors in memory rather than Chroma's approximate graph
        # (VectorMatrix): the same question retrieves the same passages in every process.
        self.exact_search = exact_search
        # Passages on each side of each of the first top_k hits, read with it as context.
        self.context_chunks = context_chunks
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
        # The dense score's correction for the embedder's lean to the question's language
        # (rag.lang.centroids): the centroids given, else the shipped ones when they are this
        # embedder's.
        self.language_weight = language_weight
        if centroids is None and language_weight:
            centroids = language_centroids.for_embedder(getattr(embedder, "id", None))
        self.centroids = centroids if language_weight else None
        self._state: RetrieverState | None = None
        # The last state built: the base of the next (incremental) one after a refresh().
        self._base: RetrieverState | None = None
        # One build at a time. Queries wait on it only when the collection changed, and then
        # would have to wait for the new state anyway.
        self._build_lock = threading.Lock()

    @property
    def lexical(self) -> LexicalRetriever | None:
        state = self._state
        return state.lexical if state is not None else None

    def refresh(self) -> None:
        """Retire the current state so the next query builds one for the changed collection.
        The retired state stays the base of that build: BM25 re-tokenises, and hubness
        scores, only the chunks added since (the per-query version check does the same for
        writes by other processes)."""
        if self._state is not None:
            self._base = self._state
        self._state = None

    def _build(self, version: str) -> RetrieverState:
        from llama_index.core.llms import MockLLM

        if self.store.count() == 0:
            raise RagError("The index is empty: run `rag index` to add articles.")
        base = self._state or self._base
        ids = self.store.chunk_ids()
        matrix = (refresh_matrix(self.store, ids, base.matrix if base is not None else None)
                  if self.exact_search else None)
        # A first build reads every vector once: a hubness table computed in full uses the
        # matrix just read (in the store's order, as a read of its own would be).
        hub = (refresh_hubness(self.store, self.bm25_dir, ids,
                               previous=base.hub if base is not None else None, background=True,
                               vectors=(list(matrix.ids), matrix.vectors)
                               if matrix is not None and base is None else None)
               if self.hub_penalty else None)
        retrievers: list[BaseRetriever] = [
            DenseRetriever(self.store, self.embedder, self.candidates,
                           hub.values if hub is not None else None, self.hub_penalty,
                           self.language_weight, self.centroids, matrix)
        ]
        weights = [self.dense_weight]
        lexical = None
        if self.use_bm25 and self.bm25_weight > 0:
            lexical = load_bm25(self.store, self.bm25_dir, self.candidates, ids,
                                previous=base.lexical if base is not None else None,
                                background=True)
            if lexical is not None:
                retrievers.append(lexical)
                weights.append(self.bm25_weight)
        fusion = WeightedRRFRetriever(
            retrievers, weights, rrf_k=self.rrf_k, llm=MockLLM(), mode="reciprocal_rerank",
            num_queries=1, use_async=False, similarity_top_k=self.candidates,
        )
        return RetrieverState(version=version, fusion=fusion, lexical=lexical, hub=hub,
                              matrix=matrix)

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
                self._base = None  # its memory is no longer needed
        return state

    def retrieve(self, question: str, k: int | None = None) -> list[Retrieved]:
        k = k or self.top_k
        question = question.strip()
        if not question:
            raise RagError("The question is empty.")
        t0 = time.perf_counter()
        state = self.current()
        fused = state.fusion.retrieve_top(question, max(k, self.candidates))
        # A passage that is only a link (an article's source URL on its last line) shares the
        # words of its slug with the question and holds nothing to read.
        out = collapse_duplicates(
            [(node_to_chunk(h.node), float(h.score or 0.0), h.node.metadata) for h in fused
             if says_something(h.node.get_content())],
            k, overlap=self.dup_overlap, per_source=self.per_source,
        )
        if self.context_chunks and out:
            out = with_context(self.store, out, self.top_k, self.context_chunks)
        logger.debug("retrieved %d in %.1f ms", len(out), (time.perf_counter() - t0) * 1000)
        return out


def with_context(store: ChromaStore, hits: list[Retrieved], first: int,
                 span: int) -> list[Retrieved]:
    """The hits, the first `first` of them with up to `span` neighbouring passages of their
    article on each side as context (small-to-big: match on a short passage, read a window)."""
    near = store.neighbours([h.chunk for h in hits[:first]], span)
    return [dataclasses.replace(h, context=near.get(h.chunk.id, ())) if i < first else h
            for i, h in enumerate(hits)]


# --------------------------------------------------------------------------------------------
# Near-duplicate passages and diversity
# --------------------------------------------------------------------------------------------

_SHINGLE = 4  # words per shingle: long enough that two unrelated passages rarely share one


@functools.lru_cache(maxsize=8192)  # the same passages come back for related questions
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
