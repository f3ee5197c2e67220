"""Where each language sits in the embedder's space, so that sentence scores compare across
languages.

A multilingual embedder scores a sentence in the question's own language (or a close one)
higher than an equally relevant sentence in another: even two unrelated texts are closer when
they share a language. Measured on the BSNLP topics with multilingual-e5-small, a Ukrainian
question is on average ~0.03 closer to an unrelated Ukrainian passage than to an unrelated
Polish one, about the spread of the scores of a question's candidate sentences. So the answer
sentence in Polish lost to a same-language sentence that only restates the question.

A language's centroid is the mean passage vector of news in that language, averaged over
several topics so that no topic leans it. `question_vector · centroid` is the question's
expected similarity to a passage of that language that has nothing to do with it; the evidence
score subtracts it, weighted (rag/answering/evidence.py). The centroids are computed from
article text alone (no questions, no answers) by `python benchmarks/fit_evidence.py --write`
and belong to one embedder: with another nothing is corrected. A language without a centroid
(one with news in fewer than MIN_TOPICS topics, or one the files never had) is taken to lean as
much as the average language.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rag.store import ChromaStore

logger = logging.getLogger(__name__)

CENTROIDS_FILE = Path(__file__).resolve().parent.parent / "data" / "language_centroids.json"
# A topic's passages in a language count towards its centroid only when there are this many,
# and a language gets a centroid only from this many topics: the mean of one topic's passages
# points at the topic as much as at the language, and would push down exactly the sentences
# that are about it (measured: the seed questions lost their Serbian and Macedonian answers
# to centroids made from the seed articles alone).
MIN_PASSAGES = 5
MIN_TOPICS = 3


@dataclass(frozen=True)
class LanguageCentroids:
    """Per-language centroids of one embedder's passage vectors."""

    embedder: str
    centroids: Mapping[str, np.ndarray]

    def bias(self, question_vector: np.ndarray, languages: Sequence[str | None]) -> np.ndarray:
        """For each language, how much closer an unrelated passage in it is to the question
        than one in the average language (0 for a language without a centroid)."""
        if not self.centroids:
            return np.zeros(len(languages), dtype=np.float32)
        if any(c.shape != question_vector.shape for c in self.centroids.values()):
            _warn_size(self.embedder, question_vector.shape)
            return np.zeros(len(languages), dtype=np.float32)
        expected = {lang: float(question_vector @ c) for lang, c in self.centroids.items()}
        mean = float(np.mean(list(expected.values())))
        return np.array([expected[lang] - mean if lang in expected else 0.0
                         for lang in languages], dtype=np.float32)

    def to_json(self, fitted: str = "") -> dict:
        return {"embedder": self.embedder, "fitted": fitted,
                "centroids": {lang: [round(float(x), 6) for x in v]
                              for lang, v in sorted(self.centroids.items())}}


@functools.cache
def _warn_size(embedder: str, shape: tuple[int, ...]) -> None:
    logger.warning("language centroids for %s do not match question vectors of shape %s: "
                   "scores are not corrected; refit them with python benchmarks/fit_evidence.py "
                   "--write", embedder, shape)


def compute(embedder: str, topics: Sequence[Mapping[str, np.ndarray]],
            min_passages: int = MIN_PASSAGES, min_topics: int = MIN_TOPICS) -> LanguageCentroids:
    """Centroids from the passage vectors of several topics, each a mapping of language to
    its passages' vectors (rows): each language's mean in each topic that has enough of it,
    averaged over those topics, so a topic with many passages in a language does not outweigh
    the others. A language found in fewer than `min_topics` topics gets none."""
    means: dict[str, list[np.ndarray]] = {}
    for topic in topics:
        for lang, vecs in topic.items():
            if lang and len(vecs) >= min_passages:
                means.setdefault(lang, []).append(np.asarray(vecs, dtype=np.float32).mean(axis=0))
    return LanguageCentroids(embedder, {lang: np.mean(v, axis=0) for lang, v in means.items()
                                        if len(v) >= min_topics})


def passages_by_language(store: ChromaStore) -> dict[str, np.ndarray]:
    """An index's passage vectors grouped by the language of their article ("" if unknown)."""
    languages = {c.id: c.language for c in store.iter_chunks()}
    ids, vectors = store.vectors()
    rows: dict[str, list[int]] = {}
    for i, chunk_id in enumerate(ids):
        rows.setdefault(languages.get(chunk_id) or "", []).append(i)
    return {lang: vectors[idx] for lang, idx in rows.items()}


def load(path: Path | None = None) -> LanguageCentroids | None:
    """The shipped centroids (or those in `path`), or None (with a warning) when the file is
    missing or damaged: scores are then not corrected, which costs quality, not correctness."""
    path = path or CENTROIDS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        vecs = {str(lang): np.asarray(v, dtype=np.float32)
                for lang, v in data["centroids"].items()}
        dims = {v.shape for v in vecs.values()}
        if len(dims) > 1 or any(v.ndim != 1 or not np.isfinite(v).all() for v in vecs.values()):
            raise ValueError("centroids of different sizes or with non-numbers")
        return LanguageCentroids(str(data["embedder"]), vecs)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        logger.warning("language centroids not used (%s: %s); restore the file (git checkout) "
                       "or refit it with python benchmarks/fit_evidence.py --write", path, e)
        return None


def for_embedder(embedder_id: str | None, path: Path | None = None) -> LanguageCentroids | None:
    """The shipped centroids if they belong to this embedder (`bias` checks the vector size)."""
    found = load(path)
    if found is not None and found.embedder != embedder_id:
        logger.info("language centroids are for %s, not %s: scores are not corrected for the "
                    "question's language", found.embedder, embedder_id)
        return None
    return found
