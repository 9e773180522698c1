"""Redis data streams (redis-py asyncio): one record per device, as NuvIoT's Redis stream keeps it.

The device's record is a hash ``nuviot:datastream:{stream}:{deviceId}`` (each column's value as JSON) and
the set ``nuviot:datastream:{stream}:devices`` lists the devices; a new row replaces the device's record,
an update sets the given columns. Writes are idempotent, so a batch retried after an outage does no harm.
Server Urls ``host[:port]`` (default port 6379; the first one is used), Password by reference.

A key of the stream's that something else made of another type (Redis's ``WRONGTYPE``): an update of a device
whose key is not a hash is refused (kept aside with the key named, like a row PostgreSQL refuses) instead of
being retried for ever; a devices set that is not a set is the stream's own configuration, retried with the
key named in ``lastError`` until the operator removes it. A new row replaces the device's key whatever it held.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

from runtime.core.errors import TransientError
from runtime.core.streams import StreamSpec, select, stamped

log = structlog.get_logger(__name__)

TIMEOUT = 5.0


def _wrong_type(exc: BaseException) -> bool:
    """Redis's WRONGTYPE, alone or as a pipeline reports it (``Command # 3 (SADD ...) of pipeline caused error:
    ('WRONGTYPE ...',)``)."""
    return isinstance(exc, ResponseError) and "WRONGTYPE" in str(exc)


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
        refused: list[tuple[dict[str, Any], str]] = []
        try:
            latest: dict[str, dict[str, Any]] = {}  # one record per device: the batch's last row wins
            pipe = self._client.pipeline(transaction=True)
            for op in ops:
                row = op["row"]
                if op["op"] == "add":
                    latest[str(row.get(dev))] = stamped(self.spec, op)
                    continue
                for device_id, rec in latest.items():
                    pipe.delete(self._prefix + device_id)
                    pipe.hset(self._prefix + device_id, mapping=self._enc(rec))  # type: ignore[arg-type]  # redis-py's Mapping is invariant in its key: str is fine
                    pipe.sadd(self._devices, device_id)
                latest = {}
                if len(pipe):  # an update sees the rows and updates before it: they are written before it reads
                    await pipe.execute()
                reason = await self._queue_update(pipe, row, op.get("where") or {})
                if reason is not None:
                    refused.append((op, reason))
            for device_id, rec in latest.items():
                pipe.delete(self._prefix + device_id)
                pipe.hset(self._prefix + device_id, mapping=self._enc(rec))  # type: ignore[arg-type]  # redis-py's Mapping is invariant in its key: str is fine
                pipe.sadd(self._devices, device_id)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            if _wrong_type(exc) and (kind := await self._type_of(self._devices)) not in ("set", "none"):
                raise TransientError(f"Redis at {self.where}: the key {self._devices} holds a {kind}, not the "
                                     "stream's set of devices (WRONGTYPE): remove or rename it") from None
            raise TransientError(f"Redis at {self.where}: {type(exc).__name__}: {exc}") from None
        return refused  # a hash takes any value: only an update of a key that is not a hash is refused

    async def _queue_update(self, pipe: Any, row: dict[str, Any], where: dict[str, Any]) -> str | None:
        """Queue the update's writes on ``pipe``, or none of them and say why it is refused: a target device's
        key holds something else than a hash."""
        dev = self.spec.device_field
        if dev in where:
            targets = [str(where[dev])]
        else:
            targets = [m.decode() for m in await self._client.smembers(self._devices)]  # type: ignore[union-attr]  # bytes: no decode_responses
        keys = []
        for device_id in targets:
            try:
                current = await self._record(device_id)
            except ResponseError as exc:
                if not _wrong_type(exc):
                    raise
                key = self._prefix + device_id
                return f"the key {key} holds a {await self._type_of(key)}, not a device's record (WRONGTYPE)"
            if current is not None and all(current.get(k) == v for k, v in where.items()):
                keys.append(self._prefix + device_id)
        for key in keys:
            pipe.hset(key, mapping=self._enc(row))
        return None

    async def _type_of(self, key: str) -> str:
        """What the key holds (Redis's ``TYPE``: string, list, hash, set, zset, stream, none), best effort."""
        try:
            return (await self._client.type(key)).decode()  # type: ignore[union-attr]  # bytes: no decode_responses
        except (RedisError, OSError):
            return "something else"

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
