"""Redis data streams (redis-py asyncio): one record per device, as NuvIoT's Redis stream keeps it.

The device's record is a hash ``nuviot:datastream:{stream}:{deviceId}`` (each column's value as JSON) and
the set ``nuviot:datastream:{stream}:devices`` lists the devices; a new row replaces the device's record,
an update sets the given columns. Writes are idempotent, so a batch retried after an outage does no harm.
Server Urls ``host[:port]`` (default port 6379; the first one is used), Password by reference.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from runtime.core.errors import TransientError
from runtime.core.streams import StreamSpec, select, stamped

log = structlog.get_logger(__name__)

TIMEOUT = 5.0


def server_of(spec: StreamSpec) -> tuple[str, int]:
    first = (spec.source.redis_server_uris or "").split(",")[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1].rsplit("@", 1)[-1]
    host, _, port = first.partition(":")
    return host or "localhost", int(port or 6379)


class RedisSink:
    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        host, port = server_of(spec)
        self.where = f"{host}:{port}"
        pw = spec.source.redis_password
        self._client = aioredis.Redis(host=host, port=port, password=pw.get_secret_value() if pw else None,
                                      socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        self._prefix = f"nuviot:datastream:{spec.key}:"
        self._devices = f"{self._prefix}devices"

    async def start(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            log.warning("datastream_database_unreachable_at_start", stream=self.spec.key, database=self.where,
                        error=type(exc).__name__)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.aclose()

    @staticmethod
    def _enc(row: dict[str, Any]) -> dict[str, bytes]:
        return {k: orjson.dumps(v) for k, v in row.items()}

    async def write(self, ops: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
        dev = self.spec.device_field
        try:
            latest: dict[str, dict[str, Any]] = {}  # one record per device: the batch's last row wins
            pipe = self._client.pipeline(transaction=True)
            for op in ops:
                row = op["row"]
                if op["op"] == "add":
                    latest[str(row.get(dev))] = stamped(self.spec, op)
                    continue
                for device_id, rec in latest.items():  # updates see the rows before them
                    if rec is not None:
                        pipe.delete(self._prefix + device_id)
                        pipe.hset(self._prefix + device_id, mapping=self._enc(rec))  # type: ignore[arg-type]  # redis-py's Mapping is invariant in its key: str is fine
                        pipe.sadd(self._devices, device_id)
                latest = {}
                await self._queue_update(pipe, row, op.get("where") or {})
            for device_id, rec in latest.items():
                pipe.delete(self._prefix + device_id)
                pipe.hset(self._prefix + device_id, mapping=self._enc(rec))  # type: ignore[arg-type]  # redis-py's Mapping is invariant in its key: str is fine
                pipe.sadd(self._devices, device_id)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise TransientError(f"Redis at {self.where}: {type(exc).__name__}: {exc}") from None
        return []  # a hash takes any value: nothing refused

    async def _queue_update(self, pipe: Any, row: dict[str, Any], where: dict[str, Any]) -> None:
        dev = self.spec.device_field
        if dev in where:
            targets = [str(where[dev])]
        else:
            targets = [m.decode() for m in await self._client.smembers(self._devices)]  # type: ignore[union-attr]  # bytes: no decode_responses
        for device_id in targets:
            current = await self._record(device_id)
            if current is None or not all(current.get(k) == v for k, v in where.items()):
                continue
            pipe.hset(self._prefix + device_id, mapping=self._enc(row))

    async def _record(self, device_id: str) -> dict[str, Any] | None:
        raw = await self._client.hgetall(self._prefix + device_id)
        return {k.decode(): orjson.loads(v) for k, v in raw.items()} if raw else None  # type: ignore[union-attr]  # bytes: no decode_responses

    async def read(self, device_id: str | None, start: float | None, end: float | None,
                   limit: int) -> list[dict[str, Any]]:
        try:
            if device_id is not None:
                ids = [device_id]
            else:
                ids = sorted(m.decode() for m in await self._client.smembers(self._devices))  # type: ignore[union-attr]  # bytes: no decode_responses
            rows = [r for r in [await self._record(i) for i in ids] if r is not None]
        except (RedisError, OSError) as exc:
            raise TransientError(f"Redis at {self.where}: {type(exc).__name__}") from None
        return select(self.spec, rows, device_id, start, end, limit)
