"""Prompts: the system prompt and how passages and history become chat messages.

Contract: the same prompt serves the direct answer and the thinking path (the thinking path
only appends ``<think>`` to the assistant turn), so the gate's draft and the reasoning share
one cached prefix. Passage text is sanitized (`policy.format.sanitize`) before it enters.
"""
from __future__ import annotations

from policy.format import sanitize

SYSTEM_PROMPT = (
    "You are a helpful assistant that answers questions using the numbered passages from the "
    "documentation when they are relevant. Cite the passages you use as [n]. "
    "Answer briefly and directly. For hard questions you may reason first inside "
    "<think> </think>, and you may look things up with <search>query</search>."
)


def passage_title(p: dict) -> str:
    """Short label of a passage: its heading, else the file name of its source."""
    return p.get("heading") or p["source"].rsplit("/", 1)[-1]


def render_passages(passages: list[dict]) -> str:
    """Numbered passages, one per paragraph: ``[n] (title) text``."""
    return "\n\n".join(f"[{p['n']}] ({passage_title(p)}) {p['text']}" for p in passages)


def build_messages(question: str, passages: list[dict], history: list[tuple[str, str]],
                   instructions: str = "") -> list[dict]:
    """Chat messages for one turn.

    Args:
        question: the user's latest message.
        passages: dicts with n, heading, source, text (already sanitized).
        history: earlier (role, content) turns, oldest first; role is "user" or "assistant".
        instructions: the client's own system message, appended to ours.
    """
    system = SYSTEM_PROMPT + (f"\n\n{instructions.strip()}" if instructions.strip() else "")
    msgs = [{"role": "system", "content": system}]
    msgs += [{"role": r, "content": c} for r, c in history]
    user = f"Passages:\n{render_passages(passages)}\n\nQuestion: {question}" if passages else question
    msgs.append({"role": "user", "content": user})
    return msgs


def clean_passage(text: str, special_tokens) -> str:
    """Passage text made safe for a prompt (special tokens and control tags removed)."""
    return sanitize(text, special_tokens).strip()
