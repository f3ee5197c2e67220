"""Replay extractive answering of whichever `rag` is on PYTHONPATH over the retrieval that
benchmarks/fit_refusal.py cached, to compare releases on identical passages:

    git worktree add /tmp/prev <commit> && cd /tmp/prev && \\
        PYTHONPATH=/tmp/prev python /path/to/benchmarks/replay_answers.py seeds,ec,trump [CACHE]

CACHE is the folder fit_refusal's `--cache` wrote (default index/fit-cache of this checkout).

Only the question sets and the cache are read from this checkout (ROOT); answering is the other
checkout's. Citation precision compares file names (the sets give paths in the topic folder).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from answer_tally import tally  # noqa: E402  (imports no rag: works against any release)


class CachedRetriever:
    def __init__(self, results):
        self.results = results

    def retrieve(self, question, k=None):
        return self.results[question][: k or None]


def _module(*names: str):
    """The first of these modules the `rag` on PYTHONPATH has: releases before the packages
    by job kept every module at the top (rag.answer, rag.metrics, rag.questions)."""
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise SystemExit(f"none of {', '.join(names)} is importable: is a rag checkout on PYTHONPATH?")


def main(topics: list[str], cache: Path = ROOT / "index" / "fit-cache") -> None:
    Answerer = _module("rag.answering.answer", "rag.answer").Answerer
    metrics = _module("rag.eval.metrics", "rag.metrics")
    load_questions = _module("rag.eval.questions", "rag.questions").load_questions
    from rag.embed import build_embedder
    from rag.settings import load_settings
    from rag.types import Chunk, Retrieved

    fields = {f.name for f in dataclasses.fields(Chunk)}  # an older Chunk may have fewer
    every = []
    settings = load_settings(mode="extractive")
    embedder = build_embedder(settings)
    for t in topics:
        data = json.loads((cache / f"{t}.retrieved.json").read_text())
        results = {q: [Retrieved(chunk=Chunk(**{k: v for k, v in r["chunk"].items()
                                                 if k in fields}),
                                 rank=r["rank"], score=r["score"]) for r in rs]
                   for q, rs in data["results"].items()}
        answerer = Answerer(CachedRetriever(results), embedder, settings, None)
        answers = []
        for q in load_questions(ROOT / "eval" / "questions" / f"{t}.jsonl"):
            a = answerer.ask(q.question, mode="extractive")
            answers.append((q, a.insufficient_context, a.answer,
                            [c.source for c in a.citations]))
        every += answers
        _print(t, tally(answers, metrics.fact_recall, metrics.citation_precision))
    if len(topics) > 1:
        _print("pooled", tally(every, metrics.fact_recall, metrics.citation_precision))


def _print(name: str, row: dict) -> None:
    print(name, json.dumps({k: round(v, 3) if isinstance(v, float) else v
                            for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(","), *(Path(a) for a in sys.argv[2:3]))
