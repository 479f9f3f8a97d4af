"""Decode benchmark of the policy backends, measured side by side in one run.

``python -m policy.bench [--model NAME] [--tokens 64] [--rounds 5] [--precisions int4 int8 fp32]``
prints, for one RAG-sized prompt (~600 tokens) and greedy decoding, medians over alternating
rounds of:
- decode tokens/s (time between the first and the last generated token) and prefill seconds of
  `TransformersPolicy` (fp32, the reference), `OnnxPolicy` at each precision (exact entropy
  every token), the same `OnnxPolicy` loop with the entropy computation switched off, and
  onnxruntime-genai's own ``generate_next_token`` loop (the engine alone: no logits read, no
  per-token work of ours);
- the entropy overhead (1 − rate with entropy / rate with it off, same loop) and the speed-up
  over transformers;
- per precision, the mean absolute entropy difference (nats) to transformers fp32 over the
  positions where both produced the same greedy prefix, and how many leading tokens agree.
Targets (issue 8): decode with exact entropy ≥ 4× transformers fp32; entropy ≤ 10 % of decode.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

PROMPT_QUESTION = "Using the passages, explain how list comprehensions, generators and dictionaries differ."


def rag_prompt(policy, target_tokens: int = 600) -> list[int]:
    """A chat prompt of about `target_tokens` tokens: the served system prompt, passages of
    documentation-like text and a question (no index needed)."""
    from tasks.prompt import build_messages

    para = ("A list comprehension builds a new list by applying an expression to each item of an "
            "iterable, optionally filtered by a condition. Generators produce items lazily, one at a time, "
            "and keep their state between calls to next(). A dictionary maps hashable keys to values. ")
    passages, n = [], 0
    while True:
        passages.append({"n": len(passages) + 1, "source": f"doc{len(passages)}.rst", "heading": "Data structures",
                         "text": para * 2})
        ids = policy.chat_prompt(build_messages(PROMPT_QUESTION, passages))
        if len(ids) >= target_tokens or n > 50:
            return ids
        n += 1


async def timed_stream(policy, ids: list[int], tokens: int) -> dict:
    """Prefill seconds (to the first token), decode tokens/s (tokens after the first over the time
    from the first delta to the last), generated ids and entropies of one greedy generation."""
    from policy.base import GenerationParams

    policy.reset_cache()
    t0 = time.perf_counter()
    stamps, out, ents = [], [], []
    async for d in policy.stream(ids, GenerationParams(max_tokens=tokens)):
        stamps.append(time.perf_counter())
        out += d.token_ids
        ents += d.entropies
    # the first delta holds the first token alone; later deltas may hold several (coalesced)
    rate = (len(out) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {"prefill_s": stamps[0] - t0, "rate": rate, "ids": out, "entropies": ents}


def native_onnx(policy, ids: list[int], tokens: int) -> dict:
    """onnxruntime-genai's own greedy loop (no logits read, no entropy): prefill s and decode tokens/s."""
    start, stamps = policy.engine_generate(ids, tokens)
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {"prefill_s": stamps[0] - start, "rate": rate}


def agreement(ref: dict, other: dict) -> tuple[int, float]:
    """(leading tokens equal, mean |entropy difference| over those positions, nats)."""
    n = 0
    while n < min(len(ref["ids"]), len(other["ids"])) and ref["ids"][n] == other["ids"][n]:
        n += 1
    m = max(n, 1)
    diff = sum(abs(a - b) for a, b in zip(ref["entropies"][:m], other["entropies"][:m])) / m
    return n, diff


async def run(args) -> dict:
    from policy.models import load_policy

    ref = load_policy(args.model, backend="transformers", device="cpu", cache_slots=1)
    onnx = {p: load_policy(args.model, backend="onnx", precision=p, cache_slots=1) for p in args.precisions}
    ids = rag_prompt(ref)
    print(f"prompt {len(ids)} tokens, {args.tokens} new tokens, {args.rounds} rounds, {os.cpu_count()} cores")
    rows: dict[str, list[dict]] = {"transformers fp32": []}
    for p in onnx:
        rows[f"onnx {p}"] = []
        rows[f"onnx {p} entropy off"] = []
        rows[f"onnx {p} engine loop"] = []
    for _ in range(args.rounds):  # alternate engines every round so drift hits all alike
        rows["transformers fp32"].append(await timed_stream(ref, ids, args.tokens))
        for p, pol in onnx.items():
            rows[f"onnx {p}"].append(await timed_stream(pol, ids, args.tokens))
            pol._entropy = lambda logits: (0.0, 0.0)  # same loop, entropy off
            rows[f"onnx {p} entropy off"].append(await timed_stream(pol, ids, args.tokens))
            del pol._entropy
            rows[f"onnx {p} engine loop"].append(native_onnx(pol, ids, args.tokens))
    med = {k: {"rate": statistics.median(r["rate"] for r in v), "prefill_s": statistics.median(r["prefill_s"] for r in v)}
           for k, v in rows.items()}
    base = med["transformers fp32"]["rate"]
    print(f"{'engine':28} {'decode tok/s':>12} {'x transformers':>15} {'prefill s':>10} {'entropy cost':>13} "
          f"{'same greedy prefix':>19} {'|dH| nats':>10}")
    for k, m in med.items():
        cost, agree, dh = "", "", ""
        if k.startswith("onnx") and not k.endswith(("off", "loop")):
            off = med[f"{k} entropy off"]["rate"]
            cost = f"{1 - m['rate'] / off:.1%}"
            n, d = agreement(rows["transformers fp32"][0], rows[k][0])
            agree, dh = f"{n}/{len(rows[k][0]['ids'])}", f"{d:.4f}"
        print(f"{k:28} {m['rate']:12.1f} {m['rate'] / base:14.2f}x {m['prefill_s']:10.3f} {cost:>13} {agree:>19} {dh:>10}")
    return med


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="policy (default smollm2-135m-instruct)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--precisions", nargs="+", default=["int4", "int8", "fp32"])
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
