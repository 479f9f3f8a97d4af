"""Forcing the mode of a generation: think (open with ``<think>``) or answer at once.

Contract:
- `think_sequences(tokenizer)`: the token-id spellings of ``<think>`` a completion could use
  (bare, after a space); the first token of the bare one is the *think token*, the mode decision.
- `eos_token_ids`, `left_pad`: what every batched ``model.generate`` caller here needs.
- `ModeForcer(tokenizer, think)` is a transformers logits processor for a batch whose row i must
  think (``think[i]`` True: at the first step only the think token is allowed) or must not
  (False: every token whose text holds ``<`` is masked at every step, so a no-think row cannot
  open ``<think>`` anywhere, however it would spell it — banning only the token that completes
  ``<think>`` was not enough: an RL run learned to end the tag with another token, ``>\n``).
  The price: a forced direct answer cannot contain ``<``.
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


def eos_token_ids(model, tokenizer) -> set[int]:
    """Token ids that end a turn: the tokenizer's EOS plus the model's generation-config EOS ids."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(gen if isinstance(gen, list) else [gen])
    return {i for i in ids if i is not None}


def left_pad(prompts: Sequence[Sequence[int]], pad: int):
    """(input_ids, attention_mask) long tensors [batch, longest] of `prompts` padded on the left."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts])
    att = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, att


_ANGLE_CACHE: dict[int, list[int]] = {}


def angle_token_ids(tokenizer) -> list[int]:
    """Ids of every ordinary token whose text contains ``<`` (cached per tokenizer object). Special
    tokens are never in it: ``<|im_end|>`` is the EOS, and a direct answer must be able to end."""
    key = id(tokenizer)
    if key not in _ANGLE_CACHE:
        special = set(tokenizer.all_special_ids) | {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
                                                    if getattr(t, "special", False)}
        _ANGLE_CACHE[key] = [i for i in range(len(tokenizer))
                             if i not in special and "<" in tokenizer.decode([i])]
    return _ANGLE_CACHE[key]


class ModeForcer:
    """Logits processor forcing each row's mode (see the module docstring).

    Args:
        think: one bool per batch row.
    """

    def __init__(self, tokenizer, think: Sequence[bool]):
        self.think_id = think_sequences(tokenizer)[0][0]
        self.angle = angle_token_ids(tokenizer)
        self.think = list(think)
        self.first = True

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.clone()
        rows = torch.tensor(self.think, device=scores.device)
        if self.first:  # thinking rows: only the think token at the first step
            self.first = False
            keep = scores[:, self.think_id].clone()
            scores[rows] = float("-inf")
            scores[rows, self.think_id] = keep[rows]
        no = (~rows).nonzero().flatten()
        if len(no):
            scores[no.unsqueeze(1), torch.tensor(self.angle, device=scores.device).unsqueeze(0)] = float("-inf")
        return scores
