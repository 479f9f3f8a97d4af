"""Graph wiring (DESIGN.md, "The agent"):

    START → retrieve → gate ─confident→ answer → END
                         └─uncertain→ think_step ⇄ retrieve_more
                                         └→ probe ─certain/budget→ answer
                                              └─else→ think_step
    answer → vote (self-consistency when armed; else nothing) → END

`build_graph(checkpointer)` compiles it with `Context` as the runtime context schema;
pass a checkpointer (SQLite in the service) to keep multi-turn threads.
"""
from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from agent import nodes, routing
from agent.state import Context, State


def build_graph(checkpointer=None):
    """Compile the agent graph. `checkpointer`: any LangGraph checkpointer, or None."""
    g = StateGraph(State, context_schema=Context)
    g.add_node("retrieve", nodes.retrieve)
    g.add_node("gate", nodes.gate)
    g.add_node("think_step", nodes.think_step)
    g.add_node("retrieve_more", nodes.retrieve_more)
    g.add_node("probe", nodes.probe)
    g.add_node("answer", nodes.answer)
    g.add_node("vote", nodes.vote)
    g.add_edge(START, "retrieve")
    g.add_edge("retrieve", "gate")
    g.add_conditional_edges("gate", routing.after_gate)
    g.add_conditional_edges("think_step", routing.after_step)
    g.add_edge("retrieve_more", "probe")
    g.add_conditional_edges("probe", routing.after_probe)
    g.add_edge("answer", "vote")
    g.add_edge("vote", END)
    return g.compile(checkpointer=checkpointer)
