"""Background WAL checkpoints for the writer's database.

The writer's connection does not checkpoint on commit (``wal_autocheckpoint`` only as a far backstop);
``Checkpointer`` runs a PASSIVE checkpoint on a connection of its own, on its own thread, after enough
commits: it never takes the write lock, so a commit never waits for one (SQLite's automatic checkpoint ran
inside every ~250th COMMIT at 2,000 msg/s: a 6-9 ms stall each time). Durability is unchanged: a commit is
in the WAL, which survives kill -9 either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# A background checkpoint starts after this many commits or rows, whichever comes first: about SQLite's own
# 1,000-page cadence, both when each message is its own commit (a few pages each) and for full batches.
CHECKPOINT_COMMITS = 250
CHECKPOINT_ROWS = 10_000


class Checkpointer:
    """PASSIVE WAL checkpoints on a connection and a thread of their own, at most one at a time.

    ``committed`` (event loop thread, after each batch) starts one once ``CHECKPOINT_COMMITS`` commits or
    ``CHECKPOINT_ROWS`` rows have been written since the last start and none is running; it returns at once. A PASSIVE checkpoint copies what it can from the WAL into the
    database without waiting for readers or the writer, and never holds the write lock: commits go on
    meanwhile. A failed checkpoint is logged (debug) and the next one tries again; the writer
    connection's ``wal_autocheckpoint`` stays as a backstop should they keep failing.
    """

    def __init__(self, path: Path, commits: int = CHECKPOINT_COMMITS, rows: int = CHECKPOINT_ROWS) -> None:
        self._path = path
        self._max_commits = commits
        self._max_rows = rows
        self._commits = 0
        self._rows = 0
        self._conn: sqlite3.Connection | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._running: asyncio.Future[None] | None = None
        self.done = 0  # checkpoints run (for tests and metrics)

    def committed(self, rows: int) -> None:
        self._commits += 1
        self._rows += rows
        if self._commits < self._max_commits and self._rows < self._max_rows:
            return
        if self._running is not None and not self._running.done():
            return
        self._commits = self._rows = 0
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
        self._running = asyncio.get_running_loop().run_in_executor(self._executor, self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.done += 1
        except sqlite3.Error as exc:
            log.debug("storage_checkpoint_failed", error=repr(exc))

    async def idle(self) -> None:
        """Return once no checkpoint of ours is running (a TRUNCATE checkpoint cannot run beside one)."""
        running = self._running
        if running is not None and not running.done():
            await asyncio.shield(running)

    async def close(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            await asyncio.shield(running)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            if self._executor is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
            else:
                conn.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # idle by now: the thread ends before close returns
            self._executor = None
