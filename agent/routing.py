"""Edges of the graph: pure functions of the state that name the next node."""
from __future__ import annotations

from typing import Literal

from agent.state import State


def after_gate(state: State) -> Literal["think_step", "answer"]:
    """Think when the gate said so; otherwise continue the draft."""
    return "think_step" if state["decision"] == "think" else "answer"


def after_step(state: State) -> Literal["retrieve_more", "probe", "answer"]:
    """Retrieve when a query is pending; answer when the model closed or ended its thinking."""
    if state.get("pending_query"):
        return "retrieve_more"
    return "answer" if state.get("exit_reason") else "probe"


def after_probe(state: State) -> Literal["think_step", "answer"]:
    """Answer once the probe was certain or a budget ran out; else think on."""
    return "answer" if state.get("exit_reason") else "think_step"
