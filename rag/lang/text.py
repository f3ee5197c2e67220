"""Language-agnostic text helpers shared by ingestion, chunking, BM25 and evidence selection.

Everything here works on spans of the original string, so callers can always point back at the
exact characters of the source file.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

from rag import lang as lang_packs

# Lower/upper case letters of the scripts in the corpus (Latin incl. Serbian, Polish, Czech and
# Slovak letters, Cyrillic incl. Macedonian, Serbian and Ukrainian letters).
_LOWER = "a-zčćđšžąęłńóśźżáéíúůýďěňřťäôĺľŕа-яёіїєґјљњћџђѓќѕ"
_UPPER = "A-ZČĆĐŠŽĄĘŁŃÓŚŹŻÁÉÍÚŮÝĎĚŇŘŤÄÔĹĽŔА-ЯЁІЇЄҐЈЉЊЋЏЂЃЌЅ"

# A sentence ends at . ! ? … (plus closing quotes/brackets) followed by whitespace and a capital,
# digit or opening quote.
_BOUNDARY = re.compile(
    rf"(?<=[.!?…])[\"'»”“)\]]*\s+(?=[\"'«„“(\[]?[{_UPPER}0-9])"
)
# Scraped pages glue a link text to the next sentence: "арсеналШојгу", "oružje.Severna".
# Three lowercase letters before the capital keep names such as "McDonald" whole.
_GLUED_WORDS = re.compile(rf"(?<=[{_LOWER}]{{3}})(?=[{_UPPER}][{_LOWER}])")
_GLUED_PERIOD = re.compile(rf"(?<=[{_LOWER}]{{2}}[.!?])(?=[{_UPPER}][{_LOWER}])")
# Abbreviations that end with a period but rarely end a sentence (closed class, per language).
_ABBREV = re.compile(
    r"(?:\b(?:" + "|".join(sorted(map(re.escape, lang_packs.words("abbreviations")), key=len,
                                    reverse=True)) + r")\.)$", re.I)
# An initial ("Н.Ф. Гамалеи", "J. Smith"): one capital letter standing alone before the period.
# A sentence rarely ends with one ("plan B."), a name cut after its initial often would.
_INITIAL = re.compile(rf"(?:^|[^\w])[{_UPPER}]\.$")

_WORD = re.compile(r"\w+", re.UNICODE)


def _starts_with_function_word(segment: str, at: int) -> bool:
    """Whether the text at `at` begins with a function word ("The", "Той", "Pak"): after an
    abbreviation or an initial that makes it a new sentence ("World War I. The ..."), where a
    name ("ген. Мутафчийски", "J. Smith") continues the same one."""
    m = _WORD.search(segment, at, at + 40)
    return bool(m and m.group().casefold() in STOPWORDS)


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Split text[start:end] into sentence spans (absolute offsets), trimmed of whitespace.

    Line breaks always end a sentence: in these scraped articles a line is a paragraph or a
    heading, never half a sentence.
    """
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    for line in re.finditer(r"[^\n]+", text[start:end]):
        ls = start + line.start()
        le = start + line.end()
        cuts = {ls, le}
        segment = text[ls:le]
        for rx in (_BOUNDARY, _GLUED_WORDS, _GLUED_PERIOD):
            for m in rx.finditer(segment):
                # _ABBREV is anchored at the end and its longest word is 4 characters: a short
                # window decides the same as the whole prefix, in constant time (a whole-prefix
                # copy per boundary made one long line quadratic).
                before = segment[max(0, m.start() - 16): m.start()]
                if (rx is _BOUNDARY and (_ABBREV.search(before) or _INITIAL.search(before))
                        and not _starts_with_function_word(segment, m.end())):
                    continue
                cuts.add(ls + m.end() if rx is _BOUNDARY else ls + m.start())
        ordered = sorted(cuts)
        for a, b in zip(ordered, ordered[1:], strict=False):
            a, b = _trim(text, a, b)
            if b > a:
                spans.append((a, b))
    return spans


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` with their trailing whitespace attached, so ''.join(result) == text.

    This is the shape llama-index's SentenceSplitter expects from `chunking_tokenizer_fn`.
    """
    spans = sentence_spans(text)
    if not spans:
        return [text] if text else []
    pieces = []
    starts = [s for s, _ in spans]
    starts[0] = 0
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else len(text)
        pieces.append(text[s:e])
    return pieces


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def normalize(text: str) -> str:
    """Case-fold, unify apostrophes/quotes and whitespace: for matching, never for display."""
    t = unicodedata.normalize("NFC", text).casefold()
    t = t.replace("’", "'").replace("ʼ", "'").replace("`", "'")
    return re.sub(r"\s+", " ", t).strip()


def words(text: str) -> list[str]:
    return _WORD.findall(normalize(text))


# Slavic languages inflect heavily (снаряда/снаряди/снарядите); Snowball has no Bulgarian,
# Macedonian or Ukrainian stemmer, so a fixed-length prefix is the language-agnostic stand-in.
# Kept for callers that stem raw words; lexical retrieval uses `bm25_tokens` below.
STEM_PREFIX = 6

# Function words of every language with a pack (rag/lang/): they carry no topic.
STOPWORDS = lang_packs.words("stopwords")

# --- lexical retrieval (BM25) ------------------------------------------------------------------
# The articles and the questions are in five languages and three alphabets, and most questions
# are about an article in another language. Lexical evidence that crosses languages is names,
# numbers and shared Slavic roots, so BM25 compares words by a script-neutral Latin key
# (Шолц/Шольц/Šolc → "solc", Італія/Italija → "italija").
# Not a romanisation standard: each letter maps to what its counterparts in the other scripts
# map to (ш/š → s, ч/ћ/č/ć/ќ → c, ђ/đ/ѓ → dj, й/ј → j), so cognates meet.
_LATIN_KEY = str.maketrans({
    "а": "a", "б": "b", "в": "v", "г": "g", "ґ": "g", "д": "d", "ђ": "dj", "ѓ": "dj", "е": "e",
    "є": "je", "ё": "jo", "ж": "z", "з": "z", "ѕ": "dz", "и": "i", "і": "i", "ї": "ji", "й": "j",
    "ј": "j", "к": "k", "ќ": "c", "л": "l", "љ": "lj", "м": "m", "н": "n", "њ": "nj", "о": "o",
    "п": "p", "р": "r", "с": "s", "т": "t", "ћ": "c", "у": "u", "ф": "f", "х": "h", "ц": "c",
    "ч": "c", "џ": "dz", "ш": "s", "щ": "st", "ъ": "a", "ы": "i", "ь": "", "э": "e", "ю": "ju",
    "я": "ja", "č": "c", "ć": "c", "đ": "dj", "š": "s", "ž": "z", "'": "",
})

# Truncation to 5 characters of the key: long enough to keep roots apart, short enough to
# conflate the inflected forms of one word across languages (Италия/Италија/Italije → "itali").
# Measured on the seed questions, 5 beats 4, 6 and 7 (see benchmarks/results/retrieval.md).
BM25_PREFIX = 5

_CYRILLIC_LETTER = re.compile(r"[\u0400-\u04ff]")
_LATIN_LETTER = re.compile(r"[A-Za-z\u00c0-\u024f]")


# A web address: its words ("/2018/11/who-won-the-vote.html") match a question well and answer
# nothing. With a scheme, "www.", an e-mail, or a host name followed by a path.
_LINK = re.compile(r"(?:\w+://|www\.)\S+|\S+@\S+\.\w+|\b[\w-]+(?:\.[\w-]+)+/\S*",
                   re.IGNORECASE)


def says_something(text: str) -> bool:
    """Whether a text has a word outside web and e-mail addresses: a line that is only a link
    (an article's source URL) is never a passage to read nor an answer to quote."""
    return bool(words(_LINK.sub(" ", text)))


def main_script(text: str) -> str | None:
    """"cyrillic" or "latin", whichever most of the letters of `text` are in (None without
    letters of either): a quote in English inside a Ukrainian article is not in Ukrainian."""
    cyrillic = len(_CYRILLIC_LETTER.findall(text))
    latin = len(_LATIN_LETTER.findall(text))
    if not cyrillic and not latin:
        return None
    return "cyrillic" if cyrillic >= latin else "latin"


def serbian_to_cyrillic(text: str) -> str:
    """Serbian Latin -> Serbian Cyrillic (lower case), with the Serbian pack's table."""
    return lang_packs.serbian_to_cyrillic(text)


# Latin letters that carry no combining mark to strip (Polish ł is one letter, not l + mark).
_PLAIN = str.maketrans({"ł": "l", "ø": "o", "ß": "ss", "æ": "ae", "œ": "oe", "ı": "i"})


def latin_key(word: str) -> str:
    """Script-neutral spelling of one normalised (case-folded) word, for lexical matching.

    The Cyrillic letters and the Serbian/Croatian Latin ones map through `_LATIN_KEY`; any other
    accented Latin letter loses its accent (Polish ó ą ś ż, Czech ř ě ů ý, French é), so that
    Véron meets Верон and Górka meets Горка."""
    key = word.translate(_LATIN_KEY)
    if key.isascii():
        return key
    return _strip_marks(key)


@functools.lru_cache(maxsize=100_000)
def _strip_marks(key: str) -> str:
    bare = "".join(c for c in unicodedata.normalize("NFD", key.translate(_PLAIN))
                   if not unicodedata.combining(c))
    # A Cyrillic letter with a mark (ѝ) is a plain one now: map it as well.
    return bare.translate(_LATIN_KEY)


# Closed-class words (pronouns, interrogatives, prepositions, conjunctions, auxiliaries) of
# every pack's language. In a small corpus these look rare, so BM25 would give them a high IDF
# and let a question's grammar pull articles written in the question's language. Only closed
# classes: content words are left to IDF.
BM25_STOPWORDS = STOPWORDS
# A word with inner apostrophes is one word (Ukrainian зв'язки, English don't).
_BM25_WORD = re.compile(r"\w+(?:'\w+)*", re.UNICODE)


def bm25_tokens(text: str) -> list[str]:
    """Tokens for lexical retrieval: words of 2+ characters minus stopwords, spelled with the
    script-neutral key and truncated to `BM25_PREFIX` characters. Numbers stay whole (2018 must
    not match 20180). No English stemmer: "running" and "run" stay apart."""
    keys = (_bm25_key(w) for w in _BM25_WORD.findall(normalize(text)))
    return [k for k in keys if k]


@functools.lru_cache(maxsize=200_000)
def _bm25_key(w: str) -> str:
    """The BM25 token of one normalised word ("" for none). Memoised: a corpus repeats its
    words, and tokenising every passage was the largest cost of a full BM25 build."""
    if len(w) < 2 or w in BM25_STOPWORDS:
        return ""
    return w if w.isdigit() else latin_key(w)[:BM25_PREFIX]


def line_number(line_starts: list[int], offset: int) -> int:
    """1-based line of a character offset, given the sorted start offsets of every line."""
    lo, hi = 0, len(line_starts)
    while lo < hi:
        mid = (lo + hi) // 2
        if line_starts[mid] <= offset:
            lo = mid + 1
        else:
            hi = mid
    return lo


def line_starts(text: str) -> list[int]:
    return [0] + [m.end() for m in re.finditer("\n", text)]


def unique(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for it in items:
        if it not in seen:
            seen.add(it)
            out.append(it)
    return out
