"""Deterministic evaluation metrics: pure functions of their arguments.

Every metric returns `None` when it does not apply to a question (no expected sources, no evidence
phrases, no citation markers, ...) so that summaries average it only over the questions where it
means something.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

SourceTexts = Mapping[str, str] | Callable[[str], str | None]

_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Case- and whitespace-insensitive form used for every phrase match."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text or "")).strip().casefold()


def check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


# One entry per retrieved passage, best first: its source, or every source that carries the same
# passage (a collapsed near-duplicate group).
RankedSources = Sequence[str | Iterable[str]]


def _names(entry: str | Iterable[str]) -> set[str]:
    return {entry} if isinstance(entry, str) else set(entry)


def hit_at_k(retrieved_sources: RankedSources, expected: Iterable[str], k: int) -> float | None:
    """1.0 if any of the first k retrieved passages comes from an expected source."""
    check_k(k)
    want = set(expected)
    if not want:
        return None
    return 1.0 if any(_names(s) & want for s in list(retrieved_sources)[:k]) else 0.0


def reciprocal_rank(retrieved_sources: RankedSources, expected: Iterable[str]) -> float | None:
    """1/rank of the first passage from an expected source (rank counted in passages)."""
    want = set(expected)
    if not want:
        return None
    for rank, source in enumerate(retrieved_sources, 1):
        if _names(source) & want:
            return 1.0 / rank
    return 0.0


def recall_at_k(retrieved_sources: RankedSources, expected: Iterable[str], k: int) -> float | None:
    """Fraction of the distinct expected sources present among the first k passages.

    Several passages from one article count once, so a question needing two articles only scores
    1.0 when both appear; a passage carried by several articles counts for each of them.
    """
    check_k(k)
    want = set(expected)
    if not want:
        return None
    got: set[str] = set()
    for s in list(retrieved_sources)[:k]:
        got |= _names(s)
    return len(want & got) / len(want)


def _phrases(evidence: Iterable[str]) -> list[str]:
    return [p for p in (normalize_text(e) for e in evidence) if p]


def evidence_at_k(
    retrieved_texts: Sequence[str], evidence_phrases: Iterable[str], k: int
) -> float | None:
    """1.0 if an evidence phrase lies wholly inside one of the first k passages."""
    check_k(k)
    phrases = _phrases(evidence_phrases)
    if not phrases:
        return None
    passages = [normalize_text(t) for t in list(retrieved_texts)[:k]]
    return 1.0 if any(p in t for t in passages for p in phrases) else 0.0


def evidence_offset(retrieved_texts: Sequence[str], evidence: Iterable[str]) -> int | None:
    """Characters read, in rank order, up to the end of the first evidence phrase met.

    Counted on whitespace-normalised passages joined by one separator, so the number does not
    depend on how a chunker laid out blank lines. None if no passage holds a phrase.
    """
    phrases = _phrases(evidence)
    read = 0
    for text in retrieved_texts:
        passage = normalize_text(text)
        ends = [passage.find(p) + len(p) for p in phrases if p in passage]
        if ends:
            return read + min(ends)
        read += len(passage) + 1
    return None


def evidence_within_chars(
    retrieved_texts: Sequence[str], evidence: Iterable[str], n_chars: int = 2000
) -> float | None:
    """1.0 if an evidence phrase ends within the first `n_chars` of the ranked passages.

    A phrase straddling two passages does not count: the model would see it cut in half.
    """
    if n_chars < 1:
        raise ValueError(f"n_chars must be >= 1, got {n_chars}")
    if not _phrases(evidence):
        return None
    offset = evidence_offset(retrieved_texts, evidence)
    return 1.0 if offset is not None and offset <= n_chars else 0.0


def fact_recall(answer_text: str | None, facts: Iterable[Iterable[str]]) -> float | None:
    """Fraction of fact groups of which the answer contains at least one alternative."""
    groups = [alts for alts in (_phrases(g) for g in facts) if alts]
    if not groups:
        return None
    text = normalize_text(answer_text or "")
    return sum(any(a in text for a in alts) for alts in groups) / len(groups)


_MARKER = re.compile(r"\[\s*(\d+(?:\s*[-–]\s*\d+)?(?:\s*[,;]\s*\d+(?:\s*[-–]\s*\d+)?)*)\s*\]")
_MAX_RANGE = 50


def parse_citation_markers(text: str | None) -> list[int]:
    """Numbers cited in `[n]`, `[n, m]` and `[n-m]` markers, in order, repeats kept."""
    numbers: list[int] = []
    for match in _MARKER.finditer(text or ""):
        for part in re.split(r"[,;]", match.group(1)):
            bounds = [int(x) for x in re.split(r"[-–]", part)]
            if len(bounds) == 1:
                numbers.append(bounds[0])
                continue
            lo, hi = bounds
            if lo <= hi <= lo + _MAX_RANGE:
                numbers.extend(range(lo, hi + 1))
            else:
                # A reversed or absurd range is still checked, by its ends, instead of expanding
                # into thousands of numbers.
                numbers.extend((lo, hi))
    return numbers


def citation_validity(answer_text: str | None, valid: int | Iterable[int]) -> float | None:
    """Fraction of cited numbers that point at something: 1..valid, or a member of `valid`."""
    markers = parse_citation_markers(answer_text)
    if not markers:
        return None
    ok = set(range(1, valid + 1)) if isinstance(valid, int) else set(valid)
    return sum(n in ok for n in markers) / len(markers)


def citation_precision(cited_sources: Sequence[str], expected: Iterable[str]) -> float | None:
    """Fraction of citations whose file is one of the question's expected sources."""
    want = set(expected)
    cited = list(cited_sources)
    if not cited or not want:
        return None
    return sum(s in want for s in cited) / len(cited)


def as_dict(obj: Any) -> Mapping[str, Any]:
    return obj.to_json() if hasattr(obj, "to_json") else obj


def citation_support(
    citations: Sequence[Any],
    texts: SourceTexts,
    *,
    key: str = "source",
    check_offsets: bool = False,
) -> float | None:
    """Fraction of citations whose quote is verbatim in the text they point at.

    `texts` maps `citation[key]` (a file name by default, or a chunk id with key="chunk_id") to
    that text, as a dict or a callable returning None when unknown. With `check_offsets` the
    quote must also sit exactly at `text[start:end]`, which is what the UI highlights.
    """
    cits = [as_dict(c) for c in citations]
    if not cits:
        return None
    lookup = texts.get if isinstance(texts, Mapping) else texts
    supported = 0
    for c in cits:
        quote = c.get("quote") or ""
        try:
            text = lookup(c.get(key) or "")
        except (OSError, KeyError):
            text = None
        if not quote.strip() or not text:
            continue
        if check_offsets and c.get("start") is not None and c.get("end") is not None:
            supported += text[c["start"] : c["end"]] == quote
        else:
            supported += quote in text
    return supported / len(cits)


def refusal_accuracy(answerable: bool, refused: bool) -> float | None:
    """For an unanswerable question: 1.0 if the system said the context was insufficient."""
    return None if answerable else float(refused)


def false_refusal(answerable: bool, refused: bool) -> float | None:
    """For an answerable question: 1.0 if the system refused anyway (lower is better)."""
    return float(refused) if answerable else None


# bs/hr guesses are folded into "sr" by the language identifier too (see rag.types.Document).
_LANG_ALIASES = {"bs": "sr", "hr": "sr", "sh": "sr", "cnr": "sr"}


def _norm_lang(code: str | None) -> str:
    primary = (code or "").strip().lower().replace("_", "-").split("-")[0]
    return _LANG_ALIASES.get(primary, primary)


def answer_language_match(answer_lang: str | None, question_lang: str | None) -> float | None:
    a, q = _norm_lang(answer_lang), _norm_lang(question_lang)
    if not a or not q:
        return None
    return float(a == q)


def tokens_per_second(
    usage: Mapping[str, Any] | None, timings: Mapping[str, Any] | None
) -> float | None:
    """Generation speed from whatever the backend reported; None when it reported no token count."""
    usage = usage or {}
    timings = timings or {}
    if isinstance(usage.get("tokens_per_s"), int | float):
        return float(usage["tokens_per_s"])
    # Ollama reports its own decode time, more exact than our wall clock.
    if usage.get("eval_count") and usage.get("eval_duration"):
        return usage["eval_count"] / (usage["eval_duration"] / 1e9)
    tokens = usage.get("completion_tokens") or usage.get("output_tokens") or usage.get("eval_count")
    total = timings.get("total_ms")
    if not tokens or not total:
        return None
    # Decode phase only: time after the first token, or after retrieval when streaming was off.
    start = timings.get("first_token_ms") or timings.get("retrieve_ms") or 0.0
    seconds = (total - start) / 1000
    return tokens / seconds if seconds > 0 else None


# --- how summaries read -------------------------------------------------------------------

_LOWER_IS_BETTER = {"false_refusal_rate"}


def lower_is_better(metric: str) -> bool:
    return metric in _LOWER_IS_BETTER or metric.endswith(("_ms_p50", "_ms_p95"))


def metric_names(group: Mapping[str, Any]) -> list[str]:
    """The metric keys of one summary group, in display order."""
    return [
        k
        for k, v in group.items()
        if k not in ("n", "n_answerable", "n_unanswerable", "errors", "counts")
        and not isinstance(v, dict)
    ]
