"""Training data for both GRPO tasks, as `datasets.Dataset`s whose ``prompt`` is the prompt text.

Contract:
- ``ntr``: `training.ntr` rows (prompt, continuation, boundaries, entropy, hard), built from the
  corpus with the proxy model, or read from ``--dataset_file``; written to
  ``<output_dir>/ntr_dataset.jsonl`` so the run can be repeated from the file.
- ``arith``: chain sums of both buckets from `training.dual.train_items` (never a dev/test
  expression), each row with the served prompt and its ``item`` (the reward's scorer).
- ``mix``: `num_examples` train-split items of each of `mix_sets` (`tasks.numeric`: GSM-Symbolic,
  multi-digit and one-step arithmetic), interleaved, each with its served prompt and ``item``.
- ``hops``: `num_examples` train-split questions of each of `hops_types` (`tasks.hops`: entities
  disjoint from dev and test), each prompt holding the passages the agent retrieves for the question
  (`tasks.prompt.item_passages` on the task index), with its ``item`` and ``shown`` (those passages'
  ids, for `training.search_rollout`).
- Prompts are rendered by the policy's chat template here (``prompt`` is text), so the token
  ids TRL trains on are the agent's.
- The first `eval_examples` rows are held out; the rest train.
"""
from __future__ import annotations

from pathlib import Path

from training.config import ScriptArguments
from training.ntr import build_dataset, read_jsonl, write_jsonl

def ntr_rows(args: ScriptArguments, model_path: str, tokenizer, out_dir: Path, index_dir: Path) -> list[dict]:
    """NTR rows: from --dataset_file, else built with the proxy model (written to out_dir)."""
    if args.dataset_file:
        rows = read_jsonl(args.dataset_file)
        missing = [k for k in ("prompt", "continuation", "boundaries") if k not in (rows[0] if rows else {})]
        if not rows or missing:
            raise ValueError(f"{args.dataset_file}: NTR rows need prompt, continuation, boundaries (missing {missing})")
        return rows
    rows = build_dataset(model_path, tokenizer, n=args.num_examples + args.eval_examples, corpus=args.corpus,
                         exclude=args.ntr_exclude, index_dir=index_dir, proxy_model=args.proxy_model,
                         window=args.window,
                         entropy_threshold=args.entropy_threshold, easy_share=args.easy_share,
                         context_tokens=args.context_tokens, continuation_tokens=args.continuation_tokens,
                         seed=args.seed_data)
    write_jsonl(rows, out_dir / "ntr_dataset.jsonl")
    return rows


def arith_rows(args: ScriptArguments, tokenizer) -> list[dict]:
    """Arithmetic rows: held-out rows first (`eval_examples`), then `num_examples` per bucket, shuffled."""
    import random

    from tasks import render_prompt
    from training.dual import item_columns, train_items

    n = args.num_examples + (args.eval_examples + 1) // 2
    items = train_items(n, args.seed_data)
    random.Random(args.seed_data).shuffle(items)
    return [{"prompt": render_prompt(tokenizer, it), **item_columns(it)} for it in items]


def hops_rows(args: ScriptArguments, tokenizer, retriever, cfg) -> list[dict]:
    """Hops rows: `num_examples` (+ held-out share) per type, interleaved type by type, with the
    question's own passages in the prompt and their ids in ``shown``."""
    import json

    from tasks import load_items, render_prompt
    from tasks.prompt import item_passages

    specials = [t for t in (tokenizer.all_special_tokens or []) if t]
    n = args.num_examples + (args.eval_examples + len(args.hops_types) - 1) // len(args.hops_types)
    per_type = [load_items(f"hops-{t}", n, args.seed_data) for t in args.hops_types]
    rows = []
    for group in zip(*per_type):
        for it in group:
            shown = item_passages(it, retriever, cfg, specials) or []
            rows.append({"prompt": render_prompt(tokenizer, it, shown), "item": json.dumps(it.to_dict()),
                         "shown": [p["id"] for p in shown]})
    return rows


def mix_rows(args: ScriptArguments, tokenizer) -> list[dict]:
    """Mix rows: `num_examples` (+ held-out share) train-split items of each of `mix_sets`
    (`tasks.numeric`), interleaved set by set, on the served prompt."""
    import json

    from tasks import load_items, render_prompt

    n = args.num_examples + (args.eval_examples + len(args.mix_sets) - 1) // len(args.mix_sets)
    per_set = [load_items(s, n, args.seed_data) for s in args.mix_sets]
    return [{"prompt": render_prompt(tokenizer, it), "item": json.dumps(it.to_dict()), "set": it.meta.get("set", "")}
            for group in zip(*per_set) for it in group]


def build_datasets(args: ScriptArguments, model_path: str, tokenizer, out_dir: Path, index_dir: Path,
                   retriever=None, agent_cfg=None):
    """(train, held_out) `datasets.Dataset`s for `args.task` (hops: `retriever` and the policy's
    `agent_cfg` build the prompts).

    Raises:
        ValueError: too few rows for the held-out split plus one training example.
    """
    from datasets import Dataset

    if args.task == "ntr":
        rows = ntr_rows(args, model_path, tokenizer, out_dir, index_dir)
        rows = [dict(r, prompt=tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True))
                for r in rows]
    elif args.task == "hops":
        rows = hops_rows(args, tokenizer, retriever, agent_cfg)
    elif args.task == "mix":
        rows = mix_rows(args, tokenizer)
    else:
        rows = arith_rows(args, tokenizer)
    if len(rows) <= args.eval_examples:
        raise ValueError(f"only {len(rows)} examples: need more than eval_examples={args.eval_examples}")
    per = {"hops": len(args.hops_types), "mix": len(args.mix_sets)}.get(args.task, 1)
    held, train = rows[: args.eval_examples], rows[args.eval_examples:][: args.num_examples * per]
    return Dataset.from_list(train), (Dataset.from_list(held) if held else None)
