"""The Chroma store: the only module that knows Chroma's clients and its dict shapes.

Two collections per index: `<name>` holds chunks (own embeddings, cosine space) and
`<name>-docs` holds one record per article (its full text, hash and body spans), which is what
the source viewer serves: a file that is not in the index cannot be opened.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .types import Chunk, Document, RagError

logger = logging.getLogger(__name__)

_EMBED_KEY = "embed_id"


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
    def __init__(self, client, name: str, embed_id: str):
        self.client = client
        self.name = name
        self.embed_id = embed_id
        self._chunks = None
        self._docs = None

    # --- collections ---------------------------------------------------------------------------
    def _collection(self, create: bool):
        if self._chunks is None:
            if create:
                self._chunks = self.client.get_or_create_collection(
                    self.name,
                    metadata={_EMBED_KEY: self.embed_id, "hnsw:space": "cosine"},
                    embedding_function=None,  # never let Chroma download its default model
                )
                self._docs = self.client.get_or_create_collection(
                    f"{self.name}-docs", metadata={"hnsw:space": "cosine"},
                    embedding_function=None,
                )
            else:
                try:
                    self._chunks = self.client.get_collection(self.name, embedding_function=None)
                    self._docs = self.client.get_collection(
                        f"{self.name}-docs", embedding_function=None
                    )
                except Exception as e:
                    raise RagError(
                        f"No index found (collection {self.name!r}). Run `rag index` first "
                        "(or `python app.py`, which builds it on first run)."
                    ) from e
            self._check_embedder()
        return self._chunks

    def _check_embedder(self) -> None:
        built_with = (self._chunks.metadata or {}).get(_EMBED_KEY)
        if built_with and built_with != self.embed_id:
            raise RagError(
                f"The index was built with {built_with!r} but the settings ask for "
                f"{self.embed_id!r}; vectors of different models cannot be compared. Rebuild: "
                f"`rag index --rebuild`, or set the embedding settings back."
            )

    def exists(self) -> bool:
        try:
            self._collection(create=False)
        except RagError as e:
            if "No index found" in str(e):
                return False
            raise
        return self.count() > 0

    def reset(self) -> None:
        """Drop both collections (used by `rag index --rebuild`)."""
        for name in (self.name, f"{self.name}-docs"):
            try:
                self.client.delete_collection(name)
            except Exception:  # noqa: BLE001 - absent collection is fine
                logger.debug("collection %s did not exist", name)
        self._chunks = self._docs = None

    def count(self) -> int:
        return self._collection(create=False).count()

    # --- documents -----------------------------------------------------------------------------
    def documents(self) -> dict[str, DocInfo]:
        self._collection(create=True)
        got = self._docs.get(include=["metadatas"])
        return {m["source"]: _docinfo(m) for m in got["metadatas"] or []}

    def document_text(self, source: str) -> tuple[DocInfo, str, list[tuple[int, int]]] | None:
        """The indexed article's full text and body spans, or None if it is not in the index."""
        self._collection(create=False)
        got = self._docs.get(ids=[_doc_id(source)], include=["metadatas", "documents"])
        if not got["ids"]:
            return None
        meta = got["metadatas"][0]
        return _docinfo(meta), got["documents"][0], [tuple(s) for s in json.loads(meta["kept"])]

    def replace_document(self, doc: Document, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Write a document's chunks (after deleting its old ones) and its doc record."""
        col = self._collection(create=True)
        self.delete_document(doc.source)
        batch = max(1, self.client.get_max_batch_size())
        for i in range(0, len(chunks), batch):
            part = chunks[i : i + batch]
            col.upsert(
                ids=[c.id for c in part],
                embeddings=vectors[i : i + batch],
                documents=[c.text for c in part],
                metadatas=[_chunk_meta(c) for c in part],
            )
        self._docs.upsert(
            ids=[_doc_id(doc.source)],
            embeddings=[[1.0]],  # the docs collection is looked up by id, never by vector
            documents=[doc.text],
            metadatas=[{
                "source": doc.source, "sha256": doc.sha256, "title": doc.title,
                "language": doc.language, "language_guess": doc.language_guess,
                "chars": doc.chars, "chunks": len(chunks), "path": doc.path,
                "kept": json.dumps(list(doc.kept)),
            }],
        )

    def delete_document(self, source: str) -> None:
        col = self._collection(create=True)
        col.delete(where={"source": source})
        self._docs.delete(ids=[_doc_id(source)])

    # --- chunks --------------------------------------------------------------------------------
    def iter_chunks(self, page: int = 1000) -> Iterator[Chunk]:
        col = self._collection(create=False)
        offset = 0
        while True:
            got = col.get(include=["documents", "metadatas"], limit=page, offset=offset)
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
            got = col.get(include=["embeddings"], limit=page, offset=offset)
            ids.extend(got["ids"])
            if len(got["ids"]):
                parts.append(np.asarray(got["embeddings"], dtype=np.float32))
            if len(got["ids"]) < page:
                break
            offset += page
        return ids, (np.vstack(parts) if parts else np.zeros((0, 0), np.float32))

    def chunk_ids(self) -> list[str]:
        return sorted(self._collection(create=False).get(include=[])["ids"])

    def get_chunks(self, ids: Sequence[str]) -> list[Chunk]:
        got = self._collection(create=False).get(ids=list(ids), include=["documents", "metadatas"])
        by_id = {
            cid: _chunk(cid, t, m)
            for cid, t, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        }
        return [by_id[i] for i in ids if i in by_id]

    def query(self, vector: np.ndarray, n: int) -> list[tuple[Chunk, float]]:
        """Nearest chunks by cosine similarity (1 - distance), best first."""
        col = self._collection(create=False)
        total = col.count()
        if total == 0:
            return []
        got = col.query(
            query_embeddings=[np.asarray(vector, dtype=np.float32)], n_results=min(n, total),
            include=["documents", "metadatas", "distances"],
        )
        return [
            (_chunk(cid, text, meta), 1.0 - float(dist))
            for cid, text, meta, dist in zip(
                got["ids"][0], got["documents"][0], got["metadatas"][0], got["distances"][0],
                strict=True,
            )
        ]


def _doc_id(source: str) -> str:
    return f"doc:{source}"


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
    return ChromaStore(make_client(settings), settings.collection, embed_id or settings.embed_id)
