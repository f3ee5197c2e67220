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

from . import language
from .text import sentence_spans
from .types import Document

logger = logging.getLogger(__name__)

EXTENSIONS = (".txt", ".md")

# --- page boilerplate, learned from the seed pages -------------------------------------------
# Whole lines that are navigation, widgets or UI labels (compared case-insensitively).
_UI_LINES = {
    "menu closed", "menu open", "close", "закрыть", "затвори", "закрити",
    "прочетете повече", "прочетете повече прочетете повече", "прочитајте повеќе", "читайте також",
    "pročitajte više", "read more", "последни новини", "най-четени", "најчитани", "останні новини",
    "najnovije vesti", "najčitanije", "latest news", "most read", "свят", "контекст",
}
_LINE_PATTERNS = [
    re.compile(r"^[\s$€£¥₴]*\d[\d.,\s]*([$€£¥₴]\s*\d[\d.,\s]*)*$"),  # price ticker "$39.60 €42.44"
    re.compile(r"^weather\s+[+-−]?\d+", re.I),  # weather widget "weather +11 Київ"
    re.compile(r"^(фото|foto|photo|източник|джерело|извор)\s*:", re.I),  # photo credits
    re.compile(r"^информационен сайт\b|^інформаційний сайт\b|^информативен портал\b", re.I),
]
# A caption: a short line that ends with a credit ("Източник: Kremlin.ru", "| Архив").
_CAPTION = re.compile(r"(източник|джерело|извор|source|foto|фото)\s*:\s*\S+\s*$|\|\s*\S+\s*$", re.I)
# Where the related-articles block starts; everything after it is another page's teaser.
_RELATED = re.compile(
    r"^(още от|прочетете още|читайте також|більше новин|прочитајте и|повеќе од|pročitajte još|"
    r"vezane vesti|related articles?|more from)\b",
    re.I,
)
# Inline "see also" link text glued into the body ("Видете и ова: <other headline>").
_SEE_ALSO = re.compile(
    r"^(видете и ова|вижте още|вижте също|дивіться також|pogledajte i|pogledajte još|see also)\s*:",
    re.I,
)


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
    for raw_line in text.splitlines(keepends=True):
        start, pos = pos, pos + len(raw_line)
        line = raw_line.strip().lstrip("\ufeff")
        if not line:
            continue
        if _RELATED.match(line):
            break
        if _is_boilerplate(line, seen_lines):
            # A caption line repeats the short line above it plus a credit: that line was the
            # caption's first half, not body text.
            if kept and seen_lines and line.startswith(seen_lines[-1]) and _CAPTION.search(line):
                kept.pop()
                seen_lines.pop()
            continue
        seen_lines.append(line)
        ls = start + (len(raw_line) - len(raw_line.lstrip("\ufeff").lstrip()))
        le = start + len(raw_line.rstrip())
        kept.extend(_drop_see_also(text, ls, le))
    return kept


def _is_boilerplate(line: str, seen: list[str]) -> bool:
    low = line.casefold()
    if low in _UI_LINES or any(p.search(line) for p in _LINE_PATTERNS):
        return True
    if len(line.split()) <= 14 and _CAPTION.search(line):
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
    if not any(_SEE_ALSO.match(text[s:e]) for s, e in spans):
        return [(start, end)]
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if _SEE_ALSO.match(text[s:e]):
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
