"""Terms that match across the corpus' languages and scripts.

A question in English about a Bulgarian article shares few letters with it. Two things bridge
that gap, and evidence selection (`rag.evidence`) and the refusal rules (`rag.cite`) use both:

- names: one spelling key per word, built on the script-neutral key that BM25 uses
  (`rag.text.latin_key`), plus the English spellings of the same sounds, so that
  Шойгу/Šojgu/Shoigu, Харків/Kharkiv and Кирби/Kirby meet (`fold`, `stems`), and a consonant
  skeleton for capitalised words, so that Кърби/Kirby and Харков/Kharkiv meet (`name_keys`);
- common words: a lexicon (`rag/data/lexicon.json`) of frequent NEWS-DOMAIN terms (countries,
  capitals, organisations, news agencies, roles such as minister or ambassador, weapons,
  sanctions, talks, ...) in en/bg/mk/sr/uk, each mapped to one concept key ("#minister").
  It is tuned to international-politics news; other words fall back to spelling keys.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .text import BM25_STOPWORDS, latin_key, serbian_to_cyrillic

LEXICON_FILE = Path(__file__).resolve().parent / "data" / "lexicon.json"
LEXICON_LANGUAGES = ("en", "bg", "mk", "sr", "uk")

# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------

# A word with inner apostrophes is one word (Ukrainian зв'язки, English Russia's).
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

# English (and other plain-Latin) spellings of the sounds latin_key writes with one letter.
_DIGRAPHS = (("sh", "s"), ("ch", "c"), ("zh", "z"), ("kh", "h"))
# j/y/й/ј/і all become "i" so that Shoigu (English) meets Шойгу → "sojgu".
_LETTERS = str.maketrans({"j": "i", "y": "i", "w": "v", "q": "k", "x": "ks"})
_DOUBLE = re.compile(r"(.)\1+")
_VOWELS = re.compile(r"[aeiou]")
_NUMBER = re.compile(r"^\d+([.,]\d+)?$")

# Prefix length for stems: Slavic inflection changes endings (Русия/Русија/Русије); 5 folded
# characters keep most roots apart while conflating those forms (as BM25_PREFIX in rag.text).
STEM_CHARS = 5


def fold(word: str) -> str:
    """Script-independent skeleton of one case-folded word: `latin_key`, then English digraphs
    and letters mapped onto the same key, doubled letters collapsed."""
    w = latin_key(word)
    for a, b in _DIGRAPHS:
        w = w.replace(a, b)
    return _DOUBLE.sub(r"\1", w.translate(_LETTERS))


def stem(word: str) -> str:
    """Folded prefix; numbers stay whole (2018 must not match 2019)."""
    if _NUMBER.match(word):
        return word
    return fold(word)[:STEM_CHARS]


def _readings(word: str) -> set[str]:
    """The word, plus English readings of a plain-Latin word: "j" as in Jong/Џонг/Džong and a
    hard "c" as in director/директор."""
    out = {word}
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
    vowels differ (Кърби/Kirby → "krb", Харков/Kharkiv → "hrkv")."""
    return _DOUBLE.sub(r"\1", _VOWELS.sub("", fold(word)))


# --------------------------------------------------------------------------------------------
# Lexicon
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Form:
    parts: tuple[str, ...]
    prefix: tuple[bool, ...]  # part ends with "*": any ending
    caps: tuple[bool, ...]  # part written in capitals: must appear in capitals
    concept: str

    def matches(self, toks: Sequence[Token], i: int) -> bool:
        if i + len(self.parts) > len(toks):
            return False
        for j, (part, pre, caps) in enumerate(zip(self.parts, self.prefix, self.caps,
                                                  strict=True)):
            tok = toks[i + j]
            if caps:
                if tok.text != part:
                    return False
            elif not (tok.norm == part or (pre and tok.norm.startswith(part))):
                return False
        return True


def _parse_form(form: str, concept: str) -> _Form:
    raw = re.findall(r"[\w']+\*?", form)
    parts = tuple(p.rstrip("*") for p in raw)
    caps = tuple(p.isupper() and len(p) > 0 for p in parts)
    return _Form(tuple(p if c else p.casefold() for p, c in zip(parts, caps, strict=True)),
                 tuple(p.endswith("*") for p in raw), caps, concept)


_KEY_CHARS = 3
_SHORT = "\x00"  # marks the key of a first part shorter than _KEY_CHARS


def _form_key(first_part: str) -> str:
    key = first_part.casefold()
    return key[:_KEY_CHARS] if len(key) >= _KEY_CHARS else key + _SHORT


@dataclass(frozen=True)
class Match:
    start: int  # token index
    end: int  # exclusive
    concept: str


class Lexicon:
    """Concepts and their forms per language; `find` marks concept mentions in tokens."""

    def __init__(self, concepts: dict[str, dict]):
        self.kinds: dict[str, str] = {}
        self.broader: dict[str, tuple[str, ...]] = {}
        self._index: dict[str, dict[str, list[_Form]]] = {lang: {} for lang in LEXICON_LANGUAGES}
        for cid, entry in concepts.items():
            self.kinds[cid] = entry["kind"]
            self.broader[cid] = tuple(entry.get("broader", ()))
            for lang in LEXICON_LANGUAGES:
                forms = list(entry.get(lang, ()))
                if lang == "sr":  # Serbian is also written in Cyrillic
                    forms += [_sr_cyrillic(f) for f in forms]
                for f in forms:
                    form = _parse_form(f, cid)
                    if form.parts and form.parts[0]:
                        self._index[lang].setdefault(_form_key(form.parts[0]), []).append(form)
        for table in self._index.values():
            for forms in table.values():
                # Longest first: "north korea" before "korea", "ministarstv" before "ministar".
                forms.sort(key=lambda f: (-len(f.parts), -len(f.parts[0])))

    def languages(self, lang: str | None) -> tuple[str, ...]:
        """English forms apply everywhere (acronyms and Latin names appear in every language);
        an unknown language gets every language's forms."""
        if lang in self._index and lang != "en":
            return ("en", lang)
        if lang == "en":
            return ("en",)
        return LEXICON_LANGUAGES

    def find(self, toks: Sequence[Token], lang: str | None = None) -> list[Match]:
        """Non-overlapping concept mentions, longest match first, left to right."""
        langs = self.languages(lang)
        out: list[Match] = []
        i = 0
        while i < len(toks):
            best: Match | None = None
            norm = toks[i].norm
            # A form can only match a token that begins with its first part: look only at the
            # forms keyed by the token's first three letters (first parts of 3+ letters; longer
            # parts sort first, as before), then at those with shorter first parts. Scanning
            # every form with the same first letter was most of an extractive answer's time.
            keys = (norm[:_KEY_CHARS], *(norm[:n] + _SHORT for n in range(_KEY_CHARS - 1, 0, -1)))
            for code in langs:
                table = self._index[code]
                for form in (f for k in keys for f in table.get(k, ())):
                    n = len(form.parts)
                    if best is not None and n <= best.end - best.start:
                        continue
                    if form.matches(toks, i):
                        best = Match(i, i + n, form.concept)
            if best is None:
                i += 1
            else:
                out.append(best)
                i = best.end
        return out

    def kind(self, concept: str) -> str:
        return self.kinds.get(concept, "")

    def with_broader(self, concepts: Iterable[str]) -> set[str]:
        """The concepts and every broader concept they imply (missile → weapon)."""
        out: set[str] = set()
        todo = list(concepts)
        while todo:
            c = todo.pop()
            if c not in out:
                out.add(c)
                todo.extend(self.broader.get(c, ()))
        return out


def _sr_cyrillic(form: str) -> str:
    words = re.findall(r"\S+", form)
    out = []
    for w in words:
        cyr = serbian_to_cyrillic(w)
        out.append(cyr.upper() if w.rstrip("*").isupper() else cyr)
    return " ".join(out)


@functools.cache
def lexicon(path: Path = LEXICON_FILE) -> Lexicon:
    data = json.loads(path.read_text(encoding="utf-8"))
    return Lexicon(data["concepts"])


def concept_key(concept: str) -> str:
    return f"#{concept}"


# --------------------------------------------------------------------------------------------
# Question terms and text term sets
# --------------------------------------------------------------------------------------------

# Words that ask rather than tell: interrogatives, auxiliaries and "the articles" framing, in
# the five languages. They are never evidence of an answer.
_QUESTION_WORD_TEXT = """
according also any article articles between both did does done either exactly kind kinds many
much name named other others report reported reportedly say said says tell told what whose
there then than into over under after before since such been being can could should shall may
might must only just very more most some these those our your you his her him she he we us
across allegedly roughly approximately
какво какви какъв каква кое кои коя кой колко кога къде защо според статии статиите статия
към сега още този тази това тези казва казват
какво кој која кое кои колку кога каде зошто според статии статиите статија уште сега
šta sta koji koja koje kojim kog koliko kada gde zašto prema članci članaka članak još sada
što kakve kakva kakav navode navodi
хто що який яка яке які якого якої скільки коли де чому згідно статті статтях статей ще зараз
згадують
"""
QUESTION_WORDS = frozenset(_QUESTION_WORD_TEXT.split())
STOPWORDS = BM25_STOPWORDS | {serbian_to_cyrillic(w) for w in QUESTION_WORDS if w.isascii()}


@dataclass(frozen=True)
class Term:
    """A content word (or lexicon phrase) of a question and the keys it may match."""

    word: str
    keys: frozenset[str]
    concept: str | None = None  # lexicon concept id
    kind: str = ""  # the concept's kind ("role", "place", ...)
    position: int = 0  # token index in the question (for "near" rules)

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
    """The terms of `text` that carry meaning, in order: lexicon concepts ("North Korea" is
    one term) and other words without stopwords, question words and 1-2 letter words (numbers
    stay). One Term per key unless `unique` is false (then every mention, at its position)."""
    toks = tokens(text)
    lex = lexicon()
    matches = {m.start: m for m in lex.find(toks, lang)}
    out: list[Term] = []
    seen: set[str] = set()
    i = 0
    while i < len(toks):
        m = matches.get(i)
        if m is not None:
            key = concept_key(m.concept)
            if key not in seen or not unique:
                seen.add(key)
                # A one-word concept also keeps its spelling keys: an inflection the lexicon
                # lacks still matches within one language.
                extra = stems(toks[i].norm) if m.end - m.start == 1 else set()
                word = " ".join(t.norm for t in toks[m.start:m.end])
                out.append(Term(word, frozenset({key} | extra), m.concept, lex.kind(m.concept),
                                i))
            i = m.end
            continue
        tok = toks[i]
        w = tok.norm
        i += 1
        if w in STOPWORDS or w in QUESTION_WORDS or (len(w) < 3 and not w.isdigit()):
            continue
        s = stem(w)
        if s and (s not in seen or not unique):
            seen.add(s)
            keys = set(stems(w))
            # A name (capitalised, not the first word) also matches by its consonants:
            # Kirby/Кърби, Kharkiv/Харков.
            if i > 1 and tok.text[:1].isupper():
                keys |= {k for k in name_token_keys(w) if k.startswith("~")}
            out.append(Term(w, frozenset(keys), position=i - 1))
    return out


@functools.lru_cache(maxsize=50_000)
def term_set(text: str, lang: str | None = None) -> frozenset[str]:
    """Keys of every word of `text` and of every lexicon concept in it, broader ones included
    (cached: the same passages are scored for many questions)."""
    toks = tokens(text)
    keys = {k for t in toks if len(t.norm) > 1 or t.norm.isdigit() for k in stems(t.norm)}
    keys |= {k for k in name_keys(text, lang) if k.startswith("~")}
    lex = lexicon()
    keys |= {concept_key(c) for c in lex.with_broader(m.concept for m in lex.find(toks, lang))}
    return frozenset(keys)


@functools.lru_cache(maxsize=50_000)
def concepts_in(text: str, lang: str | None = None) -> frozenset[str]:
    return frozenset(m.concept for m in lexicon().find(tokens(text), lang))


@functools.lru_cache(maxsize=50_000)
def name_keys(text: str, lang: str | None = None) -> frozenset[str]:
    """Keys of the capitalised words of `text` (stems and consonant skeletons) and of its
    lexicon concepts: what a name asked about can match."""
    keys: set[str] = set()
    for t in tokens(text):
        if t.text[:1].isupper() or t.text[:1].isdigit():
            for r in _readings(t.norm):
                keys.add(stem(r))
                sk = skeleton(r)
                # Every prefix from 3 consonants: inflection adds endings (Кирбијем → krbm).
                keys.update("~" + sk[:n] for n in range(3, len(sk) + 1))
    keys |= {concept_key(c) for c in concepts_in(text, lang)}
    return frozenset(keys)


def name_token_keys(word: str) -> frozenset[str]:
    """Keys one name word of a question may match in `name_keys` of a passage. Skeleton keys
    need 3+ consonants: "Kim" would match too much by consonants alone."""
    keys = set(stems(word))
    for r in _readings(word):
        sk = skeleton(r)
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
