"""Retrieval benchmark, measured side by side in one run.

``python -m retrieval.bench [--chunks 100000] [--corpus DIR] [--files 40]`` prints:
- query latency p50/p95 at N chunks (random unit vectors, FAISS flat inner product, 384-d):
  raw ``faiss.search`` vs `ChunkIndex.search` (with the SQLite fetch) vs `Retriever.search`
  (with the query embedding);
- ingest throughput on a sample of the corpus: raw ``Embedder.encode`` of the chunk texts vs
  `Retriever.ingest` of the same files (load + chunk + embed + store), in chunks/s.
Targets (DESIGN.md): query p50 ≤ 10 ms at 100k chunks; ingest ≥ 90% of the embedder's raw rate.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, q))


def query_bench(n: int, dim: int = 384, queries: int = 200) -> None:
    """Query latency of both index kinds at `n` random unit vectors, and the fp16 kind's recall@5
    against the exact float32 ranking."""
    import faiss

    from retrieval.chunking import Chunk
    from retrieval.index import ChunkIndex

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    qs = rng.normal(size=(queries, dim)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    exact = faiss.IndexFlatIP(dim)
    exact.add(vecs)
    truth = exact.search(qs, 5)[1]
    for kind in ChunkIndex.KINDS:
        with tempfile.TemporaryDirectory() as d:
            idx = ChunkIndex(d, dim, "bench", kind=kind)
            step = 10_000
            for s in range(0, n, step):
                m = min(step, n - s)
                idx.replace_sources([(f"src{s}", "h", [Chunk("h", f"{s + i}", i) for i in range(m)], vecs[s:s + m])],
                                    save=False)
            raw, full, hit = [], [], 0
            for qi, q in enumerate(qs):
                t = time.perf_counter()
                idx.faiss.search(q.reshape(1, -1), 5)
                raw.append(time.perf_counter() - t)
                t = time.perf_counter()
                res = idx.search(q, 5)
                full.append(time.perf_counter() - t)
                hit += len({int(p.text) for p in res} & set(truth[qi].tolist()))
            print(f"query {kind:9} @ {len(idx)} chunks: faiss p50 {_pct(raw, 50):.2f} ms p95 {_pct(raw, 95):.2f} ms | "
                  f"ChunkIndex.search p50 {_pct(full, 50):.2f} ms p95 {_pct(full, 95):.2f} ms | "
                  f"recall@5 vs exact {hit / (5 * queries):.3f} (target p50 <= 10 ms)")
            idx.close()


def ingest_bench(corpus: Path, files: int) -> None:
    from retrieval.loaders import load_file
    from retrieval.retriever import Retriever, iter_files

    sample = list(iter_files([corpus]))[:files]
    with tempfile.TemporaryDirectory() as d:
        r = Retriever(d)
        texts = [c.embed_text for f in sample for c in r.chunker.chunk(load_file(f))]
        r.embedder.encode(texts[:32])  # warm-up
        t = time.perf_counter()
        r.embedder.encode(texts)
        raw = len(texts) / (time.perf_counter() - t)
        rep = r.ingest(sample, progress=False)
        rate = rep.chunks_added / rep.seconds
        lat = []
        for q in ("how do I sort a list", "open a file for reading", "what is a generator", "format a string"):
            for _ in range(5):
                t = time.perf_counter()
                r.search(q, 5)
                lat.append(time.perf_counter() - t)
        print(f"ingest {len(sample)} files, {rep.chunks_added} chunks: embedder raw {raw:.1f} chunks/s, "
              f"ingest {rate:.1f} chunks/s = {rate / raw:.1%} of raw (target >= 90%)")
        print(f"Retriever.search (embed query + search) p50 {statistics.median(lat) * 1000:.1f} ms")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description="retrieval benchmark")
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--corpus", type=Path, default=None, help="folder to sample for ingest (default: the Debian Python docs)")
    ap.add_argument("--files", type=int, default=30)
    args = ap.parse_args()
    query_bench(args.chunks)
    if args.corpus is None:
        from retrieval.demo import debian_docs

        args.corpus = debian_docs()
        if args.corpus is None:
            raise SystemExit("error: no demo corpus found: pass --corpus DIR (e.g. `thinkgate demo-corpus`)")
    ingest_bench(args.corpus, args.files)


if __name__ == "__main__":
    main()
