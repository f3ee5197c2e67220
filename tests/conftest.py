"""Shared fixtures and small fakes for fast tests."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
SEED_FILES = sorted(SEEDS.glob("*.txt"))

# Tests never touch the network or a user's config file, nor read the settings of the shell
# that runs them (a developer's RAG_EMBED_CACHE or RAG_TOP_K): removed here, before module-scoped
# fixtures and the servers tests start inherit them, and again before each test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
for _name in [n for n in os.environ if n.startswith("RAG_")]:
    del os.environ[_name]
os.environ["RAG_SETTINGS_FILE"] = str(ROOT / "tests" / "no-such-settings.toml")


class HashEmbedder:
    """Deterministic bag-of-words vectors: texts sharing words are similar, others are not.

    Good enough to test plumbing (storage, fusion, offsets) without loading a model.
    """

    def __init__(self, dim: int = 64, id: str = "hash:test"):
        self.dim = dim
        self.id = id
        self.calls: list[tuple[str, int]] = []

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for w in re.findall(r"\w+", text.casefold()):
            h = int.from_bytes(hashlib.blake2b(w[:6].encode(), digest_size=4).digest(), "little")
            v[h % self.dim] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v + 1.0 / np.sqrt(self.dim)

    def embed_passages(self, texts):
        self.calls.append(("passage", len(texts)))
        return np.array([self._vec(t) for t in texts], dtype=np.float32).reshape(len(texts), -1)

    def embed_queries(self, texts):
        self.calls.append(("query", len(texts)))
        return np.array([self._vec(t) for t in texts], dtype=np.float32).reshape(len(texts), -1)


@pytest.fixture(autouse=True)
def no_installed_dictionaries(monkeypatch):
    """Whether Debian's FreeDict packages are installed must not change what a test sees:
    tests that want dictionaries build them (tests/test_dictionary.py). A RAG_* variable left
    behind by an earlier test's own code is removed too."""
    for name in [n for n in os.environ if n.startswith("RAG_") and n != "RAG_SETTINGS_FILE"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RAG_DICTIONARY_DIR", "")


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture
def seeds_copy(tmp_path: Path) -> Path:
    """A writable copy of the seed articles."""
    d = tmp_path / "articles"
    d.mkdir()
    for f in SEED_FILES:
        shutil.copy(f, d / f.name)
    return d


@pytest.fixture
def settings_factory(tmp_path: Path):
    from rag.settings import load_settings

    def make(**kw):
        kw.setdefault("index_dir", tmp_path / "index")
        kw.setdefault("data_dir", SEEDS)
        kw.setdefault("mode", "extractive")
        return load_settings(**kw)

    return make
