"""Latency benchmark: the agent's answer against plain `generate` of the same tokens.

``python -m agent.bench [--index DIR] [--model NAME] [--repeats N]`` prints one row per
question and the median ratios. Targets (DESIGN.md): fast path ≤ 1.15×, thinking ≤ 1.3×.

Method: before each agent run the policy's prefix cache is emptied, so the agent pays the
prompt's prefill like the baseline does. The baseline is the backend's own plain generate
(transformers' ``model.generate``, or onnxruntime-genai's ``generate_next_token`` loop; greedy,
KV cache on, no entropy) from the same prompt the agent built (system + passages + question),
forced to produce exactly as many tokens as the agent generated in total (draft, steps,
probes, answer); the agent's extra work (entropy, retrieval, ``<information>`` prefill, graph
overhead, probes' rollbacks) is what the ratio measures. ``--backend`` picks the engine
(default: the serving default, onnx int8 on a CPU-only machine).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

EASY = ["What is a list comprehension?", "How do I define a generator function?",
        "What does the len() function return?", "What is a dictionary in Python?"]
HARD = ["What is 37 times 49 minus 18?", "What is 4831 * 2917?",
        "If a list has 12 items and I pop 3 and append 5, how long is it?",
        "Which is faster for membership tests on 10,000 items, a list or a set, and why?"]


def plain_generate(policy, prompt_ids: list[int], n: int) -> float:
    """Seconds for the backend's own generate to produce exactly `n` tokens after `prompt_ids`."""
    if policy.backend == "onnx":
        start, stamps = policy.engine_generate(prompt_ids, n)
        return stamps[-1] - start
    import torch

    x = torch.tensor([prompt_ids], device=policy.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        policy.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, pad_token_id=policy.eos_token_ids[0])
    return time.perf_counter() - t0


async def run(args) -> dict:
    from agent.config import AgentConfig
    from agent.runner import Agent
    from policy.models import load_policy, resolve_policy
    from retrieval.retriever import Retriever

    policy = load_policy(args.model, backend=args.backend, precision=args.precision)
    print(f"backend {policy.backend}, weights {policy.weights}")
    retriever = Retriever(args.index) if args.index else None
    agent = Agent(policy, retriever, AgentConfig.for_model(resolve_policy(args.model)))
    rows = {"fast": [], "think": []}
    warm = await agent.run([{"role": "user", "content": EASY[0]}], effort="none", max_tokens=8)  # first-call setup
    plain_generate(policy, warm.transcript[:warm.tokens.prompt], 8)
    for path, questions, effort in (("fast", EASY, "none"), ("think", HARD, "high")):
        for q in questions:
            for _ in range(args.repeats):
                policy.reset_cache()
                turn = await agent.run([{"role": "user", "content": q}], effort=effort, max_tokens=args.max_tokens)
                tok = turn.tokens
                generated = tok.completion
                prompt_ids = turn.transcript[:tok.prompt]
                policy.reset_cache()
                base = plain_generate(policy, prompt_ids, generated)
                rows[path].append({"q": q, "agent_s": turn.seconds, "plain_s": base, "ratio": turn.seconds / base,
                                   "generated": generated, "information": tok.information,
                                   "prompt": tok.prompt, "steps": len(turn.details["steps"])})
                r = rows[path][-1]
                print(f"{path:5} {r['ratio']:.3f}x agent {r['agent_s']:.2f}s plain {r['plain_s']:.2f}s "
                      f"prompt {r['prompt']} gen {generated} info {r['information']} steps {r['steps']} | {q[:50]}",
                      flush=True)
    summary = {k: statistics.median(r["ratio"] for r in v) for k, v in rows.items() if v}
    print(f"median ratio: fast path {summary.get('fast', float('nan')):.3f}x (target <= 1.15), "
          f"thinking {summary.get('think', float('nan')):.3f}x (target <= 1.3)")
    return {"rows": rows, "median": summary}


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", default=None, help="index dir (default: none, no retrieval)")
    ap.add_argument("--model", default=None, help="policy model (default: smollm2-135m-instruct)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--backend", default="auto", help="auto (default), onnx or transformers")
    ap.add_argument("--precision", default="int8", help="onnx weights: int8, int4 or fp32")
    ap.add_argument("--max-tokens", type=int, default=64, help="completion token budget of a turn (reasoning + answer)")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
