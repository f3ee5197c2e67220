"""Citations: parse [n] markers, check that each cited sentence supports its claim,
build `Citation` records with exact file spans, and decide when the evidence does not answer.

Generated answers are checked after the fact: the model's markers are parsed (`[2]`, `[1, 3]`,
`[1-3]`), numbers outside the evidence list are dropped, and every claim (answer sentence) is
compared with the sentence it cites, by e5 similarity and by shared terms (numbers must match).
A claim whose citation does not hold is re-attributed to the evidence sentence that supports it,
or left uncited and reported in `unsupported_claims`.

Whether extractive evidence answers the question at all is decided in `rag.answering.refusal`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rag import lang as lang_packs
from rag.answering.prompts import LANGUAGES, phrase
from rag.embed import Embedder
from rag.lang.terms import Term, fold, spelling_keys, spelling_terms
from rag.lang.text import normalize, sentence_spans, words
from rag.types import Citation, Evidence

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


# A marker together with the spaces before it: removing only the marker would leave "Italy ."
# or 'Italy ".' behind.
_SPACED_MARKER = re.compile(r"[ \t\u00a0]*" + MARKER.pattern)


def strip_markers(text: str) -> str:
    """The text without citation markers and without the spaces that stood before them."""
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", _SPACED_MARKER.sub("", text)).strip()


def format_marker(numbers: Sequence[int]) -> str:
    return "".join(f"[{n}]" for n in numbers)


# --------------------------------------------------------------------------------------------
# Refusal detection in a model's reply
# --------------------------------------------------------------------------------------------

# What small and large models write instead of the exact refusal text (per-language data).
_REFUSAL_PATTERNS = lang_packs.pattern("refusal_paraphrases")


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
    paraphrase = bool(_REFUSAL_PATTERNS and _REFUSAL_PATTERNS.search(t))
    return paraphrase and (not cited_numbers(text) or len(t) < 120)


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
    terms = list(claim_terms) if claim_terms is not None else spelling_terms(claim)
    text = _evidence_text(ev)
    # Spelling only, as the thresholds were set: a lexicon match across languages ("Italy" =
    # "Италия") would make any claim about the same countries look supported.
    have = spelling_keys(text)
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
        terms = spelling_terms(claim)
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


def fold_text(text: str) -> str:
    """Script-independent form of a text (for tests and debugging)."""
    return " ".join(fold(w) for w in words(text))
