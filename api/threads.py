"""Threads: LangGraph's checkpointer (SQLite file, or PostgreSQL shared by replicas) plus thread
ownership and expiry in a table beside it.

Contract:
- `open_threads(settings)` is an async context manager yielding (checkpointer, `ThreadStore`):
  ``AsyncSqliteSaver`` on ``settings.resolved_threads_db`` by default, ``AsyncPostgresSaver`` on a
  connection pool when ``settings.database_url`` is set (its schema set up under an advisory lock,
  so replicas starting together do not race). Any replica on the same database continues any
  thread: the checkpoints and the ownership rows are all in it.
- Table ``thinkgate_threads(thread_id, owner, created, last_used)``: one row per stored thread.
- `ThreadStore.claim(thread_id, owner)`: True when the thread is new (now owned by `owner`) or
  already `owner`'s (its ``last_used`` is refreshed); False when another owner has it — the API
  then answers 404, so one caller cannot learn another's thread ids. Two replicas claiming one new
  id at once: the first insert wins (``ON CONFLICT DO NOTHING``), the other sees its owner.
- `delete(thread_id, owner)`: removes the checkpoints (`adelete_thread`) and the row; False when
  there is no such thread of `owner`.
- `expire(ttl_s)`: deletes threads unused for longer than `ttl_s` seconds; returns how many.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable

SCHEMA = """CREATE TABLE IF NOT EXISTS thinkgate_threads (
    thread_id TEXT PRIMARY KEY, owner TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
    last_used DOUBLE PRECISION NOT NULL)"""
#: session advisory lock taken while the PostgreSQL checkpointer's schema is set up
SETUP_LOCK = 0x74687264  # "thrd"

#: run one statement: (sql with %s placeholders, params) → rows (empty for writes)
Run = Callable[[str, tuple], Awaitable[list[tuple]]]


class ThreadStore:
    """Args:
        saver: the LangGraph checkpointer (its `adelete_thread` removes a thread's checkpoints).
        run: executes one statement in its own transaction (see `Run`).
    """

    def __init__(self, saver, run: Run):
        self.saver = saver
        self.run = run

    @classmethod
    def sqlite(cls, saver) -> "ThreadStore":
        """Over an `AsyncSqliteSaver` (its aiosqlite connection holds the table)."""
        conn = saver.conn

        async def run(sql: str, params: tuple) -> list[tuple]:
            async with conn.execute(sql.replace("%s", "?"), params) as cur:
                rows = await cur.fetchall()
            await conn.commit()
            return [tuple(r) for r in rows]

        return cls(saver, run)

    @classmethod
    def postgres(cls, saver, pool) -> "ThreadStore":
        """Over an `AsyncPostgresSaver` and a psycopg `AsyncConnectionPool` (autocommit)."""

        async def run(sql: str, params: tuple) -> list[tuple]:
            async with pool.connection() as con:
                cur = await con.execute(sql, params)
                rows = await cur.fetchall() if cur.description else []
            return [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in rows]

        return cls(saver, run)

    async def setup(self) -> None:
        await self.run(SCHEMA, ())

    async def owner_of(self, thread_id: str) -> str | None:
        rows = await self.run("SELECT owner FROM thinkgate_threads WHERE thread_id = %s", (thread_id,))
        return rows[0][0] if rows else None

    async def claim(self, thread_id: str, owner: str) -> bool:
        """See the module docstring."""
        now = time.time()
        await self.run("INSERT INTO thinkgate_threads VALUES (%s, %s, %s, %s) ON CONFLICT (thread_id) DO NOTHING",
                       (thread_id, owner, now, now))
        if await self.owner_of(thread_id) != owner:
            return False
        await self.run("UPDATE thinkgate_threads SET last_used = %s WHERE thread_id = %s", (now, thread_id))
        return True

    async def delete(self, thread_id: str, owner: str) -> bool:
        """See the module docstring."""
        if await self.owner_of(thread_id) != owner:
            return False
        await self.saver.adelete_thread(thread_id)
        await self.run("DELETE FROM thinkgate_threads WHERE thread_id = %s", (thread_id,))
        return True

    async def expire(self, ttl_s: float) -> int:
        """See the module docstring."""
        old = [r[0] for r in await self.run("SELECT thread_id FROM thinkgate_threads WHERE last_used < %s",
                                            (time.time() - ttl_s,))]
        for tid in old:
            await self.saver.adelete_thread(tid)
            await self.run("DELETE FROM thinkgate_threads WHERE thread_id = %s", (tid,))
        return len(old)


@contextlib.asynccontextmanager
async def open_threads(settings):
    """(checkpointer, ThreadStore) for `settings` (an `api.settings.Settings`); see the module docstring.

    Raises:
        ConnectionError: ``database_url`` is set but the database cannot be reached.
    """
    if not settings.database_url:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        settings.resolved_threads_db.parent.mkdir(parents=True, exist_ok=True)
        async with AsyncSqliteSaver.from_conn_string(str(settings.resolved_threads_db)) as saver:
            await saver.setup()
            threads = ThreadStore.sqlite(saver)
            await threads.setup()
            yield saver, threads
        return
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    from retrieval.pgstore import await_lock, redact

    pool = AsyncConnectionPool(settings.database_url, min_size=1, max_size=8, open=False, timeout=30.0,
                               kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
    try:
        await pool.open(wait=True, timeout=30.0)
    except Exception as e:
        await pool.close()
        raise ConnectionError(f"cannot reach PostgreSQL at {redact(settings.database_url)}: {e}") from e
    try:
        saver = AsyncPostgresSaver(pool)
        async with pool.connection() as con:  # one replica at a time runs the migrations
            await await_lock(con, SETUP_LOCK)  # polled, not blocking: see retrieval.pgstore.wait_for_lock
            try:
                await saver.setup()
                threads = ThreadStore.postgres(saver, pool)
                await threads.setup()
            finally:
                await con.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))
        yield saver, threads
    finally:
        await pool.close()
