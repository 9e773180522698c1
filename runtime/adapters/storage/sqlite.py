"""Local working storage: one SQLite database (``DATA_DIR/runtime.db``) in WAL mode.

Two connections, each on a thread of its own (``engine.SqlThread``): the writer (one task, batched
transactions; see ``writer.py``) and a reader for the admin API, so a big batch does not stall a read (WAL
readers see the last commit). Fire-and-forget records (``record_*``, ``save_device_state``) never block and
never raise; awaited writes (device CRUD, outbox) return once committed. Everything here runs on the event
loop thread.

Opening checks the file (``PRAGMA quick_check``) and makes the data files private (0600; SQLite gives the
-wal and -shm files the database's mode). A store that cannot be used raises ``StorageError`` saying what is
wrong and what to do: the app reports it as FailedToInitialize and keeps the admin API up.

    async with SqliteStore.open(data_dir / "runtime.db") as store:
        store.record_message(rec)
        await store.flush()
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import structlog

from runtime.adapters.storage import rows
from runtime.adapters.storage.engine import SqlThread, fetchall, quick_check
from runtime.adapters.storage.faults import Fault, classify, explain
from runtime.adapters.storage.items import EventLine, Limits, LogLine
from runtime.adapters.storage.retention import Retention
from runtime.adapters.storage.schema import MIGRATIONS, make_private, migrate
from runtime.adapters.storage.writer import BatchWriter
from runtime.core.devices import Device
from runtime.core.errors import StorageError
from runtime.core.health import DETAILS_MAX, HealthEvent
from runtime.core.messages import MessageRecord

__all__ = ["MIGRATIONS", "Retention", "SqliteStore", "StorageError", "migrate"]

log = structlog.get_logger(__name__)

MAX_READ_LIMIT = 10_000


def _limit(limit: int) -> int:
    return max(0, min(int(limit), MAX_READ_LIMIT))


def _opening_error(path: Path, exc: BaseException) -> StorageError:
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, OSError):
        return StorageError(f"storage unavailable: {path} ({exc.strerror or exc}); check that {path.parent} "
                            "exists, is writable and readable by this user")
    fault = classify(exc)
    if fault is Fault.DISK_FULL:  # nothing is open to resume on: the store is opened again at the next start
        return StorageError(f"disk full: {path} cannot be created or written ({exc}); free space on "
                            f"{path.parent} and restart the runtime")
    return StorageError(explain(fault, path, exc))


class SqliteStore:
    """Devices, device state, message records, dead letters, events, logs and the outbox in one file."""

    def __init__(self, path: Path, reader: SqlThread, writer: BatchWriter, *, outbox_max_rows: int) -> None:
        self.path = path
        self._reader = reader
        self._writer = writer
        self._outbox_max_rows = outbox_max_rows
        self._outbox_refused: dict[str, int] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: Path,
        *,
        batch_size: int = 2_000,  # items per transaction at most (issue 17: docs/performance.md)
        queue_size: int = 100_000,
        retention: Retention | None = None,
        limits: Limits | None = None,
        outbox_max_rows: int = 100_000,
        busy_timeout_ms: int = 1_000,
        lock_attempts: int = 5,
        check: bool = True,
    ) -> AsyncIterator[SqliteStore]:
        """Create the directory and schema, check the file, start the writer task; on exit drain every
        queued write, close. ``StorageError`` when the store cannot be used."""
        path = Path(path)
        async with AsyncExitStack() as stack:
            wthread, rthread = SqlThread("sqlite-writer"), SqlThread("sqlite-reader")
            stack.push_async_callback(rthread.close)
            stack.push_async_callback(wthread.close)
            try:
                await asyncio.to_thread(make_private, path)
                await wthread.open(path, busy_timeout_ms=busy_timeout_ms, reader=False)
                if check:
                    damage = await wthread.call(quick_check)
                    if damage is not None:
                        raise StorageError(
                            f"database damaged: {path} (quick_check: {damage[:300]}); stop the runtime, move "
                            f"{path.name} and its -wal/-shm files aside (or restore a backup) and start again: "
                            "a new database is created")
                await wthread.call(migrate)
                await rthread.open(path, busy_timeout_ms=busy_timeout_ms, reader=True)
            except (sqlite3.Error, OSError, StorageError) as exc:
                raise _opening_error(path, exc) from exc
            writer = BatchWriter(
                wthread,
                path=path,
                batch_size=batch_size,
                queue_size=queue_size,
                retention=retention or Retention(),
                lock_attempts=lock_attempts,
                limits=limits,
            )
            store = cls(path, rthread, writer, outbox_max_rows=outbox_max_rows)
            task = asyncio.create_task(writer.run(), name="storage:sqlite-writer")
            log.info("storage_opened", path=str(path))
            try:
                yield store
            finally:
                writer.close()
                await task  # drains the queue (a cancellation here cancels the writer too)
                log.info("storage_closed", path=str(path), written=writer.written, dropped=writer.dropped,
                         failed=writer.failed, lost=writer.lost)

    # --- counters ---

    @property
    def queue_depth(self) -> int:
        return self._writer.queue_depth

    @property
    def dropped(self) -> dict[str, int]:
        """Writes refused because the queue was full (or the store closed), per kind."""
        return dict(self._writer.dropped)

    @property
    def dropped_total(self) -> int:
        return sum(self._writer.dropped.values())

    @property
    def written(self) -> dict[str, int]:
        """Records committed, per kind (coalesced device saves count as written)."""
        return dict(self._writer.written)

    @property
    def failed(self) -> dict[str, int]:
        """Records the database refused (bad rows), per kind."""
        return dict(self._writer.failed)

    @property
    def lost(self) -> dict[str, int]:
        """Records taken in but never committed (a damaged store), per kind: never acknowledged."""
        return dict(self._writer.lost)

    @property
    def batches(self) -> int:
        """Batches the writer took from its queue (one transaction each while healthy): records per batch is
        what the per-transaction costs are shared by."""
        return self._writer.batches

    @property
    def unacked(self) -> int:
        """Acknowledgements (QoS1 PUBACK, AMQP ack) never sent because their record did not commit."""
        return self._writer.unacked

    @property
    def waiting_acks(self) -> int:
        """Acknowledgements held until their records commit (grows while the disk is full)."""
        return self._writer.waiting_acks

    @property
    def fault(self) -> str | None:
        """Why nothing commits now (disk full, damaged, unavailable, busy), or None when healthy."""
        return self._writer.fault_reason if self._writer.fault is not None else None

    @property
    def damaged(self) -> str | None:
        """Why the store cannot be used again in this process (a damaged file), or None."""
        return self._writer.fault_reason if self._writer.fault is Fault.DAMAGED else None

    def on_fault(self, callback: Callable[[Fault, str], None]) -> None:
        """``callback(fault, reason)`` when the store turns out damaged while running (FatalError)."""
        self._writer.on_fault(callback)

    def status(self) -> dict[str, Any]:
        """The counters ``/status`` shows under ``storage``."""
        return {
            "queueDepth": self.queue_depth,
            "dropped": self.dropped_total,
            "failed": sum(self._writer.failed.values()),
            "lost": sum(self._writer.lost.values()),
            "unacked": self._writer.unacked,
            "waitingAcks": self._writer.waiting_acks,
            "fault": self.fault,
        }

    @property
    def outbox_refused(self) -> dict[str, int]:
        return dict(self._outbox_refused)

    @property
    def outbox_refused_total(self) -> int:
        return sum(self._outbox_refused.values())

    # --- non-blocking writes ---

    def record_event(self, at: float, from_state: str, to_state: str, reason: str | None) -> None:
        self._writer.offer(EventLine(at, str(from_state), str(to_state), reason))

    def record_device_error(self, event: HealthEvent) -> None:
        """A device error raised or cleared, as an ``/events`` row (kind ``deviceError``)."""
        self._writer.offer(EventLine(event.at, "", event.action, event.details[:DETAILS_MAX], rows.DEVICE_ERROR,
                                     event.device_id, event.code, event.source))

    def record_log(self, at: float, level: str, event: str, fields: dict[str, Any]) -> None:
        """``fields`` is encoded when its batch is written (values orjson does not know become text)."""
        self._writer.offer(LogLine(at, level, event, fields))

    def record_message(self, rec: MessageRecord, on_commit: Callable[[], None] | None = None) -> None:
        """A Failed record is also a dead letter and keeps its payload, topic, path and headers.

        The record is read when its batch is written: do not change it after handing it over.
        ``on_commit`` (e.g. the MQTT PUBACK) runs once the record is committed; when the record cannot be
        queued (queue full, counted in ``dropped``) it runs at once: the message was processed, and
        holding its acknowledgement would only stall the sender.
        """
        queued = self._writer.offer(rec)
        if on_commit is not None:
            if queued:
                self._writer.after_commit(on_commit)
            else:
                on_commit()

    def save_device_state(self, device: Device) -> None:
        """Upsert attributes, state machines, property bag, location and last seen (last save in a batch wins).

        The row is built when the batch is written, from the device as it is then.
        """
        self._writer.offer(device)

    async def writable(self) -> None:
        """Return once the writer's queue is below its high-water mark (back-pressure for the message worker)."""
        await self._writer.writable()

    async def flush(self) -> None:
        """Return once everything queued before the call is committed; TransientError if the DB stays locked."""
        await self._writer.flush()

    async def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it (after a big write, e.g. seeding devices)."""
        await self._writer.checkpoint()

    # --- devices (awaited: the caller hears back after the commit) ---

    async def upsert_device(self, device: Device) -> None:
        params = rows.device_params(device, time.time())

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(rows.UPSERT_DEVICE, params)

        await self._writer.submit(op)

    async def delete_device(self, device_id: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute(rows.DELETE_DEVICE, (device_id,)).rowcount > 0

        deleted: bool = await self._writer.submit(op)
        return deleted

    async def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return await self._reader.call(fetchall, sql, params)

    async def get_device(self, device_id: str) -> Device | None:
        found = list(await self._read(rows.SELECT_DEVICE, (device_id,)))
        return rows.device_from_row(found[0]) if found else None

    async def load_devices(self) -> list[Device]:
        return [rows.device_from_row(r) for r in await self._read(rows.SELECT_DEVICES)]

    # --- reads for the admin API (CONTRACT §4 shapes), newest first ---

    async def list_events(self, limit: int = 100, kind: str | None = None,
                          device_id: str | None = None) -> list[dict[str, Any]]:
        sql, params = rows.select_events(kind, device_id)
        return [rows.event_dict(r) for r in await self._read(sql, (*params, _limit(limit)))]

    async def list_messages(self, limit: int = 100, device_id: str | None = None) -> list[dict[str, Any]]:
        if device_id is None:
            found = await self._read(rows.SELECT_MESSAGES, (_limit(limit),))
        else:
            found = await self._read(
                rows.SELECT_DEVICE_MESSAGES, (device_id, _limit(limit))
            )
        return [rows.message_dict(r) for r in found]

    async def list_deadletters(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Newest first; ``offset`` skips that many (the console's pages)."""
        found = await self._read(rows.SELECT_DEADLETTERS, (_limit(limit), max(0, int(offset))))
        return [rows.deadletter_dict(r) for r in found]

    async def get_deadletter(self, record_id: str) -> dict[str, Any] | None:
        found = list(await self._read(rows.SELECT_DEADLETTER, (record_id,)))
        return rows.deadletter_detail(found[0]) if found else None

    async def mark_replayed(self, record_id: str, at: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(rows.MARK_REPLAYED, (at, record_id))

        await self._writer.submit(op)

    async def list_logs(self, limit: int = 100) -> list[dict[str, Any]]:
        return [
            rows.log_dict(r) for r in await self._read(rows.SELECT_LOGS, (_limit(limit),))
        ]

    # --- outbox (cloud working storage) ---

    async def outbox_put(self, kind: str, payloads: list[bytes]) -> int:
        """Append rows, oldest first out; rows over ``outbox_max_rows`` are refused and counted. Returns how many were accepted."""
        now = time.time()
        items = [bytes(p) for p in payloads]

        def op(conn: sqlite3.Connection) -> int:
            count = conn.execute(rows.COUNT_OUTBOX).fetchone()[0]
            accepted = items[: max(0, self._outbox_max_rows - count)]
            if accepted:
                conn.executemany(rows.INSERT_OUTBOX, [(kind, p, now) for p in accepted])
            return len(accepted)

        accepted: int = await self._writer.submit(op)
        refused = len(items) - accepted
        if refused:
            self._outbox_refused[kind] = self._outbox_refused.get(kind, 0) + refused
            log.warning("outbox_full", kind=kind, refused=refused, max_rows=self._outbox_max_rows)
        return accepted

    async def outbox_peek(self, limit: int) -> list[tuple[int, str, bytes]]:
        found = await self._read(rows.SELECT_OUTBOX, (_limit(limit),))
        return [(r[0], r[1], r[2]) for r in found]

    async def outbox_ack(self, ids: list[int]) -> None:
        params = [(int(i),) for i in ids]
        if not params:
            return

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(rows.DELETE_OUTBOX, params)

        await self._writer.submit(op)

    async def outbox_depth(self) -> int:
        return int((await self._read(rows.COUNT_OUTBOX))[0][0])
