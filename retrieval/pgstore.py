"""The PostgreSQL chunk store: the same contract as `retrieval.store` (read that first), shared by
every API replica that names the same ``THINKGATE_DATABASE_URL``.

Contract beyond the interface:
- Tables ``thinkgate_meta``, ``thinkgate_files``, ``thinkgate_chunks``, ``thinkgate_tombstones``,
  ``thinkgate_postings`` (prefixed: the database also holds LangGraph's checkpoint tables; a
  ``search_path`` in the URL puts them in another schema). Schema creation runs under a
  session advisory lock (`wait_for_lock`), so replicas starting together do not race on
  ``CREATE … IF NOT EXISTS``.
- Every write is one transaction that first takes a transaction-level advisory lock
  (`WRITE_LOCK`), then bumps the generation: writers commit in generation order, and a reader
  that sees generation g sees every write up to g (`changes_since` and `snapshot` read in one
  REPEATABLE READ transaction). A writer killed mid-transaction leaves nothing: PostgreSQL
  rolls it back when the connection drops.
- Lexical search: a stored ``tsvector`` (english stemming) with the heading path labelled A,
  the page-name words B and the text D; each write also fills ``thinkgate_postings`` (lexeme,
  chunk, label-weighted occurrences, chunk length; deleted with its chunk), and BM25 is computed
  from it in SQL with FTS5's formula, parameters and column weights (`lexical_search`).
  PostgreSQL's own ``ts_rank`` was tried first: on the Python FAQ set it took lexical recall@5 from
  0.246 (FTS5 BM25) to 0.145 and hybrid + diversity from 0.507 to 0.406.
- Embeddings are float32 bytes (``bytea``), as in SQLite; the vector search itself is the
  replica's FAISS cache (`retrieval.index`), not the database.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import re
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from retrieval.store import (FTS_WEIGHTS, ChunkRow, ChunkStore, Changes, SourceItem, keep_words, path_words,
                             query_words)

#: advisory lock keys (arbitrary constants, one per purpose)
SCHEMA_LOCK = 0x7468696E  # "thin"
WRITE_LOCK = 0x6B676174  # "kgat"
#: seconds between two tries of a session advisory lock (`wait_for_lock`, `await_lock`)
LOCK_POLL_S = 0.05

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS thinkgate_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS thinkgate_files (source TEXT PRIMARY KEY, sha256 TEXT NOT NULL,
        n_chunks INTEGER NOT NULL, added DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS thinkgate_chunks (
        id BIGSERIAL PRIMARY KEY, source TEXT NOT NULL, heading TEXT NOT NULL, text TEXT NOT NULL,
        position INTEGER NOT NULL, embedding BYTEA NOT NULL, generation BIGINT NOT NULL, path TEXT NOT NULL,
        n_tokens INTEGER NOT NULL,
        tsv tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('english', heading), 'A') || setweight(to_tsvector('english', path), 'B')
            || setweight(to_tsvector('english', text), 'D')) STORED)""",
    "CREATE INDEX IF NOT EXISTS thinkgate_chunks_source ON thinkgate_chunks (source)",
    "CREATE INDEX IF NOT EXISTS thinkgate_chunks_generation ON thinkgate_chunks (generation)",
    """CREATE TABLE IF NOT EXISTS thinkgate_postings (
        lexeme TEXT NOT NULL, chunk_id BIGINT NOT NULL REFERENCES thinkgate_chunks (id) ON DELETE CASCADE,
        f REAL NOT NULL, n_tokens INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS thinkgate_postings_lexeme ON thinkgate_postings (lexeme) INCLUDE (chunk_id, f, n_tokens)",
    "CREATE INDEX IF NOT EXISTS thinkgate_postings_chunk ON thinkgate_postings (chunk_id)",
    "CREATE TABLE IF NOT EXISTS thinkgate_tombstones (id BIGINT NOT NULL, generation BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS thinkgate_tombstones_generation ON thinkgate_tombstones (generation)",
]
#: BM25 parameters (FTS5's: Robertson & Zaragoza 2009, k1 = 1.2, b = 0.75)
K1, B = 1.2, 0.75
#: per-occurrence weight of a lexeme by its tsvector label: A heading path, B page name, D text —
#: the FTS5 column weights of `retrieval.store.FTS_WEIGHTS` (path, heading, text)
LABEL_WEIGHTS = {"A": FTS_WEIGHTS[1], "B": FTS_WEIGHTS[0], "D": FTS_WEIGHTS[2]}
BM25_SQL = """
SELECT chunk_id, SUM(idf * f * %(k1p1)s / (f + %(k1)s * (1 - %(b)s + %(b)s * n_tokens / %(avgdl)s))) AS score
FROM ({postings}) AS p
GROUP BY chunk_id ORDER BY score DESC, chunk_id LIMIT %(k)s
"""
#: one index lookup per query lexeme (a constant equality: the planner takes the index even before
#: the table has statistics; a join against an array was planned as a full scan after a bulk load)
POSTING_SQL = "SELECT chunk_id, f, n_tokens, %(idf{i})s::float8 AS idf FROM thinkgate_postings WHERE lexeme = %(lex{i})s"
#: the postings of the chunks one write added: label-weighted occurrences of each lexeme
POSTINGS_SQL = """
INSERT INTO thinkgate_postings (lexeme, chunk_id, f, n_tokens)
SELECT u.lexeme, c.id, (SELECT SUM(CASE w WHEN 'A' THEN %(wa)s WHEN 'B' THEN %(wb)s ELSE %(wd)s END)
                        FROM unnest(u.weights) AS w), c.n_tokens
FROM thinkgate_chunks c CROSS JOIN LATERAL unnest(c.tsv) AS u
WHERE c.generation = %(gen)s
"""


def n_tokens(path: str, heading: str, text: str) -> int:
    """Tokens of a chunk as BM25 counts its length (every word of the three fields, stopwords included).

    >>> n_tokens("library os", "os > path", "Join two paths.")
    7
    """
    return len(re.findall(r"\w+", f"{path} {heading} {text}"))


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
            raise _lock_timeout(key, timeout_s)
        time.sleep(LOCK_POLL_S)


async def await_lock(con, key: int, timeout_s: float = 120.0) -> None:
    """`wait_for_lock` on a psycopg async connection (any row factory).

    Raises:
        TimeoutError: not taken within `timeout_s`.
    """
    t0 = time.monotonic()
    while True:
        row = await (await con.execute("SELECT pg_try_advisory_lock(%s)", (key,))).fetchone()
        if (next(iter(row.values())) if isinstance(row, dict) else row[0]):
            return
        if time.monotonic() - t0 > timeout_s:
            raise _lock_timeout(key, timeout_s)
        await asyncio.sleep(LOCK_POLL_S)


def _lock_timeout(key: int, timeout_s: float) -> TimeoutError:
    return TimeoutError(f"advisory lock {key:#x} still held by another process after {timeout_s:.0f} s")


class PostgresChunkStore(ChunkStore):
    """Args:
        url: ``postgresql://user:password@host:port/database``.
        dim: embedding dimension; embedder: the embedder's name (recorded on creation).
        pool_size: connections kept (writes, reads and lexical queries each take one).

    Raises:
        IndexMismatchError: the database holds a store of another embedder or dimension.
        ConnectionError: the database cannot be reached (the message names the URL, password redacted).
    """

    kind = "postgresql"

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
    @staticmethod
    def _generation(con) -> int:
        return int(con.execute("SELECT value FROM thinkgate_meta WHERE key = 'generation'").fetchone()[0])

    @contextlib.contextmanager
    def _read_snapshot(self):
        """A pooled connection inside one REPEATABLE READ, READ ONLY transaction (rolled back after)."""
        with self.pool.connection() as con:
            con.autocommit = False
            try:
                con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield con
            finally:
                con.rollback()
                con.autocommit = True

    def generation(self) -> int:
        with self.pool.connection() as con:
            return self._generation(con)

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
        with self._read_snapshot() as con:
            meta = dict(con.execute("SELECT key, value FROM thinkgate_meta WHERE key IN "
                                    "('generation', 'tombstones_from')").fetchall())
            if generation < int(meta.get("tombstones_from", 0)):
                return None
            removed = [r[0] for r in con.execute(
                "SELECT id FROM thinkgate_tombstones WHERE generation > %s", (generation,))]
            rows = con.execute("SELECT id, embedding FROM thinkgate_chunks WHERE generation > %s ORDER BY id",
                               (generation,)).fetchall()
        ids, vecs = self._vectors(rows)
        return Changes(int(meta["generation"]), removed, ids, vecs)

    def snapshot(self, on_batch, batch: int = 8192) -> int:
        with self._read_snapshot() as con:
            gen = self._generation(con)
            with con.cursor(name="thinkgate_snapshot") as cur:  # server-side: bounded memory
                cur.execute("SELECT id, embedding FROM thinkgate_chunks ORDER BY id")
                while part := cur.fetchmany(batch):
                    on_batch(*self._vectors(part))
        return gen

    def fetch(self, ids: list[int]) -> list[ChunkRow]:
        if not ids:
            return []
        with self.pool.connection() as con:
            rows = con.execute("SELECT id, source, heading, text, embedding FROM thinkgate_chunks WHERE id = ANY(%s)",
                               ([int(i) for i in ids],)).fetchall()
        return [(int(i), s, h, t, bytes(e)) for i, s, h, t, e in rows]

    def _df(self, con, lexeme: str) -> int:
        """Chunks holding `lexeme` (an index-only count of its postings), cached until the store changes."""
        if lexeme not in self._df_cache:
            self._df_cache[lexeme] = int(con.execute("SELECT COUNT(*) FROM thinkgate_postings WHERE lexeme = %s",
                                                     (lexeme,)).fetchone()[0])
        return self._df_cache[lexeme]

    def lexical_search(self, query: str, k: int, max_postings: int | None) -> list[tuple[int, float]]:
        """BM25 in SQL over a postings table (lexeme → chunk, label-weighted occurrences f, chunk length):
        Σ idf · f (k1 + 1) / (f + k1 (1 − b + b |D| / avgdl)), idf = ln((N − n + ½) / (n + ½)) floored at
        1e-6 — FTS5's formula, parameters and column weights, so both stores rank alike up to stemming
        (english snowball here, porter in SQLite). `max_postings` applies to the query's lexemes."""
        words = query_words(query)
        if not words or k <= 0:
            return []
        with self.pool.connection() as con:
            with self._df_lock:
                gen = self._generation(con)
                if gen != self._df_gen:
                    n, avgdl = con.execute("SELECT COUNT(*), COALESCE(AVG(n_tokens), 1) FROM thinkgate_chunks").fetchone()
                    self._df_cache, self._df_gen, self._stats = {}, gen, (int(n), float(avgdl) or 1.0)
                lexemes = [r[0] for r in con.execute(
                    "SELECT DISTINCT unnest(tsvector_to_array(to_tsvector('english', %s)))", (" ".join(words),))]
                keep = keep_words(lexemes, lambda x: self._df(con, x), max_postings)
                dfs = {x: self._df(con, x) for x in keep}
                n, avgdl = self._stats
            if not keep:
                return []
            idfs = [max(math.log((n - dfs[x] + 0.5) / (dfs[x] + 0.5)), 1e-6) for x in keep]
            postings = " UNION ALL ".join(POSTING_SQL.format(i=i) for i in range(len(keep)))
            params = {"k1": K1, "k1p1": K1 + 1, "b": B, "avgdl": avgdl, "k": k,
                      **{f"lex{i}": x for i, x in enumerate(keep)}, **{f"idf{i}": v for i, v in enumerate(idfs)}}
            rows = con.execute(BM25_SQL.format(postings=postings), params).fetchall()
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
                        "INSERT INTO thinkgate_chunks (source, heading, text, position, embedding, generation, path, "
                        "n_tokens) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        [(source, c.heading, c.text, c.position, v.tobytes(), gen, words, n_tokens(words, c.heading, c.text))
                         for c, v in zip(chunks, vecs)])
                added += len(chunks)
                con.execute("INSERT INTO thinkgate_files VALUES (%s, %s, %s, %s) ON CONFLICT (source) DO UPDATE "
                            "SET sha256 = EXCLUDED.sha256, n_chunks = EXCLUDED.n_chunks, added = EXCLUDED.added",
                            (source, sha, len(chunks), time.time()))
            con.execute(POSTINGS_SQL, {"gen": gen, "wa": LABEL_WEIGHTS["A"], "wb": LABEL_WEIGHTS["B"],
                                       "wd": LABEL_WEIGHTS["D"]})
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
