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
    max_tokens: int | None       # answer + reasoning budget asked by the client
    temperature: float
    top_p: float                 # nucleus mass for sampled tokens (1.0: off)
    seed: int | None
    instructions: str            # the client's system message
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
    tokens: dict                 # prompt, draft, reasoning, information, probe, answer
