"""Modes, summaries and statistics over paired forced-mode records (`evals.forced`).

Contract:
- `decide(records, mode, tau)` → per item (thought, score, think tokens, answer tokens, hidden
  tokens), for the modes:
  * ``never`` / ``always``: the direct / think completion;
  * ``learned``: the model's own choice decides (its free greedy draft opens ``<think>`` or not);
  * ``gated``: the agent's gate, which composes the model's choice with the entropy signal —
    think when the model opens ``<think>`` or the draft's mean entropy exceeds τ (the draft
    it discards counts as hidden tokens);
  * ``entropy``: the entropy signal alone (think iff draft entropy > τ);
  * ``oracle``: think exactly where forced-think scored higher than forced-no-think.
- `summarize` gives accuracy with a 95 % Wilson interval, mean tokens, think-rate; `paired`
  compares two modes on the same items (difference with a 95 % interval, exact McNemar p);
  `auroc` scores a think signal against "thinking helped this item".
- `two_proportions` compares two rates on different items (difference with Newcombe's interval,
  Fisher's exact p): the think-rate on high- vs low-entropy NTR positions.
- `calibrate` picks τ on dev records maximising accuracy − cost × tokens / 100, optionally within a
  token budget that holds at a confidence (`share_upper_bound`, a bootstrap bound).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

MODES = ("never", "always", "learned", "gated", "entropy", "oracle")


def decide(records: Sequence, mode: str, tau: float = math.inf) -> list[dict]:
    """Per-item outcome of `mode` (see the module docstring).

    Raises:
        ValueError: an unknown mode.
    """
    out = []
    for r in records:
        hidden = 0
        if mode == "never":
            think = False
        elif mode == "always":
            think = True
        elif mode == "learned":
            think = r.learned_think
        elif mode == "gated":
            think = r.learned_think or r.draft_entropy > tau
            hidden = r.draft_tokens if (think and not r.learned_think) else 0
        elif mode == "entropy":
            think = r.draft_entropy > tau
            hidden = r.draft_tokens if think else 0
        elif mode == "oracle":
            think = r.think_score > r.direct_score
        else:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if think:
            ans = _answer_tokens(r)
            out.append({"id": r.id, "bucket": r.bucket, "thought": True, "score": r.think_score,
                        "think_tokens": r.think_tokens - ans, "answer_tokens": ans, "hidden_tokens": hidden})
        else:
            out.append({"id": r.id, "bucket": r.bucket, "thought": False, "score": r.direct_score,
                        "think_tokens": 0, "answer_tokens": r.direct_tokens, "hidden_tokens": 0})
    return out


def _answer_tokens(r) -> int:
    """Tokens after ``</think>`` in a think completion, estimated by its share of characters."""
    text = r.think_text
    cut = text.find("</think>")
    if cut < 0:
        return 0
    tail = len(text) - cut - len("</think>")
    return round(r.think_tokens * tail / max(len(text), 1))


def wilson(k: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (Wilson 1927); (0, 1) when n = 0.

    >>> [round(x, 3) for x in wilson(8, 10)]
    [0.49, 0.943]
    """
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def item_tokens(rows: list[dict]) -> list[int]:
    """Generated tokens of each outcome row of `decide`: think + answer + hidden (a discarded draft)."""
    return [r["think_tokens"] + r["answer_tokens"] + r["hidden_tokens"] for r in rows]


def summarize(rows: list[dict]) -> dict:
    """n, accuracy with its 95 % Wilson interval, mean think/answer/hidden/total tokens, think-rate."""
    n = len(rows)
    if n == 0:
        return {"n": 0}
    k = sum(r["score"] for r in rows)
    lo, hi = wilson(k, n)
    tot = item_tokens(rows)
    return {"n": n, "accuracy": k / n, "ci_low": lo, "ci_high": hi,
            "think_tokens": sum(r["think_tokens"] for r in rows) / n,
            "answer_tokens": sum(r["answer_tokens"] for r in rows) / n,
            "total_tokens": sum(tot) / n, "think_rate": sum(r["thought"] for r in rows) / n}


def paired(a: list[dict], b: list[dict]) -> dict:
    """Accuracy of `a` minus `b` on the same items: difference, 95 % interval (Wald on paired
    differences), discordant counts and the exact McNemar p (two-sided binomial on b01 vs b10).

    Raises:
        ValueError: the rows are not the same items in the same order.
    """
    if [r["id"] for r in a] != [r["id"] for r in b]:
        raise ValueError("paired comparison needs the same items in the same order")
    from scipy.stats import binomtest

    n = len(a)
    d = [x["score"] - y["score"] for x, y in zip(a, b)]
    a_only = sum(1 for x in d if x > 0)
    b_only = sum(1 for x in d if x < 0)
    mean = sum(d) / n if n else 0.0
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else 0.0
    half = 1.96 * sd / math.sqrt(n) if n else 0.0
    p = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"n": n, "diff": mean, "ci_low": mean - half, "ci_high": mean + half,
            "a_only": a_only, "b_only": b_only, "mcnemar_p": p}


def two_proportions(k1: int, n1: int, k2: int, n2: int) -> dict:
    """Rate k1/n1 minus rate k2/n2 on independent samples: the difference, its 95 % interval
    (Newcombe 1998, method 10: hybrid of the two Wilson intervals) and the two-sided Fisher exact p.

    >>> r = two_proportions(40, 50, 10, 50)
    >>> round(r["diff"], 2), r["ci_low"] > 0.4, r["fisher_p"] < 1e-8
    (0.6, True, True)

    Raises:
        ValueError: n1 or n2 < 1, or a count outside 0..n.
    """
    if n1 < 1 or n2 < 1 or not (0 <= k1 <= n1 and 0 <= k2 <= n2):
        raise ValueError(f"need 0 <= k <= n and n >= 1, got {k1}/{n1} and {k2}/{n2}")
    from scipy.stats import fisher_exact

    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    p = float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)
    return {"rate_a": p1, "n_a": n1, "rate_b": p2, "n_b": n2, "diff": d, "ci_low": lo, "ci_high": hi, "fisher_p": p}


def auroc(signal: Sequence[float], label: Sequence[bool]) -> float | None:
    """Area under the ROC curve of `signal` for the positive `label` (Mann–Whitney U / n1·n0);
    None when either class is empty."""
    pos = [s for s, y in zip(signal, label) if y]
    neg = [s for s, y in zip(signal, label) if not y]
    if not pos or not neg:
        return None
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def helped(records: Sequence) -> list[bool]:
    """Whether thinking helped each item: forced-think scored higher than forced-no-think."""
    return [r.think_score > r.direct_score for r in records]


def tau_grid(records: Sequence) -> list[float]:
    """Candidate τ: just below every observed draft entropy, plus 0 and above the largest."""
    ents = sorted({round(r.draft_entropy, 4) for r in records})
    return [0.0] + [e - 1e-4 for e in ents] + [max(ents, default=0.0) + 1.0]


def objective(rows: list[dict], cost_per_100: float) -> float:
    """Accuracy − cost × mean generated tokens / 100."""
    s = summarize(rows)
    return s["accuracy"] - cost_per_100 * s["total_tokens"] / 100


def share_upper_bound(tokens: Sequence[float], always: Sequence[float], confidence: float,
                      n_boot: int = 2000, seed: int = 0) -> float:
    """One-sided upper confidence bound on a token share: the `confidence` quantile of
    sum(tokens) / sum(always) over `n_boot` bootstrap resamples of the items (percentile bootstrap;
    Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13). `tokens` and `always` are
    per-item generated tokens of a mode and of always-think, length n (same items, same order).
    Seeded, so the same records give the same bound.

    >>> share_upper_bound([0, 10], [10, 10], confidence=0.95) >= 0.5
    True

    Raises:
        ValueError: `confidence` outside (0, 1), or the two lists differ in length or are empty.
    """
    import numpy as np

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if len(tokens) != len(always) or not tokens:
        raise ValueError(f"tokens and always must be the same non-empty items, got {len(tokens)} and {len(always)}")
    rng = np.random.default_rng(seed)
    n = len(tokens)
    counts = rng.multinomial(n, [1 / n] * n, size=n_boot)  # [n_boot, n]: how often each item is drawn
    ratios = (counts @ np.asarray(tokens, float)) / np.maximum(counts @ np.asarray(always, float), 1e-9)
    return float(np.quantile(ratios, confidence))


def calibrate(dev: Sequence, cost_per_100: float, mode: str = "gated",
              max_token_share: float | None = None, share_confidence: float | None = None) -> dict:
    """τ_think maximising `objective` of `mode` on the dev records (ties: the larger τ, less thinking).

    With `max_token_share` (a fraction in (0, 1]), only the τ whose mean generated tokens on dev are at
    most that share of always-think's are candidates: a token budget, the operating point of a
    budget-constrained gate (pass ``cost_per_100=0`` to pick the most accurate τ within the budget).
    With `share_confidence` too (in (0, 1), e.g. 0.95), a τ is a candidate only if the budget holds at
    that confidence: the upper bound of its dev share (`share_upper_bound`) is within `max_token_share`,
    so that the budget still holds on new items, where the point estimate on dev is missed about half
    the time (a chance constraint, as Learn then Test, arXiv 2110.01052, chooses a threshold whose risk
    is bounded with high probability; here without its correction for testing many τ).
    Never-think always fits, so a choice exists. Raises ValueError on a share or confidence outside its range.
    """
    if max_token_share is not None and not 0 < max_token_share <= 1:
        raise ValueError(f"max_token_share must be in (0, 1], got {max_token_share}")
    if share_confidence is not None and (max_token_share is None or not 0 < share_confidence < 1):
        raise ValueError(f"share_confidence must be in (0, 1) and needs max_token_share, got {share_confidence}")
    grid = tau_grid(dev)
    rows = {t: decide(dev, mode, t) for t in grid}  # each τ's decisions once, for the budget and the objective
    share_bound = {}
    if max_token_share is not None:
        always = item_tokens(decide(dev, "always"))
        cap = max_token_share * sum(always) / len(always)
        grid = [t for t in grid if summarize(rows[t])["total_tokens"] <= cap + 1e-9]
        if share_confidence is not None:
            for t in grid:
                share_bound[t] = share_upper_bound(item_tokens(rows[t]), always, share_confidence)
            grid = [t for t in grid if share_bound[t] <= max_token_share + 1e-9]
        grid = grid or [tau_grid(dev)[-1]]
    scored = [(objective(rows[t], cost_per_100), t) for t in grid]
    best_j, best = max(scored, key=lambda x: (x[0], x[1]))
    return {"tau_think": round(best, 4), "objective_dev": best_j, "cost_per_100": cost_per_100, "mode": mode,
            "max_token_share": max_token_share, "share_confidence": share_confidence,
            "share_upper_bound_dev": share_bound.get(best),
            "dev": summarize(rows[best]), "sweep": [{"tau": t, "objective": j} for j, t in scored]}
