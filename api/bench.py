"""``python -m api.bench``: a burst of concurrent streams against a real server started here.

Starts ``thinkgate serve`` (the default stack: onnx int8 on a CPU) with an empty index in a
temporary cache that links the prepared models, sends `--requests` concurrent streaming chats
(max_completion_tokens 64, effort auto) and prints: admitted and refused (429) counts, Retry-After,
admitted latency p50/p95, first-token p50, the largest usage.completion_tokens, and the server's
RSS before and after. Run after ``make models``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from policy.models import cache_dir

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--requests", type=int, default=32)
ap.add_argument("--queued", type=int, default=16, help="THINKGATE_MAX_QUEUED_REQUESTS of the server")
ap.add_argument("--port", type=int, default=8765)
ap.add_argument("--out", default=None, help="write the summary JSON here")
args = ap.parse_args()
PORT = args.port
tmp = Path(tempfile.mkdtemp(prefix="thinkgate-bench-"))
for d in ("models", "onnx"):
    (tmp / d).symlink_to(cache_dir() / d)
env = dict(os.environ, THINKGATE_MAX_QUEUED_REQUESTS=str(args.queued), THINKGATE_PORT=str(PORT),
           THINKGATE_CACHE_DIR=str(tmp), HF_HUB_OFFLINE="1")
srv = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--log-level", "warning"], env=env)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024


async def main():
    url = f"http://127.0.0.1:{PORT}"
    async with httpx.AsyncClient(base_url=url, timeout=600) as c:
        for _ in range(600):
            try:
                if (await c.get("/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
        await c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "warm up"}],
                                                    "max_completion_tokens": 8})
        before = rss_mb(srv.pid)
        qs = ["What is a list comprehension?", "What is 37 times 49 minus 18?", "How do I open a file?",
              "Explain Python decorators."]

        async def one(i):
            t0 = time.perf_counter()
            first = None
            body = {"messages": [{"role": "user", "content": qs[i % 4]}], "stream": True,
                    "max_completion_tokens": 64, "stream_options": {"include_usage": True}}
            async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    await r.aread()
                    return r.status_code, time.perf_counter() - t0, None, r.headers.get("retry-after"), None
                usage = None
                async for line in r.aiter_lines():
                    if first is None and '"content":"' in line and '"content":""' not in line:
                        first = time.perf_counter() - t0
                    if '"usage"' in line and line.startswith("data: {"):
                        usage = json.loads(line[6:]).get("usage")
                return 200, time.perf_counter() - t0, first, None, usage

        t0 = time.perf_counter()
        res = await asyncio.gather(*(one(i) for i in range(args.requests)))
        wall = time.perf_counter() - t0
        after = rss_mb(srv.pid)
        ok = [r for r in res if r[0] == 200]
        refused = [r for r in res if r[0] == 429]
        lat = sorted(r[1] for r in ok)
        firsts = sorted(r[2] for r in ok if r[2] is not None)
        q = lambda xs, p: xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
        out = {"requests": args.requests, "max_queued": args.queued, "admitted": len(ok), "refused_429": len(refused),
               "other": [r[0] for r in res if r[0] not in (200, 429)],
               "retry_after_s": sorted({r[3] for r in refused}),
               "admitted_latency_p50_s": round(q(lat, 0.5), 2), "admitted_latency_p95_s": round(q(lat, 0.95), 2),
               "first_token_p50_s": round(q(firsts, 0.5), 2) if firsts else None,
               "usage_max_completion": max((r[4] or {}).get("completion_tokens", 0) for r in ok),
               "wall_s": round(wall, 1), "rss_before_mb": round(before), "rss_after_mb": round(after)}
        print(json.dumps(out, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=1))

try:
    asyncio.run(main())
finally:
    srv.send_signal(signal.SIGINT)
    srv.wait(30)
