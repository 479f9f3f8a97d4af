"""Retrieval benchmark, measured side by side in one run.

``python -m retrieval.bench [--chunks 100000] [--corpus DIR] [--files 40]`` prints:
- query latency p50/p95 at N chunks (random unit vectors, FAISS flat inner product, 384-d):
  raw ``faiss.search`` vs `ChunkIndex.search` (with the SQLite fetch) vs `Retriever.search`
  (with the query embedding);
- ingest throughput on a sample of the corpus, for the fp32 embedder (the reference) and the
  int8 one (the CPU default) side by side: raw ``Embedder.encode`` of the chunk texts vs
  `Retriever.ingest` of the same files (load + chunk + embed + store), in chunks/s;
- int8 against fp32 quality: cosine of the two embeddings of each chunk, top-5 overlap of
  their rankings for the docs-QA questions, and recall@5 of the docs-QA set (a question is
  recalled when one of its source files is among the top 5) on an index of the QA source files
  plus the sample.
``python -m retrieval.bench --hybrid-from INDEX [--chunks 100000]`` instead times each retrieval
mode (dense, lexical, hybrid, hybrid+diversity) through `Retriever.search` at N real chunks copied
from INDEX (issue 10: hybrid p50 ≤ 15 ms at 100k chunks).
Targets (DESIGN.md, issue 8): query p50 ≤ 10 ms at 100k chunks; ingest ≥ 90% of the embedder's
raw rate; int8 ingest ≥ 2.5× the fp32 one at recall@5 within 1 point.
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
    for kind in ("flat-fp16", "flat", "ivf-fp16"):  # "auto" is one of them at any size
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


def hybrid_bench(source_index: Path, n: int) -> None:
    """Query latency of each retrieval mode at `n` real chunks: the chunks (texts and stored
    embeddings) of `source_index` copied under new names until there are `n`, queried with the
    evaluation questions (`retrieval.eval.load_questions`) through `Retriever.search`, which
    includes embedding the query."""
    import sqlite3

    from retrieval.chunking import Chunk
    from retrieval.embedder import Embedder
    from retrieval.eval import load_questions
    from retrieval.index import ChunkIndex
    from retrieval.retriever import Retriever

    src = sqlite3.connect(Path(source_index) / "chunks.sqlite")
    rows = src.execute("SELECT source, heading, text, position, embedding FROM chunks ORDER BY id").fetchall()
    dim = int(dict(src.execute("SELECT key, value FROM meta").fetchall())["dim"])
    src.close()
    questions = [q["question"] for q in load_questions()]
    with tempfile.TemporaryDirectory() as d:
        idx = ChunkIndex(d, dim, "")
        copy = 0
        while len(idx) < n:
            by: dict = {}
            for s, h, t, p, e in rows[: n - len(idx)]:
                by.setdefault(f"/copy{copy}{s}", []).append((Chunk(h, t, p), np.frombuffer(e, dtype=np.float32)))
            idx.replace_sources([(s, "-", [c for c, _ in v], np.stack([e for _, e in v])) for s, v in by.items()],
                                save=False)
            copy += 1
        idx.save()
        idx.close()
        tops: dict = {}
        emb = Embedder()  # one embedder for both openings
        for kind in ("flat-fp16", "auto"):  # each rebuilds the FAISS cache from the store
            r = Retriever(d, emb, index_kind=kind)
            built = r.index.structure
            for mode, decay in (("dense", 1.0), ("lexical", 1.0), ("hybrid", 1.0), ("hybrid", 0.5)):
                for q in questions[:5]:
                    r.search(q, 5, mode=mode, source_decay=decay)
                lat, top = [], []
                for q in questions:
                    t = time.perf_counter()
                    res = r.search(q, 5, mode=mode, source_decay=decay)
                    lat.append(time.perf_counter() - t)
                    top.append({(p.source.split("/", 2)[-1], p.text) for p in res})  # copies named alike
                name = mode + ("+diversity" if decay < 1 else "")
                tops[kind, name] = top
                same = ""
                if kind != "flat-fp16":
                    ov = [len(a & b) / max(len(b), 1) for a, b in zip(top, tops["flat-fp16", name])]
                    same = f"; top-5 overlap with flat-fp16 {statistics.mean(ov):.3f}"
                print(f"Retriever.search {name:16} {kind}={built:9} @ {len(r)} real chunks ({len(questions)} "
                      f"questions, query embedding included): p50 {_pct(lat, 50):.2f} ms p95 {_pct(lat, 95):.2f} ms "
                      f"(target p50 <= 15 ms){same}", flush=True)
            r.index.close()


def ingest_bench(corpus: Path, files: int) -> dict:
    """Ingest rate of both embedder weights on the first `files` files of `corpus` (see module doc)."""
    from retrieval.embedder import Embedder
    from retrieval.loaders import load_file
    from retrieval.retriever import Retriever, iter_files

    sample = list(iter_files([corpus]))[:files]
    out: dict = {}
    for weights in ("fp32", "int8"):
        emb = Embedder(weights=weights)
        with tempfile.TemporaryDirectory() as d:
            r = Retriever(d, emb)
            texts = [c.embed_text for f in sample for c in r.chunker.chunk(load_file(f))]
            emb.encode(texts[:32])  # warm-up
            t = time.perf_counter()
            vecs = emb.encode(texts)
            raw = len(texts) / (time.perf_counter() - t)
            rep = r.ingest(sample, progress=False)
            rate = rep.chunks_added / rep.seconds
            lat = []
            for q in ("how do I sort a list", "open a file for reading", "what is a generator", "format a string"):
                for _ in range(5):
                    t = time.perf_counter()
                    r.search(q, 5)
                    lat.append(time.perf_counter() - t)
        out[weights] = {"raw": raw, "ingest": rate, "vecs": vecs, "embedder": emb}
        print(f"ingest {weights}: {len(sample)} files, {rep.chunks_added} chunks: embedder raw {raw:.1f} chunks/s, "
              f"ingest {rate:.1f} chunks/s = {rate / raw:.1%} of raw (target >= 90%); "
              f"Retriever.search p50 {statistics.median(lat) * 1000:.1f} ms")
    cos = (out["fp32"]["vecs"] * out["int8"]["vecs"]).sum(axis=1)
    print(f"int8 vs fp32: ingest {out['int8']['ingest'] / out['fp32']['ingest']:.2f}x (target >= 2.5x), raw encode "
          f"{out['int8']['raw'] / out['fp32']['raw']:.2f}x; cosine of the two embeddings of each chunk: mean "
          f"{cos.mean():.4f}, min {cos.min():.4f}")
    return out


def qa_recall(corpus: Path, files: int, embedders: dict) -> None:
    """Recall@5 of the docs-QA set for each embedder, and the top-5 overlap of their rankings."""
    from retrieval.retriever import Retriever, iter_files
    from tasks.docs import load

    items = load()
    qa_files = {corpus / s for it in items for s in it.meta["sources"] if (corpus / s).is_file()}
    sample = sorted(qa_files | set(list(iter_files([corpus]))[:files]))
    tops = {}
    for weights, emb in embedders.items():
        with tempfile.TemporaryDirectory() as d:
            r = Retriever(d, emb)
            r.ingest(sample, progress=False)
            tops[weights] = [r.search(it.question, 5) for it in items]
        hit = sum(any(p.source.endswith(tuple(it.meta["sources"])) for p in top) for it, top in zip(items, tops[weights]))
        print(f"docs-QA recall@5 {weights}: {hit}/{len(items)} = {hit / len(items):.2f} ({len(sample)} files indexed)")
    overlap = [len({p.text for p in a} & {p.text for p in b}) / 5 for a, b in zip(tops["fp32"], tops["int8"])]
    print(f"top-5 overlap int8 vs fp32 over {len(items)} questions: {statistics.mean(overlap):.2f}")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description="retrieval benchmark")
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--corpus", type=Path, default=None, help="folder to sample for ingest (default: the Debian Python docs)")
    ap.add_argument("--files", type=int, default=30)
    ap.add_argument("--hybrid-from", type=Path, default=None,
                    help="an index over real documents (e.g. the demo index): time every retrieval mode at --chunks "
                         "chunks copied from it, then stop")
    args = ap.parse_args()
    if args.hybrid_from is not None:
        hybrid_bench(args.hybrid_from, args.chunks)
        return
    if args.chunks:
        query_bench(args.chunks)
    if args.corpus is None:
        from retrieval.demo import debian_docs

        args.corpus = debian_docs()
        if args.corpus is None:
            raise SystemExit("error: no demo corpus found: pass --corpus DIR (e.g. `thinkgate demo-corpus`)")
    out = ingest_bench(args.corpus, args.files)
    qa_recall(args.corpus, args.files, {w: v["embedder"] for w, v in out.items()})


if __name__ == "__main__":
    main()
