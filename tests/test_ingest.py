"""Ingestion on the real seed pages: what is dropped as boilerplate, what survives, metadata."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rag.indexing.ingest import clean_spans, content_hash, list_files, read_document, read_documents
from rag.types import Document
from tests.conftest import SEEDS


def doc(name: str) -> Document:
    d = read_document(next(SEEDS.glob(f"{name}_*.txt")))
    assert isinstance(d, Document)
    return d


def test_ticker_menu_and_weather_widget_are_dropped_body_kept():
    d = doc("002")
    body = d.clean_text
    for junk in ("$39.60 €42.44", "menu closed", "menu open", "weather +11 Київ", "Фото: EPA"):
        assert junk not in body
    # the caption glued to the repeated headline goes, the headline itself stays once
    assert "Associated Press Кім Чен Ин відвідав Росію" not in body
    assert body.count("Кім Чен Ин планує посилювати зв'язки з Росією – Associated Press") == 1
    assert "Ашота Мкртичева" in body
    assert body.rstrip().endswith("зокрема щодо військово-технічної співпраці.")


def test_related_block_and_widgets_of_003_are_dropped():
    d = doc("003")
    body = d.clean_text
    for junk in ("Още от", "Орешник", "ATACMS", "Storm Shadow", "Прочетете повече",
                 "Последни новини", "Най-четени", "Източник: Kremlin.ru"):
        assert junk not in body
    # The body sentence that starts like the lede must survive in full (it names the source).
    assert "заяви южнокорейският министър на отбраната Шин Уон-сик пред Bloomberg." in body
    assert body.rstrip().endswith('"най-скъпият приятел на корейския народ".')


def test_site_chrome_of_004_is_dropped():
    d = doc("004")
    body = d.clean_text
    # The site's tagline above the headline is no longer dropped: no rule names a site's words,
    # and one file per site gives no repetition to learn it from (see ingest.py).
    assert "Close" not in body.split()
    assert "| Архив" not in body
    assert d.title == "Информационен сайт на българите в Испания"
    assert "(с информация от AP, Infobae и EFE)" in body


def test_glued_see_also_link_is_dropped_but_following_sentence_kept():
    d = doc("000")
    body = d.clean_text
    assert "Видете и ова" not in body
    assert "нуклеарниот арсенал" not in body
    assert body.count("Шојгу, поранешен руски министер за одбрана") == 1


def test_clean_articles_without_boilerplate_are_kept_whole():
    d = doc("001")
    lines = [ln.strip() for ln in d.text.splitlines() if ln.strip()]
    assert d.clean_text == "\n".join(lines)


@pytest.mark.parametrize(
    "name,lang", [("000", "mk"), ("001", "sr"), ("002", "uk"), ("003", "bg"), ("004", "bg")]
)
def test_language_is_detected_and_guess_recorded(name, lang):
    d = doc(name)
    assert d.language == lang
    assert d.language_guess  # the identifier's own answer (e.g. "bs" for Serbian Latin)


def test_metadata_hash_length_title():
    f = next(SEEDS.glob("003_*.txt"))
    d = doc("003")
    assert d.sha256 == content_hash(f.read_bytes()) != hashlib.sha256(f.read_bytes()).hexdigest()
    assert d.chars == len(f.read_text(encoding="utf-8"))
    assert d.source == f.name
    assert d.title == "Диктаторът Путин обяви създаването на военен алианс със Северна Корея"


def test_kept_spans_point_into_the_original_text():
    for f in SEEDS.glob("*.txt"):
        d = read_document(f)
        for s, e in d.kept:
            assert 0 <= s < e <= len(d.text)
            assert d.text[s:e] == d.text[s:e].strip()


def test_bad_files_are_skipped_with_reasons_and_nothing_else_lost(tmp_path: Path):
    (tmp_path / "good.txt").write_text("Ким Чен Ун покани Шойгу на военен парад в Пхенян.\n")
    (tmp_path / "latin1.txt").write_bytes("Sjedinjene Dr\u017eave".encode("cp1250"))
    (tmp_path / "empty.md").write_text("   \n")
    (tmp_path / "blob.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (tmp_path / "ignored.pdf").write_bytes(b"%PDF")
    docs, skipped = read_documents(list_files(tmp_path))
    assert [d.source for d in docs] == ["good.txt"]
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert "UTF-8" in reasons["latin1.txt"]
    assert "empty" in reasons["empty.md"]
    assert "binary" in reasons["blob.txt"]
    assert "ignored.pdf" not in reasons


def test_only_boilerplate_is_skipped(tmp_path: Path):
    f = tmp_path / "chrome.txt"
    f.write_text("menu closed\nClose\n$1.00 €2.00\n")
    r = read_document(f)
    assert not isinstance(r, Document)
    assert "boilerplate" in r.reason


def test_bom_and_crlf_keep_exact_offsets():
    text = "\ufeffHeadline here\r\nFirst sentence. Second one.\r\n"
    spans = clean_spans(text)
    assert [text[s:e] for s, e in spans] == ["Headline here", "First sentence. Second one."]
