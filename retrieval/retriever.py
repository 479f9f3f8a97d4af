"""The retriever: embedder + chunker + index behind one object; ingest and search.

Contract:
- `Retriever.ingest(paths)` walks files and folders, skips unsupported files and files whose
  sha256 is unchanged, chunks and embeds the rest in batches across files (so the embedder
  runs at full batch size), and commits each batch in one transaction. Reading and chunking
  run one step ahead on a prefetch thread, overlapping the embedder.
- `Retriever.add_text(source, text)` indexes one document given as a string (the API's
  POST /v1/documents); a repeated source replaces the earlier one.
- `Retriever.search(query, k)` → `Passage`s, best first. `asearch` runs it off the event loop.
  Modes: ``dense`` (FAISS cosine), ``lexical`` (FTS5 BM25), ``hybrid`` (the default: both
  fused by reciprocal-rank fusion, Cormack, Clarke & Büttcher 2009, score Σ_m w_m / (k_rrf +
  rank_m)). `source_decay` < 1 diversifies the top-k across pages: a greedy pick in which a
  candidate's fused score is multiplied by decay^(passages already picked from its page) — a
  maximal-marginal-relevance re-ranking (Carbonell & Goldstein 1998) whose similarity is "same
  page", so one page fills the top-k only when it is far ahead. Every returned passage's
  `score` is its cosine similarity to the query (what the agent's relevance floor compares),
  whatever the mode; the order is the mode's.
- Errors: `ValueError` for an empty query or text, a k outside 1..100, or an unknown format.
"""
from __future__ import annotations

import asyncio
import copy
import queue
import threading
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from retrieval.chunking import Chunk, Chunker
from retrieval.embedder import Embedder
from retrieval.index import ChunkIndex, Passage
from retrieval.loaders import Section, is_supported, load_file, parse_html, parse_markdown, parse_rst

MAX_K = 100
MODES = ("dense", "lexical", "hybrid")


def rrf_fuse(rankings: list[list[int]], weights: list[float], k_rrf: float = 60.0) -> dict[int, float]:
    """Reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009): id → Σ_m w_m / (k_rrf + r_m),
    r_m the 1-based rank of the id in ranking m (absent: no term).

    >>> sorted(rrf_fuse([[1, 2], [2, 3]], [1.0, 1.0], k_rrf=0).items())
    [(1, 1.0), (2, 1.5), (3, 0.5)]
    """
    fused: dict[int, float] = {}
    for ranking, w in zip(rankings, weights):
        for r, i in enumerate(ranking, 1):
            fused[i] = fused.get(i, 0.0) + w / (k_rrf + r)
    return fused


def diversify(ranked: list[tuple[int, float, str]], k: int, decay: float) -> list[int]:
    """Greedy top-`k` of (id, score, page) where a candidate's score is multiplied by
    decay^(passages already picked from its page); decay 1 keeps the order.

    >>> diversify([(1, 1.0, "a"), (2, 0.9, "a"), (3, 0.6, "b")], 2, 0.5)
    [1, 3]
    >>> diversify([(1, 1.0, "a"), (2, 0.9, "a"), (3, 0.3, "b")], 2, 0.5)
    [1, 2]
    """
    if decay >= 1.0:
        return [i for i, _, _ in ranked[:k]]
    picked: list[int] = []
    per_page: dict[str, int] = {}
    left = list(ranked)
    while left and len(picked) < k:
        best = max(range(len(left)), key=lambda j: left[j][1] * decay ** per_page.get(left[j][2], 0))
        i, _, page = left.pop(best)
        picked.append(i)
        per_page[page] = per_page.get(page, 0) + 1
    return picked


@dataclass
class IngestProgress:
    """Where a running ingest stands: files done of total, bytes done of total, chunks added,
    seconds so far (given to `Retriever.ingest`'s `on_progress` after every file)."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    chunks_added: int
    seconds: float


@dataclass
class IngestReport:
    """What an ingest did: files seen/indexed/skipped (unchanged)/failed, chunks added, seconds."""

    files_seen: int = 0
    files_indexed: int = 0
    files_skipped: int = 0
    files_failed: list[str] = field(default_factory=list)
    chunks_added: int = 0
    seconds: float = 0.0


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Supported files under `paths` (files are taken as given, folders walked), sorted per folder.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    for p in map(Path, paths):
        p = p.expanduser()
        if not p.exists():
            raise FileNotFoundError(f"no such file or folder: {p}")
        if p.is_file():
            yield p.resolve()
        else:
            for f in sorted(p.rglob("*")):
                if f.is_file() and is_supported(f):
                    yield f.resolve()


def _prefetch(fn: Callable, items: list, depth: int = 16) -> Iterator:
    """``fn(item)`` for each item, in order, computed up to `depth` items ahead on a worker thread:
    file reading and chunking (Python, tokenizer) overlap the embedder's forward passes (torch
    releases the GIL inside them). An exception in `fn` is raised in the consumer; the worker stops
    when the consumer stops early."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for it in items:
                if not put((True, fn(it))):
                    return
        except BaseException as exc:  # handed to the consumer, not lost with the thread
            put((False, exc))
            return
        put((True, done))

    threading.Thread(target=work, name="ingest-prefetch", daemon=True).start()
    try:
        while True:
            ok, r = q.get()
            if not ok:
                raise r
            if r is done:
                return
            yield r
    finally:
        stop.set()


class Retriever:
    """Args:
        index_dir: the index folder.
        embedder: an `Embedder`, or a name for one (default all-MiniLM-L6-v2).
        overlap: chunk overlap in word pieces.
        batch_chunks: chunks embedded per batch during ingest.
        mode: "hybrid" (default), "dense" or "lexical" (see the module docstring).
        rrf_k: the k of reciprocal-rank fusion (60 in Cormack et al.).
        lexical_weight: the BM25 ranking's weight in the fusion (the dense ranking's is 1).
        candidates: passages each ranking contributes before fusion.
        source_decay: diversity across pages, in (0, 1]; 1 turns it off.
        max_postings: lexical queries leave out words held by more chunks than this (None: keep
            all); it bounds BM25's latency on large indexes (`ChunkIndex.lexical_search`).
        database_url: ``postgresql://…`` keeps the chunk store in PostgreSQL, shared by replicas
            (None: SQLite in `index_dir`); `index_dir` then holds only this replica's FAISS cache.
        refresh_s: how often, at most, a search looks for writes made by other processes (seconds).
        index_kind: the FAISS cache's kind, "auto" (default: flat-fp16, then an inverted file from
            `retrieval.index.IVF_MIN_CHUNKS` chunks), "flat-fp16", "flat" or "ivf-fp16".

    Raises:
        ValueError: an unknown mode or a parameter out of range.
    """

    def __init__(self, index_dir: str | Path, embedder: Embedder | str | None = None, *,
                 overlap: int = 32, batch_chunks: int = 256, mode: str = "hybrid", rrf_k: float = 60.0,
                 lexical_weight: float = 1.0, candidates: int = 50, source_decay: float = 0.5,
                 max_postings: int | None = 3000, database_url: str | None = None, refresh_s: float = 1.0,
                 index_kind: str = "auto"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0.0 < source_decay <= 1.0:
            raise ValueError(f"source_decay must be in (0, 1], got {source_decay}")
        if rrf_k < 0 or lexical_weight < 0 or candidates < 1:
            raise ValueError(f"rrf_k and lexical_weight must be >= 0 and candidates >= 1, got {rrf_k}, "
                             f"{lexical_weight}, {candidates}")
        self.mode, self.rrf_k, self.lexical_weight = mode, rrf_k, lexical_weight
        self.candidates, self.source_decay, self.max_postings = candidates, source_decay, max_postings
        self.embedder = Embedder(embedder) if embedder is None or isinstance(embedder, str) else embedder
        # the chunker gets its own copy of the tokenizer: it runs on the prefetch thread while the
        # embedder tokenizes batches (a shared fast tokenizer raises "Already borrowed")
        self.chunker = Chunker(copy.deepcopy(self.embedder.tokenizer), self.embedder.max_tokens, overlap)
        self.index = ChunkIndex(index_dir, self.embedder.dim, self.embedder.name, kind=index_kind,
                                database_url=database_url, refresh_s=refresh_s)
        self.batch_chunks = batch_chunks

    def __len__(self) -> int:
        return len(self.index)

    # ------------------------------------------------------------------ search
    def search(self, query: str, k: int = 5, mode: str | None = None, source_decay: float | None = None
               ) -> list[Passage]:
        """Top-`k` passages for `query` (see the module docstring); `mode` and `source_decay`
        override the retriever's own for this call.

        Raises:
            ValueError: empty query, k not in 1..100, or an unknown mode.
        """
        if not query or not query.strip():
            raise ValueError("query is empty")
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be in 1..{MAX_K}, got {k}")
        mode = mode or self.mode
        decay = self.source_decay if source_decay is None else source_decay
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        n = max(self.candidates, k)
        # one after the other: on 2 cores, running BM25 beside the query embedding slowed the embedding 3x
        lexical = ([i for i, _ in self.index.lexical_search(query, n, self.max_postings)]
                   if mode != "dense" else [])
        qv = self.embedder.encode_query(query)
        dense = self.index.search(qv, n) if mode != "lexical" else []
        if mode == "dense":
            fused = {p.id: p.score for p in dense}
        elif mode == "lexical":
            fused = {i: 1.0 / (r + 1) for r, i in enumerate(lexical)}
        else:
            fused = rrf_fuse([[p.id for p in dense], lexical], [1.0, self.lexical_weight], self.rrf_k)
        by_id = {p.id: p for p in dense}
        by_id.update(self.index.fetch([i for i in fused if i not in by_id], qv))
        ranked = sorted(((i, f, by_id[i].source) for i, f in fused.items() if i in by_id), key=lambda t: -t[1])
        return [by_id[i] for i in diversify(ranked, k, decay)]

    async def asearch(self, query: str, k: int = 5) -> list[Passage]:
        """`search` (the retriever's mode) on a worker thread: the agent's question and
        mid-reasoning retrievals both come through here."""
        return await asyncio.to_thread(self.search, query, k)

    # ------------------------------------------------------------------ ingest
    def add_text(self, source: str, text: str, fmt: str = "txt") -> int:
        """Index `text` under the name `source` (replacing an earlier one); returns chunks added.

        Args:
            fmt: "txt", "md", "rst" or "html": how headings are found.

        Raises:
            ValueError: empty source or text, or unknown fmt.
        """
        if not source.strip():
            raise ValueError("source is empty")
        parsers = {"txt": lambda t: [Section("", t)], "md": parse_markdown, "rst": parse_rst, "html": parse_html}
        if fmt not in parsers:
            raise ValueError(f"format must be one of {sorted(parsers)}, got {fmt!r}")
        sections = [s for s in parsers[fmt](text) if s.text.strip()]
        if not sections:
            raise ValueError("text is empty")
        chunks = self.chunker.chunk(sections)
        sha = hashlib.sha256(text.encode()).hexdigest()
        vecs = self.embedder.encode([c.embed_text for c in chunks])
        return self.index.replace_sources([(source, sha, chunks, vecs)])

    def delete(self, source: str) -> int:
        """Remove `source`; returns chunks removed (0 when unknown)."""
        return self.index.delete_source(source)

    def ingest(self, paths: Iterable[str | Path], progress: bool = True,
               on_progress: Callable[[IngestProgress], None] | None = None) -> IngestReport:
        """Index files and folders; see the module docstring.

        Args:
            progress: show a tqdm bar.
            on_progress: called at the start, after every stored batch and at the end (on the
                ingesting thread), counting files and bytes that are stored (hence searchable),
                skipped or failed; so bytes done / seconds is the rate the ETA needs.

        Raises:
            FileNotFoundError: a path does not exist (nothing is indexed then).
        """
        from tqdm import tqdm

        t0 = time.perf_counter()
        files = list(iter_files(paths))
        report = IngestReport(files_seen=len(files))
        sizes = [f.stat().st_size for f in files]
        total_bytes = sum(sizes)
        done_files = done_bytes = pending_bytes = 0  # "done": stored (searchable), skipped or failed
        pending: list[tuple[str, str, list[Chunk]]] = []
        n_pending = 0
        bar = tqdm(total=len(files), desc="ingest", unit="file", disable=not progress)

        def report_progress() -> None:
            if on_progress is not None:
                on_progress(IngestProgress(done_files, len(files), done_bytes, total_bytes, report.chunks_added,
                                           time.perf_counter() - t0))

        report_progress()
        for n, (f, sha, chunks, err) in enumerate(_prefetch(self._prepare, files)):
            bar.update(1)
            if err is not None or chunks is None:
                if err is not None:
                    report.files_failed.append(f"{f}: {err}")
                else:
                    report.files_skipped += 1
                done_files, done_bytes = done_files + 1, done_bytes + sizes[n]
                continue
            pending.append((str(f), sha, chunks))
            n_pending += len(chunks)
            pending_bytes += sizes[n]
            if n_pending >= self.batch_chunks:
                report.chunks_added += self._flush(pending)
                report.files_indexed += len(pending)
                done_files, done_bytes = done_files + len(pending), done_bytes + pending_bytes
                pending, n_pending, pending_bytes = [], 0, 0
                bar.set_postfix(chunks=report.chunks_added)
                report_progress()
        report.chunks_added += self._flush(pending)
        report.files_indexed += len(pending)
        bar.close()
        if report.files_indexed:
            self.index.save()
        done_files, done_bytes = len(files), total_bytes
        report_progress()
        report.seconds = time.perf_counter() - t0
        return report

    def _prepare(self, f: Path) -> tuple[Path, str, list[Chunk] | None, Exception | None]:
        """(file, sha256, chunks or None when unchanged since indexed, error) of one file."""
        try:
            raw = f.read_bytes()
            sha = hashlib.sha256(raw).hexdigest()
            if self.index.file_hash(str(f)) == sha:
                return f, sha, None, None
            return f, sha, self.chunker.chunk(load_file(f)), None
        except (OSError, ValueError) as exc:
            return f, "", None, exc

    def _flush(self, pending: list[tuple[str, str, list[Chunk]]]) -> int:
        if not pending:
            return 0
        texts = [c.embed_text for _, _, chunks in pending for c in chunks]
        vecs = self.embedder.encode(texts)
        items, i = [], 0
        for source, sha, chunks in pending:
            items.append((source, sha, chunks, vecs[i:i + len(chunks)]))
            i += len(chunks)
        return self.index.replace_sources(items, save=False)
