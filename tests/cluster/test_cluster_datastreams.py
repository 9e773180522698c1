"""Data streams in the Cluster edition: real daemons (1 ingest + 1 worker), real mosquitto, RabbitMQ and
PostgreSQL. The cluster solution's route also writes each reading to a PostgreSQL stream (a table in the
cluster's own database); every PUBACKed reading lands as one row, and the worker's ``/datastreams`` and
``/status`` say so. The ingest runs no route, so it has no streams.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import pytest
import yaml

from tests.cluster.test_cluster_e2e import call, publish, replica, replica_env, wait_for
from tests.support.mosquitto import Mosquitto
from tests.support.rabbitmq import Rabbit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TABLE = "readings"


def stream_solution(base: Path, out: Path, database_url: str) -> Path:
    """The cluster solution plus a PostgreSQL stream ``pgreadings`` (auto-created table) fed by the route."""
    url = urlparse(database_url)
    tree: dict[str, Any] = yaml.safe_load(base.read_text())
    tree["dataStreams"] = [{
        "key": "pgreadings", "name": "Readings (PostgreSQL)", "streamType": "postgresql",
        "dbUrl": f"{url.hostname}:{url.port}", "dbName": url.path.lstrip("/"),
        "dbUserName": url.username or "postgres", "dbTableName": TABLE, "autoCreateSqlTable": True,
        "dbValidateSchema": True, "dateStorageFormat": "iso8601",
        "fields": [{"key": "seq", "name": "Seq", "fieldName": "seq", "fieldType": "integer", "isRequired": True}]}]
    route = tree["solution"]["deviceConfigurations"][0]["routes"][0]
    translate = next(s for s in route["steps"] if s["id"] == "translate")
    translate["secondary"] = [{"to": "dspg", "mappings": {"seq": "seq"}}]
    route["steps"].append({"id": "dspg", "type": "datastream", "module": "pgreadings"})
    out.write_text(yaml.safe_dump(tree, sort_keys=False))
    return out


async def table_rows(database_url: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(database_url)
    try:
        exists = await conn.fetchval("SELECT to_regclass($1)", f"public.{TABLE}")
        if exists is None:
            return []
        return [(r[0], int(r[1])) for r in await conn.fetch(f'SELECT "deviceId", seq FROM {TABLE}')]
    finally:
        await conn.close()


async def test_a_worker_writes_every_reading_to_a_postgresql_stream(
        tmp_path: Path, own_mosquitto: Mosquitto, rabbit: Rabbit, database_url: str, instance_id: str,
        cluster_solution: Path) -> None:
    solution = stream_solution(cluster_solution, tmp_path / "cluster-streams.yaml", database_url)
    env = replica_env(rabbit, database_url, instance_id, own_mosquitto, 4)
    ingest = replica(tmp_path, "ingest", "ingest", solution, env)
    worker = replica(tmp_path, "worker", "worker", solution, env)
    with ingest, worker:
        for d in (ingest, worker):
            await asyncio.to_thread(d.wait_state, "Running", timeout=60)
        acked: list[int] = []
        await publish(own_mosquitto.host, own_mosquitto.port, 1, 300, acked, f"pubds-{instance_id}")
        assert len(acked) == 300

        async def all_rows() -> list[tuple[str, int]] | None:
            rows = await table_rows(database_url)
            return rows if len(rows) >= len(acked) else None

        rows = await wait_for("every reading a row", all_rows, within=60)
        assert sorted(seq for _, seq in rows) == acked  # each reading once: none lost, none twice
        assert all(device == f"dev{seq % 8}" for device, seq in rows)

        code, streams = await call(worker, "GET", "/datastreams")
        assert code == 200, streams
        (stream,) = streams
        assert stream["key"] == "pgreadings" and stream["type"] == "postgresql", stream
        assert stream["written"] == 300 and stream["depth"] == 0 and stream["lastError"] is None, stream
        code, recent = await call(worker, "GET", "/datastreams/pgreadings/records?deviceId=dev3&limit=5")
        assert code == 200 and [r["seq"] for r in recent] == [299, 291, 283, 275, 267], recent
        status = (await call(worker, "GET", "/status"))[1]
        assert [s["key"] for s in status["dataStreams"]] == ["pgreadings"]
        assert (worker.data_dir / "datastreams-queue.db").exists(), "no durable stream queue in the worker's DATA_DIR"
        assert not (ingest.data_dir / "datastreams-queue.db").exists()

        # the ingest runs no route: no streams, and it says so by not serving them
        assert "dataStreams" not in (await call(ingest, "GET", "/status"))[1]
        assert (await call(ingest, "GET", "/datastreams"))[0] == 404

        for d in (ingest, worker):
            assert await asyncio.to_thread(d.terminate, 10.0) == 0


async def test_a_worker_killed_mid_run_and_restarted_on_its_data_dir_loses_no_row(
        tmp_path: Path, own_mosquitto: Mosquitto, rabbit: Rabbit, database_url: str, instance_id: str,
        cluster_solution: Path) -> None:
    """kill -9 of the worker holding the partitions in the middle of the readings: the standby takes over;
    the killed worker, started again on its DATA_DIR (a container restart), delivers what its queue kept.
    Every PUBACKed reading has its row (at least once: a row queued by the dead worker whose record never
    committed is written by both)."""
    solution = stream_solution(cluster_solution, tmp_path / "cluster-streams.yaml", database_url)
    env = replica_env(rabbit, database_url, instance_id, own_mosquitto, 4)
    ingest = replica(tmp_path, "ingest", "ingest", solution, env)
    worker_a = replica(tmp_path, "worker-a", "worker", solution, env)
    worker_b = replica(tmp_path, "worker-b", "worker", solution, env)
    with ingest, worker_a, worker_b:
        for d in (ingest, worker_a, worker_b):
            await asyncio.to_thread(d.wait_state, "Running", timeout=60)
        acked: list[int] = []
        await publish(own_mosquitto.host, own_mosquitto.port, 1, 100, acked, f"pubk1-{instance_id}")
        await wait_for("first rows", lambda: _rows_at_least(database_url, 100), within=60)
        held_a = (await call(worker_a, "GET", "/status"))[1]["cluster"]["held"]
        victim, survivor = (worker_a, worker_b) if held_a else (worker_b, worker_a)
        await publish(own_mosquitto.host, own_mosquitto.port, 101, 400, acked, f"pubk2-{instance_id}",
                      kill_at=(250, victim.kill))
        assert victim.proc is not None and victim.proc.returncode is not None, "the worker was not killed"
        dead = victim.proc
        assert dead.stdout is not None
        await asyncio.to_thread(dead.wait, 10)
        if victim._reader is not None:  # the helper's own reader: it ends at the dead process's EOF
            await asyncio.to_thread(victim._reader.join, 10)
        dead.stdout.close()
        victim.start()  # the same DATA_DIR: what its stream queue kept is delivered now
        await asyncio.to_thread(victim.wait_state, "Running", timeout=60)

        async def every_reading() -> list[tuple[str, int]] | None:
            rows = await table_rows(database_url)
            return rows if set(acked) <= {seq for _, seq in rows} else None

        rows = await wait_for("every acked reading a row", every_reading, within=60)
        seqs = [seq for _, seq in rows]
        assert set(seqs) == set(acked)
        print(f"rows {len(rows)} for {len(acked)} readings, written twice {len(seqs) - len(set(seqs))}")
        assert (await call(survivor, "GET", "/datastreams"))[1][0]["lastError"] is None


async def _rows_at_least(database_url: str, n: int) -> bool:
    return len(await table_rows(database_url)) >= n
