"""Data streams in the real daemon: PostgreSQL's Validate Schema at start, secrets by reference, a row the
table refuses."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench.streams import streams_solution
from tests.e2e.conftest import http
from tests.support.daemon import Daemon, request_json
from tests.support.databases import Postgres
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def _create(pg: Postgres, ddl: str) -> None:
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute(ddl)
    finally:
        await conn.close()


async def _fetch(pg: Postgres, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg.dsn)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


def _varchar8_daemon(tmp_path: Path, postgres: Postgres, mosquitto: Mosquitto, client_id: str) -> tuple[Daemon, str]:
    """The daemon (with its stream process) on the bench's streams solution, whose PostgreSQL stream writes a
    user-made table (Auto Create Table off) with ``seq varchar(8)``: a longer seq is refused. The daemon and
    the table's name."""
    import asyncio

    table = f"t_{uuid.uuid4().hex[:10]}"
    asyncio.run(_create(postgres, f'CREATE TABLE {table} ("deviceId" text, "timeStamp" timestamptz, '
                                  'seq varchar(8), temperature double precision, humidity bigint)'))
    solution = streams_solution(tmp_path / "s.yaml", postgres=(postgres.host, postgres.port), table=table)
    solution.write_text(solution.read_text().replace("autoCreateSqlTable: true", "autoCreateSqlTable: false"))
    daemon = Daemon(tmp_path / "data", "--solution", str(solution), "--listener-port", "restin=0",
                    "--input-command-port", "0",
                    env={"MQTT_HOST": mosquitto.host, "MQTT_PORT": str(mosquitto.port), "MQTT_CLIENT_ID": client_id})
    return daemon, table


def _post_seqs(d: Daemon, *seqs: str) -> None:
    """Once Running: device d0001 provisioned, one REST message per seq."""
    status = d.wait_state("Running", timeout=30)
    assert d.request("PUT", "/devices/d0001", {"deviceConfiguration": "sensor"})[0] in (200, 201)
    rest = next(item["port"] for item in status["listeners"] if item["key"] == "restin")
    for seq in seqs:
        code, body = request_json("POST", f"http://127.0.0.1:{rest}/bench/d0001/rest",
                                  {"seq": seq, "temperature": 21.5, "humidity": 40}, timeout=10)
        assert code == 200, body


def _pg_stream(d: Daemon) -> dict[str, Any]:
    code, st = d.request("GET", "/status")
    assert code == 200 and st["state"] == "Running", st
    return next(s for s in st["dataStreams"] if s["key"] == "pgtelemetry")


def test_a_table_that_cannot_hold_the_stream_fails_the_start_naming_stream_table_and_column(
    tmp_path: Path, postgres: Postgres
) -> None:
    import asyncio

    table = f"t_{uuid.uuid4().hex[:10]}"
    asyncio.run(_create(postgres, f'CREATE TABLE {table} ("deviceId" text, "timeStamp" timestamptz, seq text, '
                                  'temperature double precision, humidity boolean)'))
    solution = streams_solution(tmp_path / "s.yaml", postgres=(postgres.host, postgres.port), table=table)
    text = solution.read_text().replace("autoCreateSqlTable: true", "autoCreateSqlTable: false")
    text = text.replace("dbUserName: postgres", "dbUserName: postgres\n  dbPasswordRef: env:STREAM_DB_PASSWORD")
    solution.write_text(text)
    secret = "never-log-" + uuid.uuid4().hex
    d = Daemon(tmp_path / "data", "--solution", str(solution), "--listener-port", "restin=0",
               "--input-command-port", "0", env={"STREAM_DB_PASSWORD": secret, "MQTT_PORT": "1"})
    with d:
        status = d.wait_state("FailedToStart", timeout=30)
        assert status["reason"] == (
            f"data stream pgtelemetry cannot start: table public.{table}, column humidity: type boolean cannot "
            "hold the field (expected bigint or compatible) (Validate Schema)")
        assert d.request("GET", "/health", token=None)[0] == 200  # the admin API stays up
    assert secret not in "\n".join(d.lines)


def test_a_row_the_table_refuses_is_counted_in_status_and_the_stream_goes_on(
    tmp_path: Path, postgres: Postgres, mosquitto: Mosquitto
) -> None:
    """The daemon with its stream process (the default): a user-made table whose ``seq varchar(8)`` cannot
    hold one message's seq. That row is kept aside (the queue file's ``rejected`` table), ``/status`` and
    ``/metrics`` count it, the stream stays healthy and the other rows, before and after it, arrive."""
    import asyncio
    import re
    import sqlite3
    import time

    d, table = _varchar8_daemon(tmp_path, postgres, mosquitto, "e2e-refused")
    with d:
        _post_seqs(d, "a-1", "a-2", "a-much-too-long", "a-3")
        deadline = time.monotonic() + 30
        while not ((st := _pg_stream(d))["depth"] == 0 and st["written"] + st["rejected"] == 4):
            assert time.monotonic() < deadline, f"the stream did not go on: {st}"
            time.sleep(0.1)
        assert st["written"] == 3 and st["rejected"] == 1 and st["failing"] is False and st["failures"] == 0, st
        assert st["lastRejection"] == ("value too long for type character varying(8), column seq "
                                       "(SQLSTATE 22001)") and st["lastRejectionAt"], st
        metrics = http("GET", f"{d.base}/metrics")[1]
        assert re.search(r'nuviot_datastream_rejected_total\{stream="pgtelemetry",type="postgresql"\} 1\.0', metrics)
        rows = asyncio.run(_fetch(postgres, f"SELECT seq FROM {table} ORDER BY seq"))
        assert [r["seq"] for r in rows] == ["a-1", "a-2", "a-3"]
        with sqlite3.connect(tmp_path / "data" / "datastreams-queue.db") as db:
            kept = db.execute("SELECT stream, reason, item FROM rejected").fetchall()
        assert [(s, json.loads(item)["row"]["seq"]) for s, _, item in kept] == [("pgtelemetry", "a-much-too-long")]
        assert d.terminate() == 0


def test_the_refused_rows_are_shown_and_queued_again_over_the_admin_api(
    tmp_path: Path, postgres: Postgres, mosquitto: Mosquitto
) -> None:
    """The daemon with its stream process: two seqs too long for ``varchar(8)`` are refused; ``GET
    /datastreams/{key}/rejected`` shows them newest first with the reason; the operator widens the column and
    ``POST .../rejected/requeue`` sends them again: they arrive once, the list is empty, ``/status`` agrees.
    Both need the token; an unknown stream is 404, a bad limit 400, each with its code."""
    import asyncio
    import time

    d, table = _varchar8_daemon(tmp_path, postgres, mosquitto, "e2e-requeue")
    with d:
        _post_seqs(d, "a-1", "a-long-one", "a-2", "a-longer-one")

        def settle(written: int, kept: int) -> dict[str, Any]:
            deadline = time.monotonic() + 30
            while not ((st := _pg_stream(d))["depth"] == 0 and st["written"] == written and st["rejectedKept"] == kept):
                assert time.monotonic() < deadline, f"not {written} written, {kept} kept: {st}"
                time.sleep(0.1)
            return st

        settle(2, 2)
        code, shown = d.request("GET", "/datastreams/pgtelemetry/rejected")
        assert code == 200, shown
        assert [r["row"]["row"]["seq"] for r in shown] == ["a-longer-one", "a-long-one"]
        assert all("value too long for type character varying(8)" in r["reason"] and r["at"] and r["id"]
                   for r in shown), shown
        code, one = d.request("GET", "/datastreams/pgtelemetry/rejected?limit=1")
        assert code == 200 and one == shown[:1], one

        for path, method in (("/datastreams/pgtelemetry/rejected", "GET"),
                             ("/datastreams/pgtelemetry/rejected/requeue", "POST")):
            code, body = d.request(method, path, token=None)
            assert code == 401 and body["error"]["code"] == "unauthorized", body
            code, body = d.request(method, path.replace("pgtelemetry", "nope"))
            assert code == 404 and body["error"]["code"] == "unknown_datastream", body
        for limit in ("0", "1001", "ten", "-1"):
            code, body = d.request("GET", f"/datastreams/pgtelemetry/rejected?limit={limit}")
            assert code == 400 and body["error"]["code"] == "bad_limit", (limit, body)
        assert _pg_stream(d)["rejectedKept"] == 2  # nothing was moved by the refused requests

        asyncio.run(_create(postgres, f"ALTER TABLE {table} ALTER COLUMN seq TYPE text"))
        code, body = d.request("POST", "/datastreams/pgtelemetry/rejected/requeue")
        assert code == 200 and body == {"requeued": 2}, body
        st = settle(4, 0)
        assert st["rejected"] == 2 and st["failing"] is False, st  # the running total stays
        rows = asyncio.run(_fetch(postgres, f"SELECT seq FROM {table} ORDER BY seq"))
        assert [r["seq"] for r in rows] == ["a-1", "a-2", "a-long-one", "a-longer-one"]
        assert d.request("GET", "/datastreams/pgtelemetry/rejected") == (200, [])
        code, listed = d.request("GET", "/datastreams")
        assert code == 200 and next(s for s in listed if s["key"] == "pgtelemetry")["rejectedKept"] == 0
        assert d.terminate() == 0
