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
    QUANTITY,
    Selection,
    asked_types,
    is_calendar_word,
    is_number,
    satisfies,
)
from .prompts import LANGUAGES, phrase
from .terms import (
    QUESTION_WORDS,
    STOPWORDS,
    Term,
    Token,
    concept_key,
    concepts_in,
    content_terms,
    fold,
    lexicon,
    name_keys,
    name_token_keys,
    spelling_keys,
    spelling_terms,
    stems,
    term_set,
    tokens,
    unify,
)
from .text import normalize, sentence_spans, words
from .types import Citation, Evidence, Sentence

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


# A marker together with the spaces before it: removing only the marker would leave "Korea ."
# or 'Korea ".' behind.
_SPACED_MARKER = re.compile(r"[ \t\u00a0]*" + MARKER.pattern)


def strip_markers(text: str) -> str:
    """The text without citation markers and without the spaces that stood before them."""
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", _SPACED_MARKER.sub("", text)).strip()


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
    terms = list(claim_terms) if claim_terms is not None else spelling_terms(claim)
    text = _evidence_text(ev)
    # Spelling only, as the thresholds were set: a lexicon match across languages ("Russia" =
    # "Русия") would make any claim about the same countries look supported.
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


# --------------------------------------------------------------------------------------------
# Refusal decision for extractive answers
# --------------------------------------------------------------------------------------------

# An off-topic question ("How do I bake bread?") still retrieves something; its best sentence
# then scores low and few of its terms occur in the passages. On the seed questions every
# answerable one has a best sentence above 0.80 (e5-small cosine).
OFF_TOPIC_DENSE = 0.80
OFF_TOPIC_COVERAGE = 0.5


@dataclass(frozen=True)
class RefusalDecision:
    refuse: bool
    reasons: tuple[str, ...]  # why (for logs and the benchmark), empty when answering
    # Evidence (1-based n) that holds the asked-for kind of answer, to show first.
    typed_evidence: tuple[int, ...] = ()
    coverage: float = 0.0  # share of the question's terms found in the retrieved passages
    # Evidence (1-based n) where an asked-about role appears with its country/organisation.
    role_evidence: tuple[int, ...] = ()


# --- what the question asks about -------------------------------------------------------------

# Concept kinds that name something: a question about an entity the articles never mention
# ("Xi Jinping", "Japan") is not answered by them, however similar its wording.
_NAMED_KINDS = frozenset({"place", "org", "media"})
# What qualifies a role ("Russia's ambassador to the UN", "foreign minister"): the role holder
# asked about is only there when role and qualifiers appear together.
_QUALIFYING_KINDS = frozenset({"place", "org", "media", "qualifier"})
# How far (in content terms) a qualifier may stand from its role in the question, and (in
# tokens) a name from the role in a sentence ("Јона Леф, извршен директор", "директорът на ...
# служба Ким Кьоу-Хюн").
_ROLE_SPAN = 3
_NAME_SPAN = 6
# How far (in tokens) the number may stand from the counted thing ("5 милиона артилерийски
# снаряда", "два или три пъти").
_COUNT_SPAN = 3

# Questions that ask for a person: "who", "which minister", "what is the name of".
_PERSON_ASK = re.compile(
    r"\b(?:who|whom|whose|name|named|кой|коя|кого|кој|која|ko|koga|koji|koja|хто|кого|ім'я|"
    r"име|името|ime|imena)\b|как се казва|како се вика|kako se zove|як звати|як звуть")
# The word after which a "how many" question names the counted thing.
_COUNT_WORDS = frozenset({"many", "much", "колко", "колку", "koliko", "koliki", "kolika",
                          "koliku", "скільки"})
# A new clause starts at punctuation or at "and"/"и"/"i" before a question word.
_CLAUSE_PUNCT = re.compile(r"[,;:?!.()–—]")
_CONJUNCTIONS = frozenset({"and", "и", "і", "i", "та", "а", "але", "but", "ali", "но"})
_ASK_WORD_TEXT = """how what when who whom which where why какво какви кога колко кой коя кои
къде што колку кој која каде šta sta kada koliko ko koji koja gde što що коли скільки хто який
яка які де"""
_ASK_WORDS = frozenset(_ASK_WORD_TEXT.split())
_ARTICLE = re.compile(r"^(?:articl|стат[иіт]|člank|članak|članc|напис)")


@dataclass(frozen=True)
class _Name:
    text: str
    keys: frozenset[str]


@dataclass(frozen=True)
class _RoleAsk:
    role: str  # concept id ("ambassador")
    qualifiers: frozenset[str]  # concepts that must appear with it ("russia", "un")
    wants_name: bool  # the question asks who holds it


@dataclass(frozen=True)
class _Ask:
    names: tuple[_Name, ...]
    roles: tuple[_RoleAsk, ...]
    counted: tuple[Term, ...]  # the thing a "how many" question counts
    actions: frozenset[str]  # action concepts of the main ask ("arrive", "pay")
    question_keys: frozenset[str]  # every key of the question's own words


def _clauses(text: str, toks: Sequence[Token]) -> list[int]:
    """Clause number of every token."""
    out: list[int] = []
    clause = 0
    for i, t in enumerate(toks):
        if i:
            gap = text[toks[i - 1].start + len(toks[i - 1].text):t.start]
            second_ask = (t.norm in _CONJUNCTIONS and i + 1 < len(toks)
                          and toks[i + 1].norm in _ASK_WORDS)
            if _CLAUSE_PUNCT.search(gap) or second_ask:
                clause += 1
        out.append(clause)
    return out


def _sentence_starts(text: str, toks: Sequence[Token]) -> set[int]:
    starts = {0}
    for i in range(1, len(toks)):
        gap = text[toks[i - 1].start + len(toks[i - 1].text):toks[i].start]
        if re.search(r"[.!?…:\n]", gap):
            starts.add(i)
    return starts


def analyse_question(question: str, lang: str | None) -> _Ask:
    """Names, roles, counted thing and actions of a question (see `extractive_refusal`)."""
    text = unify(question)
    toks = tokens(question)
    lex = lexicon()
    matches = lex.find(toks, lang)
    in_concept = {i: m for m in matches for i in range(m.start, m.end)}
    clause = _clauses(text, toks)
    starts = _sentence_starts(text, toks)
    terms = content_terms(question, lang, unique=False)  # every mention, at its position

    # Names: named-entity concepts, and runs of other capitalised words (not a sentence's first
    # word, not a stopword, month or weekday).
    names: list[_Name] = []
    for m in matches:
        # "the Serbian article" names the source, not something the articles must mention.
        source = m.end < len(toks) and _ARTICLE.match(toks[m.end].norm)
        if lex.kind(m.concept) in _NAMED_KINDS and not source:
            names.append(_Name(" ".join(t.text for t in toks[m.start:m.end]),
                               frozenset({concept_key(m.concept)})))
    run: list[Token] = []
    for i, t in enumerate([*toks, None]):
        capital = (t is not None and i not in in_concept and i not in starts
                   and t.text[:1].isupper() and t.norm not in STOPWORDS
                   and t.norm not in QUESTION_WORDS and not is_calendar_word(t.norm))
        if capital:
            run.append(t)
            continue
        useful = [r for r in run if len(r.norm) >= 3 or r.text.isupper()]
        if useful:
            names.append(_Name(" ".join(r.text for r in run),
                               frozenset().union(*(name_token_keys(r.norm) for r in useful))))
        run = []

    # Roles and their qualifiers, within one clause and a few content terms of each other.
    wants_person = bool(_PERSON_ASK.search(normalize(question)))
    term_clause = [clause[t.position] if t.position < len(clause) else 0 for t in terms]
    roles: list[_RoleAsk] = []
    for i, t in enumerate(terms):
        if t.kind != "role" or t.concept is None:
            continue
        quals = frozenset(
            o.concept for j, o in enumerate(terms)
            if o.concept and o.kind in _QUALIFYING_KINDS and term_clause[j] == term_clause[i]
            and 0 < abs(j - i) <= _ROLE_SPAN)
        roles.append(_RoleAsk(t.concept, quals, wants_person))

    # The counted thing: the first two content terms after "how many", in the same clause.
    counted: list[Term] = []
    trigger = next((i for i, t in enumerate(toks) if t.norm in _COUNT_WORDS), None)
    main_clause = clause[trigger] if trigger is not None else 0
    if trigger is not None:
        counted = [t for t, c in zip(terms, term_clause, strict=True)
                   if t.position > trigger and c == main_clause][:2]
    actions = frozenset(t.concept for t, c in zip(terms, term_clause, strict=True)
                        if t.kind == "action" and t.concept and c == main_clause)
    qkeys = frozenset().union(*(t.keys for t in terms)) if terms else frozenset()
    return _Ask(tuple(names), tuple(roles), tuple(counted), actions, qkeys)


# --- checks against the evidence --------------------------------------------------------------


def _mentions(term: Term, toks: Sequence[Token], matches: Sequence) -> list[int]:
    """Token indices where `term` occurs in a sentence."""
    if term.concept is not None:
        hits = [i for m in matches if m.concept == term.concept for i in range(m.start, m.end)]
        if hits:
            return hits
    return [i for i, t in enumerate(toks) if not term.keys.isdisjoint(stems(t.norm))]


def _counted_near_number(ask: _Ask, text: str, lang: str | None) -> bool:
    """Whether a number in `text` counts the thing asked about: every counted term is in the
    text and one of them stands within a few tokens of a number."""
    if not ask.counted:
        return True
    toks = tokens(text)
    matches = lexicon().find(toks, lang)
    numbers = [i for i, t in enumerate(toks) if is_number(t.norm)]
    near = False
    for term in ask.counted:
        where = _mentions(term, toks, matches)
        if not where:
            return False
        near = near or any(abs(i - n) <= _COUNT_SPAN for i in where for n in numbers)
    return near


def _answers_type(answer_type: str, ev: Evidence, ask: _Ask) -> bool:
    """Evidence answers the asked kind when it holds that kind (a number, a date, ...), the
    question's actions ("arrive", "pay") are in it, and for "how many" the number counts the
    thing asked about."""
    text = _evidence_text(ev)
    if not satisfies(answer_type, text):
        return False
    lang = ev.sentence.language or None
    if not ask.actions <= concepts_in(text, lang):
        return False
    if answer_type == QUANTITY:
        # The number must be in the sentence itself, next to the counted thing.
        return _counted_near_number(ask, ev.sentence.text, lang)
    return True


def _named_near_role(text: str, lang: str | None, role: str,
                     question_keys: frozenset[str]) -> bool:
    """Whether a person's name stands near a mention of `role` in one sentence: a capitalised
    word that is not the sentence's first, not a lexicon concept and not a word of the
    question."""
    toks = tokens(text)
    matches = lexicon().find(toks, lang)
    in_concept = {i for m in matches for i in range(m.start, m.end)}
    positions = [m.start for m in matches if m.concept == role]
    for p in positions:
        for i in range(max(0, p - _NAME_SPAN), min(len(toks), p + _NAME_SPAN + 1)):
            t = toks[i]
            if (i == 0 or i in in_concept or not t.text[:1].isupper() or t.norm in STOPWORDS
                    or is_calendar_word(t.norm) or not question_keys.isdisjoint(stems(t.norm))):
                continue
            return True
    return False


def _role_present(req: _RoleAsk, sentence: Sentence, ask: _Ask) -> bool:
    lang = sentence.language or None
    have = concepts_in(sentence.text, lang)
    if req.role not in have or not req.qualifiers <= have:
        return False
    return not req.wants_name or _named_near_role(sentence.text, lang, req.role,
                                                  ask.question_keys)


def term_coverage(selection: Selection) -> float:
    """Share of the question's content terms present (by spelling key or lexicon concept) in
    the retrieved passages."""
    if not selection.terms:
        return 1.0
    have: set[str] = set()
    for c in selection.ranked:
        have |= term_set(c.sentence.text, c.sentence.language or None)
    return sum(t.found_in(have) for t in selection.terms) / len(selection.terms)


def extractive_refusal(selection: Selection) -> RefusalDecision:
    """Decide whether the selected evidence answers the question (no LLM involved).

    A plain similarity cut-off cannot tell "on topic" from "answers it" (an off-topic question
    scored 0.763, an answerable one 0.774), so the decision checks that what the question asks
    about is covered by the evidence, across languages (names by spelling, common news terms
    by the lexicon in rag/data/lexicon.json):
    1. names: every name and named entity of the question (people, countries, organisations)
       occurs in the retrieved passages;
    2. roles: an asked-about role appears in one sentence together with the country,
       organisation or qualifier the question attaches to it ("Russia's ambassador to the UN",
       "foreign minister"), and with a person's name next to it when the question asks who;
    3. the kind of answer asked first ("how many", "when", "what date", "how much did it cost",
       "what range") is in one of the evidence sentences, together with the question's actions
       ("arrive", "pay"); for "how many" the number stands next to the thing counted;
    4. a question whose best sentence scores low AND whose terms mostly do not occur in the
       retrieved passages is off-topic.
    Word-level e5 similarity was tried for covering terms across languages and rejected: single
    words score 0.82-0.86 against anything ("banana" 0.856 against this news corpus).
    """
    if not selection.evidence:
        return RefusalDecision(True, ("no evidence",))
    reasons: list[str] = []
    ask = analyse_question(selection.question, selection.lang)

    have: set[str] = set()
    for c in selection.ranked:
        have |= name_keys(c.sentence.text, c.sentence.language or None)
    for name in ask.names:
        if name.keys.isdisjoint(have):
            reasons.append(f"{name.text!r} is not in the articles")

    role_hits: list[int] = []
    for req in ask.roles:
        if not any(_role_present(req, c.sentence, ask) for c in selection.ranked):
            what = " + ".join([req.role, *sorted(req.qualifiers)])
            reasons.append(f"no sentence with {what}" + (" and a name" if req.wants_name else ""))
        role_hits += [ev.n for ev in selection.evidence if _role_present(req, ev.sentence, ask)]

    main, _ = asked_types(selection.question)
    typed: list[int] = []
    for t in main:
        hits = [ev.n for ev in selection.evidence if _answers_type(t, ev, ask)]
        if not hits:
            reasons.append(f"no {t} in the evidence")
        typed.extend(h for h in hits if h not in typed)

    coverage = term_coverage(selection)
    best = max(c.dense for c in selection.ranked)
    if best < OFF_TOPIC_DENSE and coverage < OFF_TOPIC_COVERAGE:
        reasons.append(f"off-topic (best sentence {best:.3f}, term coverage {coverage:.2f})")
    return RefusalDecision(bool(reasons), tuple(reasons), tuple(typed), coverage,
                           tuple(dict.fromkeys(role_hits)))


def fold_text(text: str) -> str:
    """Script-independent form of a text (for tests and debugging)."""
    return " ".join(fold(w) for w in words(text))
