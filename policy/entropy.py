"""Entropy maths, all in nats.

- `logits_entropy`: exact Shannon entropy H = −Σ p log p of softmax(logits), and the
  varentropy V = Σ p (log p + H)², the variance of the surprisal (as used by entropix).
- `numpy_entropy`: the same exact pair for one numpy logits vector (the onnx backend's hot path).
- `topk_entropy`: what can be said from the top-k logprobs alone (vLLM, remote servers):
  H_k = −Σ_{i≤k} p_i log p_i plus bounds on the tail of mass r = 1 − Σ p_i. Every tail token
  has p ≤ p_k, so its surprisal is ≥ −log p_k: the tail adds at least −r log p_k. Spread
  uniformly over the V − k remaining tokens it adds at most r log((V − k) / r).
- `aggregate`: the gate's score over a draft (mean, max, mean varentropy).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def logits_entropy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy and varentropy of softmax(logits) over the last dim.

    Args:
        logits: float tensor [..., vocab].

    Returns:
        (entropy, varentropy), each of shape [...], in nats and nats².
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    ent = -(p * logp).sum(-1)
    vent = (p * (logp + ent.unsqueeze(-1)) ** 2).sum(-1)
    return ent, vent


def numpy_entropy(logits: np.ndarray) -> tuple[float, float]:
    """Exact entropy H (nats) and varentropy V (nats²) of softmax(logits), logits shape [vocab].

    With z = logits − max, Z = Σ e^z and p = e^z / Z: −log p = log Z − z, so
    H = E_p[−log p] = log Z − E_p[z] and V = Var_p(−log p) = E_p[z²] − E_p[z]² (the varentropy of
    entropix). Two dot products over one exp pass in float32 (0.04 ms for 49,152 logits on one
    core, against 0.8 ms for the textbook float64 −Σ p log p).

    >>> round(numpy_entropy(np.zeros(4, dtype=np.float32))[0], 4)  # uniform over 4: log 4
    1.3863
    """
    z = logits.astype(np.float32, copy=False) - np.float32(logits.max())
    e = np.exp(z)
    s = float(e.sum(dtype=np.float64))
    m1 = float(np.dot(e, z)) / s
    m2 = float(np.dot(e, z * z)) / s
    return float(np.log(s) - m1), max(m2 - m1 * m1, 0.0)


def topk_entropy(logprobs: Sequence[float], vocab_size: int) -> tuple[float, float, float]:
    """Entropy estimate from the top-k logprobs of one position.

    Args:
        logprobs: natural-log probabilities of the k most likely tokens (any order).
        vocab_size: V, the size of the vocabulary.

    Returns:
        (estimate, lower, upper) in nats. The estimate is the lower bound (H_k − r log p_k):
        it is exact when the tail is empty and never overstates uncertainty.

    >>> round(topk_entropy([math.log(0.5), math.log(0.5)], 10)[0], 4)
    0.6931
    """
    if not logprobs:
        return 0.0, 0.0, math.log(max(vocab_size, 1))
    ps = [math.exp(lp) for lp in logprobs]
    h_k = -sum(p * lp for p, lp in zip(ps, logprobs) if p > 0)
    tail = max(0.0, 1.0 - sum(ps))
    if tail <= 1e-9:
        return h_k, h_k, h_k
    p_min = min(ps)
    lower = h_k - tail * math.log(p_min)
    rest = max(vocab_size - len(ps), 1)
    upper = h_k + tail * math.log(rest / tail)
    return lower, lower, max(upper, lower)


def aggregate(entropies: Sequence[float], varentropies: Sequence[float] = ()) -> dict[str, float]:
    """Summary of a run of per-token entropies: mean, max (nats) and mean varentropy (nats²).

    An empty run scores 0 everywhere.

    >>> aggregate([1.0, 3.0])["mean"]
    2.0
    """
    n = len(entropies)
    if n == 0:
        return {"mean": 0.0, "max": 0.0, "varentropy": 0.0, "tokens": 0}
    return {
        "mean": float(sum(entropies) / n),
        "max": float(max(entropies)),
        "varentropy": float(sum(varentropies) / len(varentropies)) if varentropies else 0.0,
        "tokens": n,
    }
