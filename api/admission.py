"""Admission control: a bounded number of turns run at once, a bounded queue waits, the rest are
refused at once (HTTP 429 with ``Retry-After``) instead of piling up until every client times out.

Contract:
- `Admission(max_running, max_queued)`; `admit()` returns a `Ticket`, or None when running +
  queued turns already fill both bounds (the caller answers 429; `retry_after()` suggests when to
  come back, in whole seconds, from the mean latency of recent turns).
- ``async with ticket:`` waits for a running slot, and frees it on exit; `Ticket.release()` is
  idempotent, so a stream can release from its ``finally`` and from a finalizer both.
- Everything runs on the event loop (no locks): `admit` reserves synchronously.
"""
from __future__ import annotations

import asyncio
import math
import time


class Ticket:
    """One admitted request: queued until ``async with`` gets a running slot."""

    def __init__(self, admission: "Admission"):
        self._adm = admission
        self._running = False
        self._done = False
        self._t0 = 0.0

    async def __aenter__(self) -> "Ticket":
        await self._adm._sem.acquire()
        self._running = True
        self._t0 = time.perf_counter()
        return self

    async def __aexit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        """Free the slot (or the queue place); safe to call more than once."""
        if self._done:
            return
        self._done = True
        self._adm._admitted -= 1
        if self._running:
            self._adm._sem.release()
            self._adm._observe(time.perf_counter() - self._t0)


class Admission:
    """Bounded concurrency plus a bounded queue.

    Args:
        max_running: turns generating at once (≥ 1).
        max_queued: admitted turns waiting for a slot (≥ 0).

    Raises:
        ValueError: a bound out of range.
    """

    def __init__(self, max_running: int, max_queued: int):
        if max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        if max_queued < 0:
            raise ValueError(f"max_queued must be >= 0, got {max_queued}")
        self.max_running, self.max_queued = max_running, max_queued
        self._sem = asyncio.Semaphore(max_running)
        self._admitted = 0
        self._mean_s = 5.0  # a prior until turns have been timed
        self.refused = 0

    @property
    def admitted(self) -> int:
        """Requests running or queued now."""
        return self._admitted

    def admit(self) -> Ticket | None:
        """A ticket, or None (and `refused` counts it) when running + queued are full."""
        if self._admitted >= self.max_running + self.max_queued:
            self.refused += 1
            return None
        self._admitted += 1
        return Ticket(self)

    def retry_after(self) -> int:
        """Seconds until a place is likely free: admitted requests / slots × mean running time of
        recent turns (≥ 1)."""
        waves = max(1, self._admitted) / self.max_running
        return max(1, math.ceil(waves * self._mean_s))

    def _observe(self, seconds: float) -> None:
        self._mean_s = 0.8 * self._mean_s + 0.2 * seconds
