"""The `Item` record and the `TaskFamily` interface every task family implements.

Contract:
- An `Item` is one question with its reference answer, its difficulty bucket and, where the
  family has one, a programmatic reasoning trace (the ``<think>`` target).
- A `TaskFamily` owns, for its items: the chat messages exactly as the served agent sends
  them (`messages`), the two targets of the dual-mode warm-up (`think_target`,
  `answer_target`), answer extraction (`extract`) and the scorer that is also the training
  reward (`score`, in [0, 1]).
- A completion either thinks, ``<think>\\n{trace}\\n</think>\\n{answer}``, or answers at once
  (`policy.format.think_completion`); the first generated token decides the mode.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from policy.format import split_think, think_completion


@dataclass
class Item:
    """One task item.

    Attributes:
        id: unique within its task set, e.g. ``arith-hard-s1-17``.
        family: the owning family: ``arith``, ``docs`` or ``ntr``.
        question: the user's message.
        answer: the reference answer (for ``docs``, the first accepted phrase).
        bucket: ``easy`` or ``hard`` ("" where the family has no buckets).
        trace: the reasoning written inside ``<think>`` (None: no programmatic trace).
        retrieval: whether the served agent retrieves passages for it.
        meta: family-specific data (accepted phrases, NTR continuation and boundaries, …).
    """

    id: str
    family: str
    question: str
    answer: str
    bucket: str = ""
    trace: str | None = None
    retrieval: bool = False
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Item":
        return cls(**d)


class TaskFamily:
    """Prompt, targets, extraction and scoring of one family (subclasses override what differs)."""

    name = "base"

    def messages(self, item: Item, passages: list[dict] | None = None) -> list[dict]:
        """Chat messages of `item` as the agent serves them (system prompt, passages, question)."""
        from tasks.prompt import build_messages

        return build_messages(item.question, passages or [], [])

    def answer_target(self, item: Item) -> str:
        """The no-think target: the bare answer."""
        return item.answer

    def think_target(self, item: Item) -> str:
        """The think target: the trace inside ``<think>`` then the bare answer.

        Raises:
            ValueError: the item has no trace.
        """
        if item.trace is None:
            raise ValueError(f"item {item.id} has no reasoning trace")
        return think_completion(item.trace, self.answer_target(item))

    def answer_part(self, text: str) -> str:
        """The part of a completion that is the answer: after ``</think>`` when it thinks."""
        reasoning, answer = split_think(text)
        return answer if reasoning is not None else text

    def extract(self, text: str) -> str:
        """The answer to compare with the reference (default: the stripped answer part)."""
        return self.answer_part(text).strip()

    def score(self, text: str, item: Item) -> float:
        """1.0 when the completion's extracted answer is correct, else 0.0 (also the RL reward)."""
        return 1.0 if self.extract(text) == item.answer else 0.0
