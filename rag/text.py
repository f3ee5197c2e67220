"""Language-agnostic text helpers shared by ingestion, chunking, BM25 and evidence selection.

Everything here works on spans of the original string, so callers can always point back at the
exact characters of the source file.
"""

from __future__ import annotations

import functools
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
                # _ABBREV is anchored at the end and its longest word is 5 characters: a short
                # window decides the same as the whole prefix, in constant time (a whole-prefix
                # copy per boundary made one long line quadratic).
                before = segment[max(0, m.start() - 16): m.start()]
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
# Kept for callers that stem raw words; lexical retrieval uses `bm25_tokens` below.
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

# --- lexical retrieval (BM25) ------------------------------------------------------------------
# The articles and the questions are in five languages and three alphabets, and most questions
# are about an article in another language. Lexical evidence that crosses languages is names,
# numbers and shared Slavic roots, so BM25 compares words by a script-neutral Latin key
# (Шойгу/Шојгу/Šojgu → "sojgu", Пхенян/Пхеньян → "phenjan", Україна/Ukrajina → "ukrajina").
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

# Serbian is written in both alphabets; its Latin→Cyrillic mapping is one-to-one (three
# digraphs), which is how the Serbian stopwords below are given in both scripts.
_SR_DIGRAPHS = (("dž", "џ"), ("lj", "љ"), ("nj", "њ"))
_SR_LETTERS = str.maketrans({
    "a": "а", "b": "б", "c": "ц", "č": "ч", "ć": "ћ", "d": "д", "đ": "ђ", "e": "е", "f": "ф",
    "g": "г", "h": "х", "i": "и", "j": "ј", "k": "к", "l": "л", "m": "м", "n": "н", "o": "о",
    "p": "п", "r": "р", "s": "с", "š": "ш", "t": "т", "u": "у", "v": "в", "z": "з", "ž": "ж",
})

# Truncation to 5 characters of the key: long enough to keep roots apart, short enough to
# conflate the inflected forms of one word across languages (Корея/Кореја/Koreje → "korej").
# Measured on the seed questions, 5 beats 4, 6 and 7 (see benchmarks/results/retrieval.md).
BM25_PREFIX = 5

# Closed-class words (pronouns, interrogatives, prepositions, conjunctions, auxiliaries) of the
# corpus languages. In a small corpus these look rare, so BM25 would give them a high IDF and let
# a question's grammar pull articles written in the question's language. Only closed classes:
# content words are left to IDF. Serbian "kim" (instrumental of "ko") is left out on purpose:
# it is spelled like the most frequent name in Korean news.
_BM25_STOPWORD_TEXT = """
a an and are as at be been being but by can could did do does for from had has have he her his
how i if in into is it its me my no not of on or our she so than that the their them then there
these they this those to us was we were what when where which while who whom whose why will with
would you your about also
и в във на за да се с със от до по при към през след пред преди между без под над около чрез
срещу заради според или но а че ако като когато докато дали ли не ни нито също още вече само е
са съм си сме сте бил била било били беше бяха ще би бъде това тази този тези то той тя те него
нея тях им му й го ги ме ми нас вас ви кой коя кое кои какъв каква какво какви как колко кога
къде защо чий чия чие чии който която което които там тук така нещо някой някои всички всеки
и во на за да се со од до по при кон низ пред меѓу без под над околу преку против според или но
а дека ако како кога додека дали ли не ни ниту исто уште веќе само е се сум си сме сте бил била
било биле беше беа ќе би ова оваа овој овие тоа таа тој тие него неа нив им му ѝ го ги ја ме ми
нас вас ве кој која кое кои каков каква какво какви колку каде зошто чиј чија чие чии што
і й та а але або чи що як у в з із зі від до на за по при про під над між без для через після
перед біля щодо згідно крім не ні ані також ще вже лише тільки є був була було були буде бути
це цей ця ці той те ті він вона воно вони його її їх їм йому ним нею нами нас вас ми ви хто
який яка яке які якого якої яких скільки коли де куди чому чий чия чиє чиї цього цьому цим
цих цією того тому тим тих тією якому яким якій якою чого чим кого кому
"""
_SR_BM25_STOPWORD_TEXT = """
i u na za da se sa s od do po pri ka prema kroz pred posle između bez pod nad oko preko protiv
ili ali a što jer ako kao kad kada dok li ne ni niti takođe još već samo je su sam si smo ste
bio bila bilo bili biti će bi ovo ova ovaj ovi to ta taj ti on ona ono oni one njega nje njih
im mu joj ga ih me mi nas vas ko koji koja koje kojeg kog kome šta sta kakav kakva kakvo kako
koliko gde zašto čiji čija čije ovog ovom ovim ovih ove ovu tog tom tih te tu kojem kojim kojih
koju čega čemu čim koga
"""


def serbian_to_cyrillic(text: str) -> str:
    """Serbian Latin → Serbian Cyrillic (lower case)."""
    t = text.lower()
    for lat, cyr in _SR_DIGRAPHS:
        t = t.replace(lat, cyr)
    return t.translate(_SR_LETTERS)


def latin_key(word: str) -> str:
    """Script-neutral spelling of one normalised (case-folded) word, for lexical matching."""
    return word.translate(_LATIN_KEY)


_SR_STOP = _SR_BM25_STOPWORD_TEXT.split()
BM25_STOPWORDS = frozenset(
    STOPWORDS - {"kim"}
    | set(_BM25_STOPWORD_TEXT.split())
    | set(_SR_STOP)
    | {serbian_to_cyrillic(w) for w in _SR_STOP}
)
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
