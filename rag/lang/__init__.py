"""Language knowledge as data: one JSON file per language in this folder, loaded and checked here.

Every closed-class word list the answering code needs (function words, question words, the
cues of each kind of answer, month and weekday names, number words, currencies and units,
pronouns that refer back, the user-facing refusal and lead-in phrases, the regular inflection
endings a dictionary lookup strips) lives in `<code>.json`.
A new language is a new file; no code names a word of a particular language.

Word lists are whitespace-separated strings; cues are lists of phrases. In both, a word that
ends with `*` matches any ending (Slavic inflection: `милион*` is милиона, милиони, ...). A pack
with `"also_cyrillic": true` (Serbian) is written in Latin and gets every word in Cyrillic too,
through its own `cyrillic_digraphs`/`cyrillic_letters` table.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rag.types import RagError

LANG_DIR = Path(__file__).resolve().parent

# The kinds of answer a question can ask for (keys of "answer_types").
QUANTITY, MONEY, MEASURE, DATE, YEAR, TIME, AGE, BIRTH, PERSON = (
    "quantity", "money", "measure", "date", "year", "time", "age", "birth", "person")
# BIRTH ("where was X born?") is asked and answered by the packs' birth words, not by cues.
ANSWER_TYPES = (QUANTITY, MONEY, MEASURE, DATE, YEAR, TIME, AGE, BIRTH, PERSON)

# Fields of a pack file: name -> (type, required).
_WORD_FIELDS = ("stopwords", "question_words", "ask_words", "count_words", "months", "weekdays",
                "number_words", "currencies", "units", "age_words", "birth_words", "anaphora",
                "refer_back", "article_words", "all_words", "conjunctions", "abbreviations")
_PHRASE_KEYS = ("refusal", "extractive_lead_in", "rephrase")
_BOILERPLATE_KEYS = ("ui_lines", "related_starts", "see_also", "credit_words")
_KNOWN = {"code", "name", "lingua", "also_cyrillic", "cyrillic_digraphs", "cyrillic_letters",
          "answer_types", "ellipsis_starts", "refusal_paraphrases", "boilerplate", "phrases",
          "inflections", *_WORD_FIELDS}


@dataclass(frozen=True)
class LanguagePack:
    """One language's closed-class knowledge, as loaded from `<code>.json`."""

    code: str
    name: str
    lingua: tuple[str, ...]  # lingua Language names that mean this language
    words: dict[str, tuple[str, ...]] = field(repr=False)  # field -> words (with `*` marks)
    answer_types: dict[str, tuple[str, ...]] = field(repr=False)  # type -> cue phrases
    ellipsis_starts: tuple[str, ...] = field(repr=False, default=())
    # What models write instead of the exact refusal phrase.
    refusal_paraphrases: tuple[str, ...] = field(repr=False, default=())
    phrases: dict[str, str] = field(repr=False, default_factory=dict)
    # Page furniture: whole-line UI labels, starts of a related-articles block, "see also" link
    # texts (phrases), and the words of a photo credit.
    boilerplate: dict[str, tuple[str, ...]] = field(repr=False, default_factory=dict)
    # Latin -> Cyrillic spelling (digraphs, letters) for a language written in both scripts.
    cyrillic: tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] | None = field(
        repr=False, default=None)
    # Regular inflection endings and what replaces them in the dictionary form ("ies" -> "y"):
    # how a question word is looked up in a bilingual dictionary (rag.lang.dictionary).
    inflections: tuple[tuple[str, str], ...] = field(repr=False, default=())

    @property
    def answers_in_own_language(self) -> bool:
        """Whether refusals and lead-ins can be written in this language."""
        return all(k in self.phrases for k in _PHRASE_KEYS)


def _to_cyrillic(word: str, digraphs: dict[str, str], letters: dict[str, str]) -> str:
    t = word.lower()
    for lat, cyr in digraphs.items():
        t = t.replace(lat, cyr)
    return t.translate(str.maketrans(letters))


def _check(code: str, data: object, path: Path) -> dict:
    def bad(msg: str) -> RagError:
        return RagError(f"Language file {path}: {msg}. Fix the file (see rag/lang/en.json for "
                        "the expected shape).")

    if not isinstance(data, dict):
        raise bad("must hold one JSON object")
    unknown = set(data) - _KNOWN
    if unknown:
        raise bad(f"unknown field(s) {', '.join(sorted(unknown))}")
    if data.get("code") != code:
        raise bad(f"\"code\" must be {code!r}, the file's name")
    for key in ("name", *_WORD_FIELDS):
        if not isinstance(data.get(key), str):
            raise bad(f"{key!r} must be a string of whitespace-separated words")
    if not isinstance(data.get("lingua"), list) or not data["lingua"]:
        raise bad("'lingua' must list the lingua language name(s) of this language")
    types = data.get("answer_types")
    if not isinstance(types, dict) or set(types) - set(ANSWER_TYPES) or not all(
            isinstance(v, list) and all(isinstance(c, str) and c.strip() for c in v)
            for v in types.values()):
        raise bad(f"'answer_types' must map some of {', '.join(ANSWER_TYPES)} to lists of cues")
    for key in ("ellipsis_starts", "refusal_paraphrases"):
        if not isinstance(data.get(key, []), list):
            raise bad(f"{key!r} must be a list of phrases")
    bp = data.get("boilerplate", {})
    if not isinstance(bp, dict) or set(bp) - set(_BOILERPLATE_KEYS):
        raise bad(f"'boilerplate' may hold {', '.join(_BOILERPLATE_KEYS)}")
    phrases = data.get("phrases", {})
    if not isinstance(phrases, dict) or not all(isinstance(v, str) for v in phrases.values()):
        raise bad("'phrases' must map phrase names to texts")
    if phrases and set(_PHRASE_KEYS) - set(phrases):
        raise bad(f"'phrases' must have all of {', '.join(_PHRASE_KEYS)} (or be empty)")
    infl = data.get("inflections", [])
    if not isinstance(infl, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r)
            and r[0] for r in infl):
        raise bad("'inflections' must list [ending, replacement] pairs")
    if data.get("also_cyrillic") and not (isinstance(data.get("cyrillic_letters"), dict)
                                          and isinstance(data.get("cyrillic_digraphs"), dict)):
        raise bad("'also_cyrillic' needs 'cyrillic_letters' and 'cyrillic_digraphs'")
    return data


def _load(path: Path) -> LanguagePack:
    code = path.stem
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RagError(f"Language file {path} cannot be read: {e}") from e
    data = _check(code, data, path)

    def expand(items: Iterable[str]) -> tuple[str, ...]:
        items = [i.casefold() for i in items]
        if data.get("also_cyrillic"):
            dg, lt = data["cyrillic_digraphs"], data["cyrillic_letters"]
            items += [_to_cyrillic(i, dg, lt) for i in items]
        return tuple(dict.fromkeys(items))

    return LanguagePack(
        code=code, name=data["name"], lingua=tuple(data["lingua"]),
        words={k: expand(data[k].split()) for k in _WORD_FIELDS},
        answer_types={k: expand(v) for k, v in data["answer_types"].items()},
        ellipsis_starts=expand(data.get("ellipsis_starts", ())),
        refusal_paraphrases=expand(data.get("refusal_paraphrases", ())),
        boilerplate={k: expand(v.split() if isinstance(v, str) else v)
                     for k, v in data.get("boilerplate", {}).items()},
        phrases=dict(data.get("phrases", {})),
        cyrillic=((tuple(data["cyrillic_digraphs"].items()),
                   tuple(data["cyrillic_letters"].items()))
                  if data.get("also_cyrillic") else None),
        inflections=tuple((a.casefold(), b.casefold()) for a, b in data.get("inflections", [])),
    )


@functools.cache
def packs() -> dict[str, LanguagePack]:
    """Every language pack in rag/lang/, by code (checked on first use)."""
    out = {p.stem: _load(p) for p in sorted(LANG_DIR.glob("*.json"))}
    if "en" not in out:
        raise RagError(f"{LANG_DIR} must hold en.json: English is the fallback language")
    return out


def pack(code: str) -> LanguagePack | None:
    return packs().get(code)


# The languages answers can be given in: those whose pack has the user-facing phrases.
# English first: it is the fallback.
LANGUAGES: tuple[str, ...] = tuple(sorted(
    (c for c, p in packs().items() if p.answers_in_own_language), key=lambda c: c != "en"))
# Every language with a pack (also those only articles are written in).
KNOWN_LANGUAGES: tuple[str, ...] = tuple(packs())
FALLBACK = "en"


def _codes(langs: Iterable[str] | str | None) -> tuple[str, ...]:
    if langs is None:
        return KNOWN_LANGUAGES
    if isinstance(langs, str):
        langs = (langs,)
    return tuple(c for c in langs if c in packs())


@functools.cache
def _words(name: str, langs: tuple[str, ...]) -> frozenset[str]:
    return frozenset(w for c in langs for w in packs()[c].words[name] if not w.endswith("*"))


def words(name: str, langs: Iterable[str] | str | None = None) -> frozenset[str]:
    """The exact words (no `*` prefixes) of field `name` in the given languages (default all)."""
    return _words(name, _codes(langs))


def _cue_pattern(cue: str) -> str:
    parts = []
    for w in cue.split():
        stem = re.escape(w.rstrip("*"))
        parts.append(stem + r"[\w']*" if w.endswith("*") else stem)
    return r"\s+".join(parts)


def compile_cues(cues: Iterable[str]) -> re.Pattern[str] | None:
    """One regex matching any of the cues as whole words (over case-folded text)."""
    alts = sorted({_cue_pattern(c) for c in cues}, key=len, reverse=True)
    if not alts:
        return None
    return re.compile(r"(?<![\w'])(?:" + "|".join(alts) + r")(?![\w'])")


@functools.cache
def _pattern(name: str, langs: tuple[str, ...]) -> re.Pattern[str] | None:
    if name.startswith("type:"):
        kind = name[5:]
        cues = [c for code in langs for c in packs()[code].answer_types.get(kind, ())]
    elif name in ("ellipsis_starts", "refusal_paraphrases"):
        cues = [c for code in langs for c in getattr(packs()[code], name)]
    elif name.startswith("boilerplate:"):
        cues = [c for code in langs for c in packs()[code].boilerplate.get(name[12:], ())]
    else:
        cues = [c for code in langs for c in packs()[code].words[name]]
    return compile_cues(cues)


def pattern(name: str, langs: Iterable[str] | str | None = None) -> re.Pattern[str] | None:
    """A regex for the words/cues of field `name` (or `type:<answer type>`), `*` honoured."""
    return _pattern(name, _codes(langs))


def matches(name: str, word: str, langs: Iterable[str] | str | None = None) -> bool:
    """Whether one case-folded word is in field `name` (prefix entries included)."""
    rx = pattern(name, langs)
    return bool(rx and rx.fullmatch(word))


def phrase(key: str, lang: str | None) -> str:
    """A user-facing phrase in `lang`, English when that language has none."""
    code = (lang or "").replace("_", "-").split("-")[0].lower()
    p = pack(code)
    if p is not None and key in p.phrases:
        return p.phrases[key]
    try:
        return packs()[FALLBACK].phrases[key]
    except KeyError:
        raise RagError(f"Unknown phrase {key!r}; known: {', '.join(_PHRASE_KEYS)}") from None


def name(code: str) -> str:
    p = pack(code)
    return p.name if p is not None else code


@functools.cache
def _cyrillic_table() -> tuple[tuple[tuple[str, str], ...], dict[int, str]] | None:
    for p in packs().values():
        if p.cyrillic is not None:
            return p.cyrillic[0], str.maketrans(dict(p.cyrillic[1]))
    return None


def serbian_to_cyrillic(text: str) -> str:
    """Latin -> Cyrillic with the table of the pack that declares `also_cyrillic` (Serbian)."""
    t = text.lower()
    table = _cyrillic_table()
    if table is None:
        return t
    for lat, cyr in table[0]:
        t = t.replace(lat, cyr)
    return t.translate(table[1])
