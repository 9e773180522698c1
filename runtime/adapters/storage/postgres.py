"""Working storage in PostgreSQL (``NUVIOT_DATABASE_URL``): the Cluster edition's shared store.

The same port as ``SqliteStore`` (what the dispatcher, the device registry, the admin API and the app
use): fire-and-forget records and device state written behind in batches, one transaction each, the
``on_commit`` callbacks (a worker's RabbitMQ ack) run after that transaction committed; awaited device
CRUD; admin reads newest first. Every replica of an instance shares the database. Device provisioning
(upsert, delete) is announced with ``NOTIFY nuviot_devices`` so that every replica's in-memory registry
follows (``adapters/storage/pg_cluster.py`` listens).

The SQL and the row <-> JSON conversions are ``rows.py``'s (SQLite's ``?`` placeholders become ``$n``).
A lost connection is retried with backoff and the batch kept: nothing acked is lost; the message worker
waits (``writable``) while the queue is above its high-water mark.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import structlog

from runtime.adapters.storage import rows
from runtime.core.devices import Device
from runtime.core.health import DETAILS_MAX, HealthEvent
from runtime.core.messages import MessageRecord, PemStatus

log = structlog.get_logger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, device_configuration TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',
    device_type TEXT, primary_access_key TEXT, secondary_access_key TEXT, status TEXT NOT NULL DEFAULT 'New',
    properties TEXT NOT NULL DEFAULT '{}', attributes TEXT NOT NULL DEFAULT '{}',
    state_machines TEXT NOT NULL DEFAULT '{}', property_bag TEXT NOT NULL DEFAULT '{}',
    latitude DOUBLE PRECISION, longitude DOUBLE PRECISION, last_seen DOUBLE PRECISION,
    created_at DOUBLE PRECISION, updated_at DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS messages (
    seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL, listener TEXT NOT NULL,
    status TEXT NOT NULL, device_id TEXT, message_id TEXT, stage TEXT, error TEXT,
    processing_ms DOUBLE PRECISION NOT NULL DEFAULT 0, kind TEXT NOT NULL DEFAULT 'Regular', detail TEXT);
CREATE INDEX IF NOT EXISTS messages_device_seq ON messages (device_id, seq);
CREATE TABLE IF NOT EXISTS deadletters (
    seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, received_at DOUBLE PRECISION NOT NULL,
    listener TEXT NOT NULL, status TEXT NOT NULL, device_id TEXT, message_id TEXT, stage TEXT, error TEXT,
    processing_ms DOUBLE PRECISION NOT NULL DEFAULT 0, kind TEXT NOT NULL DEFAULT 'Regular', detail TEXT,
    payload BYTEA, topic TEXT, path TEXT, headers TEXT, payload_size BIGINT, payload_sha256 TEXT, bytes BIGINT,
    replayed_at DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS events (
    seq BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL,
    reason TEXT);
ALTER TABLE events ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'state';
ALTER TABLE events ADD COLUMN IF NOT EXISTS device_id TEXT;
ALTER TABLE events ADD COLUMN IF NOT EXISTS code TEXT;
ALTER TABLE events ADD COLUMN IF NOT EXISTS source TEXT;
CREATE TABLE IF NOT EXISTS logs (
    seq BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, level TEXT NOT NULL, event TEXT NOT NULL,
    fields TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS cluster_members (
    member_id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, role TEXT NOT NULL, state TEXT NOT NULL,
    host TEXT, admin_port INTEGER, partitions TEXT NOT NULL DEFAULT '[]', seen_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS partition_cursors (
    queue TEXT NOT NULL, source TEXT NOT NULL, n BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (queue, source));
CREATE TABLE IF NOT EXISTS cluster_control (
    instance_id TEXT PRIMARY KEY, verb TEXT NOT NULL, origin TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);
"""
DEVICE_CHANNEL = "nuviot_devices"
MAX_READ_LIMIT = 10_000
CURSOR_RETENTION = 7 * 86_400.0  # seconds: an ingest process's numbers are forgotten this long after its last
# One statement per batch: lock the batch's cursors, move them to the batch's highest numbers, and return
# those that were already at or beyond the batch's lowest number for them (then the batch has duplicates).
MOVE_CURSORS = (
    "WITH input(q, s, lo, hi) AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])), "
    "old AS (SELECT c.queue, c.source, c.n FROM partition_cursors c JOIN input i ON c.queue = i.q "
    "AND c.source = i.s FOR UPDATE OF c), "
    "moved AS (INSERT INTO partition_cursors (queue, source, n, at) SELECT q, s, hi, $5 FROM input "
    "ON CONFLICT (queue, source) DO UPDATE SET n = GREATEST(partition_cursors.n, excluded.n), at = excluded.at) "
    "SELECT old.queue, old.source, old.n FROM old JOIN input i ON old.queue = i.q AND old.source = i.s "
    "WHERE old.n >= i.lo"
)


def pg(sql: str | rows.Insert) -> str:
    """SQLite's ``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (of a statement or an ``Insert``'s)."""
    text = sql.sql if isinstance(sql, rows.Insert) else sql
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", text)


INSERT_MESSAGE = pg(rows.INSERT_MESSAGE)
INSERT_DEADLETTER = pg(rows.INSERT_DEADLETTER) + " ON CONFLICT (id) DO NOTHING"
SAVE_DEVICE_STATE = pg(rows.SAVE_DEVICE_STATE)
UPSERT_DEVICE = pg(rows.UPSERT_DEVICE)
INSERT_EVENT = pg(rows.INSERT_EVENT)
INSERT_LOG = pg(rows.INSERT_LOG)


def transient(exc: BaseException) -> bool:
    """Worth retrying (the database is unreachable, starting, shutting down, out of resources) rather than a
    row it refuses: SQLSTATE classes 22 (data exception), 23 (integrity) and 42 (syntax, undefined column)
    are the row's or the code's fault; everything else is the server's state."""
    if isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, asyncpg.exceptions.PostgresConnectionError):
        return not str(getattr(exc, "sqlstate", "") or "").startswith(("22", "23", "42"))
    return True


def _limit(limit: int) -> int:
    return max(0, min(int(limit), MAX_READ_LIMIT))


async def _init_connection(conn: asyncpg.Connection) -> None:
    return None


class PostgresStore:
    """Devices, device state, message records, dead letters, events and logs in a shared PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool, *, batch_size: int = 500, queue_size: int = 100_000) -> None:
        self._pool = pool
        self._batch = batch_size
        self._queue_size = queue_size
        self._queue: deque[tuple[str, Any, Callable[[], None] | None]] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._dropped = 0
        self.written = 0
        self.batches = 0  # transactions committed
        self.failed = 0
        self.last_error: str | None = None
        self.outbox_refused_total = 0  # no cloud outbox in the Cluster edition (docs/cluster.md)
        self._sequenced: dict[str, tuple[str, str, int]] = {}  # record id -> (queue, source, n)
        self.duplicates_dropped = 0  # records whose number was committed already (another worker's)

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, **kwargs: Any) -> AsyncIterator[PostgresStore]:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4, init=_init_connection)
        try:
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_advisory_lock(7410001)")  # one replica migrates at a time
                try:
                    await conn.execute(SCHEMA)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(7410001)")
            store = cls(pool, **kwargs)
            task = asyncio.create_task(store._run(), name="storage:postgres-writer")
            log.info("storage_opened", backend="postgresql")
            try:
                yield store
            finally:
                store._closed = True
                store._wake.set()
                await task
                log.info("storage_closed", backend="postgresql", written=store.written, dropped=store._dropped)
        finally:
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # --- counters ---
    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def dropped_total(self) -> int:
        return self._dropped

    # --- non-blocking writes ---
    def _offer(self, kind: str, value: Any, on_commit: Callable[[], None] | None = None) -> bool:
        if self._closed or len(self._queue) >= self._queue_size:
            self._dropped += 1
            return False
        self._queue.append((kind, value, on_commit))
        self._idle.clear()
        self._wake.set()
        if len(self._queue) >= self._queue_size // 2:
            self._room.clear()
        return True

    def record_event(self, at: float, from_state: str, to_state: str, reason: str | None) -> None:
        self._offer("event", (at, str(from_state), str(to_state), reason, "state", None, None, None))

    def record_device_error(self, event: HealthEvent) -> None:
        """A device error raised or cleared, as an ``/events`` row (kind ``deviceError``)."""
        self._offer("event", (event.at, "", event.action, event.details[:DETAILS_MAX], rows.DEVICE_ERROR,
                              event.device_id, event.code, event.source))

    def record_log(self, at: float, level: str, event: str, fields: dict[str, Any]) -> None:
        self._offer("log", (at, level, event, fields))

    def record_message(self, rec: MessageRecord, on_commit: Callable[[], None] | None = None) -> None:
        seq = self._sequenced.pop(rec.id, None) if self._sequenced else None
        if seq is not None:
            offered = self._offer("sequenced", (rec, seq), on_commit)
        else:
            offered = self._offer("message", rec, on_commit)
        if not offered and on_commit is not None:
            on_commit()

    # --- the worker's numbers (adapters/queue/partitions.py ``Cursors``; docs/cluster.md, "Order") ---
    def sequence(self, record_id: str, queue: str, source: str, n: int) -> None:
        """The record of ``record_id`` is number ``n`` of ``source`` in ``queue``: it commits with the
        cursor moved to ``n``, or not at all when the cursor is at ``n`` or beyond (a duplicate)."""
        self._sequenced[record_id] = (queue, source, n)

    def forget(self, record_id: str) -> None:
        self._sequenced.pop(record_id, None)

    async def committed(self, queue: str) -> dict[str, int]:
        """The last number committed per source in ``queue`` (those of sources long gone are deleted)."""
        async with self._pool.acquire() as conn:
            await conn.execute("DELETE FROM partition_cursors WHERE queue = $1 AND at < $2", queue,
                               time.time() - CURSOR_RETENTION)
            found = await conn.fetch("SELECT source, n FROM partition_cursors WHERE queue = $1", queue)
        return {str(r[0]): int(r[1]) for r in found}

    def save_device_state(self, device: Device) -> None:
        self._offer("device", device)

    async def writable(self) -> None:
        await self._room.wait()

    async def flush(self) -> None:
        await self._idle.wait()

    async def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints by itself (the SQLite store cuts its WAL back here)."""
        return None

    @property
    def fault(self) -> str | None:
        """Why nothing commits now (the database is unreachable), for ``/ready``; None when writes go in."""
        return self.last_error

    # --- the writer ---
    async def _run(self) -> None:
        attempt = 0
        while True:
            if not self._queue:
                self._idle.set()
                self._room.set()
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue[i] for i in range(min(self._batch, len(self._queue)))]
            try:
                await self._write(batch)
            except (OSError, asyncpg.PostgresError, asyncpg.exceptions.InterfaceError, TimeoutError) as exc:
                if not transient(exc):  # a row the database refuses: the others go in, one by one
                    log.error("storage_bad_batch", error=repr(exc)[:500])
                    await self._write_each(batch)
                    self._done(batch)
                    continue
                self.last_error = repr(exc)
                attempt += 1
                log.warning("storage_write_retry", error=repr(exc), attempt=attempt)
                await asyncio.sleep(min(5.0, random.uniform(0, 0.1 * 2 ** min(attempt, 6))))
                continue
            attempt = 0
            self._done(batch)

    def _done(self, batch: list[tuple[str, Any, Callable[[], None] | None]]) -> None:
        """The batch is committed (or its refused rows counted): out of the queue, acks run."""
        self.last_error = None
        for _ in batch:
            self._queue.popleft()
        if len(self._queue) < self._queue_size // 4:
            self._room.set()
        for _, _, callback in batch:
            if callback is not None:
                try:
                    callback()
                except Exception as exc:  # noqa: BLE001 - one ack must not stop the writer
                    log.error("storage_commit_callback_failed", error=repr(exc))

    async def _write(self, batch: list[tuple[str, Any, Callable[[], None] | None]]) -> None:
        now = time.time()
        sequenced = [value[1] for kind, value, _ in batch if kind == "sequenced"]
        async with self._pool.acquire() as conn, conn.transaction():
            behind = await self._move_cursors(conn, sequenced, now) if sequenced else {}
            dropped = self._duplicates(batch, behind) if sequenced else set()
            devices, messages, dead, events, logs = self._rows(batch, dropped)
            await self._statements(conn, devices, messages, dead, events, logs, now)
        self.duplicates_dropped += len(dropped)
        self.written += len(batch)
        self.batches += 1

    @staticmethod
    async def _move_cursors(conn: asyncpg.Connection, sequenced: list[tuple[str, str, int]],
                            now: float) -> dict[tuple[str, str], int]:
        """Move the batch's cursors (locked until the commit); the committed numbers of those that were
        already at or beyond the batch's lowest (another worker committed some of these numbers)."""
        span: dict[tuple[str, str], tuple[int, int]] = {}
        for queue, source, n in sequenced:
            lo, hi = span.get((queue, source), (n, n))
            span[(queue, source)] = (min(lo, n), max(hi, n))
        keys = list(span)
        found = await conn.fetch(MOVE_CURSORS, [k[0] for k in keys], [k[1] for k in keys],
                                 [span[k][0] for k in keys], [span[k][1] for k in keys], now)
        return {(str(r[0]), str(r[1])): int(r[2]) for r in found}

    @staticmethod
    def _duplicates(batch: list[tuple[str, Any, Callable[[], None] | None]],
                    committed: dict[tuple[str, str], int]) -> set[int]:
        """The positions of the batch's records whose number was committed already (or is earlier in it)."""
        dropped: set[int] = set()
        high = dict(committed)
        for i, (kind, value, _) in enumerate(batch):
            if kind == "sequenced":
                queue, source, n = value[1]
                if n <= high.get((queue, source), 0):
                    dropped.add(i)
                else:
                    high[(queue, source)] = n
        return dropped

    @staticmethod
    def _rows(batch: list[tuple[str, Any, Callable[[], None] | None]], dropped: set[int]) -> tuple[
            dict[str, Device], list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]],
            list[tuple[Any, ...]]]:
        messages: list[tuple[Any, ...]] = []
        dead: list[tuple[Any, ...]] = []
        devices: dict[str, Device] = {}
        events: list[tuple[Any, ...]] = []
        logs: list[tuple[Any, ...]] = []
        for i, (kind, value, _) in enumerate(batch):
            if kind == "sequenced":
                if i in dropped:
                    continue
                kind, value = "message", value[0]
            if kind == "message":
                base = rows.message_params(value)
                messages.append(base)
                if value.status is PemStatus.FAILED:
                    dead.append(rows.deadletter_params(value, base))
            elif kind == "device":
                devices[value.device_id] = value
            elif kind == "event":
                events.append(value)
            elif kind == "log":
                at, level, event, fields = value
                logs.append((at, level, event, rows.dumps_lenient(fields)))
        return devices, messages, dead, events, logs

    async def _write_each(self, batch: list[tuple[str, Any, Callable[[], None] | None]]) -> None:
        for item in batch:
            while True:
                try:
                    await self._write([item])
                    break
                except (OSError, asyncpg.PostgresError, asyncpg.exceptions.InterfaceError, TimeoutError) as exc:
                    if transient(exc):  # the database went away meanwhile: this row waits for it
                        self.last_error = repr(exc)
                        await asyncio.sleep(1.0)
                        continue
                    self.failed += 1
                    log.error("storage_row_refused", kind=item[0], error=repr(exc)[:500])
                    break

    @staticmethod
    async def _statements(conn: asyncpg.Connection, devices: dict[str, Device], messages: list[tuple[Any, ...]],
                          dead: list[tuple[Any, ...]], events: list[tuple[Any, ...]],
                          logs: list[tuple[Any, ...]], now: float) -> None:
        if devices:
            await conn.executemany(SAVE_DEVICE_STATE, [rows.device_params(d, now) for d in devices.values()])
        if messages:
            await conn.executemany(INSERT_MESSAGE, messages)
        if dead:
            await conn.executemany(INSERT_DEADLETTER, dead)
        if events:
            await conn.executemany(INSERT_EVENT, events)
        if logs:
            await conn.executemany(INSERT_LOG, logs)

    # --- devices (awaited; announced to every replica) ---
    async def upsert_device(self, device: Device) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(UPSERT_DEVICE, *rows.device_params(device, time.time()))
            await conn.execute("SELECT pg_notify($1, $2)", DEVICE_CHANNEL, device.device_id)

    async def delete_device(self, device_id: str) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(pg(rows.DELETE_DEVICE), device_id)
            await conn.execute("SELECT pg_notify($1, $2)", DEVICE_CHANNEL, device_id)
        return bool(status.endswith(" 1"))

    async def get_device(self, device_id: str) -> Device | None:
        row = await self._pool.fetchrow(pg(rows.SELECT_DEVICE), device_id)
        return rows.device_from_row(tuple(row)) if row is not None else None

    async def load_devices(self) -> list[Device]:
        return [rows.device_from_row(tuple(r)) for r in await self._pool.fetch(rows.SELECT_DEVICES)]

    # --- reads for the admin API ---
    async def list_events(self, limit: int = 100, kind: str | None = None,
                          device_id: str | None = None) -> list[dict[str, Any]]:
        sql, params = rows.select_events(kind, device_id)
        return [rows.event_dict(tuple(r)) for r in await self._pool.fetch(pg(sql), *params, _limit(limit))]

    async def list_messages(self, limit: int = 100, device_id: str | None = None) -> list[dict[str, Any]]:
        if device_id is None:
            found = await self._pool.fetch(pg(rows.SELECT_MESSAGES), _limit(limit))
        else:
            found = await self._pool.fetch(pg(rows.SELECT_DEVICE_MESSAGES), device_id, _limit(limit))
        return [rows.message_dict(tuple(r)) for r in found]

    async def list_deadletters(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        found = await self._pool.fetch(pg(rows.SELECT_DEADLETTERS), _limit(limit), max(0, int(offset)))
        return [rows.deadletter_dict(tuple(r)) for r in found]

    async def get_deadletter(self, record_id: str) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(pg(rows.SELECT_DEADLETTER), record_id)
        return rows.deadletter_detail(tuple(row)) if row is not None else None

    async def mark_replayed(self, record_id: str, at: float) -> None:
        await self._pool.execute(pg(rows.MARK_REPLAYED), at, record_id)

    async def list_logs(self, limit: int = 100) -> list[dict[str, Any]]:
        return [rows.log_dict(tuple(r)) for r in await self._pool.fetch(pg(rows.SELECT_LOGS), _limit(limit))]
