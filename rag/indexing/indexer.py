"""Incremental indexing: read → clean → chunk → embed → store, skipping unchanged files."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from rag.embed import Embedder
from rag.indexing.chunking import chunk_document
from rag.indexing.ingest import Skipped, content_hash, read_documents, scan, source_key
from rag.store import ChromaStore
from rag.types import IndexReport

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, current file)


class RateMeter:
    """Rate and time left of a long step, for progress lines where no terminal bar is drawn
    (the app's log): "312/1433 files, 0.45 files/s, about 41 min left"."""

    def __init__(self, unit: str = "files", clock: Callable[[], float] = time.monotonic):
        self.unit, self.clock = unit, clock
        self.start: float | None = None
        self.first = 0

    def line(self, done: int, total: int) -> str:
        now = self.clock()
        if self.start is None:
            self.start, self.first = now, done
        elapsed = now - self.start
        rate = (done - self.first) / elapsed if elapsed > 0 and done > self.first else 0.0
        text = f"{done}/{total} {self.unit}"
        if rate:
            left = (total - done) / rate
            text += f", {rate:.2f} {self.unit}/s, about {_duration(left)} left"
        return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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

    Documents are keyed by their path relative to `path` (a folder), or by the file name
    (a single file). Unchanged files (same sha256, stored chunks matching the record) are
    skipped, changed ones replaced; with `prune`, documents that were indexed from under
    `path` but are no longer there (under that key) are deleted. A document left half-written
    by a crash (its chunks disagree with its record, or chunks without a record) is repaired.
    """
    t0 = time.perf_counter()
    path = Path(path)
    root = path if path.is_dir() and not path.is_symlink() else None
    scanned = scan(path)
    files = [f for f, reason in scanned if reason is None]
    rejected = [Skipped(str(f), reason) for f, reason in scanned if reason is not None]
    for r in rejected:
        logger.warning("skipping %s: %s", r.path, r.reason)
    keys = {f: source_key(f, root) for f in files}
    known = store.documents()
    counts = store.chunk_counts()
    # A crash between a document's writes leaves its chunks disagreeing with its record
    # (ids are deterministic, so a finished write always matches): such documents are redone.
    suspect = {s for s, info in known.items() if counts.get(s, 0) != info.chunks}
    # Hash before reading: an unchanged file is not cleaned or language-detected again, so
    # re-indexing an unchanged corpus costs a directory walk and one hash per file.
    same = {f for f in files if keys[f] not in suspect and _unchanged(f, known.get(keys[f]))}
    docs, skipped = read_documents([f for f in files if f not in same], root)
    todo = [d for d in docs if d.source in suspect or known.get(d.source) is None
            or known[d.source].sha256 != d.sha256]
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
    if prune and root is not None:
        present = set(keys.values())  # unreadable files keep their previous index entry
        top = root.resolve()
        for source, info in known.items():
            if source in present or not info.path:
                continue
            p = Path(info.path)
            # Indexed from under this folder but not there under this name any more: the
            # file was deleted, is now a symbolic link, or was indexed under another key.
            if p.absolute().is_relative_to(root.absolute()) or _resolve(p).is_relative_to(top):
                store.delete_document(source)
                removed += 1
                logger.info("removed %s (no longer an article file at %s)", source, p)
    # Chunks with no document record belong to a write that never finished.
    orphans = set(counts) - set(known) - {d.source for d in todo}
    for source in sorted(orphans):
        store.delete_document(source)
        logger.info("removed the unfinished chunks of %s", source)

    return IndexReport(
        files=len(files),
        indexed=len(todo),
        unchanged=unchanged,
        removed=removed,
        skipped=tuple((s.path, s.reason) for s in rejected + skipped),
        chunks=written,
        total_chunks=store.count(),
        seconds=time.perf_counter() - t0,
        encode_seconds=encode_s,
    )


def merge_reports(reports: list[IndexReport]) -> IndexReport:
    return IndexReport(
        files=sum(r.files for r in reports), indexed=sum(r.indexed for r in reports),
        unchanged=sum(r.unchanged for r in reports), removed=sum(r.removed for r in reports),
        skipped=tuple(s for r in reports for s in r.skipped),
        chunks=sum(r.chunks for r in reports), total_chunks=reports[-1].total_chunks,
        seconds=sum(r.seconds for r in reports),
        encode_seconds=sum(r.encode_seconds for r in reports),
    )


def _resolve(p: Path) -> Path:
    try:
        return p.resolve()
    except OSError:
        return p.absolute()


def _unchanged(path: Path, info) -> bool:
    if info is None:
        return False
    try:
        return content_hash(path.read_bytes()) == info.sha256
    except OSError:
        return False  # read_documents reports why the file cannot be read


def _embed(embedder: Embedder, texts: list[str], batch_size: int,
           progress: Callable[[int, int], None] | None = None):
    """Vectors of `texts`, a batch at a time; `progress(done, total)` after each batch (a long
    upload embeds for a minute or more)."""
    import numpy as np

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    parts = []
    for i in range(0, len(texts), batch_size):
        parts.append(embedder.embed_passages(texts[i : i + batch_size]))
        if progress is not None:
            progress(min(i + batch_size, len(texts)), len(texts))
    return np.vstack(parts)
