"""Render functions of the chat UI: chips, span highlighting, escaping, refusals, status."""

from __future__ import annotations

import re

import pytest

from rag.app import ui_render as R
from rag.types import Backend, Timings
from tests.ui_fakes import ARTICLE, chunk_of, make_answer, make_doc, quote_citation

SRC = "003_test.txt"
QUOTE = "Почти 5 милиона артилерийски снаряда"
XSS = ("<script>alert(1)</script>", "<img src=x onerror=alert(2)>")


def _unescape(html: str) -> str:
    import html as h

    return h.unescape(re.sub(r"<[^>]+>", "", html))


# --- highlight ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "span", "expected"),
    [
        ("abcdef", (0, 2), "<mark>ab</mark>cdef"),  # span at the start
        ("abcdef", (4, 6), "abcd<mark>ef</mark>"),  # span at the end
        ("abcdef", (0, 6), "<mark>abcdef</mark>"),  # the whole text
        ("abcdef", (2, 2), "abcdef"),  # empty span: nothing marked
        ("abcdef", (-3, 2), "<mark>ab</mark>cdef"),  # clipped
    ],
)
def test_highlight_spans(text, span, expected):
    assert R.highlight(text, [span]) == expected


def test_highlight_multibyte_cyrillic_offsets_are_characters():
    text = "Ким Џонг Ун и Шојгу разговараа"
    start = text.index("Шојгу")
    out = R.highlight(text, [(start, start + len("Шојгу"))])
    assert out == "Ким Џонг Ун и <mark>Шојгу</mark> разговараа"


def test_highlight_escapes_each_segment_separately():
    # A span whose boundaries sit right next to markup characters: escaping after marking
    # would split "&lt;" or mark the wrong characters.
    text = "a<b>c & d"
    out = R.highlight(text, [(1, 4)])
    assert out == "a<mark>&lt;b&gt;</mark>c &amp; d"
    text2 = "x<script>alert(1)</script>y"
    out2 = R.highlight(text2, [(0, 1), (len(text2) - 1, len(text2))], mark_id="m")
    assert out2.startswith('<mark id="m">x</mark>&lt;script&gt;')
    assert out2.endswith("&lt;/script&gt;<mark>y</mark>")
    assert out2.count('id="m"') == 1


def test_highlight_merges_overlapping_spans():
    assert R.highlight("abcdef", [(1, 3), (2, 5)]) == "a<mark>bcde</mark>f"


# --- answers and chips ---------------------------------------------------------------------------

def _cited_answer(**kw):
    c1 = quote_citation(1, SRC, ARTICLE, QUOTE, title="Северна Корея изпрати снаряди")
    c2 = quote_citation(2, SRC, ARTICLE, "Министърът каза това пред Bloomberg.")
    return make_answer("North Korea sent about 5 million shells [1] and more [1, 2].",
                       (c1, c2), **kw)


def test_citations_become_chips():
    html = R.render_answer(_cited_answer(), turn=3)
    assert '<a class="cite-chip" href="#cite-3-1"' in html
    assert '<a class="cite-chip" href="#cite-3-2"' in html
    # "[1, 2]" becomes two chips; every chip shows its number
    assert html.count('href="#cite-3-1"') == 2
    assert ">[2]</a>" in html


def test_unknown_marker_stays_plain_text():
    html = R.render_answer(make_answer("Claim [7].", (quote_citation(1, SRC, ARTICLE, QUOTE),)),
                           0)
    assert "cite-chip" not in html.split("answer-status")[0].replace("#cite-0-1", "")
    assert "&#91;7&#93;" in html


def test_answer_text_is_escaped():
    a = make_answer(f"Odd answer {XSS[0]} {XSS[1]} [1]",
                    (quote_citation(1, SRC, ARTICLE, QUOTE),))
    html = R.render_answer(a, 0)
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_user_question_is_escaped_and_cannot_make_links():
    q = f"What about {XSS[1]} and [x](javascript:alert(3))?"
    out = R.render_user(q)
    assert "<img" not in out and "&lt;img src=x onerror=alert(2)&gt;" in out
    assert "[x](" not in out  # brackets are entities: markdown cannot form a link
    assert _unescape(out) == q


def test_refusal_has_no_chips_and_says_no_sources():
    a = make_answer("The articles don't say.", (), insufficient=True,
                    retrieved=(chunk_of(SRC, ARTICLE, 0, 30, 1),))
    html = R.render_answer(a, 0)
    assert "cite-chip" not in html
    assert "refusal" in html and "The articles don&#x27;t say." in html
    sources = R.render_sources(a, 0, lambda s: None)
    assert "No sources" in sources
    assert 'class="src-card"' not in sources and "cite-" not in sources
    # the searched passages are listed, collapsed, clearly not as citations
    assert "<details" in sources and "Passages searched" in sources


def test_extractive_answer_reads_as_labelled_quotes():
    c1 = quote_citation(1, SRC, ARTICLE, QUOTE, language="bg")
    c2 = quote_citation(2, "000_mk.txt", "Ким и Шојгу разговараа.", "Ким и Шојгу разговараа.",
                        language="mk")
    a = make_answer(f"The articles say:\n- {QUOTE} [1]\n- Ким и Шојгу разговараа. [2]",
                    (c1, c2), mode="extractive")
    html = R.render_answer(a, 0)
    body = html.split('<div class="answer-status">')[0]
    lines = [ln for ln in body.splitlines() if ln.startswith("- ")]
    assert len(lines) == 2
    assert ">BG</span>" in lines[0] and 'href="#cite-0-1"' in lines[0]
    assert ">MK</span>" in lines[1] and 'href="#cite-0-2"' in lines[1]
    assert body.startswith("The articles say:")


def test_extractive_quotes_on_one_line_are_split():
    c1 = quote_citation(1, SRC, ARTICLE, QUOTE)
    c2 = quote_citation(2, SRC, ARTICLE, "Министърът каза това пред Bloomberg.")
    a = make_answer(f"{QUOTE} [1] Министърът каза това пред Bloomberg. [2]", (c1, c2),
                    mode="extractive")
    body = R.render_answer(a, 0).split('<div class="answer-status">')[0]
    assert len([ln for ln in body.splitlines() if ln.startswith("- ")]) == 2


def test_status_line_and_notes():
    a = make_answer("x [1]", (quote_citation(1, SRC, ARTICLE, QUOTE),), mode="extractive",
                    notes=("Ollama not reachable: run `ollama serve` <b>",))
    html = R.render_status(a)
    assert "mode: extractive" in html and "backend: extractive" in html
    assert "retrieval 12 ms" in html and "first token —" in html and "total 1.2 s" in html
    assert "answer-note" in html and "ollama serve" in html and "&lt;b&gt;" in html
    g = make_answer("x", ())
    g = g.__class__(**{**g.__dict__, "backend": Backend("ollama", "qwen2.5:7b"),
                       "timings": Timings(40.0, 812.4, 5600.0)})
    s = R.render_status(g)
    assert "backend: ollama · qwen2.5:7b" in s and "first token 812 ms" in s
    assert "total 5.6 s" in s


def test_partial_and_error_are_escaped():
    assert "<img" not in R.render_partial(XSS[1])
    err = R.render_error("backend died <script>", partial="half an answer [1")
    assert "answer-error" in err and "&lt;script&gt;" in err and "half an answer" in err


# --- sources panel -----------------------------------------------------------------------------

def test_sources_panel_cards_with_highlight_in_paragraph():
    doc = make_doc(SRC, ARTICLE)
    a = _cited_answer(retrieved=(chunk_of(SRC, ARTICLE, 0, 29, 1, 0.42),
                                 chunk_of(SRC, ARTICLE, 31, 111, 2, 0.3)))
    html = R.render_sources(a, 2, {SRC: doc}.get, active=1)
    assert 'id="src-2-1"' in html and 'class="src-card active"' in html
    assert SRC in html and "Северна Корея изпрати снаряди" in html and ">BG</span>" in html
    assert "line 3" in html
    # the quote is marked inside its paragraph (the rest of line 3 is there, unmarked)
    assert f"<mark>{QUOTE}</mark>, както и балистични ракети" in html
    # the XSS payload on line 4 is inert text in card 2
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # uncited retrieved passages: collapsed, with scores
    assert "<details" in html and "score 0.420" in html and 'href="#chunk-2-1"' in html


def test_sources_fall_back_to_quote_when_document_changed():
    a = _cited_answer()
    changed = make_doc(SRC, "completely different text\n" * 5)
    html = R.render_sources(a, 0, {SRC: changed}.get)
    assert f"<mark>{QUOTE}</mark>" in html


def test_passage_window_clips_long_paragraphs_at_words():
    text = ("word " * 200) + "QUOTE" + (" word" * 200)
    s = text.index("QUOTE")
    out = R.render_passage(text, s, s + 5, context=50)
    assert out.startswith("… ") and out.endswith(" …") and "<mark>QUOTE</mark>" in out
    assert len(_unescape(out)) < 130


def test_empty_sources_panel():
    assert "Ask a question" in R.render_sources(None, 0, lambda s: None)


# --- viewer ------------------------------------------------------------------------------------

def test_document_viewer_marks_span_and_escapes_article():
    info, text, kept = make_doc(SRC, ARTICLE)
    start = text.index(QUOTE)
    html = R.render_document(info, text, kept, span=(start, start + len(QUOTE)), label="[1]")
    assert f'<mark id="viewer-mark">{QUOTE}</mark>' in html
    assert html.count("<mark") == 1
    assert "<script" not in html and "<img" not in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert 'data-line="3"' in html and 'data-line="2"' not in html  # blank line 2 is not body


def test_document_viewer_span_at_start_and_end_of_file():
    text = "Први ред.\nВтори ред и крај"
    info, _, kept = make_doc("x.txt", text, "mk")
    html = R.render_document(info, text, kept, span=(0, 4))
    assert '<mark id="viewer-mark">Први</mark> ред.' in html
    end = len(text)
    html2 = R.render_document(info, text, kept, span=(end - 4, end))
    assert 'и <mark id="viewer-mark">крај</mark></p>' in html2


def test_document_viewer_span_across_lines_marks_each_line():
    text = "Line one here\nLine two here"
    info, _, kept = make_doc("x.txt", text, "en")
    html = R.render_document(info, text, kept, span=(5, 18))
    assert html.count("<mark") == 2 and html.count('id="viewer-mark"') == 1


def test_document_viewer_shows_span_outside_kept_body():
    text = "menu closed\nBody sentence here.\n"
    info, _, _ = make_doc("x.txt", text, "en")
    html = R.render_document(info, text, [(12, 31)], span=(0, 4))
    assert "<mark" in html and "menu" in html
