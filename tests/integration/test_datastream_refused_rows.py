"""Rows a stream's PostgreSQL table refuses (a user-made table, Auto Create Table off): a value its column
cannot hold, a CHECK it breaks, an integer past ``integer``'s range. Each refused row is kept aside in the
queue file's ``rejected`` table with the database's reason and counted (``/status``, ``/metrics``); every other
row of its batch is written exactly once, and the stream goes on with the rows queued after it. Before, one
such row blocked its stream for good (the batch retried forever, the queue filling up behind it).

In process (``StreamService`` over ``StreamQueue``) and through the stream process (``ProcessQueue``).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from runtime.adapters.streams import QUEUE_FILE, DataStreams, StreamsCollector
from runtime.services.streams import StreamService
from tests.integration.test_datastreams import T0, doc_with, until
from tests.support.databases import Postgres

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

FIELDS = [
    {"key": "seq", "name": "Seq", "fieldName": "seq", "fieldType": "string"},
    {"key": "humidity", "name": "Humidity", "fieldName": "humidity", "fieldType": "integer"},
    {"key": "code", "name": "Code", "fieldName": "code", "fieldType": "string"},
]
# what the operator made: narrower than the stream's fields (Validate Schema accepts integer and varchar)
DDL = ('CREATE TABLE {t} ("deviceId" text NOT NULL, "timeStamp" timestamptz NOT NULL, seq text UNIQUE, '
       "humidity integer CHECK (humidity <= 100), code varchar(8))")
# row number -> (values, a part of the database's reason)
REFUSED = {
    0: ({"humidity": 101}, 'violates check constraint "{t}_humidity_check" (SQLSTATE 23514)'),
    100: ({"code": "much-too-long"}, "value too long for type character varying(8), column code (SQLSTATE 22001)"),
    199: ({"humidity": 3_000_000_000}, "OverflowError: value out of int32 range"),  # asyncpg's own encoding
}


def stream(pg: Postgres, table: str) -> dict[str, Any]:
    return {"key": "pg", "name": "PG", "streamType": "postgresql", "dbUrl": f"{pg.host}:{pg.port}",
            "dbName": "postgres", "dbUserName": "postgres", "dbTableName": table, "autoCreateSqlTable": False,
            "dbValidateSchema": True, "fields": FIELDS}


async def sql(pg: Postgres, statement: str) -> list[asyncpg.Record]:
    """A query's rows; statements without rows may be several, separated by semicolons."""
    conn = await asyncpg.connect(pg.dsn)
    try:
        if statement.lstrip().startswith("SELECT"):
            return list(await conn.fetch(statement))
        await conn.execute(statement)
        return []
    finally:
        await conn.close()


async def user_table(pg: Postgres) -> str:
    table = f"t_{uuid.uuid4().hex[:10]}"
    await sql(pg, DDL.format(t=table))
    return table


@asynccontextmanager
async def pg_service(data: Path, pg: Postgres, table: str, *, process: bool = False) -> AsyncIterator[StreamService]:
    """A started ``StreamService`` with the PostgreSQL stream on ``table``: its queue and drainer in this process,
    or (``process``) in the real stream process."""
    from tests.integration.test_stream_process import process_streams

    async with (process_streams(data) if process else DataStreams(data)) as ds:
        service = ds.service_for(doc_with(stream(pg, table)), drain_timeout=5)
        await service.start()
        try:
            yield service
        finally:
            await service.stop()


def add(service: StreamService, first: int, n: int) -> None:
    """Rows ``r<first>`` .. in order; those in ``REFUSED`` carry the value the table refuses."""
    for i in range(first, first + n):
        values = {"seq": f"r{i}", "humidity": i % 100, "code": "ok", **REFUSED.get(i, ({}, ""))[0]}
        assert service.add("pg", f"dev{i % 4}", T0 + i, values)


def rejected_in(data: Path) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The queue file's refused rows: (stream, when, reason, the queued row)."""
    import orjson

    with sqlite3.connect(data / QUEUE_FILE) as db:
        return [(s, at, reason, orjson.loads(item))
                for s, at, reason, item in db.execute("SELECT stream, at, reason, item FROM rejected ORDER BY id")]


def pg_status(service: StreamService) -> dict[str, Any]:
    return next(s for s in service.status() if s["key"] == "pg")


async def assert_refused_rows_kept_aside(pg: Postgres, table: str, data: Path, service: StreamService) -> None:
    """200 rows queued, 3 refused (first, middle, last): the 197 others in the table once each, the 3 in the
    ``rejected`` table with the database's reason, counted; then rows queued after them arrive too."""
    add(service, 0, 200)
    await until(lambda: pg_status(service)["depth"] == 0 and pg_status(service)["rejected"] == 3, within=40)
    rows = await sql(pg, f"SELECT seq, count(*) AS n FROM {table} GROUP BY seq")
    assert {r["seq"]: r["n"] for r in rows} == {f"r{i}": 1 for i in range(200) if i not in REFUSED}
    kept = rejected_in(data)
    assert [item["row"]["seq"] for _, _, _, item in kept] == ["r0", "r100", "r199"]
    for (key, at, reason, item), (i, (values, why)) in zip(kept, REFUSED.items(), strict=True):
        assert key == "pg" and at.startswith("20") and why.format(t=table) in reason, reason
        assert item["op"] == "add" and item["row"]["deviceId"] == f"dev{i % 4}"
        assert {k: item["row"][k] for k in values} == values
    st = pg_status(service)
    assert st["written"] == 197 and st["failures"] == 0 and st["failing"] is False and st["lastError"] is None
    assert "int32" in st["lastRejection"] and st["lastRejectionAt"] is not None
    add(service, 200, 50)  # the stream goes on
    await until(lambda: pg_status(service)["written"] == 247 and pg_status(service)["depth"] == 0)
    assert (await sql(pg, f"SELECT count(*) AS n FROM {table}"))[0]["n"] == 247
    assert pg_status(service)["rejected"] == 3


async def test_rows_the_table_refuses_are_kept_aside_and_the_stream_goes_on(tmp_path: Path,
                                                                             postgres: Postgres) -> None:
    table = await user_table(postgres)
    data = tmp_path / "data"
    with structlog.testing.capture_logs() as logs:
        async with DataStreams(data) as ds:
            service = ds.service_for(doc_with(stream(postgres, table)), drain_timeout=5)
            await service.start()
            try:
                await assert_refused_rows_kept_aside(postgres, table, data, service)
                metrics = {s.name: s.value for family in StreamsCollector(ds).collect() for s in family.samples
                           if s.labels.get("stream") == "pg"}
                assert metrics["nuviot_datastream_rejected_total"] == 3
            finally:
                await service.stop()
    warned = [e for e in logs if e["event"] == "datastream_rows_refused"]
    assert len(warned) == 1, warned  # at the first refusal; again at 10, 100, 1,000, ...
    assert warned[0]["stream"] == "pg" and warned[0]["log_level"] == "warning"
    assert warned[0]["reason"] == "OverflowError: value out of int32 range" and warned[0]["rejected"] == 3


async def test_an_update_with_a_value_asyncpg_cannot_encode_is_refused_in_order(tmp_path: Path,
                                                                                postgres: Postgres) -> None:
    """An update whose value is past ``integer``'s range fails in asyncpg's client-side encoding (its
    ``DataError``, an ``InterfaceError``: it was taken for "PostgreSQL went away" and retried forever). It is
    refused; the adds and updates around it are applied in their order, in one batch."""
    table = await user_table(postgres)
    data = tmp_path / "data"
    async with pg_service(data, postgres, table) as service:
        add(service, 1, 3)
        service.put("pg", service.update_row("pg", "dev1", T0, {"humidity": 3_000_000_000}, {"seq": "r1"}))
        service.put("pg", service.update_row("pg", "dev2", T0, {"code": "set"}, {"deviceId": "dev2"}))
        add(service, 6, 1)  # dev2 too, after the update: keeps its own code
        await until(lambda: pg_status(service)["depth"] == 0 and pg_status(service)["rejected"] == 1)
        rows = await sql(postgres, f"SELECT seq, humidity, code FROM {table} ORDER BY seq")
        assert [tuple(r) for r in rows] == [("r1", 1, "ok"), ("r2", 2, "set"), ("r3", 3, "ok"), ("r6", 6, "ok")]
        ((_, _, reason, item),) = rejected_in(data)
        assert item["op"] == "update" and item["row"] == {"humidity": 3_000_000_000}
        assert "DataError" in reason and "out of int32 range" in reason
        st = pg_status(service)
        assert st["written"] == 5 and st["failures"] == 0 and st["failing"] is False


async def test_a_unique_violation_between_batches_is_refused_not_retried(tmp_path: Path, postgres: Postgres) -> None:
    """A row whose ``seq`` the table already holds (UNIQUE): refused, and nothing else written twice."""
    table = await user_table(postgres)
    await sql(postgres, f"INSERT INTO {table} VALUES ('dev0', now(), 'r5', 1, 'old')")
    data = tmp_path / "data"
    async with pg_service(data, postgres, table) as service:
        add(service, 1, 9)
        await until(lambda: pg_status(service)["depth"] == 0 and pg_status(service)["rejected"] == 1)
        rows = await sql(postgres, f"SELECT seq, code FROM {table} ORDER BY seq")
        assert [tuple(r) for r in rows] == [(f"r{i}", "old" if i == 5 else "ok") for i in range(1, 10)]
        ((_, _, reason, item),) = rejected_in(data)
        assert item["row"]["seq"] == "r5" and "duplicate key value violates unique constraint" in reason
        assert "(SQLSTATE 23505)" in reason


async def test_a_connection_lost_while_refused_rows_are_isolated_commits_nothing_of_the_batch(
    tmp_path: Path, postgres: Postgres
) -> None:
    """The table's trigger ends the stream's own connection at row r150, once: that is in the middle of the
    isolation (the first half's rows are in by then, in their savepoints). Nothing of that attempt is committed;
    the batch is written again whole: every row once, the same 3 refused."""
    table = await user_table(postgres)
    await sql(postgres, f"""
        CREATE SEQUENCE {table}_once;
        CREATE FUNCTION {table}_drop() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.seq = 'r150' AND nextval('{table}_once') = 1 THEN  -- a sequence is not rolled back
                PERFORM pg_terminate_backend(pg_backend_pid());
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER {table}_drop BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_drop();
    """)
    data = tmp_path / "data"
    async with pg_service(data, postgres, table) as service:
        add(service, 0, 200)
        await until(lambda: pg_status(service)["depth"] == 0 and pg_status(service)["rejected"] == 3, within=40)
        rows = await sql(postgres, f"SELECT seq, count(*) AS n FROM {table} GROUP BY seq")
        assert {r["seq"]: r["n"] for r in rows} == {f"r{i}": 1 for i in range(200) if i not in REFUSED}
        assert [item["row"]["seq"] for _, _, _, item in rejected_in(data)] == ["r0", "r100", "r199"]
        st = pg_status(service)
        assert st["failures"] == 1 and "went away" in st["lastError"]  # the lost connection: tried again
        assert st["written"] == 197 and st["failing"] is False
        assert (await sql(postgres, f"SELECT last_value FROM {table}_once"))[0]["last_value"] == 2


async def test_through_the_stream_process_refused_rows_are_counted_in_this_process(tmp_path: Path,
                                                                                   postgres: Postgres) -> None:
    table = await user_table(postgres)
    data = tmp_path / "data"
    async with pg_service(data, postgres, table, process=True) as service:
        await assert_refused_rows_kept_aside(postgres, table, data, service)


async def test_the_rejected_table_keeps_the_newest_rows_per_stream(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded per stream (``REJECTED_KEEP``, 10,000; 5 here), the newest kept, across a reopening of the file;
    another stream's refused rows are not touched; each ack drops its batch in the same transaction."""
    from runtime.adapters.streams import queue as queue_module
    from runtime.adapters.streams.queue import StreamQueue

    monkeypatch.setattr(queue_module, "REJECTED_KEEP", 5)
    data = tmp_path / "data"
    data.mkdir()

    def item(i: int) -> dict[str, Any]:
        return {"op": "add", "row": {"seq": f"r{i}"}, "at": T0 + i}

    async def batch(q: StreamQueue, stream: str, first: int, n: int, refused: list[int]) -> None:
        for i in range(first, first + n):
            assert q.put(stream, item(i))
        await q.flush()
        chunks = await q.take(stream, 1000)
        await q.ack(stream, chunks[-1][0], n, [(item(i), f"refused {i}") for i in refused], T0)

    async with StreamQueue(data / QUEUE_FILE) as q:
        await batch(q, "a", 0, 10, [1, 2, 3])
        await batch(q, "b", 0, 2, [0])
        await batch(q, "a", 10, 10, [11, 12, 13, 14])
        assert q.depth("a") == 0 and q.depth("b") == 0
    async with StreamQueue(data / QUEUE_FILE) as q:  # the count per stream read back from the file
        await batch(q, "a", 20, 3, [20, 21])
    kept = rejected_in(data)
    assert [(item["row"]["seq"], reason) for s, _, reason, item in kept if s == "a"] == [
        ("r12", "refused 12"), ("r13", "refused 13"), ("r14", "refused 14"), ("r20", "refused 20"), ("r21", "refused 21")]
    assert [item["row"]["seq"] for s, _, _, item in kept if s == "b"] == ["r0"]
    assert all(at == "2026-01-01T00:00:00.000Z" for _, at, _, _ in kept)
    with sqlite3.connect(data / QUEUE_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 0


async def assert_refused_rows_shown_then_requeued(pg: Postgres, table: str, data: Path, service: StreamService) -> None:
    """Rows the CHECK refuses are shown newest first with the database's reason; once the operator drops the
    CHECK, queued again (while new rows are being committed to the queue and drained) they arrive in the table
    exactly once, the kept list is empty, and a second requeue queues nothing. The ``rejected`` count is a
    running total; ``rejectedKept`` follows the list."""
    check = f'violates check constraint "{table}_humidity_check" (SQLSTATE 23514)'
    for i in range(30):
        values = {"seq": f"r{i}", "humidity": 150 + i if i % 10 == 3 else i, "code": "ok"}
        assert service.add("pg", f"dev{i % 4}", T0 + i, values)
    await until(lambda: pg_status(service)["depth"] == 0 and pg_status(service)["rejectedKept"] == 3, within=40)
    shown = await service.rejected("pg", 100)
    assert [r["row"]["row"]["seq"] for r in shown] == ["r23", "r13", "r3"]  # newest first
    assert [r["row"]["row"]["humidity"] for r in shown] == [173, 163, 153]
    assert all(check in r["reason"] and r["at"].startswith("20") and r["row"]["op"] == "add" for r in shown), shown
    assert [r["id"] for r in shown] == sorted((r["id"] for r in shown), reverse=True)
    assert [r["row"]["row"]["seq"] for r in await service.rejected("pg", 2)] == ["r23", "r13"]
    st = pg_status(service)
    assert st["rejected"] == 3 and st["written"] == 27

    await sql(pg, f"ALTER TABLE {table} DROP CONSTRAINT {table}_humidity_check")
    for i in range(30, 1530):  # being committed by the queue's flusher while the requeue runs
        assert service.add("pg", f"dev{i % 4}", T0 + i, {"seq": f"r{i}", "humidity": i % 100, "code": "ok"})
    assert await service.requeue_rejected("pg") == 3
    assert rejected_in(data) == []  # out of the rejected table at once (the same transaction put them in the queue)
    await until(lambda: pg_status(service)["written"] == 1530 and pg_status(service)["depth"] == 0, within=40)
    rows = await sql(pg, f"SELECT seq, humidity, count(*) AS n FROM {table} GROUP BY seq, humidity")
    assert {r["seq"]: (r["humidity"], r["n"]) for r in rows} == {
        f"r{i}": (150 + i if i in (3, 13, 23) else i % 100, 1) for i in range(1530)}
    assert await service.rejected("pg", 100) == []
    assert await service.requeue_rejected("pg") == 0
    st = pg_status(service)
    assert st["rejected"] == 3 and st["rejectedKept"] == 0 and st["failures"] == 0 and st["failing"] is False, st


@pytest.mark.parametrize("process", [False, True], ids=["in-process", "stream-process"])
async def test_refused_rows_are_shown_and_once_the_table_takes_them_queued_again(tmp_path: Path, postgres: Postgres,
                                                                                 process: bool) -> None:
    table = await user_table(postgres)
    data = tmp_path / "data"
    async with pg_service(data, postgres, table, process=process) as service:
        await assert_refused_rows_shown_then_requeued(postgres, table, data, service)


async def test_rows_refused_again_go_back_to_the_rejected_table(tmp_path: Path, postgres: Postgres) -> None:
    """Queued again while the table still refuses them: kept aside again (new ids, the same order), none
    written; the count goes on (6), what is kept does not grow (3)."""
    table = await user_table(postgres)
    data = tmp_path / "data"
    async with pg_service(data, postgres, table) as service:
        for i in range(3):
            assert service.add("pg", "dev0", T0 + i, {"seq": f"r{i}", "humidity": 200 + i, "code": "ok"})
        await until(lambda: pg_status(service)["rejectedKept"] == 3 and pg_status(service)["depth"] == 0)
        before = [r["id"] for r in await service.rejected("pg", 10)]
        assert await service.requeue_rejected("pg") == 3
        await until(lambda: pg_status(service)["rejected"] == 6 and pg_status(service)["depth"] == 0)
        again = await service.rejected("pg", 10)
        assert [r["row"]["row"]["seq"] for r in again] == ["r2", "r1", "r0"]
        assert min(r["id"] for r in again) > max(before)
        assert pg_status(service)["rejectedKept"] == 3 and pg_status(service)["written"] == 0
        assert (await sql(postgres, f"SELECT count(*) AS n FROM {table}"))[0]["n"] == 0


async def test_a_requeue_is_one_transaction_with_rows_in_order_at_the_end_of_the_queue(tmp_path: Path) -> None:
    """``StreamQueue`` alone (no drainer): the refused rows go after the rows already queued, in the order they
    were refused, in chunks of ``CHUNK``; the file holds them in the queue or in ``rejected``, never both (read
    from another connection right after); a failed transaction leaves them where they were; across a reopening
    the requeued rows are taken from the file."""
    from runtime.adapters.streams import queue as queue_module
    from runtime.adapters.streams.queue import StreamQueue

    data = tmp_path / "data"
    data.mkdir()

    def item(i: int) -> dict[str, Any]:
        return {"op": "add", "row": {"seq": f"r{i}"}, "at": T0 + i}

    async with StreamQueue(data / QUEUE_FILE) as q:
        for i in range(1500):
            assert q.put("a", item(i))
        assert q.put("b", item(0))
        await q.flush()
        chunks = await q.take("a", 10_000)
        await q.ack("a", chunks[-1][0], 1500, [(item(i), f"refused {i}") for i in range(1500)], T0)
        assert q.put("a", item(5000))  # queued before the requeue: stays first
        await q.flush()
        assert q.depth("a") == 1 and q.rejected_kept["a"] == 1500

        woken: list[set[str]] = []
        q.listeners.append(woken.append)
        with sqlite3.connect(data / QUEUE_FILE) as db:  # a failed transaction: nothing moved
            db.execute("CREATE TRIGGER fail BEFORE DELETE ON rejected BEGIN SELECT RAISE(ABORT, 'disk'); END")
        with pytest.raises(sqlite3.Error):
            await q.requeue_rejected("a")
        assert q.depth("a") == 1 and q.rejected_kept["a"] == 1500 and len(rejected_in(data)) == 1500
        with sqlite3.connect(data / QUEUE_FILE) as db:
            db.execute("DROP TRIGGER fail")
            assert db.execute("SELECT SUM(n) FROM chunks WHERE stream = 'a'").fetchone()[0] == 1

        assert await q.requeue_rejected("a") == 1500
        assert woken == [{"a"}]
        assert q.depth("a") == 1501 and q.rejected_kept["a"] == 0 and await q.rejected("a", 10) == []
        with sqlite3.connect(data / QUEUE_FILE) as db:
            assert [n for (n,) in db.execute("SELECT n FROM chunks WHERE stream = 'a' ORDER BY seq")] == [
                1, queue_module.CHUNK, 1500 - queue_module.CHUNK]
            assert db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0] == 0
        assert [r["seq"] for _, rows in await q.take("a", 10_000) for r in (x["row"] for x in rows)] == [
            "r5000", *(f"r{i}" for i in range(1500))]
    async with StreamQueue(data / QUEUE_FILE) as q:  # from the file
        assert q.depth("a") == 1501 and q.depth("b") == 1
        taken = [x["row"]["seq"] for _, rows in await q.take("a", 20_000) for x in rows]
        assert taken[:3] == ["r5000", "r0", "r1"]


async def test_the_kept_rows_are_served_and_queued_again_by_a_new_stream_process(tmp_path: Path,
                                                                                  postgres: Postgres) -> None:
    """The stream process killed (SIGKILL) with refused rows kept: a request made while it starts again waits for
    the new one, which reads them from the file; ``rejectedKept`` comes back with it; the requeue works there."""
    import os
    import signal

    from tests.integration.test_stream_process import stream_processes

    table = await user_table(postgres)
    data = tmp_path / "data"
    async with pg_service(data, postgres, table, process=True) as service:
        for i in range(4):
            assert service.add("pg", "dev0", T0 + i, {"seq": f"r{i}", "humidity": 120 if i % 2 else i})
        await until(lambda: pg_status(service)["rejectedKept"] == 2 and pg_status(service)["depth"] == 0)
        (pid,) = stream_processes()
        os.kill(pid, signal.SIGKILL)
        await until(lambda: pg_status(service)["failing"])
        shown = await service.rejected("pg", 100)  # waits for the new process
        assert [r["row"]["row"]["seq"] for r in shown] == ["r3", "r1"]
        assert stream_processes() not in ([], [pid]) and pg_status(service)["rejectedKept"] == 2
        await sql(postgres, f"ALTER TABLE {table} DROP CONSTRAINT {table}_humidity_check")
        assert await service.requeue_rejected("pg") == 2
        await until(lambda: pg_status(service)["depth"] == 0 and pg_status(service)["rejectedKept"] == 0
                    and not pg_status(service)["failing"])
        rows = await sql(postgres, f"SELECT seq FROM {table} ORDER BY seq")
        assert [r["seq"] for r in rows] == ["r0", "r1", "r2", "r3"]


async def test_while_the_stream_process_does_not_answer_the_endpoints_say_503_and_a_lost_requeue_is_done_once(
        tmp_path: Path, postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream process frozen (SIGSTOP: alive, reading nothing): ``GET .../rejected`` and ``POST
    .../rejected/requeue`` wait ``ASK_WAIT`` and answer 503 ``datastream_unavailable`` saying it did not answer.
    The requeue was sent, though: once the process runs again it does it, so the rows arrive, once; the
    operator's second requeue queues none (the answer that was lost is the only thing lost)."""
    import os
    import signal

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from runtime.adapters.command.datastreams import routes
    from runtime.adapters.streams import process as process_module
    from tests.integration.test_stream_process import process_streams, stream_processes

    monkeypatch.setattr(process_module, "ASK_WAIT", 1.0)
    table = await user_table(postgres)
    app = web.Application()
    async with process_streams(tmp_path / "data") as ds:
        routes(ds)(app)
        service = ds.service_for(doc_with(stream(postgres, table)), drain_timeout=5)
        await service.start()
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            add(service, 0, 199)  # r0 and r100 refused (the CHECK, the varchar(8))
            await until(lambda: pg_status(service)["depth"] == 0 and pg_status(service)["rejectedKept"] == 2)
            await sql(postgres, f"ALTER TABLE {table} DROP CONSTRAINT {table}_humidity_check; "
                                f"ALTER TABLE {table} ALTER COLUMN code TYPE text")
            (pid,) = stream_processes()
            os.kill(pid, signal.SIGSTOP)
            try:
                for method, path in (("GET", "rejected"), ("POST", "rejected/requeue")):
                    resp = await client.request(method, f"/datastreams/pg/{path}")
                    body = await resp.json()
                    assert resp.status == 503, body
                    assert body["error"]["code"] == "datastream_unavailable"
                    assert "did not answer" in body["error"]["message"], body
                assert (await sql(postgres, f"SELECT count(*) AS n FROM {table}"))[0]["n"] == 197
            finally:
                os.kill(pid, signal.SIGCONT)
            await until(lambda: pg_status(service)["written"] == 199 and pg_status(service)["depth"] == 0)
            resp = await client.post("/datastreams/pg/rejected/requeue")
            assert (resp.status, await resp.json()) == (200, {"requeued": 0})
            resp = await client.get("/datastreams/pg/rejected")
            assert (resp.status, await resp.json()) == (200, [])
            rows = await sql(postgres, f"SELECT seq, count(*) AS n FROM {table} GROUP BY seq")
            assert {r["seq"]: r["n"] for r in rows} == {f"r{i}": 1 for i in range(199)}
            assert pg_status(service)["rejectedKept"] == 0
        finally:
            await client.close()
            await service.stop()
