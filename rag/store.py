"""The Chroma store: the only module that knows Chroma's clients and its dict shapes.

Two collections per index: `<name>` holds chunks (own embeddings, cosine space) and
`<name>-docs` holds one record per article (its full text, hash and body spans), which is what
the source viewer serves: a file that is not in the index cannot be opened.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.settings import HNSW_EF_SEARCH
from rag.types import Chunk, Document, RagError

logger = logging.getLogger(__name__)

_EMBED_KEY = "embed_id"
_POINTER = "current"
# 2: documents keyed by their path relative to the data folder, chunk ids unique per document,
# collections per generation behind a pointer. Release 1 had one `<name>` collection.
FORMAT_VERSION = 2
# Version stamps written by this process: a stamp not in here was written by another process,
# whose writes a local Chroma client does not see until it is reopened (ChromaStore.version).
_OWN_VERSIONS: set[str] = set()
# Below this much free space on the index's disk, an unexplained write error is a full disk.
LOW_DISK_BYTES = 16_000_000


class MissingIndexError(RagError):
    """No index has been built yet."""


class LegacyIndexError(RagError):
    """The index was built by an earlier release and must be rebuilt."""


class StoreUnavailableError(RagError):
    """Chroma cannot be reached (a server that is down) - not the same as "not in the index"."""


class StoreFullError(RagError):
    """The disk holding the index is full."""


def _call(fn):
    """Run one Chroma call; outages and a full disk become errors that say what to do."""
    try:
        return fn()
    except RagError:
        raise
    except Exception as e:
        translated = _translate(e)
        if translated is None:
            raise
        raise translated from e


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _translate(e: Exception) -> RagError | None:
    for x in _chain(e):
        if isinstance(x, OSError) and x.errno == errno.ENOSPC:
            return _full(e)
        # Chroma's Rust and sqlite layers report a full disk only in their message.
        low = str(x).lower()
        if "disk is full" in low or "no space left" in low:
            return _full(e)
    for x in _chain(e):
        name = type(x).__name__
        if isinstance(x, ConnectionError) or name in {
            "ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError",
            "ReadError", "WriteError", "PoolTimeout",
        }:
            return StoreUnavailableError(
                f"The Chroma server cannot be reached ({type(x).__name__}). Your articles are "
                "safe; start the server again (`chroma run --path DIR --host 127.0.0.1 --port "
                "PORT`) and retry, or unset RAG_CHROMA_HOST to use the local index."
            )
    return None


def _full(e: Exception) -> StoreFullError:
    return StoreFullError(
        "The disk holding the index is full, so nothing more could be written. What was "
        "already indexed is intact: free some space, then run `rag index` (or upload) again."
    )


@dataclass(frozen=True)
class DocInfo:
    source: str
    sha256: str
    title: str
    language: str
    language_guess: str
    chars: int
    chunks: int
    path: str


def make_client(settings):
    """PersistentClient at settings.index_dir, or HttpClient when a Chroma server is configured."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if settings.chroma_host:
        try:
            client = chromadb.HttpClient(
                host=settings.chroma_host, port=settings.chroma_port, ssl=settings.chroma_ssl,
                settings=chroma_settings,
            )
            client.heartbeat()
        except Exception as e:
            raise RagError(
                f"Cannot reach the Chroma server at {settings.chroma_host}:{settings.chroma_port} "
                f"({e}). Start one with `chroma run --path DIR --host 127.0.0.1 --port "
                f"{settings.chroma_port}` or unset RAG_CHROMA_HOST to use the local index."
            ) from e
        return client
    settings.index_dir.mkdir(parents=True, exist_ok=True)
    try:
        return chromadb.PersistentClient(path=str(settings.index_dir), settings=chroma_settings)
    except Exception as e:
        raise RagError(
            f"The index at {settings.index_dir} cannot be opened ({e}). It may be damaged or "
            f"from another Chroma version: delete the folder and run `rag index` to rebuild it."
        ) from e


class ChromaStore:
    """One index: a pointer record naming the current generation's two collections.

    Writes go to the current generation in an order that never loses data (new chunks first,
    then the old ones, then the document record); a rebuild fills a new generation aside and
    switches the pointer only when it is complete. Every committed write stamps the pointer
    with a new version, which readers (another process too) compare per query.
    """

    def __init__(self, client, name: str, embed_id: str, *, generation: int | None = None,
                 local_path: Path | None = None, reopen: Callable[[], Any] | None = None,
                 ef_search: int = HNSW_EF_SEARCH):
        self.client = client
        self.ef_search = ef_search
        # A fresh client for a local index written by another process (see version()).
        self._reopen = reopen
        self._seen: str | None = None  # the last version stamp read
        self._reopen_lock = threading.Lock()
        self.name = name
        self.embed_id = embed_id
        self.local_path = local_path  # the PersistentClient's folder, for disk-full checks
        self._pinned = generation  # a generation being built aside (see begin_rebuild)
        self._gen: int | None = None  # generation of the cached collections
        self._chunks = None
        self._docs = None
        self._meta_col = None

    def _call(self, fn):
        """_call, and for a local index: an error Chroma does not explain (its compaction
        reports a full disk as "Failed to apply logs") is a full disk when the disk is."""
        try:
            return _call(fn)
        except RagError:
            raise
        except Exception as e:
            if self._disk_nearly_full():
                raise _full(e) from e
            raise

    def _disk_nearly_full(self) -> bool:
        if self.local_path is None:
            return False
        try:
            return shutil.disk_usage(self.local_path).free < LOW_DISK_BYTES
        except OSError:
            return False

    # --- the pointer -----------------------------------------------------------------------------
    def _meta(self):
        if self._meta_col is None:
            self._meta_col = self._call(lambda: self.client.get_or_create_collection(
                f"{self.name}-meta", embedding_function=None))
        return self._meta_col

    def _pointer(self) -> dict | None:
        got = self._call(lambda: self._meta().get(ids=[_POINTER], include=["metadatas"]))
        return dict(got["metadatas"][0]) if got["ids"] else None

    def _write_pointer(self, generation: int) -> None:
        meta = {"generation": generation, "version": uuid.uuid4().hex, "format": FORMAT_VERSION}
        _OWN_VERSIONS.add(meta["version"])
        self._call(lambda: self._meta().upsert(ids=[_POINTER], embeddings=[[1.0]],
                                          metadatas=[meta], documents=[""]))

    def _names(self, generation: int) -> tuple[str, str]:
        return f"{self.name}-g{generation}", f"{self.name}-g{generation}-docs"

    def _collection_names(self) -> set[str]:
        cols = self._call(self.client.list_collections)
        return {c if isinstance(c, str) else c.name for c in cols}

    def _is_legacy(self) -> bool:
        return self.name in self._collection_names()

    def state(self) -> str:
        """"ready", "empty", "missing" (never built) or "legacy" (built by a release that keyed
        documents by file name; it must be rebuilt). Raises RagError when Chroma is down."""
        if self._pinned is None:
            ptr = self._pointer()
            if ptr is None:
                return "legacy" if self._is_legacy() else "missing"
        return "ready" if self.count() > 0 else "empty"

    def version(self) -> str:
        """A stamp that changes with every committed write (in any process)."""
        ptr = self._pointer()
        if ptr is None:
            return ""
        stamp = f"{ptr['generation']}:{ptr['version']}"
        if (self._reopen is not None and self._seen is not None and stamp != self._seen
                and ptr["version"] not in _OWN_VERSIONS):
            self._reopen_after_foreign_write(stamp)
        self._seen = stamp
        if self._pinned is None and self._gen is not None and ptr["generation"] != self._gen:
            self._chunks = self._docs = None  # switched by a rebuild: reopen on next use
        return stamp

    def _reopen_after_foreign_write(self, stamp: str) -> None:
        """A local Chroma client keeps its vector segments in memory and never reloads them:
        after `rag add` / `rag index` in another process, every query of a running server
        failed with "Error finding id" (the load run of issue 10). A new client reads the
        index as it is on disk now."""
        with self._reopen_lock:
            if self._seen == stamp:
                return  # another thread reopened for this stamp already
            assert self._reopen is not None
            logger.info("the index was changed by another process: reopening it")
            self.client = self._reopen()
            self._chunks = self._docs = self._meta_col = None
            self._gen = None
            self._seen = stamp

    def _touch(self) -> None:
        """Stamp a committed write. The write itself is done by then (the document record is
        the commit), so a failure here costs only freshness: other processes notice the change
        at the next stamp. It must not make a finished write look failed."""
        if self._pinned is None and self._gen is not None:
            try:
                self._write_pointer(self._gen)
            except Exception as e:  # noqa: BLE001 - see above
                logger.warning("could not stamp the index version: %s", e)

    # --- collections ---------------------------------------------------------------------------
    def _collection(self, create: bool):
        if self._chunks is not None:
            return self._chunks
        gen = self._pinned
        if gen is None:
            ptr = self._pointer()
            if ptr is None:
                if self._is_legacy():
                    raise LegacyIndexError(
                        "The index was built by an earlier version of newsrag (articles keyed "
                        "by file name) and must be rebuilt once: run `rag index --rebuild` "
                        "(or `rag index`, which does it). Your article files are not touched."
                    )
                if not create:
                    raise MissingIndexError(
                        f"No index found (collection {self.name!r}). Run `rag index` first "
                        "(or `python app.py`, which builds it on first run)."
                    )
                gen = 1
            elif int(ptr.get("format", 0)) > FORMAT_VERSION:
                raise RagError(
                    "The index was written by a newer version of newsrag; upgrade, or rebuild "
                    "it with this version: `rag index --rebuild`."
                )
            else:
                gen = int(ptr["generation"])
        chunks_name, docs_name = self._names(gen)
        if create:
            # The space goes in the configuration, not the legacy "hnsw:space" metadata: Chroma
            # drops that key (and falls back to l2) when a configuration is given too.
            config = {"hnsw": {"space": "cosine", "ef_search": self.ef_search}}
            chunks = self._call(lambda: self.client.get_or_create_collection(
                chunks_name,
                metadata={_EMBED_KEY: self.embed_id, "format": FORMAT_VERSION},
                configuration=config,
                embedding_function=None,  # never let Chroma download its default model
            ))
            docs = self._call(lambda: self.client.get_or_create_collection(
                docs_name, configuration=config, embedding_function=None))
            if self._pinned is None and self._pointer() is None:
                self._write_pointer(gen)
        else:
            names = self._collection_names()
            if chunks_name not in names or docs_name not in names:
                raise MissingIndexError(
                    f"The index's collection {chunks_name!r} is missing. Rebuild it: "
                    "`rag index --rebuild`."
                )
            chunks = self._call(lambda: self.client.get_collection(chunks_name,
                                                              embedding_function=None))
            docs = self._call(lambda: self.client.get_collection(docs_name,
                                                                 embedding_function=None))
        # Checked and widened before other threads can see the collection: a query elsewhere
        # would load the graph at the old breadth, and a wrong embedder must fail every time.
        self._check_embedder(chunks)
        self._apply_search_breadth(chunks)
        self._chunks, self._docs, self._gen = chunks, docs, gen
        return self._chunks

    def _apply_search_breadth(self, chunks) -> None:
        """The index searches as wide as the settings say: one made by an earlier release
        (Chroma's default, 100) is widened. It must happen before this process's first query,
        which loads the graph with the breadth it reads then."""
        try:
            hnsw = (chunks.configuration_json or {}).get("hnsw") or {}
            if int(hnsw.get("ef_search", self.ef_search)) == self.ef_search:
                return
            self._call(lambda: chunks.modify(configuration={"hnsw": {"ef_search":
                                                                     self.ef_search}}))
            if self.local_path is None:
                # A Chroma server keeps the graph it has loaded, with its old breadth.
                logger.warning("HNSW search breadth of %s set %s -> %d; it takes effect when the "
                               "Chroma server is restarted", chunks.name, hnsw.get("ef_search"),
                               self.ef_search)
            else:
                logger.info("HNSW search breadth of %s: %s -> %d", chunks.name,
                            hnsw.get("ef_search"), self.ef_search)
        except Exception as e:  # noqa: BLE001 - search still works, only less exactly
            logger.warning("could not set the HNSW search breadth of %s: %s", chunks.name, e)

    def _check_embedder(self, chunks) -> None:
        built_with = (chunks.metadata or {}).get(_EMBED_KEY)
        if built_with and built_with != self.embed_id:
            raise RagError(
                f"The index was built with {built_with!r} but the settings ask for "
                f"{self.embed_id!r}; vectors of different models cannot be compared. Rebuild: "
                f"`rag index --rebuild`, or set the embedding settings back."
            )

    def exists(self) -> bool:
        """Whether an index with at least one chunk is there. A legacy index counts as absent
        (it has to be rebuilt); an unreachable Chroma raises instead of answering False."""
        return self.state() in ("ready",)

    # --- rebuilds -------------------------------------------------------------------------------
    def begin_rebuild(self) -> ChromaStore:
        """A store for a new, empty generation beside the current one (which keeps serving)."""
        ptr = self._pointer()
        current = int(ptr["generation"]) if ptr else 0
        names = self._collection_names()
        gens = [current] + [int(m.group(1)) for n in names
                            if (m := re.fullmatch(re.escape(self.name) + r"-g(\d+)", n))]
        gen = max(gens) + 1
        aside = ChromaStore(self.client, self.name, self.embed_id, generation=gen,
                            local_path=self.local_path, ef_search=self.ef_search)
        aside._collection(create=True)
        return aside

    def commit_rebuild(self, aside: ChromaStore) -> None:
        """Point readers at the rebuilt generation, then drop every other one (and a legacy
        index). Until the pointer is written the old generation is untouched."""
        gen = aside._pinned
        if gen is None:
            raise ValueError("commit_rebuild takes the store returned by begin_rebuild")
        self._write_pointer(gen)
        self._chunks = self._docs = None
        self._gen = None
        self.collect_garbage()

    def collect_garbage(self, *, older_only: bool = False) -> list[str]:
        """Delete collections of this index that the pointer does not name: generations left
        by an interrupted rebuild, or a legacy index. With `older_only`, newer generations are
        kept (another process may be rebuilding into one). Deletion errors propagate."""
        ptr = self._pointer()
        if ptr is None:
            return []
        current = int(ptr["generation"])
        keep = set(self._names(current))
        dropped = []
        pattern = re.compile(re.escape(self.name) + r"(?:-g(\d+))?(-docs)?")
        for n in sorted(self._collection_names()):
            m = pattern.fullmatch(n)
            if m is None or n in keep:
                continue
            if older_only and m.group(1) is not None and int(m.group(1)) > current:
                continue
            self._call(lambda n=n: self.client.delete_collection(n))
            dropped.append(n)
            logger.info("dropped old collection %s", n)
        return dropped

    def reset(self) -> None:
        """Drop every collection of this index, the pointer included. Errors propagate: a
        reset that silently failed would leave a mix of old and new data."""
        names = self._collection_names()
        pattern = re.compile(re.escape(self.name) + r"(-g\d+)?(-docs|-meta)?")
        for n in sorted(names):
            if pattern.fullmatch(n):
                self._call(lambda n=n: self.client.delete_collection(n))
        self._chunks = self._docs = self._meta_col = None
        self._gen = None

    def count(self) -> int:
        col = self._collection(create=False)
        return self._call(col.count)

    # --- documents -----------------------------------------------------------------------------
    def documents(self) -> dict[str, DocInfo]:
        self._collection(create=True)
        got = self._call(lambda: self._docs.get(include=["metadatas"]))
        return {m["source"]: _docinfo(m) for m in got["metadatas"] or []}

    def document_text(self, source: str) -> tuple[DocInfo, str, list[tuple[int, int]]] | None:
        """The indexed article's full text and body spans, or None if it is not in the index."""
        self._collection(create=False)
        got = self._call(lambda: self._docs.get(ids=[_doc_id(source)],
                                           include=["metadatas", "documents"]))
        if not got["ids"]:
            return None
        meta = got["metadatas"][0]
        return _docinfo(meta), got["documents"][0], [tuple(s) for s in json.loads(meta["kept"])]

    def chunk_counts(self) -> dict[str, int]:
        """Stored chunks per source, from the chunks themselves (not the document records):
        what a crash between two writes can leave different from the records."""
        col = self._collection(create=True)
        counts: dict[str, int] = {}
        offset, page = 0, 5000
        while True:
            got = self._call(lambda o=offset: col.get(include=["metadatas"], limit=page, offset=o))
            for m in got["metadatas"] or []:
                counts[m["source"]] = counts.get(m["source"], 0) + 1
            if len(got["ids"]) < page:
                return counts
            offset += page

    def replace_document(self, doc: Document, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Write a document so that a failure at any step leaves its previous version intact
        or repairable: the new chunks are upserted first (ids are unique per document and
        content, so they never overwrite another document's), then the document's other
        chunks are deleted, then its record is written (the record says the write finished)."""
        col = self._collection(create=True)
        new_ids = [c.id for c in chunks]
        batch = max(1, self._call(self.client.get_max_batch_size))
        for i in range(0, len(chunks), batch):
            part = chunks[i : i + batch]
            self._call(lambda part=part, i=i: col.upsert(
                ids=[c.id for c in part],
                embeddings=vectors[i : i + batch],
                documents=[c.text for c in part],
                metadatas=[_chunk_meta(c) for c in part],
            ))
        old = self._call(lambda: col.get(where={"source": doc.source}, include=[]))["ids"]
        stale = sorted(set(old) - set(new_ids))
        for i in range(0, len(stale), batch):
            self._call(lambda i=i: col.delete(ids=stale[i : i + batch]))
        self._call(lambda: self._docs.upsert(
            ids=[_doc_id(doc.source)],
            embeddings=[[1.0]],  # the docs collection is looked up by id, never by vector
            documents=[doc.text],
            metadatas=[_doc_meta(doc, len(chunks))],
        ))
        self._touch()

    def add_documents(self, items: Sequence[tuple[Document, Sequence[Chunk], np.ndarray]]
                      ) -> None:
        """Write many documents that are not in the index yet with a few large calls (a bulk
        load): all chunks first, then all records, then one version stamp, so a failure leaves
        chunks without records, which the next `rag index` removes. Documents already in the
        index must go through `replace_document`, which also deletes their old chunks."""
        col = self._collection(create=True)
        batch = max(1, self._call(self.client.get_max_batch_size))
        chunks = [c for _d, cs, _v in items for c in cs]
        vectors = (np.vstack([v for _d, cs, v in items if len(cs)]) if chunks
                   else np.zeros((0, 0), np.float32))
        for i in range(0, len(chunks), batch):
            part = chunks[i : i + batch]
            self._call(lambda part=part, i=i: col.upsert(
                ids=[c.id for c in part], embeddings=vectors[i : i + batch],
                documents=[c.text for c in part], metadatas=[_chunk_meta(c) for c in part]))
        docs = [(d, len(cs)) for d, cs, _v in items]
        for i in range(0, len(docs), batch):
            part = docs[i : i + batch]
            self._call(lambda part=part: self._docs.upsert(
                ids=[_doc_id(d.source) for d, _n in part],
                embeddings=[[1.0]] * len(part),
                documents=[d.text for d, _n in part],
                metadatas=[_doc_meta(d, n) for d, n in part]))
        self._touch()

    def delete_chunks(self, ids: Sequence[str]) -> None:
        col = self._collection(create=True)
        if ids:
            self._call(lambda: col.delete(ids=list(ids)))
            self._touch()

    def delete_document(self, source: str) -> None:
        """Chunks first, record last: a crash in between leaves a record whose file is gone,
        which the next `rag index` deletes again."""
        col = self._collection(create=True)
        self._call(lambda: col.delete(where={"source": source}))
        self._call(lambda: self._docs.delete(ids=[_doc_id(source)]))
        self._touch()

    # --- chunks --------------------------------------------------------------------------------
    def iter_chunks(self, page: int = 1000) -> Iterator[Chunk]:
        col = self._collection(create=False)
        offset = 0
        while True:
            got = self._call(lambda o=offset: col.get(include=["documents", "metadatas"],
                                                      limit=page, offset=o))
            for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
                yield _chunk(cid, text, meta)
            if len(got["ids"]) < page:
                return
            offset += page

    def vectors(self, page: int = 1000) -> tuple[list[str], np.ndarray]:
        """Every chunk id with its stored embedding (for corpus statistics such as hubness)."""
        col = self._collection(create=False)
        ids: list[str] = []
        parts: list[np.ndarray] = []
        offset = 0
        while True:
            got = self._call(lambda o=offset: col.get(include=["embeddings"], limit=page, offset=o))
            ids.extend(got["ids"])
            if len(got["ids"]):
                parts.append(np.asarray(got["embeddings"], dtype=np.float32))
            if len(got["ids"]) < page:
                break
            offset += page
        return ids, (np.vstack(parts) if parts else np.zeros((0, 0), np.float32))

    def vectors_of(self, ids: Sequence[str], page: int = 1000) -> tuple[list[str], np.ndarray]:
        """The stored embeddings of these chunks (those that exist), for an incremental update
        of corpus statistics."""
        col = self._collection(create=False)
        got_ids: list[str] = []
        parts: list[np.ndarray] = []
        for lo in range(0, len(ids), page):
            got = self._call(lambda lo=lo: col.get(ids=list(ids[lo : lo + page]),
                                              include=["embeddings"]))
            got_ids.extend(got["ids"])
            if len(got["ids"]):
                parts.append(np.asarray(got["embeddings"], dtype=np.float32))
        return got_ids, (np.vstack(parts) if parts else np.zeros((0, 0), np.float32))

    def chunk_ids(self) -> list[str]:
        col = self._collection(create=False)
        return sorted(self._call(lambda: col.get(include=[]))["ids"])

    def get_chunks(self, ids: Sequence[str]) -> list[Chunk]:
        col = self._collection(create=False)
        got = self._call(lambda: col.get(ids=list(ids), include=["documents", "metadatas"]))
        by_id = {
            cid: _chunk(cid, t, m)
            for cid, t, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        }
        return [by_id[i] for i in ids if i in by_id]

    def neighbours(self, chunks: Sequence[Chunk], span: int = 1) -> dict[str, tuple[Chunk, ...]]:
        """For each chunk, the chunks up to `span` places before and after it in its article
        (by ordinal), in file order; one read for all of them."""
        if span < 1 or not chunks:
            return {}
        clauses = [{"$and": [{"source": {"$eq": c.source}},
                             {"ordinal": {"$in": [c.ordinal + d for d in range(-span, span + 1)
                                                  if d and c.ordinal + d >= 0]}}]}
                   for c in chunks]
        where = clauses[0] if len(clauses) == 1 else {"$or": clauses}
        col = self._collection(create=False)
        got = self._call(lambda: col.get(where=where, include=["documents", "metadatas"]))
        found = [_chunk(cid, t, m) for cid, t, m in
                 zip(got["ids"], got["documents"], got["metadatas"], strict=True)]
        out: dict[str, tuple[Chunk, ...]] = {}
        for c in chunks:
            near = [x for x in found if x.source == c.source and x.id != c.id
                    and 0 < abs(x.ordinal - c.ordinal) <= span]
            out[c.id] = tuple(sorted(near, key=lambda x: x.start))
        return out

    def query(self, vector: np.ndarray, n: int) -> list[tuple[Chunk, float]]:
        """Nearest chunks by cosine similarity (1 - distance), best first."""
        col = self._collection(create=False)
        total = self._call(col.count)
        if total == 0:
            return []
        got = self._call(lambda: col.query(
            query_embeddings=[np.asarray(vector, dtype=np.float32)], n_results=min(n, total),
            include=["documents", "metadatas", "distances"],
        ))
        return [
            (_chunk(cid, text, meta), 1.0 - float(dist))
            for cid, text, meta, dist in zip(
                got["ids"][0], got["documents"][0], got["metadatas"][0], got["distances"][0],
                strict=True,
            )
        ]


def _doc_id(source: str) -> str:
    return f"doc:{source}"


def _doc_meta(doc: Document, n_chunks: int) -> dict:
    return {
        "source": doc.source, "sha256": doc.sha256, "title": doc.title,
        "language": doc.language, "language_guess": doc.language_guess,
        "chars": doc.chars, "chunks": n_chunks, "path": doc.path,
        "kept": json.dumps(list(doc.kept)),
    }


def _chunk_meta(c: Chunk) -> dict:
    return {
        "source": c.source, "start": c.start, "end": c.end, "line_start": c.line_start,
        "line_end": c.line_end, "title": c.title, "language": c.language,
        "doc_sha256": c.doc_sha256, "ordinal": c.ordinal,
    }


def _chunk(cid: str, text: str, m: dict) -> Chunk:
    return Chunk(
        id=cid, source=m["source"], text=text, start=int(m["start"]), end=int(m["end"]),
        line_start=int(m["line_start"]), line_end=int(m["line_end"]), title=m.get("title", ""),
        language=m.get("language", ""), doc_sha256=m.get("doc_sha256", ""),
        ordinal=int(m.get("ordinal", 0)),
    )


def _docinfo(m: dict) -> DocInfo:
    return DocInfo(
        source=m["source"], sha256=m["sha256"], title=m.get("title", ""),
        language=m.get("language", ""), language_guess=m.get("language_guess", ""),
        chars=int(m.get("chars", 0)), chunks=int(m.get("chunks", 0)), path=m.get("path", ""),
    )


def open_store(settings, embed_id: str | None = None) -> ChromaStore:
    local = None if settings.chroma_host else Path(settings.index_dir)
    return ChromaStore(make_client(settings), settings.collection,
                       embed_id or settings.embed_id, local_path=local,
                       reopen=(lambda: _fresh_local_client(settings)) if local else None,
                       ef_search=settings.hnsw_ef_search)


def _fresh_local_client(settings):
    """A PersistentClient with its own Chroma system: chromadb shares one system (and its
    in-memory segments) per folder and process, so a plain new client would be as stale as the
    old one. The old system is dropped from chromadb's cache, not stopped: queries still
    running on it in other threads finish on it."""
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient._identifier_to_system.pop(str(settings.index_dir), None)
    return make_client(settings)
