"""Cleaning and chunking cost against file size (issue 10, finding 11): must grow linearly.

    python benchmarks/cleaning.py [--max-mb 10]

Builds articles of 100 kB … 10 MB from the seed articles' own body text in two shapes: many
lines (paragraphs, as in the corpus) and one single line (a page whose line breaks were lost),
and times `clean_spans`, `read_document` (cleaning + language identification) and
`chunk_document`. Prints seconds per size and seconds per MB; linear means the last column
stays flat.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.indexing.chunking import chunk_document  # noqa: E402
from rag.indexing.ingest import clean_spans, document_from_bytes  # noqa: E402


def corpus_text() -> str:
    parts = []
    for f in sorted((ROOT / "seeds").glob("*.txt")):
        text = f.read_text(encoding="utf-8")
        parts.extend(text[s:e] for s, e in clean_spans(text))
    return "\n".join(parts)


def build(size: int, one_line: bool) -> str:
    base = corpus_text()
    sep = " " if one_line else "\n"
    unit = base.replace("\n", " ") if one_line else base
    # Numbered copies, so no line repeats another (repeats are boilerplate to the cleaner).
    out, n, total = [], 0, 0
    while total < size:
        piece = f"Part {n}. {unit}"
        out.append(piece)
        total += len(piece.encode()) + 1
        n += 1
    return sep.join(out)[: size]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-mb", type=float, default=10.0)
    args = ap.parse_args(argv)
    sizes = [s for s in (100_000, 1_000_000, 3_000_000, 10_000_000) if s <= args.max_mb * 1e6]
    print(f"{'shape':<10}{'size':>10}{'clean s':>10}{'read s':>10}{'chunk s':>10}"
          f"{'chunks':>8}{'s/MB':>8}")
    for one_line in (False, True):
        for size in sizes:
            text = build(size, one_line)
            t0 = time.perf_counter()
            clean_spans(text)
            t1 = time.perf_counter()
            doc = document_from_bytes(text.encode(), "bench.txt", "bench.txt")
            t2 = time.perf_counter()
            chunks = chunk_document(doc)
            t3 = time.perf_counter()
            mb = len(text.encode()) / 1e6
            print(f"{'one line' if one_line else 'lines':<10}{mb:>9.1f}M{t1 - t0:>10.2f}"
                  f"{t2 - t1:>10.2f}{t3 - t2:>10.2f}{len(chunks):>8}"
                  f"{(t3 - t0) / mb:>8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
