"""Citations and refusals: parse [n] markers, check that each cited sentence supports its claim,
build `Citation` records with exact file spans, and decide when the evidence does not answer.

Generated answers are checked after the fact: the model's markers are parsed (`[2]`, `[1, 3]`,
`[1-3]`), numbers outside the evidence list are dropped, and every claim (answer sentence) is
compared with the sentence it cites, by e5 similarity and by shared terms (numbers must match).
A claim whose citation does not hold is re-attributed to the evidence sentence that supports it,
or left uncited and reported in `unsupported_claims`.

In extractive mode nothing is written, so the question is only whether the evidence answers the
question at all (`extractive_refusal`): the answer type the question asks for (a number, a date,
a price...) must be present, and its names and key terms must be covered by the evidence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .embed import Embedder
from .evidence import (
    Selection,
    Term,
    asked_types,
    content_terms,
    fold,
    satisfies,
    term_set,
)
from .prompts import LANGUAGES, phrase
from .text import normalize, sentence_spans, words
from .types import Citation, Evidence

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Markers
# --------------------------------------------------------------------------------------------

# [3], [1, 2], [1-3], [1–3], [1; 4]; also the doubled [[2]] some models write.
MARKER = re.compile(r"\[\[?\s*(\d+(?:\s*[-–]\s*\d+)?(?:\s*[,;]\s*\d+(?:\s*[-–]\s*\d+)?)*)\s*\]?\]")
_MAX_RANGE = 20  # "[1-300]" is a typo, not 300 citations


def parse_numbers(inner: str) -> list[int]:
    """The numbers of one marker's inside: "1, 3-5" → [1, 3, 4, 5]."""
    out: list[int] = []
    for part in re.split(r"[,;]", inner):
        bounds = [int(x) for x in re.split(r"[-–]", part.strip()) if x.strip()]
        if len(bounds) == 2 and bounds[0] <= bounds[1] <= bounds[0] + _MAX_RANGE:
            out.extend(range(bounds[0], bounds[1] + 1))
        else:
            out.extend(bounds)
    return out


def parse_markers(text: str) -> list[tuple[int, int, list[int]]]:
    """(start, end, numbers) of every citation marker in `text`."""
    return [(m.start(), m.end(), parse_numbers(m.group(1))) for m in MARKER.finditer(text)]


def cited_numbers(text: str) -> list[int]:
    """All cited numbers in order, repeats kept."""
    return [n for _, _, ns in parse_markers(text) for n in ns]


def strip_markers(text: str) -> str:
    """The text without citation markers (and without the space left before them)."""
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", MARKER.sub("", text)).strip()


def format_marker(numbers: Sequence[int]) -> str:
    return "".join(f"[{n}]" for n in numbers)


# --------------------------------------------------------------------------------------------
# Refusal detection in a model's reply
# --------------------------------------------------------------------------------------------

# What small and large models write instead of the exact refusal text.
_REFUSAL_PATTERNS = re.compile(
    r"insufficient[_ ]context|\binsufficient\b|not enough (?:information|context)|"
    r"(?:do not|don't|does not|doesn't) (?:say|mention|contain|state|provide)|"
    r"no information|not mentioned|cannot be answered|can't be answered|"
    r"не се казва|не се споменава|няма информация|не се кажува|нема информации|"
    r"ne navode|ne navodi|nema informacij|не йдеться|немає інформації|не згадується|"
    r"не вказано|не сказано"
)


def is_refusal(text: str) -> bool:
    """Whether a model's reply is a refusal: the refusal phrase of any corpus language, or a
    common paraphrase, in a reply that cites nothing (a reply that says "the articles don't say
    X, but [1] says Y" is an answer)."""
    t = normalize(strip_markers(text))
    if not t:
        return True
    for lang in LANGUAGES:
        if normalize(phrase("refusal", lang)).rstrip(".") in t:
            return not cited_numbers(text) or len(t) < 2 * len(normalize(phrase("refusal", lang)))
    return bool(_REFUSAL_PATTERNS.search(t)) and (not cited_numbers(text) or len(t) < 120)


# --------------------------------------------------------------------------------------------
# Support: does an evidence sentence back a claim?
# --------------------------------------------------------------------------------------------

# Thresholds chosen on seeds/questions.jsonl (see benchmarks/answers.py and the module tests):
# a claim is supported by a sentence when the e5 passage similarity is high, or when most of
# the claim's terms are in it; numbers in the claim must always be in the sentence.
SUPPORT_DENSE = 0.86  # e5 cosine, passage vs passage
SUPPORT_LEXICAL = 0.5  # share of the claim's content terms found in the sentence (+ context)
# e5 cosines of unrelated sentences rarely fall below this; it maps to support 0.
_DENSE_FLOOR = 0.75

_DIGITS = re.compile(r"\d+(?:[.,]\d+)?")


@dataclass(frozen=True)
class Support:
    score: float  # 0..1
    dense: float
    lexical: float
    numbers_ok: bool

    @property
    def ok(self) -> bool:
        return self.numbers_ok and (self.dense >= SUPPORT_DENSE or self.lexical >= SUPPORT_LEXICAL)


def _numbers(text: str) -> set[str]:
    return {m.group().replace(",", ".") for m in _DIGITS.finditer(text)}


def _evidence_text(ev: Evidence) -> str:
    return " ".join(p for p in (ev.context_before, ev.sentence.text, ev.context_after) if p)


def support(claim: str, claim_vector: np.ndarray, ev: Evidence, ev_vector: np.ndarray,
            claim_terms: Sequence[Term] | None = None) -> Support:
    """How well evidence `ev` supports `claim` (marker-free text)."""
    dense = float(claim_vector @ ev_vector)
    terms = list(claim_terms) if claim_terms is not None else content_terms(claim)
    text = _evidence_text(ev)
    have = term_set(text)
    lexical = sum(t.found_in(have) for t in terms) / len(terms) if terms else 0.0
    numbers_ok = _numbers(claim) <= _numbers(text)
    dense_part = min(1.0, max(0.0, (dense - _DENSE_FLOOR) / (1.0 - _DENSE_FLOOR)))
    score = max(dense_part, lexical) if numbers_ok else min(dense_part, lexical) / 2
    return Support(score=score, dense=dense, lexical=lexical, numbers_ok=numbers_ok)


# --------------------------------------------------------------------------------------------
# Verification of a generated answer
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    text: str  # the answer with cleaned, renumbered markers
    citations: tuple[Citation, ...]
    unsupported_claims: tuple[str, ...]
    dropped_markers: int  # numbers that pointed at no evidence
    reattributed: int  # claims moved to another evidence sentence


def make_citation(n: int, ev: Evidence, support_score: float) -> Citation:
    s = ev.sentence
    return Citation(
        n=n, source=s.source, chunk_id=s.chunk_id, start=s.start, end=s.end,
        lines=(s.line_start, s.line_end), quote=s.text, support=float(support_score),
        title=s.title, language=s.language,
    )


def _claims(text: str) -> list[tuple[int, int]]:
    """Spans of the answer's claims: its sentences, each with the markers that follow it.

    Markers sit after the sentence's final period ("... in June. [2]") as often as before it, so
    a sentence that is only markers is merged into the previous one.
    """
    spans = sentence_spans(text)
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and not strip_markers(text[a:b]):
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def verify(text: str, evidence: Sequence[Evidence], embedder: Embedder,
           evidence_vectors: np.ndarray) -> Verified:
    """Check every claim of a generated answer against the evidence it cites.

    `evidence_vectors[i]` is the e5 passage vector of `evidence[i].sentence`. Returns the answer
    with markers that point at real, supporting evidence, renumbered 1..m in order of first use,
    and one Citation per number.
    """
    by_n = {ev.n: i for i, ev in enumerate(evidence)}
    claims = _claims(text)
    plain = [strip_markers(text[a:b]) for a, b in claims]
    has_words = [bool(words(p)) for p in plain]
    vectors = (embedder.embed_passages([p for p, w in zip(plain, has_words, strict=True) if w])
               if any(has_words) else np.zeros((0, 0), dtype=np.float32))
    vec_iter = iter(vectors)

    dropped = 0
    reattributed = 0
    unsupported: list[str] = []
    new_numbers: dict[int, int] = {}  # evidence index -> final marker number
    best_support: dict[int, float] = {}
    pieces: list[str] = []
    cursor = 0
    for (a, b), claim, w in zip(claims, plain, has_words, strict=True):
        pieces.append(text[cursor:a])
        cursor = b
        segment = text[a:b]
        markers = parse_markers(segment)
        cited = [n for _, _, ns in markers for n in ns]
        valid = list(dict.fromkeys(n for n in cited if n in by_n))
        dropped += len([n for n in cited if n not in by_n])
        body = strip_markers(segment) if markers else segment.strip()
        if not w:
            pieces.append(body)
            continue
        cv = next(vec_iter)
        terms = content_terms(claim)
        checks = {i: support(claim, cv, evidence[i], evidence_vectors[i], terms)
                  for i in range(len(evidence))}
        keep = [by_n[n] for n in valid if checks[by_n[n]].ok]
        if not keep and checks:
            best = max(checks, key=lambda i: checks[i].score)
            if checks[best].ok:
                keep = [best]
                if valid:
                    reattributed += 1
                    logger.debug("re-attributed %r from %s to [%d]", claim[:60], valid,
                                 evidence[best].n)
        if not keep:
            # Left uncited (and reported) rather than pointing at text that does not say it.
            unsupported.append(claim)
            pieces.append(body)
            continue
        for i in keep:
            new_numbers.setdefault(i, len(new_numbers) + 1)
            best_support[i] = max(best_support.get(i, 0.0), checks[i].score)
        pieces.append(_attach(body, [new_numbers[i] for i in keep]))
    pieces.append(text[cursor:])
    final = re.sub(r"[ \t]+\n", "\n", "".join(pieces)).strip()
    citations = tuple(
        make_citation(num, evidence[i], best_support[i])
        for i, num in sorted(new_numbers.items(), key=lambda kv: kv[1])
    )
    return Verified(final, citations, tuple(unsupported), dropped, reattributed)


def _attach(body: str, numbers: Sequence[int]) -> str:
    """Put markers before the claim's closing punctuation: "... in June [1]."."""
    marker = format_marker(numbers)
    m = re.search(r"([.!?…]+[\"'»”]*)\s*$", body)
    if m:
        return f"{body[: m.start()].rstrip()} {marker}{m.group(1)}"
    return f"{body.rstrip()} {marker}"


# --------------------------------------------------------------------------------------------
# Refusal decision for extractive answers
# --------------------------------------------------------------------------------------------

# An off-topic question ("How do I bake bread?") still retrieves something; its best sentence
# then scores low and few of its terms occur in the passages. On the seed questions every
# answerable one has a best sentence above 0.80 (e5-small cosine).
OFF_TOPIC_DENSE = 0.80
OFF_TOPIC_COVERAGE = 0.5
# How many of the best-ranked evidence sentences may supply the asked-for kind of answer. On
# the seed questions, looking at the best sentence only refused 6 of 11 unanswerable questions
# at the cost of 1 of 36 answerable ones; the top 2 or 3 refused 4 or 3 (a number further down
# is usually about something else: "5 million shells" for "how many troops").
TYPE_WINDOW = 1


@dataclass(frozen=True)
class RefusalDecision:
    refuse: bool
    reasons: tuple[str, ...]  # why (for logs and the benchmark), empty when answering
    # Evidence (1-based n) that holds the asked-for kind of answer, to show first.
    typed_evidence: tuple[int, ...] = ()
    coverage: float = 0.0  # share of the question's terms found in the retrieved passages


def term_coverage(selection: Selection) -> float:
    """Share of the question's content terms present, letter for letter after transliteration
    and stemming, in the retrieved passages."""
    if not selection.terms:
        return 1.0
    have = term_set(" ".join(c.sentence.text for c in selection.ranked))
    return sum(t.found_in(have) for t in selection.terms) / len(selection.terms)


def extractive_refusal(selection: Selection) -> RefusalDecision:
    """Decide whether the selected evidence answers the question (no LLM involved).

    A plain similarity cut-off cannot tell "on topic" from "answers it" (an off-topic question
    scored 0.763, an answerable one 0.774), so the decision looks at what the question asks:
    1. the kind of answer asked first ("how many", "when", "what date", "how much did it cost",
       "what range") must be present in one of the best evidence sentences;
    2. a question whose best sentence scores low AND whose terms mostly do not occur in the
       retrieved passages is off-topic.
    Word-level e5 similarity was tried for covering terms across languages and rejected: single
    words score 0.82-0.86 against anything ("banana" 0.856 against this news corpus).
    """
    if not selection.evidence:
        return RefusalDecision(True, ("no evidence",))
    reasons: list[str] = []
    main, _ = asked_types(selection.question)
    window = selection.evidence[:TYPE_WINDOW]
    typed: list[int] = []
    for t in main:
        hits = [ev.n for ev in window if satisfies(t, _evidence_text(ev))]
        if not hits:
            reasons.append(f"no {t} in the evidence")
        typed.extend(h for h in hits if h not in typed)
    coverage = term_coverage(selection)
    best = max(c.dense for c in selection.ranked)
    if best < OFF_TOPIC_DENSE and coverage < OFF_TOPIC_COVERAGE:
        reasons.append(f"off-topic (best sentence {best:.3f}, term coverage {coverage:.2f})")
    return RefusalDecision(bool(reasons), tuple(reasons), tuple(typed), coverage)


def fold_text(text: str) -> str:
    """Script-independent form of a text (for tests and debugging)."""
    return " ".join(fold(w) for w in words(text))
