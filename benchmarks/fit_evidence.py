"""Fit the weights of the evidence-sentence score, leave one topic out.

Evidence selection (rag/answering/evidence.py `EvidenceSelector.rank`) scores each sentence of the
retrieved passages as

    e5 cosine + lexical_weight × term match + rank_weight × passage prior
              + type_weight × holds the asked-for kind of answer
              + person_weight × names someone the question does not ("who ...?")
              + context_weight × stands in a context passage beside a hit, not in the hit
              + heading_weight × is a headline, caption or title (no sentence end)
              + language_weight × the embedder's lean to the sentence's language

The extractive answer quotes the best sentence and a few close ones, so what matters is whether
the sentence that states the fact comes first (gold@1) or among the first three (gold@3). A
sentence is gold when it contains one of the question's `evidence` phrases or one of its facts.

Uses the retrieval that benchmarks/fit_refusal.py caches (same --topics/--topic/--cache
arguments); the signals of every sentence are computed once, then each weight setting is replayed
on them. For each held-out topic the setting best on the other topics (gold@1 + gold@3) is chosen
and reported on the held-out one. The language lean is measured with language centroids
(rag/lang/centroids.py) computed from the articles of the topics in the fold, never the held-out
one. `--write` stores the setting best on all the topics given in rag/data/evidence.json
together with this command, and the centroids of their articles (but `--centroids-skip`'s) in
rag/data/language_centroids.json.

    python benchmarks/fit_evidence.py --topics seeds,ec,trump,asia_bibi \\
        --topic brexit=$HOME/.cache/newsrag/corpora/brexit-max60:eval/questions/brexit.jsonl ...
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fit_refusal import (  # noqa: E402
    add_topic_arguments,
    analysis_of,
    centroid_sources,
    replay_answerers,
)

from rag.answering import answer as answer_module  # noqa: E402
from rag.answering import evidence  # noqa: E402
from rag.answering.answer import Answerer  # noqa: E402
from rag.eval.metrics import normalize_text  # noqa: E402
from rag.lang import centroids as language_centroids  # noqa: E402
from rag.lang.centroids import LanguageCentroids  # noqa: E402

GRID = {
    "lexical_weight": [0.0, 0.02, 0.05, 0.1, 0.15],
    "rank_weight": [0.04, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5],
    "type_weight": [0.0, 0.03, 0.08, 0.12, 0.16, 0.24],
    "person_weight": [0.0, 0.04, 0.08, 0.12, 0.16, 0.24],
    "context_weight": [0.0, -0.03, -0.06, -0.1, -0.2],
    "heading_weight": [0.0, -0.02, -0.03, -0.05, -0.08, -0.12],
    "language_weight": [0.0, -0.5, -1.0, -1.5, -2.0, -3.0],
}
# Where the language column sits in Case.signals (filled per fold: see with_language).
LANGUAGE_COLUMN = 7


@dataclass
class Case:
    """One answerable question: the signals of its candidate sentences and which are gold."""

    topic: str
    id: str
    signals: np.ndarray  # rows: dense, lexical, prior, typed, person, context, heading, language
    gold: np.ndarray  # bool per row
    question_vector: np.ndarray
    languages: list[str | None]  # of each row's sentence


def is_gold(sentence: str, phrases: Sequence[str], facts: Sequence[Sequence[str]]) -> bool:
    s = normalize_text(sentence)
    if any(p in s or (len(s) > 30 and s in p) for p in phrases):
        return True
    return any(any(normalize_text(a) in s for a in group) for group in facts)


def cases_for(topic, answerer: Answerer) -> list[Case]:
    out = []
    k = answerer.settings.top_k * answer_module.RETRIEVE_FACTOR
    for q in topic.questions:
        if not q.answerable:
            continue
        lang = answerer.ask(q.question, mode="extractive").language
        analysis = analysis_of(answerer, q.question, lang)
        retrieved = answerer.retriever.retrieve(q.question, k)
        sel = answerer.selector.rank(q.question, retrieved, lang=lang, analysis=analysis)
        phrases = [normalize_text(e) for e in q.evidence]
        gold = np.array([is_gold(c.sentence.text, phrases, q.facts) for c in sel.ranked])
        if not gold.any():
            continue  # retrieval missed it: no weight can help
        signals = np.array([[c.dense, c.lexical, c.prior, c.typed, c.person, c.context,
                             c.heading, 0.0]
                            for c in sel.ranked])
        # The language each sentence is corrected for, as the selector decides it.
        chunks = {c.id: c for r in retrieved for c in r.window}
        out.append(Case(topic.name, q.id, signals, gold, sel.question_vector,
                        evidence.sentence_languages([c.sentence for c in sel.ranked], chunks)))
    return out


def with_language(cases: Sequence[Case],
                  centroids: Callable[[Case], LanguageCentroids]) -> list[Case]:
    """The cases with their language column measured against `centroids(case)`."""
    out = []
    for c in cases:
        signals = c.signals.copy()
        signals[:, LANGUAGE_COLUMN] = centroids(c).bias(c.question_vector, c.languages)
        out.append(dataclasses.replace(c, signals=signals))
    return out


def score(cases: Sequence[Case], params: dict[str, float]) -> dict[str, float]:
    w = np.array([1.0, *(params[n] for n in evidence.WEIGHT_NAMES)])
    at1 = at3 = 0
    for c in cases:
        order = np.argsort(-(c.signals @ w), kind="stable")
        at1 += int(c.gold[order[0]])
        at3 += int(c.gold[order[:3]].any())
    n = len(cases) or 1
    return {"gold@1": at1 / n, "gold@3": at3 / n, "n": len(cases)}


def objective(s: dict[str, float]) -> float:
    return s["gold@1"] + s["gold@3"]


def command(argv: Sequence[str]) -> str:
    """The command line as others can re-run it (their home folder, no --write)."""
    home = str(Path.home())
    return "python benchmarks/fit_evidence.py " + " ".join(
        shlex.quote(a).replace(home, "$HOME") for a in argv if a != "--write")


def markdown(report: dict, argv: Sequence[str]) -> str:
    def w(p: dict) -> str:
        return ", ".join(f"{k.removesuffix('_weight')} {v:g}" for k, v in p.items())

    lines = [
        "# Evidence-sentence weights, fitted leave one topic out",
        "",
        f"`{command(argv)}`",
        "",
        "Answerable questions whose retrieved passages hold a gold sentence (one containing an "
        "`evidence` phrase or a fact). gold@1: the best-scored sentence is gold (the extractive "
        "answer quotes it first); gold@3: a gold sentence is among the first three. Per held-out "
        "topic, the weights best on the other topics; `before` = the weights in "
        "rag/data/evidence.json when this ran.",
        "",
        "| held-out topic | n | gold@1 before → after | gold@3 before → after | chosen |",
        "|---|---:|---:|---:|---|",
    ]
    for t, r in report["topics"].items():
        b, a = r["before"], r["after"]
        lines.append(f"| {t} | {a['n']} | {b['gold@1']:.2f} → {a['gold@1']:.2f} | "
                     f"{b['gold@3']:.2f} → {a['gold@3']:.2f} | {w(r['chosen'])} |")
    pb, pa = report["pooled_before"], report["pooled_after"]
    lines += [f"| pooled | | {pb['gold@1']:.3f} → {pa['gold@1']:.3f} | "
              f"{pb['gold@3']:.3f} → {pa['gold@3']:.3f} | |", "",
              f"Before: {w(report['current'])}.",
              f"Best on all topics (what `--write` stores): {w(report['final']['chosen'])}; "
              f"gold@1 {report['final']['all_topics']['gold@1']:.3f}, "
              f"gold@3 {report['final']['all_topics']['gold@3']:.3f} on all of them.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_topic_arguments(ap)
    ap.add_argument("--write", action="store_true",
                    help="write rag/data/evidence.json fitted on all the topics given")
    ap.add_argument("--only", help="comma-separated weights to fit; the others stay as in "
                                   "rag/data/evidence.json (a new signal is fitted alone)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "evidence.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    replays = replay_answerers(args)
    topics = [t for t, _ in replays]
    cases: list[Case] = []
    for t, answerer in replays:
        cases += cases_for(t, answerer)
    embedder = replays[0][1].embedder
    vectors = centroid_sources(args, topics, embedder)

    @functools.cache
    def centroids_without(*held: str | None) -> LanguageCentroids:
        return language_centroids.compute(embedder.id, [v for name, v in vectors.items()
                                                        if name not in held])

    current = evidence.load_weights()
    only = set(args.only.split(",")) if args.only else set(GRID)
    if unknown := only - set(GRID):
        ap.error(f"--only: unknown weights {sorted(unknown)}; choose from {list(GRID)}")
    axes = {n: vals if n in only else [current[n]] for n, vals in GRID.items()}
    grid = [dict(zip(axes, vals, strict=True)) for vals in itertools.product(*axes.values())]

    def table_for(held: str | None) -> tuple[dict[str, list[Case]], list]:
        """Each setting's scores per topic. A question's language lean is measured as the
        shipped centroids would measure it on news they were not made from: without its own
        topic's articles, nor the held-out topic's."""
        measured = with_language(cases, lambda c: centroids_without(*sorted({held, c.topic},
                                                                            key=str)))
        by = {t.name: [c for c in measured if c.topic == t.name] for t in topics}
        return by, [(p, {t: score(cs, p) for t, cs in by.items()}) for p in grid]

    report: dict = {"current": current, "topics": {}}
    for t in (t.name for t in topics):
        by, table = table_for(t)

        def train_obj(row, held=t):
            return sum(objective(s) * s["n"] for name, s in row[1].items() if name != held)
        best = max(table, key=lambda row: (train_obj(row), row[0] == current))
        report["topics"][t] = {"before": score(by[t], current), "after": best[1][t],
                               "chosen": best[0]}
    by, table = table_for(None)
    measured = [c for cs in by.values() for c in cs]
    for key in ("before", "after"):
        rows = [report["topics"][t][key] for t in by]
        n = sum(r["n"] for r in rows) or 1
        report[f"pooled_{key}"] = {m: sum(r[m] * r["n"] for r in rows) / n
                                   for m in ("gold@1", "gold@3")}
    final = max(table, key=lambda row: (sum(objective(s) * s["n"] for s in row[1].values()),
                                        row[0] == current))
    report["final"] = {"chosen": final[0], "all_topics": score(measured, final[0])}
    print(json.dumps(report, indent=2, default=float))
    args.out.write_text(markdown(report, argv if argv is not None else sys.argv[1:]),
                        encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    if args.write:
        data = {**{n: final[0][n] for n in evidence.WEIGHT_NAMES},
                "fitted": command(argv if argv is not None else sys.argv[1:])
                + "  (report: benchmarks/results/evidence.md)"}
        evidence.WEIGHTS_FILE.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        language_centroids.CENTROIDS_FILE.write_text(
            json.dumps(centroids_without(None).to_json(data["fitted"])) + "\n", encoding="utf-8")
        print(f"wrote {evidence.WEIGHTS_FILE} and {language_centroids.CENTROIDS_FILE}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
