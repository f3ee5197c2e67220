"""Answer metrics of a set of questions, shared by the answer benchmarks.

It imports no `rag` module: benchmarks/replay_answers.py runs it against whichever release of
`rag` is on PYTHONPATH, and the metric functions are passed in from there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def gold_sources(sources: Sequence[str]) -> list[str]:
    """The question's sources as citations name them: paths relative to the corpus (and, for
    retrieval cached before documents were keyed by path, their bare file names)."""
    return [*sources, *(Path(x).name for x in sources)]


def tally(items: Iterable[tuple[Any, bool, str, Sequence[str]]],
          fact_recall: Callable[..., float | None],
          citation_precision: Callable[..., float | None]) -> dict[str, float]:
    """Fact recall, citation precision, refusal accuracy and false refusals of answers given
    as (question, refused, answer text, cited sources); NaN where a metric has no question."""
    fr: list[float] = []
    cp: list[float] = []
    n = tp = fn = fp = tn = 0
    for question, refused, answer, cited in items:
        n += 1
        if question.answerable:
            fr.append(0.0 if refused else (fact_recall(answer, question.facts) or 0.0))
            if not refused:
                p = citation_precision(list(cited), gold_sources(question.sources))
                if p is not None:
                    cp.append(p)
            fp += refused
            tn += not refused
        else:
            tp += refused
            fn += not refused
    nan = float("nan")
    return {"n": n, "fact_recall": sum(fr) / len(fr) if fr else nan,
            "citation_precision": sum(cp) / len(cp) if cp else nan,
            "refusal_accuracy": tp / (tp + fn) if tp + fn else nan,
            "false_refusal_rate": fp / (fp + tn) if fp + tn else nan}
