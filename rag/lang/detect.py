"""Language identification (lingua) for articles and questions, over the languages we know.

The candidate languages come from the language packs (`rag.lang`): each pack names the lingua
language(s) it stands for. Serbian, Croatian and Bosnian share one standard language; lingua's
Serbian model knows the Cyrillic script only, so Serbian-Latin text comes back as Croatian or
Bosnian: the Serbian pack lists all three, and the raw guess is kept next to the code.

A question is short, so the closed set matters: it is identified among the languages answers
are given in plus the languages of the indexed articles (`detect_question`), never among every
language lingua knows; and a function or question word that only one of those languages has
("кой", "кој", "хто") adds to lingua's letter statistics. Between a language answers
are given in and an article-only language (Bulgarian and Russian share most short words), the
former wins unless lingua is clearly surer of the latter.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable

from rag import lang as lang_packs

logger = logging.getLogger(__name__)

# An article may be in a language we have no pack for; these are told apart from ours so that
# such an article is not labelled as one of them.
_ARTICLE_EXTRA = ("GERMAN", "FRENCH", "SPANISH", "ITALIAN", "SLOVAK")
# How much surer (lingua confidence, 0..1) an article-only language must be than the best
# language answers are given in, for a question to be taken as written in it.
QUESTION_OTHER_MARGIN = 0.5
# What one closed-class word that only one candidate language has adds to lingua's confidence.
DISTINCTIVE_WEIGHT = 0.5


# Display names of article languages: every pack's, plus those articles may be in without one.
NAMES: dict[str, str] = {
    **{"de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "sk": "Slovak"},
    **{code: p.name for code, p in lang_packs.packs().items()},
}


def _lingua_to_code() -> dict[str, str]:
    return {ln: p.code for p in lang_packs.packs().values() for ln in p.lingua}


@functools.cache
def _detector(names: tuple[str, ...]):
    from lingua import Language, LanguageDetectorBuilder

    langs = [getattr(Language, n) for n in names if hasattr(Language, n)]
    return LanguageDetectorBuilder.from_languages(*langs).build()


def _lingua_names(codes: Iterable[str]) -> tuple[str, ...]:
    out = []
    for c in codes:
        p = lang_packs.pack(c)
        if p is not None:
            out.extend(p.lingua)
    return tuple(sorted(set(out)))


def detect(text: str, default: str = "en") -> tuple[str, str]:
    """(language code, raw lingua guess) of an article text, among every pack's languages and a
    few others; `default` when undecidable."""
    if not text or not text.strip():
        return default, ""
    names = tuple(sorted(set(_lingua_names(lang_packs.KNOWN_LANGUAGES)) | set(_ARTICLE_EXTRA)))
    found = _detector(names).detect_language_of(text)
    if found is None:
        return default, ""
    raw = found.iso_code_639_1.name.lower()
    return _lingua_to_code().get(found.name, raw), raw


@functools.cache
def _closed_words(code: str) -> frozenset[str]:
    """The closed-class words of one language (function, question and ask words)."""
    return (lang_packs.words("stopwords", code) | lang_packs.words("question_words", code)
            | lang_packs.words("ask_words", code))


def _distinctive(text: str, codes: Iterable[str]) -> dict[str, int]:
    """Per candidate language, how many words of `text` are closed-class words of that language
    and of no other candidate ("кой" is Bulgarian, "кој" Macedonian, "хто" Ukrainian): on a
    question of four words these say more than letter statistics."""
    codes = list(codes)
    out = dict.fromkeys(codes, 0)
    for w in re.findall(r"\w+(?:'\w+)*", text.casefold()):
        having = [c for c in codes if w in _closed_words(c)]
        if len(having) == 1:
            out[having[0]] += 1
    return out


def detect_question(text: str, article_languages: Iterable[str] = (),
                    default: str = "en") -> tuple[str, str]:
    """(language code, raw guess) of a question, among the languages answers are given in and
    `article_languages` (those of the indexed articles)."""
    if not text or not text.strip():
        return default, ""
    answer_langs = set(lang_packs.LANGUAGES)
    codes = answer_langs | {c for c in article_languages if lang_packs.pack(c) is not None}
    hits = _distinctive(text, sorted(codes))
    names = _lingua_names(sorted(codes))
    values = _detector(names).compute_language_confidence_values(text)
    to_code = _lingua_to_code()
    best: dict[str, tuple[float, str]] = {}
    for v in values:
        code = to_code.get(v.language.name)
        if code is not None and v.value > best.get(code, (-1.0, ""))[0]:
            best[code] = (v.value, v.language.iso_code_639_1.name.lower())
    if not best or max(v for v, _ in best.values()) <= 0.0:
        return default, ""
    # Each distinctive closed-class word counts as much as half of lingua's confidence.
    best = {c: (v + DISTINCTIVE_WEIGHT * hits.get(c, 0), raw) for c, (v, raw) in best.items()}
    ours = max((c for c in best if c in answer_langs), key=lambda c: best[c][0], default=None)
    top = max(best, key=lambda c: best[c][0])
    if ours is not None and top not in answer_langs and (
            best[top][0] - best[ours][0] < QUESTION_OTHER_MARGIN):
        top = ours
    return top, best[top][1]


def name(code: str) -> str:
    return NAMES.get(code, code)
