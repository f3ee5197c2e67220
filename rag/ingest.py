"""Read article files, reject unreadable ones, and mark which spans are article body.

Cleaning never rewrites text: it records the kept (start, end) spans of the original file, so
every offset computed later points at the exact characters on disk.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import lang as lang_packs
from . import language
from .text import sentence_spans
from .types import Document

logger = logging.getLogger(__name__)

EXTENSIONS = (".txt", ".md")

# --- page boilerplate ------------------------------------------------------------------------
# Two kinds of knowledge, neither learned from particular pages:
# - general shape: a line of at most `_SHORT_WORDS` words with no sentence punctuation and no
#   digit is a label (menu, section name, "Most read"); a line that is mostly not letters is a
#   widget (price ticker "$39.60 €42.44", weather "+11°"); a line with a photo credit at its end
#   is a caption;
# - per-language page furniture in the language packs (rag/lang/<code>.json, "boilerplate"):
#   UI labels, the start of a related-articles block, "see also" link texts, credit words.
_SHORT_WORDS = 3
_MIN_LETTER_SHARE = 0.5
_SENTENCE_PUNCT = (".", "!", "?", "…", '"', "“", "”", "»", ":")


def _rx(name: str) -> re.Pattern[str]:
    rx = lang_packs.pattern(f"boilerplate:{name}")
    return rx if rx is not None else re.compile("(?!)")


_UI_LINES = _rx("ui_lines")
_RELATED = _rx("related_starts")
_SEE_ALSO = re.compile(r"^" + _rx("see_also").pattern + r"\s*:")
# A caption: a short line that ends with a credit ("Източник: Kremlin.ru", "| Архив").
_CAPTION = re.compile(_rx("credit_words").pattern + r"\s*:\s*\S+\s*$|\|\s*\S+\s*$")


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def list_files(path: Path) -> list[Path]:
    """Article files under `path` (a file or a directory, searched recursively), sorted."""
    if path.is_file():
        return [path]
    if not path.exists():
        from .types import RagError

        raise RagError(f"{path} does not exist: give a file or a folder of .txt/.md articles")
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def read_document(path: Path) -> Document | Skipped:
    """Read and clean one article, or say why it cannot be used."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        return Skipped(str(path), f"cannot be read ({e.strerror or e})")
    if not raw.strip():
        return Skipped(str(path), "is empty")
    if b"\x00" in raw[:8192]:
        return Skipped(str(path), "looks binary (contains NUL bytes), not a text article")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Skipped(str(path), f"is not valid UTF-8 (byte {e.start}); save it as UTF-8")
    kept = clean_spans(text)
    if not kept:
        return Skipped(str(path), "has no article text left after removing page boilerplate")
    body = "\n".join(text[s:e] for s, e in kept)
    code, guess = language.detect(body)
    return Document(
        source=path.name,
        path=str(path),
        text=text,
        title=_title(text, kept),
        language=code,
        language_guess=guess,
        sha256=hashlib.sha256(raw).hexdigest(),
        chars=len(text),
        kept=tuple(kept),
    )


def read_documents(paths: Iterable[Path]) -> tuple[list[Document], list[Skipped]]:
    docs, skipped = [], []
    for p in paths:
        r = read_document(p)
        if isinstance(r, Skipped):
            logger.warning("skipping %s: %s", r.path, r.reason)
            skipped.append(r)
        else:
            docs.append(r)
    return docs, skipped


def clean_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) spans of `text` that are article body, in order."""
    kept: list[tuple[int, int]] = []
    seen_lines: list[str] = []
    pos = 0
    raw_lines = text.splitlines(keepends=True)
    stripped = [r.strip().lstrip("\ufeff") for r in raw_lines]
    for i, raw_line in enumerate(raw_lines):
        start, pos = pos, pos + len(raw_line)
        line = stripped[i]
        if not line:
            continue
        if not seen_lines and _is_label(line):
            # A short first line is the headline when prose follows it, else page chrome.
            following = next((ln for ln in stripped[i + 1:] if ln), "")
            if not following.endswith(_SENTENCE_PUNCT):
                continue
            seen_lines.append(line)
            kept.append((start + (len(raw_line) - len(raw_line.lstrip("\ufeff").lstrip())),
                         start + len(raw_line.rstrip())))
            continue
        if _RELATED.match(line.casefold()):
            break
        if _is_boilerplate(line, seen_lines):
            # A caption line repeats the short line above it plus a credit: that line was the
            # caption's first half, not body text.
            if (kept and seen_lines and line.startswith(seen_lines[-1])
                    and _CAPTION.search(line.casefold())):
                kept.pop()
                seen_lines.pop()
            continue
        seen_lines.append(line)
        ls = start + (len(raw_line) - len(raw_line.lstrip("\ufeff").lstrip()))
        le = start + len(raw_line.rstrip())
        kept.extend(_drop_see_also(text, ls, le))
    return kept


_YEAR = re.compile(r"\b(?:1[89]|20)\d\d\b")
_MONTH = lang_packs.pattern("months") or re.compile("(?!)")


def _is_label(line: str) -> bool:
    """A short line that is not prose: no sentence punctuation, and not a dateline ("14
    September 2023" names a month or a year)."""
    low = line.casefold()
    return (len(line.split()) <= _SHORT_WORDS and not line.rstrip().endswith(_SENTENCE_PUNCT)
            and not _YEAR.search(low) and not _MONTH.search(low))


def _mostly_not_letters(line: str) -> bool:
    chars = [ch for ch in line if not ch.isspace()]
    return bool(chars) and sum(ch.isalpha() for ch in chars) / len(chars) < _MIN_LETTER_SHARE


def _is_boilerplate(line: str, seen: list[str]) -> bool:
    low = line.casefold()
    if _UI_LINES.fullmatch(low) or _mostly_not_letters(line):
        return True
    if seen and _is_label(line):
        return True
    if len(line.split()) <= 14 and _CAPTION.search(low):
        return True
    # A headline repeated with a photo caption glued on ("<headline> <caption>"); a body
    # sentence that merely starts like the lede goes on for longer and ends with a full stop.
    return any(
        len(s) > 20 and line != s and line.startswith(s) and _is_caption_tail(line[len(s):])
        for s in seen
    )


def _is_caption_tail(rest: str) -> bool:
    rest = rest.strip()
    return len(rest.split()) <= 8 and not rest.endswith((".", "!", "?", "…", '"', "“", "»"))


def _drop_see_also(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Split a line into sentences and drop "see also" link texts glued into it."""
    spans = sentence_spans(text, start, end)
    if not any(_SEE_ALSO.match(text[s:e].casefold()) for s, e in spans):
        return [(start, end)]
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if _SEE_ALSO.match(text[s:e].casefold()):
            continue
        if out and text[out[-1][1]:s].strip() == "":
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _title(text: str, kept: list[tuple[int, int]]) -> str:
    """The headline: the first body line, or its first sentence when the page has no headline."""
    s, e = kept[0]
    line = text[s:e].split("\n", 1)[0]
    if len(line) > 160:
        first = sentence_spans(line)
        line = line[first[0][0]:first[0][1]] if first else line
        if len(line) > 160:
            line = line[:157].rstrip() + "…"
    return line.strip()
