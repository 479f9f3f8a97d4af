"""Forcing the mode of a generation: think (open with ``<think>``) or answer at once.

Contract:
- `think_sequences(tokenizer)`: the token-id spellings of ``<think>`` a completion could use
  (bare, after a space); the first token of the bare one is the *think token*, the mode decision.
- `ModeForcer(tokenizer, think)` is a transformers logits processor for a batch whose row i must
  think (``think[i]`` True: at the first step only the think token is allowed) or must not
  (False: the think token is masked at the first step, and every later step masks the token
  that would complete a ``<think>`` spelling — so a no-think row cannot open thinking after a
  leading space or newline either).
"""
from __future__ import annotations

from collections.abc import Sequence

from policy.format import THINK_OPEN


def think_sequences(tokenizer) -> list[list[int]]:
    """Token ids of ``<think>`` and `` <think>`` (deduplicated, bare one first)."""
    out: list[list[int]] = []
    for s in (THINK_OPEN, " " + THINK_OPEN):
        ids = list(tokenizer.encode(s, add_special_tokens=False))
        if ids and ids not in out:
            out.append(ids)
    return out


class ModeForcer:
    """Logits processor forcing each row's mode (see the module docstring).

    Args:
        think: one bool per batch row.
    """

    def __init__(self, tokenizer, think: Sequence[bool]):
        seqs = think_sequences(tokenizer)
        self.think_id = seqs[0][0]
        self.bans = [(s[:-1], s[-1]) for s in seqs]
        self.think = list(think)
        self.start: int | None = None

    def __call__(self, input_ids, scores):
        import torch

        if self.start is None:  # first step: the prompt ends here
            self.start = input_ids.shape[1]
            scores = scores.clone()
            rows = torch.tensor(self.think, device=scores.device)
            keep = scores[:, self.think_id].clone()
            scores[rows] = float("-inf")
            scores[rows, self.think_id] = keep[rows]
            scores[~rows, self.think_id] = float("-inf")
            return scores
        gen = input_ids[:, self.start:]
        for i, think in enumerate(self.think):
            if think:
                continue
            row = gen[i].tolist()
            for prefix, last in self.bans:
                if prefix and row[-len(prefix):] == prefix:
                    scores[i, last] = float("-inf")
        return scores
