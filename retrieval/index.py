"""The index: FAISS (inner product on unit vectors, id-mapped) + a SQLite chunk store beside it.

Contract:
- Files in the index dir: ``chunks.sqlite`` (the source of truth: chunk texts, metadata,
  embeddings, file hashes, a generation counter) and ``index.faiss`` + ``index.gen`` (a
  derived cache of the vectors, tagged with the generation it reflects).
- Every change (a batch of files added, a source deleted) is one SQLite transaction that
  also bumps the generation; the FAISS file is then written to a temp file and renamed.
  A crash at any point leaves the previous state readable: on open, a FAISS file whose
  generation or size disagrees with SQLite is rebuilt from the stored embeddings.
- Thread-safe: one lock around every read and write.
- Scores are cosine similarities in [-1, 1] (vectors are unit-norm).
- Beside the vectors, ``chunks_fts`` (SQLite FTS5, porter stemming) indexes each chunk's page-name
  words, heading path and text for BM25 (`lexical_search`); it changes in the same transactions as
  the chunks, and an index from before it existed is filled in on open.
- Index kinds (both exhaustive, exact ranking up to storage precision): ``flat-fp16`` (the
  default: vectors stored as float16 in a `faiss.IndexScalarQuantizer`, half the memory
  traffic, p50 ≈ 6 ms at 100k × 384 on 2 cores against ≈ 11–15 ms for float32) and ``flat``
  (`faiss.IndexFlatIP`, float32). SQLite keeps float32 embeddings, so switching kinds rebuilds.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from retrieval.chunking import Chunk

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    source TEXT PRIMARY KEY, sha256 TEXT NOT NULL, n_chunks INTEGER NOT NULL, added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, heading TEXT NOT NULL,
    text TEXT NOT NULL, position INTEGER NOT NULL, embedding BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(path, heading, text, tokenize='porter unicode61');
"""

#: BM25 column weights of chunks_fts (path words, heading path, text): a page or heading that names
#: the query's words counts more than a mention in the text
FTS_WEIGHTS = (2.0, 3.0, 1.0)
#: words too common to rank by (dropped from lexical queries: they cost time, not precision)
STOPWORDS = frozenset("""a an and are as at be by can do does for from get how i if in into is it its me my of on or
so that the their there these this to was what when where which who why will with you your""".split())


def path_words(source: str) -> str:
    """The words of a source's last two path parts, extensions dropped: what the lexical index
    knows of the page's name.

    >>> path_words("/usr/share/doc/python3.11/html/_sources/library/os.path.rst.txt")
    'library os path'
    """
    parts = source.replace("\\", "/").split("/")[-2:]
    parts[-1] = re.sub(r"(\.(rst|txt|md|markdown|html?))+$", "", parts[-1])
    return " ".join(re.split(r"[\W_]+", " ".join(parts))).strip()


def query_words(text: str) -> list[str]:
    """The distinct lower-case words of `text`, stopwords dropped, in order.

    >>> query_words("How do I copy a list? A LIST!")
    ['copy', 'list']
    """
    return list(dict.fromkeys(w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS))


def fts_query(words: list[str]) -> str:
    """An FTS5 MATCH expression ORing `words`, each quoted ("" for none).

    >>> fts_query(["copy", "list"])
    '"copy" OR "list"'
    """
    return " OR ".join(f'"{w}"' for w in words)


def document_id(source: str) -> str:
    """The opaque id of the document stored under `source` (stable: a digest of the name), so a
    client deletes by id without putting a raw name into a URL.

    >>> document_id("notes/gen.md")
    'doc_2e6aa7d6ce4390578dac29e7'
    """
    return "doc_" + hashlib.sha256(source.encode("utf-8")).hexdigest()[:24]


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


class IndexMismatchError(ValueError):
    """The index on disk was built with another embedder or dimension."""


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


class ChunkIndex:
    """Open (or create) the index in `directory`.

    Args:
        directory: the index dir (created if missing).
        dim: embedding dimension (384 for MiniLM).
        embedder: the embedder's name, recorded so a mismatched index is refused.
        kind: "flat-fp16" (default) or "flat"; see the module docstring.

    Raises:
        IndexMismatchError: the dir holds an index of another embedder or dimension.
    """

    KINDS = ("flat-fp16", "flat")

    def __init__(self, directory: str | Path, dim: int, embedder: str = "", kind: str = "flat-fp16"):
        if kind not in self.KINDS:
            raise ValueError(f"index kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        self.dir = Path(directory).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self._lock = threading.RLock()
        self.db = sqlite3.connect(self.dir / "chunks.sqlite", check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if "dim" in meta and (int(meta["dim"]) != dim or (embedder and meta.get("embedder") not in ("", embedder))):
            raise IndexMismatchError(
                f"index at {self.dir} was built with embedder {meta.get('embedder')!r} (dim {meta['dim']}), "
                f"not {embedder!r} (dim {dim}); use another --index dir"
            )
        if "dim" not in meta:
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                [("dim", str(dim)), ("embedder", embedder), ("generation", "0")])
        self.faiss = self._load_faiss()
        self._sync_fts()
        # lexical queries read through their own connection and lock, so they run while FAISS searches
        self._lex_db = sqlite3.connect(self.dir / "chunks.sqlite", check_same_thread=False)
        self._lex_lock = threading.Lock()

    @classmethod
    def open_existing(cls, directory: str | Path) -> "ChunkIndex":
        """Open an index that exists, with the dimension and embedder recorded in it (for readers
        that need no embedder, e.g. the NTR corpus).

        Raises:
            FileNotFoundError: there is no index in `directory`.
        """
        db = Path(directory).expanduser() / "chunks.sqlite"
        if not db.is_file():
            raise FileNotFoundError(f"no index at {db.parent}: build one with `thinkgate ingest PATH`")
        con = sqlite3.connect(db)
        try:
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        finally:
            con.close()
        return cls(directory, int(meta.get("dim", 384)), meta.get("embedder", ""))

    # ------------------------------------------------------------------ persistence
    @property
    def generation(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def _count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def _sync_fts(self) -> None:
        """Rebuild the lexical index from the chunks when it is out of step (an index written before
        it existed, or a crash between the two is impossible: both change in one transaction)."""
        n_fts = int(self.db.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0])
        if n_fts == self._count():
            return
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("DELETE FROM chunks_fts")
                rows = self.db.execute("SELECT id, source, heading, text FROM chunks").fetchall()
                self.db.executemany("INSERT INTO chunks_fts (rowid, path, heading, text) VALUES (?,?,?,?)",
                                    [(i, path_words(src), h, t) for i, src, h, t in rows])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def _load_faiss(self):
        path, gen_path = self.dir / "index.faiss", self.dir / "index.gen"
        if path.exists() and gen_path.exists():
            try:
                meta = json.loads(gen_path.read_text())
                idx = faiss.read_index(str(path))
                if (meta["generation"] == self.generation and meta.get("kind", "flat") == self.kind
                        and idx.ntotal == self._count() and idx.d == self.dim):
                    return idx
            except Exception:  # unreadable or torn cache file: rebuild below
                pass
        return self._rebuild()

    def _new_index(self):
        if self.kind == "flat":
            base = faiss.IndexFlatIP(self.dim)
        else:
            base = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        return faiss.IndexIDMap2(base)

    def _rebuild(self):
        idx = self._new_index()
        rows = self.db.execute("SELECT id, embedding FROM chunks ORDER BY id")
        while batch := rows.fetchmany(8192):
            ids = np.array([r[0] for r in batch], dtype=np.int64)
            vecs = np.frombuffer(b"".join(r[1] for r in batch), dtype=np.float32).reshape(len(batch), self.dim)
            idx.add_with_ids(vecs, ids)
        self.faiss = idx
        self._save_faiss()
        return idx

    def _save_faiss(self) -> None:
        gen = self.generation
        _atomic_write(self.dir / "index.faiss", lambda p: faiss.write_index(self.faiss, p))
        _atomic_write(self.dir / "index.gen",
                      lambda p: Path(p).write_text(json.dumps({"generation": gen, "kind": self.kind})))

    # ------------------------------------------------------------------ writes
    def file_hash(self, source: str) -> str | None:
        """The sha256 recorded for `source`, or None when it is not indexed."""
        with self._lock:
            row = self.db.execute("SELECT sha256 FROM files WHERE source=?", (source,)).fetchone()
        return row[0] if row else None

    def replace_sources(self, items: list[tuple[str, str, list[Chunk], np.ndarray]], save: bool = True) -> int:
        """Add or replace whole sources in one transaction.

        Args:
            items: (source, sha256, chunks, vectors [len(chunks), dim] float32 unit rows).
            save: write the FAISS file now; a bulk ingest passes False and calls `save` once at
                the end (a crash before then costs a rebuild from SQLite on the next open).

        Returns:
            Number of chunks added.
        """
        if not items:
            return 0
        with self._lock:
            removed: list[int] = []
            added_ids: list[int] = []
            added_vecs: list[np.ndarray] = []
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for source, sha, chunks, vecs in items:
                    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
                    if vecs.shape != (len(chunks), self.dim):
                        raise ValueError(f"vectors for {source} have shape {vecs.shape}, expected ({len(chunks)}, {self.dim})")
                    old = [r[0] for r in cur.execute("SELECT id FROM chunks WHERE source=?", (source,))]
                    removed += old
                    cur.executemany("DELETE FROM chunks_fts WHERE rowid=?", [(i,) for i in old])
                    cur.execute("DELETE FROM chunks WHERE source=?", (source,))
                    words = path_words(source)
                    for c, v in zip(chunks, vecs):
                        cur.execute(
                            "INSERT INTO chunks (source, heading, text, position, embedding) VALUES (?,?,?,?,?)",
                            (source, c.heading, c.text, c.position, v.tobytes()),
                        )
                        added_ids.append(cur.lastrowid)
                        cur.execute("INSERT INTO chunks_fts (rowid, path, heading, text) VALUES (?,?,?,?)",
                                    (cur.lastrowid, words, c.heading, c.text))
                    added_vecs.append(vecs)
                    cur.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?)", (source, sha, len(chunks), time.time()))
                cur.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            if removed:
                self.faiss.remove_ids(np.array(removed, dtype=np.int64))
            if added_ids:
                self.faiss.add_with_ids(np.concatenate(added_vecs), np.array(added_ids, dtype=np.int64))
            if save:
                self._save_faiss()
            return len(added_ids)

    def save(self) -> None:
        """Write the FAISS file (atomic) for the current generation."""
        with self._lock:
            self._save_faiss()

    def delete_source(self, source: str) -> int:
        """Remove every chunk of `source`; returns how many were removed (0 if unknown)."""
        with self._lock:
            ids = [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE source=?", (source,))]
            known = self.db.execute("SELECT 1 FROM files WHERE source=?", (source,)).fetchone()
            if not ids and not known:
                return 0
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("DELETE FROM chunks_fts WHERE rowid=?", [(i,) for i in ids])
            self.db.execute("DELETE FROM chunks WHERE source=?", (source,))
            self.db.execute("DELETE FROM files WHERE source=?", (source,))
            self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
            self.db.execute("COMMIT")
            if ids:
                self.faiss.remove_ids(np.array(ids, dtype=np.int64))
            self._save_faiss()
            return len(ids)

    # ------------------------------------------------------------------ reads
    def search(self, vector: np.ndarray, k: int = 5) -> list[Passage]:
        """Top-`k` passages for one unit query vector [dim], best first."""
        with self._lock:
            if self.faiss.ntotal == 0 or k <= 0:
                return []
            scores, ids = self.faiss.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), k)
            hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
            rows = {r[0]: r for r in self.db.execute(
                f"SELECT id, source, heading, text FROM chunks WHERE id IN ({','.join('?' * len(hits))})",
                [i for i, _ in hits])}
        return [Passage(i, rows[i][1], rows[i][2], rows[i][3], s) for i, s in hits if i in rows]

    def _df_fresh(self) -> None:
        db = self._lex_db
        gen = int(db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
        if getattr(self, "_df_gen", None) != gen:
            self._df_cache, self._df_gen = {}, gen
            self._df_n = int(db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def _df(self, word: str) -> int:
        """Chunks holding `word` (after FTS5's stemming), cached until the index changes."""
        self._df_fresh()
        if word not in self._df_cache:
            self._df_cache[word] = int(self._lex_db.execute(
                "SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (f'"{word}"',)).fetchone()[0])
        return self._df_cache[word]

    def lexical_search(self, query: str, k: int = 50, max_postings: int | None = 3000) -> list[tuple[int, float]]:
        """Top-`k` chunk ids for `query` by BM25 (SQLite FTS5; Robertson & Zaragoza 2009), best
        first, as (id, bm25) with bm25 the positive score (FTS5's rank negated), column weights
        `FTS_WEIGHTS`.

        Words held by more than `max_postings` chunks are left out of the query (None: none is):
        FTS5 scores every chunk that holds a query word, so a common word's posting list sets the
        latency (26 ms at 100k chunks with every word, 4 ms without those above 5,000 postings;
        the default 3,000 keeps a hybrid query at 100k chunks under 15 ms on 2 cores),
        while its inverse document frequency is low. When every word is that common, the rarest
        one is kept. No word left after stopwords → []."""
        words = query_words(query)
        if not words or k <= 0:
            return []
        with self._lex_lock:
            self._df_fresh()
            dfs = {w: self._df(w) for w in words}
        keep = [w for w in words if 0 < dfs[w] and (max_postings is None or dfs[w] <= max_postings)]
        if not keep:
            rare = min((w for w in words if dfs[w] > 0), key=dfs.get, default=None)
            keep = [rare] if rare else []
        if not keep:
            return []
        match = fts_query(keep)
        w = ", ".join(str(x) for x in FTS_WEIGHTS)
        with self._lex_lock:
            rows = self._lex_db.execute(f"SELECT rowid, bm25(chunks_fts, {w}) AS r FROM chunks_fts WHERE chunks_fts MATCH ? "
                                   "ORDER BY r LIMIT ?", (match, k)).fetchall()
        return [(int(i), -float(r)) for i, r in rows]

    def fetch(self, ids: list[int], vector: np.ndarray | None = None) -> dict[int, Passage]:
        """Passages of `ids` by id; with a unit query `vector` [dim], each `score` is its cosine
        similarity (from the stored float32 embedding), else 0."""
        if not ids:
            return {}
        with self._lock:
            rows = self.db.execute(f"SELECT id, source, heading, text, embedding FROM chunks WHERE id IN "
                                   f"({','.join('?' * len(ids))})", list(ids)).fetchall()
        out = {}
        q = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(-1)
        for i, src, head, text, emb in rows:
            score = float(np.frombuffer(emb, dtype=np.float32) @ q) if q is not None else 0.0
            out[int(i)] = Passage(int(i), src, head, text, score)
        return out

    def iter_chunks(self, batch: int = 1000):
        """Every stored chunk as a `Passage` (score 0), in id order, read `batch` rows at a time."""
        last = -1
        while True:
            with self._lock:
                rows = self.db.execute("SELECT id, source, heading, text FROM chunks WHERE id > ? ORDER BY id LIMIT ?",
                                       (last, batch)).fetchall()
            if not rows:
                return
            yield from (Passage(*r) for r in rows)
            last = rows[-1][0]

    def sources(self) -> list[dict]:
        """Indexed sources: [{"id", "source", "chunks", "sha256", "added"}] sorted by source
        (`id` = `document_id(source)`)."""
        with self._lock:
            rows = self.db.execute("SELECT source, n_chunks, sha256, added FROM files ORDER BY source").fetchall()
        return [{"id": document_id(s), "source": s, "chunks": n, "sha256": h, "added": a} for s, n, h, a in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self.faiss.ntotal)

    def close(self) -> None:
        with self._lock, self._lex_lock:
            self._lex_db.close()
            self.db.close()
