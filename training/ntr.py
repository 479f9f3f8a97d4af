"""Next-token-reasoning (NTR) data, after RPT (arXiv 2506.08007, §3).

Contract:
- `load_corpus(paths | index_dir)` → document texts: every supported file under the paths, or
  (the default) the chunk texts of the agent's index, read through `retrieval.index.ChunkIndex`.
- `score_positions(model, tokenizer, texts)` runs a proxy model once over each document window
  and scores every token position t by the entropy (nats) of its top-16 next-token
  probabilities, renormalised (RPT §3.3). Progress bar while scoring.
- `build_ntr_rows(...)` keeps hard positions (entropy ≥ threshold) plus a share of easy ones
  (the policy must also learn not to think there), sampled with a seed, and renders each with
  `tasks.ntr.ntr_prompt` (the prompt evaluation uses too) with its continuation and the
  continuation's token boundaries in UTF-8 bytes (what the prefix-match reward needs).
- Rows are written as JSONL with their entropies so a run is reproducible from the file.
- `build_dataset(...)` chains the three (documents shuffled with the seed, the first few scored) and
  is what both ``python -m training.grpo --task ntr`` and ``python -m training.ntr`` (this module as a
  script: an NTR file for training or for ``evals.modes --tasks ntr --ntr-file``) call.
"""
from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tasks.ntr import boundaries, ntr_prompt


@dataclass
class ScoredPosition:
    """One candidate: document `doc`, token index `t` (predict ids[t] from ids[:t]), `entropy` in nats."""

    doc: int
    t: int
    entropy: float


def load_corpus(paths: Iterable[str | Path] = (), index_dir: str | Path | None = None,
                min_chars: int = 200) -> list[str]:
    """Document texts from files/folders, or from an index's chunk store when no path is given.

    Raises:
        FileNotFoundError: a path or the index is missing.
        ValueError: nothing of at least `min_chars` characters was found.
    """
    texts: list[str] = []
    paths = list(paths)
    if paths:
        from retrieval.loaders import load_file
        from retrieval.retriever import iter_files

        for f in iter_files(paths):
            texts.append("\n\n".join(s.text for s in load_file(f)))
    else:
        from retrieval.index import ChunkIndex

        index = ChunkIndex.open_existing(index_dir or "")
        try:
            texts = [p.text for p in index.iter_chunks()]
        finally:
            index.close()
    texts = [t for t in texts if len(t) >= min_chars]
    if not texts:
        raise ValueError(f"the corpus has no document of at least {min_chars} characters")
    return texts


def topk_entropy_from_logits(logits, k: int = 16):
    """Entropy (nats) of the renormalised top-`k` probabilities per row of `logits` [n, vocab] → [n]."""
    import torch

    top = torch.topk(logits.float(), k, dim=-1).values
    logp = torch.log_softmax(top, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def score_positions(model, tokenizer, texts: list[str], window: int = 256, min_context: int = 16,
                    k: int = 16, progress: bool = True) -> tuple[list[list[int]], list[ScoredPosition]]:
    """Token ids of each document's first `window` tokens and the top-k entropy of every position.

    Returns:
        (ids per document, positions with t in [min_context, len(ids)) ).
    """
    import torch
    from tqdm import tqdm

    all_ids: list[list[int]] = []
    scored: list[ScoredPosition] = []
    device = next(model.parameters()).device
    for d, text in enumerate(tqdm(texts, desc="scoring positions", unit="doc", disable=not progress)):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:window]
        all_ids.append(ids)
        if len(ids) <= min_context:
            continue
        with torch.inference_mode():
            logits = model(torch.tensor([ids], device=device)).logits[0]
        ent = topk_entropy_from_logits(logits[:-1], k)  # row t-1 predicts token t
        for t in range(min_context, len(ids)):
            scored.append(ScoredPosition(d, t, float(ent[t - 1])))
    return all_ids, scored


def build_ntr_rows(tokenizer, all_ids: list[list[int]], scored: list[ScoredPosition], *, n: int,
                   entropy_threshold: float, easy_share: float, context_tokens: int = 128,
                   continuation_tokens: int = 8, seed: int = 0) -> list[dict]:
    """Select and render `n` positions: hard ones first (up to n·(1 − easy_share)), easy ones for the rest.

    Raises:
        ValueError: easy_share outside [0, 1] or n < 1.
    """
    if not 0.0 <= easy_share <= 1.0:
        raise ValueError(f"easy_share must be in [0, 1], got {easy_share}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    hard = [p for p in scored if p.entropy >= entropy_threshold]
    easy = [p for p in scored if p.entropy < entropy_threshold]
    rng.shuffle(hard)
    rng.shuffle(easy)
    n_hard = min(len(hard), round(n * (1 - easy_share)))
    chosen = hard[:n_hard] + easy[: n - n_hard]
    if len(chosen) < n:  # too few easy ones: top up with more hard ones
        chosen += hard[n_hard: n_hard + n - len(chosen)]
    rows = []
    for p in chosen:
        ids = all_ids[p.doc]
        ctx = tokenizer.decode(ids[max(0, p.t - context_tokens): p.t])
        cont, bnd = boundaries(tokenizer, ids[p.t: p.t + continuation_tokens])
        if not bnd:
            continue
        rows.append({"prompt": ntr_prompt(ctx), "context": ctx, "continuation": cont, "boundaries": bnd,
                     "entropy": round(p.entropy, 4), "hard": p.entropy >= entropy_threshold,
                     "doc": p.doc, "position": p.t})
    rng.shuffle(rows)
    return rows


def build_dataset(model_path: str | Path, tokenizer, *, n: int, corpus: Iterable[str | Path] = (),
                  index_dir: str | Path | None = None, proxy_model: str | Path | None = None,
                  window: int = 256, entropy_threshold: float = 2.0, easy_share: float = 0.3,
                  context_tokens: int = 128, continuation_tokens: int = 8, seed: int = 0,
                  exclude: str | Path | None = None) -> list[dict]:
    """`n` NTR rows from the corpus (`load_corpus`), positions scored by `proxy_model` (default the
    policy at `model_path`); documents are shuffled with `seed` and only the first
    max(8, n // 4) are scored (every position of a document is a candidate). A document whose text
    holds any context of the NTR file `exclude` (an evaluation file) is left out, so training rows
    never come from a document that evaluation rows came from.

    Raises:
        FileNotFoundError / ValueError: as `load_corpus` and `build_ntr_rows`.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from policy.models import resolve_policy

    texts = load_corpus(corpus, index_dir)
    held = [r["context"].strip() for r in read_jsonl(exclude) if r["context"].strip()] if exclude else []
    if held:
        texts = [t for t in texts if not any(c in t for c in held)]
        if not texts:
            raise ValueError("every document of the corpus holds an excluded context")
    proxy_path = resolve_policy(str(proxy_model)) if proxy_model else str(model_path)
    proxy = AutoModelForCausalLM.from_pretrained(proxy_path, dtype=torch.float32).eval()
    random.Random(seed).shuffle(texts)
    all_ids, scored = score_positions(proxy, tokenizer, texts[:max(8, n // 4)], window=window)
    return build_ntr_rows(tokenizer, all_ids, scored, n=n, entropy_threshold=entropy_threshold,
                          easy_share=easy_share, context_tokens=context_tokens,
                          continuation_tokens=continuation_tokens, seed=seed)


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    """Write rows as JSON lines (parent dirs created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file.

    Raises:
        ValueError: a line that is not JSON (the message gives the line number).
    """
    rows = []
    with open(path) as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{i}: not JSON: {exc.msg}") from None
    return rows


def main(argv: list[str] | None = None) -> None:
    """``python -m training.ntr``: write an NTR file; bad arguments exit 2 with a one-line message."""
    import argparse
    import os
    import sys

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(prog="python -m training.ntr", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSONL file to write")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="policy whose tokenizer renders the rows")
    ap.add_argument("--proxy-model", default=None, help="model scoring positions (default: --model)")
    ap.add_argument("--corpus", nargs="*", default=[], help="files/folders (default: the chunks of --index)")
    ap.add_argument("--index", default=None, help="index dir whose chunks are the corpus (default: <cache>/index)")
    ap.add_argument("--n", type=int, default=300, help="rows")
    ap.add_argument("--easy-share", type=float, default=0.5, help="share of low-entropy positions")
    ap.add_argument("--entropy-threshold", type=float, default=2.0, help="top-16 entropy (nats) of a hard position")
    ap.add_argument("--window", type=int, default=256, help="tokens of each document scored")
    ap.add_argument("--context-tokens", type=int, default=96, help="tokens of context before the position")
    ap.add_argument("--continuation-tokens", type=int, default=8, help="tokens of true continuation kept")
    ap.add_argument("--seed", type=int, default=3, help="document shuffle and position sampling seed")
    ap.add_argument("--exclude", default=None, help="an NTR file whose documents are left out (training rows "
                    "held apart from an evaluation file)")
    a = ap.parse_args(argv)
    from transformers import AutoTokenizer

    from policy.models import ModelNotFoundError, cache_dir, resolve_policy

    try:
        path = str(resolve_policy(a.model))
        tok = AutoTokenizer.from_pretrained(path)
        rows = build_dataset(path, tok, n=a.n, corpus=a.corpus, exclude=a.exclude,
                             index_dir=None if a.corpus else (a.index or cache_dir() / "index"),
                             proxy_model=a.proxy_model, window=a.window, entropy_threshold=a.entropy_threshold,
                             easy_share=a.easy_share, context_tokens=a.context_tokens,
                             continuation_tokens=a.continuation_tokens, seed=a.seed)
    except (FileNotFoundError, ValueError, ModelNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    out = write_jsonl(rows, a.out)
    hard = sum(r["hard"] for r in rows)
    print(f"wrote {len(rows)} rows ({hard} hard, {len(rows) - hard} easy) to {out}")


if __name__ == "__main__":
    main()
