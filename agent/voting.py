"""Test-time scaling: votes over sampled answers and when to stop sampling.

Contract:
- `normalize_answer(text)`: the key answers are voted on — the last number when the answer holds
  one (arithmetic; trailing decimal zeros dropped, so 36.50 and 36.5 are one answer), else the first line lower-cased without punctuation.
- `vote(answers, certainty=None)`: the majority answer (self-consistency, Wang et al., arXiv
  2203.11171); ties go to the answer with the larger summed certainty, then the earliest.
- `weighted_vote(answers, certainty)`: each sample votes with weight exp(mean log-prob of its
  answer tokens) — a vote weighted by self-certainty (Kang et al., arXiv 2502.18581 rank by the
  policy's own confidence; the mean log-prob is the confidence used here).
- `beta_stop(counts, confidence)`: Adaptive-Consistency's Beta stopping rule (Aggarwal et al.,
  arXiv 2305.11860, Sec. 3): with the two largest vote counts v1 ≥ v2, stop once
  P(p1 > p2) = P(X > 1/2), X ~ Beta(v1 + 1, v2 + 1), reaches `confidence`.
- `adaptive_vote(samples, ...)`: take samples in order until `beta_stop` or `max_samples`;
  returns the chosen answer, the samples used and why it stopped.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def normalize_answer(text: str) -> str:
    """The vote key of an answer.

    >>> normalize_answer("The answer is 1,234.")
    '1234'
    >>> normalize_answer("  Paris, France.\\nMore text")
    'paris france'
    >>> normalize_answer("36.50"), normalize_answer("$22.00"), normalize_answer("-0.0")  # one key per number
    ('36.5', '22', '0')
    """
    t = text.strip().replace(",", "")
    nums = _NUM.findall(t)
    if nums:
        n = nums[-1]
        if "." in n:
            n = n.rstrip("0").rstrip(".")
        return "0" if n in ("-0", "") else n
    first = t.splitlines()[0] if t else ""
    return re.sub(r"[^\w\s]", "", first).strip().lower()


def vote(answers: Sequence[str], certainty: Sequence[float] | None = None) -> tuple[str, Counter]:
    """Majority answer of `answers` (already normalized) and the counts.

    >>> vote(["4", "5", "4"])[0]
    '4'
    >>> vote(["4", "5"], certainty=[-2.0, -0.1])[0]  # a tie: the more certain one
    '5'

    Raises:
        ValueError: no answers.
    """
    if not answers:
        raise ValueError("vote needs at least one answer")
    counts = Counter(answers)
    cert = Counter()
    for i, a in enumerate(answers):
        cert[a] += certainty[i] if certainty is not None else 0.0
    first = {a: answers.index(a) for a in counts}
    best = max(counts, key=lambda a: (counts[a], cert[a], -first[a]))
    return best, counts


def weighted_vote(answers: Sequence[str], certainty: Sequence[float]) -> str:
    """The answer with the largest Σ exp(certainty) (certainty = mean log-prob, nats ≤ 0).

    >>> weighted_vote(["4", "5", "5"], [-0.01, -2.0, -2.0])
    '4'
    """
    if not answers:
        raise ValueError("weighted_vote needs at least one answer")
    w: dict[str, float] = {}
    for a, c in zip(answers, certainty):
        w[a] = w.get(a, 0.0) + math.exp(c)
    return max(w, key=w.get)


def beta_stop(counts: Counter, confidence: float = 0.95) -> bool:
    """Adaptive-Consistency's Beta criterion (see the module docstring).

    >>> beta_stop(Counter({"4": 3}))      # 3-0: P = 1 - 0.5**4 = 0.9375
    False
    >>> beta_stop(Counter({"4": 4}))      # 4-0: 0.969
    True
    >>> beta_stop(Counter({"4": 5, "5": 3}))
    False
    """
    if not counts:
        return False
    top = counts.most_common(2)
    v1 = top[0][1]
    v2 = top[1][1] if len(top) > 1 else 0
    from scipy.stats import beta

    return float(beta.sf(0.5, v1 + 1, v2 + 1)) >= confidence


@dataclass
class VoteResult:
    """What `adaptive_vote` chose: the answer key, the samples it used, the counts, why it stopped
    ("decisive" by the Beta rule, or "max_samples")."""

    answer: str
    used: int
    counts: Counter
    stop: str


def adaptive_vote(answers: Sequence[str], certainty: Sequence[float] | None = None, *, max_samples: int = 8,
                  confidence: float = 0.95) -> VoteResult:
    """Vote over the first samples of `answers`, stopping as soon as `beta_stop` holds.

    >>> r = adaptive_vote(["7"] * 8)
    >>> (r.answer, r.used, r.stop)
    ('7', 4, 'decisive')
    >>> adaptive_vote(["1", "2", "3", "1", "2", "3", "1", "2"]).stop
    'max_samples'
    """
    n = min(max_samples, len(answers))
    if n < 1:
        raise ValueError("adaptive_vote needs at least one answer")
    for used in range(1, n + 1):
        best, counts = vote(answers[:used], certainty[:used] if certainty is not None else None)
        if beta_stop(counts, confidence):
            return VoteResult(best, used, counts, "decisive")
    return VoteResult(best, n, counts, "max_samples")
