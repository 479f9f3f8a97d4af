"""Request and response models of the HTTP API (OpenAI's chat completions shape, plus documents).

Contract: requests are validated here (types, ranges, non-empty content); anything invalid
becomes a 400 in OpenAI's error shape (see `ErrorResponse`). Unknown request fields are
ignored, as OpenAI clients send many. Our additions are optional request fields
(`thread_id`, `reasoning_effort` values none/auto) and one response field, `thinkgate`.
"""
from __future__ import annotations

import time
import unicodedata
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.state import EFFORTS
from agent.turn import TokenBudget, TokenLedger

#: `reasoning_effort` values accepted (agent.state.EFFORTS is the one list)
ReasoningEffort = Literal[tuple(EFFORTS)]  # type: ignore[valid-type]


class ErrorInfo(BaseModel):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error body as it goes over the wire (the OpenAPI schema of every error)."""

    error: ErrorInfo


class ErrorResponse(BaseModel):
    """OpenAI's error body; `status_code` (the HTTP status) and `headers` (e.g. ``Retry-After``)
    are not serialised."""

    error: ErrorInfo
    status_code: int = Field(400, exclude=True)
    headers: dict[str, str] = Field(default_factory=dict, exclude=True)

    @classmethod
    def make(cls, message: str, status_code: int = 400, *, type: str | None = None,
             param: str | None = None, code: str | None = None,
             headers: dict[str, str] | None = None) -> "ErrorResponse":
        """An error; `type` defaults from the status (OpenAI's names: 401 authentication_error,
        429 rate_limit_error, 5xx server_error, other 4xx invalid_request_error)."""
        kind = type or {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(
            status_code, "server_error" if status_code >= 500 else "invalid_request_error")
        return cls(error=ErrorInfo(message=message, type=kind, param=param, code=code), status_code=status_code,
                   headers=headers or {})


def check_unicode(text: str, where: str) -> str:
    """`text` unchanged, or ValueError when it holds a lone surrogate (not encodable as UTF-8:
    tokenizers fail on it, so it must be a 400, not a 500)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{where} contains invalid Unicode (a lone surrogate at character {exc.start}); "
                         "send valid UTF-8 text") from None
    return text


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    @model_validator(mode="after")
    def _not_empty(self) -> "ChatMessage":
        check_unicode(self.text, f"{self.role} message content")
        if self.name is not None:
            check_unicode(self.name, f"{self.role} message name")
        if self.role in ("user", "system", "developer") and not self.text.strip():
            raise ValueError(f"{self.role} message content is empty")
        return self


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=8192, description="deprecated alias of max_completion_tokens")
    max_completion_tokens: int | None = Field(None, ge=1, le=8192, description=(
        "most tokens generated for the turn: reasoning, probes and answer together; "
        "usage.completion_tokens never exceeds it"))
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1, description="only one choice is generated")
    seed: int | None = None
    reasoning_effort: ReasoningEffort | None = None
    thread_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$",
                                  description="continue (or start) a thread stored on the server; send only "
                                              "the new user message. Threads belong to the API key that made them.")
    max_samples: int | None = Field(None, ge=1, le=32, description=(
        "self-consistency: most reasoning+answer samples voted on when thinking ends uncertain (1: no voting); "
        "default 8 with reasoning_effort=high, else 1"))
    store: bool = Field(False, description="store this turn as a new thread (its id comes back as "
                                           "thinkgate.thread_id); implied by thread_id")
    user: str | None = None

    @field_validator("messages")
    @classmethod
    def _last_is_user(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if v[-1].role != "user":
            raise ValueError("the last message must have role 'user'")
        return v

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ReasoningTokens(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    completion_tokens_details: ReasoningTokens = Field(default_factory=ReasoningTokens)


class SourceOut(BaseModel):
    """A passage shown to the model: [n] in the answer cites it; `text` is the passage as shown."""

    n: int
    source: str
    heading: str
    score: float
    id: int
    cited: bool
    text: str = Field("", description="the passage text as the model read it")


class ThinkgateExtras(BaseModel):
    """The agent's decision trace: why it answered at once or thought, at what cost."""

    model_config = ConfigDict(extra="allow")
    thread_id: str | None = Field(description="the stored thread (None: the turn was not stored)")
    latency_s: float
    decision: Literal["answer", "think"]
    reason: str
    reasoning_effort: Literal["none", "auto", "high"]
    entropy: dict[str, Any] = Field(description="the gate draft's mean/max/varentropy (nats)")
    thresholds: dict[str, float]
    draft: dict[str, Any]
    steps: list[dict[str, Any]] = Field(description="reasoning steps with their probes")
    exit_reason: str | None
    retrievals: list[dict[str, Any]]
    sources: list[SourceOut]
    tokens: TokenLedger = Field(description=(
        "the turn's tokens by kind: completion_tokens = draft + probe + reasoning + answer + samples; "
        "reasoning_tokens = probe + reasoning + samples; prompt_tokens = prompt + information"))
    budget: TokenBudget = Field(description="completion tokens allowed (total) and, of those, the most hidden work (think)")
    votes: dict[str, Any] | None = Field(None, description=(
        "when a vote ran: samples (answer, vote key, certainty, tokens, seed), counts, chosen, why sampling "
        "stopped (decisive | max_samples | budget), changed (the vote overrode the greedy answer)"))
    # extra key while the background index build is partial: index {state, files, chunks, chunks_per_s, eta_s}


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None = None
    reasoning: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: Literal["stop", "length"] = "stop"
    logprobs: None = None


def _cid() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=_cid)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    thinkgate: ThinkgateExtras


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    thinkgate: ThinkgateExtras | None = None


class ThreadMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class ThreadOut(BaseModel):
    """A stored thread: its messages in order (the user's and the agent's answers; reasoning is not kept)."""

    id: str
    object: Literal["thread"] = "thread"
    messages: list[ThreadMessage]


class ThreadDeleted(BaseModel):
    id: str
    object: Literal["thread.deleted"] = "thread.deleted"
    deleted: bool = True


class HealthIndex(BaseModel):
    model_config = ConfigDict(extra="allow")


class Health(BaseModel):
    """``GET /healthz``: ``status`` ok, the policy's health, the chunk count, the chunk store (kind,
    location, its generation, this replica's cache generation and its FAISS kind), the background
    index build while one exists."""

    model_config = ConfigDict(extra="allow")
    status: Literal["ok"]
    policy: dict[str, Any]
    chunks: int
    store: dict[str, Any] | None = None
    index: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "thinkgate"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class DocumentIn(BaseModel):
    """A document to index: `source` names it (a repeat replaces it), `format` says how headings are found."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1, max_length=5_000_000)
    format: Literal["txt", "md", "rst", "html"] = "txt"

    @field_validator("source", "text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("source")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        check_unicode(v, "source")
        bad = next((c for c in v if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")), None)
        if bad is not None:
            raise ValueError(f"must not contain control or format characters (found U+{ord(bad):04X} at "
                             f"{v.index(bad)}): newlines, NUL, ESC and bidi controls are refused")
        return v

    @field_validator("text")
    @classmethod
    def _valid_text(cls, v: str) -> str:
        return check_unicode(v, "text")


class DocumentOut(BaseModel):
    id: str = Field(description="opaque id: DELETE /v1/documents/{id} removes the document")
    source: str
    chunks: int
    object: Literal["document"] = "document"


class DocumentInfo(BaseModel):
    id: str
    source: str
    chunks: int
    sha256: str
    added: float
    object: Literal["document"] = "document"


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentInfo]


class SearchHit(BaseModel):
    id: int
    source: str
    heading: str
    text: str
    score: float


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    query: str
    data: list[SearchHit]
