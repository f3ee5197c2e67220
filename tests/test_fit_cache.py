"""Benchmark bookkeeping that a wrong figure would hide: the answer benchmarks replay cached
retrieval (benchmarks/fit_refusal.py `retrieved_for`), and that cache must not outlive the index it
was read from, or a re-chunked corpus is measured on its old passages; the retrieval benchmark's
sample runs write their own report."""

from __future__ import annotations

import json
import sys

from rag.eval.questions import load_questions
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import fit_refusal  # noqa: E402


def test_cached_retrieval_is_stale_once_the_index_changes(seeds_copy, hash_embedder, tmp_path):
    questions = load_questions(ROOT / "seeds" / "questions.jsonl")[:3]
    topic = fit_refusal.Topic("seeds", seeds_copy, questions, None)
    cache = tmp_path / "cache"
    first = fit_refusal.retrieved_for(topic, cache, hash_embedder, 5)
    assert set(first) == {q.question for q in questions}

    # Mark the cached results: a second call on the same index must serve them.
    path = cache / "seeds.retrieved.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    marked = {q: rs[:1] for q, rs in data["results"].items()}
    path.write_text(json.dumps({**data, "results": marked}), encoding="utf-8")
    assert all(len(rs) == 1 for rs in fit_refusal.retrieved_for(topic, cache, hash_embedder,
                                                                 5).values())

    # A changed article is re-indexed: the cache no longer matches the index.
    article = sorted(seeds_copy.glob("*.txt"))[0]
    article.write_text(article.read_text(encoding="utf-8") + "\nA new closing line.\n",
                       encoding="utf-8")
    fresh = fit_refusal.retrieved_for(topic, cache, hash_embedder, 5)
    assert any(len(rs) > 1 for rs in fresh.values())


def test_a_sample_run_of_the_retrieval_benchmark_never_replaces_the_whole_folder_report(tmp_path):
    import topics

    whole = topics.report_path(None, 0)
    assert whole == topics.DEFAULT_OUT
    assert topics.report_path(None, 60) == whole.with_name("topics-max60.md") != whole
    assert topics.report_path(tmp_path / "r.md", 60) == tmp_path / "r.md"
