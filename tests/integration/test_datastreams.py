"""Data streams against the real servers: built-in SQLite, the suite's own PostgreSQL and redis-server.

Each test runs a ``StreamService`` over the durable queue and the stream's sink, as the command plane
does, writes rows, and reads them back through the service (what ``GET /datastreams/{key}/records``
serves).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from runtime.adapters.streams import DataStreams
from runtime.core.solution.model import DataStream, Instance, Planner, Solution, SolutionDocument
from runtime.core.streams import StreamStartError, buckets, spec_of
from runtime.services.streams import StreamService
from tests.support.databases import Postgres, Redis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

FIELDS = [
    {"key": "temperature", "name": "Temperature", "fieldName": "temperature", "fieldType": "decimal",
     "numberDecimalPoint": 1, "minValue": -40, "maxValue": 80},
    {"key": "humidity", "name": "Humidity", "fieldName": "humidity", "fieldType": "integer"},
    {"key": "mode", "name": "Mode", "fieldName": "mode", "fieldType": "string"},
]
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def doc_with(*streams: dict[str, Any]) -> SolutionDocument:
    return SolutionDocument(instance=Instance(), solution=Solution(key="s", name="s", planner=Planner(key="p")),
                            data_streams=tuple(DataStream.model_validate(s) for s in streams))


def pg_stream(pg: Postgres, table: str, **extra: Any) -> dict[str, Any]:
    return {"key": "pg", "name": "PG", "streamType": "postgresql", "dbUrl": f"{pg.host}:{pg.port}",
            "dbName": "postgres", "dbUserName": "postgres", "dbTableName": table, "fields": FIELDS, **extra}


async def until(check: Callable[[], Any], within: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while not (got := check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
    return got


@pytest.fixture
async def streams(tmp_path: Path) -> AsyncIterator[DataStreams]:
    async with DataStreams(tmp_path / "data", max_rows=1000) as ds:
        yield ds


async def started(ds: DataStreams, *stream: dict[str, Any]) -> StreamService:
    service = ds.service_for(doc_with(*stream), drain_timeout=5)
    await service.start()
    return service


async def drained(service: StreamService, key: str) -> None:
    await until(lambda: service.status_raw()[[s["key"] for s in service.status_raw()].index(key)]["depth"] == 0
                and service.status_raw()[0]["written"] > 0)


async def test_builtin_rows_newest_first_filtered_and_bucketed(streams: DataStreams) -> None:
    service = await started(streams, {"key": "hist", "name": "History", "fields": FIELDS,
                                      "dateStorageFormat": "iso8601"})
    try:
        for i in range(10):
            service.add("hist", "dev1" if i % 2 == 0 else "dev2", T0 + i * 30, {"temperature": 20 + i,
                                                                                "humidity": 40 + i})
        await drained(service, "hist")
        rows = await service.read("hist", "dev1", None, None, 100)
        assert [r["temperature"] for r in rows] == [28.0, 26.0, 24.0, 22.0, 20.0]  # newest first
        assert rows[0]["deviceId"] == "dev1" and rows[0]["timeStamp"] == "2026-01-01T00:04:00.000Z"
        window = await service.read("hist", None, T0 + 60, T0 + 120, 2)
        assert [r["temperature"] for r in window] == [24.0, 23.0]
        spec = service.specs["hist"]
        per_minute = buckets(spec, await service.read("hist", None, None, None, 1000), 60)
        assert per_minute[0] == {"from": "2026-01-01T00:04:00.000Z", "to": "2026-01-01T00:05:00.000Z", "count": 2,
                                 "averages": {"temperature": 28.5, "humidity": 48.5}}
        assert [b["count"] for b in per_minute] == [2, 2, 2, 2, 2]
        status = service.status()[0]
        assert status["type"] == "builtin" and status["depth"] == 0 and status["written"] == 10
        assert status["lastWriteAt"] is not None and status["lastError"] is None
    finally:
        await service.stop()


async def test_other_types_are_written_to_builtin_storage(streams: DataStreams) -> None:
    service = await started(streams, {"key": "simpletable", "name": "Simple Table",
                                      "streamType": "azuretablestorage", "fields": FIELDS[:1]})
    try:
        service.add("simpletable", "dev1", T0, {"temperature": 21.25})
        await drained(service, "simpletable")
        assert await service.read("simpletable", "dev1", None, None, 10) == [
            {"deviceId": "dev1", "timeStamp": "2026-01-01T00:00:00.000Z", "temperature": 21.2}]
        st = service.status()[0]
        assert st["writtenToBuiltIn"] is True and st["streamType"] == "azuretablestorage" and st["type"] == "builtin"
    finally:
        await service.stop()


async def test_queue_is_bounded_and_overflow_is_counted(tmp_path: Path) -> None:
    async with DataStreams(tmp_path / "data", max_rows=5) as ds:
        doc = doc_with(pg_stream(Postgres(tmp_path, port=1), "nowhere"))  # nothing listens on port 1
        service = ds.service_for(doc, drain_timeout=0.2)
        await service.start()
        try:
            took = [service.add("pg", "d", T0 + i, {"temperature": 1}) for i in range(8)]
            assert took == [True] * 5 + [False] * 3
            await ds.queue.flush()
            st = service.status()[0]
            assert st["depth"] == 5 and st["overflow"] == 3
            await until(lambda: service.status()[0]["lastError"])
            assert "cannot reach PostgreSQL" in service.status()[0]["lastError"]
        finally:
            await service.stop()


async def test_postgres_auto_create_copy_read_and_update(streams: DataStreams, postgres: Postgres) -> None:
    table = f"t_{uuid.uuid4().hex[:10]}"
    service = await started(streams, pg_stream(postgres, table, autoCreateSqlTable=True, dbValidateSchema=True))
    try:
        for i in range(300):
            service.add("pg", f"dev{i % 3}", T0 + i, {"temperature": 20.04 + i / 10, "humidity": i, "mode": "a"})
        await drained(service, "pg")
        conn = await asyncpg.connect(postgres.dsn)
        try:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 300
            types = dict(await conn.fetch("SELECT column_name, data_type FROM information_schema.columns "
                                          "WHERE table_name = $1", table))
            assert types["timeStamp"] == "timestamp with time zone" and types["temperature"] == "double precision"
        finally:
            await conn.close()
        rows = await service.read("pg", "dev0", T0 + 100, None, 3)
        assert [r["humidity"] for r in rows] == [297, 294, 291]
        assert rows[0] == {"deviceId": "dev0", "timeStamp": "2026-01-01T00:04:57.000Z", "temperature": 49.7,
                           "humidity": 297, "mode": "a"}
        service.put("pg", service.update_row("pg", "dev0", T0, {"mode": "b"}, {"deviceId": "dev0"}))
        await until(lambda: service.status()[0]["depth"] == 0)
        await until(lambda: service.status()[0]["written"] == 301)
        modes = {r["mode"] for r in await service.read("pg", "dev0", None, None, 1000)}
        assert modes == {"b"}
        assert {r["mode"] for r in await service.read("pg", "dev1", None, None, 1000)} == {"a"}
    finally:
        await service.stop()


@pytest.mark.parametrize(("ddl", "problem"), [
    (None, "table public.{t} does not exist"),
    ('CREATE TABLE {t} ("deviceId" text, "timeStamp" timestamptz, temperature float8, humidity int)',
     "table public.{t} has no column mode"),
    ('CREATE TABLE {t} ("deviceId" text, "timeStamp" timestamptz, temperature text, humidity int, mode text)',
     "table public.{t}, column temperature: type text cannot hold the field"),
])
async def test_postgres_validate_schema_names_stream_table_and_column(
    streams: DataStreams, postgres: Postgres, ddl: str | None, problem: str
) -> None:
    table = f"t_{uuid.uuid4().hex[:10]}"
    if ddl:
        conn = await asyncpg.connect(postgres.dsn)
        await conn.execute(ddl.format(t=table))
        await conn.close()
    service = streams.service_for(doc_with(pg_stream(postgres, table, dbValidateSchema=True)))
    with pytest.raises(StreamStartError) as info:
        await service.start()
    assert str(info.value).startswith("data stream pg cannot start: ")
    assert problem.format(t=table) in str(info.value)
    await service.stop()


async def test_postgres_password_by_reference_is_never_in_status(streams: DataStreams, postgres: Postgres) -> None:
    spec = spec_of(DataStream.model_validate(pg_stream(postgres, "x", dbPassword="s3cret-value")))
    service = streams.service_for(doc_with(pg_stream(postgres, "x", dbPassword="s3cret-value")))
    assert "s3cret-value" not in repr(spec) and "s3cret-value" not in str(service.status())


def redis_stream(server: Redis) -> dict[str, Any]:
    return {"key": f"r{uuid.uuid4().hex[:8]}", "name": "Latest", "streamType": "redis",
            "redisServerUris": f"{server.host}:{server.port}", "dateStorageFormat": "epoch", "fields": FIELDS}


async def test_redis_keeps_one_record_per_device(streams: DataStreams, redis_server: Redis) -> None:
    stream = redis_stream(redis_server)
    key = stream["key"]
    service = await started(streams, stream)
    try:
        for i in range(50):
            service.add(key, f"dev{i % 5}", T0 + i, {"temperature": i, "humidity": 2 * i})
        await drained(service, key)
        one = await service.read(key, "dev3", None, None, 10)
        assert one == [{"deviceId": "dev3", "timeStamp": int(T0) + 48, "temperature": 48.0, "humidity": 96,
                        "mode": None}]
        every = await service.read(key, None, None, None, 10)
        assert [r["deviceId"] for r in every] == ["dev4", "dev3", "dev2", "dev1", "dev0"]  # newest first
        service.put(key, service.update_row(key, "dev3", T0, {"mode": "off"}, None))
        await until(lambda: service.status()[0]["written"] == 51)
        assert (await service.read(key, "dev3", None, None, 1))[0]["mode"] == "off"
        assert buckets(service.specs[key], every, 3600)[0]["count"] == 5
    finally:
        await service.stop()


async def test_redis_an_update_in_the_batch_of_its_rows_sees_them(streams: DataStreams, redis_server: Redis) -> None:
    """A device's first row and an update of it taken in one batch: the update finds the row (it was written
    before the update read the device's record), as it does when they come in two batches."""
    stream = redis_stream(redis_server)
    key = stream["key"]
    service = await started(streams, stream)
    try:
        for i in range(3):
            service.add(key, "devA", T0 + i, {"temperature": i, "humidity": 10 + i})
        service.put(key, service.update_row(key, "devA", T0 + 3, {"mode": "auto"}, None))
        service.put(key, service.update_row(key, "devA", T0 + 4, {"humidity": 99}, {"mode": "auto"}))
        await until(lambda: service.status()[0]["written"] == 5 and service.status()[0]["depth"] == 0)
        assert await service.read(key, "devA", None, None, 1) == [
            {"deviceId": "devA", "timeStamp": int(T0) + 2, "temperature": 2.0, "humidity": 99, "mode": "auto"}]
    finally:
        await service.stop()


async def test_redis_a_key_of_another_type_neither_stops_nor_is_lost_silently(streams: DataStreams,
                                                                               redis_server: Redis) -> None:
    """Something else wrote the stream's keys (Redis's WRONGTYPE). An update of a device whose key is a string
    is refused, kept aside with the key named, and the stream goes on; the devices key as a string is retried
    with the key named in ``lastError`` until it is removed, then every row arrives."""
    import redis.asyncio as aioredis

    stream = redis_stream(redis_server)
    key = stream["key"]
    prefix = f"nuviot:datastream:{key}:"
    client = aioredis.Redis(host=redis_server.host, port=redis_server.port)
    service = await started(streams, stream)
    try:
        await client.set(prefix + "dev9", "someone else's")
        service.add(key, "dev1", T0, {"temperature": 1})
        service.put(key, service.update_row(key, "dev9", T0 + 1, {"mode": "off"}, None))
        service.put(key, service.update_row(key, "dev1", T0 + 2, {"mode": "on"}, None))
        await until(lambda: service.status()[0]["depth"] == 0 and service.status()[0]["rejected"] == 1)
        st = service.status()[0]
        assert st["written"] == 2 and st["lastError"] is None and st["failing"] is False
        assert st["lastRejection"] == f"the key {prefix}dev9 holds a string, not a device's record (WRONGTYPE)"
        (kept,) = await service.rejected(key, 10)
        assert kept["row"]["op"] == "update" and kept["row"]["where"] == {"deviceId": "dev9"}
        assert await client.get(prefix + "dev9") == b"someone else's"
        assert (await service.read(key, "dev1", None, None, 1))[0]["mode"] == "on"

        await client.set(prefix + "devices", "not a set")
        for i in range(3):
            service.add(key, f"dev{i}", T0 + 10 + i, {"temperature": 10 + i})
        await until(lambda: service.status()[0]["failing"])
        assert service.status()[0]["lastError"] == (
            f"Redis at {redis_server.host}:{redis_server.port}: the key {prefix}devices holds a string, not the "
            "stream's set of devices (WRONGTYPE): remove or rename it")
        assert service.status()[0]["depth"] == 3  # kept, tried again
        await client.delete(prefix + "devices")
        await until(lambda: service.status()[0]["depth"] == 0 and not service.status()[0]["failing"], within=30)
        rows = await service.read(key, None, None, None, 10)
        assert sorted((r["deviceId"], r["temperature"]) for r in rows) == [("dev0", 10.0), ("dev1", 11.0),
                                                                           ("dev2", 12.0)]
        assert service.status()[0]["rejected"] == 1
    finally:
        await service.stop()
        await client.aclose()


async def test_rows_queued_while_the_database_is_away_survive_a_restart(tmp_path: Path, postgres: Postgres) -> None:
    table = f"t_{uuid.uuid4().hex[:10]}"
    away = pg_stream(Postgres(tmp_path / "none", port=1), table)  # nothing listens on port 1
    async with DataStreams(tmp_path / "data") as ds:
        service = ds.service_for(doc_with(away), drain_timeout=0.2)
        await service.start()
        for i in range(250):
            service.add("pg", "dev1", T0 + i, {"temperature": i / 10})
        await until(lambda: service.status()[0]["lastError"])
        await service.stop()
        assert service.status()[0]["depth"] == 250
    async with DataStreams(tmp_path / "data") as ds:  # the process starts again; the database is back
        service = await started(ds, pg_stream(postgres, table, autoCreateSqlTable=True))
        try:
            assert service.status()[0]["depth"] == 250  # reopened from the file
            await until(lambda: service.status()[0]["written"] == 250 and service.status()[0]["depth"] == 0)
            rows = await service.read("pg", "dev1", None, None, 1000)
            assert len(rows) == 250 and rows[0]["temperature"] == 24.9 and rows[-1]["temperature"] == 0.0
        finally:
            await service.stop()


async def test_queue_hands_rows_over_in_order_from_memory_and_from_the_file(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The drainer takes committed rows from memory while the stream's rows in the file are all there, and
    from the file past ``MEMORY_ROWS``: either way the oldest first, the same rows again until acked, each
    row once, and the file holds every row until its ack."""
    from runtime.adapters.streams import queue as queue_module
    from runtime.adapters.streams.queue import StreamQueue

    monkeypatch.setattr(queue_module, "MEMORY_ROWS", 25)
    async with StreamQueue(tmp_path / "q.db") as q:
        sent = 0
        for _ in range(4):  # four commits of 10: the first two fit in memory, the rest only in the file
            for _ in range(10):
                assert q.put("s", {"op": "add", "row": {"n": sent}, "at": T0 + sent})
                sent += 1
            await q.flush()
        assert q.depth("s") == 40
        got: list[int] = []
        while q.depth("s"):
            chunks = await q.take("s", 15)
            again = await q.take("s", 15)  # a failed write takes the same rows again
            assert [seq for seq, _ in again] == [seq for seq, _ in chunks]
            rows = [item["row"]["n"] for _, chunk in chunks for item in chunk]
            got += rows
            await q.ack("s", chunks[-1][0], len(rows))
            async with aiosqlite.connect(tmp_path / "q.db") as db, db.execute("SELECT SUM(n) FROM chunks") as cur:
                assert ((await cur.fetchone()) or [None])[0] in (None, q.depth("s"))  # acked rows left the file
            if len(got) == 20:  # memory is empty now, the file still has rows: new commits are not kept in memory
                q.put("s", {"op": "add", "row": {"n": sent}, "at": T0 + sent})
                sent += 1
                await q.flush()
        assert got == list(range(sent))
        q.put("s", {"op": "add", "row": {"n": sent}, "at": T0})  # the queue is empty again: back to memory
        await q.flush()
        assert [item["row"]["n"] for _, chunk in await q.take("s", 15) for item in chunk] == [sent]


async def test_an_ack_waits_for_rows_the_queue_is_committing_at_that_moment(tmp_path: Path) -> None:
    """A message's ack asked for while its rows are on their way into the file (taken from memory, not yet
    committed) runs only after that commit."""
    from runtime.adapters.streams.queue import StreamQueue

    async with StreamQueue(tmp_path / "q.db") as q, aiosqlite.connect(tmp_path / "q.db") as other:
        await other.execute("BEGIN IMMEDIATE")  # the file is locked: the queue's commit waits
        q.put("s", {"op": "add", "row": {"n": 1}, "at": T0})
        await until(lambda: q._flight)  # the flusher has the row and is writing it
        acked: list[bool] = []
        q.after_commit(lambda: acked.append(True))
        await asyncio.sleep(0)
        assert not acked and q.depth("s") == 1
        await other.execute("ROLLBACK")
        await until(lambda: acked)
        async with other.execute("SELECT SUM(n) FROM chunks") as cur:
            assert (await cur.fetchone()) == (1,)


def test_a_rows_time_is_encoded_to_the_microsecond_datetime_gives() -> None:
    """PostgreSQL rows take their time from the queue's epoch seconds without a datetime per row: the
    microseconds sent are those ``datetime.fromtimestamp`` gives (its rounding), and a datetime encodes the same."""
    import random
    from datetime import UTC, datetime, timedelta

    from runtime.adapters.streams.postgres import _timestamptz_in, _timestamptz_out

    pg_epoch = datetime(2000, 1, 1, tzinfo=UTC)
    rng = random.Random(13)
    samples = [T0 + rng.random() * 1e7 for _ in range(20_000)] + [T0, T0 + 0.5e-6, T0 + 1.5e-6, 1_767_225_600]
    for at in samples:
        expected = datetime.fromtimestamp(at, UTC)
        micros = (expected - pg_epoch) // timedelta(microseconds=1)
        assert _timestamptz_out(at) == (micros,), at
        assert _timestamptz_out(expected) == (micros,)
        assert _timestamptz_in((micros,)) == expected


async def test_postgres_auto_create_by_many_processes_at_once_starts_them_all(postgres: Postgres) -> None:
    """The workers of a cluster start together and each creates the stream's table: PostgreSQL's IF NOT EXISTS
    alone lets concurrent creators fail on a duplicate key (seen: a worker FailedToStart); none may."""
    from runtime.adapters.streams.postgres import PostgresSink

    for _ in range(3):
        table = f"t_{uuid.uuid4().hex[:10]}"
        spec = spec_of(DataStream.model_validate(pg_stream(postgres, table, autoCreateSqlTable=True,
                                                           dbValidateSchema=True)))
        sinks = [PostgresSink(spec) for _ in range(8)]
        try:
            await asyncio.gather(*(s.start() for s in sinks))
        finally:
            await asyncio.gather(*(s.close() for s in sinks))
