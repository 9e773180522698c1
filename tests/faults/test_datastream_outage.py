"""PostgreSQL and Redis go away for a while in the middle of a stream of messages, and come back.

Every message writes a row to a PostgreSQL stream and to a Redis stream (bench/streams.py). The suite's
own servers (never the machine's) are stopped for ``OUTAGE`` seconds while the publisher keeps sending:
the instance stays Running, ``/status`` and ``/metrics`` show each stream's queue depth growing and its
last error, and once the servers are back every row arrives in PostgreSQL exactly once (duplicates are
counted) and Redis holds each device's latest row.

Scale: ``NUVIOT_FAULT_STREAM_MESSAGES`` (default 12,000: about a minute of test time on this 2-CPU
machine) and ``NUVIOT_FAULT_STREAM_OUTAGE`` seconds (default 30). The issue's full figure runs with
``NUVIOT_FAULT_STREAM_MESSAGES=100000`` (a few minutes).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import asyncpg
import pytest
import redis

from bench.publisher import device_of
from bench.streams import streams_solution
from tests.e2e.conftest import http
from tests.faults.conftest import DEVICES, PublisherThread, provision, recorded, wait_until
from tests.support.daemon import Daemon
from tests.support.databases import Postgres, Redis
from tests.support.mosquitto import Mosquitto

N = int(os.environ.get("NUVIOT_FAULT_STREAM_MESSAGES", "12000"))
OUTAGE = float(os.environ.get("NUVIOT_FAULT_STREAM_OUTAGE", "30"))

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(max(300, int(N / 100 + OUTAGE * 3)))]


def streams(d: Daemon) -> dict[str, dict]:
    code, st = d.request("GET", "/status", timeout=5)
    assert code == 200, st
    assert st["state"] == "Running", st
    return {s["key"]: s for s in st["dataStreams"]}


def pg_rows(pg: Postgres) -> tuple[int, int]:
    async def count() -> tuple[int, int]:
        conn = await asyncpg.connect(pg.dsn)
        try:
            row = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT seq) AS d FROM telemetry")
            return int(row["n"]), int(row["d"])
        finally:
            await conn.close()
    return asyncio.run(count())


def test_database_outage_loses_no_row(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker, Postgres(tmp_path / "pg") as pg, Redis(tmp_path / "redis") as rd:
        solution = streams_solution(tmp_path / "solution.yaml", postgres=(pg.host, pg.port), redis=(rd.host, rd.port))
        data = tmp_path / "data"
        d = Daemon(data, "--solution", str(solution), "--listener-port", "restin=0", "--input-command-port", "0",
                   env={"MQTT_HOST": broker.host, "MQTT_PORT": str(broker.port), "MQTT_CLIENT_ID": "faults-ds"})
        with d:
            d.wait_state("Running", timeout=30)
            provision(d)
            before = streams(d)
            assert before["pgtelemetry"]["type"] == "postgresql" and before["redistelemetry"]["type"] == "redis"
            rate = N / (OUTAGE + 20)  # the outage falls in the middle of the run
            publisher = PublisherThread(broker, run="a", n=N, qos=1, rate=rate)
            publisher.start()
            wait_until(lambda: streams(d)["pgtelemetry"]["written"] > N // 10, 60, "rows flowing before the outage")

            pg.stop()
            rd.stop()
            down_at = time.monotonic()
            failing = wait_until(lambda: (lambda s: s if all(x["lastError"] for x in s.values()) else None)(
                streams(d)), 30, "both streams report the outage")
            depth_during = 0
            while time.monotonic() - down_at < OUTAGE:
                s = streams(d)  # asserts Running on every look
                depth_during = max(depth_during, s["pgtelemetry"]["depth"])
                assert d.request("GET", "/health", token=None)[0] == 200
                time.sleep(0.5)
            metrics = http("GET", f"{d.base}/metrics")[1]
            assert re.search(r'nuviot_datastream_error\{stream="pgtelemetry",type="postgresql"\} 1\.0', metrics)
            queued = re.search(r'nuviot_datastream_depth\{stream="redistelemetry",type="redis"\} (\d+)', metrics)
            assert queued and float(queued.group(1)) > 0
            assert depth_during > 0
            pg.start()
            rd.start()

            publisher.join(N / rate + 120)
            assert publisher.error is None and publisher.result is not None and publisher.result.acked == N
            wait_until(lambda: all(s["depth"] == 0 for s in streams(d).values()), 120, "queues drained", every=0.5)
            after = streams(d)
            total, distinct = pg_rows(pg)
            duplicates = total - distinct
            print(f"\n{N} messages, outage {OUTAGE:.0f}s: peak depth {depth_during}, PostgreSQL rows {total}, "
                  f"distinct {distinct}, duplicates {duplicates}; overflow "
                  f"{after['pgtelemetry']['overflow']}/{after['redistelemetry']['overflow']}")
            assert distinct == N, f"{N - distinct} rows lost"
            assert duplicates == 0
            assert after["pgtelemetry"]["overflow"] == 0 and after["redistelemetry"]["overflow"] == 0
            assert after["pgtelemetry"]["lastWriteAt"] > failing["pgtelemetry"]["lastErrorAt"]

            client = redis.Redis(host=rd.host, port=rd.port)
            try:
                for dev in range(DEVICES):
                    record = client.hgetall(f"nuviot:datastream:redistelemetry:{device_of(dev, DEVICES)}")
                    last = max(i for i in range(N) if i % DEVICES == dev)
                    assert record[b"seq"] == f'"a-{last}"'.encode(), (dev, record)
            finally:
                client.close()
            assert len(recorded(data / "runtime.db", "a")) == N
            assert d.terminate() == 0
