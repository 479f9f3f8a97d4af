"""One answered turn as a typed record, with the token budget and the token ledger every
consumer (API usage, metrics, evaluation, benchmarks) reads.

Contract:
- `TokenBudget.split(limit, cfg)` splits a turn's completion-token limit (OpenAI's
  ``max_completion_tokens``; ``max_tokens`` is its deprecated alias) into hidden work — the
  gate's discarded draft, probes and reasoning steps — of at most ``think`` tokens, and the
  answer, which always keeps ``total - think >= 1`` tokens. Without a limit the config's
  budgets apply (``max_answer_tokens`` plus the most hidden work the config allows).
- `TokenLedger` counts one turn's tokens by kind. As OpenAI counts them:
  ``completion = draft + probe + reasoning + answer + samples`` (every token the policy generated
  for the turn; ``samples``: the extra reasoning+answer samples of a vote), ``reasoning_tokens =
  probe + reasoning + samples`` (generated but not the answer shown, counted inside completion), ``prompt_total = prompt + information`` (tokens read, not generated:
  the prompt and the retrieved ``<information>`` blocks). The agent keeps
  ``completion <= budget.total`` and ``hidden <= budget.think``.
- `Turn` is what `agent.runner.Agent` returns; ``Turn.metadata`` is the JSON the API shows as
  ``thinkgate``.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from agent.config import AgentConfig

@dataclass(frozen=True)
class TokenBudget:
    """How many tokens one turn may generate.

    Attributes:
        total: completion tokens allowed (hidden work + answer).
        think: of those, the most hidden work (discarded draft, probes, reasoning); `total - think` ≥ 1
            is the answer's room.
    """

    total: int
    think: int

    @classmethod
    def split(cls, limit: int | None, cfg: AgentConfig, samples: int = 1) -> "TokenBudget":
        """The budget for a client `limit` (None: the config's defaults, plus `sample_tokens` for
        each voting sample beyond the first when `samples` > 1; with a limit, samples fit in it).

        Example, with the default config (think_share 0.75, hidden work capped at 304 tokens):

        >>> TokenBudget.split(96, AgentConfig())
        TokenBudget(total=96, think=72)
        >>> TokenBudget.split(1, AgentConfig())
        TokenBudget(total=1, think=0)
        >>> TokenBudget.split(None, AgentConfig())
        TokenBudget(total=560, think=304)

        Raises:
            ValueError: `limit` < 1.
        """
        cap = cfg.max_think_tokens + cfg.draft_tokens + cfg.max_steps * cfg.probe_tokens
        if limit is None:
            return cls(total=cfg.max_answer_tokens + cap + (max(1, samples) - 1) * cfg.sample_tokens, think=cap)
        if limit < 1:
            raise ValueError(f"max_completion_tokens must be >= 1, got {limit}")
        return cls(total=limit, think=min(cap, int(limit * cfg.think_share)))


@dataclass(frozen=True)
class TokenLedger:
    """Token counts of one turn by kind (see the module docstring for the sums)."""

    prompt: int = 0
    information: int = 0
    draft: int = 0
    probe: int = 0
    reasoning: int = 0
    answer: int = 0
    samples: int = 0

    @classmethod
    def from_counts(cls, counts: dict[str, int] | None) -> "TokenLedger":
        """From the graph state's ``tokens`` dict (missing kinds are 0).

        Raises:
            ValueError: a key that is not one of `TOKEN_KINDS`.
        """
        counts = counts or {}
        extra = set(counts) - set(TOKEN_KINDS)
        if extra:
            raise ValueError(f"unknown token kinds {sorted(extra)}; known: {list(TOKEN_KINDS)}")
        return cls(**{k: int(v) for k, v in counts.items()})

    @property
    def completion(self) -> int:
        """Every token generated for the turn (OpenAI's ``completion_tokens``)."""
        return self.draft + self.probe + self.reasoning + self.answer + self.samples

    @property
    def hidden(self) -> int:
        """Generated tokens that are not part of the answer (OpenAI's ``reasoning_tokens``)."""
        return self.probe + self.reasoning + self.samples

    @property
    def prompt_total(self) -> int:
        """Tokens read: the prompt plus retrieved ``<information>`` blocks (``prompt_tokens``)."""
        return self.prompt + self.information

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


#: the ledger's kinds, in the order they are spent (`TokenLedger`'s fields)
TOKEN_KINDS = tuple(f.name for f in fields(TokenLedger))


def empty_counts(prompt: int = 0) -> dict[str, int]:
    """A fresh per-turn count dict (the graph state's ``tokens``), keys `TOKEN_KINDS`."""
    return {k: (prompt if k == "prompt" else 0) for k in TOKEN_KINDS}


def hidden_left(counts: dict[str, int], budget: TokenBudget) -> int:
    """Hidden-work tokens still allowed this turn (≥ 0)."""
    return max(0, budget.think - counts["probe"] - counts["reasoning"])


def completion_left(counts: dict[str, int], budget: TokenBudget) -> int:
    """Completion tokens still allowed this turn (≥ 0)."""
    return max(0, budget.total - TokenLedger.from_counts(counts).completion)


@dataclass
class Turn:
    """One answered turn.

    Attributes:
        thread_id: the stored thread, or None when the turn was not stored.
        answer / reasoning: the text shown as content / reasoning_content.
        finish_reason: "stop" or "length" (the completion budget ran out).
        decision / reason: "answer" or "think", and why (the gate's trace).
        effort: the reasoning effort applied (none, auto, high).
        tokens / budget: the ledger and the budget it was kept within.
        details: the rest of the decision trace (entropy, thresholds, draft, steps, exit_reason,
            retrievals, sources) as shown to clients.
        seconds: wall time of the turn.
        transcript: token ids of the prompt plus the assistant turn.
    """

    thread_id: str | None
    answer: str
    reasoning: str
    finish_reason: str
    decision: str
    reason: str
    effort: str
    tokens: TokenLedger
    budget: TokenBudget
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    transcript: list[int] = field(default_factory=list, repr=False)

    @property
    def thought(self) -> bool:
        return self.decision == "think"

    @property
    def metadata(self) -> dict[str, Any]:
        """The decision trace as JSON (the API's ``thinkgate`` field, less the server's extras)."""
        return {"decision": self.decision, "reason": self.reason, "reasoning_effort": self.effort, **self.details,
                "tokens": self.tokens.to_dict(), "budget": asdict(self.budget)}

    @classmethod
    def from_state(cls, state: dict, thread_id: str | None, effort: str, cfg: AgentConfig, seconds: float) -> "Turn":
        """Build from the graph's final state."""
        cited = {int(n) for n in re.findall(r"\[(\d+)\]", state.get("answer", ""))}
        details = {
            "entropy": {**{k: round(v, 4) if isinstance(v, float) else v for k, v in state.get("score", {}).items()},
                        "aggregate": cfg.score, "unit": "nats"},
            "thresholds": {"tau_think": cfg.tau_think, "tau_exit": cfg.tau_exit, "tau_retrieve": cfg.tau_retrieve},
            "draft": state.get("draft", {}),
            "steps": state.get("steps", []),
            "exit_reason": state.get("exit_reason") or None,
            "retrievals": state.get("retrievals", []),
            "votes": state.get("votes") or None,
            "sources": [{"n": p["n"], "source": p["source"], "heading": p["heading"], "score": p["score"],
                         "id": p["id"], "cited": p["n"] in cited, "text": p.get("text", "")} for p in state.get("passages", [])],
        }
        return cls(thread_id=thread_id, answer=state.get("answer", ""), reasoning=state.get("reasoning", "").strip(),
                   finish_reason=state.get("finish_reason") or "stop", decision=state.get("decision") or "",
                   reason=state.get("reason") or "", effort=effort,
                   tokens=TokenLedger.from_counts(state.get("tokens")),
                   budget=TokenBudget.split(state.get("max_tokens"), cfg, state.get("samples") or 1), details=details,
                   seconds=seconds,
                   transcript=list(state.get("transcript", [])))
