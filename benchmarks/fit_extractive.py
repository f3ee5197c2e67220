"""Fit how the extractive answer picks its sentences, leave one topic out.

Uses the retrieval that benchmarks/fit_refusal.py cached (same --topics/--topic/--cache
arguments). Refusal does not depend on which sentences are quoted, so each question's selection
and refusal decision are computed once; then every setting of the picker (rag/answering/answer.py
EXTRACTIVE_*) is replayed on them. For each held-out topic the setting that maximises fact
recall + citation precision on the other topics is chosen and scored on the held-out one.

    python benchmarks/fit_extractive.py --topics seeds,ec,trump,asia_bibi --topic ...
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from answer_tally import gold_sources  # noqa: E402
from fit_refusal import add_topic_arguments, analysis_of, replay_answerers  # noqa: E402

from rag.answering import answer as answer_module  # noqa: E402
from rag.answering import refusal  # noqa: E402
from rag.answering.answer import Answerer, pick_extractive  # noqa: E402
from rag.eval.metrics import citation_precision, fact_recall  # noqa: E402

# The picker's settings tried: module constants of rag/answering/answer.py.
GRID = {
    "EXTRACTIVE_MARGIN": [0.0, 0.03, 0.06, 0.1, 0.15],
    "EXTRACTIVE_OTHER_MARGIN": [-1.0, 0.0, 0.03],
    "EXTRACTIVE_FILL_MARGIN": [0.0, 0.05, 0.1, 0.2, 9.0],
    "EXTRACTIVE_FILL_OTHER": [False, True],
}


def cases_for(topic, answerer: Answerer) -> list[dict]:
    out = []
    for q in topic.questions:
        if not q.answerable:
            continue
        lang = answerer.ask(q.question, mode="extractive").language
        analysis = analysis_of(answerer, q.question, lang)
        k = answerer.settings.top_k * answer_module.RETRIEVE_FACTOR
        sel = answerer.selector.select(q.question, answerer.retriever.retrieve(q.question, k),
                                       k=answer_module.PROMPT_EVIDENCE, lang=lang,
                                       analysis=analysis)
        d = refusal.decide(sel, analysis, model=answerer.refusal_model,
                           matcher=answerer.name_matcher,
                           embedder_id=getattr(answerer.embedder, "id", None))
        if d.refuse:
            continue
        out.append({"topic": topic.name, "q": q, "sel": sel, "typed": d.typed_evidence,
                    "n": answerer.settings.evidence_sentences})
    return out


def score(cases: Sequence[dict], params: dict) -> dict[str, float]:
    for k, v in params.items():
        setattr(answer_module, k, v)
    fr, cp = [], []
    for c in cases:
        shown = pick_extractive(c["sel"], c["n"], c["typed"])
        text = "\n".join(ev.sentence.text for ev in shown)
        fr.append(fact_recall(text, c["q"].facts) or 0.0)
        p = citation_precision([ev.sentence.source for ev in shown],
                               gold_sources(c["q"].sources))
        if p is not None:
            cp.append(p)
    f = sum(fr) / len(fr) if fr else 0.0
    p = sum(cp) / len(cp) if cp else 0.0
    return {"fact_recall": f, "citation_precision": p, "objective": f + p, "n": len(fr)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_topic_arguments(ap)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    replays = replay_answerers(args)
    topics = [t for t, _ in replays]
    cases: list[dict] = []
    for t, answerer in replays:
        cases += cases_for(t, answerer)
    current = {k: getattr(answer_module, k) for k in GRID}
    grid = [dict(zip(GRID, vals, strict=True)) for vals in itertools.product(*GRID.values())]
    by = {t.name: [c for c in cases if c["topic"] == t.name] for t in topics}
    table = [(p, {t: score(cs, p) for t, cs in by.items()}) for p in grid]
    report: dict = {"current": current, "topics": {}}
    for t in by:
        def train_obj(row, held=t):
            return sum(s["objective"] for name, s in row[1].items() if name != held)
        # Ties go to the current setting, then to the first (most cautious) in the grid.
        best = max(table, key=lambda row: (train_obj(row), row[0] == current))
        before = score(by[t], current)
        report["topics"][t] = {"before": before, "after": best[1][t], "chosen": best[0]}
    final = max(table, key=lambda row: (sum(s["objective"] for s in row[1].values()),
                                        row[0] == current))
    report["final"] = {"chosen": final[0], "per_topic": final[1]}
    report["table"] = [{"params": p, "topics": s} for p, s in table]
    for key in ("before", "after"):
        rows = [report["topics"][t][key] for t in by]
        n = sum(r["n"] for r in rows)
        report[f"pooled_{key}"] = {m: sum(r[m] * r["n"] for r in rows) / n
                                   for m in ("fact_recall", "citation_precision")}
    print(json.dumps({k: v for k, v in report.items() if k != "table"}, indent=2, default=float))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
