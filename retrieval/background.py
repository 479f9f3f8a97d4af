"""Indexing in the background while the service answers.

Contract:
- `BackgroundIngest(retriever, paths).start()` runs `Retriever.ingest(paths)` on a daemon
  thread. Every flushed batch is searchable at once (the index is thread-safe), so the
  service answers from the passages indexed so far. Files already indexed with the same
  sha256 are skipped, so a restart resumes an interrupted build.
- `status()` → `IndexStatus`: state (``building``, ``done`` or ``failed``), files done/total,
  chunks indexed, chunks/s, ETA in seconds (from the bytes still to read at the rate so far),
  and the error of a failed build. `partial` is True until the build is done.
- Progress goes to the ``thinkgate.index`` logger at most every `log_every` seconds.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from retrieval.retriever import IngestProgress, Retriever

log = logging.getLogger("thinkgate.index")


@dataclass
class IndexStatus:
    """Progress of a background build (see the module contract); `eta_s` is None until known."""

    state: str
    files_done: int = 0
    files_total: int = 0
    chunks: int = 0
    chunks_per_s: float = 0.0
    seconds: float = 0.0
    eta_s: float | None = None
    error: str | None = None

    @property
    def partial(self) -> bool:
        return self.state != "done"

    def to_dict(self) -> dict:
        return {**asdict(self), "partial": self.partial}


class BackgroundIngest:
    """Args:
        retriever: the service's `Retriever` (shared with searches).
        paths: files and folders to index.
        log_every: seconds between progress log lines.
    """

    def __init__(self, retriever: Retriever, paths: Iterable[str | Path], log_every: float = 10.0):
        self.retriever = retriever
        self.paths = [Path(p) for p in paths]
        self.log_every = log_every
        self._status = IndexStatus("building")
        self._start_chunks = 0
        self._last_log = 0.0
        self._thread: threading.Thread | None = None
        self.done = threading.Event()

    def start(self) -> "BackgroundIngest":
        """Start the build thread (once); returns self."""
        if self._thread is None:
            self._start_chunks = len(self.retriever)
            self._status.chunks = self._start_chunks
            self._thread = threading.Thread(target=self._run, name="thinkgate-ingest", daemon=True)
            self._thread.start()
        return self

    def status(self) -> IndexStatus:
        """A copy of the current progress."""
        return IndexStatus(**asdict(self._status))

    @property
    def partial(self) -> bool:
        return self._status.partial

    def _progress(self, p: IngestProgress) -> None:
        rate = p.chunks_added / p.seconds if p.seconds > 0 else 0.0
        eta = None
        if p.bytes_done > 0 and p.seconds > 0 and p.files_done < p.files_total:
            eta = p.seconds * (p.bytes_total - p.bytes_done) / p.bytes_done
        self._status = IndexStatus("building", p.files_done, p.files_total, self._start_chunks + p.chunks_added,
                                   round(rate, 1), round(p.seconds, 1), None if eta is None else round(eta, 1))
        now = time.monotonic()
        if now - self._last_log >= self.log_every:
            self._last_log = now
            log.info("indexing: %d/%d files, %d chunks, %.1f chunks/s, ETA %s s", p.files_done, p.files_total,
                     self._status.chunks, rate, "?" if eta is None else f"{eta:.0f}")

    def _run(self) -> None:
        try:
            rep = self.retriever.ingest(self.paths, progress=False, on_progress=self._progress)
            self._status = IndexStatus("done", rep.files_seen, rep.files_seen, len(self.retriever),
                                       round(rep.chunks_added / rep.seconds, 1) if rep.seconds else 0.0,
                                       round(rep.seconds, 1), 0.0)
            log.info("index ready: %d files (%d unchanged), %d chunks added in %.0f s; %d chunks in all",
                     rep.files_seen, rep.files_skipped, rep.chunks_added, rep.seconds, len(self.retriever))
        except Exception as exc:  # the service keeps answering from what was indexed
            self._status = IndexStatus("failed", self._status.files_done, self._status.files_total,
                                       len(self.retriever), error=f"{type(exc).__name__}: {exc}")
            log.exception("background indexing failed")
        finally:
            self.done.set()
