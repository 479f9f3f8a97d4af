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
