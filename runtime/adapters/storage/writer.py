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
- Retention: after a batch, a table that grew by a tenth of its limit is pruned to its newest N rows,
  in chunks of ``PRUNE_CHUNK`` rows per transaction: never per insert.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import structlog

from runtime.adapters.storage import rows
from runtime.core.backoff import Backoff
from runtime.core.errors import TransientError
from runtime.core.messages import PemStatus

log = structlog.get_logger(__name__)

KINDS = ("event", "log", "message", "device")
PRUNE_CHUNK = 10_000
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


@dataclass(slots=True, eq=False)
class _Unit:
    """One record's statements (a Failed message is two: the record and its dead letter)."""

    kind: str
    stmts: list[tuple[str, tuple[Any, ...]]]
    calls: int = 1  # records it stands for (> 1 for coalesced device saves)
    error: BaseException | None = None


_Segment = list[_Unit] | _Op


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
        finally:
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
        backoff = Backoff(base=self._backoff_base, cap=self._backoff_cap)
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
                            for unit in seg if isinstance(seg, list) else ():
                                unit.error = error
                        break
                delay = backoff.next_delay()
                log.warning("storage_busy", error=str(exc), attempt=attempt, delay=round(delay, 3))
                await asyncio.sleep(delay)
        self._account(prepared)

    def _fail_ops(self, prepared: _Prepared, exc: BaseException) -> None:
        """Callers of awaited operations hear about a stuck database; their operations are dropped."""
        for seg in prepared.segments:
            if isinstance(seg, _Op) and not seg.future.done():
                seg.future.set_exception(exc)
        prepared.segments = [seg for seg in prepared.segments if isinstance(seg, list)]

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

    def _units(self, items: list[tuple[str, Any]], prepared: _Prepared) -> list[_Unit]:
        units: list[_Unit] = []
        devices: dict[str, tuple[Any, int]] = {}
        for kind, value in items:
            if kind == "device":
                previous = devices.get(value.device_id)
                devices[value.device_id] = (value, 1 if previous is None else previous[1] + 1)
                continue
            try:
                units.append(_unit(kind, value))
            except _BAD_VALUE as exc:  # e.g. detail that is not JSON: that record fails, not the batch
                prepared.rejected.append((kind, 1, exc))
        now = time.time()
        for device, calls in devices.values():
            try:
                units.append(
                    _Unit("device", [(rows.SAVE_DEVICE_STATE, rows.device_params(device, now))], calls)
                )
            except _BAD_VALUE as exc:
                prepared.rejected.append(("device", calls, exc))
        return units

    async def _commit_bulk(self, segments: list[_Segment]) -> None:
        db = self._db
        in_thread = getattr(db, "_execute", None)
        if in_thread is not None and not any(isinstance(seg, _Op) for seg in segments):
            # Records only (the usual batch): the whole transaction is one call on the connection's thread,
            # not four awaited round trips that each wait for an event-loop turn behind the message worker.
            grouped: dict[str, list[tuple[Any, ...]]] = {}
            for seg in segments:
                for unit in seg:  # type: ignore[union-attr]
                    for sql, params in unit.stmts:
                        grouped.setdefault(sql, []).append(params)
            await in_thread(_commit_rows, db._conn, grouped)
            return
        await db.execute("BEGIN IMMEDIATE")
        try:
            for seg in segments:
                if isinstance(seg, _Op):
                    seg.result = await seg.fn(db)
                    continue
                grouped: dict[str, list[tuple[Any, ...]]] = {}
                for unit in seg:
                    for sql, params in unit.stmts:
                        grouped.setdefault(sql, []).append(params)
                for sql, many in grouped.items():
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
                for unit in [seg] if isinstance(seg, _Op) else seg:
                    unit.error = None
                    await db.execute("SAVEPOINT unit")
                    try:
                        if isinstance(unit, _Op):
                            unit.result = await unit.fn(db)
                        else:
                            for sql, params in unit.stmts:
                                await db.execute(sql, params)
                    except Exception as exc:
                        if is_transient(exc):
                            raise
                        await db.execute("ROLLBACK TO unit")
                        unit.error = exc
                    await db.execute("RELEASE unit")
            await db.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise

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
            for unit in seg:
                if unit.error is None:
                    self.written[unit.kind] += unit.calls
                    for sql, _ in unit.stmts:
                        table = _TABLE_OF.get(sql)
                        if table:
                            self._since_prune[table] += 1
                else:
                    count, first = failures.get(unit.kind, (0, unit.error))
                    failures[unit.kind] = (count + unit.calls, first)
        for kind, (count, first) in failures.items():
            self.failed[kind] += count
            log.error("storage_rows_failed", kind=kind, count=count, error=repr(first))

    # --- retention ---

    async def _prune(self, *, force: bool = False) -> None:
        for table in self._since_prune:
            keep: int | None = getattr(self._retention, table)
            if keep is None:
                continue
            if not force and self._since_prune[table] < max(1, keep // 10):
                continue
            try:
                removed = await self._prune_table(table, keep)
            except sqlite3.Error as exc:  # busy: the next batch tries again
                log.warning("storage_prune_failed", table=table, error=repr(exc))
                continue
            self._since_prune[table] = 0
            if removed:
                log.debug("storage_pruned", table=table, rows=removed, kept=keep)

    async def _prune_table(self, table: str, keep: int) -> int:
        db = self._db
        found = await db.execute_fetchall(
            f"SELECT seq FROM {table} ORDER BY seq DESC LIMIT 1 OFFSET ?", (max(0, keep),)
        )
        if not found:
            return 0
        cutoff = next(iter(found))[0]
        removed = 0
        while True:
            lowest = next(iter(await db.execute_fetchall(f"SELECT min(seq) FROM {table}")))[0]
            if lowest is None or lowest > cutoff:
                return removed
            await db.execute("BEGIN IMMEDIATE")
            try:
                cursor = await db.execute(
                    f"DELETE FROM {table} WHERE seq <= ?", (min(cutoff, lowest + PRUNE_CHUNK - 1),)
                )
                await db.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise
            removed += cursor.rowcount


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
        conn.execute(multi, [v for row in many[i:i + k] for v in row])
        i += k
    if i < n:
        conn.executemany(sql, many[i:])


def _commit_rows(conn: sqlite3.Connection, grouped: dict[str, list[tuple[Any, ...]]]) -> None:
    """One transaction of plain record rows; runs on the aiosqlite thread (``_commit_bulk``)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, many in grouped.items():
            _insert_many(conn, sql, many)
        conn.execute("COMMIT")
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


def _unit(kind: str, value: Any) -> _Unit:
    if kind == "message":
        base = rows.message_params(value)
        if value.status == PemStatus.FAILED:
            return _Unit(
                kind,
                [(rows.INSERT_MESSAGE, base), (rows.INSERT_DEADLETTER, rows.deadletter_params(value, base))],
            )
        return _Unit(kind, [(rows.INSERT_MESSAGE, base)])
    if kind == "log":
        at, level, event, fields = value
        return _Unit(kind, [(rows.INSERT_LOG, (at, level, event, rows.dumps_lenient(fields)))])
    if kind == "event":
        return _Unit(kind, [(rows.INSERT_EVENT, value)])
    raise ValueError(f"unknown record kind {kind!r}")
