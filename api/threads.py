"""Thread ownership and expiry, next to LangGraph's SQLite checkpointer (same database file).

Contract:
- Table ``thinkgate_threads(thread_id, owner, created, last_used)``: one row per stored thread.
- `ThreadStore.claim(thread_id, owner)`: True when the thread is new (now owned by `owner`) or
  already `owner`'s (its ``last_used`` is refreshed); False when another owner has it — the API
  then answers 404, so one caller cannot learn another's thread ids.
- `delete(thread_id, owner)`: removes the checkpoints (`adelete_thread`) and the row; False when
  there is no such thread of `owner`.
- `expire(ttl_s)`: deletes threads unused for longer than `ttl_s` seconds; returns how many.
"""
from __future__ import annotations

import time

SCHEMA = """CREATE TABLE IF NOT EXISTS thinkgate_threads (
    thread_id TEXT PRIMARY KEY, owner TEXT NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL)"""


class ThreadStore:
    """Args:
        saver: LangGraph's `AsyncSqliteSaver` (its aiosqlite connection holds the table).
    """

    def __init__(self, saver):
        self.saver = saver
        self.conn = saver.conn

    async def setup(self) -> None:
        await self.conn.execute(SCHEMA)
        await self.conn.commit()

    async def owner_of(self, thread_id: str) -> str | None:
        async with self.conn.execute("SELECT owner FROM thinkgate_threads WHERE thread_id = ?", (thread_id,)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def claim(self, thread_id: str, owner: str) -> bool:
        """See the module docstring."""
        now = time.time()
        current = await self.owner_of(thread_id)
        if current is not None and current != owner:
            return False
        if current is None:
            await self.conn.execute("INSERT INTO thinkgate_threads VALUES (?, ?, ?, ?)", (thread_id, owner, now, now))
        else:
            await self.conn.execute("UPDATE thinkgate_threads SET last_used = ? WHERE thread_id = ?", (now, thread_id))
        await self.conn.commit()
        return True

    async def delete(self, thread_id: str, owner: str) -> bool:
        """See the module docstring."""
        if await self.owner_of(thread_id) != owner:
            return False
        await self.saver.adelete_thread(thread_id)
        await self.conn.execute("DELETE FROM thinkgate_threads WHERE thread_id = ?", (thread_id,))
        await self.conn.commit()
        return True

    async def expire(self, ttl_s: float) -> int:
        """See the module docstring."""
        cutoff = time.time() - ttl_s
        async with self.conn.execute("SELECT thread_id FROM thinkgate_threads WHERE last_used < ?", (cutoff,)) as cur:
            old = [r[0] for r in await cur.fetchall()]
        for tid in old:
            await self.saver.adelete_thread(tid)
            await self.conn.execute("DELETE FROM thinkgate_threads WHERE thread_id = ?", (tid,))
        await self.conn.commit()
        return len(old)
