"""The `rag` command end to end: in-process with a hash embedder, and once for real (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag.app import cli
from tests.conftest import ROOT, HashEmbedder

RETRIEVED_KEYS = {"rank", "score", "source", "also", "chunk_id", "start", "end", "lines", "text",
                  "title", "language", "context"}


@pytest.fixture
def run(monkeypatch, tmp_path, capsys):
    """Call `rag ...` in-process with a hash embedder and a temporary index."""
    monkeypatch.setattr("rag.pipeline.build_embedder", lambda settings: HashEmbedder())
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "index"))
    monkeypatch.setenv("RAG_MODE", "extractive")
    # The hash embedder knows no language: the lexical ranking (off by default) finds names.
    monkeypatch.setenv("RAG_BM25_WEIGHT", "1.0")

    def call(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def tiny_questions(tmp_path) -> Path:
    rows = [
        {"id": "t1", "lang": "uk", "question": "Ашот Мкртичев санкції", "answerable": True,
         "sources": ["002_a6ed56d92cdbdb72.txt"], "facts": [["Мкртичев"]],
         "evidence": ["громадянина Словаччини Ашота Мкртичева"]},
        {"id": "t2", "lang": "bg", "question": "Колко артилерийски снаряда?",
         "answerable": True, "sources": ["003_101aaf086d020251.txt"], "facts": [["5 милиона"]],
         "evidence": ["5 милиона артилерийски снаряда"]},
    ]
    f = tmp_path / "tiny.jsonl"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                 encoding="utf-8")
    return f


def test_index_prints_a_summary_and_is_incremental(run, seeds_copy):
    code, out, _ = run("index", str(seeds_copy))
    assert code == 0 and "5 indexed, 0 unchanged" in out and "chunks" in out
    code, out, _ = run("index", str(seeds_copy))
    assert code == 0 and "0 indexed, 5 unchanged" in out


def test_index_reports_skipped_files(run, seeds_copy):
    (seeds_copy / "bad.txt").write_bytes(b"\xff\xfe\xfa not utf-8")
    code, out, err = run("index", str(seeds_copy))
    assert code == 0 and "1 skipped" in out
    assert "bad.txt" in err and "UTF-8" in err


def test_retrieve_json_contract(run, seeds_copy, monkeypatch):
    monkeypatch.setenv("RAG_CONTEXT_CHUNKS", "1")
    run("index", str(seeds_copy))
    code, out, _ = run("retrieve", "Ашот Мкртичев санкції", "-k", "3", "--json")
    row = json.loads(out)
    assert code == 0 and set(row) == {"question", "retrieved", "retrieve_ms"}
    assert len(row["retrieved"]) == 3 and set(row["retrieved"][0]) == RETRIEVED_KEYS
    assert row["retrieved"][0]["source"] == "002_a6ed56d92cdbdb72.txt"
    # The top hits carry the passages beside them in their article as context.
    top = row["retrieved"][0]
    assert top["context"] and all(set(c) == {"chunk_id", "start", "end", "lines", "text"}
                                  for c in top["context"])
    assert all(c["end"] <= top["start"] or c["start"] >= top["end"] for c in top["context"])


def test_retrieve_batch_prints_one_line_per_question(run, seeds_copy, tiny_questions):
    run("index", str(seeds_copy))
    code, out, _ = run("retrieve", "--questions", str(tiny_questions), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["id"] for r in rows] == ["t1", "t2"]


def test_ask_json_contract(run, seeds_copy):
    run("index", str(seeds_copy))
    code, out, _ = run("ask", "Колко артилерийски снаряда изпрати Северна Корея?", "--json",
                       "--mode", "extractive")
    a = json.loads(out)
    assert code == 0
    for key in ("question", "answer", "language", "mode", "insufficient_context", "citations",
                "retrieved", "backend", "timings", "usage"):
        assert key in a
    assert a["mode"] == "extractive" and a["language"] == "bg"
    assert set(a["timings"]) == {"retrieve_ms", "first_token_ms", "total_ms"}
    for c in a["citations"]:
        text = (seeds_copy / c["source"]).read_text(encoding="utf-8")
        assert text[c["start"]:c["end"]] == c["quote"]


def test_errors_are_one_clear_line_and_exit_2(run, tmp_path):
    code, _, err = run("retrieve", "anything")
    assert code == 2 and err.startswith("error:") and "rag index" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "question": "q", "answerable": true}\n')
    code, _, err = run("retrieve", "--questions", str(bad), "--json")
    assert code == 2 and "bad.jsonl:1" in err
    code, _, err = run("ask", "   ", "--mode", "extractive")
    assert code == 2 and "empty" in err


def test_eval_writes_outputs_and_min_thresholds_set_the_exit_code(run, seeds_copy,
                                                                  tiny_questions, tmp_path):
    run("index", str(seeds_copy))
    out_dir = tmp_path / "run"
    code, out, _ = run("eval", "--questions", str(tiny_questions), "--out", str(out_dir),
                       "--retrieval-only", "--min", "hit@5=0.5")
    assert code == 0 and "hit@1" in out
    for name in ("results.jsonl", "summary.json", "report.md", "retrieval.png", "latency.png"):
        assert (out_dir / name).stat().st_size > 0
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["overall"]["hit@5"] == 1.0
    code, _, err = run("eval", "--questions", str(tiny_questions), "--out", str(out_dir),
                       "--retrieval-only", "--min", "hit@5=1.01")
    assert code == 1 and "hit@5" in err


def test_eval_corpus_indexes_the_folder_into_its_own_index(run, seeds_copy, tmp_path,
                                                          monkeypatch):
    """`rag eval --corpus DIR`: sources are paths relative to DIR, sub-folders included, and the
    corpus gets an index of its own under the cache dir, reused (not rebuilt) the next time."""
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    corpus = tmp_path / "topic"
    (corpus / "uk").mkdir(parents=True)
    (corpus / "bg").mkdir()
    for f in seeds_copy.glob("*.txt"):
        (corpus / ("bg" if f.name.startswith("003") else "uk") / f.name).write_bytes(
            f.read_bytes())
    qs = tmp_path / "topic.jsonl"
    qs.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"id": "c1", "lang": "en", "question": "Колко артилерийски снаряда?", "answerable": True,
         "sources": ["bg/003_101aaf086d020251.txt"], "facts": [["5 милиона"]],
         "evidence": ["5 милиона артилерийски снаряда"]},
        {"id": "c2", "lang": "uk", "question": "Ашот Мкртичев санкції", "answerable": True,
         "sources": ["uk/002_a6ed56d92cdbdb72.txt"], "facts": [["Мкртичев"]],
         "evidence": ["громадянина Словаччини Ашота Мкртичева"]},
    ]) + "\n", encoding="utf-8")
    out_dir = tmp_path / "run"
    code, out, err = run("eval", "--corpus", str(corpus), "--questions", str(qs), "--out",
                         str(out_dir), "--retrieval-only")
    assert code == 0, err
    assert "5 indexed" in err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["overall"]["hit@5"] == 1.0
    assert [p.name.startswith("topic-") for p in (tmp_path / "cache" / "indexes").iterdir()] \
        == [True]
    code, _, err = run("eval", "--corpus", str(corpus), "--questions", str(qs), "--out",
                       str(out_dir), "--retrieval-only")
    assert code == 0 and "0 indexed" in err and "5 unchanged" in err
    # A question set whose sources are not in the corpus is refused before anything runs.
    code, _, err = run("eval", "--corpus", str(seeds_copy), "--questions", str(qs),
                       "--retrieval-only")
    assert code == 2 and "source file not found" in err
    code, _, err = run("eval", "--corpus", str(tmp_path / "nope"), "--questions", str(qs))
    assert code == 2 and "no such folder" in err


@pytest.mark.slow
def test_real_rag_eval_retrieval_only_on_the_seeds(tmp_path):
    """The installed console script with the real embedder over the real question set."""
    env = {**os.environ, "RAG_INDEX_DIR": str(tmp_path / "index"), "RAG_MODE": "extractive"}
    rag = Path(sys.executable).parent / "rag"
    out_dir = tmp_path / "eval"
    proc = subprocess.run(
        [str(rag), "eval", "--retrieval-only", "--out", str(out_dir), "--min", "hit@5=0.9",
         "--min", "evidence@5=0.9"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["overall"]["hit@5"] >= 0.9
    assert set(summary["by_language"]) == {"en", "bg", "mk", "sr", "uk"}
    rows = (out_dir / "results.jsonl").read_text().splitlines()
    assert len(rows) == sum(1 for _ in (ROOT / "seeds" / "questions.jsonl").open())
    assert "| hit@1 |" in (out_dir / "report.md").read_text()


def test_add_saves_into_uploads_only_after_indexing(run, seeds_copy, tmp_path):
    run("index", str(seeds_copy))
    f = tmp_path / "note.txt"
    f.write_text("Нова статия за Кореја.\nВтора реченица за ракетите.\n", encoding="utf-8")
    code, out, _ = run("add", str(f))
    assert code == 0 and out.startswith("Added")
    assert (tmp_path / "index" / "uploads" / "note.txt").read_bytes() == f.read_bytes()
    bad = tmp_path / "menu.txt"
    bad.write_text("menu closed\nmenu open\n", encoding="utf-8")
    code, _, err = run("add", str(bad))
    assert code == 1 and "not added" in err
    assert not (tmp_path / "index" / "uploads" / "menu.txt").exists()


class _WarmProbe:
    """A pipeline that only records how it was warmed."""

    def __init__(self, passages: int):
        self.store = type("S", (), {"count": lambda _self: passages})()
        self.warmed: list[bool] = []

    def warm(self, *, sentences=True, background=True, **_):
        self.warmed.append(sentences)


@pytest.mark.parametrize("passages,questions,pre_embeds", [
    (55, 10, True),  # five seed articles: every sentence will be looked at anyway
    (3_000, 10, False),  # a newsroom folder: 10 questions look at ~150 passages, not 3,000
    (3_000, 500, True),
])
def test_a_question_set_pre_embeds_sentences_only_when_that_is_less_work(passages, questions,
                                                                          pre_embeds):
    from rag.settings import load_settings

    probe = _WarmProbe(passages)
    cli._warm_for(probe, load_settings(), questions)
    assert probe.warmed == [pre_embeds]
