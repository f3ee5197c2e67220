"""Translations of question words from general-purpose bilingual dictionaries (FreeDict).

An English question about a Bulgarian article shares names and international roots with it, but
not its common nouns: "tanks" is "танкове", "United Kingdom" is "Обединеното кралство". Spelling
keys (`rag.lang.terms`) cannot bridge that, and a hand-made topic lexicon would only hold for the
topic it was written on. A maintained, general dictionary does not depend on the topic: Debian
ships FreeDict's in dictd format (`apt-get install dict-freedict-eng-bul dict-freedict-eng-rus
dict-freedict-eng-pol dict-freedict-eng-ces dict-freedict-eng-srp`), and this module reads every
`freedict-<from>-<to>` pair found in a folder (`dictionary_dir`, default /usr/share/dictd).

Without those files nothing changes: questions match by spelling and the multilingual embedder
alone (and the log says what to install).

The dictd format: `<name>.index` lines are `headword TAB offset TAB length` (offsets in base64
digits) into `<name>.dict.dz`, a gzip file. An entry's first line is the headword with its
pronunciation and part of speech; translations follow, numbered by sense, mixed with English
glosses of the sense in the Cyrillic pairs.
"""

from __future__ import annotations

import functools
import gzip
import logging
import re
import threading
import time
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag import lang as lang_packs

logger = logging.getLogger(__name__)

_B64 = {c: i for i, c in enumerate(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_FILE = re.compile(r"^freedict-([a-z]{3})-([a-z]{3})\.index$")
# Sense markers at the start of a line ("1. ", "I.", "1. a. ", repeated) and a next sense's
# number left at its end ("година 2."), and bracketed notes ("(разг.)", "{see also}", "<N>").
_NUMBERING = re.compile(r"^\s*(?:(?:[0-9]+|[IVX]+|[a-h])\.\s*)+")
_TRAILING_NUMBER = re.compile(r"\s+[0-9]+\.?\s*$")
_BRACKETS = re.compile(r"\([^)]*\)|\[[^\]]*\]|\{[^}]*\}|<[^>]*>")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
# Words as rag.lang.terms tokenises text: a hyphen separates (министър-председател is two).
_WORD = re.compile(r"\w+(?:['’]\w+)*")
# Stress marks in the Cyrillic pairs (кра́лство): not part of the spelling.
_STRESS = re.compile(r"(?<=[\u0400-\u04ff])[\u0300\u0301]")
# A translation of more words than this is a gloss or an explanation, not an equivalent.
MAX_PHRASE_WORDS = 3
# How FreeDict's pairs mark an entry that is a person's name: English glosses in the Cyrillic
# pairs ("male given name", "surname", "pet name of John"), Czech tags in eng-ces ("[jmén]",
# "příjmení"). Format data of the dictionaries, not words of any topic.
_PERSON_MARKS = tuple(m.encode() for m in ("given name", "surname", "pet name", "[jmén]",
                                           "příjmení"))
# What to install for the pairs out of English (Debian).
DEBIAN_PACKAGES = ("dict-freedict-eng-bul", "dict-freedict-eng-rus", "dict-freedict-eng-pol",
                   "dict-freedict-eng-ces", "dict-freedict-eng-srp")


def _offset(digits: str) -> int:
    n = 0
    for c in digits:
        n = n * 64 + _B64[c]
    return n


def _clean(text: str) -> str:
    return unicodedata.normalize("NFC", _STRESS.sub("", unicodedata.normalize("NFD", text)))


def _translations(entry: str, cyrillic: bool) -> list[tuple[str, ...]]:
    """The translations of one entry, each as its case-folded words (glosses left out)."""
    out: list[tuple[str, ...]] = []
    for line in entry.splitlines()[1:]:
        line = line.strip()
        if not line or line.lower().startswith(("see also", "synonym", "antonym", "note")):
            continue
        line = _TRAILING_NUMBER.sub("", _NUMBERING.sub("", _BRACKETS.sub(" ", line)))
        for phrase in re.split(r"[,;]", line):
            if cyrillic and not _CYRILLIC.search(phrase):
                continue  # an English gloss of the sense
            ws = tuple(w.casefold() for w in _WORD.findall(_clean(phrase)))
            # A lone letter is a sense marker or a preposition, never an equivalent.
            if ws and len(ws) <= MAX_PHRASE_WORDS and not (len(ws) == 1 and len(ws[0]) < 2):
                out.append(ws)
    return out


@dataclass
class Dictionary:
    """Translations out of one language (`source`, a pack code) into every installed target.
    Entries are parsed when first looked up: reading the files takes a fraction of a second,
    parsing all of them would take seconds."""

    source: str
    files: list[str] = field(default_factory=list)
    # headword -> (pair, offset, length) of each of its entries in `_pairs`
    _index: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict, repr=False)
    _pairs: list[tuple[bytes, bool]] = field(default_factory=list, repr=False)  # data, Cyrillic
    _parsed: dict[str, frozenset[tuple[str, ...]]] = field(default_factory=dict, repr=False)

    def add_pair(self, data: bytes, cyrillic: bool,
                 rows: Iterable[tuple[str, int, int]]) -> int:
        """Index one pair's entries (headword, offset, length); returns how many."""
        pair = len(self._pairs)
        self._pairs.append((data, cyrillic))
        n = 0
        for head, offset, length in rows:
            key = " ".join(head.casefold().split())
            if key and offset + length <= len(data):
                self._index.setdefault(key, []).append((pair, offset, length))
                n += 1
        return n

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, headword: str) -> bool:
        return headword in self._index

    def entry(self, headword: str) -> frozenset[tuple[str, ...]]:
        """Every translation of a case-folded headword, each as its words."""
        if headword not in self._index:
            return frozenset()  # not cached: a server sees unbounded words that are no headword
        found = self._parsed.get(headword)
        if found is None:
            out: set[tuple[str, ...]] = set()
            for pair, offset, length in self._index.get(headword, ()):
                data, cyrillic = self._pairs[pair]
                out.update(_translations(data[offset:offset + length]
                                         .decode("utf-8", "replace"), cyrillic))
            found = self._parsed[headword] = frozenset(out)
        return found

    def _lemmas(self, word: str) -> list[str]:
        """The word and its dictionary forms by the pack's inflection rules ("tanks" -> "tank",
        "elected" -> "elect")."""
        p = lang_packs.pack(self.source)
        out = [word]
        for suffix, replacement in p.inflections if p is not None else ():
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                out.append(word[: len(word) - len(suffix)] + replacement)
        return out

    def common(self, word: str) -> bool:
        """Whether a case-folded word is a common word of the language: one of its entries (of
        its dictionary form's, when it has none itself) opens with the headword in lower case
        ("sea <n>", "china <n>"), not only as a proper noun ("Biden <pn>") or an affix ("un-")."""
        return any(self._lower_case(pair, offset) for pair, offset, _ in self._entries(word))

    def personal(self, word: str) -> bool:
        """Whether one of the word's entries is a given name or a surname ("Bill <pn> | Билл |
        male given name", "Peter | [jmén] Petr", "Smith | anglické příjmení")."""
        return any(marker in self._pairs[pair][0][offset:offset + length]
                   for pair, offset, length in self._entries(word) for marker in _PERSON_MARKS)

    def _entries(self, word: str) -> list[tuple[int, int, int]]:
        """The word's own entries, or else those of its first dictionary form that has any
        ("James" is a name, whatever "jam" is)."""
        for lemma in self._lemmas(word):
            if lemma in self._index:
                return self._index[lemma]
        return []

    def _lower_case(self, pair: int, offset: int) -> bool:
        line = self._pairs[pair][0][offset:offset + 120].split(b"\n", 1)[0]
        first = line.decode("utf-8", "ignore").split()
        head = first[0] if first else ""
        return head[:1].isalpha() and head == head.lower() and not head.endswith("-")

    def words(self, word: str) -> frozenset[str]:
        """One-word translations of a case-folded word (of any of its dictionary forms)."""
        out: set[str] = set()
        for lemma in self._lemmas(word):
            out.update(t[0] for t in self.entry(lemma) if len(t) == 1)
        out.discard(word)
        return frozenset(out)

    def phrase(self, words: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        """Translations of a phrase of several case-folded words that is a headword itself
        ("united kingdom", "south china sea"); () when it is not one."""
        if len(words) < 2:
            return ()
        keys = [" ".join(words)]
        if len(words[-1]) > 3:
            keys += [" ".join([*words[:-1], w]) for w in self._lemmas(words[-1])[1:]]
        found = next((self.entry(k) for k in keys if k in self), frozenset())
        return tuple(sorted(found))


def _read_pair(index: Path, into: Dictionary) -> int:
    with gzip.open(index.with_name(index.name[: -len(".index")] + ".dict.dz")) as f:
        data = f.read()
    rows = []
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00database") or not parts[0].strip():
            continue
        rows.append((parts[0], _offset(parts[1]), _offset(parts[2])))
    # Whether the target is written in Cyrillic (then Latin lines are glosses): by majority.
    sample = rows[:: max(1, len(rows) // 200)]
    hits = sum(bool(_CYRILLIC.search(data[o:o + k].decode("utf-8", "replace")))
               for _, o, k in sample)
    return into.add_pair(data, hits * 2 > len(sample), rows)


@functools.cache
def _iso3_to_code() -> dict[str, str]:
    """ISO 639-3 code -> pack code, through the lingua languages each pack names."""
    try:
        import lingua
    except ImportError:  # pragma: no cover - lingua is a dependency
        return {}
    out = {}
    for p in lang_packs.packs().values():
        for name in p.lingua:
            lang = getattr(lingua.Language, name, None)
            if lang is not None:
                out[lang.iso_code_639_3.name.lower()] = p.code
    return out


def load(directory: Path | str, sources: Iterable[str] | None = None) -> dict[str, Dictionary]:
    """Every FreeDict pair in `directory` whose source language has a pack, by source code
    (only `sources` when given). Missing or unreadable files are skipped with a warning."""
    directory = Path(directory)
    codes = _iso3_to_code()
    wanted = set(sources) if sources is not None else None
    out: dict[str, Dictionary] = {}
    if not directory.is_dir():
        return out
    t0 = time.perf_counter()
    for index in sorted(directory.glob("freedict-*-*.index")):
        m = _FILE.match(index.name)
        src = codes.get(m.group(1)) if m else None
        if src is None or (wanted is not None and src not in wanted):
            continue
        d = out.setdefault(src, Dictionary(src))
        try:
            n = _read_pair(index, d)
        except (OSError, EOFError, ValueError, KeyError, zlib.error) as e:
            logger.warning("dictionary %s cannot be read (%s): skipped", index, e)
            continue
        d.files.append(f"{index.name[: -len('.index')]} ({n} headwords)")
    out = {k: v for k, v in out.items() if len(v)}
    if out:
        logger.info("dictionaries loaded in %.1f s: %s", time.perf_counter() - t0,
                    "; ".join(f"{k}: {', '.join(v.files)}" for k, v in out.items()))
    return out


class Dictionaries:
    """The dictionaries of a folder, read on first use (a second or so) and then shared."""

    def __init__(self, directory: Path | str | None) -> None:
        self.directory = Path(directory) if directory else None
        self._loaded: dict[str, Dictionary] | None = None
        self._lock = threading.Lock()

    def get(self, language: str) -> Dictionary | None:
        return self.all().get(language)

    def all(self) -> dict[str, Dictionary]:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load()
        return self._loaded

    def _load(self) -> dict[str, Dictionary]:
        if self.directory is None:
            return {}
        if not self.directory.is_dir():
            logger.info("dictionary_dir %s is not a folder: questions match other languages by "
                        "spelling and the embedder only", self.directory)
            return {}
        try:
            found = load(self.directory)
        except Exception:  # noqa: BLE001 - a broken dictionary must not stop any question
            logger.exception("the dictionaries in %s cannot be read: answering without them",
                             self.directory)
            return {}
        if not found:
            logger.info("no FreeDict dictionaries in %s: questions match other languages by "
                        "spelling and the embedder only (apt-get install %s)", self.directory,
                        " ".join(DEBIAN_PACKAGES))
        return found


def shared_dictionaries(directory: Path | str | None) -> Dictionaries:
    """One `Dictionaries` per folder for the whole process (each answerer would otherwise read
    the same files again)."""
    return _shared(str(Path(directory).resolve()) if directory else "")


@functools.cache
def _shared(directory: str) -> Dictionaries:
    return Dictionaries(directory or None)
