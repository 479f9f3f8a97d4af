"""Decoupled mode-token loss for GRPO: the mode decision weighs the same in every completion
(Thinkless' DeGRPO, Fang et al., arXiv 2505.13379 §3.2, Eq. 5).

Why: with TRL's ``loss_type="grpo"`` each completion's loss is the mean over its own tokens
(DeepSeekMath, arXiv 2402.03300, Eq. 3), so the first token — ``<`` of ``<think>`` or the first
answer token, i.e. the mode decision — carries 1/|o_i| of it: 1/80 in a hard trace, 1/2 in a direct
answer. Measured here (docs/results/eval-v3): after the warm-up put p(``<think>``) at 0.012 on hard
sums, 8 GRPO steps pushed it to 0.002 although forced-think scored +31 points there.

Contract:
- `mode_token_weights(mask, alpha)`: [B, T] 0/1 completion mask → [B, T] float weights, the first
  token weighted α·max(L_i − 1, 1) where L_i = its completion length. Under per-sequence
  normalisation (Σ_t w_t ℓ_t / Σ_t w_t) a completion's loss becomes
  (α·ℓ_decision + mean_{t≥1} ℓ_t) / (1 + α): the decision has weight α/(1+α) whatever the length,
  the response tokens share the rest — DeGRPO's split, with α the control-token weight.
- `decoupled_trainer_class()` returns a `trl.GRPOTrainer` subclass whose loss multiplies these
  weights into TRL's token mask (``tool_mask``, which TRL multiplies into ``completion_mask`` and
  normalises by); logged lengths and rewards are untouched, the logged entropy and clip ratios
  become means under the same weights. Only for ``loss_type="grpo"`` (`check_loss_type`).
"""
from __future__ import annotations


def mode_token_weights(mask, alpha: float):
    """Per-token loss weights that give the first completion token a length-independent share.

    Args:
        mask: [B, T] tensor, 1 on completion tokens (left-aligned: token 0 is the first generated).
        alpha: control-token weight α ≥ 0 (Thinkless Eq. 5); 0 leaves the mask as it is.
    Returns:
        [B, T] float tensor: `mask` with column 0 set to α·max(L_i − 1, 1) where it was 1.
    Raises:
        ValueError: alpha < 0.

    >>> import torch
    >>> w = mode_token_weights(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]), 1.0)
    >>> w.tolist()
    [[4.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0, 0.0]]
    >>> (w[:, 0] / w.sum(-1)).tolist()   # decision share α/(1+α) at any length
    [0.5, 0.5]
    """
    check_mode_token_weight(alpha)
    w = mask.float().clone()
    if alpha == 0:
        return w
    lengths = w.sum(-1)
    w[:, 0] = w[:, 0] * alpha * (lengths - 1).clamp(min=1.0)
    return w


def check_mode_token_weight(alpha: float) -> None:
    """Raise ValueError naming the rule unless the mode-token weight α (GRPO's and the warm-up's
    ``mode_token_weight``) is >= 0."""
    if alpha < 0:
        raise ValueError(f"mode_token_weight must be >= 0, got {alpha}")


def check_loss_type(loss_type: str) -> None:
    """Raise ValueError unless `loss_type` normalises per sequence ("grpo"), which the weights assume."""
    if loss_type != "grpo":
        raise ValueError(f"mode_token_weight needs loss_type 'grpo' (per-sequence mean), got {loss_type!r}")


def decoupled_trainer_class(alpha: float):
    """A `trl.GRPOTrainer` subclass applying `mode_token_weights` with `alpha` to every loss.

    Raises:
        ValueError: alpha < 0.
    """
    check_mode_token_weight(alpha)
    from trl import GRPOTrainer

    class DecoupledGRPOTrainer(GRPOTrainer):
        """GRPO with the mode decision weighted α/(1+α) per completion (see `training.decoupled`)."""

        def _compute_loss(self, model, inputs):
            check_loss_type(self.loss_type)
            inputs = dict(inputs)
            w = mode_token_weights(inputs["completion_mask"], alpha)
            if "tool_mask" in inputs:
                w = w * inputs["tool_mask"]
            inputs["tool_mask"] = w
            return super()._compute_loss(model, inputs)

    return DecoupledGRPOTrainer
