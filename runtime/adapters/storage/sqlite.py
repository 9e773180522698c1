"""Local working storage: one SQLite database (``DATA_DIR/runtime.db``) in WAL mode, via aiosqlite.

Two connections, each on its own aiosqlite thread: the writer (one task, batched transactions; see
``writer.py``) and a reader for the admin API, so a big batch does not stall a read (WAL readers see
the last commit). Fire-and-forget records (``record_*``, ``save_device_state``) never block and never
raise; awaited writes (device CRUD, outbox) return once committed. Everything here runs on the event
loop thread.

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
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from runtime.adapters.storage import rows
from runtime.adapters.storage.writer import BatchWriter, Retention, is_transient
from runtime.core.devices import Device
from runtime.core.errors import FatalError, TransientError
from runtime.core.messages import MessageRecord

__all__ = ["MIGRATIONS", "Retention", "SqliteStore", "migrate"]

log = structlog.get_logger(__name__)

# Schema version N is MIGRATIONS[N - 1]; PRAGMA user_version holds the version applied.
MIGRATIONS: tuple[str, ...] = (
    resources.files(__package__).joinpath("schema.sql").read_text("utf-8"),
    # 2: no per-device index on `messages`. Every insert went to a random place in it (one leaf per device)
    # and every prune took entries out of all of them: with 1,000 devices and 100,000 records kept, the
    # SQLite thread spent ~26 us a message instead of ~10 (docs/architecture.md, "Storage"). `/messages
    # ?deviceId=` scans the kept records newest first instead (~12 ms for 100,000 when the device is rare).
    "DROP INDEX IF EXISTS messages_device_received;",
)
MAX_READ_LIMIT = 10_000
WAL_AUTOCHECKPOINT_BACKSTOP = 20_000


def _statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (sqlite3.complete_statement knows about triggers)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement: {buf.strip()[:80]}")
    return out


async def migrate(db: aiosqlite.Connection) -> int:
    """Bring the schema to the newest version, one transaction per version; return the version."""
    target = len(MIGRATIONS)
    while True:
        await db.execute(
            "BEGIN IMMEDIATE"
        )  # re-read the version under the write lock: two processes may race
        try:
            version = next(iter(await db.execute_fetchall("PRAGMA user_version")))[0]
            if version > target:
                raise FatalError(f"database schema version {version} is newer than this runtime's ({target})")
            if version == target:
                await db.execute("COMMIT")
                return version
            for stmt in _statements(MIGRATIONS[version]):
                await db.execute(stmt)
            await db.execute(f"PRAGMA user_version = {version + 1}")
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        log.info("storage_migrated", version=version + 1)


@asynccontextmanager
async def _connection(
    path: Path, *, busy_timeout_ms: int, reader: bool
) -> AsyncIterator[aiosqlite.Connection]:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if reader:
            await db.execute("PRAGMA query_only = ON")
        else:
            mode = next(iter(await db.execute_fetchall("PRAGMA journal_mode = WAL")))[0]
            if str(mode).lower() != "wal":
                raise FatalError(f"{path}: could not switch to WAL mode (got {mode})")
            # Checkpoints run beside the writer (writer.Checkpointer), not inside its COMMITs; this is only
            # the backstop should those keep failing (20,000 pages: an 80 MB WAL).
            await db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_BACKSTOP}")
        await db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a commit survives a process crash
        yield db


def _limit(limit: int) -> int:
    return max(0, min(int(limit), MAX_READ_LIMIT))


class SqliteStore:
    """Devices, device state, message records, dead letters, events, logs and the outbox in one file."""

    def __init__(
        self, path: Path, reader: aiosqlite.Connection, writer: BatchWriter, *, outbox_max_rows: int
    ) -> None:
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
        batch_size: int = 500,
        queue_size: int = 100_000,
        retention: Retention | None = None,
        outbox_max_rows: int = 100_000,
        busy_timeout_ms: int = 1_000,
        lock_attempts: int = 5,
    ) -> AsyncIterator[SqliteStore]:
        """Create the directory and schema, start the writer task; on exit drain every queued write, close."""
        path = Path(path)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        async with AsyncExitStack() as stack:
            try:
                wdb = await stack.enter_async_context(
                    _connection(path, busy_timeout_ms=busy_timeout_ms, reader=False)
                )
                await migrate(wdb)
                rdb = await stack.enter_async_context(
                    _connection(path, busy_timeout_ms=busy_timeout_ms, reader=True)
                )
            except sqlite3.Error as exc:
                if is_transient(exc):
                    raise TransientError(f"{path}: {exc}") from exc
                raise FatalError(f"{path}: {exc}") from exc
            writer = BatchWriter(
                wdb,
                batch_size=batch_size,
                queue_size=queue_size,
                retention=retention or Retention(),
                lock_attempts=lock_attempts,
                checkpoint_path=path,
            )
            store = cls(path, rdb, writer, outbox_max_rows=outbox_max_rows)
            task = asyncio.create_task(writer.run(), name="storage:sqlite-writer")
            log.info("storage_opened", path=str(path))
            try:
                yield store
            finally:
                writer.close()
                await task  # drains the queue (a cancellation here cancels the writer too)
                log.info("storage_closed", path=str(path), written=writer.written, dropped=writer.dropped)

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
    def outbox_refused(self) -> dict[str, int]:
        return dict(self._outbox_refused)

    @property
    def outbox_refused_total(self) -> int:
        return sum(self._outbox_refused.values())

    # --- non-blocking writes ---

    def record_event(self, at: float, from_state: str, to_state: str, reason: str | None) -> None:
        self._writer.offer("event", (at, str(from_state), str(to_state), reason))

    def record_log(self, at: float, level: str, event: str, fields: dict[str, Any]) -> None:
        """``fields`` is encoded when its batch is written (values orjson does not know become text)."""
        self._writer.offer("log", (at, level, event, fields))

    def record_message(self, rec: MessageRecord, on_commit: Callable[[], None] | None = None) -> None:
        """A Failed record is also a dead letter and keeps its payload, topic, path and headers.

        The record is read when its batch is written: do not change it after handing it over.
        ``on_commit`` (e.g. the MQTT PUBACK) runs once the record is committed; when the record cannot be
        queued (queue full, counted in ``dropped``) it runs at once: the message was processed, and
        holding its acknowledgement would only stall the sender.
        """
        queued = self._writer.offer("message", rec)
        if on_commit is not None:
            if queued:
                self._writer.after_commit(on_commit)
            else:
                on_commit()

    def save_device_state(self, device: Device) -> None:
        """Upsert attributes, state machines, property bag, location and last seen (last save in a batch wins).

        The row is built when the batch is written, from the device as it is then.
        """
        self._writer.offer("device", device)

    async def writable(self) -> None:
        """Return once the writer's queue is below its high-water mark (back-pressure for the message worker)."""
        await self._writer.writable()

    async def flush(self) -> None:
        """Return once everything queued before the call is committed; TransientError if the DB stays locked."""
        await self._writer.flush()

    # --- devices (awaited: the caller hears back after the commit) ---

    async def upsert_device(self, device: Device) -> None:
        params = rows.device_params(device, time.time())

        async def op(db: aiosqlite.Connection) -> None:
            await db.execute(rows.UPSERT_DEVICE, params)

        await self._writer.submit(op)

    async def delete_device(self, device_id: str) -> bool:
        async def op(db: aiosqlite.Connection) -> bool:
            cursor = await db.execute(rows.DELETE_DEVICE, (device_id,))
            return cursor.rowcount > 0

        deleted: bool = await self._writer.submit(op)
        return deleted

    async def get_device(self, device_id: str) -> Device | None:
        found = list(await self._reader.execute_fetchall(rows.SELECT_DEVICE, (device_id,)))
        return rows.device_from_row(found[0]) if found else None

    async def load_devices(self) -> list[Device]:
        return [rows.device_from_row(r) for r in await self._reader.execute_fetchall(rows.SELECT_DEVICES)]

    # --- reads for the admin API (CONTRACT §4 shapes), newest first ---

    async def list_events(self, limit: int = 100) -> list[dict[str, Any]]:
        return [
            rows.event_dict(r)
            for r in await self._reader.execute_fetchall(rows.SELECT_EVENTS, (_limit(limit),))
        ]

    async def list_messages(self, limit: int = 100, device_id: str | None = None) -> list[dict[str, Any]]:
        if device_id is None:
            found = await self._reader.execute_fetchall(rows.SELECT_MESSAGES, (_limit(limit),))
        else:
            found = await self._reader.execute_fetchall(
                rows.SELECT_DEVICE_MESSAGES, (device_id, _limit(limit))
            )
        return [rows.message_dict(r) for r in found]

    async def list_deadletters(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Newest first; ``offset`` skips that many (the console's pages)."""
        found = await self._reader.execute_fetchall(rows.SELECT_DEADLETTERS, (_limit(limit), max(0, int(offset))))
        return [rows.deadletter_dict(r) for r in found]

    async def get_deadletter(self, record_id: str) -> dict[str, Any] | None:
        found = list(await self._reader.execute_fetchall(rows.SELECT_DEADLETTER, (record_id,)))
        return rows.deadletter_detail(found[0]) if found else None

    async def mark_replayed(self, record_id: str, at: float) -> None:
        async def op(db: aiosqlite.Connection) -> None:
            await db.execute(rows.MARK_REPLAYED, (at, record_id))

        await self._writer.submit(op)

    async def list_logs(self, limit: int = 100) -> list[dict[str, Any]]:
        return [
            rows.log_dict(r) for r in await self._reader.execute_fetchall(rows.SELECT_LOGS, (_limit(limit),))
        ]

    # --- outbox (cloud working storage) ---

    async def outbox_put(self, kind: str, payloads: list[bytes]) -> int:
        """Append rows, oldest first out; rows over ``outbox_max_rows`` are refused and counted. Returns how many were accepted."""
        now = time.time()
        items = [bytes(p) for p in payloads]

        async def op(db: aiosqlite.Connection) -> int:
            count = next(iter(await db.execute_fetchall(rows.COUNT_OUTBOX)))[0]
            accepted = items[: max(0, self._outbox_max_rows - count)]
            if accepted:
                await db.executemany(rows.INSERT_OUTBOX, [(kind, p, now) for p in accepted])
            return len(accepted)

        accepted: int = await self._writer.submit(op)
        refused = len(items) - accepted
        if refused:
            self._outbox_refused[kind] = self._outbox_refused.get(kind, 0) + refused
            log.warning("outbox_full", kind=kind, refused=refused, max_rows=self._outbox_max_rows)
        return accepted

    async def outbox_peek(self, limit: int) -> list[tuple[int, str, bytes]]:
        found = await self._reader.execute_fetchall(rows.SELECT_OUTBOX, (_limit(limit),))
        return [(r[0], r[1], r[2]) for r in found]

    async def outbox_ack(self, ids: list[int]) -> None:
        params = [(int(i),) for i in ids]
        if not params:
            return

        async def op(db: aiosqlite.Connection) -> None:
            await db.executemany(rows.DELETE_OUTBOX, params)

        await self._writer.submit(op)

    async def outbox_depth(self) -> int:
        return int(next(iter(await self._reader.execute_fetchall(rows.COUNT_OUTBOX)))[0])
