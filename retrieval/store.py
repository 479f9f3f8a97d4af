"""The chunk store: the source of truth behind the vector index, in SQLite (embedded, the default) or
PostgreSQL (`retrieval.pgstore`, shared by API replicas). One interface, two implementations.

Contract (both implementations):
- A store holds chunks (id, source, heading, text, position, float32 embedding), one row per
  indexed file (source, sha256, chunk count, time added), and a **generation counter**: every
  change (a batch of sources replaced, a source deleted) is one transaction that also bumps it.
- Chunk ids are assigned by the store, increase, and are never reused. Each chunk row records the
  generation that wrote it; each removed chunk id leaves a tombstone with the generation that
  removed it. `changes_since(g)` returns, as of one consistent snapshot, the current generation,
  the ids removed after `g` and the (ids, vectors) added after `g`, so a replica's FAISS cache
  catches up without reading the whole store (None: `g` predates the tombstones, rebuild instead).
- Writers are serialized (SQLite ``BEGIN IMMEDIATE``; PostgreSQL a transaction-level advisory
  lock), so generations commit in order and two writers of one source cannot interleave.
- `lexical_search` ranks chunks for a query by the store's full-text index (SQLite FTS5 BM25;
  PostgreSQL ``ts_rank`` over a weighted ``tsvector``): page-name words, heading path and text.
- Opening a store built with another embedder or dimension raises `IndexMismatchError`.
"""
from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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


def keep_words(words: list[str], df: Callable[[str], int], max_postings: int | None) -> list[str]:
    """The words a lexical query keeps: those some chunk holds and at most `max_postings` chunks
    hold (None: no cap); when every held word is that common, the rarest one alone.

    >>> keep_words(["items", "deepcopy", "zzz"], {"items": 9, "deepcopy": 1, "zzz": 0}.get, 5)
    ['deepcopy']
    >>> keep_words(["items"], {"items": 9}.get, 5)
    ['items']
    """
    dfs = {w: df(w) for w in words}
    keep = [w for w in words if 0 < dfs[w] and (max_postings is None or dfs[w] <= max_postings)]
    if not keep:
        rare = min((w for w in words if dfs[w] > 0), key=dfs.get, default=None)
        keep = [rare] if rare else []
    return keep


class IndexMismatchError(ValueError):
    """The store was built with another embedder or dimension."""


@dataclass
class Changes:
    """What changed in a store after a generation, as of one snapshot.

    Attributes:
        generation: the store's generation at the snapshot.
        removed: chunk ids removed after the asked generation (some may never have been seen).
        added_ids: int64 [n] ids of chunks written after it (still present at the snapshot).
        added_vecs: float32 [n, dim] their unit embeddings.
    """

    generation: int
    removed: list[int] = field(default_factory=list)
    added_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    added_vecs: np.ndarray | None = None


#: one stored chunk: (id, source, heading, text, embedding float32 bytes)
ChunkRow = tuple[int, str, str, str, bytes]
#: one item of `ChunkStore.replace_sources`: (source, sha256, chunks, vectors [len(chunks), dim])
SourceItem = tuple[str, str, list, np.ndarray]


class ChunkStore(ABC):
    """The store interface (see the module docstring). `dim`, `embedder` and `store_id` (a uuid
    made when the store was created; tags a replica's FAISS cache file) are set on open."""

    kind: str  # "sqlite" or "postgresql"
    dim: int
    embedder: str
    store_id: str
    location: str  # where it lives, for messages (a path or the URL without its password)

    def _check_vectors(self, items: list[SourceItem]) -> list[tuple[str, str, list, np.ndarray]]:
        out = []
        for source, sha, chunks, vecs in items:
            vecs = np.ascontiguousarray(vecs, dtype=np.float32)
            if vecs.shape != (len(chunks), self.dim):
                raise ValueError(f"vectors for {source} have shape {vecs.shape}, expected ({len(chunks)}, {self.dim})")
            out.append((source, sha, chunks, vecs))
        return out

    def _mismatch(self, dim: int, embedder: str) -> IndexMismatchError:
        return IndexMismatchError(
            f"index at {self.location} was built with embedder {self.embedder!r} (dim {self.dim}), "
            f"not {embedder!r} (dim {dim}); use another index")

    @abstractmethod
    def generation(self) -> int:
        """The store's generation counter (0 for an empty new store)."""

    @abstractmethod
    def count(self) -> int:
        """Number of stored chunks."""

    @abstractmethod
    def file_hash(self, source: str) -> str | None:
        """The sha256 recorded for `source`, or None when it is not stored."""

    @abstractmethod
    def replace_sources(self, items: list[SourceItem]) -> int:
        """Add or replace whole sources in one transaction; returns the chunks added.

        Raises:
            ValueError: a vector block's shape is not (len(chunks), dim); nothing is written.
        """

    @abstractmethod
    def delete_source(self, source: str) -> int:
        """Remove every chunk of `source` and its file row; returns chunks removed (0 if unknown)."""

    @abstractmethod
    def changes_since(self, generation: int) -> Changes | None:
        """See the module docstring; None when tombstones from `generation` on are not kept."""

    @abstractmethod
    def snapshot(self, on_batch: Callable[[np.ndarray, np.ndarray], None], batch: int = 8192) -> int:
        """Call `on_batch(ids int64 [n], vecs float32 [n, dim])` for every stored chunk in id
        order, all from one snapshot; returns that snapshot's generation."""

    @abstractmethod
    def fetch(self, ids: list[int]) -> list[ChunkRow]:
        """The rows of `ids` that exist (any order)."""

    @abstractmethod
    def lexical_search(self, query: str, k: int, max_postings: int | None) -> list[tuple[int, float]]:
        """Top-`k` (chunk id, score > 0) for `query`, best first (see `keep_words` for the words)."""

    @abstractmethod
    def chunks_after(self, last_id: int, limit: int) -> list[tuple[int, str, str, str]]:
        """Up to `limit` (id, source, heading, text) with id > `last_id`, in id order."""

    @abstractmethod
    def source_chunks(self, source: str) -> list[tuple[str, str, int, bytes]]:
        """(heading, text, position, float32 embedding bytes) of every chunk of `source`, by position."""

    @abstractmethod
    def sources(self) -> list[tuple[str, int, str, float]]:
        """(source, chunks, sha256, added unix time) of every stored file, sorted by source."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    source TEXT PRIMARY KEY, sha256 TEXT NOT NULL, n_chunks INTEGER NOT NULL, added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, heading TEXT NOT NULL,
    text TEXT NOT NULL, position INTEGER NOT NULL, embedding BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(path, heading, text, tokenize='porter unicode61');
CREATE TABLE IF NOT EXISTS tombstones (id INTEGER NOT NULL, generation INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tombstones_generation ON tombstones(generation);
"""


class SqliteChunkStore(ChunkStore):
    """The embedded store: one SQLite file (WAL), FTS5 beside the chunks.

    Args:
        path: the database file (created with its folder if missing).
        dim: embedding dimension; embedder: the embedder's name (recorded on creation).

    Raises:
        IndexMismatchError: the file holds a store of another embedder or dimension.
    """

    kind = "sqlite"

    def __init__(self, path: str | Path, dim: int, embedder: str = ""):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.location = str(self.path.parent)
        self._lock = threading.RLock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SQLITE_SCHEMA)
        self._migrate()
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if "dim" in meta:
            self.dim, self.embedder = int(meta["dim"]), meta.get("embedder", "")
            if self.dim != dim or (embedder and self.embedder not in ("", embedder)):
                raise self._mismatch(dim, embedder)
        else:
            meta = {"dim": str(dim), "embedder": embedder, "generation": "0", "tombstones_from": "0"}
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(meta.items()))
            self.dim, self.embedder = dim, embedder
        if "store_id" not in meta:
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (uuid.uuid4().hex,))
        self.store_id = self.db.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()[0]
        self._sync_fts()
        # lexical queries read through their own connection and lock, so they run while FAISS searches
        self._lex_db = sqlite3.connect(self.path, check_same_thread=False)
        self._lex_lock = threading.Lock()
        self._df_cache: dict[str, int] = {}
        self._df_gen = -1

    @staticmethod
    def read_meta(path: str | Path) -> dict[str, str]:
        """The meta table of an existing store file (dim, embedder, …).

        Raises:
            FileNotFoundError: no such file.
        """
        if not Path(path).is_file():
            raise FileNotFoundError(path)
        con = sqlite3.connect(path)
        try:
            return dict(con.execute("SELECT key, value FROM meta").fetchall())
        finally:
            con.close()

    def _migrate(self) -> None:
        """Stores from before generations were tracked per chunk get the column; their tombstones
        start now (`tombstones_from`), so an older cache is rebuilt rather than patched."""
        cols = [r[1] for r in self.db.execute("PRAGMA table_info(chunks)")]
        if "generation" not in cols:
            with self._lock:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("ALTER TABLE chunks ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")
                self.db.execute("INSERT OR REPLACE INTO meta SELECT 'tombstones_from', "
                                "COALESCE((SELECT value FROM meta WHERE key='generation'), '0')")
                self.db.execute("COMMIT")
        self.db.execute("CREATE INDEX IF NOT EXISTS chunks_generation ON chunks(generation)")

    def _sync_fts(self) -> None:
        """Rebuild the lexical index from the chunks when it is out of step (a store written before
        it existed; a crash between the two is impossible: both change in one transaction)."""
        if self.db.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0] == self.count():
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

    def generation(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def count(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def file_hash(self, source: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT sha256 FROM files WHERE source=?", (source,)).fetchone()
        return row[0] if row else None

    def _write(self, body: Callable[[sqlite3.Cursor, int], int]) -> int:
        """Run `body(cursor, new generation)` in one IMMEDIATE transaction that bumps the generation."""
        with self._lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
                gen = int(cur.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
                out = body(cur, gen)
                cur.execute("COMMIT")
                return out
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def _remove(self, cur: sqlite3.Cursor, source: str, gen: int) -> int:
        old = [r[0] for r in cur.execute("SELECT id FROM chunks WHERE source=?", (source,))]
        cur.executemany("DELETE FROM chunks_fts WHERE rowid=?", [(i,) for i in old])
        cur.executemany("INSERT INTO tombstones VALUES (?, ?)", [(i, gen) for i in old])
        cur.execute("DELETE FROM chunks WHERE source=?", (source,))
        return len(old)

    def replace_sources(self, items: list[SourceItem]) -> int:
        items = self._check_vectors(items)
        if not items:
            return 0

        def body(cur: sqlite3.Cursor, gen: int) -> int:
            added = 0
            for source, sha, chunks, vecs in items:
                self._remove(cur, source, gen)
                words = path_words(source)
                for c, v in zip(chunks, vecs):
                    cur.execute("INSERT INTO chunks (source, heading, text, position, embedding, generation) "
                                "VALUES (?,?,?,?,?,?)", (source, c.heading, c.text, c.position, v.tobytes(), gen))
                    cur.execute("INSERT INTO chunks_fts (rowid, path, heading, text) VALUES (?,?,?,?)",
                                (cur.lastrowid, words, c.heading, c.text))
                    added += 1
                cur.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?)", (source, sha, len(chunks), time.time()))
            return added

        return self._write(body)

    def delete_source(self, source: str) -> int:
        with self._lock:
            if not self.db.execute("SELECT 1 FROM chunks WHERE source=? UNION SELECT 1 FROM files WHERE source=?",
                                   (source, source)).fetchone():
                return 0

            def body(cur: sqlite3.Cursor, gen: int) -> int:
                n = self._remove(cur, source, gen)
                cur.execute("DELETE FROM files WHERE source=?", (source,))
                return n

            return self._write(body)

    def changes_since(self, generation: int) -> Changes | None:
        with self._lock:
            self.db.execute("BEGIN")  # one read snapshot (WAL)
            try:
                meta = dict(self.db.execute(
                    "SELECT key, value FROM meta WHERE key IN ('generation', 'tombstones_from')").fetchall())
                if generation < int(meta.get("tombstones_from", 0)):
                    return None
                removed = [r[0] for r in self.db.execute("SELECT id FROM tombstones WHERE generation > ?",
                                                         (generation,))]
                rows = self.db.execute("SELECT id, embedding FROM chunks WHERE generation > ? ORDER BY id",
                                       (generation,)).fetchall()
            finally:
                self.db.execute("COMMIT")
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return Changes(int(meta["generation"]), removed, ids, vecs)

    def snapshot(self, on_batch, batch: int = 8192) -> int:
        with self._lock:
            self.db.execute("BEGIN")
            try:
                gen = int(self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
                rows = self.db.execute("SELECT id, embedding FROM chunks ORDER BY id")
                while part := rows.fetchmany(batch):
                    on_batch(np.array([r[0] for r in part], dtype=np.int64),
                             np.frombuffer(b"".join(r[1] for r in part), dtype=np.float32).reshape(len(part), self.dim))
            finally:
                self.db.execute("COMMIT")
        return gen

    def fetch(self, ids: list[int]) -> list[ChunkRow]:
        if not ids:
            return []
        with self._lock:
            return self.db.execute(f"SELECT id, source, heading, text, embedding FROM chunks WHERE id IN "
                                   f"({','.join('?' * len(ids))})", [int(i) for i in ids]).fetchall()

    def _df(self, word: str) -> int:
        """Chunks holding `word` (after FTS5's stemming), cached until the store changes."""
        if word not in self._df_cache:
            self._df_cache[word] = int(self._lex_db.execute(
                "SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (f'"{word}"',)).fetchone()[0])
        return self._df_cache[word]

    def lexical_search(self, query: str, k: int, max_postings: int | None) -> list[tuple[int, float]]:
        """BM25 by SQLite FTS5 (Robertson & Zaragoza 2009), column weights `FTS_WEIGHTS`; the score
        is FTS5's rank negated."""
        words = query_words(query)
        if not words or k <= 0:
            return []
        with self._lex_lock:
            gen = int(self._lex_db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
            if gen != self._df_gen:
                self._df_cache, self._df_gen = {}, gen
            keep = keep_words(words, self._df, max_postings)
            if not keep:
                return []
            w = ", ".join(str(x) for x in FTS_WEIGHTS)
            rows = self._lex_db.execute(f"SELECT rowid, bm25(chunks_fts, {w}) AS r FROM chunks_fts "
                                        "WHERE chunks_fts MATCH ? ORDER BY r LIMIT ?", (fts_query(keep), k)).fetchall()
        return [(int(i), -float(r)) for i, r in rows]

    def chunks_after(self, last_id: int, limit: int) -> list[tuple[int, str, str, str]]:
        with self._lock:
            return self.db.execute("SELECT id, source, heading, text FROM chunks WHERE id > ? ORDER BY id LIMIT ?",
                                   (last_id, limit)).fetchall()

    def source_chunks(self, source: str) -> list[tuple[str, str, int, bytes]]:
        with self._lock:
            return self.db.execute("SELECT heading, text, position, embedding FROM chunks WHERE source=? "
                                   "ORDER BY position, id", (source,)).fetchall()

    def sources(self) -> list[tuple[str, int, str, float]]:
        with self._lock:
            return self.db.execute("SELECT source, n_chunks, sha256, added FROM files ORDER BY source").fetchall()

    def close(self) -> None:
        with self._lock, self._lex_lock:
            self._lex_db.close()
            self.db.close()


def is_postgres_url(url: str | None) -> bool:
    """Whether `url` names a PostgreSQL database (the only URL scheme a store takes).

    >>> is_postgres_url("postgresql://u@h/db"), is_postgres_url("sqlite:///x.db")
    (True, False)
    """
    return bool(url) and url.startswith(("postgresql://", "postgres://"))


def open_store(database_url: str | None, sqlite_path: str | Path, dim: int, embedder: str = "") -> ChunkStore:
    """The store named by `database_url` (``postgresql://…``), else the SQLite file `sqlite_path`.

    Raises:
        ValueError: a URL of another scheme.
        IndexMismatchError: the store was built with another embedder or dimension.
    """
    if not database_url:
        return SqliteChunkStore(sqlite_path, dim, embedder)
    if is_postgres_url(database_url):
        from retrieval.pgstore import PostgresChunkStore

        return PostgresChunkStore(database_url, dim, embedder)
    raise ValueError(f"database URL must start with postgresql:// (or be empty for SQLite), got {database_url[:20]!r}")


def copy_sqlite_index(index_dir: str | Path, database_url: str,
                      on_progress: Callable[[int, int], None] | None = None) -> tuple[int, int, int]:
    """`copy_store` from the SQLite index in `index_dir` into the PostgreSQL store at `database_url`
    (created with the index's dimension and embedder): (sources copied, skipped, chunks in the target).

    Raises:
        FileNotFoundError: no SQLite index in `index_dir`.
        IndexMismatchError: the target holds embeddings of another dimension or embedder.
    """
    db = Path(index_dir).expanduser() / "chunks.sqlite"
    meta = SqliteChunkStore.read_meta(db)
    src = SqliteChunkStore(db, int(meta.get("dim", 384)))
    try:
        dst = open_store(database_url, "", src.dim, src.embedder)
        try:
            copied, skipped = copy_store(src, dst, on_progress=on_progress)
            return copied, skipped, dst.count()
        finally:
            dst.close()
    finally:
        src.close()


def copy_store(src: ChunkStore, dst: ChunkStore, batch: int = 32,
               on_progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Copy every source of `src` into `dst` with its embeddings (no re-embedding), `batch` sources per
    transaction; sources `dst` already holds with the same sha256 are skipped, so an interrupted copy
    resumes. Returns (sources copied, sources skipped); `on_progress(done, total)` after each batch.

    Raises:
        IndexMismatchError: the stores hold embeddings of different dimensions or embedders.
    """
    from retrieval.chunking import Chunk

    if src.dim != dst.dim or (src.embedder and dst.embedder and src.embedder != dst.embedder):
        raise IndexMismatchError(f"cannot copy {src.embedder!r} (dim {src.dim}) embeddings into a store of "
                                 f"{dst.embedder!r} (dim {dst.dim})")
    todo = [(s, h) for s, _, h, _ in src.sources()]
    copied = skipped = 0
    for i in range(0, len(todo), batch):
        items = []
        for source, sha in todo[i:i + batch]:
            if dst.file_hash(source) == sha:
                skipped += 1
                continue
            rows = src.source_chunks(source)
            vecs = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.float32).reshape(len(rows), src.dim)
            items.append((source, sha, [Chunk(h, t, p) for h, t, p, _ in rows], vecs))
        copied += len(items)
        dst.replace_sources(items)
        if on_progress:
            on_progress(min(i + batch, len(todo)), len(todo))
    return copied, skipped


def iter_rows(store: ChunkStore, batch: int = 1000) -> Iterator[tuple[int, str, str, str]]:
    """Every chunk of `store` as (id, source, heading, text), in id order, `batch` rows at a time."""
    last = -1
    while rows := store.chunks_after(last, batch):
        yield from rows
        last = rows[-1][0]
