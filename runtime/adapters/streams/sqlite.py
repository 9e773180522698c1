"""Built-in data-stream storage: one SQLite file (``DATA_DIR/datastreams.db``, WAL), apart from
``runtime.db`` so stream rows never slow the message records. Every built-in stream (and every stream of a
type not reachable here) keeps its rows in one table, keyed by stream, with the row as JSON.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from runtime.core.streams import StreamSpec, parse_time, stamped

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rows (seq INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, "
    "device_id TEXT, at REAL, body BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS rows_stream_at ON rows(stream, at)",
    "CREATE INDEX IF NOT EXISTS rows_stream_device_at ON rows(stream, device_id, at)",
)


class BuiltinDatabase:
    """The shared file; opened on first use by a sink, closed with the process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def db(self) -> aiosqlite.Connection:
        async with self._lock:
            if self._db is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = await aiosqlite.connect(self.path, isolation_level=None)
                for stmt in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", *_SCHEMA):
                    await db.execute(stmt)
                self._db = db
            return self._db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None


class BuiltinSink:
    def __init__(self, spec: StreamSpec, database: BuiltinDatabase) -> None:
        self.spec = spec
        self._database = database

    async def start(self) -> None:
        await self._database.db()

    async def close(self) -> None:
        return None  # the file is shared; closed by its owner

    async def write(self, ops: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
        db = await self._database.db()
        spec = self.spec
        await db.execute("BEGIN")
        try:
            adds: list[tuple[str, Any, float | None, bytes]] = []
            for op in ops:
                row = op["row"]
                if op["op"] == "add":
                    row = stamped(spec, op)
                    at = op.get("at")
                    adds.append((spec.key, row.get(spec.device_field),
                                 at if at is not None else parse_time(row.get(spec.time_field)), orjson.dumps(row)))
                    continue
                if adds:
                    await db.executemany("INSERT INTO rows(stream, device_id, at, body) VALUES (?, ?, ?, ?)", adds)
                    adds = []
                await self._update(db, row, op.get("where") or {})
            if adds:
                await db.executemany("INSERT INTO rows(stream, device_id, at, body) VALUES (?, ?, ?, ?)", adds)
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return []  # a JSON body takes any row: nothing refused

    async def _update(self, db: aiosqlite.Connection, row: dict[str, Any], where: dict[str, Any]) -> None:
        sql = "SELECT seq, body FROM rows WHERE stream = ?"
        args: list[Any] = [self.spec.key]
        if self.spec.device_field in where:
            sql += " AND device_id = ?"
            args.append(where[self.spec.device_field])
        async with db.execute(sql, args) as cur:
            found = await cur.fetchall()
        changes = []
        for seq, body in found:
            current = orjson.loads(body)
            if all(current.get(k) == v for k, v in where.items()):
                current.update(row)
                changes.append((orjson.dumps(current), seq))
        if changes:
            await db.executemany("UPDATE rows SET body = ? WHERE seq = ?", changes)

    async def read(self, device_id: str | None, start: float | None, end: float | None,
                   limit: int) -> list[dict[str, Any]]:
        db = await self._database.db()
        sql = "SELECT body FROM rows WHERE stream = ?"
        args: list[Any] = [self.spec.key]
        if device_id is not None:
            sql += " AND device_id = ?"
            args.append(device_id)
        if start is not None:
            sql += " AND at >= ?"
            args.append(start)
        if end is not None:
            sql += " AND at <= ?"
            args.append(end)
        sql += " ORDER BY at DESC, seq DESC LIMIT ?"
        args.append(limit)
        async with db.execute(sql, args) as cur:
            return [orjson.loads(body) for (body,) in await cur.fetchall()]
