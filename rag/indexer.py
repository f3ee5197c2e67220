"""Incremental indexing: read → clean → chunk → embed → store, skipping unchanged files."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .chunking import chunk_document
from .embed import Embedder
from .ingest import list_files, read_documents
from .store import ChromaStore
from .types import IndexReport

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, current file)


def index_path(
    path: Path,
    store: ChromaStore,
    embedder: Embedder,
    *,
    chunk_size: int = 200,
    chunk_overlap: int = 0,
    batch_size: int = 32,
    progress: Progress | None = None,
    prune: bool = True,
) -> IndexReport:
    """Bring the index in line with the articles under `path`.

    Unchanged files (same sha256) are skipped, changed ones replaced; with `prune`, documents
    that were indexed from under `path` but no longer exist there are deleted.
    """
    t0 = time.perf_counter()
    files = list_files(path)
    known = store.documents()
    # Hash before reading: an unchanged file is not cleaned or language-detected again, so
    # re-indexing an unchanged corpus costs a directory walk and one hash per file.
    same = {f for f in files if _unchanged(f, known)}
    docs, skipped = read_documents([f for f in files if f not in same])
    todo = [d for d in docs if known.get(d.source) is None or known[d.source].sha256 != d.sha256]
    unchanged = len(same) + len(docs) - len(todo)

    encode_s = 0.0
    written = 0
    # Chroma writes (~30 ms per call, mostly I/O) run on one writer thread while the next
    # document is embedded, so the build costs about what the encoder alone costs. At most one
    # write is pending: memory stays bounded, order is kept and a failed write stops the run.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rag-index-write") as writer:
        pending: Future | None = None
        for i, doc in enumerate(todo):
            if progress:
                progress(i, len(todo), doc.source)
            old = known.get(doc.source)
            if old and old.path and Path(old.path).resolve() != Path(doc.path).resolve():
                logger.warning("%s replaces the indexed file of the same name from %s",
                               doc.path, old.path)
            chunks = chunk_document(doc, chunk_size, chunk_overlap)
            te = time.perf_counter()
            vectors = _embed(embedder, [c.text for c in chunks], batch_size)
            encode_s += time.perf_counter() - te
            if pending is not None:
                pending.result()
            pending = writer.submit(store.replace_document, doc, chunks, vectors)
            written += len(chunks)
            logger.info("indexed %s: %d chunks", doc.source, len(chunks))
        if pending is not None:
            pending.result()
    if progress:
        progress(len(todo), len(todo), "")

    removed = 0
    if prune:
        present = ({d.source for d in docs} | {f.name for f in same}
                   | {Path(s.path).name for s in skipped})
        root = path.resolve() if path.is_dir() else None
        for source, info in known.items():
            if source in present or root is None or not info.path:
                continue
            p = Path(info.path).resolve()
            if p.is_relative_to(root) and not p.exists():
                store.delete_document(source)
                removed += 1
                logger.info("removed %s (file deleted)", source)

    return IndexReport(
        files=len(files),
        indexed=len(todo),
        unchanged=unchanged,
        removed=removed,
        skipped=tuple((s.path, s.reason) for s in skipped),
        chunks=written,
        total_chunks=store.count(),
        seconds=time.perf_counter() - t0,
        encode_seconds=encode_s,
    )


def _unchanged(path: Path, known: dict) -> bool:
    info = known.get(path.name)
    if info is None:
        return False
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == info.sha256
    except OSError:
        return False  # read_documents reports why the file cannot be read


def _embed(embedder: Embedder, texts: list[str], batch_size: int):
    import numpy as np

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    parts = [embedder.embed_passages(texts[i : i + batch_size])
             for i in range(0, len(texts), batch_size)]
    return np.vstack(parts)
