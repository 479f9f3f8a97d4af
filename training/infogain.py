"""Information gain of a thought for next-token reasoning (RLP, arXiv 2510.01265, §3 Eq. 2–3).

    IG(thought) = log p(y | x, thought) − log p(y | x)

teacher-forced: x is the NTR prompt (`tasks.ntr.ntr_prompt`), y the true continuation's target
tokens placed where the answer goes (after ``\\boxed{``), with the thought inside
``<think>…</think>`` before it in the first term and no thought in the second. Positive where
thinking raises the true token's probability, so a reward built on it pays for thought exactly
where it helps. Units: nats (summed over y's tokens).
"""
from __future__ import annotations

from policy.format import think_completion

ANSWER_OPEN = "\\boxed{"


def _logp(model, ids: list[int], target: list[int]) -> float:
    """Σ log p(target | ids), teacher-forced, in nats."""
    import torch

    x = torch.tensor([ids + target], device=next(model.parameters()).device)
    with torch.inference_mode():
        logp = torch.log_softmax(model(x).logits[0].float(), dim=-1)
    return float(sum(logp[len(ids) - 1 + j, t] for j, t in enumerate(target)))


def information_gain(model, tokenizer, prompt_ids: list[int], thought: str, target: str) -> float:
    """IG in nats of `thought` for predicting `target` after `prompt_ids` (see the module docstring).

    Raises:
        ValueError: `target` is empty.
    """
    y = tokenizer.encode(target, add_special_tokens=False)
    if not y:
        raise ValueError("target is empty")
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    with_thought = prompt_ids + enc(think_completion(thought.strip(), ANSWER_OPEN))
    without = prompt_ids + enc(ANSWER_OPEN)
    return _logp(model, with_thought, y) - _logp(model, without, y)
