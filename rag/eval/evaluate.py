"""Evaluation: per-question scores, summaries, thresholds and `run_eval`.

The question set lives in `rag.eval.questions`, the metric functions in `rag.eval.metrics` (both
re-exported here).

Every metric returns `None` when it does not apply to a question (no expected sources, no evidence
phrases, no citation markers, ...) so that `summarize` averages it only over the questions where it
means something. The optional LLM judge is kept apart from these scores on purpose: it is neither
deterministic nor free, so it never changes a number that a `--min` threshold checks.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from rag.eval.metrics import (  # noqa: F401 - re-exported: evaluate is the public entry point
    SourceTexts,
    answer_language_match,
    as_dict,
    check_k,
    citation_precision,
    citation_support,
    citation_validity,
    evidence_at_k,
    evidence_offset,
    evidence_within_chars,
    fact_recall,
    false_refusal,
    hit_at_k,
    lower_is_better,
    metric_names,
    normalize_text,
    parse_citation_markers,
    recall_at_k,
    reciprocal_rank,
    refusal_accuracy,
    tokens_per_second,
)
from rag.eval.questions import Question, load_questions  # noqa: F401 - re-exported
from rag.types import Answer, RagError, Retrieved

logger = logging.getLogger(__name__)

# (question, answer_text, evidence_texts) -> is the answer faithful to the evidence?
Judge = Callable[[str, str, list[str]], bool]


class EvalPipeline(Protocol):
    def retrieve(self, question: str, k: int) -> Sequence[Retrieved]: ...

    def ask(self, question: str) -> Answer: ...


# --------------------------------------------------------------------------------------------
# Scoring and summaries
# --------------------------------------------------------------------------------------------

LATENCIES = ("retrieve_ms", "first_token_ms", "total_ms")
_NOT_AVERAGED = {*LATENCIES, "evidence_chars"}
def score_question(
    question: Question,
    record: Mapping[str, Any],
    *,
    k: int = 5,
    n_chars: int = 2000,
    source_texts: SourceTexts | None = None,
) -> dict[str, float | None]:
    """Scores of one question from `Answer.to_json()`, or `{"retrieved": [...], "retrieve_ms": x}`.

    Citation support is checked against `source_texts` (file name -> file text, offsets included)
    when given, else against the text of the retrieved chunk each citation names.
    """
    check_k(k)
    retrieved = sorted(record.get("retrieved") or [], key=lambda r: r.get("rank") or 0)
    sources = [[r.get("source", ""), *(r.get("also") or [])] for r in retrieved]
    texts = [_window_text(r) for r in retrieved]
    expected = question.sources if question.answerable else ()
    s: dict[str, float | None] = {"hit@1": hit_at_k(sources, expected, 1)}
    s[f"hit@{k}"] = hit_at_k(sources, expected, k)
    s["mrr"] = reciprocal_rank(sources, expected)
    s[f"recall@{k}"] = recall_at_k(sources, expected, k)
    s[f"evidence@{k}"] = evidence_at_k(texts, question.evidence, k)
    s[f"evidence@{n_chars}chars"] = evidence_within_chars(texts, question.evidence, n_chars)
    offset = evidence_offset(texts, question.evidence)
    s["evidence_chars"] = None if offset is None else float(offset)

    if "answer" in record:
        answer = record.get("answer") or ""
        refused = bool(record.get("insufficient_context"))
        cits = [as_dict(c) for c in record.get("citations") or []]
        if source_texts is not None:
            support = citation_support(cits, source_texts, check_offsets=True)
        else:
            chunks = {c.get("chunk_id"): c.get("text", "") for r in retrieved
                      for c in (r, *(r.get("context") or []))}
            support = citation_support(cits, chunks, key="chunk_id")
        s["fact_recall"] = fact_recall(answer, question.facts) if question.answerable else None
        s["citation_validity"] = citation_validity(answer, {c.get("n") for c in cits})
        s["citation_precision"] = citation_precision([c.get("source", "") for c in cits], expected)
        s["citation_support"] = support
        s["refusal_accuracy"] = refusal_accuracy(question.answerable, refused)
        s["false_refusal_rate"] = false_refusal(question.answerable, refused)
        s["answer_language_match"] = answer_language_match(record.get("language"), question.lang)

    timings = record.get("timings") or {}
    # Retrieval-only runs have no generation: leave its columns out rather than fill them with n/a.
    for name in LATENCIES if "answer" in record else ("retrieve_ms",):
        value = timings.get(name, record.get(name))
        s[name] = None if value is None else float(value)
    if "answer" in record:
        s["tokens_per_s"] = tokens_per_second(record.get("usage"), timings)
    return s


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _row_types(row: Mapping[str, Any]) -> list[str]:
    if "types" in row:
        return list(row["types"])
    if not row.get("answerable", True):
        return ["unanswerable"]
    return (
        ["answerable", "multi-article"]
        if len(row.get("expected_sources") or []) > 1
        else ["answerable"]
    )


def _summarize_group(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": len(rows),
        "n_answerable": sum(1 for r in rows if r.get("answerable", True)),
        "n_unanswerable": sum(1 for r in rows if not r.get("answerable", True)),
        "errors": sum(1 for r in rows if r.get("error")),
    }
    counts: dict[str, int] = {}
    names: list[str] = []
    for r in rows:
        names.extend(n for n in r["scores"] if n not in names)
    for name in names:
        values = [r["scores"][name] for r in rows if r["scores"].get(name) is not None]
        if name in LATENCIES:
            out[f"{name}_p50"] = round(_percentile(values, 0.5), 2) if values else None
            out[f"{name}_p95"] = round(_percentile(values, 0.95), 2) if values else None
        elif name not in _NOT_AVERAGED:
            out[name] = round(sum(values) / len(values), 4) if values else None
        counts[name] = len(values)
    out["counts"] = counts
    return out


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Average each metric over the rows where it applies; latencies as p50/p95.

    A row needs `lang`, `answerable`, `scores` and either `types` or `expected_sources`.
    """
    rows = list(rows)
    by_lang: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_lang.setdefault(r.get("lang") or "?", []).append(r)
    by_type = {
        t: [r for r in rows if t in _row_types(r)]
        for t in ("answerable", "unanswerable", "multi-article")
    }
    return {
        "overall": _summarize_group(rows),
        "by_language": {lang: _summarize_group(g) for lang, g in sorted(by_lang.items())},
        "by_type": {t: _summarize_group(g) for t, g in by_type.items()},
    }


def compare(ours: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, float | None]:
    """ours/baseline for every metric both measured; None where the baseline is 0 or missing."""
    ratios: dict[str, float | None] = {}
    for name in metric_names(ours):
        a, b = ours.get(name), baseline.get(name)
        ratios[name] = (
            round(a / b, 3)
            if isinstance(a, int | float) and isinstance(b, int | float) and b
            else None
        )
    return ratios


# --------------------------------------------------------------------------------------------
# Thresholds (`rag eval --min hit@5=1.0`)
# --------------------------------------------------------------------------------------------


def parse_min(specs: Sequence[str]) -> dict[str, float]:
    """`["hit@5=1.0", "mrr=0.5,bg:fact_recall=0.6"]` -> `{"hit@5": 1.0, ...}`."""
    mins: dict[str, float] = {}
    for spec in specs:
        for item in (p.strip() for p in spec.split(",")):
            if not item:
                continue
            name, sep, raw = item.partition("=")
            name, raw = name.strip(), raw.strip()
            if not sep or not name or not raw:
                raise RagError(f"bad threshold {item!r}: expected METRIC=VALUE, e.g. hit@5=0.8")
            try:
                value = float(raw)
            except ValueError:
                raise RagError(f"bad threshold {item!r}: {raw!r} is not a number") from None
            if not math.isfinite(value):
                raise RagError(f"bad threshold {item!r}: the value must be a finite number")
            if name in mins:
                raise RagError(f"threshold for {name!r} given twice")
            mins[name] = value
    return mins


def _lookup(summary: Mapping[str, Any], name: str) -> tuple[bool, Any, str]:
    """(known, value, problem) for `metric`, `lang:metric`, `type:metric` or `faithfulness`."""
    if name == "faithfulness":
        judge = summary.get("judge")
        return (judge is not None, (judge or {}).get("faithfulness"), "no judge was run")
    group_name, _, metric = name.rpartition(":")
    if not group_name:
        group = summary["overall"]
    elif group_name in summary.get("by_language", {}):
        group = summary["by_language"][group_name]
    elif group_name in summary.get("by_type", {}):
        group = summary["by_type"][group_name]
    else:
        known = sorted([*summary.get("by_language", {}), *summary.get("by_type", {})])
        return False, None, f"unknown group {group_name!r} in {name!r}; known: {', '.join(known)}"
    if metric not in metric_names(summary["overall"]):
        known = ", ".join(metric_names(summary["overall"]))
        return False, None, f"unknown metric {metric!r}; known: {known}"
    return True, group.get(metric), ""


def check_thresholds(
    summary: Mapping[str, Any],
    mins: Mapping[str, float],
    maxs: Mapping[str, float] | None = None,
) -> list[str]:
    """Failure messages for each metric below its minimum (or above its maximum); [] if all pass."""
    failures = []
    for bound, limits in (("min", mins), ("max", maxs or {})):
        for name, limit in limits.items():
            known, value, problem = _lookup(summary, name)
            metric = name.rpartition(":")[2]
            if not known:
                failures.append(problem)
            elif bound == "min" and lower_is_better(metric):
                failures.append(f"{name} is lower-is-better: give it a maximum, not a minimum")
            elif value is None:
                failures.append(f"{name} was not measured (no question it applies to)")
            elif bound == "min" and value < limit - 1e-9:
                failures.append(f"{name} = {value:.4g} is below the minimum {limit:g}")
            elif bound == "max" and value > limit + 1e-9:
                failures.append(f"{name} = {value:.4g} is above the maximum {limit:g}")
    return failures


# --------------------------------------------------------------------------------------------
# Running an evaluation
# --------------------------------------------------------------------------------------------


def git_commit(cwd: str | Path | None = None) -> str | None:
    """Short commit of the code under evaluation, with '+dirty' when files were changed."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far (index, models and both pipelines included)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _window_text(retrieved: Mapping[str, Any]) -> str:
    """A retrieved passage's text with its context passages, in file order."""
    parts = [retrieved, *(retrieved.get("context") or [])]
    return " ".join(p.get("text", "") for p in sorted(parts, key=lambda p: p.get("start") or 0))


def _evidence_texts(record: Mapping[str, Any]) -> list[str]:
    quotes = [c.get("quote", "") for c in record.get("citations") or [] if c.get("quote")]
    return quotes or [_window_text(r) for r in record.get("retrieved") or []]


def _run_one(
    pipeline: EvalPipeline, q: Question, *, k: int, retrieval_only: bool
) -> tuple[dict[str, Any], str | None]:
    try:
        if retrieval_only:
            t0 = time.perf_counter()
            hits = pipeline.retrieve(q.question, k)
            ms = (time.perf_counter() - t0) * 1000
            return {
                "retrieved": [h.to_json() for h in hits],
                "timings": {"retrieve_ms": round(ms, 2)},
            }, None
        return pipeline.ask(q.question).to_json(), None
    except Exception as e:  # one failing question must not lose the whole run
        logger.warning("question %s failed: %s: %s", q.id, type(e).__name__, e)
        logger.debug("question %s failed", q.id, exc_info=True)
        # An error scores as a miss (and as a wrong answer), never as "not applicable".
        record: dict[str, Any] = {"retrieved": []}
        if not retrieval_only:
            record.update(answer="", insufficient_context=False, citations=[])
        return record, f"{type(e).__name__}: {e}"


def _run_pipeline(
    pipeline: EvalPipeline,
    questions: Sequence[Question],
    *,
    k: int,
    n_chars: int,
    retrieval_only: bool,
    progress: bool,
    label: str,
    sink: Path,
    judge: Judge | None,
    source_texts: SourceTexts | None,
) -> list[dict[str, Any]]:
    from tqdm import tqdm

    rows = []
    warned_short = False
    # Rows are written as they come so an interrupted or crashed run still leaves its records.
    bar = tqdm(
        questions, desc=label, unit="q", file=sys.stderr, disable=not progress, dynamic_ncols=True
    )
    with sink.open("w", encoding="utf-8") as f:
        for q in bar:
            record, error = _run_one(pipeline, q, k=k, retrieval_only=retrieval_only)
            got = len(record.get("retrieved") or [])
            if not retrieval_only and not error and 0 < got < k and not warned_short:
                # ask() retrieves its own top_k: @k metrics over fewer passages understate recall.
                logger.warning(
                    "%s: the pipeline returned %d passages for %s, fewer than k=%d; "
                    "@%d metrics only see those",
                    label,
                    got,
                    q.id,
                    k,
                    k,
                )
                warned_short = True
            row: dict[str, Any] = {
                "id": q.id,
                "question": q.question,
                "lang": q.lang,
                "answerable": q.answerable,
                "types": list(q.types),
                "expected_sources": list(q.sources),
                "facts": [list(g) for g in q.facts],
                "evidence": list(q.evidence),
                "retrieved": record.get("retrieved") or [],
                "answer": record.get("answer"),
                "answer_language": record.get("language"),
                "mode": record.get("mode"),
                "citations": record.get("citations") or [],
                "insufficient_context": record.get("insufficient_context"),
                "backend": record.get("backend"),
                "timings": record.get("timings") or {},
                "usage": record.get("usage") or {},
                "notes": record.get("notes") or [],
                "error": error,
                "scores": score_question(
                    q, record, k=k, n_chars=n_chars, source_texts=source_texts
                ),
            }
            answer = record.get("answer") or ""
            if (
                judge is not None
                and not retrieval_only
                and not error
                and answer.strip()
                and not row["insufficient_context"]
            ):
                try:
                    row["judge"] = {
                        "faithful": bool(judge(q.question, answer, _evidence_texts(record)))
                    }
                except Exception as e:  # a judge outage must not stop the run
                    logger.warning("judge failed on %s: %s", q.id, e)
                    row["judge"] = {"error": f"{type(e).__name__}: {e}"}
            rows.append(row)
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            f.flush()
    return rows


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as an aligned text table for the terminal (what `rag eval` prints)."""
    from rag.eval import report

    return report.text_summary(summary)


def _judge_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    verdicts = [r["judge"]["faithful"] for r in rows if "faithful" in r.get("judge", {})]
    return {
        "faithfulness": round(sum(verdicts) / len(verdicts), 4) if verdicts else None,
        "n": len(verdicts),
        "errors": sum(1 for r in rows if "error" in r.get("judge", {})),
    }


_SECRET = re.compile(r"password|api_key|secret|token", re.IGNORECASE)


def _public_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe settings with credentials masked: summaries get shared and committed."""
    clean = {k: ("***" if _SECRET.search(k) and v else v) for k, v in settings.items()}
    return json.loads(json.dumps(clean, default=str))


def run_eval(
    pipeline: EvalPipeline,
    questions: Sequence[Question],
    out_dir: str | Path,
    *,
    k: int = 5,
    retrieval_only: bool = False,
    baseline: EvalPipeline | None = None,
    progress: bool = True,
    settings_dict: Mapping[str, Any] | None = None,
    judge: Judge | None = None,
    source_texts: SourceTexts | None = None,
    n_chars: int = 2000,
    worst: int = 5,
) -> dict[str, Any]:
    """Run every question through `pipeline` (and `baseline`), score, and write it all to `out_dir`.

    Writes results.jsonl (+ results_baseline.jsonl), summary.json, report.md and PNG charts, and
    returns the summary. `judge(question, answer_text, evidence_texts) -> bool` is an optional
    (typically LLM) faithfulness check, called only for non-refused answers and reported apart in
    summary["judge"]; evidence_texts are the cited quotes, or the retrieved passages when the
    answer cites nothing. `source_texts` (file name -> text) makes citation support check quotes
    against the files at their offsets rather than against the retrieved chunks.
    """
    from rag.eval import report  # report imports this module, so import it only when needed

    check_k(k)
    if not questions:
        raise RagError("no questions to evaluate")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    common = dict(
        k=k,
        n_chars=n_chars,
        retrieval_only=retrieval_only,
        progress=progress,
        source_texts=source_texts,
    )
    rows = _run_pipeline(
        pipeline, questions, label="eval", sink=out / "results.jsonl", judge=judge, **common
    )
    summary: dict[str, Any] = summarize(rows)
    summary["settings"] = _public_settings(settings_dict or {})
    baseline_rows = None
    if baseline is not None:
        baseline_rows = _run_pipeline(
            baseline,
            questions,
            label="baseline",
            sink=out / "results_baseline.jsonl",
            judge=None,
            **common,
        )
        b = summarize(baseline_rows)
        summary["baseline"] = {**b, "ratios": compare(summary["overall"], b["overall"])}
    if judge is not None and not retrieval_only:
        summary["judge"] = _judge_summary(rows)
    backends = Counter(
        f"{r['backend'].get('name')}/{r['backend'].get('model')}" for r in rows if r.get("backend")
    )
    summary["run"] = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 2),
        "questions": len(questions),
        "k": k,
        "n_chars": n_chars,
        "retrieval_only": retrieval_only,
        "git_commit": git_commit(),
        "peak_rss_mb": peak_rss_mb(),
        "backends": dict(backends),
        "python": sys.version.split()[0],
    }
    (out / "summary.json").write_text(
        json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    charts = report.write_charts(out, summary, rows, retrieval_only=retrieval_only)
    report.write_report(out, summary, rows, charts=charts, baseline_rows=baseline_rows, worst=worst)
    logger.info("evaluation of %d questions written to %s", len(questions), out)
    return summary
