"""Retention: how many rows (and, for dead letters, bytes) each table keeps, and the pruning that keeps it so.

After a batch, a table that grew by a tenth of its limit (rows, or bytes for dead letters) gets a cutoff
(its newest rows within the limits are kept); the rows below it are then deleted in slices, one slice per
writer turn (``PRUNE_SLICE`` rows, or twice what the last batch added when that is more, so pruning always
keeps up), inside the next batch's transaction when there is one (one COMMIT), else in a transaction of
its own. Why slices: deleting 10,000 rows at once held the write lock for ~60 ms every 5 s at 2,000 msg/s,
and every message behind it waited (the committed p99). A slice is ~2 ms. At start-up the prune is whole.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from runtime.adapters.storage.engine import SqlThread

log = structlog.get_logger(__name__)

PRUNE_SLICE = 500  # rows deleted per writer turn while a table is above its retention (~2 ms)
TABLES = ("messages", "deadletters", "logs", "events")


@dataclass(frozen=True, slots=True)
class Retention:
    """Newest rows kept per table (``None`` keeps everything); dead letters are also bounded in bytes
    (payload kept, headers, detail: ``deadletters.bytes``), so that big failing bodies cannot fill the disk."""

    messages: int | None = 100_000
    deadletters: int | None = 10_000
    logs: int | None = 100_000
    events: int | None = 10_000
    deadletter_bytes: int | None = 64 * 1024 * 1024


def cutoff(conn: sqlite3.Connection, table: str, keep_rows: int | None, keep_bytes: int | None) -> int | None:
    """The highest ``seq`` to delete so that ``table`` keeps at most ``keep_rows`` rows and ``keep_bytes``."""
    found: list[int] = []
    if keep_rows is not None:
        row = conn.execute(f"SELECT seq FROM {table} ORDER BY seq DESC LIMIT 1 OFFSET ?", (max(0, keep_rows),)
                           ).fetchone()
        if row is not None:
            found.append(row[0])
    if keep_bytes is not None:
        row = conn.execute(
            f"SELECT seq FROM (SELECT seq, sum(bytes) OVER (ORDER BY seq DESC) AS total FROM {table}) "
            "WHERE total > ? ORDER BY seq DESC LIMIT 1", (max(0, keep_bytes),)).fetchone()
        if row is not None:
            found.append(row[0])
    return max(found) if found else None


def prune_slice(conn: sqlite3.Connection, table: str, cut: int, rows_max: int) -> tuple[int, bool]:
    """Delete up to ``rows_max`` of the oldest rows at or below ``cut`` (inside the caller's transaction);
    returns (rows removed, nothing left below the cutoff)."""
    lowest = conn.execute(f"SELECT min(seq) FROM {table}").fetchone()[0]
    if lowest is None or lowest > cut:
        return 0, True
    upto = min(cut, lowest + rows_max - 1)
    removed = conn.execute(f"DELETE FROM {table} WHERE seq <= ?", (upto,)).rowcount
    return removed, upto >= cut


def delete_slice(conn: sqlite3.Connection, table: str, cut: int, rows_max: int) -> tuple[int, bool]:
    """``prune_slice`` in a transaction of its own."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = prune_slice(conn, table, cut, rows_max)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class Pruner:
    """The writer's bookkeeping for retention (event loop side); the SQL runs on the writer's thread."""

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self.since = dict.fromkeys(TABLES, 0)  # rows added since the table's last cutoff
        self.since_bytes = 0  # dead-letter bytes added since the last cutoff
        self.prune_to: dict[str, int] = {}  # table -> highest seq still to delete
        self.batch_rows = 0  # rows the last batch added (the slice keeps up with it)
        self.slice_rows = PRUNE_SLICE
        self.sliced = False  # the last batch's transaction carried the slices

    def added(self, tables: dict[str, int], deadletter_bytes: int, rows: int) -> None:
        for table, n in tables.items():
            self.since[table] += n
        self.since_bytes += deadletter_bytes
        self.batch_rows += rows

    def slices(self) -> list[tuple[str, int, int]]:
        """The slices to delete inside the next batch's transaction."""
        return [(table, cut, self.slice_rows) for table, cut in self.prune_to.items()]

    def carried(self, results: list[tuple[str, int, bool]]) -> None:
        """The batch's transaction committed these slices."""
        for table, _removed, done in results:
            if done:
                self.prune_to.pop(table, None)
        self.sliced = bool(results)

    def checks(self, force: bool) -> list[tuple[str, int | None, int | None]]:
        """The tables that grew enough for a new cutoff: (table, rows kept, bytes kept)."""
        self.slice_rows = max(PRUNE_SLICE, 2 * self.batch_rows)
        self.batch_rows = 0
        out = []
        r = self.retention
        for table in TABLES:
            keep: int | None = getattr(r, table)
            keep_bytes = r.deadletter_bytes if table == "deadletters" else None
            if keep is None and keep_bytes is None:
                continue
            grew = keep is not None and self.since[table] >= max(1, keep // 10)
            grew_bytes = keep_bytes is not None and table == "deadletters" and \
                self.since_bytes >= max(1, keep_bytes // 10)
            if force or grew or grew_bytes:
                out.append((table, keep, keep_bytes))
        return out

    def found(self, table: str, cut: int | None) -> None:
        self.since[table] = 0
        if table == "deadletters":
            self.since_bytes = 0
        if cut is not None and cut > self.prune_to.get(table, -1):
            self.prune_to[table] = cut

    def pending(self, force: bool) -> list[tuple[str, int]]:
        """Cutoffs to slice now in a transaction of their own (none when the last batch carried them)."""
        sliced, self.sliced = self.sliced, False
        return list(self.prune_to.items()) if force or not sliced else []

    async def turn(self, thread: SqlThread, *, force: bool = False) -> None:
        """After a batch: a cutoff for each table that grew enough; one slice below the cutoffs (all: ``force``)."""
        for table, keep, keep_bytes in self.checks(force):
            try:
                cut = await thread.call(cutoff, table, keep, keep_bytes)
            except sqlite3.Error as exc:  # busy, full: the next batch tries again
                log.warning("storage_prune_failed", table=table, error=repr(exc))
                continue
            self.found(table, cut)
        for table, cut in self.pending(force):
            while True:
                try:
                    removed, done = await thread.call(delete_slice, table, cut, self.slice_rows)
                except sqlite3.Error as exc:  # busy: the next turn tries again
                    log.warning("storage_prune_failed", table=table, error=repr(exc))
                    break
                if removed:
                    log.debug("storage_pruned", table=table, rows=removed, up_to=cut)
                if done:
                    self.prune_to.pop(table, None)
                    break
                if not force:
                    break
