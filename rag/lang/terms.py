"""Terms that match across the corpus' languages and scripts, by spelling alone.

A question in English about a Bulgarian article shares few letters with it. What spelling can
bridge is names, numbers and shared (Slavic or international) roots: one spelling key per word,
built on the script-neutral key that BM25 uses (`rag.lang.text.latin_key`), plus the English
spellings of the same sounds, so that Шевченко/Shevchenko, Хабаровськ/Khabarovsk and
Кенеди/Kennedy meet (`fold`, `stems`), and a consonant skeleton for capitalised words, so that
Кърк/Kirk and Хабаровск/Khabarovsk meet (`name_keys`). There is no topic lexicon: concepts that
are spelled differently in each language (weapon/оръжие) are left to the multilingual embedder
(`rag.answering.evidence`, `rag.answering.refusal`) and, when installed, to bilingual
dictionaries (`rag.lang.dictionary`).
Only closed-class words (function and question words) are listed, per language, in rag/lang/.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from rag import lang as lang_packs
from rag.lang.text import BM25_STOPWORDS, latin_key

# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------

# A word with inner apostrophes is one word (Ukrainian зв'язки, English Italy's).
_TOKEN = re.compile(r"\w+(?:'\w+)*")


@dataclass(frozen=True)
class Token:
    text: str  # as written: capitals matter for names and acronyms (US, UN)
    norm: str  # case-folded
    start: int  # offset in the NFC, apostrophe-unified text


def unify(text: str) -> str:
    """NFC with one apostrophe: the text `Token.start` offsets point into."""
    t = unicodedata.normalize("NFC", text)
    return t.replace("’", "'").replace("ʼ", "'").replace("`", "'")


def tokens(text: str) -> list[Token]:
    return [Token(m.group(), m.group().casefold(), m.start()) for m in _TOKEN.finditer(unify(text))]


# --------------------------------------------------------------------------------------------
# Spelling keys
# --------------------------------------------------------------------------------------------

# English spellings of the sounds latin_key writes with one letter (sh → ш, ch → ч, zh → ж).
_DIGRAPHS = (("sh", "s"), ("ch", "c"), ("zh", "z"), ("kh", "h"))
# Polish spells them sz, cz, rz. Only in words written in Latin letters: in a Cyrillic word
# the same letters are two sounds (бърза, Мирзоян, Дзержинский).
_LATIN_DIGRAPHS = _DIGRAPHS + (("sz", "s"), ("cz", "c"), ("rz", "z"))
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
# j/y/й/ј/і all become "i" so that Yanukovych (English) meets Янукович.
_LETTERS = str.maketrans({"j": "i", "y": "i", "w": "v", "q": "k", "x": "ks"})
_DOUBLE = re.compile(r"(.)\1+")
# A glide between vowels is written in Slavic spellings and not in English ones: Италия → italija
# / Italia, Мария → marija / Maria.
_GLIDE = re.compile(r"(?<=[aeiou])i(?=[aeiou])")
_VOWELS = re.compile(r"[aeiou]")
_NUMBER = re.compile(r"^\d+([.,]\d+)?$")

# Prefix length for stems: Slavic inflection changes endings (Италия/Италија/Италије); 5 folded
# characters keep most roots apart while conflating those forms (as BM25_PREFIX in rag.lang.text).
STEM_CHARS = 5


def fold(word: str) -> str:
    """Script-independent skeleton of one case-folded word: `latin_key`, then English (and, in
    Latin script, Polish) digraphs and letters mapped onto the same key, doubled letters
    collapsed."""
    w = latin_key(word)
    for a, b in _DIGRAPHS if _CYRILLIC.search(word) else _LATIN_DIGRAPHS:
        w = w.replace(a, b)
    return _GLIDE.sub("", _DOUBLE.sub(r"\1", w.translate(_LETTERS)))


def stem(word: str) -> str:
    """Folded prefix; numbers stay whole (2018 must not match 2019)."""
    if _NUMBER.match(word):
        return word
    return fold(word)[:STEM_CHARS]


def _readings(word: str) -> set[str]:
    """The word, plus English readings of a plain-Latin word: "j" as in Jones/Џонс/Džons and a
    hard "c" as in director/директор; the Cyrillic reading of Czech ř; and the word without an
    English possessive: questions drop it, and an article in any language may quote a company
    name with it whole. It matters for names of 4-5 letters (a longer word's 5-letter stem
    already drops it); a shop or agency then also matches the family name it carries."""
    if word.endswith("'s") and len(word) > 4:
        return _readings(word[:-2]) | {word}
    out = {word}
    # Czech ř is written рж in Cyrillic (Dvořák/Дворжак) and r in English (Dvorak). Spelled
    # in Cyrillic here so that the Polish rz → ž folding does not swallow the r.
    if "ř" in word:
        out.add(word.replace("ř", "рж"))
    # A soft English g is дж in one Cyrillic spelling and ж in another (Джордж / Жорж).
    if "дж" in word:
        out.add(word.replace("дж", "ж"))
    if word.isascii() and not word.isdigit():
        out.add(word.replace("j", "dž").replace("ck", "k").replace("c", "k"))
        out.add(word.replace("c", "k"))
        out.add(word.replace("ts", "c"))
    return out


def stems(word: str) -> set[str]:
    """Every stem key of one case-folded word (see `_readings`)."""
    return {stem(w) for w in _readings(word)}


def skeleton(word: str) -> str:
    """Consonants of the folded word: names keep their consonants across spellings whose
    vowels differ (Кърк/Kirk → "krk", Хабаровск/Khabarovsk → "hbrvsk")."""
    return _DOUBLE.sub(r"\1", _VOWELS.sub("", fold(word)))


# --------------------------------------------------------------------------------------------
# Question terms and text term sets
# --------------------------------------------------------------------------------------------

# Words that ask rather than tell: interrogatives, auxiliaries and "the articles" framing, per
# language (rag/lang/). They are never evidence of an answer.
QUESTION_WORDS = lang_packs.words("question_words")
STOPWORDS = BM25_STOPWORDS


@dataclass(frozen=True)
class Term:
    """A content word of a question and the keys it may match."""

    word: str
    keys: frozenset[str]
    position: int = 0  # token index in the question (for "near" rules)
    name: bool = False  # written with a capital inside the sentence (a name or acronym)
    # The keys among `keys` that come from dictionary translations (rag.lang.dictionary), not
    # from the word's own spelling.
    translated: frozenset[str] = frozenset()

    def found_in(self, key_set: set[str] | frozenset[str]) -> bool:
        return not self.keys.isdisjoint(key_set)


def spelling_terms(text: str) -> list[Term]:
    """Content words of `text` matched by spelling only (no lexicon): what a claim of a
    generated answer shares letter for letter with the evidence it cites."""
    out: list[Term] = []
    seen: set[str] = set()
    for t in tokens(text):
        w = t.norm
        if w in STOPWORDS or w in QUESTION_WORDS or (len(w) < 3 and not w.isdigit()):
            continue
        s = stem(w)
        if s and s not in seen:
            seen.add(s)
            out.append(Term(w, frozenset(stems(w))))
    return out


def spelling_keys(text: str) -> frozenset[str]:
    """Stem keys of every word of `text` (the counterpart of `spelling_terms`)."""
    return frozenset(k for t in tokens(text) if len(t.norm) > 1 or t.norm.isdigit()
                     for k in stems(t.norm))


def content_terms(text: str, lang: str | None = None, unique: bool = True) -> list[Term]:
    """The words of `text` that carry meaning, in order: no stopwords, question words or 1-2
    letter words (numbers stay). One Term per key unless `unique` is false (then every mention,
    at its position). `lang` is accepted for callers that know it; spelling keys need no
    language."""
    del lang
    toks = tokens(text)
    out: list[Term] = []
    seen: set[str] = set()
    for i, tok in enumerate(toks):
        w = tok.norm
        if w in STOPWORDS or w in QUESTION_WORDS or (len(w) < 3 and not w.isdigit()):
            continue
        s = stem(w)
        if s and (s not in seen or not unique):
            seen.add(s)
            keys = set(stems(w))
            # A name (capitalised, not the first word) also matches by its consonants:
            # Kirk/Кърк, Khabarovsk/Хабаровск.
            is_name = i > 0 and (tok.text[:1].isupper() or tok.text.isupper())
            if is_name:
                keys |= {k for k in name_token_keys(w) if k.startswith("~")}
            out.append(Term(w, frozenset(keys), position=i, name=is_name))
    return out


@functools.lru_cache(maxsize=50_000)
def term_set(text: str, lang: str | None = None) -> frozenset[str]:
    """Keys of every word of `text`, with the consonant keys of its capitalised words (cached:
    the same passages are scored for many questions)."""
    toks = tokens(text)
    keys = {k for t in toks if len(t.norm) > 1 or t.norm.isdigit() for k in stems(t.norm)}
    keys |= {k for k in name_keys(text, lang) if k.startswith("~")}
    return frozenset(keys)


def _name_reading_keys(reading: str) -> tuple[str, str | None, str]:
    """(stem, short root, consonant skeleton) of one reading of a name word, folded once: these
    run for every capitalised word of every retrieved sentence.

    The short root is a 4-5 letter name without its case ending: such a word's stem keeps the
    ending ("Diru", dative, against "Diro"), a longer word's 5-letter stem already drops it.
    Marked "^": it may match only another name's root, never a common word's stem (Дени is not
    ден, Mira is not мир)."""
    f = fold(reading)
    st = reading if _NUMBER.match(reading) else f[:STEM_CHARS]
    root = "^" + f[:-1] if 4 <= len(f) <= 5 and f[-1] in "aeiou" and f.isalpha() else None
    return st, root, _DOUBLE.sub(r"\1", _VOWELS.sub("", f))


@functools.lru_cache(maxsize=50_000)
def name_keys(text: str, lang: str | None = None) -> frozenset[str]:
    """Keys of the capitalised words of `text` (stems, short roots and consonant skeletons):
    what a name asked about can match, in any script."""
    del lang
    keys: set[str] = set()
    for t in tokens(text):
        if t.text[:1].isupper() or t.text[:1].isdigit():
            for r in _readings(t.norm):
                st, root, sk = _name_reading_keys(r)
                keys.add(st)
                if root:
                    keys.add(root)
                # Every prefix from 3 consonants: inflection adds endings (Кенедијем → kndm).
                keys.update("~" + sk[:n] for n in range(3, len(sk) + 1))
    return frozenset(keys)


def name_token_keys(word: str) -> frozenset[str]:
    """Keys one name word of a question may match in `name_keys` of a passage. Skeleton keys
    need 3+ consonants: "Li" or "Kan" would match too much by consonants alone."""
    keys: set[str] = set()
    for r in _readings(word):
        st, root, sk = _name_reading_keys(r)
        keys.add(st)
        if root:
            keys.add(root)
        if len(sk) >= 3:
            keys.add("~" + sk)
    return frozenset(keys)


def unique_terms(terms: Iterable[Term]) -> list[Term]:
    seen: set[frozenset[str]] = set()
    out = []
    for t in terms:
        if t.keys not in seen:
            seen.add(t.keys)
            out.append(t)
    return out
