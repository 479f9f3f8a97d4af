"""The served prompt: the system prompt, the passages worth showing, and history → chat messages.

Contract: the same prompt serves the direct answer and the thinking path (the thinking path
only appends ``<think>`` to the assistant turn), so the gate's draft and the reasoning share
one cached prefix. Training and evaluation build every question-answering prompt with
`build_messages` too, so a trained checkpoint is measured and served on the prompt it saw.
Passages scoring below `min_score` (cosine) are not shown at all: a sum gains nothing from
documentation passages, and each one costs prompt tokens. Passage text is sanitized
(`policy.format.sanitize`) before it enters.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from policy.format import information_block, sanitize

# Short on purpose: every prompt token is paid for in each forward pass of serving and training
# (the earlier 60-token prompt made CPU training steps ~2x longer for arithmetic prompts).
SYSTEM_PROMPT = "Answer briefly. Cite passages you use as [n]. Think in <think> </think> only when needed."


def passage_title(p: dict) -> str:
    """Short label of a passage: its heading, else the file name of its source (`select_passages`
    stores it sanitized as ``title``)."""
    return p.get("title") or p.get("heading") or p["source"].rsplit("/", 1)[-1]


def render_passages(passages: list[dict]) -> str:
    """Numbered passages, one per paragraph: ``[n] (title) text``."""
    return "\n\n".join(f"[{p['n']}] ({passage_title(p)}) {p['text']}" for p in passages)


def build_messages(question: str, passages: list[dict], history: Sequence[tuple[str, str]] = (),
                   instructions: str = "") -> list[dict]:
    """Chat messages for one turn.

    Args:
        question: the user's latest message.
        passages: dicts with n, heading, source, text (already sanitized; see `select_passages`).
        history: earlier (role, content) turns, oldest first; role is "user" or "assistant".
        instructions: the client's own system message, appended to ours.
    """
    system = SYSTEM_PROMPT + (f"\n\n{instructions.strip()}" if instructions.strip() else "")
    msgs = [{"role": "system", "content": system}]
    msgs += [{"role": r, "content": c} for r, c in history]
    user = f"Passages:\n{render_passages(passages)}\n\nQuestion: {question}" if passages else question
    msgs.append({"role": "user", "content": user})
    return msgs


def clean_passage(text: str, special_tokens: Iterable[str]) -> str:
    """Passage text made safe for a prompt (special tokens and control tags removed)."""
    return sanitize(text, special_tokens).strip()


def select_passages(hits: Iterable, k: int, *, min_score: float = 0.0, seen: set[int] = frozenset(),
                    start_n: int = 1, special_tokens: Iterable[str] = (), trigger: str = "question") -> list[dict]:
    """The passages to show from search hits: at most `k`, not in `seen`, scoring ≥ `min_score`.

    Args:
        hits: objects with id, source, heading, text, score (cosine, best first).
        start_n: citation number of the first passage ([n]).

    Returns:
        dicts {n, id, source, heading, title, text, score, trigger}; heading, title (what the prompt
        shows: the heading, else the source's file name) and text sanitized.
    """
    special = tuple(special_tokens)
    out: list[dict] = []
    for h in hits:
        if len(out) >= k:
            break
        if h.id in seen or float(h.score) < min_score:
            continue
        heading = clean_passage(h.heading, special)
        title = heading or clean_passage(h.source.rsplit("/", 1)[-1], special)  # a source name is text too
        out.append({"n": start_n + len(out), "id": h.id, "source": h.source, "heading": heading, "title": title,
                    "text": clean_passage(h.text, special), "score": round(float(h.score), 4), "trigger": trigger})
    return out


def item_passages(item, retriever, cfg, special_tokens: Iterable[str] = ()) -> list[dict] | None:
    """The passages the served agent shows for `item`'s question (its first retrieval), or None when
    the item is served without retrieval or there is no retriever: the top `cfg.top_k` search hits
    above `cfg.min_passage_score` (`select_passages`). Evaluation and training prompts use this."""
    if not item.retrieval or retriever is None:
        return None
    return select_passages(retriever.search(item.question, cfg.top_k), cfg.top_k, min_score=cfg.min_passage_score,
                           special_tokens=special_tokens)


def step_passages(retriever, query: str, cfg, seen: set[int], start_n: int,
                  special_tokens: Iterable[str] = ()) -> list[dict]:
    """The passages a ``<search>`` call inside reasoning adds, as the agent's `retrieve_more` selects them:
    at most `cfg.step_k` hits of `query` not in `seen`, above `cfg.min_passage_score`, numbered from
    `start_n` (`select_passages`, trigger ``model``). Training (warm-up traces, GRPO rollouts) uses this."""
    hits = retriever.search(query, cfg.step_k + len(seen))
    return select_passages(hits, cfg.step_k, min_score=cfg.min_passage_score, seen=seen, start_n=start_n,
                           special_tokens=special_tokens, trigger="model")


def information_turn(passages: list[dict]) -> str:
    """The text a search appends to the transcript: ``\\n<information>…</information>\\n\\n`` of
    `passages` (`select_passages` dicts), each as ``[n] (title) text`` (`policy.format.information_block`).

    >>> information_turn([{"n": 4, "title": "t", "heading": "t", "text": "x"}])
    '\\n<information>\\n[4] (t) x\\n</information>\\n\\n'
    """
    return "\n" + information_block([(p["n"], passage_title(p), p["text"]) for p in passages]) + "\n\n"
