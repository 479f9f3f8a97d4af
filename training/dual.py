"""Dual-mode data for the warm-up and the adaptive RL (Thinkless arXiv 2505.13379 §3.1; AdaptThink 2505.13417).

Contract:
- Prompts are the served prompts, rendered by the policy's chat template from
  `tasks.family(item).messages(item)`: the same token ids the agent builds.
- `dual_mode_rows`: every item appears twice, once with its think target and once with its
  no-think target, so the mode is independent of difficulty (the later gate result is earned).
- `train_items`: arithmetic items of both buckets from the training seed; hard items without
  any expression of the first `EVAL_RESERVE` dev and test items; easy items cycle through the
  one-digit table that every split shares (`tasks.arithmetic.TABLE`: own seed and phrasings).
- Each row carries ``item`` (the `tasks.Item` as JSON), ``bucket``, ``hard`` and ``mode``.
"""
from __future__ import annotations

import json

from tasks import Item, family, render_prompt
from tasks.arithmetic import SPLIT_SEEDS, TABLE, make_items

#: dev/test items per bucket whose expressions never appear in training data.
EVAL_RESERVE = 500


def train_items(per_bucket: int, seed: int = SPLIT_SEEDS["train"]) -> list[Item]:
    """Training items: `per_bucket` easy and hard chain sums; no hard expression of dev or test."""
    out: list[Item] = []
    for bucket in ("easy", "hard"):
        held = set() if bucket in TABLE else {i.meta["expression"] for s in ("dev", "test")
                                              for i in make_items(bucket, EVAL_RESERVE, SPLIT_SEEDS[s])}
        out += make_items(bucket, per_bucket, seed, exclude=held)
    return out


def item_columns(item: Item) -> dict:
    """The columns every training row of `item` carries (TRL passes them to reward functions)."""
    return {"item": json.dumps(item.to_dict()), "bucket": item.bucket, "hard": item.bucket == "hard"}


def dual_mode_rows(items: list[Item], tokenizer) -> list[dict]:
    """Two prompt-completion rows per item: think target and no-think target.

    Raises:
        ValueError: an item without a trace.
    """
    rows = []
    for it in items:
        fam, prompt = family(it), render_prompt(tokenizer, it)
        rows.append({"prompt": prompt, "completion": fam.think_target(it), "mode": "think", **item_columns(it)})
        rows.append({"prompt": prompt, "completion": fam.answer_target(it), "mode": "no_think", **item_columns(it)})
    return rows
