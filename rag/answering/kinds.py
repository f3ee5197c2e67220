"""Kinds of answer: what a question asks for ("how many", "when", "how old", "where was X born",
"who") and whether a text holds it (a number, a date, an age, a birth, a person's name). Cues
and closed-class words come from the language packs (rag/lang/); evidence ranking, question
analysis and refusal all use these.
"""

from __future__ import annotations

import re

from rag import lang as lang_packs
from rag.lang import AGE, BIRTH, DATE, MEASURE, MONEY, PERSON, QUANTITY, TIME, YEAR
from rag.lang.terms import stems, tokens
from rag.lang.text import STOPWORDS, normalize, words

__all__ = ["AGE", "BIRTH", "DATE", "MEASURE", "MONEY", "PERSON", "QUANTITY", "TIME", "YEAR",
           "asked_types", "asks_across_articles", "is_calendar_word", "is_number",
           "person_score", "satisfies"]

# Each answer type: the question phrases that ask for it (per-language cues in rag/lang/) and a
# test for text that could answer it. A "how many" question whose evidence holds no number, or a
# "when" question whose evidence names no time, is not answered by it.
# PERSON ("who") is asked for too, but tested by the refusal module (a name near the role).
_TYPES = tuple(t for t in lang_packs.ANSWER_TYPES if t != PERSON)


def _asks(answer_type: str) -> re.Pattern[str] | None:
    if answer_type == BIRTH:
        # "Where/when was X born?": a sentence that answers it says so with a birth word too.
        return lang_packs.pattern("birth_words")
    return lang_packs.pattern(f"type:{answer_type}")


def _alternation(name: str) -> str:
    rx = lang_packs.pattern(name)
    return rx.pattern if rx is not None else "(?!)"


_MONTHS = re.compile(_alternation("months"))
_WEEKDAYS = re.compile(_alternation("weekdays"))
_YEAR = re.compile(r"\b(?:1[89]|20)\d\d\b")
# What answers "in what year": also a historic year (1713). Not used to tell years from counts:
# "1500 families" is a count.
_ANY_YEAR = re.compile(r"\b(?:1\d|20)\d\d\b")
_DAY_MONTH = re.compile(rf"\b\d{{1,2}}\.?\s+{_alternation('months')}|\b\d{{1,2}}\.\d{{1,2}}\.")
_NUMBER_WORDS = re.compile(_alternation("number_words"))
_DIGITS = re.compile(r"\d+(?:[.,]\d+)?")
# Currency signs are the same in every language; currency names are per-language data.
_CURRENCY = re.compile(r"[$€£₽₴]|" + _alternation("currencies"))
_UNITS = re.compile(_alternation("units"))


def asks_across_articles(question: str) -> bool:
    """A question about the articles themselves ("Which articles cite ...?", "Across the
    articles, ...", "У всіх статтях ..."): the answer should quote each article that says it,
    not only the best one. An article word preceded (over function words only) by a question
    word or a word such as "all"/"both"."""
    toks = words(question)
    asks = lang_packs.words("ask_words") | lang_packs.words("all_words")
    for i, w in enumerate(toks):
        if not lang_packs.matches("article_words", w):
            continue
        j = i - 1
        while j >= 0 and i - j <= 3:
            if toks[j] in asks:
                return True
            if toks[j] not in STOPWORDS:
                break
            j -= 1
    return False


# Where a second question starts: ", and how many ...", " и какво ...", " i kada ...", " і що ...".
_SECOND_ASK = re.compile(
    r",?\s+" + _alternation("conjunctions") + r"\s+(?=" + _alternation("ask_words") + ")")


def asked_types(question: str) -> tuple[list[str], list[str]]:
    """(main, all): the answer types the question asks for. `main` are those asked before any
    second question ("Who ..., and how many ...?" asks mainly for a person); the first-asked
    comes first."""
    q = normalize(question)
    cut = m.start() if (m := _SECOND_ASK.search(q)) else len(q)
    found = sorted((at, t) for t in _TYPES if (at := _asked_at(t, q)) is not None)
    return [t for at, t in found if at < cut], [t for _, t in found]


def _asked_at(answer_type: str, q: str) -> int | None:
    """Where in the normalised question `answer_type` is asked (None: it is not). A birth word
    after a hyphen describes someone ("his German-born wife"); it does not ask where or when
    anyone was born."""
    rx = _asks(answer_type)
    if rx is None:
        return None
    for m in rx.finditer(q):
        if not (answer_type == BIRTH and m.start() > 0 and q[m.start() - 1] in "-‑–"):
            return m.start()
    return None


def is_calendar_word(word: str) -> bool:
    """A month or weekday name (capitalised in English, but not a name to look for)."""
    return bool(_MONTHS.fullmatch(word) or _WEEKDAYS.fullmatch(word))


def is_number(word: str) -> bool:
    """A number written in digits or words ("30", "два", "million")."""
    return bool(_DIGITS.fullmatch(word) or _NUMBER_WORDS.fullmatch(word))


def in_a_name(text: str, start: int) -> bool:
    """Whether the digits at `start` belong to a name written with them ("Covid-19",
    "SARS-CoV-2", "G7", "F-16"): a letter stands right before them, or a hyphen after one."""
    before = text[start - 1] if start > 0 else ""
    return before.isalpha() or (before in "-‑" and start > 1 and text[start - 2].isalpha())


def _quantities(text: str) -> bool:
    t = normalize(text)
    dates = {m.start() for m in _DAY_MONTH.finditer(t)}
    for m in _DIGITS.finditer(t):
        if _YEAR.fullmatch(m.group()) or m.start() in dates or in_a_name(t, m.start()):
            continue  # a year, a day of a month or a name ("Covid-19") counts no things
        return True
    return bool(_NUMBER_WORDS.search(t))


# A person's age: a number next to a word for years or age ("55-year-old", "на 55 години",
# "55-річний", "aged 55", "w wieku 55 lat"), or a year next to a word for birth ("born in 1966").
# A year next to "years" is only a date ("2017. godine").
_AGE_SPAN = 2
_SMALL_NUMBER = re.compile(r"\d{1,3}")


def _age(text: str) -> bool:
    toks = words(normalize(text))

    def near(i: int, ok) -> bool:
        return any(ok(toks[j]) for j in range(max(0, i - _AGE_SPAN),
                                              min(len(toks), i + _AGE_SPAN + 1)) if j != i)

    def count(w: str) -> bool:
        return bool(_SMALL_NUMBER.fullmatch(w) or _NUMBER_WORDS.fullmatch(w))

    return any(
        (lang_packs.matches("age_words", w) and near(i, count))
        or (lang_packs.matches("birth_words", w) and near(i, _YEAR.fullmatch))
        for i, w in enumerate(toks))


def satisfies(answer_type: str, text: str) -> bool:
    """Whether `text` holds the kind of thing `answer_type` asks for."""
    t = normalize(text)
    if answer_type == QUANTITY:
        return _quantities(text)
    if answer_type == MONEY:
        return bool(_CURRENCY.search(t)) and bool(_DIGITS.search(t) or _NUMBER_WORDS.search(t))
    if answer_type == MEASURE:
        return bool(_UNITS.search(t)) and bool(_DIGITS.search(t) or _NUMBER_WORDS.search(t))
    if answer_type == DATE:
        return bool(_DAY_MONTH.search(t))
    if answer_type == YEAR:
        return bool(_ANY_YEAR.search(t))
    if answer_type == TIME:
        return bool(_MONTHS.search(t) or _YEAR.search(t) or _WEEKDAYS.search(t))
    if answer_type == AGE:
        return _age(text)
    if answer_type == BIRTH:
        rx = _asks(BIRTH)
        return bool(rx and rx.search(t))
    return True


def person_score(text: str, question_keys: frozenset[str]) -> float:
    """How surely `text` names a person the question does not: 1.0 for a run of capitalised words
    (first name and surname, in any script) with a word the question lacks, 0.5 for a lone
    capitalised word the question lacks (not the sentence's first), else 0. Acronyms, months
    and function words are not names. An answer to "who ...?" names someone new; a sentence that
    only restates the question's names does not answer it."""
    toks = tokens(text)
    caps = {i for i, t in enumerate(toks)
            if t.text[:1].isupper() and len(t.norm) >= 2 and not t.text.isupper()
            and t.norm not in STOPWORDS and not is_calendar_word(t.norm)}
    new = [i for i in caps if question_keys.isdisjoint(stems(toks[i].norm))]
    if any(i + 1 in caps or i - 1 in caps for i in new):
        return 1.0
    return 0.5 if any(i > 0 for i in new) else 0.0
