"""The PostgreSQL chunk store: the same contract as `retrieval.store` (read that first), shared by
every API replica that names the same ``THINKGATE_DATABASE_URL``.

Contract beyond the interface:
- Tables ``thinkgate_meta``, ``thinkgate_files``, ``thinkgate_chunks``, ``thinkgate_tombstones``
  (prefixed: the database also holds LangGraph's checkpoint tables). Schema creation runs under a
  session advisory lock (`wait_for_lock`), so replicas starting together do not race on
  ``CREATE … IF NOT EXISTS``.
- Every write is one transaction that first takes a transaction-level advisory lock
  (`WRITE_LOCK`), then bumps the generation: writers commit in generation order, and a reader
  that sees generation g sees every write up to g (`changes_since` and `snapshot` read in one
  REPEATABLE READ transaction). A writer killed mid-transaction leaves nothing: PostgreSQL
  rolls it back when the connection drops.
- Lexical search: a stored ``tsvector`` (english stemming) with the heading path weighted A,
  the page-name words B and the text D, under a GIN index, ranked by ``ts_rank`` with weights
  {D 1/3, C 0, B 2/3, A 1} and length normalization 1 (÷ 1 + log length). This is not BM25 —
  PostgreSQL has none built in — so hybrid rankings differ slightly between the two stores.
- Embeddings are float32 bytes (``bytea``), as in SQLite; the vector search itself is the
  replica's FAISS cache (`retrieval.index`), not the database.
"""
from __future__ import annotations

import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from retrieval.store import ChunkRow, ChunkStore, Changes, SourceItem, keep_words, path_words, query_words

#: advisory lock keys (arbitrary constants, one per purpose)
SCHEMA_LOCK = 0x7468696E  # "thin"
WRITE_LOCK = 0x6B676174  # "kgat"

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS thinkgate_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS thinkgate_files (source TEXT PRIMARY KEY, sha256 TEXT NOT NULL,
        n_chunks INTEGER NOT NULL, added DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS thinkgate_chunks (
        id BIGSERIAL PRIMARY KEY, source TEXT NOT NULL, heading TEXT NOT NULL, text TEXT NOT NULL,
        position INTEGER NOT NULL, embedding BYTEA NOT NULL, generation BIGINT NOT NULL, path TEXT NOT NULL,
        tsv tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('english', heading), 'A') || setweight(to_tsvector('english', path), 'B')
            || setweight(to_tsvector('english', text), 'D')) STORED)""",
    "CREATE INDEX IF NOT EXISTS thinkgate_chunks_source ON thinkgate_chunks (source)",
    "CREATE INDEX IF NOT EXISTS thinkgate_chunks_generation ON thinkgate_chunks (generation)",
    "CREATE INDEX IF NOT EXISTS thinkgate_chunks_tsv ON thinkgate_chunks USING GIN (tsv)",
    "CREATE TABLE IF NOT EXISTS thinkgate_tombstones (id BIGINT NOT NULL, generation BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS thinkgate_tombstones_generation ON thinkgate_tombstones (generation)",
]
#: ts_rank weights {D, C, B, A}: text, -, page name, heading path (the FTS5 weights 1/2/3 scaled to ≤ 1)
RANK_WEIGHTS = "{0.3333, 0, 0.6667, 1.0}"


def redact(url: str) -> str:
    """`url` without its password, for messages and logs.

    >>> redact("postgresql://me:secret@db:5432/tg")
    'postgresql://me@db:5432/tg'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def wait_for_lock(con, key: int, timeout_s: float = 120.0) -> None:
    """Take session advisory lock `key` on `con`, polling ``pg_try_advisory_lock`` rather than blocking
    in ``pg_advisory_lock``: a blocked statement holds a snapshot, and LangGraph's migrations run
    ``CREATE INDEX CONCURRENTLY``, which waits for every snapshot — two replicas starting together
    would wait on each other forever.

    Raises:
        TimeoutError: not taken within `timeout_s`.
    """
    t0 = time.monotonic()
    while not con.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"advisory lock {key:#x} still held by another process after {timeout_s:.0f} s")
        time.sleep(0.05)


def read_meta(url: str) -> dict[str, str]:
    """The meta table of the store at `url` (dim, embedder, …).

    Raises:
        FileNotFoundError: the database holds no store.
    """
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        if con.execute("SELECT to_regclass('thinkgate_meta')").fetchone()[0] is None:
            raise FileNotFoundError(f"no index at {redact(url)}: build one with `thinkgate ingest PATH`")
        return dict(con.execute("SELECT key, value FROM thinkgate_meta").fetchall())


class PostgresChunkStore(ChunkStore):
    """Args:
        url: ``postgresql://user:password@host:port/database``.
        dim: embedding dimension; embedder: the embedder's name (recorded on creation).
        pool_size: connections kept (writes, reads and lexical queries each take one).

    Raises:
        IndexMismatchError: the database holds a store of another embedder or dimension.
        ConnectionError: the database cannot be reached (the message names the URL, password redacted).
    """

    def __init__(self, url: str, dim: int, embedder: str = "", pool_size: int = 4):
        import psycopg
        from psycopg_pool import ConnectionPool

        self.location = redact(url)
        try:
            self.pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, timeout=30.0,
                                       kwargs={"autocommit": True})
            self.pool.wait(timeout=30.0)
        except (psycopg.Error, Exception) as e:  # PoolTimeout, OperationalError
            raise ConnectionError(f"cannot reach PostgreSQL at {self.location}: {e}") from e
        with self.pool.connection() as con:
            wait_for_lock(con, SCHEMA_LOCK)
            try:
                for stmt in SCHEMA:
                    con.execute(stmt)
                meta = dict(con.execute("SELECT key, value FROM thinkgate_meta").fetchall())
                if "dim" not in meta:
                    meta = {"dim": str(dim), "embedder": embedder, "generation": "0", "tombstones_from": "0",
                            "store_id": uuid.uuid4().hex}
                    with con.transaction():
                        for kv in meta.items():
                            con.execute("INSERT INTO thinkgate_meta VALUES (%s, %s) ON CONFLICT DO NOTHING", kv)
            finally:
                con.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
        self.dim, self.embedder, self.store_id = int(meta["dim"]), meta.get("embedder", ""), meta["store_id"]
        if self.dim != dim or (embedder and self.embedder not in ("", embedder)):
            self.pool.close()
            raise self._mismatch(dim, embedder)
        self._df_lock = threading.Lock()
        self._df_cache: dict[str, int] = {}
        self._df_gen = -1

    # ------------------------------------------------------------------ reads
    def generation(self) -> int:
        with self.pool.connection() as con:
            return int(con.execute("SELECT value FROM thinkgate_meta WHERE key = 'generation'").fetchone()[0])

    def count(self) -> int:
        with self.pool.connection() as con:
            return int(con.execute("SELECT COUNT(*) FROM thinkgate_chunks").fetchone()[0])

    def file_hash(self, source: str) -> str | None:
        with self.pool.connection() as con:
            row = con.execute("SELECT sha256 FROM thinkgate_files WHERE source = %s", (source,)).fetchone()
        return row[0] if row else None

    def _vectors(self, rows) -> tuple[np.ndarray, np.ndarray]:
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return ids, vecs

    def changes_since(self, generation: int) -> Changes | None:
        with self.pool.connection() as con:
            con.autocommit = False
            try:
                con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                meta = dict(con.execute("SELECT key, value FROM thinkgate_meta WHERE key IN "
                                        "('generation', 'tombstones_from')").fetchall())
                if generation < int(meta.get("tombstones_from", 0)):
                    return None
                removed = [r[0] for r in con.execute(
                    "SELECT id FROM thinkgate_tombstones WHERE generation > %s", (generation,))]
                rows = con.execute("SELECT id, embedding FROM thinkgate_chunks WHERE generation > %s ORDER BY id",
                                   (generation,)).fetchall()
            finally:
                con.rollback()
                con.autocommit = True
        ids, vecs = self._vectors(rows)
        return Changes(int(meta["generation"]), removed, ids, vecs)

    def snapshot(self, on_batch, batch: int = 8192) -> int:
        with self.pool.connection() as con:
            con.autocommit = False
            try:
                con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                gen = int(con.execute("SELECT value FROM thinkgate_meta WHERE key = 'generation'").fetchone()[0])
                with con.cursor(name="thinkgate_snapshot") as cur:  # server-side: bounded memory
                    cur.execute("SELECT id, embedding FROM thinkgate_chunks ORDER BY id")
                    while part := cur.fetchmany(batch):
                        on_batch(*self._vectors(part))
            finally:
                con.rollback()
                con.autocommit = True
        return gen

    def fetch(self, ids: list[int]) -> list[ChunkRow]:
        if not ids:
            return []
        with self.pool.connection() as con:
            rows = con.execute("SELECT id, source, heading, text, embedding FROM thinkgate_chunks WHERE id = ANY(%s)",
                               ([int(i) for i in ids],)).fetchall()
        return [(int(i), s, h, t, bytes(e)) for i, s, h, t, e in rows]

    def _df(self, con, word: str) -> int:
        if word not in self._df_cache:
            self._df_cache[word] = int(con.execute(
                "SELECT COUNT(*) FROM thinkgate_chunks WHERE tsv @@ plainto_tsquery('english', %s)",
                (word,)).fetchone()[0])
        return self._df_cache[word]

    def lexical_search(self, query: str, k: int, max_postings: int | None) -> list[tuple[int, float]]:
        """``ts_rank`` over the weighted tsvector (see the module docstring), words ORed."""
        words = query_words(query)
        if not words or k <= 0:
            return []
        with self.pool.connection() as con:
            with self._df_lock:
                gen = int(con.execute("SELECT value FROM thinkgate_meta WHERE key = 'generation'").fetchone()[0])
                if gen != self._df_gen:
                    self._df_cache, self._df_gen = {}, gen
                keep = keep_words(words, lambda w: self._df(con, w), max_postings)
            if not keep:
                return []
            tsq = " || ".join(["plainto_tsquery('english', %s)"] * len(keep))
            rows = con.execute(
                f"SELECT id, ts_rank(%s::float4[], tsv, q, 1) AS r FROM thinkgate_chunks, ({'SELECT ' + tsq} AS q) qq "
                "WHERE tsv @@ q ORDER BY r DESC, id LIMIT %s", [RANK_WEIGHTS, *keep, k]).fetchall()
        return [(int(i), float(r)) for i, r in rows]

    def chunks_after(self, last_id: int, limit: int) -> list[tuple[int, str, str, str]]:
        with self.pool.connection() as con:
            return [tuple(r) for r in con.execute(
                "SELECT id, source, heading, text FROM thinkgate_chunks WHERE id > %s ORDER BY id LIMIT %s",
                (last_id, limit)).fetchall()]

    def source_chunks(self, source: str) -> list[tuple[str, str, int, bytes]]:
        with self.pool.connection() as con:
            return [(h, t, p, bytes(e)) for h, t, p, e in con.execute(
                "SELECT heading, text, position, embedding FROM thinkgate_chunks WHERE source = %s "
                "ORDER BY position, id", (source,)).fetchall()]

    def sources(self) -> list[tuple[str, int, str, float]]:
        with self.pool.connection() as con:
            return [tuple(r) for r in con.execute(
                "SELECT source, n_chunks, sha256, added FROM thinkgate_files ORDER BY source").fetchall()]

    # ------------------------------------------------------------------ writes
    def _write(self, body) -> int:
        with self.pool.connection() as con:
            with con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                gen = int(con.execute("UPDATE thinkgate_meta SET value = (value::bigint + 1)::text "
                                      "WHERE key = 'generation' RETURNING value").fetchone()[0])
                return body(con, gen)

    @staticmethod
    def _remove(con, source: str, gen: int) -> int:
        rows = con.execute("DELETE FROM thinkgate_chunks WHERE source = %s RETURNING id", (source,)).fetchall()
        if rows:
            with con.cursor() as cur:
                cur.executemany("INSERT INTO thinkgate_tombstones VALUES (%s, %s)", [(r[0], gen) for r in rows])
        return len(rows)

    def replace_sources(self, items: list[SourceItem]) -> int:
        items = self._check_vectors(items)
        if not items:
            return 0

        def body(con, gen: int) -> int:
            added = 0
            for source, sha, chunks, vecs in items:
                self._remove(con, source, gen)
                words = path_words(source)
                with con.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO thinkgate_chunks (source, heading, text, position, embedding, generation, path) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        [(source, c.heading, c.text, c.position, v.tobytes(), gen, words) for c, v in zip(chunks, vecs)])
                added += len(chunks)
                con.execute("INSERT INTO thinkgate_files VALUES (%s, %s, %s, %s) ON CONFLICT (source) DO UPDATE "
                            "SET sha256 = EXCLUDED.sha256, n_chunks = EXCLUDED.n_chunks, added = EXCLUDED.added",
                            (source, sha, len(chunks), time.time()))
            return added

        return self._write(body)

    def delete_source(self, source: str) -> int:
        with self.pool.connection() as con:
            known = con.execute("SELECT 1 FROM thinkgate_chunks WHERE source = %s UNION "
                                "SELECT 1 FROM thinkgate_files WHERE source = %s", (source, source)).fetchone()
        if not known:
            return 0

        def body(con, gen: int) -> int:
            n = self._remove(con, source, gen)
            con.execute("DELETE FROM thinkgate_files WHERE source = %s", (source,))
            return n

        return self._write(body)

    def close(self) -> None:
        self.pool.close()
