"""The SQLite side: one ``sqlite3`` connection per thread of its own, and the functions that run there.

``SqlThread`` owns a connection that only its thread touches (the writer's, the reader's); ``call`` runs a
plain function on that thread and awaits its result. A whole transaction is one call (``commit``): the
event loop never waits for a turn in the middle of one, and a transaction never stays open across calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from runtime.adapters.storage.faults import Fault, classify
from runtime.adapters.storage.items import Op, Segment
from runtime.adapters.storage.retention import prune_slice
from runtime.adapters.storage.rows import Insert

T = TypeVar("T")

WAL_AUTOCHECKPOINT_BACKSTOP = 20_000  # pages: only should the Checkpointer keep failing (an 80 MB WAL)
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024  # bytes the WAL is truncated to when a checkpoint resets it


class SqlThread:
    """A connection and the one thread that uses it."""

    def __init__(self, name: str) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    async def open(self, path: Path, *, busy_timeout_ms: int, reader: bool) -> None:
        self._conn = await self._run(_connect, path, busy_timeout_ms, reader)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the connection's thread."""
        return await self._run(fn, self._conn, *args)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                await self._run(conn.close)
        finally:
            self._executor.shutdown(wait=True)  # idle by now: the thread ends before close returns


def _connect(path: Path, busy_timeout_ms: int, reader: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if reader:
            conn.execute("PRAGMA query_only = ON")
        else:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"could not switch to WAL mode (got {mode})")
            # Checkpoints run beside the writer (checkpoint.Checkpointer), not inside its COMMITs; this is
            # only the backstop. journal_size_limit: a WAL that grew (a burst, a seed) shrinks back when reset.
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_BACKSTOP}")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a commit survives a process crash
    except BaseException:
        conn.close()
        raise
    return conn


def fetchall(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def quick_check(conn: sqlite3.Connection) -> str | None:
    """``PRAGMA quick_check``: None when the file is sound, else SQLite's first findings."""
    found = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
    return None if found == ["ok"] else "; ".join(found)


def checkpoint_truncate(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """Copy the whole WAL into the database and truncate it (after a big write such as seeding devices)."""
    busy, pages, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return busy, pages, done


# --- the one commit path ----------------------------------------------------------------------------------

_chain = itertools.chain.from_iterable
ROWS_PER_STATEMENT = 128  # x <= 19 columns: far below SQLite's 32,766 variables per statement


def insert_many(conn: sqlite3.Connection, stmt: Insert, many: list[tuple[Any, ...]]) -> None:
    """``executemany``, but up to ``ROWS_PER_STATEMENT`` rows per statement (same rows, same order).

    Why: sqlite3 releases the GIL around every ``sqlite3_step``, i.e. per row with ``executemany``; with the
    event loop busy, each re-acquisition waits for the loop thread to give the GIL up (a convoy), so a
    500-row batch took longer than the loop needs to process it. One multi-row statement is one step.
    """
    n = len(many)
    i = 0
    while n - i >= 2:
        k = min(ROWS_PER_STATEMENT, n - i)
        conn.execute(stmt.many(k), list(_chain(many[i:i + k])))
        i += k
    if i < n:
        conn.execute(stmt.sql, many[i])


def commit(
    conn: sqlite3.Connection,
    segments: list[Segment],
    slices: list[tuple[str, int, int]],
    careful: bool,
) -> list[tuple[str, int, bool]]:
    """One transaction: the segments in queue order, then the prune ``slices`` (table, cutoff, rows at most).

    Bulk (``careful`` false): any error rolls everything back and is raised. Careful: each record (or
    operation) runs under a SAVEPOINT; a row's own error is kept in ``Plain.errors``/``Op.error`` and the
    rest commits; a store fault (busy, full, damaged) still rolls back and is raised.
    Returns (table, rows removed, nothing left below the cutoff) per slice.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        for seg in segments:
            if isinstance(seg, Op):
                if careful:
                    seg.error = _savepoint(conn, seg, ())
                else:
                    seg.result = seg.fn(conn)
            elif careful:  # the writer built the units (batch.careful_units) before asking for this
                seg.errors = [_savepoint(conn, None, stmts) for _, stmts, _ in seg.units or ()]
            else:
                for stmt, many in seg.grouped.items():
                    insert_many(conn, stmt, many)
        pruned = [(table, *prune_slice(conn, table, cutoff, most)) for table, cutoff, most in slices]
        conn.execute("COMMIT")
        return pruned
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _savepoint(conn: sqlite3.Connection, op: Op | None, stmts: tuple[tuple[Insert, tuple[Any, ...]], ...]
               ) -> BaseException | None:
    """One record (or operation) under a SAVEPOINT: its own error, rolled back, or None."""
    conn.execute("SAVEPOINT unit")
    error: BaseException | None = None
    try:
        if op is not None:
            op.result = op.fn(conn)
        else:
            for stmt, params in stmts:
                conn.execute(stmt.sql, params)
    except Exception as exc:
        if classify(exc) is not Fault.ROW:
            raise
        conn.execute("ROLLBACK TO unit")
        error = exc
    conn.execute("RELEASE unit")
    return error

