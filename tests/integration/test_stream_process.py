"""Data streams in process mode (``DataStreams(in_process=False)``, the daemon's default): the durable queue and
the drainers run in the real stream process (``python -m runtime.adapters.streams.worker``), fed by
``ProcessQueue``; the streams' databases are the built-in SQLite file and the suite's own PostgreSQL.

What a user would notice: rows arrive, a message's ack (``after_commit``) waits for the queue file, the stream
process killed with SIGKILL comes back without losing a row, stop drains or keeps rows for the next start,
Validate Schema still names stream, table and column, overflow is counted, and the stream process's warnings
reach this process's log sinks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from runtime import logsetup
from runtime.adapters.streams import QUEUE_FILE, DataStreams
from runtime.core.streams import StreamStartError
from runtime.services.streams import BATCH, StreamService
from tests.integration.test_datastreams import FIELDS, T0, doc_with, pg_stream, until
from tests.support.databases import Postgres

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WORKER = "runtime.adapters.streams.worker"


@asynccontextmanager
async def process_streams(data: Path, **kw: Any) -> AsyncIterator[DataStreams]:
    async with DataStreams(data, in_process=False, **kw) as ds:
        yield ds
    assert not stream_processes(), "the stream process outlived DataStreams"


@asynccontextmanager
async def running(ds: DataStreams, *streams: dict[str, Any], drain_timeout: float = 5) -> AsyncIterator[StreamService]:
    service = ds.service_for(doc_with(*streams), drain_timeout=drain_timeout)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def stream_processes() -> list[int]:
    """This process's children that run the stream process, as ``ps`` shows them."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, ...
        if int(fields[1]) == me and fields[0] != "Z" and WORKER.encode() in cmdline:
            found.append(int(entry.name))
    return found


def in_queue_file(data: Path, stream: str) -> int:
    """Rows of ``stream`` committed to the queue file (what survives a crash of either process)."""
    with sqlite3.connect(data / QUEUE_FILE) as db:
        return int(db.execute("SELECT COALESCE(SUM(n), 0) FROM chunks WHERE stream = ?", (stream,)).fetchone()[0])


def status(service: StreamService, key: str) -> dict[str, Any]:
    return next(s for s in service.status_raw() if s["key"] == key)


def nowhere(tmp_path: Path, table: str = "nowhere") -> dict[str, Any]:
    """A PostgreSQL stream whose server does not answer (nothing listens on port 1): rows stay queued."""
    return pg_stream(Postgres(tmp_path / "none", port=1), table)


async def pg_count(pg: Postgres, sql: str) -> Any:
    conn = await asyncpg.connect(pg.dsn)
    try:
        return await conn.fetchrow(sql)
    finally:
        await conn.close()


def add(service: StreamService, key: str, n: int, first: int = 0) -> None:
    """``n`` rows numbered by ``humidity`` (unique: duplicates and losses are counted by it)."""
    for i in range(first, first + n):
        assert service.add(key, f"dev{i % 4}", T0 + i, {"temperature": (i % 600) / 10, "humidity": i})


async def test_no_stream_process_until_a_solution_with_streams_starts(tmp_path: Path) -> None:
    """A daemon whose solution has no data streams runs no stream process (~49 MB); the first solution with one
    starts it."""
    async with process_streams(tmp_path / "data") as ds:
        async with running(ds):
            # an absence: watched for longer than a stream process takes to appear (~0.1 s after it is wanted)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2.0
            while loop.time() < deadline:
                assert stream_processes() == [], "a stream process runs for a solution without data streams"
                await asyncio.sleep(0.05)
        async with running(ds, {"key": "hist", "name": "History", "fields": FIELDS}) as service:
            assert len(stream_processes()) == 1
            add(service, "hist", 10)
            await until(lambda: service.status_raw()[0]["written"] == 10)


async def test_rows_reach_builtin_and_postgresql(tmp_path: Path, postgres: Postgres) -> None:
    table = f"t_{uuid.uuid4().hex[:10]}"
    async with process_streams(tmp_path / "data") as ds, running(
        ds, {"key": "hist", "name": "History", "fields": FIELDS},
        pg_stream(postgres, table, autoCreateSqlTable=True, dbValidateSchema=True),
    ) as service:
        assert len(stream_processes()) == 1
        add(service, "hist", 700)
        add(service, "pg", 700)
        await until(lambda: all(s["written"] == 700 and s["depth"] == 0 for s in service.status_raw()))
        rows = await service.read("hist", "dev1", None, None, 1000)  # read here, written there
        assert len(rows) == 175 and rows[0]["humidity"] == 697 and rows[0]["timeStamp"] == "2026-01-01T00:11:37.000Z"
        counted = await pg_count(postgres, f"SELECT count(*) AS n, count(DISTINCT humidity) AS d FROM {table}")
        assert (counted["n"], counted["d"]) == (700, 700)
        assert (await service.read("pg", "dev2", None, None, 1))[0]["humidity"] == 698
        for s in service.status():
            assert s["lastWriteAt"] is not None and s["lastError"] is None and s["overflow"] == 0, s


async def test_after_commit_runs_in_order_once_the_rows_are_in_the_queue_file(tmp_path: Path) -> None:
    """A message's ack (``after_commit``) runs only after the stream process committed its rows to the queue
    file, and acks run in the order they were asked for, over several frames."""
    data = tmp_path / "data"
    async with process_streams(data) as ds, running(ds, nowhere(tmp_path), drain_timeout=0.2) as service:
        acked: list[tuple[int, int, int]] = []  # (message, rows put before it, rows in the file when acked)
        put = 0
        for message in range(8):
            add(service, "pg", 40 + message, first=put)
            put += 40 + message
            service.after_commit(lambda m=message, p=put: acked.append((m, p, in_queue_file(data, "pg"))))
            if message % 3 == 2:  # let some frames leave (pacing only: the assertions hold for any split)
                await until(lambda m=message: len(acked) > m)
        await until(lambda: len(acked) == 8)
        assert [m for m, _, _ in acked] == list(range(8))
        assert all(in_file >= before for _, before, in_file in acked), acked
        assert status(service, "pg")["depth"] == put == in_queue_file(data, "pg")
        assert status(service, "pg")["written"] == 0  # nothing drained: the rows were acked from the file alone


async def test_stream_process_killed_mid_run_is_restarted_and_every_row_arrives(tmp_path: Path) -> None:
    """SIGKILL of the stream process while rows flow: a new one starts, gets the unanswered frames again, and
    every row reaches the stream; only rows whose commit answer (or queue delete) was lost may come twice.
    ``status()`` shows the process's failure and then recovers (lastWriteAt moves on)."""
    n, batch = 4000, 100
    async with process_streams(tmp_path / "data") as ds, running(
        ds, {"key": "hist", "name": "History", "fields": FIELDS}
    ) as service:
        acks: list[int] = []
        fed = [0]

        async def feed() -> None:
            for first in range(0, n, batch):
                add(service, "hist", batch, first=first)
                fed[0] += batch
                service.after_commit(lambda f=first: acks.append(f))
                await asyncio.sleep(0.005)  # pacing only: the rows keep coming while the process dies

        feeder = asyncio.create_task(feed(), name="test:feed")
        try:
            await until(lambda: status(service, "hist")["written"] >= 600)
            (pid,) = stream_processes()
            before = status(service, "hist")["lastWriteAt"]
            os.kill(pid, signal.SIGKILL)
            unacked = fed[0] - len(acks) * batch  # rows whose commit had not been answered when it died
            failing = await until(lambda: (lambda s: s if s["failing"] else None)(service.status()[0]), within=10)
            assert "the data-stream process ended (exit code -9)" in failing["lastError"], failing
            await feeder
        finally:
            feeder.cancel()
        await until(lambda: stream_processes() not in ([], [pid]))  # a new one
        await ds.queue.flush()
        assert acks == list(range(0, n, batch))  # every message acked, in order
        await until(lambda: status(service, "hist")["depth"] == 0 and not status(service, "hist")["failing"])
        after = status(service, "hist")
        assert after["lastWriteAt"] > before and after["lastError"] is None
        rows = await service.read("hist", None, None, None, 2 * n)
        seen = [r["humidity"] for r in rows]
        assert set(seen) == set(range(n)), f"{n - len(set(seen))} rows lost"
        duplicates = len(seen) - n
        print(f"\n{n} rows, {unacked} unacked at the kill, {len(seen)} in the stream: {duplicates} duplicates")
        assert max(Counter(seen).values()) <= 2
        # at least once: a frame committed whose answer was lost, or a batch the drainer wrote but had not yet
        # deleted from the queue file, comes again; nothing else
        assert duplicates <= unacked + BATCH

        (pid,) = stream_processes()
        os.kill(pid, signal.SIGKILL)  # again, with nothing queued: the status still recovers, nothing to write
        await until(lambda: status(service, "hist")["failing"])
        await until(lambda: not status(service, "hist")["failing"] and stream_processes() not in ([], [pid]))
        assert status(service, "hist")["lastWriteAt"] == after["lastWriteAt"] and status(service, "hist")["depth"] == 0


async def test_stop_delivers_what_is_queued_while_the_database_is_up(tmp_path: Path, postgres: Postgres) -> None:
    table = f"t_{uuid.uuid4().hex[:10]}"
    async with process_streams(tmp_path / "data") as ds:
        service = ds.service_for(doc_with(pg_stream(postgres, table, autoCreateSqlTable=True)), drain_timeout=10)
        await service.start()
        add(service, "pg", 1500)
        await service.stop()  # at once: the rows are on their way, not yet (all) written
        counted = await pg_count(postgres, f"SELECT count(*) AS n, count(DISTINCT humidity) AS d FROM {table}")
        assert (counted["n"], counted["d"]) == (1500, 1500)
        assert in_queue_file(tmp_path / "data", "pg") == 0


async def test_rows_kept_at_stop_while_the_database_is_down_reach_it_from_the_next_stream_process(
    tmp_path: Path, postgres: Postgres
) -> None:
    data, table = tmp_path / "data", f"t_{uuid.uuid4().hex[:10]}"
    async with process_streams(data) as ds, running(ds, nowhere(tmp_path, table), drain_timeout=0.5) as service:
        add(service, "pg", 300)
        await until(lambda: status(service, "pg")["lastError"])
    assert in_queue_file(data, "pg") == 300  # the stream process has ended; the rows are in the file
    async with process_streams(data) as ds, running(ds, pg_stream(postgres, table, autoCreateSqlTable=True)) as service:
        await until(lambda: status(service, "pg")["written"] == 300 and status(service, "pg")["depth"] == 0)
        counted = await pg_count(postgres, f"SELECT count(*) AS n, count(DISTINCT humidity) AS d FROM {table}")
        assert (counted["n"], counted["d"]) == (300, 300)
        assert in_queue_file(data, "pg") == 0


async def test_a_table_that_cannot_hold_the_stream_fails_the_start_naming_stream_table_and_column(
    tmp_path: Path, postgres: Postgres
) -> None:
    table = f"t_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(postgres.dsn)
    try:
        await conn.execute(f'CREATE TABLE {table} ("deviceId" text, "timeStamp" timestamptz, temperature float8, '
                           "humidity boolean, mode text)")
    finally:
        await conn.close()
    async with process_streams(tmp_path / "data") as ds:
        service = ds.service_for(doc_with(pg_stream(postgres, table, dbValidateSchema=True)))
        with pytest.raises(StreamStartError) as info:
            await service.start()
        assert str(info.value) == (
            f"data stream pg cannot start: table public.{table}, column humidity: type boolean cannot hold the "
            "field (expected bigint or compatible) (Validate Schema)")
        await service.stop()
        async with running(ds, {"key": "hist", "name": "History", "fields": FIELDS}) as good:  # the next one runs
            add(good, "hist", 10)
            await until(lambda: status(good, "hist")["written"] == 10)


async def test_a_queue_file_that_cannot_be_opened_fails_the_start_as_in_process(tmp_path: Path) -> None:
    """The stream process cannot open ``datastreams-queue.db``: the streams do not start (FailedToStart naming
    the file, as in process), rather than taking rows whose acks would never come."""
    data = tmp_path / "data"
    (data / QUEUE_FILE).mkdir(parents=True)  # where the file should be
    async with process_streams(data) as ds:
        service = ds.service_for(doc_with({"key": "hist", "name": "History", "fields": FIELDS}))
        with pytest.raises(StreamStartError) as info:
            await service.start()
        assert str(info.value) == (f"data stream hist cannot start: the data-stream queue cannot be opened: "
                                   f"{data / QUEUE_FILE}: unable to open database file")
        await service.stop()


async def test_overflow_is_refused_counted_and_logged(tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logs:  # refused here, before the rows leave for the stream process
        async with process_streams(tmp_path / "data", max_rows=5) as ds, running(
            ds, nowhere(tmp_path), drain_timeout=0.2
        ) as service:
            took = [service.add("pg", "d", T0 + i, {"temperature": 1}) for i in range(8)]
            assert took == [True] * 5 + [False] * 3
            await ds.queue.flush()
            assert status(service, "pg")["overflow"] == 3 and status(service, "pg")["depth"] == 5
            assert in_queue_file(tmp_path / "data", "pg") == 5
            (pid,) = stream_processes()
            os.kill(pid, signal.SIGKILL)  # a new stream process learns the depth from the file: still full
            await until(lambda: any(e["event"] == "datastream_process_restarted" for e in logs))
            assert service.add("pg", "d", T0, {"temperature": 1}) is False
            assert status(service, "pg")["overflow"] == 4
    full = [e for e in logs if e["event"] == "datastream_queue_full"]
    assert full and full[0]["stream"] == "pg" and full[0]["max_rows"] == 5 and full[0]["log_level"] == "warning"


async def test_the_stream_process_warnings_reach_this_process_log_sinks(tmp_path: Path) -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []
    remove = logsetup.add_sink(lambda level, event, fields: events.append((level, event, fields)))
    try:
        async with process_streams(tmp_path / "data") as ds, running(ds, nowhere(tmp_path), drain_timeout=0.2) as s:
            add(s, "pg", 3)
            (level, _, first), *_ = await until(lambda: [e for e in events if e[1] == "datastream_write_failed"])
            assert level == "warning" and first["stream"] == "pg" and first["queued"] == 3
            assert first["error"].startswith("cannot reach PostgreSQL at 127.0.0.1:1: ConnectionRefusedError")
    finally:
        remove()
