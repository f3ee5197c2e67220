"""Fit the refusal score on training topics and report it on held-out ones (leave one topic out).

Retrieval is the slow part and does not depend on anything fitted here, so it runs once per topic
and is cached (`<cache>/<topic>.retrieved.json`); answering is then replayed on the cached
passages for every candidate setting, which takes seconds.

Topics are the question sets eval/questions/<topic>.jsonl over ../shared/corpora/bsnlp/<topic>
(seeds/ for `seeds`), each with the index `rag eval --corpus` builds (rag.settings
.corpus_index_dir; a topic whose index is missing is skipped, except the seeds, which are small
enough to index here). `--topic NAME=CORPUS_DIR:QUESTIONS_FILE[:INDEX_DIR]` adds any other.

    python benchmarks/fit_refusal.py                       # every topic with an index
    python benchmarks/fit_refusal.py --topics ec,trump,seeds --write
                                   # rag/data/refusal.json fitted on all the topics given

Prints, per held-out topic: fact recall, citation precision, refusal accuracy, false refusals,
with the model fitted on the other topics; and the calibration of P(answerable) (Brier score,
reliability bins) over the held-out predictions.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from answer_tally import tally  # noqa: E402

from rag.answering import answer as answer_module  # noqa: E402
from rag.answering import refusal  # noqa: E402
from rag.answering.answer import Answerer  # noqa: E402
from rag.answering.evidence import EvidenceSelector  # noqa: E402
from rag.eval.evaluate import Question, citation_precision, fact_recall, load_questions  # noqa: E402
from rag.lang import centroids as language_centroids  # noqa: E402
from rag.types import Chunk, Retrieved  # noqa: E402

log = logging.getLogger("benchmarks.fit_refusal")


@dataclass
class Topic:
    name: str
    corpus: Path
    questions: list[Question]
    index_dir: Path | None


QUESTIONS_DIR = ROOT / "eval" / "questions"
CORPORA = ROOT.parent / "shared" / "corpora" / "bsnlp"


def default_topics(names: Sequence[str] | None) -> list[Topic]:
    from rag.settings import corpus_index_dir

    out = []
    for f in sorted(QUESTIONS_DIR.glob("*.jsonl")):
        name = f.stem
        if names and name not in names:
            continue
        corpus = ROOT / "seeds" if name == "seeds" else CORPORA / name
        index = None if name == "seeds" else corpus_index_dir(corpus)
        if index is not None and not index.exists():
            log.warning("topic %s skipped: no index at %s (run rag eval --corpus %s)", name,
                        index, corpus)
            continue
        out.append(Topic(name, corpus, load_questions(f), index))
    return out


def parse_topic(spec: str) -> Topic:
    name, _, rest = spec.partition("=")
    parts = rest.split(":")
    if not name or len(parts) < 2:
        raise SystemExit(f"--topic {spec!r}: use NAME=CORPUS_DIR:QUESTIONS_FILE[:INDEX_DIR]")
    corpus = Path(parts[0])
    questions = load_questions(Path(parts[1]))
    if len(parts) > 2:
        return Topic(name, corpus, questions, Path(parts[2]))
    from rag.settings import corpus_index_dir

    # The index `rag eval --corpus` built for this folder, else one indexed here (slow).
    index = corpus_index_dir(corpus)
    return Topic(name, corpus, questions, index if index.exists() else None)


def add_topic_arguments(ap: argparse.ArgumentParser) -> None:
    """The topic options every fitting benchmark takes."""
    ap.add_argument("--topics", help="comma-separated topic names (default: every topic with "
                                     "an index)")
    ap.add_argument("--topic", action="append", default=[],
                    help="NAME=CORPUS_DIR:QUESTIONS_FILE[:INDEX_DIR] (repeatable)")
    ap.add_argument("--cache", type=Path, default=ROOT / "index" / "fit-cache",
                    help="where each topic's retrieval is cached")
    ap.add_argument("--centroids-skip", default="seeds",
                    help="comma-separated topics whose articles never go into the language "
                         "centroids (default: seeds, the articles the product ships and answers "
                         "over: a centroid made from a topic leans to it)")


def centroid_sources(args: argparse.Namespace, topics: Sequence[Topic], embedder
                     ) -> dict[str, dict[str, np.ndarray]]:
    """Passage vectors by language of each topic the language centroids may be made from."""
    skip = set(filter(None, args.centroids_skip.split(",")))
    return {t.name: topic_language_vectors(t, args.cache, embedder)
            for t in topics if t.name not in skip}


def replay_answerers(args: argparse.Namespace) -> list[tuple[Topic, Answerer]]:
    """One extractive answerer per topic of `args`, answering from the topic's cached
    retrieval (retrieved once, then cached)."""
    from rag.embed import build_embedder
    from rag.settings import load_settings

    settings = load_settings(mode="extractive")
    embedder = build_embedder(settings)
    topics = default_topics(args.topics.split(",") if args.topics else None)
    topics += [parse_topic(s) for s in args.topic]
    k = settings.top_k * answer_module.RETRIEVE_FACTOR
    retrieved = {t.name: retrieved_for(t, args.cache, embedder, k) for t in topics}
    # The evidence score's language lean is measured with centroids made without the topic's
    # own articles, as the shipped centroids meet a user's news they were not made from.
    vectors = centroid_sources(args, topics, embedder)
    out = []
    for t in topics:
        centroids = language_centroids.compute(
            embedder.id, [v for name, v in vectors.items() if name != t.name])
        selector = EvidenceSelector(embedder, centroids=centroids)
        out.append((t, Answerer(CachedRetriever(retrieved[t.name]), embedder, settings, None,
                                selector=selector)))
    return out


def topic_language_vectors(topic: Topic, cache: Path, embedder) -> dict[str, np.ndarray]:
    """The topic's passage vectors by language, from the index its retrieval came from."""
    from rag.pipeline import build_pipeline
    from rag.settings import load_settings

    index_dir = topic.index_dir or cache / f"index-{topic.name}"
    pipe = build_pipeline(load_settings(index_dir=index_dir, data_dir=topic.corpus,
                                        mode="extractive"), embedder=embedder)
    return language_centroids.passages_by_language(pipe.store)


def analysis_of(answerer: Answerer, question: str, lang: str):
    """The question's analysis as this answerer makes it (with dictionary translations where
    the release has them; older releases analyse the question alone)."""
    own = getattr(answerer, "analyse", None)
    return own(question, lang) if own is not None else answer_module.analyse(question, lang)


RETRIEVAL_SETTINGS = ("top_k", "candidates", "dense_weight", "bm25_weight", "rrf_k", "hub_penalty",
                      "dup_overlap", "per_source", "context_chunks", "chunk_size",
                      "hnsw_ef_search", "dense_language_weight", "exact_search")


class CachedRetriever:
    """Serves the cached retrieval results of the questions (by text)."""

    def __init__(self, results: dict[str, list[Retrieved]]):
        self.results = results

    def retrieve(self, question: str, k: int | None = None) -> list[Retrieved]:
        return self.results[question][: k or None]


def _chunk(c: Chunk) -> dict:
    return {"id": c.id, "source": c.source, "text": c.text, "start": c.start, "end": c.end,
            "line_start": c.line_start, "line_end": c.line_end, "title": c.title,
            "language": c.language, "ordinal": c.ordinal}


def _dump(r: Retrieved) -> dict:
    return {"rank": r.rank, "score": r.score, "also": list(r.also), "chunk": _chunk(r.chunk),
            "context": [_chunk(c) for c in r.context]}


def _load(d: dict) -> Retrieved:
    return Retrieved(chunk=Chunk(**d["chunk"]), rank=d["rank"], score=d["score"],
                     also=tuple(d.get("also", ())),
                     context=tuple(Chunk(**c) for c in d.get("context", ())))


def retrieved_for(topic: Topic, cache: Path, embedder, k: int) -> dict[str, list[Retrieved]]:
    """The top k passages (with their context passages, as settings.context_chunks says) of
    every question of the topic, from the cache when it was made with the same k and context."""
    from rag.pipeline import build_pipeline
    from rag.settings import load_settings

    # Every setting that changes what is retrieved, and the index itself (re-built when the
    # chunking changes): a cache made with others is stale.
    current = load_settings()
    retrieval = {f: getattr(current, f) for f in RETRIEVAL_SETTINGS}
    context_chunks = current.context_chunks
    index_dir = topic.index_dir or cache / f"index-{topic.name}"
    settings = load_settings(index_dir=index_dir, data_dir=topic.corpus, mode="extractive")
    pipe = build_pipeline(settings, embedder=embedder)
    if topic.index_dir is None:
        pipe.index(topic.corpus)
    elif not pipe.store.exists():
        raise SystemExit(f"{topic.index_dir} holds no index for topic {topic.name}")
    index_version = pipe.store.version()
    path = cache / f"{topic.name}.retrieved.json"
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        if (data.get("k") == k and data.get("retrieval") == retrieval
                and data.get("index") == index_version
                and set(data["results"]) >= {q.question for q in topic.questions}):
            return {q: [_load(r) for r in rs] for q, rs in data["results"].items()}
    t0 = time.perf_counter()
    results = {q.question: pipe.retrieve(q.question, k) for q in topic.questions}
    log.warning("%s: retrieved %d questions in %.1f s", topic.name, len(results),
                time.perf_counter() - t0)
    cache.mkdir(parents=True, exist_ok=True)
    payload = {"k": k, "context_chunks": context_chunks, "retrieval": retrieval,
               "index": index_version,
               "results": {q: [_dump(r) for r in rs] for q, rs in results.items()}}
    path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    return results


@dataclass
class Row:
    topic: str
    question: Question
    features: tuple[float, ...]
    hard: bool  # refused by the hard checks (names, kind of answer)
    answer: str = ""
    cited: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


def rows_for(topic: Topic, answerer: Answerer) -> list[Row]:
    """Features and hard decisions of every question (the score's threshold set so low that
    only the hard checks refuse), plus the answer that would be shown if not refused."""
    open_model = replace(answerer.refusal_model, threshold=0.0)
    saved = answerer.refusal_model
    answerer.refusal_model = open_model
    out = []
    try:
        for q in topic.questions:
            a = answerer.ask(q.question, mode="extractive")
            lang = a.language
            analysis = analysis_of(answerer, q.question, lang)
            k = answerer.settings.top_k * answer_module.RETRIEVE_FACTOR
            sel = answerer.selector.select(q.question, answerer.retriever.retrieve(q.question, k),
                                           k=answer_module.PROMPT_EVIDENCE, lang=lang,
                                           analysis=analysis)
            d = refusal.decide(sel, analysis, model=open_model, matcher=answerer.name_matcher,
                               embedder_id=getattr(answerer.embedder, "id", None))
            out.append(Row(topic.name, q, d.features, a.insufficient_context, a.answer,
                           tuple(c.source for c in a.citations), d.reasons))
    finally:
        answerer.refusal_model = saved
    return out


# --- the model -------------------------------------------------------------------------------


# The direction each feature may push P(answerable): a better match never lowers it, a missing
# name never raises it. With a few dozen questions an unconstrained fit finds spurious signs.
SIGNS = (1.0, 1.0, 1.0, -1.0)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2,
                 steps: int = 4000) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Logistic regression by projected gradient descent on standardised features, each weight
    kept to its sign in SIGNS; returns weights and bias on the raw features (and the
    standardisation used)."""
    signs = np.array(SIGNS[: x.shape[1]])
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mu) / sd
    w = np.zeros(x.shape[1])
    b = 0.0
    # Balance the classes: there are far more answerable questions than unanswerable ones.
    pos = y.mean() if len(y) else 0.5
    sw = np.where(y == 1, 0.5 / max(pos, 1e-9), 0.5 / max(1 - pos, 1e-9))
    lr = 0.5
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        g = (p - y) * sw
        w -= lr * (z.T @ g / len(y) + l2 * w)
        w = np.where(w * signs < 0, 0.0, w)
        b -= lr * g.mean()
    return w / sd, float(b - (w / sd) @ mu), mu, sd


def probabilities(model: refusal.RefusalModel, rows: Sequence[Row]) -> list[float]:
    return [model.probability(r.features) for r in rows]


def scores(rows: Sequence[Row], model: refusal.RefusalModel) -> dict[str, float]:
    return tally(((r.question, r.hard or model.probability(r.features) < model.threshold,
                   r.answer, r.cited) for r in rows), fact_recall, citation_precision)


def objective(m: dict[str, float]) -> float:
    """Fact recall (a false refusal scores 0 there too) + refusal accuracy + 1 - false refusals:
    a wrongly refused answerable question costs about twice what a wrongly answered
    unanswerable one does, as the targets (false refusals <= 0.05) ask."""
    parts = [m["fact_recall"], m["refusal_accuracy"], 1 - m["false_refusal_rate"]]
    return sum(0.0 if p != p else p for p in parts)


def fit(rows: Sequence[Row], base: refusal.RefusalModel, threshold: float | None = None,
        threshold_by: str = "pooled") -> refusal.RefusalModel:
    """Weights by logistic regression over the questions the hard checks let through, then the
    threshold that maximises `objective` on the same rows (`threshold_by` "pooled"), or the
    median of those best without each training topic ("inner-median"); `threshold` fixes it."""
    soft = [r for r in rows if not r.hard]
    x = np.array([r.features for r in soft], dtype=float)
    y = np.array([1.0 if r.question.answerable else 0.0 for r in soft])
    if len(set(y.tolist())) < 2:
        return base
    w, b, _, _ = fit_logistic(x, y)
    model = replace(base, weights=tuple(float(v) for v in w), bias=b)
    if threshold is not None:
        return replace(model, threshold=threshold)
    if threshold_by == "pooled":
        return replace(model, threshold=best_threshold(rows, model))
    # The median of the thresholds best without each training topic in turn: the pooled best
    # moves with a question or two (0.05 in one fold, 0.3 in the next).
    topics = sorted({r.topic for r in rows})
    if len(topics) < 3:
        return replace(model, threshold=best_threshold(rows, model))
    inner = [best_threshold([r for r in rows if r.topic != u], model) for u in topics]
    return replace(model, threshold=float(np.median(inner)))



def best_threshold(rows: Sequence[Row], model: refusal.RefusalModel) -> float:
    """The threshold that maximises `objective` on these rows."""
    best_val, best_t = (-1.0, 0.0), 0.5
    for t in np.linspace(0.05, 0.95, 19):
        cand = replace(model, threshold=float(t))
        # Ties go to the threshold nearest 0.5 (the calibrated cut).
        val = (objective(scores(rows, cand)), -abs(float(t) - 0.5))
        if val > best_val:
            best_val, best_t = val, float(t)
    return best_t


def calibration(probs: Sequence[float], labels: Sequence[int], bins: int = 5) -> dict:
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        idx = [i for i, p in enumerate(probs) if lo <= p < hi or (hi == 1 and p == 1)]
        if idx:
            out.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": len(idx),
                        "mean_p": float(np.mean([probs[i] for i in idx])),
                        "answerable": float(np.mean([labels[i] for i in idx]))})
    brier = float(np.mean([(p - y) ** 2 for p, y in zip(probs, labels, strict=True)])) \
        if probs else math.nan
    return {"brier": brier, "bins": out}


def _without_json(args: list[str]) -> list[str]:
    """The command line without its --json output path (not part of how the model was fitted)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--json":
            skip = True
        elif not a.startswith("--json="):
            out.append(a)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_topic_arguments(ap)
    ap.add_argument("--write", action="store_true",
                    help="write rag/data/refusal.json fitted on all the topics given")
    ap.add_argument("--json", type=Path, help="also write the report as JSON here")
    ap.add_argument("--train-only", default="",
                    help="comma-separated topics that only train (never held out or pooled), "
                         "e.g. the original seed questions")
    ap.add_argument("--threshold", type=float,
                    help="refuse below this P(answerable) instead of choosing the threshold "
                         "that scores best on the training topics")
    ap.add_argument("--threshold-by", choices=("pooled", "inner-median"), default="pooled",
                    help="the threshold best on the training questions pooled, or the median "
                         "of those best without each training topic in turn")
    ap.add_argument("--name-similarity", type=float,
                    help="override the e5 word similarity at which a name counts as found "
                         "under another spelling (above 1: spelling only)")
    ap.add_argument("--depths", default="",
                    help="comma-separated relevant depths (how many of the most relevant "
                         "sentences the kind-of-answer check reads) to choose from, leave one "
                         "topic out; default: the model file's only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    replays = replay_answerers(args)
    topics = [t for t, _ in replays]
    base = refusal.default_model()
    if args.name_similarity is not None:
        base = replace(base, name_similarity=args.name_similarity)
    depths = sorted({int(d) for d in args.depths.split(",") if d.strip()}
                    | {base.relevant_depth})
    # The hard checks depend on the depth: every question is replayed once per depth.
    rows_by: dict[int, list[Row]] = {}
    for depth in depths:
        rows_by[depth] = []
        for t, answerer in replays:
            answerer.refusal_model = replace(base, relevant_depth=depth)
            rows_by[depth] += rows_for(t, answerer)
    rows = rows_by[base.relevant_depth]

    def best_depth(train: Callable[[Row], bool]) -> int:
        """The depth whose refit model scores best on the training questions (ties: the
        shipped one)."""
        def value(depth: int) -> tuple[float, bool]:
            fold = [r for r in rows_by[depth] if train(r)]
            model = fit(fold, base, args.threshold, args.threshold_by)
            return objective(scores(fold, model)), depth == base.relevant_depth
        return max(depths, key=value)
    report: dict = {"topics": {}, "current": {}}
    held_probs: list[float] = []
    held_labels: list[int] = []
    held_decisions = []
    train_only = set(filter(None, args.train_only.split(",")))
    for t in topics:
        if t.name in train_only:
            continue
        depth = best_depth(lambda r, held=t.name: r.topic != held)
        chosen = rows_by[depth]
        test = [r for r in chosen if r.topic == t.name]
        train = [r for r in chosen if r.topic != t.name] or test
        model = fit(train, base, args.threshold, args.threshold_by)
        report["topics"][t.name] = {"held_out": scores(test, model),
                                    "train": scores(train, model),
                                    "model": {"weights": model.weights, "bias": model.bias,
                                              "threshold": model.threshold,
                                              "relevant_depth": depth}}
        report["current"][t.name] = scores([r for r in rows if r.topic == t.name], base)
        held_decisions += [(r.question, r.hard or model.probability(r.features) < model.threshold,
                            r.answer, r.cited) for r in test]
        soft = [r for r in test if not r.hard]
        held_probs += probabilities(model, soft)
        held_labels += [int(r.question.answerable) for r in soft]
    report["held_out_pooled"] = tally(held_decisions, fact_recall, citation_precision)
    # The shipped model (rag/data/refusal.json) on the same topics: what a change elsewhere
    # (evidence, names, dictionaries) does with the score held still.
    report["current_pooled"] = scores([r for r in rows if r.topic not in train_only], base)
    report["calibration_held_out"] = calibration(held_probs, held_labels)

    final_depth = best_depth(lambda r: True)
    final = replace(fit(rows_by[final_depth], base, args.threshold, args.threshold_by),
                    relevant_depth=final_depth)
    report["questions"] = [
        {"topic": r.topic, "id": r.question.id, "lang": r.question.lang,
         "answerable": r.question.answerable, "hard": r.hard, "reasons": r.reasons,
         "features": [round(x, 3) for x in r.features],
         "p": round(base.probability(r.features), 3),
         "facts": None if not r.question.answerable or r.hard
         else fact_recall(r.answer, r.question.facts)} for r in rows]
    report["final"] = {"weights": final.weights, "bias": final.bias,
                       "threshold": final.threshold, "relevant_depth": final.relevant_depth,
                       "all_topics": scores(rows_by[final_depth], final)}
    print(json.dumps({k: v for k, v in report.items() if k != "questions"}, indent=2,
                     ensure_ascii=False, default=float))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=float),
                             encoding="utf-8")
    if args.write:
        data = json.loads(refusal.MODEL_FILE.read_text(encoding="utf-8"))
        data.update(weights=[round(w, 4) for w in final.weights], bias=round(final.bias, 4),
                    threshold=round(final.threshold, 3), relevant_depth=final.relevant_depth,
                    fitted="python benchmarks/fit_refusal.py " + " ".join(
                        shlex.quote(a).replace(str(Path.home()), "$HOME") for a in _without_json(
                            list(argv if argv is not None else sys.argv[1:])))
                    + "  (report: benchmarks/results/refusal.md)")
        refusal.MODEL_FILE.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {refusal.MODEL_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
