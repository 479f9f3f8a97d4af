"""``python -m policy.bench_cpu``: CPU decode of one registered model, side by side in one run.

For `--model` (default: the served default) and greedy decoding of `--tokens` new tokens after the
same short chat prompt, alternating engines every round (medians over `--rounds`), it prints decode
tokens/s (tokens after the first over the time from the first to the last) of:
- ``llama.cpp``: llama-server (the build of ``make llama-server``) on the same GGUF the model was
  prepared from, `--threads` threads, its own ``timings.predicted_per_second`` (no prompt caching);
- ``onnx engine``: onnxruntime-genai's own ``generate_next_token`` loop on the served export (no
  logits read, no entropy: the backend's plain decode);
- ``onnx + entropy``: our decode loop in process (full next-token logits read, exact entropy over
  the whole vocabulary each step), and the same loop with the entropy switched off (its cost);
- ``thinkgate API``: a real ``thinkgate serve`` started here (empty index, the prepared models
  linked into a temporary cache), streaming ``/v1/chat/completions`` with reasoning_effort none:
  decode with exact entropy through HTTP, the agent and SSE.
Targets (issue 26): API ≥ 0.8 × onnx engine and ≥ 0.9 × llama.cpp; entropy ≤ 10 % of decode.
Run after ``make models`` and ``make llama-server``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTION = "Write a detailed tutorial on Python list comprehensions, with many examples."


def _wait(url: str, path: str, proc, timeout: float = 300.0) -> None:
    import httpx

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited {proc.returncode} before it was ready")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url}{path} not ready after {timeout:.0f}s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llama_decode(url: str, ids: list[int], n: int) -> float:
    """llama-server's own decode rate (tokens/s) for exactly `n` greedy tokens after `ids`."""
    import httpx

    r = httpx.post(url + "/completion", timeout=600, json={"prompt": ids, "n_predict": n, "ignore_eos": True,
                                                           "cache_prompt": False, "temperature": 0.0, "top_k": 1})
    r.raise_for_status()
    return float(r.json()["timings"]["predicted_per_second"])


def api_decode(url: str, n: int, question: str = QUESTION) -> tuple[float, int]:
    """(decode tokens/s, completion tokens) of one streamed chat answer (effort none) through the API: the
    tokens after the first content delta (which carries the gate's draft) over the time from it to the last."""
    import httpx

    body = {"messages": [{"role": "user", "content": question}], "stream": True, "reasoning_effort": "none",
            "max_completion_tokens": n, "stream_options": {"include_usage": True}}
    first = last = None
    usage, draft = None, 1
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            d = json.loads(line[6:])
            if d.get("usage"):
                usage = d["usage"]
            if d.get("thinkgate"):  # the first content delta is the gate's whole draft (kept): not decode timing
                draft = max(1, (d["thinkgate"].get("tokens") or {}).get("draft", 1))
            if any((c.get("delta") or {}).get("content") for c in d.get("choices") or []):
                last = time.perf_counter()
                first = first or last
    toks = (usage or {}).get("completion_tokens", 0)
    ok = first and last and last > first and toks > draft
    return ((toks - draft) / (last - first) if ok else float("nan")), toks


def main(argv=None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from policy.models import DEFAULT_POLICY, REGISTRY, cache_dir, default_precision, gguf_path, load_policy

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_POLICY, help="a registered model")
    ap.add_argument("--precision", default=None, help="onnx export (default: the registry's choice)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--question", default=QUESTION, help="the user message (the API run needs an answer of --tokens)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--llama-server", default=os.environ.get("THINKGATE_LLAMA_SERVER")
                    or str(cache_dir() / "llama.cpp" / "llama-server"))
    args = ap.parse_args(argv)
    if args.model not in REGISTRY:
        sys.exit(f"error: {args.model!r} is not a registered model ({', '.join(REGISTRY)})")
    if not Path(args.llama_server).is_file():
        sys.exit(f"error: llama-server not found at {args.llama_server} (make llama-server)")
    prec = args.precision or default_precision(args.model)
    from policy.bench import timed_stream
    from tasks.prompt import build_messages

    pol = load_policy(args.model, backend="onnx", precision=prec, cache_slots=1, threads=args.threads)
    ids = pol.chat_prompt(build_messages(args.question, []))
    gguf = gguf_path(REGISTRY[args.model])
    lport, aport = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="thinkgate-bench-cpu-"))
    for d in ("models", "onnx", "gguf"):
        if (cache_dir() / d).exists():
            (tmp / d).symlink_to(cache_dir() / d)
    logs = open(tmp / "servers.log", "w")
    llama = subprocess.Popen([args.llama_server, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(lport),
                              "-t", str(args.threads), "-c", "4096", "-np", "1"], stdout=logs, stderr=logs)
    env = dict(os.environ, THINKGATE_CACHE_DIR=str(tmp), THINKGATE_MODEL=args.model, THINKGATE_PRECISION=prec,
               THINKGATE_PORT=str(aport), HF_HUB_OFFLINE="1")
    api = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--log-level", "warning"], env=env,
                           stdout=logs, stderr=logs, cwd=Path(__file__).resolve().parents[1])
    lurl, aurl = f"http://127.0.0.1:{lport}", f"http://127.0.0.1:{aport}"
    try:
        _wait(lurl, "/health", llama)
        _wait(aurl, "/healthz", api)
        llama_decode(lurl, ids, 8)  # warm-ups
        api_decode(aurl, 8, args.question)
        rows: dict[str, list[float]] = {"llama.cpp": [], "onnx engine": [], "onnx + entropy": [],
                                        "onnx, entropy off": [], "thinkgate API": []}
        api_tokens = []
        for _ in range(args.rounds):  # alternate engines every round so drift hits all alike
            rows["llama.cpp"].append(llama_decode(lurl, ids, args.tokens))
            start, stamps = pol.engine_generate(ids, args.tokens)
            rows["onnx engine"].append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
            rows["onnx + entropy"].append(asyncio.run(timed_stream(pol, ids, args.tokens))["rate"])
            pol._entropy = lambda logits: (0.0, 0.0)
            rows["onnx, entropy off"].append(asyncio.run(timed_stream(pol, ids, args.tokens))["rate"])
            del pol._entropy
            rate, toks = api_decode(aurl, args.tokens, args.question)
            rows["thinkgate API"].append(rate)
            api_tokens.append(toks)
    finally:
        for p in (llama, api):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"model {args.model} (onnx {prec}; llama.cpp on {gguf.name}), {args.threads} threads, prompt {len(ids)} "
          f"tokens, {args.tokens} new tokens (API answers: {api_tokens}), medians of {args.rounds} alternating rounds")
    print(f"{'engine':20} {'decode tok/s':>12}   rounds")
    for k, v in rows.items():
        print(f"{k:20} {med[k]:12.1f}   {', '.join(f'{x:.1f}' for x in v)}")
    print(f"entropy cost (1 - with / off, same loop): {1 - med['onnx + entropy'] / med['onnx, entropy off']:.1%} "
          f"(target <= 10 %), vocabulary {pol.vocab_size}")
    print(f"API / onnx engine: {med['thinkgate API'] / med['onnx engine']:.2f}x (target >= 0.8); "
          f"API / llama.cpp: {med['thinkgate API'] / med['llama.cpp']:.2f}x (target >= 0.9); "
          f"onnx engine / llama.cpp: {med['onnx engine'] / med['llama.cpp']:.2f}x")


if __name__ == "__main__":
    main()
