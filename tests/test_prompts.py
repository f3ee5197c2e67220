"""Prompt files and phrases: strict formatting, clear errors, all corpus languages covered."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from rag.answering import prompts
from rag.answering.prompts import (
    LANGUAGES,
    answer_messages,
    condense_messages,
    load_prompt,
    parse_variables,
    phrase,
    render_evidence,
    render_history,
)
from rag.settings import Settings
from rag.types import Evidence, RagError, Sentence

CYRILLIC = re.compile("[\u0400-\u04ff]")


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    (tmp_path / "greet.txt").write_text("Hello {name}, you asked: {question}\n", encoding="utf-8")
    return tmp_path


def test_real_prompt_files_use_the_documented_variables():
    assert load_prompt("answer_system").variables == {"language_name", "refusal"}
    assert load_prompt("answer_user").variables == {
        "evidence", "question", "language_name", "refusal"}
    assert load_prompt("condense").variables == {"history", "question"}


def test_format_substitutes_and_strips_trailing_newline(pdir):
    p = load_prompt("greet", pdir)
    assert p.name == "greet" and p.path == pdir / "greet.txt"
    assert p.format(name="Ana", question="Why?") == "Hello Ana, you asked: Why?"


def test_missing_variable_names_file_and_variable(pdir):
    with pytest.raises(RagError) as e:
        load_prompt("greet", pdir).format(name="Ana")
    assert "question" in str(e.value)
    assert str(pdir / "greet.txt") in str(e.value)


def test_unknown_variable_is_an_error(pdir):
    with pytest.raises(RagError, match="colour"):
        load_prompt("greet.txt", pdir).format(name="Ana", question="Why?", colour="red")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(RagError) as e:
        load_prompt("nope", tmp_path)
    assert str(tmp_path / "nope.txt") in str(e.value)


def test_settings_prompts_dir_is_used(pdir):
    settings = Settings(prompts_dir=pdir)
    assert load_prompt("greet", settings).variables == {"name", "question"}
    with pytest.raises(RagError, match="answer_system"):
        load_prompt("answer_system", settings)


def test_values_are_not_expanded_again_and_braces_escape(tmp_path):
    (tmp_path / "t.txt").write_text('{{literal}} {x} and JSON {"a": 1} }}', encoding="utf-8")
    p = load_prompt("t", tmp_path)
    assert p.variables == {"x"}
    assert p.format(x="{x} {question}") == '{literal} {x} {question} and JSON {"a": 1} }'


def test_parse_variables_ignores_escaped_and_non_identifiers():
    assert parse_variables("{a} {{b}} {c d} {1x} {_e}") == {"a", "_e"}


def test_every_phrase_in_every_language():
    table = prompts.phrases()
    assert set(table) >= {"refusal", "extractive_lead_in", "needs_ollama", "language_name"}
    for key, texts in table.items():
        assert set(texts) == set(LANGUAGES), key
        for lang in LANGUAGES:
            text = phrase(key, lang)
            assert text.strip() == text and text, (key, lang)
            if key == "language_name":
                continue
            if lang in ("bg", "mk", "uk"):
                assert CYRILLIC.search(text), (key, lang)
            else:  # English and Serbian Latin must not come out in Cyrillic
                assert not CYRILLIC.search(text), (key, lang)
            if lang != "en":
                assert text != phrase(key, "en"), (key, lang)
    assert "Ollama" in phrase("needs_ollama", "uk")


def test_english_phrases_exact():
    assert phrase("refusal", "en") == "The articles don't say."
    assert phrase("extractive_lead_in", "en") == "The articles say:"


def test_phrase_language_normalisation_and_fallback():
    assert phrase("refusal", "sr-Latn") == phrase("refusal", "sr") == phrase("refusal", "SR")
    assert phrase("refusal", "de") == "The articles don't say."
    assert phrase("refusal", None) == "The articles don't say."
    with pytest.raises(RagError, match="no_such_phrase"):
        phrase("no_such_phrase", "en")


def test_phrase_file_errors(tmp_path):
    with pytest.raises(RagError, match="phrases.json"):
        phrase("refusal", "en", tmp_path)
    (tmp_path / "phrases.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RagError, match="not valid JSON"):
        phrase("refusal", "en", tmp_path)


def test_phrase_file_edits_are_picked_up(tmp_path):
    f = tmp_path / "phrases.json"
    f.write_text(json.dumps({"refusal": {"en": "one"}}), encoding="utf-8")
    assert phrase("refusal", "bg", tmp_path) == "one"
    before = f.stat().st_mtime_ns
    f.write_text(json.dumps({"refusal": {"en": "two", "bg": "две"}}), encoding="utf-8")
    # The mtime may not tick between two writes in one test; the cache keys on it.
    os.utime(f, ns=(before, before + 1_000_000_000))
    assert phrase("refusal", "bg", tmp_path) == "две"


def _ev(n: int, text: str, lines: tuple[int, int], **kw) -> Evidence:
    s = Sentence(source=f"a{n}.txt", chunk_id=f"c{n}", text=text, start=0, end=len(text),
                 line_start=lines[0], line_end=lines[1], title=f"Title {n}")
    return Evidence(n=n, sentence=s, score=1.0, **kw)


def test_render_evidence_numbered_blocks():
    block = render_evidence([
        _ev(1, "Sofia is big.", (3, 5)),
        _ev(2, "Skopje is old.", (7, 7), context_before="Before.", context_after="After."),
    ])
    assert block == (
        "[1] Title 1 (a1.txt, lines 3–5)\nSofia is big.\n\n"
        "[2] Title 2 (a2.txt, line 7)\nBefore. Skopje is old. After."
    )


@pytest.mark.parametrize("lang", LANGUAGES)
def test_answer_messages(lang):
    evidence = render_evidence([_ev(1, "Sofia is big.", (3, 5))])
    msgs = answer_messages(evidence, "How big is Sofia?", lang)
    assert [m["role"] for m in msgs] == ["system", "user"]
    system, user = msgs[0]["content"], msgs[1]["content"]
    for text in (system, user):
        assert phrase("refusal", lang) in text
        assert phrase("language_name", lang) in text
        assert "{" not in text  # every placeholder was filled
    assert "[1] Title 1 (a1.txt, lines 3–5)\nSofia is big." in user
    assert "How big is Sofia?" in user
    assert "[n]" not in system and "[1][3]" in system  # shows how to cite several passages


def test_condense_messages():
    history = render_history([
        {"role": "user", "content": "Who won the\n election?"},
        {"role": "assistant", "content": "Party X won [1]."},
        {"role": "system", "content": "ignored"},
    ])
    assert history == "User: Who won the election?\nAssistant: Party X won [1]."
    (msg,) = condense_messages(history, "А кога?")
    assert msg["role"] == "user"
    assert history in msg["content"] and msg["content"].rstrip().endswith("Standalone question:")
    assert "Follow-up question: А кога?" in msg["content"]
    assert "same language" in msg["content"]
