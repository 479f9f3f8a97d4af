"""Next-token reasoning (NTR, after RPT arXiv 2506.08007): prompt, targets, scorer, positions.

Contract:
- An item is a context x_<t and its true continuation; `messages` is the NTR prompt (system
  instruction + few-shot turns + the context), the same in training and evaluation.
- The answer is the content of the last ``\\boxed{…}`` of the answer part; the score (= the
  RL reward) is RPT's prefix-match (Eq. 3, `policy.format.prefix_match_score`): 1 iff the
  prediction's UTF-8 bytes are a prefix of the continuation ending on a token boundary.
- `information_gain` (RLP) measures how much a thought raises the log-probability of the true
  continuation, teacher-forced (nats).
- Positions come from the documentation corpus (`training.ntr` scores them with a proxy
  model) and from arithmetic statements (`arithmetic_rows`): the result after ``=`` is a
  position where reasoning helps, and those rows carry a running-total trace.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from tasks.base import Item, TaskFamily
from policy.format import extract_boxed, prefix_match_score, think_completion

NTR_SYSTEM = (
    "You predict the next token of a text. Reply with the predicted text in \\boxed{} and nothing else. "
    "When the next token is hard to predict, first reason briefly inside <think> </think>."
)
# Few-shot turns: a small instruct model follows the answer format far more often with them
# (SmolLM2-135M: 0/64 sampled completions boxed without, ~40% with; measured on the demo corpus).
NTR_SHOTS = (
    ("The cat sat on the", "\\boxed{ mat}"),
    ("import numpy as", "\\boxed{ np}"),
    ("The capital of the country whose flag is a red circle on white is",
     "<think>A red circle on white is the flag of Japan, whose capital is Tokyo.</think>\n\\boxed{ Tokyo}"),
)
STATEMENTS = (
    "The invoice adds up as {e} =",
    "Checking the ledger: {e} =",
    "In the example, {e} =",
    "We get {e} =",
)


def ntr_prompt(context: str) -> list[dict]:
    """Chat prompt of one NTR example: system instruction, the few-shot turns, then the context."""
    msgs = [{"role": "system", "content": NTR_SYSTEM}]
    for text, answer in NTR_SHOTS:
        msgs += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
    return msgs + [{"role": "user", "content": context}]


def boundaries(tokenizer, cont_ids: list[int]) -> tuple[str, list[int]]:
    """The continuation text and its token boundaries (cumulative UTF-8 byte lengths).

    A boundary is kept only where the decoded prefix is a prefix of the decoded whole and ends
    on a complete character (byte-level BPE can split a character across tokens).
    """
    text = tokenizer.decode(cont_ids)
    full = text.encode("utf-8")
    out: list[int] = []
    for j in range(1, len(cont_ids) + 1):
        pre = tokenizer.decode(cont_ids[:j])
        if pre.endswith("\ufffd"):
            continue
        b = pre.encode("utf-8")
        if b and full.startswith(b) and (not out or len(b) > out[-1]):
            out.append(len(b))
    return text, out


def arithmetic_rows(tokenizer, n: int, seed: int, bucket: str = "hard") -> list[dict]:
    """NTR rows whose next token is an arithmetic result: "… 42 - 25 + 73 =" → " 90".

    Each row carries the running-total trace (``trace``) and ``source: "arith"``.
    """
    from tasks.arithmetic import make_items

    rng = random.Random(seed)
    rows = []
    for it in make_items(bucket, n, seed):
        ctx = rng.choice(STATEMENTS).format(e=it.meta["expression"])
        cont, bnd = boundaries(tokenizer, tokenizer.encode(f" {it.answer}.", add_special_tokens=False))
        rows.append({"prompt": ntr_prompt(ctx), "context": ctx, "continuation": cont, "boundaries": bnd,
                     "trace": it.trace, "answer": f" {it.answer}", "source": "arith", "hard": True})
    return rows


def load(path: str | Path, n: int | None = None) -> list[Item]:
    """NTR items from a JSONL of rows (context, continuation, boundaries, entropy, hard)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()][:n]
    return [row_item(r, i) for i, r in enumerate(rows)]


def row_item(r: dict, i: int) -> Item:
    """The `Item` of one NTR row."""
    return Item(f"ntr-{i}", "ntr", r["context"], r.get("answer", r["continuation"]),
                "hard" if r.get("hard") else "easy", r.get("trace"),
                meta={"continuation": r["continuation"], "boundaries": list(r["boundaries"]),
                      "entropy": r.get("entropy"), "source": r.get("source", "docs")})


# ---------------------------------------------------------------- information gain (RLP)
# IG(thought) = log p(y | x, thought) − log p(y | x)   (RLP, arXiv 2510.01265, §3 Eq. 2–3),
# teacher-forced: x is the NTR prompt, y the true continuation's target tokens placed where the
# answer goes (after ``\\boxed{``), the thought inside ``<think>…</think>`` before it in the first
# term and no thought in the second. Positive where thinking raises the true token's probability.
ANSWER_OPEN = "\\boxed{"


def _logp(model, ids: list[int], target: list[int]) -> float:
    """Σ log p(target | ids), teacher-forced, in nats."""
    import torch

    x = torch.tensor([ids + target], device=next(model.parameters()).device)
    with torch.inference_mode():
        logp = torch.log_softmax(model(x).logits[0].float(), dim=-1)
    return float(sum(logp[len(ids) - 1 + j, t] for j, t in enumerate(target)))


def _answer_logp(model, tokenizer, prompt_ids: list[int], thought: str | None, target: str) -> float:
    """log p(target | prompt, thought) in nats, the target placed after ``\\boxed{`` — after the
    ``<think>…</think>`` block of `thought`, or right after the prompt when `thought` is None.

    Raises:
        ValueError: `target` is empty.
    """
    y = tokenizer.encode(target, add_special_tokens=False)
    if not y:
        raise ValueError("target is empty")
    tail = ANSWER_OPEN if thought is None else think_completion(thought.strip(), ANSWER_OPEN)
    return _logp(model, prompt_ids + tokenizer.encode(tail, add_special_tokens=False), y)


def information_gain(model, tokenizer, prompt_ids: list[int], thought: str, target: str) -> float:
    """IG in nats of `thought` for predicting `target` after `prompt_ids` (see the module docstring).

    Raises:
        ValueError: `target` is empty.
    """
    return (_answer_logp(model, tokenizer, prompt_ids, thought, target)
            - _answer_logp(model, tokenizer, prompt_ids, None, target))


class GainScorer:
    """`information_gain` with one fixed scoring model, for use as a reward (`training.rewards`):
    RLP scores thoughts with a slowly moving copy of the policy; here the copy is frozen at the
    start of training. The no-thought term depends only on (prompt, target) and is cached.

    Call: ``scorer(prompt_text, thought, target) → IG in nats``; `prompt_text` is the rendered
    chat prompt (generation prompt included), as TRL passes it to reward functions.
    """

    def __init__(self, model, tokenizer, cache_size: int = 4096):
        self.model, self.tokenizer, self.cache_size = model.eval(), tokenizer, cache_size
        self._baseline: dict[tuple[str, str], float] = {}

    def __call__(self, prompt_text: str, thought: str, target: str) -> float:
        """IG (nats) of `thought` for `target` after `prompt_text`. Raises ValueError: empty target."""
        prompt = self.tokenizer.encode(prompt_text, add_special_tokens=False)
        gain = _answer_logp(self.model, self.tokenizer, prompt, thought, target)
        key = (prompt_text, target)
        if key not in self._baseline:
            if len(self._baseline) >= self.cache_size:
                self._baseline.clear()
            self._baseline[key] = _answer_logp(self.model, self.tokenizer, prompt, None, target)
        return gain - self._baseline[key]


class NextToken(TaskFamily):
    """NTR: its own prompt, boxed answers, prefix-match scoring."""

    name = "ntr"

    def messages(self, item: Item, passages: list[dict] | None = None) -> list[dict]:
        return ntr_prompt(item.question)

    def answer_target(self, item: Item) -> str:
        return f"\\boxed{{{item.answer}}}"

    def extract(self, text: str) -> str:
        """Content of the last ``\\boxed{}`` of the answer part ("" when there is none)."""
        return extract_boxed(self.answer_part(text)) or ""

    def score(self, text: str, item: Item) -> float:
        """RPT Eq. 3 prefix-match of the boxed prediction against the continuation."""
        box = extract_boxed(self.answer_part(text))
        return prefix_match_score(box, item.meta["continuation"], item.meta["boundaries"])


FAMILY = NextToken()
