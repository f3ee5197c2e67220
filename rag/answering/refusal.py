"""Refusal by evidence: does the selected evidence answer the question? (No LLM involved.)

Two checks are hard, because no score can outweigh them:
1. **names**: every name of several words the question asks about ("Li Keqiang", "Steve
   Bannon") has its head word (the surname) in the retrieved passages, in any script (spelling
   keys and consonant skeletons, `rag.lang.terms`), or every word of one of its dictionary
   translations ("United Kingdom" / "Обединеното кралство", `rag.lang.dictionary`), or, when
   enabled, a capitalised word there whose multilingual e5 vector is close to its own
   (`NameMatcher`; measured: it matches wrong names as often as right ones, so it is off unless
   `name_similarity` <= 1). A missing one-word
   name (often an exonym or adjective: Germany/Німеччина) is a feature of the score instead;
2. **the kind of answer**: the kind asked first ("how many", "when", "what date", "how much did
   it cost", "what range", "who") is held by an evidence sentence: a number (next to the counted
   thing when that is spelled alike), a date, a year, a currency amount, a measure with its unit,
   an age, a birth ("where was X born?"), a person's name that is not in the question.

The rest is one calibrated score: a small logistic model on a few features of the retrieval and
the evidence (best e5 similarity, term coverage, lexical match), fitted on training topics by
`benchmarks/fit_refusal.py`; its coefficients, threshold and the command that fitted them are in
rag/data/refusal.json.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.answering.evidence import Selection
from rag.answering.kinds import QUANTITY, in_a_name, is_calendar_word, is_number, satisfies
from rag.answering.question import QuestionAnalysis
from rag.embed import Embedder
from rag.lang import PERSON
from rag.lang.terms import STOPWORDS, Term, fold, name_keys, stems, term_set, tokens, unify
from rag.types import Evidence

logger = logging.getLogger(__name__)

MODEL_FILE = Path(__file__).resolve().parent.parent / "data" / "refusal.json"
FEATURES = ("best_dense", "coverage", "best_lexical", "missing_words")
# The kind-of-answer check reads the evidence among this many most relevant sentences (as many as
# the evidence a prompt gets), unless the model file says otherwise (its `relevant_depth`,
# fitted by benchmarks/fit_refusal.py).
RELEVANT_DEPTH = 6


@dataclass(frozen=True)
class RefusalModel:
    """P(answerable) = sigmoid(bias + sum(weight_i * feature_i)); refuse below `threshold`.

    The features include e5 cosines, whose scale belongs to one embedding model: the score is
    used only with the embedder it was fitted for (`embedder`); with another one only the hard
    checks decide (and a warning says to refit)."""

    weights: tuple[float, ...]
    bias: float
    threshold: float
    name_similarity: float  # e5 cosine of two spellings of one name (word vs word)
    count_span: int  # tokens between a number and the thing it counts
    fitted: str = ""  # how the numbers were obtained (command and data)
    embedder: str = ""  # id of the embedder the score was fitted with
    # How many of the most relevant sentences the kind-of-answer check reads the evidence among.
    relevant_depth: int = RELEVANT_DEPTH

    def applies_to(self, embedder_id: str | None) -> bool:
        return not self.embedder or embedder_id is None or embedder_id == self.embedder

    def probability(self, features: Sequence[float]) -> float:
        z = self.bias + sum(w * x for w, x in zip(self.weights, features, strict=True))
        return 1.0 / (1.0 + math.exp(-z))


def load_model(path: Path = MODEL_FILE) -> RefusalModel:
    data = json.loads(path.read_text(encoding="utf-8"))
    if tuple(data.get("features", ())) != FEATURES:
        raise ValueError(f"{path}: features must be {FEATURES}, got {data.get('features')}")
    depth = int(data.get("relevant_depth", RELEVANT_DEPTH))
    if depth < 1:
        raise ValueError(f"{path}: relevant_depth must be at least 1, got {depth}; refit it "
                         "with python benchmarks/fit_refusal.py --depths 4,6,8,10,12 --write")
    return RefusalModel(tuple(float(w) for w in data["weights"]), float(data["bias"]),
                        float(data["threshold"]), float(data["name_similarity"]),
                        int(data["count_span"]), str(data.get("fitted", "")),
                        str(data.get("embedder", "")), depth)


@functools.cache
def default_model() -> RefusalModel:
    return load_model()


@dataclass(frozen=True)
class RefusalDecision:
    refuse: bool
    reasons: tuple[str, ...]  # why (for logs and the benchmark), empty when answering
    # Evidence (1-based n) that holds the asked-for kind of answer, to show first.
    typed_evidence: tuple[int, ...] = ()
    coverage: float = 0.0  # share of the question's terms found in the retrieved passages
    probability: float = 1.0  # the calibrated P(answerable)
    features: tuple[float, ...] = ()


class NameMatcher:
    """Whether a name of the question is in a text under another spelling (Japan/Япония,
    Germany/Німеччина): the e5 vector of the name against those of the text's capitalised
    words. Word vectors are cached (the same passages come back for many questions)."""

    def __init__(self, embedder: Embedder, cache_size: int = 50_000):
        self.embedder = embedder
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()

    def vectors(self, items: Sequence[str]) -> np.ndarray:
        with self._lock:
            missing = [w for w in dict.fromkeys(items) if w not in self._cache]
        if missing:
            new = self.embedder.embed_passages(missing)
            with self._lock:
                for w, v in zip(missing, new, strict=True):
                    self._cache[w] = v
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        with self._lock:
            return np.vstack([self._cache[w] for w in items])

    def best(self, name: str, candidates: Sequence[str]) -> float:
        """Highest cosine of `name` with any candidate word (0 without candidates)."""
        if not candidates:
            return 0.0
        vecs = self.vectors([name, *candidates])
        return float((vecs[1:] @ vecs[0]).max())


def _capitalised(text: str) -> list[str]:
    """Capitalised words of a text that could be names (not the first word, not function words
    or months), as written."""
    toks = tokens(text)
    return [t.text for i, t in enumerate(toks)
            if i and t.text[:1].isupper() and len(t.norm) >= 2 and t.norm not in STOPWORDS
            and not is_calendar_word(t.norm)]


def _evidence_text(ev: Evidence) -> str:
    return " ".join(p for p in (ev.context_before, ev.sentence.text, ev.context_after) if p)


def _counted_near_number(counted: Sequence[Term], text: str, span: int,
                         same_language: bool = False) -> bool:
    """A number in `text` that counts the thing asked about: when a counted term is spelled
    alike in the text, a number must stand within `span` tokens of it; when none is, any number
    in digits that is not a year or a date will do (the counted word may be translated, or said
    with another word), unless `same_language` asks for the counted word itself ("how many
    votes" is then not answered by "100 senators")."""
    toks = tokens(text)
    unified = unify(text)
    numbers = [i for i, t in enumerate(toks)
               if is_number(t.norm) and not in_a_name(unified, t.start)]
    if not numbers:
        return False
    # Four folded letters: the inflections of one noun (танків/танкове, tanks) meet. A
    # dictionary translation is a dictionary form, so it must begin the word (танк/танкове):
    # four letters of one of its many senses would meet unrelated words.
    heads = {k[:4] for term in counted for k in term.keys - term.translated
             if not k.startswith("~")}
    forms = tuple({k for term in counted for k in term.translated if len(k) >= 4})
    where = [i for i, t in enumerate(toks)
             if any(k[:4] in heads for k in stems(t.norm)) or fold(t.norm).startswith(forms)]
    if not where:
        # The counted thing is written in another language or with another word: only a
        # number in digits counts ("одна з країн", "one of the countries" count nothing).
        return not (same_language and counted) and any(toks[i].norm[:1].isdigit()
                                                       for i in numbers)
    return any(abs(i - n) <= span for i in where for n in numbers)


def _has_person(text: str, question_keys: frozenset[str]) -> bool:
    """A capitalised word that is not the sentence's first, a function word, a month, or a word
    of the question: a name the answer gives."""
    return any(question_keys.isdisjoint(stems(w.casefold())) for w in _capitalised(text))


def _mentions_a_name(text: str, analysis: QuestionAnalysis) -> bool:
    """Whether `text` names one of the question's names (any word of it, any spelling, or one
    of its translations: China/Китай); true for a question without names."""
    if not analysis.names:
        return True
    keys = name_keys(text) | term_set(text)
    return any(not n.keys.isdisjoint(keys) or n.translated_in(keys) for n in analysis.names)


def answers_type(answer_type: str, ev: Evidence, analysis: QuestionAnalysis,
                 count_span: int, passage: str = "") -> bool:
    """Whether evidence holds the asked-for kind of answer, in an article (`passage`: its
    retrieved text) about one of the question's names ("How many votes did McGinty get?" is
    not answered by another candidate's number; "he said two or three times" is, when the
    article names him)."""
    text = _evidence_text(ev)
    if not _mentions_a_name(f"{passage} {text}", analysis):
        return False
    if answer_type == PERSON:
        return _has_person(ev.sentence.text, analysis.question_keys)
    if not satisfies(answer_type, text):
        return False
    if answer_type == QUANTITY:
        return _counted_near_number(analysis.counted, ev.sentence.text, count_span)
    return True


def term_coverage(selection: Selection, terms: Sequence[Term]) -> float:
    """Share of the question's content terms present (by spelling key) in the retrieved
    passages."""
    if not terms:
        return 1.0
    have: set[str] = set()
    for c in selection.ranked:
        have |= term_set(c.sentence.text, c.sentence.language or None)
    return sum(t.found_in(have) for t in terms) / len(terms)


def features(selection: Selection, analysis: QuestionAnalysis,
             missing_words: int = 0) -> tuple[float, ...]:
    """(best e5 sentence similarity, share of question terms in the passages, best lexical
    match among the top evidence, one-word names of the question no passage has)."""
    best_dense = max((c.dense for c in selection.ranked), default=0.0)
    best_lexical = max((c.lexical for c in selection.ranked[:6]), default=0.0)
    return (best_dense, term_coverage(selection, analysis.terms), best_lexical,
            float(missing_words))


def _passage_keys(selection: Selection) -> set[str]:
    """Spelling keys of every word of the retrieved passages, and the consonant keys of their
    capitalised words (a name may be written in lower case as an adjective: Republican /
    републиканската)."""
    have: set[str] = set()
    for c in selection.ranked:
        lang = c.sentence.language or None
        have |= name_keys(c.sentence.text, lang) | term_set(c.sentence.text, lang)
    return have


def missing_names(selection: Selection, analysis: QuestionAnalysis,
                  matcher: NameMatcher | None, similarity: float) -> list[str]:
    """The question's names whose head word (the surname, the last word of the run) no retrieved
    passage has in any spelling, nor every word of one of their dictionary translations:
    "Антоніу Гутерреш" is not there because "Антоніу" is; "United Kingdom" is, as "Обединеното
    кралство"."""
    have = _passage_keys(selection)
    missing = [n for n in analysis.names
               if (n.head or n.keys).isdisjoint(have) and not n.translated_in(have)]
    if not missing or matcher is None or similarity > 1.0:
        return [n.text for n in missing]
    candidates = list(dict.fromkeys(w for c in selection.ranked
                                    for w in _capitalised(c.sentence.text)))
    out = []
    for n in missing:
        score = matcher.best(n.words[-1] if n.words else n.text, candidates)
        if score < similarity:
            out.append(n.text)
        else:
            logger.debug("name %r matched by e5 (%.3f)", n.text, score)
    return out


@functools.cache
def _warn_other_embedder(model: RefusalModel, embedder_id: str | None) -> None:
    logger.warning("the refusal score in %s was fitted with %s, not %s: only the name and "
                   "answer-type checks refuse; refit it with benchmarks/fit_refusal.py",
                   MODEL_FILE, model.embedder, embedder_id)


def decide(selection: Selection, analysis: QuestionAnalysis, *,
           model: RefusalModel | None = None,
           matcher: NameMatcher | None = None, embedder_id: str | None = None) -> RefusalDecision:
    """Whether the selected evidence answers the question (see the module docstring).
    `embedder_id` is the id of the embedder behind the selection's similarities: the score
    applies only to the one it was fitted with."""
    model = model or default_model()
    if not selection.evidence:
        return RefusalDecision(True, ("no evidence",), probability=0.0)
    # A name of several words ("Steve Bannon") whose head no passage has is not in the articles:
    # refuse. A one-word name may be an exonym or an adjective spelled differently in every
    # language (Germany/Німеччина, Chinese/китайски), and so may a name made of common words
    # (Red Sea/Червоне море): those only weigh in the score.
    missing = missing_names(selection, analysis, matcher, model.name_similarity)
    multi = {n.text for n in analysis.names if n.size > 1 and not n.common}
    reasons = [f"{n!r} is not in the articles" for n in missing if n in multi]

    wanted = list(analysis.answer_types)
    if analysis.wants_person and not wanted:
        wanted = [PERSON]
    # What each article says in the retrieved passages: the asked-about name may stand in
    # another sentence of the article than the one with the number ("Той добави ...").
    articles: dict[str, list[str]] = {}
    for sent in selection.sentences:
        articles.setdefault(sent.source, []).append(sent.text)
    # Evidence among the most relevant sentences (the ranking without its bonus for holding the
    # asked kind of answer, which would otherwise pull any number into the evidence of "how
    # many ...?" and so answer every such question).
    relevant = {(c.sentence.source, c.sentence.start)
                for c in sorted(selection.ranked,
                                key=lambda c: -c.relevance)[:model.relevant_depth]}
    typed: list[int] = []
    for t in wanted:
        hits = [ev for ev in selection.evidence
                if (ev.sentence.source, ev.sentence.start) in relevant
                and answers_type(t, ev, analysis, model.count_span,
                                 " ".join(articles.get(ev.sentence.source, ())))]
        if not hits:
            reasons.append(f"no {t} in the evidence")
        # Quoted first: a sentence that counts the very thing asked, when one does. The check
        # above stays lenient: the same thing may be counted under another word ("people
        # killed" / "20 civilians").
        exact = [ev for ev in hits
                 if _counted_near_number(analysis.counted, ev.sentence.text, model.count_span,
                                         same_language=ev.sentence.language == analysis.language)
                 ] if t == QUANTITY else hits
        typed.extend(ev.n for ev in (exact or hits) if ev.n not in typed)

    feats = features(selection, analysis, sum(n not in multi for n in missing))
    p = model.probability(feats)
    if not model.applies_to(embedder_id):
        _warn_other_embedder(model, embedder_id)
    elif p < model.threshold:
        reasons.append(f"low score (P(answerable) {p:.2f}; best sentence {feats[0]:.3f}, "
                       f"term coverage {feats[1]:.2f}, lexical {feats[2]:.2f})")
    return RefusalDecision(bool(reasons), tuple(reasons), tuple(typed), feats[1], p, feats)
