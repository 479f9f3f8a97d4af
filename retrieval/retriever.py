"""The retriever: embedder + chunker + index behind one object; ingest and search.

Contract:
- `Retriever.ingest(paths)` walks files and folders, skips unsupported files and files whose
  sha256 is unchanged, chunks and embeds the rest in batches across files (so the embedder
  runs at full batch size), and commits each batch in one transaction. Reading and chunking
  run one step ahead on a prefetch thread, overlapping the embedder.
- `Retriever.add_text(source, text)` indexes one document given as a string (the API's
  POST /v1/documents); a repeated source replaces the earlier one.
- `Retriever.search(query, k)` → `Passage`s, best first. `asearch` runs it off the event loop.
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
    """

    def __init__(self, index_dir: str | Path, embedder: Embedder | str | None = None, *,
                 overlap: int = 32, batch_chunks: int = 256):
        self.embedder = Embedder(embedder) if embedder is None or isinstance(embedder, str) else embedder
        # the chunker gets its own copy of the tokenizer: it runs on the prefetch thread while the
        # embedder tokenizes batches (a shared fast tokenizer raises "Already borrowed")
        self.chunker = Chunker(copy.deepcopy(self.embedder.tokenizer), self.embedder.max_tokens, overlap)
        self.index = ChunkIndex(index_dir, self.embedder.dim, self.embedder.name)
        self.batch_chunks = batch_chunks

    def __len__(self) -> int:
        return len(self.index)

    # ------------------------------------------------------------------ search
    def search(self, query: str, k: int = 5) -> list[Passage]:
        """Top-`k` passages for `query`.

        Raises:
            ValueError: empty query, or k not in 1..100.
        """
        if not query or not query.strip():
            raise ValueError("query is empty")
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be in 1..{MAX_K}, got {k}")
        return self.index.search(self.embedder.encode([query])[0], k)

    async def asearch(self, query: str, k: int = 5) -> list[Passage]:
        """`search` on a worker thread."""
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
