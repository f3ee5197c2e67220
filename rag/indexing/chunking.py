"""Sentence-aware chunks with exact character offsets into the original file.

llama-index's SentenceSplitter decides where chunks break (token budget, overlap); it is given
our multilingual sentence splitter, which also separates sentences glued together by scraping.
Each chunk text is then located in the file, so `document.text[chunk.start:chunk.end] ==
chunk.text` holds by construction (and is checked).
"""

from __future__ import annotations

import hashlib
import logging
from functools import cache

from rag.lang.text import line_number, line_starts, split_sentences
from rag.types import Chunk, Document

logger = logging.getLogger(__name__)


@cache
def _splitter(chunk_size: int, chunk_overlap: int):
    from llama_index.core.node_parser import SentenceSplitter

    return SentenceSplitter(
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        chunking_tokenizer_fn=split_sentences,
        # A paragraph break is a natural chunk boundary in these articles.
        paragraph_separator="\n\n",
    )


def chunk_id(source: str, sha256: str, start: int, end: int) -> str:
    """Deterministic id: same document, content and span → same id, so re-indexing is
    idempotent; the document's name is part of it, so a copy of an article under another name
    gets its own chunks and never overwrites (or, deleted, takes away) the original's."""
    return hashlib.sha1(f"{source}\x00{sha256}:{start}:{end}".encode()).hexdigest()[:20]


def chunk_document(doc: Document, chunk_size: int = 200, chunk_overlap: int = 0) -> list[Chunk]:
    """Chunks of the document's body spans; chunks never cross a removed span or a document."""
    splitter = _splitter(chunk_size, chunk_overlap)
    starts = line_starts(doc.text)
    chunks: list[Chunk] = []
    for block_start, block_end in _blocks(doc):
        block = doc.text[block_start:block_end]
        cursor = 0
        for piece in splitter.split_text(block):
            piece = piece.strip()
            if not piece:
                continue
            at = block.find(piece, cursor)
            if at < 0:  # overlap can make the next chunk begin before the cursor
                at = block.find(piece)
            if at < 0:
                raise AssertionError(f"chunk not found in {doc.source}: {piece[:60]!r}")
            s, e = block_start + at, block_start + at + len(piece)
            cursor = at + 1
            chunks.append(
                Chunk(
                    id=chunk_id(doc.source, doc.sha256, s, e),
                    source=doc.source,
                    text=doc.text[s:e],
                    start=s,
                    end=e,
                    line_start=line_number(starts, s),
                    line_end=line_number(starts, e - 1),
                    title=doc.title,
                    language=doc.language,
                    doc_sha256=doc.sha256,
                    ordinal=len(chunks),
                )
            )
    return chunks


def _blocks(doc: Document) -> list[tuple[int, int]]:
    """Merge kept spans separated only by whitespace into contiguous blocks of the file."""
    blocks: list[tuple[int, int]] = []
    for s, e in doc.kept:
        if blocks and not doc.text[blocks[-1][1]:s].strip():
            blocks[-1] = (blocks[-1][0], e)
        else:
            blocks.append((s, e))
    return blocks
