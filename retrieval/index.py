"""The vector index: a FAISS cache (inner product on unit vectors, id-mapped) over a chunk store.

Contract:
- The store (`retrieval.store`: SQLite in the index dir by default, PostgreSQL when a
  ``database_url`` is given) is the source of truth: chunk texts, metadata, float32 embeddings,
  file hashes and a generation counter. FAISS is a derived cache of the vectors, kept in memory
  and written to ``index.faiss`` + ``index.gen`` in the index dir (tagged with the generation it
  reflects, the store's id and the index kind); a torn or foreign cache file is rebuilt.
- The cache follows the store by its generation: every write made here is applied at once, and
  before a search the store's generation is read (at most every `refresh_s` seconds); when
  another process (an API replica, `thinkgate ingest`) has written, only the changes since the
  cache's generation are applied (`ChunkStore.changes_since`). So a document written through one
  replica is searchable through another within `refresh_s` plus the time to fetch its vectors.
- A crash at any point leaves the previous state readable: store writes are transactions, and a
  cache file behind the store catches up (or is rebuilt) on open.
- Thread-safe: one lock around the FAISS cache; the store serializes its own access.
- Scores are cosine similarities in [-1, 1] (vectors are unit-norm).
- Index kinds: ``flat-fp16`` (exhaustive: vectors stored as float16 in a
  `faiss.IndexScalarQuantizer`, half the memory traffic of ``flat``), ``flat``
  (`faiss.IndexFlatIP`, float32, exact), ``ivf-fp16`` (an inverted file, Sivic & Zisserman
  2003, as in Jégou et al. 2011: `faiss.IndexIVFScalarQuantizer` with nlist = √n k-means lists,
  trained on the stored vectors, searching the nearest nlist/4 lists, so ≈ 1/4 of the vectors)
  and ``auto`` (the default: ``flat-fp16`` below `IVF_MIN_CHUNKS` chunks, ``ivf-fp16`` from
  there). Measured at 100k real docs chunks on 2 cores: FAISS top-50 p50 ≈ 8 ms for flat-fp16
  against ≈ 2 ms for ivf-fp16, whose top 5 in hybrid search is the same as flat-fp16's
  (docs/results/bench-hybrid.txt; recall@5 on the four question sets unchanged,
  docs/results/retrieval-eval/latency-path.md). Random unit vectors, with no cluster structure,
  are its worst case: recall@5 0.49 against the exact ranking (`retrieval.bench`); text
  embeddings are far from that. An inverted file is retrained (the cache rebuilt from the store:
  ≈ 2 s at 100k) when the chunk count leaves [trained / 4, trained × 4], and ``auto`` goes back to
  flat-fp16 under `IVF_MIN_CHUNKS` / 2. The store keeps float32 embeddings, so switching kinds
  rebuilds.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from retrieval.store import ChunkStore, IndexMismatchError, SqliteChunkStore, document_id, iter_rows, open_store

__all__ = ["ChunkIndex", "IndexMismatchError", "Passage", "document_id"]


@dataclass
class Passage:
    """A retrieved chunk: `id` (stable chunk id), `source` (file path or given name),
    `heading`, `text`, `score` (cosine similarity)."""

    id: int
    source: str
    heading: str
    text: str
    score: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        write(str(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


#: ``auto`` uses an inverted file from this many chunks (flat-fp16 below: ≤ 4 ms per query there)
IVF_MIN_CHUNKS = 50_000
#: the fewest vectors an inverted file is trained on (k-means: 39 points per list)
IVF_MIN_TRAIN = 39
#: an inverted file searches 1/IVF_PROBE_DIVISOR of its lists
IVF_PROBE_DIVISOR = 4
#: an inverted file is retrained once the chunk count leaves [trained / this, trained × this]
IVF_RETRAIN_FACTOR = 4


def ivf_lists(n: int) -> int:
    """Inverted lists for `n` vectors: round(√n), at most n/39 (k-means wants ≥ 39 points per
    centroid), at least 1. (FAISS's guide says 4√n–16√n for millions; fewer lists train faster.)

    >>> ivf_lists(100_000), ivf_lists(1000), ivf_lists(0)
    (316, 25, 1)
    """
    return max(1, min(round(n ** 0.5), n // 39))


def ivf_probes(nlist: int) -> int:
    """Lists an inverted file of `nlist` lists searches: ⌈nlist / IVF_PROBE_DIVISOR⌉.

    >>> ivf_probes(316), ivf_probes(1)
    (79, 1)
    """
    return max(1, -(-nlist // IVF_PROBE_DIVISOR))


class ChunkIndex:
    """Open (or create) the index in `directory`.

    Args:
        directory: the index dir (created if missing): the SQLite store and the FAISS cache file
            (with a `database_url`, only the cache file: the store is in PostgreSQL).
        dim: embedding dimension (384 for MiniLM).
        embedder: the embedder's name, recorded so a mismatched index is refused.
        kind: "auto" (default), "flat-fp16", "flat" or "ivf-fp16"; see the module docstring.
        database_url: ``postgresql://…`` to keep the store in PostgreSQL (None: SQLite).
        refresh_s: how often, at most, a search checks the store for writes made elsewhere
            (seconds; 0: before every search).

    Raises:
        IndexMismatchError: the store holds an index of another embedder or dimension.
        ValueError: an unknown kind or database URL scheme.
    """

    KINDS = ("auto", "flat-fp16", "flat", "ivf-fp16")

    def __init__(self, directory: str | Path, dim: int, embedder: str = "", kind: str = "auto",
                 database_url: str | None = None, refresh_s: float = 1.0):
        if kind not in self.KINDS:
            raise ValueError(f"index kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        self.dir = Path(directory).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.refresh_s = refresh_s
        self._lock = threading.RLock()
        self.store: ChunkStore = open_store(database_url, self.dir / "chunks.sqlite", dim, embedder)
        self._gen = -1
        self._checked = 0.0
        self._trained_on = 0  # vectors the inverted file was trained on (0: a flat index)
        self.faiss = self._load_faiss()

    @classmethod
    def open_existing(cls, directory: str | Path) -> "ChunkIndex":
        """Open a SQLite index that exists, with the dimension and embedder recorded in it (for
        readers that need no embedder, e.g. the NTR corpus).

        Raises:
            FileNotFoundError: there is no index in `directory`.
        """
        db = Path(directory).expanduser() / "chunks.sqlite"
        if not db.is_file():
            raise FileNotFoundError(f"no index at {db.parent}: build one with `thinkgate ingest PATH`")
        meta = SqliteChunkStore.read_meta(db)
        return cls(directory, int(meta.get("dim", 384)), meta.get("embedder", ""))

    # ------------------------------------------------------------------ the cache

    def _structure(self, n: int) -> str:
        """The index kind to build for `n` chunks (an inverted file needs `IVF_MIN_TRAIN` vectors to
        train on: below that, flat-fp16 stands in)."""
        if self.kind == "auto":
            return "ivf-fp16" if n >= IVF_MIN_CHUNKS else "flat-fp16"
        if self.kind == "ivf-fp16" and n < IVF_MIN_TRAIN:
            return "flat-fp16"
        return self.kind

    def _fits(self, built: str, trained_on: int, n: int) -> bool:
        """Whether a cache of kind `built` (an inverted file trained on `trained_on` vectors) still
        suits `n` chunks; see the module docstring."""
        if built == "ivf-fp16":
            if self.kind not in ("auto", "ivf-fp16") or (self.kind == "auto" and n < IVF_MIN_CHUNKS // 2):
                return False
            return trained_on // IVF_RETRAIN_FACTOR <= n <= trained_on * IVF_RETRAIN_FACTOR
        return built == self._structure(n)

    def _new_index(self, kind: str, train: np.ndarray | None = None):
        """An empty FAISS index of `kind`; an inverted file is trained on `train` [n ≥ 39, dim]."""
        if kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if kind == "flat-fp16":
            return faiss.IndexIDMap2(faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16,
                                                                faiss.METRIC_INNER_PRODUCT))
        n = len(train)
        nlist = ivf_lists(n)
        idx = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                            faiss.METRIC_INNER_PRODUCT)
        idx.train(train)
        idx.nprobe = ivf_probes(nlist)
        return idx

    @property
    def structure(self) -> str:
        """The kind of the FAISS cache in use: "flat-fp16", "flat" or "ivf-fp16"."""
        return "ivf-fp16" if isinstance(self.faiss, faiss.IndexIVF) else self._flat_kind(self.faiss)

    @staticmethod
    def _flat_kind(idx) -> str:
        return "flat" if isinstance(faiss.downcast_index(idx.index), faiss.IndexFlat) else "flat-fp16"

    def _load_faiss(self):
        """The cache file when it belongs to this store and kind and is not ahead of it, brought up
        to date; otherwise a rebuild from the store."""
        path, gen_path = self.dir / "index.faiss", self.dir / "index.gen"
        if path.exists() and gen_path.exists():
            try:
                meta = json.loads(gen_path.read_text())
                idx = faiss.read_index(str(path))
                built, trained = meta.get("kind", "flat"), int(meta.get("trained_on", 0))
                if (self._fits(built, trained, self.store.count())
                        and meta.get("store", self.store.store_id) == self.store.store_id
                        and idx.d == self.dim and 0 <= meta["generation"] <= self.store.generation()):
                    self.faiss, self._gen, self._trained_on = idx, int(meta["generation"]), trained
                    if isinstance(idx, faiss.IndexIVF):
                        idx.nprobe = ivf_probes(idx.nlist)
                    if self._catch_up() and self.faiss.ntotal == self.store.count():
                        if self._gen != meta["generation"]:
                            self._save_faiss()
                        return self.faiss
            except Exception:  # unreadable or torn cache file: rebuild below
                pass
        return self._rebuild()

    def _rebuild(self):
        kind = self._structure(self.store.count())
        if kind == "ivf-fp16":  # trained on every stored vector of one snapshot, then filled
            parts: list[tuple[np.ndarray, np.ndarray]] = []
            self._gen = self.store.snapshot(lambda ids, vecs: parts.append((ids, vecs)))  # fresh arrays per batch
            ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
            vecs = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, self.dim), dtype=np.float32)
            kind = self._structure(len(ids))  # the snapshot decides: a writer may have deleted since the count
            idx = self._new_index(kind, vecs)
            self._trained_on = len(ids) if kind == "ivf-fp16" else 0
            if len(ids):
                idx.add_with_ids(vecs, ids)
        else:
            idx = self._new_index(kind)
            self._trained_on = 0
            self._gen = self.store.snapshot(lambda ids, vecs: idx.add_with_ids(vecs, ids))
        self.faiss = idx
        self._checked = time.monotonic()
        self._save_faiss()
        return idx

    def _catch_up(self) -> bool:
        """Apply the store's changes since the cache's generation; False when the store cannot say
        (tombstones not kept that far back: the caller rebuilds)."""
        ch = self.store.changes_since(self._gen)
        if ch is None:
            return False
        if ch.generation != self._gen:
            stale = list(ch.removed) + ch.added_ids.tolist()
            if stale:
                self.faiss.remove_ids(np.array(stale, dtype=np.int64))
            if len(ch.added_ids):
                self.faiss.add_with_ids(ch.added_vecs, ch.added_ids)
            self._gen = ch.generation
        self._checked = time.monotonic()
        return True

    def refresh(self, force: bool = False) -> bool:
        """Bring the cache up to the store's generation (at most every `refresh_s` seconds unless
        `force`); True when it changed."""
        with self._lock:
            if not force and time.monotonic() - self._checked < self.refresh_s:
                return False
            gen = self.store.generation()
            if gen == self._gen:
                self._checked = time.monotonic()
                return False
            if (gen < self._gen or not self._catch_up()  # the store was reset, or too far behind
                    or not self._fits(self.structure, self._trained_on, int(self.faiss.ntotal))):
                self._rebuild()
            return True

    def _save_faiss(self) -> None:
        meta = {"generation": self._gen, "kind": self.structure, "trained_on": self._trained_on,
                "store": self.store.store_id}
        _atomic_write(self.dir / "index.faiss", lambda p: faiss.write_index(self.faiss, p))
        _atomic_write(self.dir / "index.gen", lambda p: Path(p).write_text(json.dumps(meta)))

    # ------------------------------------------------------------------ writes
    def file_hash(self, source: str) -> str | None:
        """The sha256 recorded for `source`, or None when it is not indexed."""
        return self.store.file_hash(source)

    def replace_sources(self, items: list[tuple[str, str, list, np.ndarray]], save: bool = True) -> int:
        """Add or replace whole sources in one store transaction.

        Args:
            items: (source, sha256, chunks, vectors [len(chunks), dim] float32 unit rows).
            save: write the FAISS cache file now; a bulk ingest passes False and calls `save` once
                at the end (a crash before then costs a catch-up or rebuild on the next open).

        Returns:
            Number of chunks added.

        Raises:
            ValueError: a vector block of the wrong shape (nothing is written).
        """
        if not items:
            return 0
        n = self.store.replace_sources(items)
        with self._lock:
            self.refresh(force=True)
            if save:
                self._save_faiss()
        return n

    def save(self) -> None:
        """Write the FAISS cache file (atomic) for the cache's generation."""
        with self._lock:
            self._save_faiss()

    def delete_source(self, source: str) -> int:
        """Remove every chunk of `source`; returns how many were removed (0 if unknown)."""
        n = self.store.delete_source(source)
        with self._lock:
            if self.refresh(force=True):
                self._save_faiss()
        return n

    # ------------------------------------------------------------------ reads
    def search(self, vector: np.ndarray, k: int = 5) -> list[Passage]:
        """Top-`k` passages for one unit query vector [dim], best first."""
        with self._lock:
            self.refresh()
            if self.faiss.ntotal == 0 or k <= 0:
                return []
            scores, ids = self.faiss.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), k)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        rows = {r[0]: r for r in self.store.fetch([i for i, _ in hits])}
        return [Passage(i, rows[i][1], rows[i][2], rows[i][3], s) for i, s in hits if i in rows]

    def lexical_search(self, query: str, k: int = 50, max_postings: int | None = 3000) -> list[tuple[int, float]]:
        """Top-`k` chunk ids for `query` by the store's full-text ranking, best first, as (id, score)
        with score > 0 (SQLite: BM25 by FTS5, Robertson & Zaragoza 2009, column weights
        `FTS_WEIGHTS`; PostgreSQL: ``ts_rank``, see `retrieval.pgstore`).

        Words held by more than `max_postings` chunks are left out of the query (None: none is):
        the full-text engine scores every chunk that holds a query word, so a common word's posting
        list sets the latency (26 ms at 100k chunks with every word, 4 ms without those above 5,000
        postings; the default 3,000 keeps a hybrid query at 100k chunks under 15 ms on 2 cores),
        while its inverse document frequency is low. When every word is that common, the rarest
        one is kept. No word left after stopwords → []."""
        return self.store.lexical_search(query, k, max_postings)

    def fetch(self, ids: list[int], vector: np.ndarray | None = None) -> dict[int, Passage]:
        """Passages of `ids` by id; with a unit query `vector` [dim], each `score` is its cosine
        similarity (from the stored float32 embedding), else 0."""
        out = {}
        q = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(-1)
        for i, src, head, text, emb in self.store.fetch(list(ids)):
            score = float(np.frombuffer(emb, dtype=np.float32) @ q) if q is not None else 0.0
            out[int(i)] = Passage(int(i), src, head, text, score)
        return out

    def iter_chunks(self, batch: int = 1000):
        """Every stored chunk as a `Passage` (score 0), in id order, read `batch` rows at a time."""
        yield from (Passage(*r) for r in iter_rows(self.store, batch))

    def sources(self) -> list[dict]:
        """Indexed sources: [{"id", "source", "chunks", "sha256", "added"}] sorted by source
        (`id` = `document_id(source)`)."""
        return [{"id": document_id(s), "source": s, "chunks": n, "sha256": h, "added": a}
                for s, n, h, a in self.store.sources()]

    def status(self) -> dict:
        """Where the store is and how far this cache follows it: {"store": "sqlite"|"postgresql",
        "location" (path, or URL without password), "generation" (the store's), "cache_generation"
        (this replica's FAISS cache), "chunks" (in the cache), "faiss_kind" (`structure`: the cache's
        kind now, which "auto" chooses by size)} — after a refresh."""
        with self._lock:
            self.refresh()
            return {"store": self.store.kind,
                    "location": self.store.location, "generation": self.store.generation(),
                    "cache_generation": self._gen, "chunks": int(self.faiss.ntotal), "faiss_kind": self.structure}

    def __len__(self) -> int:
        with self._lock:
            self.refresh()
            return int(self.faiss.ntotal)

    def close(self) -> None:
        with self._lock:
            self.store.close()
