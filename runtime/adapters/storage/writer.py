"""The store's one writer: a bounded in-memory queue, drained by one task into batched transactions.

- ``offer`` (sync, O(1), meant for the event loop thread; from another thread it still wakes the writer
  safely) queues a record; when the queue is full the record is refused and counted in
  ``dropped``, never raised to the caller. Awaited operations (``submit``: device CRUD, outbox) go
  through the same queue, so they commit in order with the records queued before them; they are not
  bounded (their callers wait, which is back-pressure enough).
- The task takes up to ``batch_size`` items and commits them in ONE transaction (``BEGIN IMMEDIATE``,
  one ``executemany`` per statement). Device-state saves of the same device within a batch are
  coalesced: the last wins.
- A batch that fails for a reason other than a busy/locked/full database is rolled back and retried row
  by row, each row under a SAVEPOINT: the bad rows are counted in ``failed`` and logged, the rest commit.
- A busy/locked database is retried with full-jitter backoff. When it persists (``lock_attempts``),
  ``flush`` callers and the queued awaited operations get ``TransientError`` (those operations are
  not applied); the records stay queued and the retries go on (while closing, the batch is given up
  and counted as failed).
- Retention: after a batch, a table that grew by a tenth of its limit gets a cutoff (its newest N rows
  are kept); the rows below it are then deleted in slices, one slice per writer turn (``PRUNE_SLICE``
  rows, or twice what the last batch added when that is more, so pruning always keeps up), inside the
  next batch's transaction when it is a plain one (one COMMIT), else in a transaction of its own. Why slices: deleting 10,000 rows at once held the write lock for ~60 ms every 5 s at 2,000 msg/s,
  and every message behind it waited (the committed p99). A slice is ~2 ms. At start-up the prune is done
  whole, before any message.
- Checkpoints: the writer's connection does not checkpoint on commit (``wal_autocheckpoint`` only as a
  far backstop); ``Checkpointer`` runs a PASSIVE checkpoint on a connection of its own, on its own thread,
  after enough commits: it never takes the write lock, so a commit never waits for one (SQLite's automatic
  checkpoint ran inside every ~250th COMMIT at 2,000 msg/s: a 6-9 ms stall each time). Durability is
  unchanged: a commit is in the WAL, which survives kill -9 either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from runtime.adapters.storage import rows
from runtime.core.backoff import Backoff
from runtime.core.errors import TransientError
from runtime.core.messages import PemStatus

log = structlog.get_logger(__name__)

KINDS = ("event", "log", "message", "device")
PRUNE_SLICE = 500  # rows deleted per writer turn while a table is above its retention (~2 ms)
# A background checkpoint starts after this many commits or rows, whichever comes first: about SQLite's own
# 1,000-page cadence, both when each message is its own commit (a few pages each) and for full batches.
CHECKPOINT_COMMITS = 250
CHECKPOINT_ROWS = 10_000
_TRANSIENT_MARKERS = ("locked", "busy", "disk is full", "disk i/o error")
_DROP_LOG_INTERVAL = 10.0
_BAD_VALUE = (TypeError, ValueError, AttributeError, ArithmeticError)  # what converting a bad record raises


def is_transient(exc: BaseException) -> bool:
    """Busy, locked or full: worth retrying later. Anything else about a row is the row's fault."""
    return isinstance(exc, sqlite3.OperationalError) and any(
        m in str(exc).lower() for m in _TRANSIENT_MARKERS
    )


@dataclass(frozen=True, slots=True)
class Retention:
    """Newest rows kept per table; ``None`` keeps everything."""

    messages: int | None = 100_000
    deadletters: int | None = 10_000
    logs: int | None = 100_000
    events: int | None = 10_000


Operation = Callable[[aiosqlite.Connection], Awaitable[Any]]


@dataclass(slots=True, eq=False)
class _Op:
    fn: Operation
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


_Record = tuple[str, tuple[tuple[str, tuple[Any, ...]], ...], int]  # kind, its statements, calls


@dataclass(slots=True, eq=False)
class _Plain:
    """The records between two awaited operations, converted once into rows.

    ``grouped`` (statement -> rows, in queue order) is what the bulk commit runs; ``records`` (one per
    record) is what the row-by-row retry runs, and ``errors`` is filled only then. ``written``/``tables``
    are the counts when the whole segment commits (the usual case: no per-record accounting).
    """

    records: list[_Record]
    grouped: dict[str, list[tuple[Any, ...]]]
    written: dict[str, int]
    tables: dict[str, int]
    rows: int
    errors: list[BaseException | None] | None = None  # per record, after a careful commit
    error: BaseException | None = None  # the whole segment failed (closing on a locked database)


_Segment = _Plain | _Op


@dataclass(slots=True)
class _Prepared:
    segments: list[_Segment]
    rejected: list[tuple[str, int, BaseException]] = field(default_factory=list)


class BatchWriter:
    def __init__(
        self,
        db: aiosqlite.Connection,
        *,
        batch_size: int,
        queue_size: int,
        retention: Retention,
        lock_attempts: int,
        backoff_base: float = 0.05,
        backoff_cap: float = 2.0,
        checkpoint_path: Path | None = None,
    ) -> None:
        if batch_size < 1 or queue_size < 1 or lock_attempts < 1:
            raise ValueError("batch_size, queue_size and lock_attempts must be >= 1")
        self._db = db
        self._batch_size = batch_size
        self._queue_size = queue_size
        self._retention = retention
        self._lock_attempts = lock_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._items: deque[tuple[str, Any]] = deque()
        self._inflight: list[tuple[str, Any]] = []
        self._wakeup = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._closing = False
        self._gave_up = False
        self._accepted = 0  # items taken in (records and operations), in queue order
        self._done = 0  # items committed (or counted as failed)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._room: list[asyncio.Future[None]] = []  # producers waiting for the queue to drop below high water
        self._high_water = max(2 * batch_size, min(queue_size // 4, 4 * batch_size))
        self._callbacks: deque[tuple[int, Callable[[], None]]] = deque()  # (queue position, run once committed)
        self._since_prune = dict.fromkeys(("messages", "deadletters", "logs", "events"), 0)
        self._prune_to: dict[str, int] = {}  # table -> highest seq still to delete (rows at or below it go)
        self._batch_rows = 0  # rows the last batch added (the prune slice keeps up with it)
        self._slice_rows = PRUNE_SLICE  # rows per table the next slice may delete
        self._sliced = False  # the last batch's transaction carried the prune slices
        self._checkpointer = Checkpointer(checkpoint_path) if checkpoint_path is not None else None
        self._drop_logged_at = -_DROP_LOG_INTERVAL
        self.dropped = dict.fromkeys(KINDS, 0)
        self.written = dict.fromkeys(KINDS, 0)
        self.failed = dict.fromkeys(KINDS, 0)

    @property
    def queue_depth(self) -> int:
        return len(self._items)

    # --- producers (event loop thread) ---

    def offer(self, kind: str, value: Any) -> bool:
        if self._closing or len(self._items) >= self._queue_size:
            self.dropped[kind] += 1
            now = time.monotonic()
            if now - self._drop_logged_at >= _DROP_LOG_INTERVAL:
                self._drop_logged_at = now
                log.warning(
                    "storage_writes_dropped", kind=kind, dropped=dict(self.dropped), closing=self._closing
                )
            return False
        self._items.append((kind, value))
        self._accepted += 1
        if threading.get_ident() == self._loop_thread:
            self._wakeup.set()
        else:  # e.g. a logging handler called from a library's thread
            self._loop.call_soon_threadsafe(self._wakeup.set)
        return True

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loop, without awaiting) once everything queued so far is committed.

        This is how a QoS1 message is acknowledged only after its record is on disk. Cheap: no future,
        no task; callbacks run in queue order right after the batch that covers them.
        """
        if self._done >= self._accepted:
            callback()
        else:
            self._callbacks.append((self._accepted, callback))

    async def writable(self) -> None:
        """Return once the queue is below its high-water mark (at once when it is).

        Back-pressure for a producer that can wait (the message worker): it keeps the queue, and the
        memory it holds, small, instead of filling it up to ``queue_size`` and dropping records.
        """
        if len(self._items) < self._high_water or self._closing:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._room.append(future)
        try:
            await future
        finally:
            if not future.done():
                future.cancel()

    async def submit(self, fn: Operation) -> Any:
        """Run ``fn(db)`` inside the writer's next transaction; return its result once committed."""
        if self._closing:
            raise TransientError("storage is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._items.append(("op", _Op(fn, future)))
        self._accepted += 1
        self._wakeup.set()
        return await future

    async def flush(self) -> None:
        target = self._accepted
        if self._done >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await future

    def close(self) -> None:
        """Refuse new writes; ``run`` returns once everything queued so far is committed."""
        self._closing = True
        self._release_room(all_=True)
        self._wakeup.set()

    # --- the writer task ---

    async def run(self) -> None:
        try:
            await self._prune(force=True)
            while True:
                if not self._items:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                n = min(self._batch_size, len(self._items))
                batch = [self._items.popleft() for _ in range(n)]
                self._inflight = batch
                try:
                    await self._write(batch)
                except Exception as exc:  # a bug in here must not end the writer: count, log, go on
                    log.exception("storage_batch_lost", rows=n)
                    self._abandon(batch, exc)
                self._inflight = []
                self._done += n
                if self._gave_up:  # closing on a database that stays locked: do not wait out every batch
                    rest = list(self._items)
                    self._items.clear()
                    self._abandon(rest, TransientError("storage closed while the database was locked"))
                    self._done += len(rest)
                    log.error("storage_writes_given_up", rows=len(rest))
                self._release_waiters()
                await self._prune()
                if self._checkpointer is not None:
                    self._checkpointer.committed(n)
        finally:
            if self._checkpointer is not None:
                await self._checkpointer.close()
            stopped = TransientError("storage writer stopped")
            self._release_room(all_=True)
            self._fail_waiters(stopped)
            for kind, value in [*self._inflight, *self._items]:  # only when cancelled: count what is lost
                if kind != "op":
                    self.dropped[kind] += 1
                elif not value.future.done():
                    value.future.set_exception(stopped)
            self._inflight = []
            self._items.clear()

    def _release_room(self, *, all_: bool = False) -> None:
        if self._room and (all_ or len(self._items) < self._high_water):
            room, self._room = self._room, []
            for future in room:
                if not future.done():
                    future.set_result(None)

    def _release_waiters(self) -> None:
        self._release_room()
        callbacks, done = self._callbacks, self._done
        while callbacks and callbacks[0][0] <= done:
            callback = callbacks.popleft()[1]
            try:
                callback()
            except Exception:  # a failing callback (an ack on a dead connection) must not stop the writer
                log.exception("storage_commit_callback_failed")
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiters:
            if future.done():
                continue
            if target <= self._done:
                future.set_result(None)
            else:
                keep.append((target, future))
        self._waiters = keep

    def _fail_waiters(self, exc: BaseException) -> None:
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                future.set_exception(exc)

    def _abandon(self, batch: list[tuple[str, Any]], exc: BaseException) -> None:
        for kind, value in batch:
            if kind == "op":
                if not value.future.done():
                    value.future.set_exception(exc)
            else:
                self.failed[kind] += 1

    async def _write(self, batch: list[tuple[str, Any]]) -> None:
        prepared = self._prepare(batch)
        backoff: Backoff | None = None  # made on the first busy retry (seeding a Random per batch is not free)
        careful = False
        attempt = 0
        while True:
            try:
                if careful:
                    await self._commit_careful(prepared.segments)
                else:
                    await self._commit_bulk(prepared.segments)
                break
            except Exception as exc:
                if not is_transient(exc):
                    if careful:
                        raise
                    careful = True
                    log.warning("storage_batch_failed", error=repr(exc), retry="row_by_row")
                    continue
                attempt += 1
                if attempt >= self._lock_attempts:
                    error = TransientError(f"database busy after {attempt} attempts: {exc}")
                    error.__cause__ = exc
                    self._fail_waiters(error)
                    self._fail_ops(prepared, error)
                    for kind, value in self._items:  # queued behind: told now, skipped when their turn comes
                        if kind == "op" and not value.future.done():
                            value.future.set_exception(error)
                    if self._closing:
                        log.error("storage_batch_given_up", error=str(exc), attempts=attempt)
                        self._gave_up = True
                        for seg in prepared.segments:
                            if isinstance(seg, _Plain):
                                seg.error = error
                        break
                if backoff is None:
                    backoff = Backoff(base=self._backoff_base, cap=self._backoff_cap)
                delay = backoff.next_delay()
                log.warning("storage_busy", error=str(exc), attempt=attempt, delay=round(delay, 3))
                await asyncio.sleep(delay)
        self._account(prepared)

    def _fail_ops(self, prepared: _Prepared, exc: BaseException) -> None:
        """Callers of awaited operations hear about a stuck database; their operations are dropped."""
        for seg in prepared.segments:
            if isinstance(seg, _Op) and not seg.future.done():
                seg.future.set_exception(exc)
        prepared.segments = [seg for seg in prepared.segments if isinstance(seg, _Plain)]

    def _prepare(self, batch: list[tuple[str, Any]]) -> _Prepared:
        prepared = _Prepared([])
        plain: list[tuple[str, Any]] = []
        for kind, value in batch:
            if kind == "op":
                if value.future.done():  # its caller gave up or was told it failed: do not apply it
                    continue
                if plain:
                    prepared.segments.append(self._units(plain, prepared))
                    plain = []
                prepared.segments.append(value)
            else:
                plain.append((kind, value))
        if plain:
            prepared.segments.append(self._units(plain, prepared))
        return prepared

    def _units(self, items: list[tuple[str, Any]], prepared: _Prepared) -> _Plain:
        records: list[_Record] = []
        grouped: dict[str, list[tuple[Any, ...]]] = {}
        written = dict.fromkeys(KINDS, 0)
        tables = dict.fromkeys(self._since_prune, 0)
        rows_total = 0
        devices: dict[str, tuple[Any, int]] = {}
        failed_status = PemStatus.FAILED
        insert_message = rows.INSERT_MESSAGE
        message_params = rows.message_params
        for kind, value in items:
            if kind == "device":
                previous = devices.get(value.device_id)
                devices[value.device_id] = (value, 1 if previous is None else previous[1] + 1)
                continue
            try:
                if kind == "message" and value.status != failed_status:  # the usual record, inlined
                    stmts: tuple[tuple[str, tuple[Any, ...]], ...] = ((insert_message, message_params(value)),)
                else:
                    stmts = _statements(kind, value)
            except _BAD_VALUE as exc:  # e.g. detail that is not JSON: that record fails, not the batch
                prepared.rejected.append((kind, 1, exc))
                continue
            records.append((kind, stmts, 1))
            written[kind] += 1
            for sql, params in stmts:
                many = grouped.get(sql)
                if many is None:
                    many = grouped[sql] = []
                many.append(params)
                tables[_TABLE_OF[sql]] += 1
                rows_total += 1
        now = time.time()
        for device, calls in devices.values():
            try:
                params = rows.device_params(device, now)
            except _BAD_VALUE as exc:
                prepared.rejected.append(("device", calls, exc))
                continue
            records.append(("device", ((rows.SAVE_DEVICE_STATE, params),), calls))
            written["device"] += calls
            grouped.setdefault(rows.SAVE_DEVICE_STATE, []).append(params)
            rows_total += 1
        return _Plain(records, grouped, written, tables, rows_total)

    async def _commit_bulk(self, segments: list[_Segment]) -> None:
        db = self._db
        in_thread = getattr(db, "_execute", None)
        if in_thread is not None and not any(isinstance(seg, _Op) for seg in segments):
            # Records only (the usual batch): the whole transaction is one call on the connection's thread,
            # not four awaited round trips that each wait for an event-loop turn behind the message worker.
            if len(segments) == 1:
                grouped = segments[0].grouped  # type: ignore[union-attr]
            else:
                grouped = {}
                for seg in segments:
                    for sql, many in seg.grouped.items():  # type: ignore[union-attr]
                        grouped.setdefault(sql, []).extend(many)
            # A pending prune slice goes into the same transaction: one COMMIT, and the index pages both
            # touch are written to the WAL once.
            slices = [(table, cutoff, self._slice_rows) for table, cutoff in self._prune_to.items()]
            pruned = await in_thread(_commit_rows, db._conn, grouped, slices)
            for table, removed, done in pruned:
                if removed:
                    log.debug("storage_pruned", table=table, rows=removed, up_to=self._prune_to.get(table))
                if done:
                    self._prune_to.pop(table, None)
            self._sliced = bool(slices)
            return
        await db.execute("BEGIN IMMEDIATE")
        try:
            for seg in segments:
                if isinstance(seg, _Op):
                    seg.result = await seg.fn(db)
                    continue
                for sql, many in seg.grouped.items():
                    await db.executemany(sql, many)
            await db.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise

    async def _commit_careful(self, segments: list[_Segment]) -> None:
        db = self._db
        await db.execute("BEGIN IMMEDIATE")
        try:
            for seg in segments:
                if isinstance(seg, _Op):
                    seg.error = await self._savepoint(seg.fn, None)
                    continue
                seg.errors = [await self._savepoint(None, stmts) for _, stmts, _ in seg.records]
            await db.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise

    async def _savepoint(
        self, op: _Op | None, stmts: tuple[tuple[str, tuple[Any, ...]], ...] | None
    ) -> BaseException | None:
        """One record (or operation) under a SAVEPOINT: its error, rolled back, or None."""
        db = self._db
        await db.execute("SAVEPOINT unit")
        error: BaseException | None = None
        try:
            if op is not None:
                op.result = await op.fn(db)
            else:
                for sql, params in stmts or ():
                    await db.execute(sql, params)
        except Exception as exc:
            if is_transient(exc):
                raise
            await db.execute("ROLLBACK TO unit")
            error = exc
        await db.execute("RELEASE unit")
        return error

    async def _rollback(self) -> None:
        try:
            await self._db.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass  # no transaction active: BEGIN itself failed

    def _account(self, prepared: _Prepared) -> None:
        failures: dict[str, tuple[int, BaseException]] = {}
        for kind, calls, exc in prepared.rejected:
            count, first = failures.get(kind, (0, exc))
            failures[kind] = (count + calls, first)
        for seg in prepared.segments:
            if isinstance(seg, _Op):
                if seg.future.done():
                    continue
                if seg.error is None:
                    seg.future.set_result(seg.result)
                else:
                    seg.future.set_exception(seg.error)
                continue
            if seg.error is None and seg.errors is None:  # the whole segment committed (the usual case)
                self._batch_rows += seg.rows
                for kind, calls in seg.written.items():
                    self.written[kind] += calls
                for table, added in seg.tables.items():
                    self._since_prune[table] += added
                continue
            errors = seg.errors if seg.error is None else [seg.error] * len(seg.records)
            for (kind, stmts, calls), error in zip(seg.records, errors, strict=True):
                if error is None:
                    self._batch_rows += len(stmts)
                    self.written[kind] += calls
                    for sql, _ in stmts:
                        table = _TABLE_OF.get(sql)
                        if table:
                            self._since_prune[table] += 1
                else:
                    count, first = failures.get(kind, (0, error))
                    failures[kind] = (count + calls, first)
        for kind, (count, first) in failures.items():
            self.failed[kind] += count
            log.error("storage_rows_failed", kind=kind, count=count, error=repr(first))

    # --- retention ---

    async def _prune(self, *, force: bool = False) -> None:
        """Set a cutoff for each table that grew enough; delete one slice below the cutoffs (all: ``force``)."""
        slice_rows = self._slice_rows = max(PRUNE_SLICE, 2 * self._batch_rows)
        self._batch_rows = 0
        sliced, self._sliced = self._sliced, False
        for table in self._since_prune:
            keep: int | None = getattr(self._retention, table)
            if keep is None:
                continue
            if not force and self._since_prune[table] < max(1, keep // 10):
                continue
            try:
                found = await self._db.execute_fetchall(
                    f"SELECT seq FROM {table} ORDER BY seq DESC LIMIT 1 OFFSET ?", (max(0, keep),)
                )
            except sqlite3.Error as exc:  # busy: the next batch tries again
                log.warning("storage_prune_failed", table=table, error=repr(exc))
                continue
            self._since_prune[table] = 0
            cutoff = next(iter(found))[0] if found else None
            if cutoff is not None and cutoff > self._prune_to.get(table, -1):
                self._prune_to[table] = cutoff
        for table, cutoff in list(self._prune_to.items()) if force or not sliced else ():
            while True:
                try:
                    removed, done = await self._prune_slice(table, cutoff, slice_rows)
                except sqlite3.Error as exc:  # busy: the next turn tries again
                    log.warning("storage_prune_failed", table=table, error=repr(exc))
                    break
                if removed:
                    log.debug("storage_pruned", table=table, rows=removed, up_to=cutoff)
                if done:
                    del self._prune_to[table]
                    break
                if not force:
                    break

    async def _prune_slice(self, table: str, cutoff: int, rows_max: int) -> tuple[int, bool]:
        """Delete up to ``rows_max`` of the oldest rows at or below ``cutoff``; (rows removed, nothing left)."""
        db = self._db
        in_thread = getattr(db, "_execute", None)
        if in_thread is not None:  # one call on the connection's thread, not four awaited round trips
            result: tuple[int, bool] = await in_thread(_delete_slice, db._conn, table, cutoff, rows_max)
            return result
        lowest = next(iter(await db.execute_fetchall(f"SELECT min(seq) FROM {table}")))[0]
        if lowest is None or lowest > cutoff:
            return 0, True
        upto = min(cutoff, lowest + rows_max - 1)
        await db.execute("BEGIN IMMEDIATE")
        try:
            cursor = await db.execute(f"DELETE FROM {table} WHERE seq <= ?", (upto,))
            await db.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        return cursor.rowcount, upto >= cutoff


def _slice(conn: sqlite3.Connection, table: str, cutoff: int, rows_max: int) -> tuple[int, bool]:
    """Delete up to ``rows_max`` of the oldest rows at or below ``cutoff`` (inside the caller's transaction)."""
    lowest = conn.execute(f"SELECT min(seq) FROM {table}").fetchone()[0]
    if lowest is None or lowest > cutoff:
        return 0, True
    upto = min(cutoff, lowest + rows_max - 1)
    removed = conn.execute(f"DELETE FROM {table} WHERE seq <= ?", (upto,)).rowcount
    return removed, upto >= cutoff


def _delete_slice(conn: sqlite3.Connection, table: str, cutoff: int, rows_max: int) -> tuple[int, bool]:
    """``_prune_slice`` on the aiosqlite thread: one slice in a transaction of its own."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = _slice(conn, table, cutoff, rows_max)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


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
            self._executor.shutdown(wait=False)
            self._executor = None


_chain = itertools.chain.from_iterable
_ROWS_PER_STATEMENT = 128  # x <= 15 columns: far below SQLite's 32,766 variables per statement
_multi_sql: dict[tuple[str, int], str | None] = {}


def _multi_row(sql: str, k: int) -> str | None:
    """``INSERT ... VALUES (?, ...) [tail]`` with ``k`` value tuples, or None for any other statement."""
    key = (sql, k)
    if key not in _multi_sql:
        head, sep, rest = sql.partition(" VALUES (")
        close = rest.find(")")
        if not sep or not head.lstrip().upper().startswith("INSERT") or close < 0 or "(" in rest[:close]:
            _multi_sql[key] = None
        else:
            group = "(" + rest[: close + 1]
            _multi_sql[key] = head + " VALUES " + ", ".join([group] * k) + rest[close + 1:]
    return _multi_sql[key]


def _insert_many(conn: sqlite3.Connection, sql: str, many: list[tuple[Any, ...]]) -> None:
    """``executemany``, but up to ``_ROWS_PER_STATEMENT`` rows per statement (same rows, same order).

    Why: sqlite3 releases the GIL around every ``sqlite3_step``, i.e. per row with ``executemany``; with the
    event loop busy, each re-acquisition waits for the loop thread to give the GIL up (a convoy), so a
    500-row batch took longer than the loop needs to process it. One multi-row statement is one step.
    """
    n = len(many)
    step = _ROWS_PER_STATEMENT
    i = 0
    while n - i >= 2:
        k = min(step, n - i)
        multi = _multi_row(sql, k)
        if multi is None:
            break
        conn.execute(multi, list(_chain(many[i:i + k])))
        i += k
    if i < n:
        conn.executemany(sql, many[i:])


def _commit_rows(
    conn: sqlite3.Connection,
    grouped: dict[str, list[tuple[Any, ...]]],
    slices: list[tuple[str, int, int]] = [],  # noqa: B006 - read only
) -> list[tuple[str, int, bool]]:
    """One transaction of plain record rows, then the prune ``slices`` (table, cutoff, rows at most); runs on
    the aiosqlite thread (``_commit_bulk``). Returns (table, rows removed, nothing left below the cutoff)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, many in grouped.items():
            _insert_many(conn, sql, many)
        pruned = [(table, *_slice(conn, table, cutoff, rows_max)) for table, cutoff, rows_max in slices]
        conn.execute("COMMIT")
        return pruned
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


_TABLE_OF = {
    rows.INSERT_MESSAGE: "messages",
    rows.INSERT_DEADLETTER: "deadletters",
    rows.INSERT_LOG: "logs",
    rows.INSERT_EVENT: "events",
}


def _statements(kind: str, value: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """One record's statements (a Failed message is two: the record and its dead letter)."""
    if kind == "message":
        base = rows.message_params(value)
        if value.status == PemStatus.FAILED:
            return ((rows.INSERT_MESSAGE, base), (rows.INSERT_DEADLETTER, rows.deadletter_params(value, base)))
        return ((rows.INSERT_MESSAGE, base),)
    if kind == "log":
        at, level, event, fields = value
        return ((rows.INSERT_LOG, (at, level, event, rows.dumps_lenient(fields))),)
    if kind == "event":
        return ((rows.INSERT_EVENT, value),)
    raise ValueError(f"unknown record kind {kind!r}")
