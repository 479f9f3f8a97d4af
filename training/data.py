"""Training data for both tasks, as `datasets.Dataset`s with a conversational ``prompt`` column.

Contract:
- ``ntr``: `training.ntr` rows (prompt, continuation, boundaries, entropy, hard), built from the
  corpus with the proxy model, or read from ``--dataset_file``; written to
  ``<output_dir>/ntr_dataset.jsonl`` so the run can be repeated from the file.
- ``qa``: ``{question, answer}`` JSONL lines or a reasoning-gym generator; the prompt lets the
  policy think or answer directly and asks for the answer in ``\\boxed{}``.
- The first `eval_examples` rows are held out; the rest train.
"""
from __future__ import annotations

import json
from pathlib import Path

from training.config import ScriptArguments
from training.ntr import build_ntr_rows, load_corpus, read_jsonl, score_positions, write_jsonl

QA_INSTRUCTION = ("Answer the question. If it needs reasoning, think first inside <think> </think>; "
                  "otherwise answer at once. Put the final answer in \\boxed{}.")


def qa_prompt(question: str) -> list[dict]:
    """Chat prompt of one QA example."""
    return [{"role": "user", "content": f"{QA_INSTRUCTION}\n\nQuestion: {question}"}]


def ntr_rows(args: ScriptArguments, model_path: str, tokenizer, out_dir: Path, index_dir: Path) -> list[dict]:
    """NTR rows: from --dataset_file, else built with the proxy model (written to out_dir)."""
    if args.dataset_file:
        rows = read_jsonl(args.dataset_file)
        missing = [k for k in ("prompt", "continuation", "boundaries") if k not in (rows[0] if rows else {})]
        if not rows or missing:
            raise ValueError(f"{args.dataset_file}: NTR rows need prompt, continuation, boundaries (missing {missing})")
        return rows
    import torch
    from transformers import AutoModelForCausalLM

    texts = load_corpus(args.corpus, index_dir)
    proxy = AutoModelForCausalLM.from_pretrained(args.proxy_model or model_path, dtype=torch.float32).eval()
    # a few documents more than positions needed is plenty: every position of a document is scored
    n_docs = max(8, (args.num_examples + args.eval_examples) // 4)
    import random

    random.Random(args.seed_data).shuffle(texts)
    all_ids, scored = score_positions(proxy, tokenizer, texts[:n_docs], window=args.window)
    rows = build_ntr_rows(tokenizer, all_ids, scored, n=args.num_examples + args.eval_examples,
                          entropy_threshold=args.entropy_threshold, easy_share=args.easy_share,
                          context_tokens=args.context_tokens, continuation_tokens=args.continuation_tokens,
                          seed=args.seed_data)
    write_jsonl(rows, out_dir / "ntr_dataset.jsonl")
    return rows


def qa_rows(args: ScriptArguments) -> list[dict]:
    """QA rows from a JSONL file or a reasoning-gym generator.

    Raises:
        ValueError: a row without question/answer, or reasoning-gym missing.
    """
    if args.dataset_file:
        rows = read_jsonl(args.dataset_file)
        for i, r in enumerate(rows, 1):
            if "question" not in r or "answer" not in r:
                raise ValueError(f"{args.dataset_file}:{i}: a QA row needs 'question' and 'answer'")
    else:
        try:
            import reasoning_gym
        except ImportError:
            raise ValueError("--rg_dataset needs reasoning-gym: pip install reasoning-gym") from None
        ds = reasoning_gym.create_dataset(args.rg_dataset, size=args.num_examples + args.eval_examples,
                                          seed=args.seed_data, **json.loads(args.rg_config))
        rows = [{"question": e["question"], "answer": str(e["answer"])} for e in ds]
    return [{"prompt": qa_prompt(r["question"]), "question": r["question"], "answer": str(r["answer"]),
             "hard": bool(r.get("hard", False))} for r in rows]


def build_datasets(args: ScriptArguments, model_path: str, tokenizer, out_dir: Path, index_dir: Path):
    """(train, held_out) `datasets.Dataset`s for `args.task`.

    Raises:
        ValueError: too few rows for the held-out split plus one training example.
    """
    from datasets import Dataset

    rows = ntr_rows(args, model_path, tokenizer, out_dir, index_dir) if args.task == "ntr" else qa_rows(args)
    if len(rows) <= args.eval_examples:
        raise ValueError(f"only {len(rows)} examples: need more than eval_examples={args.eval_examples}")
    held, train = rows[: args.eval_examples], rows[args.eval_examples:][: args.num_examples]
    return Dataset.from_list(train), (Dataset.from_list(held) if held else None)
