"""The durable per-stream queue: every data-stream row goes through it, in its own SQLite file
(``DATA_DIR/datastreams-queue.db``, WAL), and leaves it only after its database committed it.

``put`` never blocks: rows wait in memory until the flusher commits them (one transaction a batch, at
once when rows are waiting); the callbacks given with them run after that commit (the message's ack).
Each stream's queue is bounded (``max_rows``): a row past it is refused and counted, never silently lost.
A drainer ``take``s the oldest rows of its stream and ``ack``s them once written.

What a commit wrote is also kept in memory (up to ``MEMORY_ROWS`` per stream) while every row of the stream in
the file is there too: the drainer then takes them without reading the file back (no SELECT, no JSON
decoding); the file is what survives a crash, and a row leaves it only on ``ack``, as before. Past that
(the database away, rows piling up, or rows left from a previous run), ``take`` reads the file until the
stream's queue is empty again.

Rows a stream's database refused (a value its column cannot hold, a constraint they break) leave the queue with
their batch's ack and are kept in the file's ``rejected`` table (stream, when, the database's reason, the
queued operation's JSON), the newest ``REJECTED_KEEP`` per stream, for the operator to look at (``rejected``) or
queue again (``requeue_rejected``: back at the end of the stream's queue, moved in one transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import orjson
import structlog

from runtime.core.streams import passed_mark
from runtime.core.timefmt import iso

log = structlog.get_logger(__name__)

# One queue row is a chunk: the rows one flush had for one stream (``n`` of them, a JSON array), so a row
# costs no SQLite row, no JSON call and no index entry of its own.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chunks (seq INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, "
    "n INTEGER NOT NULL, body BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS chunks_stream_seq ON chunks(stream, seq)",
    "CREATE TABLE IF NOT EXISTS rejected (id INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, "
    "at TEXT NOT NULL, reason TEXT NOT NULL, item TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS rejected_stream_id ON rejected(stream, id)",
)
_INSERT = "INSERT INTO chunks(stream, n, body) VALUES (?, ?, ?)"
CHUNK = 1000
MEMORY_ROWS = 20_000  # committed rows per stream also kept in memory for the drainer
COALESCE = 0.02  # seconds the flusher waits for more rows before a commit (unless a chunk is full)
REJECTED_KEEP = 10_000  # refused rows kept per stream (the newest)
REJECTED_READ = 1000  # refused rows one ``rejected`` call returns at most


def warn_refused(stream: str, max_rows: int, before: int, after: int) -> None:
    """A full queue's refusals, logged when their count passes 1, 10, 100, 1,000 and each 10,000 (not each row)."""
    if passed_mark(before, after):
        log.warning("datastream_queue_full", stream=stream, max_rows=max_rows, refused=after)


class StreamQueue:
    def __init__(self, path: Path, *, max_rows: int = 200_000) -> None:
        self.path = path
        self.max_rows = max_rows
        self._db: aiosqlite.Connection | None = None
        self._pending: dict[str, list[dict[str, Any]]] = {}
        # chunks that came encoded (the stream process's frames: ``put_chunk``): stored as they are
        self._pending_chunks: list[tuple[str, int, bytes]] = []
        self._chunk_rows: Counter[str] = Counter()  # rows in ``_pending_chunks``, per stream
        self._callbacks: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.committed: Counter[str] = Counter()  # rows in the file, per stream
        self._flight: dict[str, int] = {}  # rows being committed now, per stream
        self._held: dict[str, int] = {}  # rows in the file or being committed, per stream (``put``'s bound)
        self._awake = False  # ``_wake`` set by ``put`` and not yet cleared by the flusher
        self.overflow: Counter[str] = Counter()  # rows refused because the stream's queue was full
        self.listeners: list[Callable[[set[str]], None]] = []  # told which streams got rows, after a commit
        # per stream, the oldest committed chunks (seq, rows or their JSON, n), in order, while they are all the
        # stream has in the file
        self._memory: dict[str, deque[tuple[int, list[dict[str, Any]] | bytes, int]]] = {}
        self._memory_rows: Counter[str] = Counter()
        self.last_error: str | None = None
        self._flushing = False
        # one transaction at a time on the file's one connection: the flusher's commit and an ack (with the
        # rows it keeps aside) would otherwise run their statements inside each other's transaction
        self._tx = asyncio.Lock()
        self._rejected_kept: Counter[str] = Counter()  # rows in the ``rejected`` table, per stream

    @property
    def rejected_kept(self) -> Mapping[str, int]:
        """Rows in the ``rejected`` table now, per stream."""
        return self._rejected_kept

    async def open(self) -> StreamQueue:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"):
            await self._db.execute(pragma)
        for stmt in _SCHEMA:
            await self._db.execute(stmt)
        async with self._db.execute("SELECT stream, SUM(n) FROM chunks GROUP BY stream") as cur:
            for stream, n in await cur.fetchall():
                self.committed[stream] = self._held[stream] = n
        async with self._db.execute("SELECT stream, COUNT(*) FROM rejected GROUP BY stream") as cur:
            for stream, n in await cur.fetchall():
                self._rejected_kept[stream] = n
        self._task = asyncio.create_task(self._flusher(), name="datastreams:queue")
        if self.committed:
            log.info("datastream_queue_reopened", rows=dict(self.committed))
        return self

    async def close(self) -> None:
        if self._task is not None:
            await self.flush()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def __aenter__(self) -> StreamQueue:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _atomic(self) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction on the file's connection (the caller holds ``_tx``): committed when the block ends,
        rolled back when it raises."""
        assert self._db is not None
        await self._db.execute("BEGIN")
        try:
            yield self._db
            await self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await self._db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ writing
    def depth(self, stream: str) -> int:
        return self._held.get(stream, 0) + len(self._pending.get(stream, ())) + self._chunk_rows.get(stream, 0)

    def put(self, stream: str, item: dict[str, Any]) -> bool:
        """Queue one operation (``{"op": "add"|"update", ...}``); False (counted) when the stream is full."""
        rows = self._pending.get(stream)
        if rows is None:
            self._pending[stream] = rows = []
        if self._held.get(stream, 0) + len(rows) + self._chunk_rows.get(stream, 0) >= self.max_rows:
            self._refuse(stream, 1)
            return False
        rows.append(item)  # the caller hands it over: never changed afterwards
        if not self._awake:
            self._awake = True
            self._wake.set()
        return True

    def _refuse(self, stream: str, count: int) -> None:
        self.overflow[stream] += count
        warn_refused(stream, self.max_rows, self.overflow[stream] - count, self.overflow[stream])

    def put_chunk(self, stream: str, n: int, body: bytes) -> int:
        """Queue ``n`` add/update operations already encoded as one JSON array, stored as it is (no decoding
        here). When they do not all fit, the first ones that do are queued and the rest refused (counted, as
        ``put`` counts): the number refused. (A queue takes chunks or ``put`` rows, not both: the flusher commits
        the chunks first.)"""
        room = self.max_rows - self.depth(stream)
        if n > room:
            kept = orjson.loads(body)[:max(room, 0)]
            self._refuse(stream, n - len(kept))
            if not kept:
                return n
            body, refused, n = orjson.dumps(kept), n - len(kept), len(kept)
        else:
            refused = 0
        self._pending_chunks.append((stream, n, body))
        self._chunk_rows[stream] += n
        if not self._awake:
            self._awake = True
            self._wake.set()
        return refused

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once what is queued now is committed to the file (rows the flusher is committing
        at this moment included: the callback then waits for its next pass)."""
        if not self._pending and not self._pending_chunks and not self._flight:
            callback()
            return
        self._callbacks.append(callback)
        self._wake.set()

    async def flush(self) -> None:
        """Wait until what is queued now is committed."""
        while self._pending or self._pending_chunks or self._callbacks or self._flight:
            self._flushed.clear()
            self._flushing = True
            self._wake.set()
            try:
                await self._flushed.wait()
            finally:
                self._flushing = False

    async def _flusher(self) -> None:
        assert self._db is not None
        while True:
            await self._wake.wait()
            if (sum(map(len, self._pending.values())) < CHUNK and not self._pending_chunks
                    and not self._flushing):
                await asyncio.sleep(COALESCE)  # let rows gather: one transaction for many messages
            self._wake.clear()
            self._awake = False
            pending, self._pending = self._pending, {}
            encoded, self._pending_chunks = self._pending_chunks, []
            self._chunk_rows = Counter()
            callbacks, self._callbacks = self._callbacks, []
            flight: Counter[str] = Counter({stream: len(rows) for stream, rows in pending.items()})
            for stream, n, _ in encoded:
                flight[stream] += n
            self._flight = dict(flight)
            for stream, n in self._flight.items():
                self._held[stream] = self._held.get(stream, 0) + n
            if pending or encoded:
                # the stream process's chunks first: they were queued before anything ``put`` here since
                chunks: list[tuple[str, list[dict[str, Any]] | bytes, int]] = [
                    (stream, body, n) for stream, n, body in encoded]
                chunks += [(stream, rows[i:i + CHUNK], len(rows[i:i + CHUNK])) for stream, rows in pending.items()
                           for i in range(0, len(rows), CHUNK)]
                batch = [(stream, n, rows if isinstance(rows, bytes) else orjson.dumps(rows))
                         for stream, rows, n in chunks]
                while True:
                    try:  # each chunk's seq, for the memory copy
                        async with self._tx:
                            if len(batch) == 1:  # the usual flush: one statement, a transaction of its own
                                seqs = [(await self._db.execute(_INSERT, batch[0])).lastrowid]
                            else:
                                async with self._atomic() as db:
                                    seqs = [(await db.execute(_INSERT, args)).lastrowid for args in batch]
                        break
                    except Exception as exc:  # noqa: BLE001 - disk full, locked: keep the rows, try again
                        self.last_error = f"{type(exc).__name__}: {exc}"
                        log.error("datastream_queue_write_failed", error=self.last_error)
                        await asyncio.sleep(0.5)
                for (stream, rows, n), seq in zip(chunks, seqs, strict=True):
                    self._remember(stream, seq, rows, n)
                    self.committed[stream] += n
                self._flight = {}
                for listener in self.listeners:
                    listener(set(flight))
            for cb in callbacks:
                try:
                    cb()
                except Exception as exc:  # noqa: BLE001 - one ack callback must not stop the others
                    log.error("datastream_queue_callback_failed", error=repr(exc))
            self._flushed.set()

    def _remember(self, stream: str, seq: int | None, rows: list[dict[str, Any]] | bytes, n: int) -> None:
        """Keep a chunk just committed in memory (as it came: rows, or their JSON, decoded by ``take``) if every
        row of the stream in the file is there already (so the memory holds the oldest chunks, in order) and
        there is room."""
        held = self._memory_rows[stream]
        if seq is None or held != self.committed[stream] or held + n > MEMORY_ROWS:
            return
        chunks = self._memory.get(stream)
        if chunks is None:
            self._memory[stream] = chunks = deque()
        chunks.append((seq, rows, n))
        self._memory_rows[stream] = held + n

    # ------------------------------------------------------------------ draining
    async def take(self, stream: str, limit: int) -> list[tuple[int, list[dict[str, Any]]]]:
        """The oldest chunks of ``stream``, in order, about ``limit`` rows (at least one chunk)."""
        return [(seq, orjson.loads(rows) if isinstance(rows, bytes) else rows)
                for seq, rows, _ in await self._oldest(stream, limit)]

    async def _oldest(self, stream: str, limit: int) -> list[tuple[int, list[dict[str, Any]] | bytes, int]]:
        assert self._db is not None
        out: list[tuple[int, list[dict[str, Any]] | bytes, int]] = []
        total = 0
        held = self._memory.get(stream)
        if held:  # the oldest chunks, still in memory
            for seq, rows, n in held:
                if out and total + n > limit:
                    break
                out.append((seq, rows, n))
                total += n
            return out
        if not self.committed[stream]:  # nothing in the file either: no need to look
            return out
        async with self._db.execute(
            "SELECT seq, n, body FROM chunks WHERE stream = ? ORDER BY seq LIMIT ?", (stream, max(1, limit // 10))
        ) as cur:
            for seq, n, body in await cur.fetchall():
                if out and total + n > limit:
                    break
                out.append((seq, body, n))
                total += n
        return out

    async def ack(self, stream: str, last_seq: int, count: int,
                  rejected: Sequence[tuple[dict[str, Any], str]] = (), at: float | None = None) -> None:
        """The rows of ``stream`` up to chunk ``last_seq`` (``count`` of them) are in their database: drop them.
        ``rejected``: those of them the database refused, each with its reason, kept aside (refused ``at``) in
        the same transaction as the drop, so a crash keeps or drops the batch and its refused rows together."""
        assert self._db is not None
        async with self._tx:
            if not rejected:
                await self._db.execute("DELETE FROM chunks WHERE stream = ? AND seq <= ?", (stream, last_seq))
            else:
                kept = self._rejected_kept[stream] + len(rejected)
                when = iso(time.time() if at is None else at)
                async with self._atomic() as db:
                    await db.execute("DELETE FROM chunks WHERE stream = ? AND seq <= ?", (stream, last_seq))
                    await db.executemany(
                        "INSERT INTO rejected(stream, at, reason, item) VALUES (?, ?, ?, ?)",
                        [(stream, when, reason, orjson.dumps(item).decode()) for item, reason in rejected])
                    if kept > REJECTED_KEEP:  # the newest kept
                        await db.execute(
                            "DELETE FROM rejected WHERE stream = ? AND id <= (SELECT id FROM rejected WHERE "
                            "stream = ? ORDER BY id DESC LIMIT 1 OFFSET ?)", (stream, stream, REJECTED_KEEP))
                        kept = REJECTED_KEEP
                self._rejected_kept[stream] = kept
        self.committed[stream] -= count
        self._held[stream] -= count
        held = self._memory.get(stream)
        while held and held[0][0] <= last_seq:
            self._memory_rows[stream] -= held.popleft()[2]

    # ------------------------------------------------------------------ refused rows
    async def rejected(self, stream: str, limit: int) -> list[dict[str, Any]]:
        """The refused rows kept for ``stream``, newest first, at most ``limit`` (``REJECTED_READ``): ``{id, at,
        reason, row}``, ``row`` the queued operation as it was refused. Under ``_tx``: a read on the connection
        while an ``ack`` holds its transaction open would see that ack's rows before their commit."""
        assert self._db is not None
        async with self._tx, self._db.execute(
            "SELECT id, at, reason, item FROM rejected WHERE stream = ? ORDER BY id DESC LIMIT ?",
            (stream, max(1, min(limit, REJECTED_READ))),
        ) as cur:
            return [{"id": id_, "at": at, "reason": reason, "row": orjson.loads(item)}
                    for id_, at, reason, item in await cur.fetchall()]

    async def requeue_rejected(self, stream: str) -> int:
        """Every refused row kept for ``stream`` back at the end of its queue, in the order they were refused
        (chunks of ``CHUNK``), and out of the ``rejected`` table, in one transaction: a crash leaves them in one
        place or the other, never both, never neither. The stream's drainer is woken (``listeners``); a row
        refused again is kept aside again. Not bounded by ``max_rows`` (at most ``REJECTED_KEEP`` rows, which
        the operator asked for). The number of rows queued."""
        assert self._db is not None
        async with self._tx:
            async with self._atomic() as db:
                async with db.execute("SELECT id, item FROM rejected WHERE stream = ? ORDER BY id", (stream,)) as cur:
                    kept = list(await cur.fetchall())
                chunks: list[tuple[bytes, int]] = []
                for i in range(0, len(kept), CHUNK):
                    part = kept[i:i + CHUNK]
                    chunks.append((b"[" + ",".join(item for _, item in part).encode() + b"]", len(part)))
                seqs = [(await db.execute(_INSERT, (stream, n, body))).lastrowid for body, n in chunks]
                if kept:
                    await db.execute("DELETE FROM rejected WHERE stream = ? AND id <= ?", (stream, kept[-1][0]))
            # before the lock is let go (no await from here): the memory copy stays in the file's order
            for (body, n), seq in zip(chunks, seqs, strict=True):
                self._remember(stream, seq, body, n)
                self.committed[stream] += n
                self._held[stream] = self._held.get(stream, 0) + n
            self._rejected_kept[stream] -= len(kept)
        if kept:
            log.info("datastream_rejected_requeued", stream=stream, rows=len(kept))
            for listener in self.listeners:
                listener({stream})
        return len(kept)
