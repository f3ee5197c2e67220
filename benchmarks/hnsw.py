"""How exact Chroma's approximate (HNSW) dense search is at each search breadth (`ef_search`).

For each topic's own index (the one `rag eval --corpus` / `benchmarks/topics.py` builds), on a
copy of it: every answerable question's top 20 by cosine from Chroma against the exact top 20
(a numpy product over every stored vector), and the query time, at each breadth. The breadth is
read when a process first loads the graph, so each breadth is measured in a fresh process.

    python benchmarks/hnsw.py                       # the bsnlp topics with an index, 100 … 1000
    python benchmarks/hnsw.py --topics brexit --ef 100,500

Prints a table and writes benchmarks/results/hnsw.md (`--out`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.settings import cache_dir, corpus_index_dir, load_settings  # noqa: E402

DEFAULT_CORPORA = ROOT.parent / "shared" / "corpora" / "bsnlp"
TOPICS = ("asia_bibi", "brexit", "covid-19", "ec", "trump", "us_election_2020")
TOP = 20


def measure(index_dir: Path, corpus: Path, ef: int) -> dict:
    """One breadth, in this (fresh) process: questions whose top TOP misses an exact one."""
    import numpy as np

    from rag.eval.evaluate import load_questions
    from rag.pipeline import build_pipeline

    name = corpus.name
    settings = load_settings(data_dir=corpus, index_dir=index_dir, hnsw_ef_search=ef,
                             embed_cache=cache_dir() / "embeddings.sqlite", mode="extractive")
    pipe = build_pipeline(settings)
    store = pipe.store
    questions = [q for q in load_questions(ROOT / "eval" / "questions" / f"{name}.jsonl",
                                           data_dir=corpus) if q.answerable]
    queries = pipe.embedder.embed_queries([q.question for q in questions])
    _ids, vecs = store.vectors()
    misses, ms = 0, []
    store.query(queries[0], 2 * TOP)  # loads the graph (with the breadth it reads now)
    for v in queries:
        exact = np.sort(vecs @ v)[::-1][:TOP]
        t0 = time.perf_counter()
        got = np.array([s for _c, s in store.query(v, 2 * TOP)][:TOP])
        ms.append((time.perf_counter() - t0) * 1000)
        misses += bool((exact - got > 1e-3).any())
    return {"topic": name, "ef": ef, "passages": len(vecs), "questions": len(questions),
            "misses": misses, "p50_ms": statistics.median(ms),
            "p95_ms": sorted(ms)[max(0, round(0.95 * len(ms)) - 1)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topics", default=",".join(TOPICS))
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--ef", default="100,200,500,1000")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hnsw.md")
    ap.add_argument("--one", nargs=3, metavar=("INDEX", "CORPUS", "EF"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.one:
        print(json.dumps(measure(Path(args.one[0]), Path(args.one[1]), int(args.one[2]))))
        return 0
    efs = [int(x) for x in args.ef.split(",")]
    rows = []
    for name in args.topics.split(","):
        corpus = args.corpora / name
        src = corpus_index_dir(corpus)
        if not src.exists():
            logging.warning("%s: no index at %s (benchmarks/topics.py builds it); skipped",
                            name, src)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "index"
            shutil.copytree(src, copy)  # the benchmark never changes the topic's own index
            for ef in efs:
                out = subprocess.run([sys.executable, __file__, "--one", str(copy), str(corpus),
                                      str(ef)], capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{name}, ef {ef}: the measuring process failed:\n"
                                     f"{out.stderr[-3000:]}")
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{name:18} ef {ef:5}  {row['misses']:3} of {row['questions']} questions "
                      f"miss an exact top-{TOP} passage; query p50 {row['p50_ms']:.1f} ms, "
                      f"p95 {row['p95_ms']:.1f} ms", flush=True)
    lines = [
        "# Exactness of the dense search at each HNSW search breadth",
        "",
        f"`python benchmarks/hnsw.py --ef {args.ef}` · {dt.date.today()} · each breadth in a "
        f"fresh process on a copy of the topic's index; a miss = a question whose top {TOP} "
        f"from Chroma lacks a passage of the exact top {TOP} (cosine over every stored vector). "
        "Query time: one `ChromaStore.query` of 40, warm.",
        "",
        "| topic | passages | questions | ef_search | misses | query p50 / p95 (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['topic']} | {r['passages']} | {r['questions']} | {r['ef']} | "
                     f"{r['misses']} | {r['p50_ms']:.1f} / {r['p95_ms']:.1f} |")
    base = {r["topic"]: r["p50_ms"] for r in rows if r["ef"] == efs[0]}
    lines += ["", f"Query p50 relative to ef {efs[0]} (same topic, same run):", ""]
    for ef in efs[1:]:
        ratios = [r["p50_ms"] / base[r["topic"]] for r in rows
                  if r["ef"] == ef and base.get(r["topic"])]
        if ratios:
            lines.append(f"- ef {ef}: median ratio {statistics.median(ratios):.2f}")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
