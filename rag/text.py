"""Language-agnostic text helpers shared by ingestion, chunking, BM25 and evidence selection.

Everything here works on spans of the original string, so callers can always point back at the
exact characters of the source file.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Lower/upper case letters of the scripts in the corpus (Latin incl. Serbian diacritics, Cyrillic
# incl. Macedonian, Serbian and Ukrainian letters).
_LOWER = "a-zčćđšžа-яёіїєґјљњћџђѓќѕ"
_UPPER = "A-ZČĆĐŠŽА-ЯЁІЇЄҐЈЉЊЋЏЂЃЌЅ"

# A sentence ends at . ! ? … (plus closing quotes/brackets) followed by whitespace and a capital,
# digit or opening quote.
_BOUNDARY = re.compile(
    rf"(?<=[.!?…])[\"'»”“)\]]*\s+(?=[\"'«„“(\[]?[{_UPPER}0-9])"
)
# Scraped pages glue a link text to the next sentence: "арсеналШојгу", "oružje.Severna".
# Three lowercase letters before the capital keep names such as "McDonald" whole.
_GLUED_WORDS = re.compile(rf"(?<=[{_LOWER}]{{3}})(?=[{_UPPER}][{_LOWER}])")
_GLUED_PERIOD = re.compile(rf"(?<=[{_LOWER}]{{2}}[.!?])(?=[{_UPPER}][{_LOWER}])")
# Abbreviations that end with a period but rarely end a sentence.
_ABBREV = re.compile(r"(?:\b(?:г|гг|ул|т\.е|д-р|проф|mr|mrs|dr|st|vs|tj|npr|itd|сл|др)\.)$", re.I)

_WORD = re.compile(r"\w+", re.UNICODE)


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
                before = segment[: m.start()]
                if rx is _BOUNDARY and _ABBREV.search(before):
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
STEM_PREFIX = 6

# Function words of the corpus languages and English; they carry no topic.
_STOPWORD_TEXT = """
a an and are as at be by did do does for from had has have how in is it its of on or that the
their them they this to was were what when where which who whom why will with would about
и в во на за да се со од до е су је ли не ни що як та і й у з із від це чи
що ще са по от с със към как какво кои кой коя кога къде защо бил била били
што кој која каде зошто дали го ја ги му
i u na za da se sa od do je su li ne ni koji koja koje kako šta sta gde kada zašto
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def bm25_tokens(text: str) -> list[str]:
    """Tokens for lexical retrieval: words of 2+ chars, stopwords dropped, prefix-stemmed."""
    return [w[:STEM_PREFIX] for w in words(text) if len(w) > 1 and w not in STOPWORDS]


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
