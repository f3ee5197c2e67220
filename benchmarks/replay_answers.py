"""Replay extractive answering of whichever `rag` is on PYTHONPATH over the retrieval that
benchmarks/fit_refusal.py cached, to compare releases on identical passages:

    git worktree add /tmp/prev <commit> && cd /tmp/prev && \\
        PYTHONPATH=/tmp/prev python /path/to/benchmarks/replay_answers.py seeds,ec,trump

Only the question sets and the cache are read from this checkout (ROOT); answering is the other
checkout's. Citation precision compares file names (the sets give paths in the topic folder).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class CachedRetriever:
    def __init__(self, results):
        self.results = results

    def retrieve(self, question, k=None):
        return self.results[question][: k or None]


def main(topics: list[str]) -> None:
    from rag.answering.answer import Answerer
    from rag.embed import build_embedder
    from rag.eval.metrics import citation_precision, fact_recall
    from rag.eval.questions import load_questions
    from rag.settings import load_settings
    from rag.types import Chunk, Retrieved

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fit_refusal import gold_sources

    settings = load_settings(mode="extractive")
    embedder = build_embedder(settings)
    for t in topics:
        data = json.loads((ROOT / "index" / "fit-cache" / f"{t}.retrieved.json").read_text())
        results = {q: [Retrieved(chunk=Chunk(**r["chunk"]), rank=r["rank"], score=r["score"])
                       for r in rs] for q, rs in data["results"].items()}
        answerer = Answerer(CachedRetriever(results), embedder, settings, None)
        fr, cp = [], []
        tp = fn = fp = tn = 0
        for q in load_questions(ROOT / "eval" / "questions" / f"{t}.jsonl"):
            a = answerer.ask(q.question, mode="extractive")
            refused = a.insufficient_context
            if q.answerable:
                fr.append(0.0 if refused else (fact_recall(a.answer, q.facts) or 0.0))
                if not refused:
                    p = citation_precision([c.source for c in a.citations],
                                           gold_sources(q.sources))
                    if p is not None:
                        cp.append(p)
                fp += refused
                tn += not refused
            else:
                tp += refused
                fn += not refused
        row = {"n": len(fr) + tp + fn, "fact_recall": sum(fr) / len(fr),
               "citation_precision": sum(cp) / len(cp) if cp else None,
               "refusal_accuracy": tp / (tp + fn) if tp + fn else None,
               "false_refusal_rate": fp / (fp + tn)}
        print(t, json.dumps({k: round(v, 3) if isinstance(v, float) else v
                             for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(","))
