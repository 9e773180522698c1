"""The store's one writer: a bounded in-memory queue, drained by one task into batched transactions that run on
the writer's own thread and ``sqlite3`` connection (``engine.SqlThread``).

- ``offer`` (sync, O(1), meant for the event loop thread; from another thread it still wakes the writer
  safely) queues a record; when the queue is full the record is refused and counted in ``dropped``, never
  raised to the caller. Awaited operations (``submit``: device CRUD, outbox) go through the same queue, so
  they commit in order with the records queued before them; they are not bounded (their callers wait).
- The task takes up to ``batch_size`` items and commits them in ONE transaction (``engine.commit``: one
  call on the writer's thread). Device-state saves of the same device within a batch are coalesced.
- ``after_commit`` callbacks (the QoS1 PUBACK, the AMQP ack) run only once the records queued before them
  are committed. A record the database refuses for its own content (a constraint, a value it cannot store)
  is counted in ``failed`` and the rest of its batch commits (row by row under SAVEPOINTs).
- Store faults are classified by their SQLite result code (``faults.classify``). Busy/locked: retried with
  full-jitter backoff; disk full, I/O error, read-only: the batch is kept and retried until it commits, the
  writer reports itself degraded (``fault``: ``/ready`` 503) meanwhile and recovers by itself. After
  ``lock_attempts``, ``flush`` callers and queued operations get ``TransientError`` naming the fault (the
  records stay queued). A damaged file (corrupt, not a database) cannot be retried: that batch is lost,
  counted in ``lost``, its acknowledgements are never sent, and ``on_fault`` listeners hear (the app moves
  the instance to FatalError). While closing, a stuck batch is given up after ``lock_attempts`` (``failed``).
- Retention and checkpoints: ``retention.Pruner`` and ``checkpoint.Checkpointer``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from runtime.adapters.storage import engine
from runtime.adapters.storage.batch import account, careful_units, prepare
from runtime.adapters.storage.checkpoint import Checkpointer
from runtime.adapters.storage.engine import SqlThread
from runtime.adapters.storage.faults import Fault, classify, explain
from runtime.adapters.storage.items import (
    KINDS,
    Item,
    Limits,
    Op,
    Operation,
    Plain,
    Prepared,
    Record,
    kind_of,
)
from runtime.adapters.storage.retention import PRUNE_SLICE, Pruner, Retention, delete_slice
from runtime.core.backoff import Backoff
from runtime.core.errors import TransientError

__all__ = ["PRUNE_SLICE", "BatchWriter", "Checkpointer", "Retention", "_delete_slice"]

log = structlog.get_logger(__name__)

_delete_slice = delete_slice  # the name the hot-path tests use
_DROP_LOG_INTERVAL = 10.0
_FAULT_LOG_INTERVAL = 60.0


class BatchWriter:
    def __init__(
        self,
        thread: SqlThread,
        *,
        path: Path,
        batch_size: int,
        queue_size: int,
        retention: Retention,
        lock_attempts: int,
        limits: Limits | None = None,
        backoff_base: float = 0.05,
        backoff_cap: float = 2.0,
        checkpoint: bool = True,
    ) -> None:
        if batch_size < 1 or queue_size < 1 or lock_attempts < 1:
            raise ValueError("batch_size, queue_size and lock_attempts must be >= 1")
        self._thread = thread
        self._path = path
        self._batch_size = batch_size
        self._queue_size = queue_size
        self._lock_attempts = lock_attempts
        self._limits = limits or Limits()
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._items: deque[Item] = deque()
        self._inflight: list[Item] = []
        self._ops = 0  # awaited operations in ``_items`` (a batch without one needs no scan)
        self._wakeup = asyncio.Event()
        self._idle = False  # the writer task waits on ``_wakeup`` (only then does ``offer`` set it)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._closing = False
        self._gave_up = False
        self._accepted = 0  # items taken in (records and operations), in queue order
        self._done = 0  # items committed (or counted as failed or lost)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._room: list[asyncio.Future[None]] = []  # producers waiting for the queue to drop below high water
        self._high_water = max(2 * batch_size, min(queue_size // 4, 4 * batch_size))
        self._callbacks: deque[tuple[int, Callable[[], None]]] = deque()  # (queue position, run once committed)
        self._pruner = Pruner(retention)
        self._checkpointer = Checkpointer(path) if checkpoint else None
        self._drop_logged_at = -_DROP_LOG_INTERVAL
        self._fault_logged_at = -_FAULT_LOG_INTERVAL
        self._fault_listeners: list[Callable[[Fault, str], None]] = []
        self.fault: Fault | None = None  # what keeps commits from happening now (None: healthy)
        self.fault_reason: str | None = None
        self.dropped = dict.fromkeys(KINDS, 0)
        self.written = dict.fromkeys(KINDS, 0)
        self.failed = dict.fromkeys(KINDS, 0)
        self.lost = dict.fromkeys(KINDS, 0)  # taken in, never committed (damaged store, writer bug)
        self.unacked = 0  # acknowledgements never sent because their record was not committed
        self.batches = 0  # batches taken from the queue (one transaction each when healthy)

    @property
    def queue_depth(self) -> int:
        return len(self._items)

    @property
    def waiting_acks(self) -> int:
        """Acknowledgements held until their records commit."""
        return len(self._callbacks)

    def on_fault(self, callback: Callable[[Fault, str], None]) -> None:
        """``callback(fault, reason)`` on the loop when the store is damaged (the instance cannot go on)."""
        self._fault_listeners.append(callback)

    # --- producers (event loop thread) ---

    def offer(self, record: Record) -> bool:
        if self._closing or len(self._items) >= self._queue_size:
            kind = kind_of(record)
            self.dropped[kind] += 1
            now = time.monotonic()
            if now - self._drop_logged_at >= _DROP_LOG_INTERVAL:
                self._drop_logged_at = now
                log.warning("storage_writes_dropped", kind=kind.value, dropped=dict(self.dropped),
                            closing=self._closing)
            return False
        self._items.append(record)
        self._accepted += 1
        if self._idle:  # the writer waits for work (while it writes, it finds this record when it looks again)
            if threading.get_ident() == self._loop_thread:
                self._idle = False
                self._wakeup.set()
            else:  # e.g. a logging handler called from a library's thread
                self._loop.call_soon_threadsafe(self._wakeup.set)
        return True

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loop, without awaiting) once everything queued so far is committed.

        This is how a QoS1 message is acknowledged only after its record is on disk. When its batch cannot
        be committed (a damaged store), the callback is never called (counted in ``unacked``).
        """
        if self._done >= self._accepted:
            callback()
        else:
            self._callbacks.append((self._accepted, callback))

    async def writable(self) -> None:
        """Return once the queue is below its high-water mark (at once when it is): back-pressure for a
        producer that can wait (the message worker), so the queue stays small instead of dropping records."""
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
        """Run ``fn(connection)`` on the writer's thread inside its next transaction; its result once committed."""
        if self._closing:
            raise TransientError("storage is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._items.append(Op(fn, future))
        self._ops += 1
        self._accepted += 1
        self._wakeup.set()
        return await future

    async def flush(self) -> None:
        target = self._accepted
        if self._done >= target:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((target, future))
        await future

    async def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it, between two batches (after seeding devices)."""
        for attempt in range(1, 6):
            if self._checkpointer is not None:
                await self._checkpointer.idle()
            busy, pages, done = await self._thread.call(engine.checkpoint_truncate)
            if not busy:
                break
            await asyncio.sleep(0.05 * attempt)  # a reader or our PASSIVE checkpoint: shortly again
        log.info("storage_checkpointed", pages=pages, copied=done, complete=not busy)

    def close(self) -> None:
        """Refuse new writes; ``run`` returns once everything queued so far is committed."""
        self._closing = True
        self._release_room(all_=True)
        self._wakeup.set()

    # --- the writer task ---

    async def run(self) -> None:
        try:
            await self._pruner.turn(self._thread, force=True)
            while True:
                if not self._items:
                    if self._closing:
                        return
                    self._idle = True  # before looking again: a record another thread queues now wakes us
                    self._wakeup.clear()
                    if not self._items:
                        await self._wakeup.wait()
                    self._idle = False
                    continue
                items = self._items
                n = min(self._batch_size, len(items))
                if n == len(items):
                    batch = list(items)
                    items.clear()
                else:
                    batch = [items.popleft() for _ in range(n)]
                ops = self._ops > 0
                if ops:  # awaited operations were queued: how many are in this batch
                    self._ops -= sum(1 for item in batch if type(item) is Op)
                self._inflight = batch
                self.batches += 1
                try:
                    await self._write(batch, ops)
                except Exception as exc:  # noqa: BLE001 - a damaged store, or a bug in here: lost, never acknowledged
                    self._lose(batch, exc)
                self._inflight = []
                if self._gave_up:  # this batch was not committed either
                    self._discard_callbacks(self._done + n)
                self._done += n
                if self._gave_up:  # closing on a database that stays stuck: do not wait out every batch
                    rest = list(self._items)
                    self._items.clear()
                    self._ops = 0
                    self._abandon(rest, TransientError("storage closed while the database could not commit"))
                    self._discard_callbacks(self._done + len(rest))
                    self._done += len(rest)
                    log.error("storage_writes_given_up", rows=len(rest))
                self._release_waiters()
                await self._pruner.turn(self._thread)
                if self._checkpointer is not None:
                    self._checkpointer.committed(n)
        finally:
            if self._checkpointer is not None:
                await self._checkpointer.close()
            stopped = TransientError("storage writer stopped")
            self._release_room(all_=True)
            self._fail_waiters(stopped)
            for item in [*self._inflight, *self._items]:  # only when cancelled: count what is lost
                if isinstance(item, Op):
                    if not item.future.done():
                        item.future.set_exception(stopped)
                else:
                    self.dropped[kind_of(item)] += 1
            self._inflight = []
            self._items.clear()
            self._ops = 0
            self._discard_callbacks(self._accepted)

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

    def _discard_callbacks(self, upto: int) -> None:
        """The records up to queue position ``upto`` were not committed: their acknowledgements never go."""
        callbacks = self._callbacks
        while callbacks and callbacks[0][0] <= upto:
            callbacks.popleft()
            self.unacked += 1

    def _fail_waiters(self, exc: BaseException) -> None:
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                future.set_exception(exc)

    def _abandon(self, batch: list[Item], exc: BaseException, counter: dict[str, int] | None = None) -> None:
        counts = self.failed if counter is None else counter
        for item in batch:
            if isinstance(item, Op):
                if not item.future.done():
                    item.future.set_exception(exc)
            else:
                counts[kind_of(item)] += 1

    def _lose(self, batch: list[Item], exc: BaseException) -> None:
        damaged = classify(exc) is Fault.DAMAGED
        fault = Fault.DAMAGED  # a bug in the writer is treated alike: the instance must not go on acking
        reason = explain(fault, self._path, exc) if damaged else f"storage writer failed: {exc!r}"
        log.error("storage_batch_lost", rows=len(batch), reason=reason, exc_info=None if damaged else exc)
        self._abandon(batch, TransientError(reason), self.lost)
        self._discard_callbacks(self._done + len(batch))
        first = self.fault is not Fault.DAMAGED
        self._set_fault(fault, reason)
        for listener in tuple(self._fault_listeners) if first else ():
            try:
                listener(fault, reason)
            except Exception:
                log.exception("storage_fault_listener_failed")

    def _set_fault(self, fault: Fault, reason: str) -> None:
        now = time.monotonic()
        if self.fault is not fault or now - self._fault_logged_at >= _FAULT_LOG_INTERVAL:  # at most once a minute
            self._fault_logged_at = now
            log.error("storage_unavailable" if fault is not Fault.BUSY else "storage_busy", fault=fault.value,
                      reason=reason, waiting_acks=self.waiting_acks, queue_depth=len(self._items))
        self.fault, self.fault_reason = fault, reason

    def _recovered(self) -> None:
        if self.fault is not None and self.fault is not Fault.DAMAGED:
            log.warning("storage_recovered", fault=self.fault.value)
            self.fault = self.fault_reason = None

    async def _write(self, batch: list[Item], ops: bool = True) -> None:
        prepared = prepare(batch, self._limits, ops)
        backoff: Backoff | None = None  # made on the first retry (seeding a Random per batch is not free)
        careful = False
        attempt = 0
        while True:
            slices = self._pruner.slices() if not careful else []
            try:
                pruned = await self._thread.call(engine.commit, prepared.segments, slices, careful)
                break
            except Exception as exc:
                fault = classify(exc)
                if fault is Fault.DAMAGED:
                    raise
                if fault is Fault.ROW:
                    if careful:
                        raise  # not any one row's error: a bug
                    careful = True
                    careful_units(prepared, self._limits)
                    log.warning("storage_batch_failed", error=repr(exc), retry="row_by_row")
                    continue
                attempt += 1
                reason = explain(fault, self._path, exc)
                if fault is not Fault.BUSY or attempt >= self._lock_attempts:
                    self._set_fault(fault, reason)
                if attempt >= self._lock_attempts:
                    error = TransientError(reason if fault is not Fault.BUSY
                                           else f"database busy after {attempt} attempts: {exc}")
                    error.__cause__ = exc
                    self._tell_callers(prepared, error)
                    if self._closing:
                        log.error("storage_batch_given_up", reason=reason, attempts=attempt)
                        self._gave_up = True
                        for seg in prepared.segments:
                            if isinstance(seg, Plain):
                                seg.error = error
                        pruned = []
                        break
                if backoff is None:
                    backoff = Backoff(base=self._backoff_base, cap=self._backoff_cap)
                delay = backoff.next_delay()
                log.debug("storage_retry", fault=fault.value, attempt=attempt, delay=round(delay, 3))
                await asyncio.sleep(delay)
        if not self._gave_up:
            self._recovered()
            self._pruner.carried(pruned)
        for kind, (count, first) in account(prepared, self.written, self._pruner, self._limits).items():
            self.failed[kind] += count
            log.error("storage_rows_failed", kind=kind, count=count, error=repr(first))

    def _tell_callers(self, prepared: Prepared, error: TransientError) -> None:
        """Flush callers and awaited operations hear that the store is stuck; those operations are dropped
        (also the ones queued behind, skipped when their turn comes). Records stay queued."""
        self._fail_waiters(error)
        for seg in prepared.segments:
            if isinstance(seg, Op) and not seg.future.done():
                seg.future.set_exception(error)
        prepared.segments = [seg for seg in prepared.segments if isinstance(seg, Plain)]
        for item in self._items:
            if isinstance(item, Op) and not item.future.done():
                item.future.set_exception(error)
