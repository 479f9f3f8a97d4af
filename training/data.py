"""Training data for both GRPO tasks, as `datasets.Dataset`s whose ``prompt`` is the prompt text.

Contract:
- ``ntr``: `training.ntr` rows (prompt, continuation, boundaries, entropy, hard), built from the
  corpus with the proxy model, or read from ``--dataset_file``; written to
  ``<output_dir>/ntr_dataset.jsonl`` so the run can be repeated from the file.
- ``arith``: chain sums of both buckets from `training.dual.train_items` (never a dev/test
  expression), each row with the served prompt and its ``item`` (the reward's scorer).
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


def build_datasets(args: ScriptArguments, model_path: str, tokenizer, out_dir: Path, index_dir: Path):
    """(train, held_out) `datasets.Dataset`s for `args.task`.

    Raises:
        ValueError: too few rows for the held-out split plus one training example.
    """
    from datasets import Dataset

    if args.task == "ntr":
        rows = ntr_rows(args, model_path, tokenizer, out_dir, index_dir)
        rows = [dict(r, prompt=tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True))
                for r in rows]
    else:
        rows = arith_rows(args, tokenizer)
    if len(rows) <= args.eval_examples:
        raise ValueError(f"only {len(rows)} examples: need more than eval_examples={args.eval_examples}")
    held, train = rows[: args.eval_examples], rows[args.eval_examples:][: args.num_examples]
    return Dataset.from_list(train), (Dataset.from_list(held) if held else None)
