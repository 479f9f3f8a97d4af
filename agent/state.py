"""The graph's state and its runtime context.

Contract:
- `State` is what the checkpointer persists per thread. ``messages`` accumulates across
  turns (LangGraph's `add_messages` reducer); every other field describes the current turn
  and is reset by the first node.
- ``transcript`` is the token ids of the whole prompt plus the assistant turn so far; it is
  only ever appended to (draft, ``<think>``, steps, ``<information>`` blocks, answer), so the
  policy's prefix cache serves every next call.
- `Context` carries the dependencies (policy, retriever, config): nodes get them through
  LangGraph's runtime context, never through module globals.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

from agent.config import AgentConfig
from policy.base import Policy

Effort = Literal["none", "auto", "high"]
#: every accepted ``reasoning_effort`` value → the agent's own: none (never think), auto (the gate
#: decides), high (always think); OpenAI's minimal → none, low and medium → auto. The one list
#: the API, the settings and the runner validate against.
EFFORTS: dict[str, Effort] = {"none": "none", "minimal": "none", "low": "auto", "medium": "auto",
                              "auto": "auto", "high": "high"}


def normalize_effort(effort: str | None, default: str = "auto") -> Effort:
    """Map a ``reasoning_effort`` value (or None → `default`) to none/auto/high.

    >>> normalize_effort("medium"), normalize_effort(None, "high")
    ('auto', 'high')

    Raises:
        ValueError: a value not in `EFFORTS` (the message lists the accepted ones).
    """
    value = default if effort is None else effort
    if value not in EFFORTS:
        raise ValueError(f"reasoning_effort must be one of {list(EFFORTS)}, got {value!r}")
    return EFFORTS[value]


class TokenCounts(TypedDict):
    """One turn's token counts by kind (`agent.turn.TOKEN_KINDS`; sums in `agent.turn.TokenLedger`)."""

    prompt: int
    information: int
    draft: int
    probe: int
    reasoning: int
    answer: int
    samples: int


class SearchBackend(Protocol):
    """What the agent needs from retrieval: ``await asearch(query, k)`` → objects with
    id, source, heading, text, score."""

    async def asearch(self, query: str, k: int = 5) -> list[Any]: ...


@dataclass
class Context:
    """Run-scoped dependencies: the policy, the retriever (None → no retrieval) and the config."""

    policy: Policy
    retriever: SearchBackend | None
    config: AgentConfig


class State(TypedDict, total=False):
    # inputs (per turn)
    messages: Annotated[list[AnyMessage], add_messages]
    effort: Effort               # none: never think; auto: the gate decides; high: always think
    max_tokens: int | None       # completion tokens allowed (reasoning + answer), see agent.turn.TokenBudget
    temperature: float
    top_p: float                 # nucleus mass for sampled tokens (1.0: off)
    seed: int | None
    instructions: str            # the client's system message
    samples: int                 # self-consistency cap of this turn (1: no voting)
    # per-turn working state
    question: str
    passages: list[dict]         # {n, id, source, heading, text, score, trigger}
    transcript: list[int]
    prompt_tokens: int
    draft: dict                  # {text, ids, entropies, finish_reason}
    score: dict                  # aggregate of the draft: mean, max, varentropy, tokens (nats)
    decision: str                # "answer" | "think"
    reason: str
    steps: list[dict]            # {n, text, tokens, entropy, max_entropy, search, probe}
    retrievals: list[dict]       # {query, trigger: question|model|entropy, passages: [n], ms}
    pending_query: dict | None   # {query, trigger}
    exit_reason: str             # certain | budget | model_closed | model_ended | ""
    closed: bool                 # </think> already in the transcript
    reasoning: str
    answer: str
    finish_reason: str
    tokens: TokenCounts
    votes: dict                  # {samples: [{n, answer, key, certainty, tokens}], counts, chosen, stop}
