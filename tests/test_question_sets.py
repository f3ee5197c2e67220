"""The evaluation question sets under eval/questions/: valid, checked against their articles,
and shaped as the evaluation needs them (cross-lingual, unanswerable, spread over topics)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.eval.metrics import normalize_text
from rag.eval.questions import load_questions
from tests.conftest import ROOT

SETS = sorted((ROOT / "eval" / "questions").glob("*.jsonl"))
CORPORA = ROOT.parent / "shared" / "corpora" / "bsnlp"
LANGS = {"en", "bg", "mk", "sr", "uk"}


def corpus_of(qfile: Path) -> Path:
    return ROOT / "seeds" if qfile.stem == "seeds" else CORPORA / qfile.stem


def test_there_are_enough_questions_over_several_topics():
    rows = [json.loads(line) for f in SETS for line in f.read_text().splitlines() if line]
    assert len(SETS) >= 5 and len(rows) >= 150
    assert sum(not r["answerable"] for r in rows) >= 40
    assert {r["lang"] for r in rows} == LANGS
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "question ids must be unique across topics"


@pytest.mark.parametrize("qfile", SETS, ids=[f.stem for f in SETS])
def test_question_set_is_valid_against_its_articles(qfile):
    corpus = corpus_of(qfile)
    if not corpus.is_dir():
        pytest.skip(f"{corpus} is not here (the corpora live in ../shared, read in place)")
    questions = load_questions(qfile, data_dir=corpus)
    answerable = [q for q in questions if q.answerable]
    # At least a third are cross-lingual: no source is in the question's language.
    def cross(q) -> bool:
        return all(not s.startswith(f"{q.lang}/") for s in q.sources)

    if qfile.stem != "seeds":  # seed files are named without a language folder
        assert sum(cross(q) for q in answerable) >= len(answerable) / 3
    for q in answerable:
        texts = [normalize_text((corpus / s).read_text(encoding="utf-8", errors="replace"))
                 for s in q.sources]
        for group in q.facts:
            assert any(normalize_text(alt) in t for t in texts for alt in group), (
                f"{q.id}: no alternative of {group} occurs in its sources")
    assert len({s for q in answerable for s in q.sources}) >= min(5, len(answerable))
