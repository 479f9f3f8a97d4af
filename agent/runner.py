"""`Agent`: the compiled graph plus its context, with a call for a whole answer and one for a stream.

Contract:
- `Agent.run(messages, thread_id=…, effort=…, max_tokens=…)` → `agent.turn.Turn` (answer,
  reasoning, token ledger, decision trace); `max_tokens` bounds every generated token of the
  turn (OpenAI's max_completion_tokens; `agent.turn.TokenBudget`).
- `Agent.stream(...)` yields ``("content"|"reasoning", text)`` pieces, then ``("done", Turn)``.
- With a `thread_id` the turn is stored in the checkpointer under it; when that thread already
  exists, only the newest user message is taken from `messages` (the earlier turns come from the
  checkpointer). Without one nothing is stored: every message given is the history, and the
  `Turn`'s thread_id is None.
- `effort` accepts `agent.state.EFFORTS` (ours none/auto/high and OpenAI's minimal/low/medium).
- Errors: `ValueError` for an unknown effort or no user message.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence

from langchain_core.messages import AIMessage, HumanMessage

from agent.config import AgentConfig
from agent.graph import build_graph
from agent.state import EFFORTS, Context, normalize_effort
from agent.turn import TokenBudget, Turn

__all__ = ["Agent", "Turn", "EFFORTS", "normalize_effort"]

class Agent:
    """Args:
        policy: a `Policy`.
        retriever: an object with ``asearch(query, k)`` or None.
        config: thresholds and budgets (default: `AgentConfig()`).
        checkpointer: a LangGraph checkpointer for threads (None: no memory across calls).
    """

    def __init__(self, policy, retriever=None, config: AgentConfig | None = None, checkpointer=None):
        self.context = Context(policy=policy, retriever=retriever, config=config or AgentConfig())
        self.graph = build_graph(checkpointer)
        self.ephemeral_graph = build_graph(None) if checkpointer is not None else self.graph
        self.checkpointer = checkpointer

    def _graph(self, thread_id: str | None):
        return self.graph if thread_id else self.ephemeral_graph

    async def _inputs(self, messages: Sequence[dict], thread_id: str | None, effort: str | None,
                      max_tokens: int | None, temperature: float, seed: int | None,
                      top_p: float = 1.0, samples: int | None = None) -> tuple[dict, dict, str]:
        eff = normalize_effort(effort)
        TokenBudget.split(max_tokens, self.context.config)  # a limit < 1 is a ValueError here, not mid-graph
        if samples is None:
            samples = self.context.config.max_samples if eff == "high" else 1
        if not 1 <= samples <= 32:
            raise ValueError(f"max_samples must be in 1..32, got {samples}")
        system = "\n".join(m["content"] for m in messages if m["role"] in ("system", "developer"))
        turns = [m for m in messages if m["role"] in ("user", "assistant")]
        if not turns or turns[-1]["role"] != "user":
            raise ValueError("the last message must come from the user")
        tid = thread_id or uuid.uuid4().hex
        config = {"configurable": {"thread_id": tid}}
        existing = None
        if thread_id and self.checkpointer is not None:
            existing = (await self.graph.aget_state(config)).values.get("messages")
        if existing:
            turns = turns[-1:]
        lc = [HumanMessage(m["content"]) if m["role"] == "user" else AIMessage(m["content"]) for m in turns]
        inputs = {"messages": lc, "effort": eff, "max_tokens": max_tokens, "temperature": temperature,
                  "top_p": top_p, "seed": seed, "instructions": system, "samples": samples}
        return inputs, config, eff

    async def run(self, messages: Sequence[dict], *, thread_id: str | None = None, effort: str | None = None,
                  max_tokens: int | None = None, temperature: float = 0.0, seed: int | None = None,
                  top_p: float = 1.0, samples: int | None = None) -> Turn:
        """Answer the newest user message; see the module docstring. `samples`: the self-consistency
        cap (None: `AgentConfig.max_samples` when effort is high, else 1 = no voting)."""
        t0 = time.perf_counter()
        inputs, config, eff = await self._inputs(messages, thread_id, effort, max_tokens, temperature, seed, top_p,
                                                 samples)
        state = await self._graph(thread_id).ainvoke(inputs, config, context=self.context)
        return self._turn(state, thread_id, eff, t0)

    async def stream(self, messages: Sequence[dict], *, thread_id: str | None = None, effort: str | None = None,
                     max_tokens: int | None = None, temperature: float = 0.0,
                     seed: int | None = None, top_p: float = 1.0,
                     samples: int | None = None) -> AsyncIterator[tuple[str, object]]:
        """Yield ("content"|"reasoning", text) as generated, then ("done", Turn)."""
        t0 = time.perf_counter()
        inputs, config, eff = await self._inputs(messages, thread_id, effort, max_tokens, temperature, seed, top_p,
                                                 samples)
        state: dict = {}
        async for mode, chunk in self._graph(thread_id).astream(inputs, config, context=self.context,
                                                    stream_mode=["custom", "values"]):
            if mode == "custom":
                yield chunk["type"], chunk["text"]
            else:
                state = chunk
        yield "done", self._turn(state, thread_id, eff, t0)

    async def history(self, thread_id: str) -> list[dict]:
        """The stored messages of `thread_id` as [{"role": "user"|"assistant", "content"}], oldest first
        ([] for an unknown thread or without a checkpointer)."""
        if self.checkpointer is None:
            return []
        state = await self.graph.aget_state({"configurable": {"thread_id": thread_id}})
        return [{"role": "user" if m.type == "human" else "assistant", "content": str(m.content)}
                for m in state.values.get("messages", []) if m.type in ("human", "ai")]

    def _turn(self, state: dict, thread_id: str | None, effort: str, t0: float) -> Turn:
        return Turn.from_state(state, thread_id, effort, self.context.config, time.perf_counter() - t0)
