"""Data streams in the real daemon: PostgreSQL's Validate Schema at start, secrets by reference."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from bench.streams import streams_solution
from tests.support.daemon import Daemon
from tests.support.databases import Postgres

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def _create(pg: Postgres, ddl: str) -> None:
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute(ddl)
    finally:
        await conn.close()


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
