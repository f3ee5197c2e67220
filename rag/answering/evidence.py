"""Evidence selection: retrieved chunks → ranked, numbered sentences with exact file spans.

Every answer mode starts here. The retrieved chunks are split into sentences (each keeps its
character span and line numbers in the source file), every sentence is scored against the
question with the multilingual e5 embedder plus a lexical signal that works across the corpus'
scripts, and the best few become numbered `Evidence`, with a neighbouring sentence attached when
the sentence cannot stand on its own, and near-duplicates from other articles dropped.

Terms (what counts as the same word across languages and scripts) come from `rag.lang.terms`; the
question is analysed once (`rag.answering.question.QuestionAnalysis`) and the analysis is passed in.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag import lang as lang_packs
from rag.answering.kinds import asked_types, person_score, satisfies
from rag.embed import Embedder
from rag.lang import centroids as language_centroids
from rag.lang.centroids import LanguageCentroids
from rag.lang.terms import (
    Term,
    content_terms,
    term_set,
)
from rag.lang.text import main_script, normalize, says_something, sentence_spans, words
from rag.types import Chunk, Evidence, Retrieved, Sentence

if TYPE_CHECKING:
    from rag.answering.question import QuestionAnalysis

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Sentences of retrieved chunks
# --------------------------------------------------------------------------------------------

# A sentence that starts with a pronoun or connective leans on the one before ("He said ...",
# "Тој ..."): per-language data.
_ANAPHORA = lang_packs.words("anaphora")
# Sentences shorter than this rarely say anything alone (headings, "Тя рече:").
_SHORT_CHARS = 40


def split_sentences(retrieved: Sequence[Retrieved]) -> list[Sentence]:
    """Sentences of the retrieved chunks, in retrieval order, each with its absolute file span.

    `chunk.text == file[chunk.start:chunk.end]`, so a sentence at chunk offsets (a, b) is
    `file[chunk.start + a : chunk.start + b]`; its lines are the chunk's first line plus the
    newlines before it.
    """
    out: list[Sentence] = []
    seen: set[tuple[str, int]] = set()
    for c in (c for r in retrieved for c in r.window):
        for a, b in sentence_spans(c.text):
            key = (c.source, c.start + a)
            if key in seen:  # overlapping chunks
                continue
            seen.add(key)
            out.append(
                Sentence(
                    source=c.source,
                    chunk_id=c.id,
                    text=c.text[a:b],
                    start=c.start + a,
                    end=c.start + b,
                    line_start=c.line_start + c.text.count("\n", 0, a),
                    line_end=c.line_start + c.text.count("\n", 0, max(a, b - 1)),
                    title=c.title,
                    language=c.language,
                )
            )
    return out


# A sentence ends with one of these, then perhaps closing quotes or brackets and an agency's
# tag ("… каза той./БТА"). A line without one is a headline, a caption or a title, which names
# the topic (and so matches the question well) but rarely states the fact asked. The colon ends
# a line that introduces a quote or a list.
_FINISHED = re.compile(r"[.!?…:;][\"'»«“”„‘’‹›)\]*]*(?:\s*/\s*\w+)?\s*$")


def is_heading(text: str) -> bool:
    """True for a line that does not end as a sentence does (a headline, caption or title).
    Invisible format characters (a trailing left-to-right mark) are not an ending."""
    visible = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return not _FINISHED.search(visible)


def _starts_line(sentence: Sentence, chunks: dict[str, Chunk]) -> bool:
    """Whether the sentence begins its line (or its passage). A heading stands on a line of its
    own; a sentence the chunker cut off at a passage's end does not start one."""
    chunk = chunks.get(sentence.chunk_id)
    if chunk is None:
        return True
    a = sentence.start - chunk.start
    return a <= 0 or chunk.text[:a].rstrip(" \t").endswith("\n")


def needs_context(sentence: Sentence) -> bool:
    """True when the sentence probably cannot be understood alone."""
    ws = words(sentence.text)
    return len(sentence.text) < _SHORT_CHARS or bool(ws and ws[0] in _ANAPHORA)


# --------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """One candidate sentence with its signals."""

    sentence: Sentence
    dense: float  # cosine of e5 query and passage vectors
    lexical: float  # idf-weighted share of the question's terms the sentence contains
    score: float  # what the ranking uses
    index: int  # position in the split order (for neighbours)
    prior: float = 0.0  # retrieval prior of the sentence's passage (1 = first passage)
    typed: float = 0.0  # share of the asked-for kinds of answer (a number, a date) it holds
    person: float = 0.0  # names someone the question does not ("who ...?" only; person_score)
    context: float = 0.0  # 1 for a sentence of a context passage (beside a hit), 0 for a hit's
    heading: float = 0.0  # 1 for a line that does not end as a sentence does (is_heading)
    # How much closer to the question an unrelated sentence of this one's language is than one of
    # the average language (rag.lang.centroids): the embedder's own-language lean.
    language: float = 0.0
    # The score without the answer-kind terms (typed, person), the heading and the language
    # terms: how well the sentence matches the question (a headline may match it well). Refusal
    # asks whether a *relevant* sentence holds the asked-for kind of answer; the ranking's own
    # bonus for holding it must not answer that.
    relevance: float = 0.0


@dataclass(frozen=True)
class Selection:
    """What evidence selection found for one question."""

    question: str
    terms: tuple[Term, ...]  # content terms of the question
    ranked: tuple[Scored, ...]  # every candidate sentence, best first
    evidence: tuple[Evidence, ...]  # the numbered evidence, n from 1
    sentences: tuple[Sentence, ...] = field(default=(), repr=False)  # split order
    question_vector: np.ndarray | None = field(default=None, repr=False, compare=False)
    lang: str | None = None  # the question's language, when known
    analysis: QuestionAnalysis | None = field(default=None, repr=False, compare=False)


class _LRU:
    """A small thread-safe LRU of vectors."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict[object, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: object) -> np.ndarray | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: object, value: np.ndarray) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)


# Weights of the sentence score (see EvidenceSelector.rank), fitted leave one topic out by
# benchmarks/fit_evidence.py (the command and its report are in the file). e5-small cosines of a
# question and its candidate sentences spread over ~0.05, so the weights are on that scale.
WEIGHTS_FILE = Path(__file__).resolve().parent.parent / "data" / "evidence.json"
WEIGHT_NAMES = ("lexical_weight", "rank_weight", "type_weight", "person_weight",
                "context_weight", "heading_weight", "language_weight")


def load_weights(path: Path = WEIGHTS_FILE) -> dict[str, float]:
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = [n for n in WEIGHT_NAMES if not isinstance(data.get(n), int | float)]
    if missing:
        raise ValueError(f"{path}: missing or non-numeric weights {missing}; restore the file "
                         "(git checkout) or refit it with python benchmarks/fit_evidence.py "
                         "--write")
    return {n: float(data[n]) for n in WEIGHT_NAMES}


_WEIGHTS = load_weights()
LEXICAL_WEIGHT = _WEIGHTS["lexical_weight"]
RANK_WEIGHT = _WEIGHTS["rank_weight"]
TYPE_WEIGHT = _WEIGHTS["type_weight"]
PERSON_WEIGHT = _WEIGHTS["person_weight"]
CONTEXT_WEIGHT = _WEIGHTS["context_weight"]
HEADING_WEIGHT = _WEIGHTS["heading_weight"]
LANGUAGE_WEIGHT = _WEIGHTS["language_weight"]


class EvidenceSelector:
    """Ranks the sentences of retrieved chunks against a question and numbers the best.

    Sentence vectors are cached by (chunk_id, start): a chunk id is a hash of the file content and
    span, so a cached vector can never belong to changed text.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        lexical_weight: float = LEXICAL_WEIGHT,
        rank_weight: float = RANK_WEIGHT,
        type_weight: float = TYPE_WEIGHT,
        person_weight: float = PERSON_WEIGHT,
        context_weight: float = CONTEXT_WEIGHT,
        heading_weight: float = HEADING_WEIGHT,
        language_weight: float = LANGUAGE_WEIGHT,
        centroids: LanguageCentroids | None = None,
        dedupe_similarity: float = 0.95,
        cache_size: int = 20_000,
    ):
        self.embedder = embedder
        self.lexical_weight = lexical_weight
        self.rank_weight = rank_weight
        self.type_weight = type_weight
        self.person_weight = person_weight
        self.context_weight = context_weight
        self.heading_weight = heading_weight
        self.language_weight = language_weight
        # None: the shipped centroids, if they are this embedder's (looked up on first use).
        self._centroids = centroids
        self._centroids_resolved = centroids is not None
        self.dedupe_similarity = dedupe_similarity
        self._sentences = _LRU(cache_size)
        self._queries = _LRU(256)

    # --- vectors ---------------------------------------------------------------------------
    def question_vector(self, question: str) -> np.ndarray:
        v = self._queries.get(question)
        if v is None:
            v = self.embedder.embed_queries([question])[0]
            self._queries.put(question, v)
        return v

    def sentence_vectors(self, sentences: Sequence[Sentence]) -> np.ndarray:
        keys = [(s.chunk_id, s.start) for s in sentences]
        vecs: list[np.ndarray | None] = [self._sentences.get(k) for k in keys]
        missing = [i for i, v in enumerate(vecs) if v is None]
        if missing:
            new = self.embedder.embed_passages([sentences[i].text for i in missing])
            for i, v in zip(missing, new, strict=True):
                self._sentences.put(keys[i], v)
                vecs[i] = v
        if not vecs:
            return np.zeros((0, 0), dtype=np.float32)
        return np.vstack(vecs)

    def warm(self, items: Iterable[Retrieved | Chunk], batch: int = 64) -> int:
        """Embed the sentences of these passages ahead of time (e.g. every stored chunk at
        start-up, in a background thread), so the first questions are answered as fast as later
        ones. Takes chunks or retrieved chunks; sentences already cached are skipped, so calling
        it again is cheap. Returns how many sentences were embedded."""
        retrieved = [it if isinstance(it, Retrieved) else Retrieved(chunk=it, rank=1, score=0.0)
                     for it in items]
        sentences = split_sentences(retrieved)
        todo = [s for s in sentences if self._sentences.get((s.chunk_id, s.start)) is None]
        for i in range(0, len(todo), batch):
            self.sentence_vectors(todo[i : i + batch])
        # The lexical keys of each sentence are cached too (rag.lang.terms): compute them now.
        for s in sentences:
            term_set(s.text, s.language or None)
        return len(todo)

    # --- ranking ---------------------------------------------------------------------------
    def rank(self, question: str, retrieved: Sequence[Retrieved],
             lang: str | None = None, analysis: QuestionAnalysis | None = None) -> Selection:
        """Score every sentence of the retrieved chunks; `evidence` is left empty.

        score = e5 cosine + lexical_weight × term match + rank_weight × passage prior
                + type_weight × holds the asked-for kind of answer
                + person_weight × names someone new (for "who ...?")
                + context_weight × comes from a context passage rather than a hit
                + heading_weight × is a headline, caption or title (no sentence end)
                + language_weight × the embedder's lean to the sentence's language
                  (rag.lang.centroids; the weight is negative, undoing the lean).
        """
        sentences = split_sentences(retrieved)
        terms = analysis.terms if analysis is not None else tuple(content_terms(question, lang))
        qv = self.question_vector(question)
        if not sentences:
            return Selection(question, terms, (), (), (), qv, lang, analysis)
        sv = self.sentence_vectors(sentences)
        dense = sv @ qv
        # A sentence that leans on the one before ("He added that ...") is matched together
        # with it: the name it refers to is there.
        texts = [_with_previous(i, sentences) for i in range(len(sentences))]
        lexical = lexical_scores(terms, texts, [s.language or None for s in sentences])
        # The retriever ranks the right passage first far more often than sentence similarity
        # alone picks the right sentence: its rank is a prior (1 for the first passage).
        # A context passage takes its hit's rank (the best one, when it is near several hits).
        ranks: dict[str, int] = {}
        for r in retrieved:
            for c in r.window:
                ranks[c.id] = min(ranks.get(c.id, r.rank), r.rank)
        depth = max(ranks.values())
        prior = [1.0 - (ranks[s.chunk_id] - 1) / depth for s in sentences]
        # "How many ...?" is answered by a sentence with a number, "when?" by one with a date.
        main = list(analysis.answer_types) if analysis is not None else asked_types(question)[0]
        typed = [sum(satisfies(t, x) for t in main) / len(main) if main else 0.0 for x in texts]
        # "Who ...?" is answered by a sentence that names someone the question does not.
        wants_person = analysis.wants_person if analysis is not None else False
        keys = analysis.question_keys if analysis is not None else frozenset()
        person = [person_score(s.text, keys) if wants_person else 0.0 for s in sentences]
        hits = {r.chunk.id for r in retrieved}
        context = [0.0 if s.chunk_id in hits else 1.0 for s in sentences]
        chunks = {c.id: c for r in retrieved for c in r.window}
        heading = [1.0 if is_heading(s.text) and _starts_line(s, chunks) else 0.0
                   for s in sentences]
        centroids = self.centroids()
        language = (centroids.bias(qv, sentence_languages(sentences, chunks))
                    if centroids is not None else np.zeros(len(sentences)))
        scored = [
            Scored(sentence=s, dense=float(d), lexical=float(x),
                   score=self.combine(float(d), float(x), p, ty, pe, cx, hd, float(lg)),
                   index=i, prior=p, typed=ty, person=pe, context=cx, heading=hd,
                   language=float(lg),
                   relevance=self.combine(float(d), float(x), p, 0.0, 0.0, cx))
            for i, (s, d, x, p, ty, pe, cx, hd, lg) in enumerate(
                zip(sentences, dense, lexical, prior, typed, person, context, heading, language,
                    strict=True))
            if says_something(s.text)
        ]
        ranked = tuple(sorted(scored, key=lambda c: (-c.score, c.index)))
        return Selection(question, terms, ranked, (), tuple(sentences), qv, lang, analysis)

    def combine(self, dense: float, lexical: float, prior: float, typed: float,
                person: float, context: float = 0.0, heading: float = 0.0,
                language: float = 0.0) -> float:
        """The ranking score of one sentence from its signals."""
        return (dense + self.lexical_weight * lexical + self.rank_weight * prior
                + self.type_weight * typed + self.person_weight * person
                + self.context_weight * context + self.heading_weight * heading
                + self.language_weight * language)

    def centroids(self) -> LanguageCentroids | None:
        """The language centroids the score corrects with: the ones given, else the shipped
        ones when they are this embedder's; None when there are none."""
        if not self._centroids_resolved:
            self._centroids = (language_centroids.for_embedder(getattr(self.embedder, "id", None))
                               if self.language_weight else None)
            self._centroids_resolved = True
        return self._centroids

    def select(self, question: str, retrieved: Sequence[Retrieved], k: int = 6,
               lang: str | None = None, analysis: QuestionAnalysis | None = None) -> Selection:
        """Rank, then keep the best `k` sentences (de-duplicated) as numbered evidence."""
        sel = self.rank(question, retrieved, lang, analysis)
        chosen = self._dedupe(sel.ranked, k)
        evidence = tuple(
            as_evidence(n, c, sel.sentences) for n, c in enumerate(chosen, start=1)
        )
        return Selection(sel.question, sel.terms, sel.ranked, evidence, sel.sentences,
                         sel.question_vector, lang, analysis)

    def _dedupe(self, ranked: Sequence[Scored], k: int) -> list[Scored]:
        """The best `k` candidates, skipping one that repeats an already chosen sentence: the
        same text, or (from another article) an e5 passage similarity above the threshold."""
        chosen: list[Scored] = []
        vecs: list[np.ndarray] = []
        seen_text: set[str] = set()
        for c in ranked:
            if len(chosen) == k:
                break
            if not words(c.sentence.text):
                continue
            key = " ".join(words(c.sentence.text))
            # A heading repeated as the start of the body sentence is the same evidence.
            if key in seen_text or any(key in k or k in key for k in seen_text):
                continue
            v = self._sentences.get((c.sentence.chunk_id, c.sentence.start))
            if v is not None and any(
                float(v @ w) >= self.dedupe_similarity and o.sentence.source != c.sentence.source
                for o, w in zip(chosen, vecs, strict=True)
            ):
                logger.debug("dropped near-duplicate %r", c.sentence.text[:60])
                continue
            seen_text.add(key)
            chosen.append(c)
            vecs.append(v if v is not None else np.zeros(1, dtype=np.float32))
        return chosen


def sentence_languages(sentences: Sequence[Sentence],
                       chunks: dict[str, Chunk]) -> list[str | None]:
    """Each sentence's language: its article's, unless it is written in another script than its
    passage (an English quote in a Ukrainian article), when it is unknown."""
    scripts: dict[str, str | None] = {}
    out: list[str | None] = []
    for s in sentences:
        chunk = chunks.get(s.chunk_id)
        if not s.language or chunk is None:
            out.append(s.language or None)
            continue
        if chunk.id not in scripts:
            scripts[chunk.id] = main_script(chunk.text)
        out.append(s.language if main_script(s.text) in (None, scripts[chunk.id]) else None)
    return out


_ASKS = re.compile(r"\?[\"'»«“”„‘’‹›)\]*]*\s*$")


def asks(text: str) -> bool:
    """Whether a sentence is a question (ends with "?", quotes and brackets aside)."""
    return bool(_ASKS.search(text))


def as_evidence(n: int, c: Scored, sentences: Sequence[Sentence]) -> Evidence:
    """Evidence n for candidate c, with the previous sentence of the same passage attached when
    c leans on it (a pronoun start or a fragment)."""
    s = c.sentence
    before = ""
    if needs_context(s) and c.index > 0:
        prev = sentences[c.index - 1]
        # Only a true neighbour: same file, and on the same or the previous line.
        if prev.source == s.source and prev.end <= s.start and s.line_start - prev.line_end <= 1:
            before = prev.text
    return Evidence(n=n, sentence=s, score=c.score, context_before=before)


def _with_previous(i: int, sentences: Sequence[Sentence]) -> str:
    """Sentence i's text, preceded by its neighbour when it leans on it (see `needs_context`)."""
    s = sentences[i]
    if i > 0 and needs_context(s):
        prev = sentences[i - 1]
        if prev.source == s.source and prev.end <= s.start and s.line_start - prev.line_end <= 1:
            return f"{prev.text} {s.text}"
    return s.text


def lexical_scores(terms: Sequence[Term], texts: Sequence[str],
                   langs: Sequence[str | None] | None = None) -> list[float]:
    """Idf-weighted share of `terms` present in each text (0..1).

    The idf is computed over the candidate texts themselves: a term every candidate shares
    ("Brexit" in a corpus about Brexit) tells them apart less than a rare one ("Sunderland"). Terms
    that no candidate contains are left out of the share: they cannot tell candidates apart,
    and counting them would shrink the signal for every cross-language question.
    """
    if not terms or not texts:
        return [0.0] * len(texts)
    langs = list(langs) if langs is not None else [None] * len(texts)
    sets = [term_set(t, lang) for t, lang in zip(texts, langs, strict=True)]
    n = len(sets)
    df = [sum(t.found_in(s) for s in sets) for t in terms]
    weights = [math.log(1 + n / (1 + d)) if d else 0.0 for d in df]
    total = sum(weights) or 1.0
    return [sum(w for t, w in zip(terms, weights, strict=True) if t.found_in(s)) / total
            for s in sets]


def normalized_key(text: str) -> str:
    """Whitespace/case-insensitive form for comparing sentences."""
    return normalize(text)
