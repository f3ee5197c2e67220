"""Answer quality and speed on seeds/questions.jsonl, side by side for several systems.

Systems are a list of (name, answer_fn); each answer_fn takes a question and returns a `Row`.
Our extractive mode always runs. llama-index's plain `CitationQueryEngine` over the same hybrid
retriever, and our generate mode, need an LLM: they are added when the configured backend
answers `check()`, and the report says why they were skipped otherwise. Adding a column is one
more entry in `systems()`.

Metrics (answerable / unanswerable questions as marked in the question set):
- fact recall: share of fact groups with an alternative in the answer text (a refusal scores 0)
- citation precision: share of citations whose file is one of the question's expected sources
- unsupported citations: share of citations whose quote is not the file's text at its span, plus
  (generate) claims the verifier left uncited
- refusal accuracy (unanswerable refused), false refusals (answerable refused), confusion matrix
- answer length, answer-language match, latency after retrieval p50/p95 (cold: first pass with
  empty caches; warm: second pass), peak RSS

- leave-one-language-out (`--lolo`): the ranking weights and refusal thresholds are re-tuned
  on four question languages over a small grid and checked on the fifth, to see whether the
  defaults only fit the seed questions

    python benchmarks/answers.py                 # writes benchmarks/results/answers.md
    python benchmarks/answers.py --lolo          # ... plus the leave-one-language-out check
    python benchmarks/answers.py --out /tmp/a.md --questions q01,q12
    python benchmarks/answers.py --before old.md # add the figures of an earlier results file
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import itertools  # noqa: E402

from rag.answering import answer as answer_module  # noqa: E402
from rag.answering import cite, refusal  # noqa: E402
from rag.answering.answer import Answerer  # noqa: E402
from rag.eval.evaluate import Question, citation_precision, fact_recall, load_questions  # noqa: E402
from rag.lang import detect as language  # noqa: E402
from rag.types import Answer, RagError  # noqa: E402

log = logging.getLogger("benchmarks.answers")


@dataclass
class Row:
    answer: str
    refused: bool
    cited_sources: list[str]
    cited_ok: list[bool]  # quote == file[start:end] (or the cited node exists)
    language: str
    after_retrieval_ms: float
    unsupported_claims: int = 0
    notes: list[str] = field(default_factory=list)


AnswerFn = Callable[[str], Row]


# --------------------------------------------------------------------------------------------
# Systems
# --------------------------------------------------------------------------------------------


def _row_from_answer(a: Answer, files: dict[str, str]) -> Row:
    ok = [files.get(c.source, "")[c.start:c.end] == c.quote for c in a.citations]
    return Row(
        answer=a.answer, refused=a.insufficient_context,
        cited_sources=[c.source for c in a.citations], cited_ok=ok, language=a.language,
        after_retrieval_ms=a.timings.total_ms - a.timings.retrieve_ms,
        unsupported_claims=len(a.unsupported_claims), notes=list(a.notes),
    )


def ours(answerer: Answerer, mode: str, files: dict[str, str]) -> AnswerFn:
    def fn(question: str) -> Row:
        return _row_from_answer(answerer.ask(question, mode=mode), files)
    return fn


def llama_index_citation_engine(retriever, llm, k: int) -> AnswerFn:
    """llama-index's CitationQueryEngine, retrieving with our HybridRetriever."""
    from llama_index.core.query_engine import CitationQueryEngine
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle

    from rag.lang import detect as language
    from rag.retrieval.hybrid import chunk_to_node

    class Wrapped(BaseRetriever):
        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            hits = retriever.retrieve(query_bundle.query_str, k)
            return [NodeWithScore(node=chunk_to_node(h.chunk), score=h.score) for h in hits]

    engine = CitationQueryEngine.from_args(llm=llm, retriever=Wrapped())

    def fn(question: str) -> Row:
        t0 = time.perf_counter()
        response = engine.query(question)
        ms = (time.perf_counter() - t0) * 1000
        text = str(response)
        nodes = response.source_nodes
        numbers = [n for n in cite.cited_numbers(text) if 1 <= n <= len(nodes)]
        sources = [nodes[n - 1].node.metadata.get("source", "") for n in numbers]
        refused = cite.is_refusal(text)
        return Row(answer=text, refused=refused, cited_sources=sources,
                   cited_ok=[True] * len(sources), language=language.detect(text)[0],
                   after_retrieval_ms=ms)  # includes its own retrieval: no hook to split it
    return fn


def systems(answerer: Answerer, retriever, settings, files: dict[str, str],
            ) -> tuple[list[tuple[str, AnswerFn]], list[str]]:
    """(name, answer_fn) for every system that can run here, and notes on those that cannot."""
    out: list[tuple[str, AnswerFn]] = [("ours: extractive", ours(answerer, "extractive", files))]
    skipped: list[str] = []
    model = answerer.chat_model
    if model is None:
        skipped.append("no LLM backend configured")
        return out, skipped
    try:
        model.check()
    except RagError as e:
        skipped.append(
            f"ours: generate and llama-index CitationQueryEngine skipped — no LLM is available "
            f"offline ({model.backend.name}: {e})")
        return out, skipped
    name = f"{model.backend.name}:{model.backend.model}"
    out.append((f"ours: generate ({name})", ours(answerer, "generate", files)))
    llm = getattr(model, "llm", None)
    if llm is None:
        skipped.append(f"llama-index CitationQueryEngine: backend {name} exposes no llama-index "
                       "LLM")
    else:
        k = settings.top_k
        out.append((f"llama-index CitationQueryEngine ({name})",
                    llama_index_citation_engine(retriever, llm, k)))
    return out, skipped


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    pos = (len(v) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def score(questions: Sequence[Question], rows: dict[str, Row],
          warm: dict[str, Row] | None = None) -> dict[str, float]:
    fr, cp, unsupported, lang = [], [], [], []
    tp = fn_ = fp = tn = 0
    cited = 0
    for q in questions:
        r = rows[q.id]
        if q.answerable:
            fr.append(0.0 if r.refused else (fact_recall(r.answer, q.facts) or 0.0))
            p = citation_precision(r.cited_sources, q.sources)
            if p is not None:
                cp.append(p)
            fp += r.refused
            tn += not r.refused
        else:
            tp += r.refused
            fn_ += not r.refused
        bad = sum(not ok for ok in r.cited_ok) + r.unsupported_claims
        total = len(r.cited_ok) + r.unsupported_claims
        cited += total
        if total:
            unsupported.append(bad / total)
        lang.append(float(r.language == q.lang))
    lengths = [len(rows[q.id].answer) for q in questions if not rows[q.id].refused]
    cold = [rows[q.id].after_retrieval_ms for q in questions]
    out = {
        "fact_recall": _mean(fr),
        "citation_precision": _mean(cp),
        "unsupported_citation_rate": _mean(unsupported),
        "refusal_accuracy": tp / (tp + fn_) if tp + fn_ else float("nan"),
        "false_refusal_rate": fp / (fp + tn) if fp + tn else float("nan"),
        "tp": tp, "fn": fn_, "fp": fp, "tn": tn,
        "answer_chars_p50": statistics.median(lengths) if lengths else float("nan"),
        "answer_chars_max": max(lengths) if lengths else float("nan"),
        "answer_language_match": _mean(lang),
        "after_retrieval_ms_p50_cold": _pct(cold, 0.5),
        "after_retrieval_ms_p95_cold": _pct(cold, 0.95),
    }
    if warm:
        w = [warm[q.id].after_retrieval_ms for q in questions]
        out["after_retrieval_ms_p50_warm"] = _pct(w, 0.5)
        out["after_retrieval_ms_p95_warm"] = _pct(w, 0.95)
    return out


TARGETS = {
    "fact_recall": (">=", 0.9), "citation_precision": (">=", 0.98),
    "refusal_accuracy": (">=", 0.9), "false_refusal_rate": ("<=", 0.05),
    "after_retrieval_ms_p50_warm": ("<=", 500.0), "after_retrieval_ms_p95_warm": ("<=", 500.0),
}


def _fmt(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if v != v:  # nan
        return "n/a"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", help="comma-separated ids (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "answers.md")
    ap.add_argument("--backend", help="LLM backend for the LLM columns (default: settings)")
    ap.add_argument("--before", type=Path,
                    help="an earlier answers.md: its metrics and per-question rows are shown "
                         "next to the new ones")
    ap.add_argument("--lolo", action="store_true",
                    help="also run the leave-one-language-out check of the thresholds (~5 min)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    before = read_before(args.before) if args.before else None  # fail early on a bad path

    from rag.embed import build_embedder
    from rag.indexing.indexer import index_path
    from rag.llm.backends import build_chat_model
    from rag.retrieval.hybrid import HybridRetriever
    from rag.settings import load_settings
    from rag.store import open_store

    seeds = ROOT / "seeds"
    questions = load_questions(seeds / "questions.jsonl", data_dir=seeds)
    if args.questions:
        wanted = set(args.questions.split(","))
        questions = [q for q in questions if q.id in wanted]
    files = {p.name: p.read_text(encoding="utf-8") for p in seeds.glob("*.txt")}

    tmp = Path(tempfile.mkdtemp(prefix="answers-bench-"))
    settings = load_settings(index_dir=tmp / "index", data_dir=seeds, mode="auto")
    store = open_store(settings)
    embedder = build_embedder(settings)
    t0 = time.perf_counter()
    index_path(seeds, store, embedder, chunk_size=settings.chunk_size,
               chunk_overlap=settings.chunk_overlap)
    index_s = time.perf_counter() - t0
    retriever = HybridRetriever(store, embedder, top_k=settings.top_k,
                                candidates=settings.candidates, bm25_dir=tmp / "bm25")
    try:
        model = build_chat_model(settings, args.backend)
    except RagError as e:
        log.warning("no chat model: %s", e)
        model = None
    answerer = Answerer(retriever, embedder, settings, model)

    results: dict[str, dict[str, float]] = {}
    per_question: dict[str, dict[str, Row]] = {}
    available, skipped = systems(answerer, retriever, settings, files)
    for name, fn in available:
        print(f"running {name} over {len(questions)} questions (cold)...", file=sys.stderr)
        cold = {q.id: fn(q.question) for q in questions}
        print(f"running {name} again (warm caches)...", file=sys.stderr)
        warm = {q.id: fn(q.question) for q in questions}
        results[name] = score(questions, cold, warm)
        per_question[name] = cold
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # What a start-up warm-up costs, and the first pass after it (a fresh Answerer: its caches
    # are empty until warm() fills them).
    chunks = list(store.iter_chunks())
    fresh = Answerer(retriever, embedder, settings, model)
    t0 = time.perf_counter()
    warmed = fresh.warm(chunks)
    warm_s = time.perf_counter() - t0
    after_warm = [ours(fresh, "extractive", files)(q.question).after_retrieval_ms
                  for q in questions]
    warmup = (len(chunks), warmed, warm_s, _pct(after_warm, 0.5), _pct(after_warm, 0.95))

    # Why each extractive refusal happened (or did not), for the confusion matrix.
    reasons = {q.id: _decision(answerer, retriever, settings, q.question) for q in questions}

    lolo = leave_one_language_out(answerer, questions, files) if args.lolo else None
    md = render(questions, results, per_question, skipped, reasons, rss_mb, index_s, warmup,
                lolo, before)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md, encoding="utf-8")
    print(md)
    return 0


def _decision(answerer: Answerer, retriever, settings, question: str):
    """The extractive refusal decision for a question, as Answerer.ask takes it."""
    lang = language.detect_question(question, answerer.article_languages)[0]
    k = settings.top_k * answer_module.RETRIEVE_FACTOR
    analysis = answerer.analyse(question, lang)
    sel = answerer.selector.select(question, retriever.retrieve(question, k),
                                   k=answer_module.PROMPT_EVIDENCE, lang=lang, analysis=analysis)
    decision = refusal.decide(sel, analysis, model=answerer.refusal_model,
                              matcher=answerer.name_matcher,
                              embedder_id=getattr(answerer.embedder, "id", None))
    return decision, max((c.dense for c in sel.ranked), default=0.0)


# --------------------------------------------------------------------------------------------
# Leave one language out
# --------------------------------------------------------------------------------------------

# The knobs of extractive answering and the values tried; the first of each is not special,
# the defaults are read from the code.
GRID = {
    "lexical_weight": [0.1, 0.15, 0.2],
    "rank_weight": [0.02, 0.04, 0.06],
    "type_weight": [0.02, 0.04],
    "retrieve_factor": [2, 3],
    "across_margin": [0.1, 0.2, 0.3],
}
REFUSAL_GRID = {"count_span": [2, 3, 5], "name_similarity": [0.85, 0.9, 0.95]}


def _defaults(answerer: Answerer) -> dict[str, float]:
    sel = answerer.selector
    return {"lexical_weight": sel.lexical_weight, "rank_weight": sel.rank_weight,
            "type_weight": sel.type_weight, "retrieve_factor": answer_module.RETRIEVE_FACTOR,
            "across_margin": answer_module.ACROSS_ARTICLES_MARGIN,
            "count_span": answerer.refusal_model.count_span,
            "name_similarity": answerer.refusal_model.name_similarity}


def _apply(answerer: Answerer, cfg: dict[str, float]) -> None:
    sel = answerer.selector
    sel.lexical_weight, sel.rank_weight = cfg["lexical_weight"], cfg["rank_weight"]
    sel.type_weight = cfg["type_weight"]
    answer_module.RETRIEVE_FACTOR = int(cfg["retrieve_factor"])
    answer_module.ACROSS_ARTICLES_MARGIN = cfg["across_margin"]
    answerer.refusal_model = dataclasses.replace(
        answerer.refusal_model, count_span=int(cfg["count_span"]),
        name_similarity=float(cfg["name_similarity"]))


def _objective(m: dict[str, float]) -> float:
    """What tuning maximises: the four quality targets, equally weighted ("false refusals count
    as much as misses")."""
    parts = [m["fact_recall"], m["citation_precision"], m["refusal_accuracy"],
             1 - m["false_refusal_rate"]]
    return sum(0.0 if p != p else p for p in parts)  # nan (no such questions) counts 0


def leave_one_language_out(answerer: Answerer, questions: Sequence[Question],
                           files: dict[str, str]) -> dict:
    """Per configuration of GRID (ranking) and REFUSAL_GRID (refusal), every question's row;
    then for each language: the configuration best on the other four, scored on it."""
    defaults = _defaults(answerer)
    configs = [{**defaults, **dict(zip(GRID, vals, strict=True))}
               for vals in itertools.product(*GRID.values())]
    configs += [{**defaults, **dict(zip(REFUSAL_GRID, vals, strict=True))}
                for vals in itertools.product(*REFUSAL_GRID.values())]
    configs = [c for i, c in enumerate(configs) if c not in configs[:i]]
    if defaults not in configs:
        configs.append(defaults)
    fn = ours(answerer, "extractive", files)
    rows: list[dict[str, Row]] = []
    try:
        for i, cfg in enumerate(configs, 1):
            _apply(answerer, cfg)
            rows.append({q.id: fn(q.question) for q in questions})
            if i % 20 == 0:
                print(f"  leave-one-language-out: {i}/{len(configs)} configurations",
                      file=sys.stderr)
    finally:
        _apply(answerer, defaults)
    default_i = configs.index(defaults)
    out = {"configs": len(configs), "languages": {}}
    for lang in sorted({q.lang for q in questions}):
        train = [q for q in questions if q.lang != lang]
        test = [q for q in questions if q.lang == lang]
        scores = [_objective(score(train, r)) for r in rows]
        best = max(scores)
        # Ties (common: many settings give the same answers) go to the default if it is one
        # of them, else to the first.
        tied = [i for i, v in enumerate(scores) if v == best]
        pick = default_i if default_i in tied else tied[0]
        out["languages"][lang] = {
            "n": len(test), "tied": len(tied), "picked_default": pick == default_i,
            "picked": {k: v for k, v in configs[pick].items() if v != defaults[k]},
            "tuned": score(test, rows[pick]),
            "default": score(test, rows[default_i]),
            "train_best": best,
        }
    every = [score(questions, r) for r in rows]
    out["all_targets_met"] = sum(
        m["fact_recall"] >= 0.9 and m["citation_precision"] >= 0.98
        and m["refusal_accuracy"] >= 0.9 and m["false_refusal_rate"] <= 0.05 for m in every)
    return out


def read_before(path: Path) -> dict:
    """Metrics (first system's column) and per-question rows of an earlier answers.md."""
    metrics: dict[str, str] = {}
    rows: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"[a-z_0-9]+", cells[0]) and cells[0] != "id":
            metrics.setdefault(cells[0], cells[2])
        if cells and re.fullmatch(r"q\d+", cells[0]):
            rows.setdefault(cells[0], cells)
    return {"name": path.name, "metrics": metrics, "rows": rows}


def render(questions, results, per_question, skipped, reasons, rss_mb, index_s, warmup=None,
           lolo=None, before=None) -> str:
    names = list(results)
    lines = [
        "# Answers on seeds/questions.jsonl",
        "",
        f"{len(questions)} questions ({sum(q.answerable for q in questions)} answerable, "
        f"{sum(not q.answerable for q in questions)} unanswerable); python "
        f"{platform.python_version()}, {platform.machine()}; index built in {index_s:.1f} s; "
        f"peak RSS {rss_mb:.0f} MB. Produced by `python benchmarks/answers.py`. Latency is "
        "measured on a shared 2-core machine: treat it as indicative.",
        "",
    ]
    for s in skipped:
        lines.append(f"- **skipped:** {s}")
    extra = [f"before ({before['name']})"] if before else []
    lines += ["", "| metric | target | " + " | ".join([*names, *extra]) + " |",
              "|---|---|" + "---|" * (len(names) + len(extra))]
    keys = list(next(iter(results.values())).keys()) if results else []
    for k in keys:
        target = TARGETS.get(k)
        t = f"{target[0]} {target[1]:g}" if target else ""
        old = [before["metrics"].get(k, "")] if before else []
        lines.append(f"| {k} | {t} | " + " | ".join([*(_fmt(results[n][k]) for n in names),
                                                    *old]) + " |")
    lines += [
        "",
        "Refusal confusion matrix (ours, extractive): rows = truth, columns = decision.",
        "",
    ]
    if warmup:
        n_chunks, n_sent, secs, p50, p95 = warmup
        lines[-3:-3] = [
            "",
            f"Warm-up: `Answerer.warm()` over all {n_chunks} stored chunks embedded {n_sent} "
            f"sentences in {secs:.1f} s (one-off, at start-up); the first pass after it took "
            f"{p50:.0f} / {p95:.0f} ms (p50 / p95) after retrieval, against the cold first "
            "pass above.",
        ]
    if names:
        r = results[names[0]]
        lines += [
            "| | refused | answered |", "|---|---|---|",
            f"| unanswerable | {r['tp']} | {r['fn']} |",
            f"| answerable | {r['fp']} | {r['tn']} |",
            "",
            "## Per question (ours, extractive; cold pass)",
            "",
            "| id | lang | answerable | refused | facts | cited files ok | best e5 | "
            "term coverage | refusal reasons |" + (" before: refused, facts, cited ok |"
                                                   if before else ""),
            "|---|---|---|---|---|---|---|---|---|" + ("---|" if before else ""),
        ]
        rows = per_question[names[0]]
        for q in questions:
            row = rows[q.id]
            fr = fact_recall(row.answer, q.facts) if q.answerable and not row.refused else None
            cp = citation_precision(row.cited_sources, q.sources) if q.answerable else None
            d, best = reasons[q.id]
            lines.append(
                f"| {q.id} | {q.lang} | {'yes' if q.answerable else 'no'} | "
                f"{'yes' if row.refused else 'no'} | {'' if fr is None else f'{fr:.2f}'} | "
                f"{'' if cp is None else f'{cp:.2f}'} | {best:.3f} | {d.coverage:.2f} | "
                f"{'; '.join(d.reasons)} |" + (_before_cells(before, q.id) if before else ""))
    if lolo:
        lines += _render_lolo(lolo)
    return "\n".join(lines) + "\n"


def _before_cells(before: dict, qid: str) -> str:
    row = before["rows"].get(qid)
    if not row or len(row) < 6:
        return " |"
    return f" {row[3]}, {row[4] or '–'}, {row[5] or '–'} |"


def _render_lolo(lolo: dict) -> list[str]:
    grid = ", ".join(f"{k} {v}" for k, v in {**GRID, **REFUSAL_GRID}.items())
    lines = [
        "",
        "## Leave one language out",
        "",
        f"{lolo['configs']} configurations (grid: {grid}; ranking and refusal knobs varied "
        "separately around the defaults). For each language, the configuration with the best "
        "fact recall + citation precision + refusal accuracy + (1 − false refusals) on the "
        "other four languages is scored on the held-out one (ties go to the default). "
        f"{lolo['all_targets_met']} of {lolo['configs']} configurations meet all four targets "
        "on the whole question set.",
        "",
        "| held out | n | tuned = default | configurations tied | fact recall tuned / default "
        "| citation precision | refusal accuracy | false refusals | changed knobs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lang, r in lolo["languages"].items():
        t, d = r["tuned"], r["default"]

        def pair(k: str, t=t, d=d) -> str:
            return f"{_fmt(t[k])} / {_fmt(d[k])}"

        changed = ", ".join(f"{k}={v}" for k, v in r["picked"].items()) or "none"
        lines.append(
            f"| {lang} | {r['n']} | {'yes' if r['picked_default'] else 'no'} | {r['tied']} | "
            f"{pair('fact_recall')} | {pair('citation_precision')} | "
            f"{pair('refusal_accuracy')} | {pair('false_refusal_rate')} | {changed} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
