"""Service settings from ``THINKGATE_*`` environment variables (pydantic-settings).

Example: ``THINKGATE_MODEL=/path/to/ckpt THINKGATE_PORT=9000 thinkgate serve``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.protocol import ReasoningEffort
from policy.models import BACKENDS, DEFAULT_POLICY, cache_dir
from policy.onnx_backend import PRECISIONS
from retrieval.store import is_postgres_url


class Settings(BaseSettings):
    """Every field can be set as ``THINKGATE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="THINKGATE_", extra="ignore")

    model: str = Field(DEFAULT_POLICY, description="registered model name, checkpoint dir or hub id")
    served_model_name: str | None = Field(None, description="name in /v1/models (default: the model name)")
    embedder: str = Field("all-minilm-l6-v2", description="embedder name or model dir")
    cache_dir: Path = Field(default_factory=cache_dir, description="models, index and threads live here")
    index_dir: Path | None = Field(None, description="FAISS + SQLite index dir (default: <cache_dir>/index)")
    threads_db: Path | None = Field(None, description="SQLite checkpointer file (default: <cache_dir>/threads.sqlite)")
    database_url: str | None = Field(None, description="postgresql://user:pass@host:port/db puts threads and the "
                                                       "chunk store in PostgreSQL, shared by API replicas (each "
                                                       "keeps its FAISS cache in index_dir); unset: SQLite files")
    index_refresh_s: float = Field(1.0, ge=0, description="how often, at most, a search checks the shared store "
                                                          "for documents written by other replicas (seconds)")
    demo_index: bool = Field(False, description="index the demo corpus in the background at start-up while "
                                                "answering (resumes a partial build; skips unchanged files)")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    backend: Literal[BACKENDS] = Field("auto",  # type: ignore[valid-type]
                         description="policy backend: auto (onnx on a CPU-only machine, else transformers), onnx "
                                     "(onnxruntime-genai, CPU, quantized), transformers (CPU/GPU, fp32 reference), "
                                     "vllm (in-process GPU) or remote")
    precision: Literal[PRECISIONS] | None = Field(None,  # type: ignore[valid-type]
                           description="weights of the onnx backend's export (made once, cached); default: the "
                                       "registry's measured choice for the model (int8 for the 0.5B, int4 for the 1.5B), else int8")
    remote_url: str | None = Field(None, description="OpenAI-compatible completions server for backend=remote")
    device: str | None = Field(None, description="torch device for the policy (default: cuda if present, else cpu)")
    reasoning_effort: ReasoningEffort = Field("auto", description="default when a request names none")
    max_input_chars: int = Field(32_000, ge=1, description="longest message content accepted, in characters")
    cache_slots: int = Field(4, ge=1, description="prefix KV caches kept (one per concurrent conversation)")
    max_running_requests: int = Field(4, ge=1, description="chat turns generating at once")
    max_queued_requests: int = Field(16, ge=0, description="admitted chat turns waiting for a running place; "
                                                           "beyond running + queued a request gets 429 + Retry-After")
    request_timeout_s: float = Field(300.0, gt=0, description="deadline of one chat request, queueing included "
                                                              "(504 deadline_exceeded, or an error event on a stream)")
    retrieval_mode: Literal["hybrid", "dense", "lexical"] = Field(
        "hybrid", description="hybrid: BM25 (SQLite FTS5) and dense (FAISS) fused by reciprocal rank; or one alone")
    rrf_k: float = Field(60.0, ge=0, description="k of reciprocal-rank fusion")
    lexical_weight: float = Field(1.0, ge=0, description="weight of the BM25 ranking in the fusion (dense: 1)")
    source_decay: float = Field(0.5, gt=0, le=1, description="diversity of the top-k across pages (1: off)")
    lexical_max_postings: int = Field(3000, ge=1, description="BM25 leaves out words held by more chunks than this")
    index_kind: Literal["auto", "flat-fp16", "flat", "ivf-fp16"] = Field(
        "auto", description="FAISS cache: exhaustive flat-fp16, then an inverted file (ivf-fp16) from 50,000 chunks")
    api_keys: str = Field("", description="comma-separated API keys; when set, every request needs "
                                          "'Authorization: Bearer <key>' (401 otherwise)")
    admin_api_keys: str = Field("", description="comma-separated admin keys; when set, only they may add or "
                                                "delete documents (403 otherwise); they are valid API keys too")
    protect_health: bool = Field(False, description="also require a key for /healthz and /metrics")
    cors_origins: str = Field("", description="comma-separated origins browsers may call from ('*': any)")
    thread_ttl_s: float = Field(7 * 86400.0, ge=0, description="stored threads unused this long are deleted "
                                                               "(0: never)")
    tau_think: float | None = Field(None, description="override the gate threshold (nats)")
    tau_exit: float | None = Field(None, description="override the early-exit threshold (nats)")

    def retriever_options(self) -> dict:
        """Keyword arguments of `retrieval.retriever.Retriever` from these settings."""
        return {"mode": self.retrieval_mode, "rrf_k": self.rrf_k, "lexical_weight": self.lexical_weight,
                "source_decay": self.source_decay, "max_postings": self.lexical_max_postings,
                "database_url": self.database_url, "refresh_s": self.index_refresh_s, "index_kind": self.index_kind}

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            return None
        if v is not None and not is_postgres_url(v):
            raise ValueError(f"THINKGATE_DATABASE_URL must start with postgresql:// (unset: SQLite), "
                             f"got {v.split('://')[0]!r}://…")
        return v

    @property
    def resolved_index_dir(self) -> Path:
        return (self.index_dir or self.cache_dir / "index").expanduser()

    @property
    def resolved_threads_db(self) -> Path:
        return (self.threads_db or self.cache_dir / "threads.sqlite").expanduser()
