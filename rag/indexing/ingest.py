"""Read article files, reject unreadable ones, and mark which spans are article body.

Cleaning never rewrites text: it records the kept (start, end) spans of the original file, so
every offset computed later points at the exact characters on disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rag import lang as lang_packs
from rag.lang import detect as language
from rag.lang.text import sentence_spans
from rag.types import Document

logger = logging.getLogger(__name__)

EXTENSIONS = (".txt", ".md")
# Part of every document's content hash: bump it when cleaning or chunking changes what an
# article's passages are, so that `rag index` re-processes files whose bytes did not change
# instead of keeping passages cut by the old rules. (Vectors of unchanged passage texts come
# back from the embedding cache when one is configured.)
PROCESSING_VERSION = "clean-5"


def content_hash(raw: bytes) -> str:
    """What decides whether an indexed article is up to date: its bytes and how they are
    processed."""
    return hashlib.sha256(PROCESSING_VERSION.encode() + b"\0" + raw).hexdigest()

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
# A caption: a short line that ends with a credit ("Източник: example.org", "| Архив").
_CAPTION = re.compile(_rx("credit_words").pattern + r"\s*:\s*\S+\s*$|\|\s*\S+\s*$")


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def list_files(path: Path) -> list[Path]:
    """Article files under `path` (a file or a directory, searched recursively), sorted.

    Only regular files with a supported extension count, and never through a symbolic link:
    a link inside the folder could point anywhere (`/etc/passwd`), and a linked copy of an
    article would be indexed twice. `rejected_files` says which files were left out and why.
    """
    return [p for p, reason in scan(path) if reason is None]


def rejected_files(path: Path) -> list[Skipped]:
    return [Skipped(str(p), reason) for p, reason in scan(path) if reason is not None]


def scan(path: Path) -> list[tuple[Path, str | None]]:
    """Every candidate file under `path` with the reason it is rejected (None: an article)."""
    from rag.types import RagError

    if path.is_symlink():
        raise RagError(f"{path} is a symbolic link: give the real file or folder")
    if path.is_file():
        if path.suffix.lower() not in EXTENSIONS:
            raise RagError(f"{path} is not a .txt or .md article")
        return [(path, None)]
    if not path.is_dir():
        raise RagError(f"{path} does not exist (or is not a regular file or folder): give a "
                       "file or a folder of .txt/.md articles")
    out: list[tuple[Path, str | None]] = []
    # os.walk does not descend into linked folders (followlinks=False).
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            p = Path(dirpath) / name
            if name.startswith(".") or p.suffix.lower() not in EXTENSIONS:
                continue  # hidden (e.g. a half-written upload) or not an article type
            if p.is_symlink():
                out.append((p, "is a symbolic link (only regular files in the folder are "
                               "indexed)"))
            elif not p.is_file():
                out.append((p, "is not a regular file"))
            else:
                out.append((p, None))
    return sorted(out)


def source_key(file: Path, root: Path | None) -> str:
    """A document's name: its path relative to the data folder, POSIX style ("bg/a.txt"); a
    file indexed on its own is named by its file name."""
    if root is None:
        return file.name
    return file.relative_to(root).as_posix()


def decode(raw: bytes) -> str:
    """UTF-8 (with or without BOM), or UTF-16 with a BOM; raises UnicodeDecodeError."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    return raw.decode("utf-8")


def read_document(path: Path, source: str | None = None,
                  display_path: str | None = None) -> Document | Skipped:
    """Read and clean one article, or say why it cannot be used. `source` is the document's
    key (default: the file name); `display_path` the path recorded for it (default: `path`)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        return Skipped(str(path), f"cannot be read ({e.strerror or e})")
    return document_from_bytes(raw, source or path.name, display_path or str(path))


def document_from_bytes(raw: bytes, source: str, path: str) -> Document | Skipped:
    if not raw.strip():
        return Skipped(path, "is empty")
    is_utf16 = raw.startswith((b"\xff\xfe", b"\xfe\xff"))
    if not is_utf16 and b"\x00" in raw[:8192]:
        return Skipped(path, "looks binary (contains NUL bytes), not a text article")
    try:
        text = decode(raw)
    except UnicodeDecodeError as e:
        return Skipped(path, f"is not UTF-8 text (bad byte at position {e.start}); "
                             "save it as UTF-8")
    if is_utf16:
        text = text.lstrip("\ufeff")
        if "\x00" in text:
            return Skipped(path, "looks binary (contains NUL characters), not a text article")
    kept = clean_spans(text)
    if not kept:
        return Skipped(path, "has no article text left after removing page boilerplate")
    body = "\n".join(text[s:e] for s, e in kept[:200])
    # The opening of the body decides the language; a huge file must not cost a huge detection.
    code, guess = language.detect(body[:20000])
    return Document(
        source=source,
        path=path,
        text=text,
        title=_title(text, kept),
        language=code,
        language_guess=guess,
        sha256=content_hash(raw),
        chars=len(text),
        kept=tuple(kept),
    )


def read_documents(paths: Iterable[Path],
                   root: Path | None = None) -> tuple[list[Document], list[Skipped]]:
    docs, skipped = [], []
    for p in paths:
        r = read_document(p, source_key(p, root))
        if isinstance(r, Skipped):
            logger.warning("skipping %s: %s", r.path, r.reason)
            skipped.append(r)
        else:
            docs.append(r)
    return docs, skipped


def clean_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) spans of `text` that are article body, in order. Linear in the size
    of the text (benchmarks/cleaning.py)."""
    kept: list[tuple[int, int]] = []
    seen = _SeenLines()
    pos = 0
    raw_lines = text.splitlines(keepends=True)
    stripped = [r.strip().lstrip("\ufeff") for r in raw_lines]
    for i, raw_line in enumerate(raw_lines):
        start, pos = pos, pos + len(raw_line)
        line = stripped[i]
        if not line:
            continue
        if not seen.lines and _is_label(line):
            # A short first line is the headline when prose follows it, else page chrome.
            following = next((ln for ln in stripped[i + 1:] if ln), "")
            if not following.endswith(_SENTENCE_PUNCT):
                continue
            seen.add(line)
            kept.append((start + (len(raw_line) - len(raw_line.lstrip("\ufeff").lstrip())),
                         start + len(raw_line.rstrip())))
            continue
        if _RELATED.match(line.casefold()):
            break
        if _is_boilerplate(line, seen):
            # A caption line repeats the short line above it plus a credit: that line was the
            # caption's first half, not body text.
            if (kept and seen.last and line.startswith(seen.last)
                    and _CAPTION.search(line.casefold())):
                kept.pop()
                seen.pop()
            continue
        seen.add(line)
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


class _SeenLines:
    """The body lines so far, as a list (for the last one) and a multiset (for lookups)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.counts: dict[str, int] = {}
        self.lengths: dict[int, int] = {}  # checked before slicing a long line

    @property
    def last(self) -> str | None:
        return self.lines[-1] if self.lines else None

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.counts[line] = self.counts.get(line, 0) + 1
        self.lengths[len(line)] = self.lengths.get(len(line), 0) + 1

    def pop(self) -> None:
        line = self.lines.pop()
        for table, key in ((self.counts, line), (self.lengths, len(line))):
            table[key] -= 1
            if not table[key]:
                del table[key]

    def __contains__(self, line: str) -> bool:
        return line in self.counts


def _is_boilerplate(line: str, seen: _SeenLines) -> bool:
    low = line.casefold()
    if _UI_LINES.fullmatch(low) or _mostly_not_letters(line):
        return True
    if seen.lines and _is_label(line):
        return True
    if len(line.split()) <= 14 and _CAPTION.search(low):
        return True
    # A headline repeated with a photo caption glued on ("<headline> <caption>"); a body
    # sentence that merely starts like the lede goes on for longer and ends with a full stop.
    # The tail may have at most 8 words, so only cuts within the line's last 9 words can
    # qualify: those few prefixes are looked up, instead of comparing with every seen line.
    ends = [m.end() for m in re.finditer(r"\S+", line)]
    first_cut = ends[-9] if len(ends) >= 9 else 0
    return any(
        cut in seen.lengths and line[:cut] in seen and _is_caption_tail(line[cut:])
        for cut in range(max(first_cut, 21), len(line))
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
