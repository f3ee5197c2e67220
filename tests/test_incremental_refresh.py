"""Incremental BM25 and hubness refresh: a change to the collection re-reads and re-tokenises
only the chunks added since, scores are those of a full build, and the persisted caches are
content-addressed so that two processes sharing an index folder stay consistent.

Fast: the hash embedder of conftest and a real Chroma in tmp_path.
"""

from __future__ import annotations

import numpy as np
import pytest

import rag.retrieval.hybrid as retrieve
from rag.lang.text import bm25_tokens
from rag.retrieval.hybrid import (
    HybridRetriever,
    TokenizedCorpus,
    _bm25_from,
    _tokenize_into,
    load_bm25,
    refresh_hubness,
    wait_for_cache_writes,
)
from rag.store import open_store
from tests.test_retrieve import add_doc

WORDS = ["ракета", "снаряд", "граница", "влада", "избори", "нафта", "гас", "пшеница", "лука",
         "мост", "фабрика", "болница", "школа", "суд", "полиција", "војска", "министар",
         "парламент", "банка", "извоз", "увоз", "струја", "вода", "пут"]


def _paragraphs(seed: int, n: int = 3) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 12)) + f" {seed}{i} Документ{seed}" for i in range(n)]


@pytest.fixture
def store(settings_factory, hash_embedder):
    s = open_store(settings_factory(), embed_id=hash_embedder.id)
    for d in range(6):
        add_doc(s, hash_embedder, f"d{d}.txt", _paragraphs(d))
    return s


def _scores_by_id(lex, question: str) -> dict[str, float]:
    return {c.id: float(x) for c, x in zip(lex.chunks, lex.scores(question), strict=True)}


def _forbid_full_read(monkeypatch, store) -> None:
    """A full read of the collection is what an incremental refresh must not need."""
    monkeypatch.setattr(type(store), "iter_chunks",
                        lambda self, *a, **k: pytest.fail("read every chunk again"))
    monkeypatch.setattr(type(store), "vectors",
                        lambda self, *a, **k: pytest.fail("read every vector again"))


def test_bm25_refresh_tokenises_only_new_chunks_and_scores_as_a_full_build(
        store, hash_embedder, tmp_path, monkeypatch):
    first = load_bm25(store, tmp_path / "c", top_k=5)
    add_doc(store, hash_embedder, "new.txt", _paragraphs(99) + ["Мкртичев ракета извоз"])
    store.delete_document("d0.txt")

    tokenised: list[str] = []
    real = retrieve.bm25_tokens
    monkeypatch.setattr(retrieve, "bm25_tokens", lambda t: tokenised.append(t) or real(t))
    with monkeypatch.context() as m:
        _forbid_full_read(m, store)
        inc = load_bm25(store, tmp_path / "c", top_k=5, previous=first)
    assert len(tokenised) == 4  # the four chunks of new.txt, nothing else
    assert {c.id for c in inc.chunks} == set(store.chunk_ids())

    full = load_bm25(store, None, top_k=5)
    for q in ("Мкртичев ракета", "нафта гас Документ3", "izbori vlada"):
        a, b = _scores_by_id(inc, q), _scores_by_id(full, q)
        assert a.keys() == b.keys()
        assert np.allclose([a[k] for k in b], list(b.values()), rtol=1e-5, atol=1e-6)
    assert inc.top("Мкртичев", 1)[0][0].source == "new.txt"


def test_the_vectorised_bm25_build_scores_exactly_as_bm25s_own(store):
    import bm25s

    chunks = list(store.iter_chunks()) + [store.get_chunks(store.chunk_ids()[:1])[0]]
    vocab: dict[str, int] = {}
    ours = _bm25_from(TokenizedCorpus(chunks, _tokenize_into([c.text for c in chunks], vocab),
                                      vocab))
    theirs = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    theirs.index([bm25_tokens(c.text) for c in chunks], show_progress=False)
    for q in ("ракета граница нафта", "Документ2 избори", "zzz"):
        a = [ours.vocab_dict[t] for t in bm25_tokens(q) if t in ours.vocab_dict]
        b = [theirs.vocab_dict[t] for t in bm25_tokens(q) if t in theirs.vocab_dict]
        if not a:
            assert not b
            continue
        assert np.allclose(ours.get_scores_from_ids(a), theirs.get_scores_from_ids(b),
                           rtol=1e-5, atol=1e-6)


def test_bm25_refresh_starts_from_the_newest_cache_on_disk(store, hash_embedder, tmp_path,
                                                           monkeypatch):
    """A process that starts after a change builds from the last persisted index, not from
    the whole collection."""
    load_bm25(store, tmp_path / "c", top_k=5)
    add_doc(store, hash_embedder, "new.txt", ["Мкртичев координира извоз"])
    with monkeypatch.context() as m:
        _forbid_full_read(m, store)
        inc = load_bm25(store, tmp_path / "c", top_k=5)
    assert not inc.from_cache
    assert inc.top("Мкртичев", 1)[0][0].source == "new.txt"
    assert load_bm25(store, tmp_path / "c", top_k=5).from_cache  # persisted under its name


def test_hubness_refresh_scores_new_chunks_against_the_kept_reference(
        store, hash_embedder, tmp_path, monkeypatch):
    monkeypatch.setattr(retrieve, "HUB_SAMPLE", 8)  # the corpus (18 chunks) exceeds it
    first = refresh_hubness(store, tmp_path / "c")
    assert len(first.ref_ids) == 8 and set(first.values) == set(store.chunk_ids())
    add_doc(store, hash_embedder, "new.txt", _paragraphs(42, 2))
    with monkeypatch.context() as m:
        _forbid_full_read(m, store)
        inc = refresh_hubness(store, tmp_path / "c", previous=first)
    assert set(inc.values) == set(store.chunk_ids())
    for cid, h in first.values.items():
        assert inc.values[cid] == h  # old chunks keep their value
    new_ids, new_vecs = store.vectors_of([i for i in inc.values if i not in first.values])
    sims = new_vecs @ first.ref.T
    expected = np.sort(sims, axis=1)[:, ::-1][:, :retrieve.HUB_NEIGHBOURS].mean(axis=1)
    assert np.allclose([inc.values[i] for i in new_ids], expected, atol=1e-6)


def test_hubness_is_recomputed_in_full_when_the_reference_lost_members(
        store, hash_embedder, tmp_path, monkeypatch):
    monkeypatch.setattr(retrieve, "HUB_SAMPLE", 8)
    first = refresh_hubness(store, tmp_path / "c")
    for d in range(4):
        store.delete_document(f"d{d}.txt")  # most reference passages are gone
    add_doc(store, hash_embedder, "new.txt", _paragraphs(7, 4))
    calls = []
    real = type(store).vectors
    monkeypatch.setattr(type(store), "vectors", lambda self, *a: calls.append(1) or real(self))
    again = refresh_hubness(store, tmp_path / "c", previous=first)
    assert calls and set(again.values) == set(store.chunk_ids())
    assert set(again.ref_ids) <= set(store.chunk_ids())


def test_upload_refresh_swaps_in_a_state_without_a_full_rebuild(store, hash_embedder,
                                                                 tmp_path, monkeypatch):
    monkeypatch.setattr(retrieve, "HUB_SAMPLE", 8)  # hubness incremental above this size
    r = HybridRetriever(store, hash_embedder, top_k=3, candidates=5, bm25_dir=tmp_path / "c")
    assert r.retrieve("ракета граница")
    before = r.current()
    add_doc(store, hash_embedder, "new.txt", ["Мкртичев координира извоз на пшеница"])
    r.refresh()
    with monkeypatch.context() as m:
        _forbid_full_read(m, store)
        got = r.retrieve("Мкртичев")
    assert got[0].chunk.source == "new.txt"
    after = r.current()
    assert after is not before and after.version != before.version
    assert before.lexical is not None and before.lexical.top("Мкртичев", 1) == []  # untouched


def test_two_retrievers_sharing_one_index_folder_agree(store, hash_embedder, tmp_path,
                                                       monkeypatch):
    """Two app processes on one index: a write seen through the version stamp, each rebuilds
    incrementally, and both rank by the same BM25 index."""
    monkeypatch.setattr(retrieve, "HUB_SAMPLE", 8)
    a = HybridRetriever(store, hash_embedder, top_k=3, candidates=5, bm25_dir=tmp_path / "c")
    b = HybridRetriever(store, hash_embedder, top_k=3, candidates=5, bm25_dir=tmp_path / "c")
    a.retrieve("нафта")
    b.retrieve("нафта")
    add_doc(store, hash_embedder, "new.txt", ["Мкртичев координира извоз на нафта"])
    with monkeypatch.context() as m:
        _forbid_full_read(m, store)
        ra, rb = a.retrieve("Мкртичев нафта"), b.retrieve("Мкртичев нафта")
    assert [h.chunk.id for h in ra] == [h.chunk.id for h in rb]
    assert ra[0].chunk.source == "new.txt"
    assert a.lexical.fingerprint == b.lexical.fingerprint
    wait_for_cache_writes()  # the files are written by a background thread
    assert len(list((tmp_path / "c").glob("bm25-*"))) >= 1
