"""Prometheus metrics (prometheus-client), served at /metrics.

Counters and histograms per answered turn: decision (answer/think), latency, tokens by kind,
reasoning steps and in-reasoning retrievals.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

TURNS = Counter("thinkgate_turns_total", "Answered turns", ["decision", "effort"])
LATENCY = Histogram("thinkgate_turn_seconds", "Turn latency in seconds", ["decision"],
                    buckets=(0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128))
TOKENS = Counter("thinkgate_tokens_total", "Tokens by kind (prompt, draft, reasoning, information, probe, answer)", ["kind"])
STEPS = Histogram("thinkgate_reasoning_steps", "Reasoning steps per turn", buckets=(0, 1, 2, 3, 4, 6, 8, 12))
RETRIEVALS = Counter("thinkgate_retrievals_total", "Retrievals by trigger (question, model, entropy)", ["trigger"])


def observe_turn(turn) -> None:
    """Record one `agent.turn.Turn` (its token ledger by kind)."""
    decision = turn.decision or "unknown"
    TURNS.labels(decision, turn.effort).inc()
    LATENCY.labels(decision).observe(turn.seconds)
    for kind, n in turn.tokens.to_dict().items():
        TOKENS.labels(kind).inc(n)
    STEPS.observe(len(turn.details.get("steps") or []))
    for r in turn.details.get("retrievals") or []:
        RETRIEVALS.labels(r["trigger"]).inc()


def render() -> tuple[bytes, str]:
    """(body, content type) of the current metrics."""
    return generate_latest(), CONTENT_TYPE_LATEST
