"""Pure HTML/markdown rendering for the chat UI: answers, citation chips, sources, the viewer.

Every piece of article, answer or user text passes through `esc()` before it is placed in
markup. Highlighting works on character spans of the original text and escapes each segment
on its own, so a <mark> is never spliced into already-escaped text (where offsets would no
longer line up and entity fragments could be cut in half).

Chips are plain links `<a class="cite-chip" href="#cite-T-N">`: Gradio's Chatbot sanitizer
keeps `class` and `href` but drops `data-*` attributes, so the reference travels in the href.
A page script (rag/app/ui.py) turns a click on such a link into a "open this source" event.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rag.lang.detect import NAMES as LANGUAGE_NAMES
from rag.types import Answer, Citation, Retrieved

# One document as pipeline.document() returns it: (DocInfo, full text, kept spans).
DocText = tuple[Any, str, Sequence[tuple[int, int]]]
DocLookup = Callable[[str], "DocText | None"]

# "[1]", "[1, 2]", "[1,2]": the answer module's citation markers.
MARKER_RE = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
# A run of markers, possibly separated by spaces: "[1][2]", "[1] [3]".
_MARKER_RUN = re.compile(r"(?:\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\])+")
# List bullets the extractive answer may put before a quote; we draw our own list.
_BULLET = re.compile(r"^\s*(?:[-*•·]|\d{1,2}[.)])\s+")

PASSAGE_CONTEXT = 260  # characters of paragraph kept on each side of a quote in a source card


def esc(text: str) -> str:
    """HTML-escape text (quotes too, so it is safe inside attributes)."""
    return html.escape(text, quote=True)


def esc_md(text: str) -> str:
    """Escape text for a Chatbot message (markdown + HTML): HTML-escaped, and square brackets
    turned into entities so article text can never form a markdown link or image."""
    return esc(text).replace("[", "&#91;").replace("]", "&#93;")


def lang_label(code: str) -> str:
    code = (code or "").strip().lower()
    return code.upper() if code else "?"


def lang_tag(code: str) -> str:
    """A small language badge, with the language's name as tooltip."""
    name = LANGUAGE_NAMES.get((code or "").lower(), code or "unknown language")
    return f'<span class="lang-tag" title="{esc(name)}">{esc(lang_label(code))}</span>'


def lines_label(lines: Sequence[int]) -> str:
    a, b = int(lines[0]), int(lines[1])
    return f"line {a}" if a == b else f"lines {a}–{b}"


def highlight(text: str, spans: Iterable[tuple[int, int]], *, mark_id: str | None = None) -> str:
    """`text` escaped, with each (start, end) span (relative to `text`) wrapped in <mark>.

    Spans are clipped to the text, overlapping ones merged; `mark_id` goes on the first mark.
    """
    n = len(text)
    clipped = sorted((max(0, s), min(n, e)) for s, e in spans if min(n, e) > max(0, s))
    merged: list[list[int]] = []
    for s, e in clipped:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    out: list[str] = []
    pos = 0
    for i, (s, e) in enumerate(merged):
        out.append(esc(text[pos:s]))
        attr = f' id="{esc(mark_id)}"' if mark_id and i == 0 else ""
        out.append(f"<mark{attr}>{esc(text[s:e])}</mark>")
        pos = e
    out.append(esc(text[pos:]))
    return "".join(out)


# --- the chat messages ------------------------------------------------------------------------


def chip(turn: int, n: int, citation: Citation | None = None) -> str:
    title = ""
    if citation is not None:
        title = f' title="{esc(f"{citation.source}, {lines_label(citation.lines)}")}"'
    return f'<a class="cite-chip" href="#cite-{turn}-{n}"{title}>[{n}]</a>'


def _with_chips(text: str, turn: int, cited: dict[int, Citation]) -> str:
    """Escape answer text and turn markers of known citations into chips.

    Markers naming no citation stay visible as plain text: hiding them would hide a problem.
    """
    out: list[str] = []
    pos = 0
    for m in MARKER_RE.finditer(text):
        out.append(esc_md(text[pos:m.start()]))
        nums = [int(x) for x in m.group(1).split(",")]
        if all(k in cited for k in nums):
            out.append("".join(chip(turn, k, cited[k]) for k in nums))
        else:
            out.append(esc_md(m.group(0)))
        pos = m.end()
    out.append(esc_md(text[pos:]))
    return "".join(out)


def _segments(line: str) -> list[tuple[str, list[int]]]:
    """Split a line after each run of markers: [(text including its markers, cited numbers)]."""
    segs: list[tuple[str, list[int]]] = []
    pos = 0
    for m in _MARKER_RUN.finditer(line):
        nums = [int(x) for g in MARKER_RE.findall(m.group(0)) for x in g.split(",")]
        segs.append((line[pos:m.end()], nums))
        pos = m.end()
    if line[pos:].strip():
        segs.append((line[pos:], []))
    return segs


def _extractive_body(answer: Answer, turn: int, cited: dict[int, Citation]) -> str:
    """Extractive answers are quotes: one list item per quote, each with its language badge."""
    parts: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if items:
            parts.append("\n".join(items))
            items.clear()

    for line in answer.answer.splitlines():
        if not line.strip():
            continue
        segs = _segments(line)
        if not any(nums for _, nums in segs):
            flush()
            parts.append(_with_chips(line.strip(), turn, cited))
            continue
        for seg, nums in segs:
            body = _BULLET.sub("", seg.strip())
            if not body:
                continue
            langs: list[str] = []
            for k in nums:
                if k in cited and cited[k].language not in langs:
                    langs.append(cited[k].language)
            tags = "".join(lang_tag(c) + " " for c in langs)
            items.append(f"- {tags}{_with_chips(body, turn, cited)}")
    flush()
    return "\n\n".join(parts)


def render_user(question: str) -> str:
    """The user's message, shown literally (it may contain markup or markdown)."""
    return esc_md(question)


def render_partial(text: str) -> str:
    """A streaming answer so far: escaped, markers not yet chips (citations come at the end)."""
    return esc_md(text) + ' <span class="typing">▍</span>'


def render_status(answer: Answer) -> str:
    """One line: mode, backend and model, timings; notes (e.g. Ollama unreachable) above it."""
    t = answer.timings
    model = f" · {answer.backend.model}" if answer.backend.model else ""
    first = "—" if t.first_token_ms is None else _ms(t.first_token_ms)
    bits = [
        f"mode: {answer.mode}",
        f"backend: {answer.backend.name}{model}",
        f"retrieval {_ms(t.retrieve_ms)}",
        f"first token {first}",
        f"total {_ms(t.total_ms)}",
    ]
    notes = "".join(f'<div class="answer-note">⚠ {esc(n)}</div>' for n in answer.notes)
    status = f'<div class="answer-status">{esc(" · ".join(bits))}</div>'
    return notes + status


def _ms(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def render_answer(answer: Answer, turn: int) -> str:
    """The final chat message for an answer: text with chips, then its status line."""
    cited = {c.n: c for c in answer.citations}
    if answer.insufficient_context or not answer.citations:
        # Nothing cited: no chips, no sources, and say so rather than look like an answer.
        body = f'<div class="refusal">{esc(answer.answer.strip())}</div>'
        if answer.insufficient_context:
            body += '<div class="refusal-why">No source passage answers this question.</div>'
    elif answer.mode == "extractive":
        body = _extractive_body(answer, turn, cited)
    else:
        body = _with_chips(answer.answer.strip(), turn, cited)
    return f"{body}\n\n{render_status(answer)}"


def render_error(message: str, partial: str = "") -> str:
    """An error in place of (or after a partial) answer, readable and escaped."""
    before = f"{esc_md(partial)}\n\n" if partial.strip() else ""
    return f'{before}<div class="answer-error">⚠ {esc(message)}</div>'


# --- the sources panel ------------------------------------------------------------------------


def passage_window(text: str, start: int, end: int,
                   context: int = PASSAGE_CONTEXT) -> tuple[int, int]:
    """The paragraph (line) around text[start:end], clipped to `context` chars on each side
    at a word boundary."""
    p0 = text.rfind("\n", 0, start) + 1
    p1 = text.find("\n", end)
    p1 = len(text) if p1 < 0 else p1
    if start - p0 > context:
        cut = text.find(" ", start - context, start)
        p0 = cut + 1 if cut >= 0 else start - context
    if p1 - end > context:
        cut = text.rfind(" ", end, end + context)
        p1 = cut if cut > end else end + context
    return p0, p1


def render_passage(text: str, start: int, end: int, context: int = PASSAGE_CONTEXT) -> str:
    """The quote text[start:end] highlighted inside its surrounding paragraph."""
    p0, p1 = passage_window(text, start, end, context)
    inner = highlight(text[p0:p1], [(start - p0, end - p0)])
    before = "… " if p0 > 0 and text[p0 - 1] != "\n" else ""
    after = " …" if p1 < len(text) and text[p1] != "\n" else ""
    return f"{before}{inner}{after}"


def _citation_passage(c: Citation, doc: DocText | None,
                      retrieved: Sequence[Retrieved]) -> str:
    if doc is not None:
        text = doc[1]
        if text[c.start:c.end] == c.quote:
            return render_passage(text, c.start, c.end)
    # The document is gone or changed since the answer: fall back to the chunk, then the quote.
    for r in retrieved:
        ch = r.chunk
        s, e = c.start - ch.start, c.end - ch.start
        if ch.id == c.chunk_id and s >= 0 and e <= len(ch.text) and ch.text[s:e] == c.quote:
            return render_passage(ch.text, s, e)
    return f"<mark>{esc(c.quote)}</mark>"


def render_sources(answer: Answer | None, turn: int, docs: DocLookup,
                   active: int | None = None) -> str:
    """The Sources panel: cited passages as cards, uncited retrieved passages collapsed."""
    if answer is None:
        return ('<div class="sources empty"><div class="sources-h">Sources</div>Ask a question: '
                "the passages an answer cites appear here. Click a [n] chip to open the "
                "article.</div>")
    head = (f'<div class="sources-h">Sources</div>'
            f'<div class="sources-q">for: <q>{esc(answer.question)}</q></div>')
    cards: list[str] = []
    cache: dict[str, DocText | None] = {}

    def doc(source: str) -> DocText | None:
        if source not in cache:
            cache[source] = docs(source)
        return cache[source]

    if answer.insufficient_context or not answer.citations:
        cards.append('<div class="no-sources">No sources: the articles do not answer this '
                     "question, so nothing is cited.</div>")
    for c in answer.citations:
        d = doc(c.source)
        title = c.title or (d[0].title if d is not None else "")
        cls = "src-card active" if active == c.n else "src-card"
        cards.append(
            f'<div class="{cls}" id="src-{turn}-{c.n}">'
            f'<div class="src-head">{chip(turn, c.n, c)} '
            f'<span class="src-file">{esc(c.source)}</span> {lang_tag(c.language)} '
            f'<span class="src-lines">{esc(lines_label(c.lines))}</span></div>'
            f'<div class="src-title">{esc(title)}</div>'
            f'<blockquote class="src-passage">{_citation_passage(c, d, answer.retrieved)}'
            f"</blockquote>"
            f'<a class="open-src" href="#cite-{turn}-{c.n}">Open the article ›</a></div>'
        )
    cited_chunks = {c.chunk_id for c in answer.citations}
    others = [r for r in answer.retrieved if r.chunk.id not in cited_chunks]
    if others:
        label = ("Passages searched" if not answer.citations
                 else "Other retrieved passages (not cited)")
        rows = []
        for r in others:
            ch = r.chunk
            rows.append(
                f'<div class="src-card other" id="chunk-card-{turn}-{r.rank}">'
                f'<div class="src-head"><span class="rank">#{r.rank}</span> '
                f'<span class="src-file">{esc(ch.source)}</span> {lang_tag(ch.language)} '
                f'<span class="src-lines">{esc(lines_label(ch.lines))}</span> '
                f'<span class="score">score {r.score:.3f}</span></div>'
                f'<div class="src-title">{esc(ch.title)}</div>'
                f'<div class="src-passage plain">{esc(ch.text)}</div>'
                f'<a class="open-src" href="#chunk-{turn}-{r.rank}">Open the article ›</a></div>'
            )
        cards.append(f'<details class="src-other"><summary>{esc(label)} ({len(others)})'
                     f"</summary>{''.join(rows)}</details>")
    return f'<div class="sources" data-turn="{turn}">{head}{"".join(cards)}</div>'


# --- the source viewer ------------------------------------------------------------------------


def _line_pieces(text: str, spans: Iterable[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(line number, start, end) pieces of `spans`, split at line breaks, in text order."""
    pieces: list[tuple[int, int, int]] = []
    for s, e in sorted(spans):
        line = text.count("\n", 0, s) + 1
        pos = s
        while pos < e:
            nl = text.find("\n", pos, e)
            stop = e if nl < 0 else nl
            if stop > pos:
                pieces.append((line, pos, stop))
            if nl < 0:
                break
            pos, line = nl + 1, line + 1
    return pieces


def render_document(info: Any, text: str, kept: Sequence[tuple[int, int]],
                    span: tuple[int, int] | None = None, label: str = "") -> str:
    """The cleaned article (its kept body spans, one paragraph per line) with `span` marked.

    The highlighted span is always shown, even if cleaning had dropped part of it.
    """
    spans = list(kept) or [(0, len(text))]
    if span is not None:
        spans.append(span)
    merged: list[list[int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    paras: dict[int, list[str]] = {}
    first_mark = True
    for line, s, e in _line_pieces(text, [(a, b) for a, b in merged]):
        marks = []
        if span is not None and span[0] < e and s < span[1]:
            marks.append((max(span[0], s) - s, min(span[1], e) - s))
        piece = highlight(text[s:e], marks, mark_id="viewer-mark" if marks and first_mark
                          else None)
        first_mark = first_mark and not marks
        paras.setdefault(line, []).append(piece)
    body = "".join(
        f'<p data-line="{ln}"><span class="ln">{ln}</span>{" ".join(ps)}</p>'
        for ln, ps in sorted(paras.items())
    )
    meta = [esc(info.source), lang_tag(info.language), f"{len(text):,} characters"]
    if label:
        meta.append(f'<span class="viewer-label">{esc(label)}</span>')
    return (
        f'<div class="viewer" data-source="{esc(info.source)}">'
        f'<div class="viewer-head"><div class="viewer-title">{esc(info.title)}</div>'
        f'<div class="viewer-meta">{" · ".join(meta)}</div></div>'
        f'<div class="viewer-body">{body}</div></div>'
    )


def render_viewer_message(message: str) -> str:
    return f'<div class="viewer empty">{esc(message)}</div>'
